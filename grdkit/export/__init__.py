"""Export: canonical datasets out to people and other ecosystems.

* :mod:`.card`: data cards from ``data_cards/`` templates and :func:`write_dataset` (split files
  plus card, atomically);
* :mod:`.hf`: HuggingFace ``datasets`` (Parquet shards with ``Image`` masks, exact round trip);
* :mod:`.show`: a group's contact sheet as a picture.

Export reads the canonical format (and display names from :mod:`grdkit.registry`), never a
source or a builder.
"""

from .card import render_card, write_dataset

__all__ = ["render_card", "write_dataset"]
