"""Reference baselines for GRES: LTS (Locate-Then-Segment) and GRSer, in PyTorch.

Neither LTS (Jing et al., CVPR 2021) nor GRSer (Wu et al., ICCV 2023) has released code; these are
reimplementations from the papers, with every choice the papers leave open documented where it is
made. They need the ``grdkit[baselines]`` extra (torch, timm, transformers and the packages that
bundle the default pretrained weights). Nothing is downloaded at run time: default encoders come
from installed packages, any other weights from a local path.

Modules: :mod:`.encoders` (vision via timm, text via transformers), :mod:`.data` (group
sampling, resizing, collate), :mod:`.lts` and :mod:`.grser` (the models), :mod:`.engine`
(training with AdamW or Adam, polynomial or step decay, checkpoints, resume,
torch.distributed), :mod:`.predict` (inference to ``preds.json``).

A model is any class registered in :data:`MODELS` that follows :class:`BaselineModel`; a new
baseline is a module with such a class plus one line in :data:`MODELS`. Its constructor's keyword
arguments are its options: ``grdkit train`` passes each model exactly the options its constructor
names, and ``config.json`` records them.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Protocol

# name -> "module:Class"; imported on first use, so listing models does not import torch
MODELS: dict[str, str] = {
    "lts": "grdkit.baselines.lts:LTS",
    "grser": "grdkit.baselines.grser:GRSer",
    "mabp": "grdkit.baselines.mabp:MABP",
}


class BaselineModel(Protocol):
    """What the training engine and ``predict`` rely on (a ``torch.nn.Module`` subclass).

    * ``name``: its key in :data:`MODELS`; ``train_text``: whether the text encoder is trained
      (a frozen one is left out of checkpoints and rebuilt from its package or folder);
    * ``forward(batch) -> out`` on a collated batch (:func:`.data.collate`);
    * ``loss(out, batch, epoch, epochs) -> (loss tensor, {part: float})``;
    * ``probabilities(out) -> (probs (M, 1, s, s) in 0-1, decision (M,) bool or None)``: the
      foreground map of each valid image and, for models that decide, whether it is a target.
    * optional ``diagnose(out, batch) -> record`` and ``summarize_diagnostics([record]) -> dict``:
      the engine calls the first on every training step (rank 0) and logs the second's dict under
      ``"diagnostics"`` in each epoch record of ``metrics.jsonl`` (GRSer: its hierarchizer);
    * optional ``set_inference(rank=...)``: inference options ``grdkit predict`` may override
      (GRSer: the ranking criterion at test, GRES Table 4);
    * optional ``peaks(out) -> ((M, 2) int64 (column, row), (rows, columns))``: the maximal cell
      of a localisation heatmap (LTS), written by ``predict`` as ``"peak": [x, y]``.
    """

    name: str
    train_text: bool
    default_threshold: float  # optional: the model's mask threshold (0.25 when absent)
    default_min_pixels: int   # optional: masks with fewer pixels are no-target (1 when absent)
    decides_no_target: bool   # optional: a head decides no-target while a mask is still
    #                           predicted (MABP); predict keeps the mask and writes "no_target"

    def __call__(self, batch: dict) -> dict: ...

    def loss(self, out: dict, batch: dict, epoch: int = 0, epochs: int = 1) -> tuple: ...

    def probabilities(self, out: dict) -> tuple: ...


def model_class(name: str) -> type:
    """The model class registered under ``name``.

    Raises:
        GrdkitError: an unknown name (the choices are listed).
    """
    if name not in MODELS:
        from ..errors import InputError

        raise InputError(None, f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def model_default(name: str, key: str, fallback):
    """A model class's inference default (``default_threshold``, ``default_min_pixels``)."""
    return getattr(model_class(name), key, fallback)


def model_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``options`` that model ``name``'s constructor takes (others dropped)."""
    params = inspect.signature(model_class(name).__init__).parameters
    return {k: v for k, v in options.items() if k in params}


def require_torch() -> None:
    """Raise a clear error when the baselines extra is not installed."""
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        from ..errors import GrdkitError

        raise GrdkitError(f"the baselines need torch, timm and transformers ({e.name} is "
                          "missing): pip install 'grdkit[baselines]'") from None
