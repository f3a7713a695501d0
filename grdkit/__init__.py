"""grdkit: dataset toolkit and benchmark suite for Group-wise Referring Expression Segmentation.

Public API::

    grdkit.load_dataset(path) -> GresDataset      # one split of the canonical format
    grdkit.save_dataset(ds, path)                 # atomic, byte-deterministic
    grdkit.build_dataset(name, refer_root, ...)   # G-RefC / G-RefC+ / G-RefCg builders
    grdkit.evaluate(predictions, dataset, ...)    # -> Report (every GRES / RES / Co-SOD metric)

Data flows one way, one package per stage (see docs/architecture.md, "How grdkit is organised")::

    io, format  <-  sources  <-  builders  <-  evaluators | export | baselines  <-  cli

``io`` (files), ``format`` (the canonical record, masks, its rules), ``sources`` (released
formats), ``builders`` (grouping rules, dataset registry), ``evaluators`` (metrics, reports),
``export`` (HuggingFace, data cards, pictures), ``baselines`` (LTS, GRSer), ``validate``,
``testing`` (synthetic data generators), ``cli`` (a thin click layer).
"""

__version__ = "0.1.0"

from .errors import GrdkitError, InputError
from .format import (
    Expression,
    GresDataset,
    Group,
    Image,
    Target,
    load_dataset,
    load_splits,
    masks,
    save_dataset,
)


def __getattr__(name):  # lazy: keep `import grdkit` light
    if name == "build_dataset":
        from .builders import build_dataset

        return build_dataset
    if name == "evaluate":
        from .evaluators import evaluate

        return evaluate
    raise AttributeError(name)


__all__ = [
    "Expression",
    "GrdkitError",
    "GresDataset",
    "Group",
    "Image",
    "InputError",
    "Target",
    "__version__",
    "build_dataset",
    "evaluate",
    "load_dataset",
    "load_splits",
    "masks",
    "save_dataset",
]
