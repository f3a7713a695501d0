"""Evaluation shards: save an evaluator's per-pair statistics and merge shards exactly.

``grdkit eval preds_part1.json --gt val.json --save-state s1.npz`` on each machine, then
``grdkit eval merge s1.npz s2.npz --gt val.json`` gives exactly the single-pass report: the state
holds integer statistics per pair plus what identifies the ground truth (its fingerprint) and the
options (``min_pixels``, ``protocol``, ``cosod``, ``cosod_protocol``), and merging refuses shards
of another ground truth, other options, or overlapping pairs. File: ``.npz`` (no pickles), keys
``meta`` (JSON), ``rows``, ``pred_area``, ``inter``, ``union``, ``pred_pos`` and, with Co-SOD,
the per-pair statistics of :mod:`.cosod` (``c_tp``, ``c_pp`` integer threshold counts, ``c_g``,
``c_n``, ``c_scalars``, ``c_done``). Every Co-SOD metric, curves included, is a function of these,
so merged shards give exactly the single-pass report (eval-co-sod's "skip missing predictions"
is decided at merge time from which pairs no shard predicted).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..format import GresDataset
from ..io import LIMITS, Commit, atomic_write_bytes, open_regular
from .gres import GresEvaluator

STATE_FORMAT = "grdkit-eval-state/2"
COSOD_KEYS = ("c_tp", "c_pp", "c_g", "c_n", "c_scalars", "c_done")
OPTIONS = ("min_pixels", "protocol", "cosod", "cosod_protocol")


def state_dict(ev: GresEvaluator, loc: dict | None = None) -> dict[str, np.ndarray]:
    """The processed pairs' statistics plus what identifies the ground truth and options.
    ``loc``: the shard's localisation counts ``{"hits", "pairs"}`` (LTS §4.3, predictions with
    peaks), kept in ``meta`` so that merged shards report ``loc_acc`` exactly."""
    rows = np.flatnonzero(ev.has_pred)
    meta = {"format": STATE_FORMAT, "fingerprint": ev.fingerprint,
            **{k: getattr(ev, k) for k in OPTIONS}, "splits": list(ev.gt.splits),
            "grdkit_version": __version__, **({"loc": loc} if loc is not None else {})}
    st = {"meta": np.array(json.dumps(meta)), "rows": rows, "pred_area": ev.pred_area[rows],
          "inter": ev.inter[rows], "union": ev.union[rows], "pred_pos": ev.pred_pos[rows]}
    if ev.cosod:
        st.update({k: getattr(ev, k)[rows] for k in COSOD_KEYS})
    return st


def save_state(ev: GresEvaluator, path: str | Path, commit: Commit | None = None,
               loc: dict | None = None) -> None:
    """Write :func:`state_dict` as compressed ``.npz``, atomically (into ``commit`` if given)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **state_dict(ev, loc))
    if commit is not None:
        commit.write_bytes(path, buf.getvalue())
    else:
        atomic_write_bytes(path, buf.getvalue())


def read_state(path: str | Path) -> dict:
    """Read a ``.npz`` evaluation state (``allow_pickle=False``).

    Raises:
        InputError: missing, or not a grdkit evaluation state.
    """
    path = Path(path)
    try:
        with open_regular(path, "state file", LIMITS["state"]) as f, \
                np.load(f, allow_pickle=False) as z:
            st = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(path, f"is not a grdkit evaluation state: {e}") from None
    try:
        meta = json.loads(str(st["meta"]))
        ok = meta.get("format") == STATE_FORMAT and isinstance(meta.get("fingerprint"), str) \
            and all(k in meta for k in OPTIONS) and isinstance(meta.get("splits"), list)
    except (KeyError, ValueError, AttributeError, RecursionError):
        ok = False
    if not ok:
        raise InputError(path, "is not a grdkit evaluation state",
                         hint="pass files written by saving an evaluation state with this grdkit version")
    return st


def state_meta(state: dict) -> dict:
    """The ``meta`` record of a state: format, fingerprint, :data:`OPTIONS`, splits."""
    return json.loads(str(state["meta"]))


def load_state(ev: GresEvaluator, state: dict, name: str = "state") -> None:
    """Add a shard's processed pairs to ``ev``.

    Raises:
        InputError: another ground truth, other options, indices outside the ground truth, or
            a pair another shard already predicted.
    """
    meta = state_meta(state)
    if meta["fingerprint"] != ev.fingerprint:
        raise InputError(name, "was evaluated against another ground truth",
                         hint="merge shards evaluated against the same ground truth")
    for opt in OPTIONS:
        if meta[opt] != getattr(ev, opt):
            raise InputError(name, f"was evaluated with {opt}={meta[opt]}, "
                             f"not {getattr(ev, opt)}", hint="use the same options")
    rows = check_state_arrays(ev, state, name)
    dup = rows[ev.has_pred[rows]]
    if dup.size:
        raise InputError(name, "predicts a pair another shard already predicted",
                         f"(split, expression_id, image_id) {ev.keys[int(dup[0])]}")
    ev.has_pred[rows] = True
    for k in ("pred_area", "inter", "union", "pred_pos", *(COSOD_KEYS if ev.cosod else ())):
        getattr(ev, k)[rows] = state[k]


def check_state_arrays(ev: GresEvaluator, state: dict, name: str = "state") -> np.ndarray:
    """The shard's pair indices, after checking that its statistics could have been computed.

    A state is an input like any other (a forged one could claim an intersection larger than
    its union and push gIoU past 100%): every array has one entry per row and an integer (or
    bool) dtype; rows are distinct indices of the ground truth; 0 <= I <= U and areas >= 0;
    at the original resolution (profiles ``grdkit``, ``mcn``) U = |P| + |G| - I exactly (|G|
    from the ground truth), except that a no-target decision may zero I (then max(|P|, |G|) <= U
    <= |P| + |G|) or, on a no-target pair, U; at 480 x 480 (``rela``, ``rela-2023-05``) U <=
    |P'| + |G'| <= 2 * 480^2; Co-SOD counts are >= 0 with true positives <=
    predicted positives, and no per-pair scalar is infinite (NaN marks an undefined one).

    Raises:
        InputError: naming the shard and the first broken rule.
    """
    def bad(what: str):
        return InputError(name, f"is not a consistent evaluation state: {what}",
                          hint="pass states written by `grdkit eval --save-state`")

    rows = np.asarray(state["rows"])
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        raise bad("'rows' is not a list of integers")
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(ev.keys)):
        raise InputError(name, "holds pair indices outside the ground truth")
    if np.unique(rows).size != rows.size:
        raise bad("a pair index is listed twice")
    keys = ("pred_area", "inter", "union", "pred_pos", *(COSOD_KEYS if ev.cosod else ()))
    arr = {}
    for k in keys:
        if k not in state:
            raise bad(f"no {k!r}")
        a = np.asarray(state[k])
        want = getattr(ev, k).shape[1:]
        if a.shape != (rows.size, *want):
            raise bad(f"{k!r} has shape {a.shape}, expected {(rows.size, *want)}")
        if k == "c_scalars":
            if a.dtype.kind != "f":
                raise bad("'c_scalars' is not floating point")
        elif k in ("pred_pos", "c_done"):
            if a.dtype != bool:
                raise bad(f"{k!r} is not boolean")
        elif a.dtype.kind not in "iu":
            raise bad(f"{k!r} is not integer")
        arr[k] = a
    p, i, u = (arr[k].astype(np.int64) for k in ("pred_area", "inter", "union"))
    if (p < 0).any() or (i < 0).any() or (i > u).any():
        raise bad("an area is negative or an intersection exceeds its union")
    prof = ev.profile
    if prof.resize is None:  # original resolution: U follows from the areas
        g = ev.gt_area[rows].astype(np.int64)
        exact = u == p + g - i
        # a no-target decision (the "no_target" key, :mod:`.gres`) zeroes I and keeps
        # U = |P u G| (between max(|P|, |G|) and |P| + |G|), or U = 0 on a no-target pair
        decided = ~np.asarray(state["pred_pos"], bool) & (
            ((i == 0) & (u >= np.maximum(p, g)) & (u <= p + g)) | ((u == 0) & (g == 0)))
        if (~exact & (prof.masks_only | ~decided)).any():
            raise bad("a union is not |prediction| + |ground truth| - intersection")
    elif (u > 2 * prof.size * prof.size).any():
        raise bad(f"a union exceeds two {prof.size} x {prof.size} masks")
    if ev.cosod:
        tp, pp = arr["c_tp"].astype(np.int64), arr["c_pp"].astype(np.int64)
        if (tp < 0).any() or (tp > pp).any() or (arr["c_g"] < 0).any() \
                or (arr["c_n"] < 0).any():
            raise bad("a Co-SOD count is negative or true positives exceed predicted ones")
        if np.isinf(arr["c_scalars"]).any():  # NaN marks an undefined score; inf never occurs
            raise bad("a Co-SOD score is infinite")
    return rows


def merged_localisation(paths: Iterable[str | Path]) -> dict | None:
    """``{"loc_acc", "loc_pairs"}`` over the shards' localisation counts (the sums of their
    hits and pairs, so exactly the single pass's), None when no shard holds any.

    Raises:
        InputError: see :func:`read_state`; a malformed ``loc`` record.
    """
    return _sum_localisation((p, read_state(p)) for p in paths)


def _sum_localisation(loaded) -> dict | None:
    """:func:`merged_localisation` of already-read ``(path, state)`` pairs."""
    hits = pairs = 0
    seen = False
    for p, st in loaded:
        loc = state_meta(st).get("loc")
        if loc is None:
            continue
        h, n = loc.get("hits") if isinstance(loc, dict) else None, \
            loc.get("pairs") if isinstance(loc, dict) else None
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (h, n)) \
                or h > n:
            raise InputError(p, "has a malformed 'loc' record (hits and pairs, 0 <= hits <= "
                             "pairs)", hint="pass states written by `grdkit eval --save-state`")
        seen, hits, pairs = True, hits + h, pairs + n
    if not seen:
        return None
    return {"loc_acc": 100.0 * hits / pairs if pairs else None, "loc_pairs": pairs}


def merge_states(paths: Iterable[str | Path], gt: dict[str, GresDataset]) -> GresEvaluator:
    """An evaluator holding every shard of ``paths`` (evaluated against ``gt``); its
    ``localisation`` attribute holds :func:`merged_localisation` of the shards.

    Raises:
        InputError: see :func:`read_state` and :func:`load_state`.
    """
    paths = list(paths)
    loaded = [(p, read_state(p)) for p in paths]
    meta = state_meta(loaded[0][1])
    ev = GresEvaluator(gt, min_pixels=meta["min_pixels"], cosod=meta["cosod"],
                       protocol=meta["protocol"], cosod_protocol=meta["cosod_protocol"])
    for p, st in loaded:
        load_state(ev, st, str(p))
    ev.localisation = _sum_localisation(loaded)  # each shard read once
    return ev


__all__ = ["COSOD_KEYS", "OPTIONS", "STATE_FORMAT", "check_state_arrays", "load_state",
           "merge_states", "merged_localisation", "read_state", "save_state", "state_dict",
           "state_meta"]
