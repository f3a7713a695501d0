"""Per-pair scores: one row per (expression, image) pair, from the evaluator's per-pair arrays.

:func:`pair_frame` turns a :class:`~.gres.GresEvaluator`'s statistics into a pandas DataFrame;
``grdkit eval --per-pair FILE.jsonl`` writes it (:func:`write_pairs`, one JSON object a line) and
``grdkit report`` reads it back (:func:`read_pairs`) and re-aggregates it into the very report the
evaluation printed (:func:`evaluator_from_pairs`: the rows are loaded into a fresh evaluator as a
shard is, checked by :func:`.state.check_state_arrays`, then ``evaluate()`` runs the same code).

Columns (:data:`COLUMNS`, in this order; pixels are counted at the profile's resolution):

============== ======== =====================================================================
split          str      the ground truth's split
group_id       int      the pair's group
expression_id  int      the expression
expression     str      its text
image_id       int      the image
file_name      str      the image's file, relative to the image root
positive       bool     the pair is a target (the referent is in the image)
has_prediction bool     a prediction was submitted (False: counted as "no target")
pred_area      int      foreground pixels of the prediction (0 when it counts as no target)
gt_area        int      foreground pixels of the ground truth, original resolution
inter          int      I, as the metrics count it (:mod:`.gres` module header)
union          int      U, as the metrics count it (a missing pair: the GT's area)
iou            float    the profile's per-pair IoU I/U (:func:`.functional.pair_iou`), 0-1
score          float    the pair's GRES score (GRES §5.1): TP I/U, TN 1, FP and FN 0
no_target      bool     the no-target decision (the model's, or an empty mask)
outcome        str      TP, TN, FP (a false alarm on a negative), FN (a missed positive)
profile        str      the evaluation profile (:mod:`.profiles`) I, U and IoU follow
============== ======== =====================================================================

Rows are in the evaluator's pair order (splits in order, each split's targets in file order).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..format import GresDataset
from ..io import Commit, atomic_write_text, loads_json, read_bytes
from .functional import pair_iou
from .gres import GresEvaluator
from .state import check_state_arrays

COLUMNS = ("split", "group_id", "expression_id", "expression", "image_id", "file_name",
           "positive", "has_prediction", "pred_area", "gt_area", "inter", "union", "iou",
           "score", "no_target", "outcome", "profile")
OUTCOMES = ("TP", "TN", "FP", "FN")


def scored_union(ev: GresEvaluator) -> np.ndarray:
    """U per pair as :meth:`GresEvaluator.evaluate` scores it: a missing pair adds its GT's
    area, at 480 x 480 under the resizing profiles (``rela``, ``rela-2023-05``)."""
    from .functional import resized_area

    union = ev.union.copy()
    prof = ev.profile
    if prof.resize is not None:
        for r in np.flatnonzero(~ev.has_pred):
            if ev.gt_area[r]:
                union[r] = resized_area(ev.gt_rle(int(r)), prof.size, prof.resize)
    return union


def pair_frame(ev: GresEvaluator):
    """The per-pair table of the module header (a pandas DataFrame, one row per pair).

    Args:
        ev: an evaluator after :meth:`~GresEvaluator.process` (pairs not processed are missing
            predictions, "no target", as :meth:`~GresEvaluator.evaluate` counts them).
    """
    import pandas as pd

    union = scored_union(ev)
    iou = pair_iou(ev.inter, union, ev.profile)
    gt_pos, pred_pos = ev.gt_pos, ev.pred_pos
    tp, tn = gt_pos & pred_pos, ~gt_pos & ~pred_pos
    outcome = np.where(tp, "TP", np.where(tn, "TN", np.where(pred_pos, "FP", "FN")))
    split, eid, iid = (list(x) for x in zip(*ev.keys)) if ev.keys else ([], [], [])
    text, fname = [], []
    for s, e, i in ev.keys:
        ds = ev.gt.splits[s]
        text.append(ds.expression(e).text)
        fname.append(ds.image(i).file_name)
    return pd.DataFrame({
        "split": split, "group_id": [ev.groups[g][1] for g in ev.group_idx],
        "expression_id": np.asarray(eid, np.int64), "expression": text,
        "image_id": np.asarray(iid, np.int64), "file_name": fname,
        "positive": gt_pos.copy(), "has_prediction": ev.has_pred.copy(),
        "pred_area": ev.pred_area.copy(), "gt_area": ev.gt_area.copy(),
        "inter": ev.inter.copy(), "union": union, "iou": iou,
        "score": np.where(tp, iou, np.where(tn, 1.0, 0.0)), "no_target": ~pred_pos,
        "outcome": outcome, "profile": ev.protocol,
    }, columns=list(COLUMNS))


def pairs_jsonl(df) -> str:
    """The rows as JSON Lines (keys in :data:`COLUMNS` order, floats at full precision)."""
    cols = [df[c].tolist() for c in COLUMNS]
    return "".join(json.dumps(dict(zip(COLUMNS, row)), ensure_ascii=False,
                              allow_nan=False) + "\n" for row in zip(*cols))


def write_pairs(df, path: str | Path, commit: Commit | None = None) -> None:
    """Write :func:`pairs_jsonl` to ``path`` atomically (into ``commit`` when given)."""
    text = pairs_jsonl(df)
    if commit is not None:
        commit.write_text(path, text)
    else:
        atomic_write_text(path, text)


_TYPES = {"split": str, "expression": str, "file_name": str, "outcome": str, "profile": str,
          "positive": bool, "has_prediction": bool, "no_target": bool, "iou": float,
          "score": float}


def read_pairs(path: str | Path):
    """Read a per-pair file written by :func:`write_pairs` (a DataFrame of :data:`COLUMNS`).

    Raises:
        InputError: a missing file, a line that is not a JSON object of the
            columns with their types (naming the line), or rows of several profiles.
    """
    import pandas as pd

    path = Path(path)
    fix = "pass the file written by grdkit eval --per-pair"
    # the one checked opener: a regular file, size bounded before reading (a FIFO never blocks)
    data = read_bytes(path, "per-pair file", fix)
    rows = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:  # bounded integers, finite floats (grdkit.io.loads_json)
            rec = loads_json(path, line)
        except InputError as e:
            raise InputError(path, e.reason, f"line {n}", fix) from None
        if not isinstance(rec, dict) or set(rec) != set(COLUMNS):
            what = sorted(set(COLUMNS) ^ set(rec)) if isinstance(rec, dict) else type(rec).__name__
            raise InputError(path, f"is not a per-pair row (keys differ: {what})", f"line {n}",
                             fix)
        for k in COLUMNS:
            v = rec[k]
            want = _TYPES.get(k, int)
            ok = isinstance(v, want) and (want is bool or not isinstance(v, bool))
            if want is float:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            if not ok:
                raise InputError(path, f"{k!r} is {v!r}, not {want.__name__}", f"line {n}", fix)
        if rec["outcome"] not in OUTCOMES:
            raise InputError(path, f"outcome {rec['outcome']!r} is not one of {OUTCOMES}",
                             f"line {n}", fix)
        rows.append([rec[k] for k in COLUMNS])
    if not rows:
        raise InputError(path, "holds no pair", hint=fix)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    if df["profile"].nunique() != 1:
        raise InputError(path, f"mixes profiles {sorted(df['profile'].unique())}", hint=fix)
    return df


def evaluator_from_pairs(df, gt: dict[str, GresDataset], name: str = "per-pair file"
                         ) -> GresEvaluator:
    """A fresh evaluator holding the statistics of ``df``'s predicted pairs, under its profile.

    ``evaluate()`` on it gives exactly the report of the evaluation that wrote the rows.

    Raises:
        InputError: a row names a pair the ground truth does not have, a pair is listed twice
            or not at all, a row's ``positive`` / ``gt_area`` differ from the ground truth's
            (another ground truth), or the statistics are inconsistent
            (:func:`.state.check_state_arrays`).
    """
    profile = str(df["profile"].iloc[0])
    try:
        ev = GresEvaluator(gt, protocol=profile)
    except ValueError as e:
        raise InputError(name, str(e), hint="pass a file written by grdkit eval --per-pair") \
            from None
    keys = list(zip(df["split"], df["expression_id"].astype(int), df["image_id"].astype(int)))
    rows = np.array([ev.row_of.get(k, -1) for k in keys], np.int64)
    bad = np.flatnonzero(rows < 0)
    if bad.size:
        raise InputError(name, "names a pair the ground truth does not have",
                         f"line {int(bad[0]) + 1} (split, expression_id, image_id) "
                         f"{keys[int(bad[0])]}", "pass the ground truth the run was scored on")
    if np.unique(rows).size != rows.size or rows.size != len(ev):
        raise InputError(name, f"lists {np.unique(rows).size} distinct of the ground truth's "
                         f"{len(ev)} pairs in {rows.size} rows",
                         hint="pass the whole file written by grdkit eval --per-pair")
    pos = df["positive"].to_numpy(bool)
    area = df["gt_area"].to_numpy(np.int64)
    wrong = np.flatnonzero((pos != ev.gt_pos[rows]) | (area != ev.gt_area[rows]))
    if wrong.size:
        raise InputError(name, "was scored on another ground truth (positive or gt_area "
                         "differ)", f"line {int(wrong[0]) + 1}",
                         "pass the ground truth the run was scored on")
    done = df["has_prediction"].to_numpy(bool)
    state = {"rows": rows[done],
             "pred_area": df["pred_area"].to_numpy(np.int64)[done],
             "inter": df["inter"].to_numpy(np.int64)[done],
             "union": df["union"].to_numpy(np.int64)[done],
             "pred_pos": ~df["no_target"].to_numpy(bool)[done]}
    check_state_arrays(ev, state, str(name))
    r = state["rows"]
    ev.has_pred[r] = True
    for k in ("pred_area", "inter", "union", "pred_pos"):
        getattr(ev, k)[r] = state[k]
    return ev


__all__ = ["COLUMNS", "OUTCOMES", "evaluator_from_pairs", "pair_frame", "pairs_jsonl",
           "read_pairs", "scored_union", "write_pairs"]
