"""Statistics of a canonical GRES dataset (what `grdkit stats` prints and data cards report).

All counts are plain integers; expression length is in words (whitespace tokens).
"""

from __future__ import annotations

import numpy as np

from .dataset import GresDataset

HIST_BINS = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 50), (51, None))


def _bin_label(lo: int, hi: int | None) -> str:
    if hi is None:
        return f">={lo}"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def histogram(values: list[int]) -> dict[str, int]:
    """Count values into the fixed bins 1, 2, 3, 4-5, 6-10, 11-20, 21-50, >=51 (all bins kept)."""
    out = {}
    for lo, hi in HIST_BINS:
        out[_bin_label(lo, hi)] = sum(1 for v in values if v >= lo and (hi is None or v <= hi))
    return out


def dataset_stats(ds: GresDataset) -> dict:
    """Statistics of one split.

    Returns a dict with: ``groups``, ``expressions``, ``images``, ``pairs``, ``positive_pairs``,
    ``negative_pairs``, ``positive_ratio`` (0-1), ``group_size_histogram`` (images per group),
    ``expression_length`` (words: min, mean, median, max).
    """
    pos = sum(1 for t in ds.targets if t.positive)
    sizes = [len(g.image_ids) for g in ds.groups]
    lengths = [len(e.text.split()) for e in ds.expressions]
    n = len(ds.targets)
    return {
        "groups": len(ds.groups),
        "expressions": len(ds.expressions),
        "images": len(ds.images),
        "pairs": n,
        "positive_pairs": pos,
        "negative_pairs": n - pos,
        "positive_ratio": round(pos / n, 4) if n else 0.0,
        "group_size_histogram": histogram(sizes),
        "expression_length": {
            "min": min(lengths) if lengths else 0,
            "mean": round(float(np.mean(lengths)), 2) if lengths else 0.0,
            "median": float(np.median(lengths)) if lengths else 0.0,
            "max": max(lengths) if lengths else 0,
        },
    }


SUMMARY_COLUMNS = ("groups", "expressions", "images", "pairs", "positive_pairs", "negative_pairs")


def summary_rows(datasets: dict[str, GresDataset]) -> list[dict]:
    """One row per split plus a ``total`` row of the headline counts (images counted per split)."""
    rows = []
    for split, ds in datasets.items():
        s = dataset_stats(ds)
        rows.append({"split": split, **{k: s[k] for k in SUMMARY_COLUMNS}})
    if len(rows) > 1:
        rows.append({"split": "total", **{k: sum(r[k] for r in rows) for k in SUMMARY_COLUMNS}})
    return rows
