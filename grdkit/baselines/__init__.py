"""Reference baselines for GRES: LTS (Locate-Then-Segment) and GRSer, in PyTorch.

Neither LTS (Jing et al., CVPR 2021) nor GRSer (Wu et al., ICCV 2023) has released code; these are
reimplementations from the papers, with every choice the papers leave open documented where it is
made. They need the ``grdkit[baselines]`` extra (torch, timm, transformers and the packages that
bundle the default pretrained weights). Nothing is downloaded at run time: default encoders come
from installed packages, any other weights from a local path.

Modules: :mod:`.encoders` (vision via timm, text via transformers), :mod:`.data` (group
sampling, resizing, collate), :mod:`.lts` (the LTS model), :mod:`.engine` (training with AdamW,
polynomial decay, checkpoints, resume, torch.distributed), :mod:`.predict` (inference to
``preds.json``).
"""


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
