"""``grdkit.hf``: the documented path of the HuggingFace export, kept as an alias of
:mod:`grdkit.export.hf` (``to_hf``, ``from_hf``, ``export_hf``, ``decode_mask``, ``features``)."""

from .export.hf import decode_mask, export_hf, features, from_hf, iter_rows, to_hf

__all__ = ["decode_mask", "export_hf", "features", "from_hf", "iter_rows", "to_hf"]
