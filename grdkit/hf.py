"""``grdkit.hf``: the documented path of the HuggingFace export, kept as an alias of
:mod:`grdkit.export.hf` (``to_hf``, ``from_hf``, ``export_hf``, ``decode_mask``, ``features``, ``COLUMNS``,
``card_info``)."""

from .export.hf import (
                        COLUMNS,
                        card_info,
                        decode_mask,
                        export_hf,
                        features,
                        from_hf,
                        iter_rows,
                        to_hf,
)

__all__ = ["COLUMNS", "card_info", "decode_mask", "export_hf", "features", "from_hf", "iter_rows",
           "to_hf"]
