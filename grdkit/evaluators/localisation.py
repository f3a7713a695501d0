"""Localisation accuracy (LTS §4.3): the share of targeted pairs whose heatmap maximum lies inside
the ground-truth mask.

Predictions carry it as an optional ``"peak": [x, y]`` key (pixel column and row in the original
image; written by ``grdkit predict`` for LTS). Only positive (targeted) pairs count: a no-target
pair has no mask for the peak to fall in. The other evaluators ignore the key.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError, quote
from ..format import GresDataset, masks


def peak_accuracy(records: list[dict], dataset: GresDataset, path: Any = None) -> dict | None:
    """``{"loc_acc": % of positive pairs whose peak is a ground-truth pixel, "loc_pairs": their
    number}``, or None when no record has a ``"peak"`` (nothing to score).

    Args:
        records: prediction dicts (``preds.json``'s list); records without ``"peak"`` and pairs
            of negative targets are left out.
        dataset: the ground truth (one split).

    Raises:
        InputError: a peak that is not two integers inside the image, or a pair that is not in
            the dataset (named by record index).
    """
    hits = total = 0
    for k, r in enumerate(records):
        if not isinstance(r, dict) or "peak" not in r:
            continue
        e, i, peak = r.get("expression_id"), r.get("image_id"), r["peak"]
        where = f"predictions[{k}] (expression_id {quote(e)}, image_id {quote(i)})"
        if not dataset.has_target(e, i):
            raise InputError(path, "unknown pair", where, "predict only pairs of the dataset")
        im = dataset.image(i)
        if not (isinstance(peak, list) and len(peak) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in peak)
                and 0 <= peak[0] < im.width and 0 <= peak[1] < im.height):
            raise InputError(path, f"peak {quote(peak)} is not [x, y] inside the {im.width}x"
                             f"{im.height} image", where)
        t = dataset.target(e, i)
        if not t.positive:
            continue
        total += 1
        hits += bool(masks.decode(t.segmentation)[peak[1], peak[0]])
    if total == 0 and not any(isinstance(r, dict) and "peak" in r for r in records):
        return None
    return {"loc_acc": 100.0 * hits / total if total else None, "loc_pairs": total}
