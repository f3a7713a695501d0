"""Breakdowns of the GRES metrics by kind of pair: target type, expression length, D³ kind.

Each breakdown assigns every pair to exactly one bucket, so bucket counts add up to the total:

* ``by_target_type``: ``no-target`` (negative pair), ``single-target`` (one referred annotation
  in ``ann_ids``), ``multi-target`` (two or more), and ``target (no ann_ids)`` for positive pairs
  whose dataset does not list source annotations (e.g. groups built from image + mask files);
  that last bucket appears only when it is non-empty.
* ``by_length``: words in the expression text, counted as D³'s analysis script does,
  ``len(text.split(" "))`` (a single-space split; shikras/d-cube
  ``scripts/eval_and_analysis_json.py`` ``--partition-by-lens``), binned ``1-3``, ``4-6``,
  ``7-9``, ``10+`` (its short / mid / long / very long).
* ``by_expression_kind``: D³'s presence / absence expressions (``is_negative`` on the expression,
  ``d_cube/d3.py`` ``is_revsent``; True = absence, e.g. "dog without leash"). Present only when
  some expression carries ``is_negative``; expressions without it go to ``unmarked``.

Every bucket holds ``counts`` (pairs, positives, negatives) and the GRES metrics of
:func:`.functional.metrics_from_sums` (percent, None where undefined; all None in an empty
bucket).
"""

from __future__ import annotations

import numpy as np

from .functional import SUM_FIELDS, group_sums, metrics_from_sums

BREAKDOWNS = ("by_target_type", "by_length", "by_expression_kind")
TARGET_TYPES = ("no-target", "single-target", "multi-target", "target (no ann_ids)")
LENGTH_BINS = ("1-3", "4-6", "7-9", "10+")
KINDS = ("presence", "absence", "unmarked")


def words(text: str) -> int:
    """Word count as D³'s script: ``len(text.split(" "))``."""
    return len(text.split(" "))


def length_bin(n_words: int) -> int:
    """Index into :data:`LENGTH_BINS` (1-3, 4-6, 7-9, 10+; 0 words counts as 1-3)."""
    return 0 if n_words <= 3 else 1 if n_words <= 6 else 2 if n_words <= 9 else 3


def target_type(positive: bool, n_ann: int) -> int:
    """Index into :data:`TARGET_TYPES`."""
    if not positive:
        return 0
    return 3 if n_ann == 0 else 1 if n_ann == 1 else 2


def kind(is_negative) -> int:
    """Index into :data:`KINDS` from an expression's ``is_negative`` (None = unmarked)."""
    return 2 if is_negative is None else 1 if bool(is_negative) else 0


def breakdown(codes: np.ndarray, names: tuple[str, ...], inter, union, gt_pos, pred_pos,
              drop_empty: tuple[str, ...] = (), profile=None) -> dict[str, dict]:
    """``{bucket: {"counts": {...}, "metrics": {...}}}`` for per-pair bucket ``codes``.

    Args:
        codes: int64 ``(P,)`` index into ``names`` per pair.
        inter, union, gt_pos, pred_pos: per-pair statistics (:mod:`.functional`).
        drop_empty: buckets left out when they hold no pair.
        profile: the evaluation profile (:mod:`.profiles`; None = ``grdkit``).
    """
    sums = group_sums(inter, union, gt_pos, pred_pos, codes, len(names), profile)
    pos, neg = SUM_FIELDS.index("pos"), SUM_FIELDS.index("neg")
    out = {}
    for k, name in enumerate(names):
        if name in drop_empty and sums[k][0] == 0:
            continue
        out[name] = {"counts": {"pairs": int(sums[k][0]), "positives": int(sums[k][pos]),
                                "negatives": int(sums[k][neg])},
                     "metrics": (metrics_from_sums(sums[k], profile) if sums[k][0] else
                                 dict.fromkeys(metrics_from_sums(sums[k], profile)))}
    return out


def all_breakdowns(labels: dict[str, np.ndarray], inter, union, gt_pos, pred_pos,
                   profile=None) -> dict[str, dict]:
    """Every breakdown for which ``labels`` (name -> codes ``(P,)`` or None) has codes."""
    names = {"by_target_type": TARGET_TYPES, "by_length": LENGTH_BINS,
             "by_expression_kind": KINDS}
    drop = {"by_target_type": ("target (no ann_ids)",), "by_length": (),
            "by_expression_kind": ("unmarked",)}
    return {b: breakdown(labels[b], names[b], inter, union, gt_pos, pred_pos, drop[b], profile)
            for b in BREAKDOWNS if labels.get(b) is not None}
