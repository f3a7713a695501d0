"""grdkit: dataset toolkit and benchmark suite for Group-wise Referring Expression Segmentation.

Public API::

    grdkit.load_dataset(path) -> GresDataset      # one split of the canonical format
    grdkit.save_dataset(ds, path)                 # atomic, byte-deterministic
    grdkit.build_dataset(name, refer_root, ...)   # G-RefC / G-RefC+ / G-RefCg builders
    grdkit.evaluate(predictions, dataset, ...)    # -> Report (every GRES / RES / Co-SOD metric)
"""

__version__ = "0.1.0"

from .dataset import (
    Expression,
    GresDataset,
    Group,
    Image,
    Target,
    load_dataset,
    load_splits,
    save_dataset,
)
from .errors import GrdkitError, InputError


def __getattr__(name):  # lazy: keep `import grdkit` light
    if name == "build_dataset":
        from .build import build_dataset

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
    "load_dataset",
    "load_splits",
    "save_dataset",
]
