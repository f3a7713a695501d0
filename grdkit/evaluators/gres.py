"""The GRES evaluator: detectron2-style ``reset`` / ``process`` / ``evaluate`` over a pair table.

Memory holds only per-pair sufficient statistics (I, U, prediction area, target flags; plus four
Co-SOD values and a 256-point F curve when Co-SOD is on), never masks. ``state_dict`` /
:func:`merge_states` let shards evaluated on different machines combine into exactly the
single-pass result: statistics are integers, and metrics are always computed from the full
arrays in the ground truth's pair order.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .. import __version__, masks
from ..atomic import atomic_write_bytes
from ..dataset import GresDataset
from ..errors import InputError
from .cosod import COSOD_METRICS, cosod_metrics, cosod_pair
from .functional import SUM_FIELDS, confusion, group_sums, metrics_from_sums, pair_iou, pair_stats
from .predictions import GroundTruth, Prediction
from .report import Report


class GresEvaluator:
    """Accumulates per-pair statistics of predictions against one or more ground-truth splits.

    Args:
        gt: ``{split: GresDataset}`` (one or more splits) or a single :class:`GresDataset`.
        min_pixels: predictions with fewer foreground pixels are "no target" (>= 1).
        cosod: also compute Co-SOD metrics (decodes masks; slower).

    Raises:
        InputError: from :meth:`process` on a duplicate pair.
    """

    def __init__(self, gt: dict[str, GresDataset] | GresDataset, min_pixels: int = 1,
                 cosod: bool = False):
        if isinstance(gt, GresDataset):
            gt = {gt.split or "test": gt}
        if min_pixels < 1:
            raise ValueError("min_pixels must be >= 1")
        self.gt = GroundTruth(gt)
        self.min_pixels = int(min_pixels)
        self.cosod = bool(cosod)
        rows, self.groups = [], []
        self._row: dict[tuple[str, int, int], int] = {}
        group_index: dict[tuple[str, int], int] = {}
        for split, ds in gt.items():
            ds.require_complete()
            for g in ds.groups:
                group_index[(split, g.id)] = len(self.groups)
                self.groups.append((split, g.id))
            for t in ds.targets:
                gid = ds.expression(t.expression_id).group_id
                self._row[(split, t.expression_id, t.image_id)] = len(rows)
                rows.append((group_index[(split, gid)], t.expression_id, t.image_id,
                             masks.area(t.segmentation), t.positive))
        arr = np.array(rows, dtype=np.int64).reshape(-1, 5)
        self.split_of_group = [s for s, _ in self.groups]
        self.group_idx = arr[:, 0]
        self.gt_area = arr[:, 3]
        self.gt_pos = arr[:, 4].astype(bool)
        self.keys = list(self._row)
        h = hashlib.sha256()
        h.update(json.dumps([list(gt), self.groups]).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
        self.fingerprint = h.hexdigest()
        self.reset()

    def __len__(self) -> int:
        return len(self.keys)

    def reset(self) -> None:
        """Forget every processed prediction."""
        n = len(self.keys)
        self.has_pred = np.zeros(n, bool)
        self.pred_area = np.zeros(n, np.int64)
        self.inter = np.zeros(n, np.int64)
        self.union = self.gt_area.copy()
        self.pred_pos = np.zeros(n, bool)
        if self.cosod:
            self.c_mae = np.full(n, np.nan)
            self.c_sm = np.full(n, np.nan)
            self.c_em = np.full(n, np.nan)
            self.c_f = np.full((n, 256), np.nan)

    def _gt_rle(self, row: int) -> dict:
        split, e, i = self.keys[row]
        return self.gt.splits[split].target(e, i).segmentation

    def process(self, predictions: Iterable[Prediction],
                track: Callable[[Iterable], Iterable] | None = None) -> None:
        """Add validated predictions (see :mod:`.predictions`); a pair seen twice is an error."""
        for p in (track(predictions) if track else predictions):
            row = self._row.get((p.split, p.expression_id, p.image_id))
            where = f"(split {p.split!r}, expression_id {p.expression_id}, image_id {p.image_id})"
            if row is None:
                raise InputError(None, "prediction for an unknown pair", where)
            if self.has_pred[row]:
                raise InputError(None, "pair predicted twice", where)
            gt_rle = self._gt_rle(row)
            pa, inter, union, pos = pair_stats(p.rle, gt_rle, int(self.gt_area[row]),
                                               self.min_pixels)
            self.has_pred[row] = True
            self.pred_area[row], self.inter[row], self.union[row] = pa, inter, union
            self.pred_pos[row] = pos
            if self.cosod:
                if p.soft is not None:
                    dense = p.soft if pos else np.zeros_like(p.soft)
                elif pos:
                    dense = masks.decode(p.rle) * np.uint8(255)
                else:
                    h, w = gt_rle["size"]
                    dense = np.zeros((h, w), np.uint8)
                self._cosod_row(row, dense, gt_rle)

    def _cosod_row(self, row: int, dense: np.ndarray, gt_rle: dict) -> None:
        mae, sm, em, f = cosod_pair(dense, masks.decode(gt_rle))
        self.c_mae[row], self.c_sm[row], self.c_em[row], self.c_f[row] = mae, sm, em, f

    # -- results ---------------------------------------------------------------------------
    def evaluate(self, strict: bool = False, bootstrap: int = 0, seed: int = 0,
                 config: dict | None = None) -> Report:
        """Compute the report.

        Args:
            strict: a pair without prediction is an error instead of "no target".
            bootstrap: number of resamples of *groups* for 95% percentile intervals (0 = none).
            seed: bootstrap seed.
            config: extra entries for ``report.config`` (e.g. file names).

        Raises:
            InputError: ``strict`` and some pair has no prediction (the first few are named).
        """
        missing = np.flatnonzero(~self.has_pred)
        if strict and missing.size:
            names = ", ".join(f"{self.keys[r]}" for r in missing[:5])
            raise InputError(None, f"{missing.size} pairs have no prediction (--strict)",
                             f"(split, expression_id, image_id) {names}"
                             f"{' ...' if missing.size > 5 else ''}",
                             "predict every pair, null for no target")
        if self.cosod and missing.size:
            for r in missing:
                gt_rle = self._gt_rle(int(r))
                h, w = gt_rle["size"]
                self._cosod_row(int(r), np.zeros((h, w), np.uint8), gt_rle)
        n_groups = len(self.groups)
        sums = group_sums(self.inter, self.union, self.gt_pos, self.pred_pos, self.group_idx,
                          n_groups)
        metrics = metrics_from_sums(sums.sum(axis=0))
        if self.cosod:
            metrics.update(cosod_metrics(self.c_mae, self.c_sm, self.c_em, self.c_f))
        counts = {"pairs": len(self.keys), "positive": int(self.gt_pos.sum()),
                  "negative": int((~self.gt_pos).sum()),
                  **confusion(self.gt_pos, self.pred_pos),
                  "predictions": int(self.has_pred.sum()), "missing": int(missing.size),
                  "groups": n_groups}
        cfg = {"min_pixels": self.min_pixels, "strict": strict, "cosod": self.cosod,
               "bootstrap": bootstrap, "seed": seed, "splits": list(self.gt.splits),
               "gt_fingerprint": self.fingerprint, "grdkit_version": __version__,
               **(config or {})}
        per_split = {}
        split_arr = np.array(self.split_of_group)
        for s in self.gt.splits:
            sel = split_arr == s
            rows = np.isin(self.group_idx, np.flatnonzero(sel))
            m = metrics_from_sums(sums[sel].sum(axis=0))
            if self.cosod:
                m.update(cosod_metrics(self.c_mae[rows], self.c_sm[rows], self.c_em[rows],
                                       self.c_f[rows]))
            per_split[s] = {"metrics": m, "counts": {
                "pairs": int(rows.sum()), "positive": int(self.gt_pos[rows].sum()),
                "negative": int((~self.gt_pos[rows]).sum()),
                **confusion(self.gt_pos[rows], self.pred_pos[rows]),
                "missing": int((~self.has_pred[rows]).sum())}}
        per_group = []
        for k, (s, gid) in enumerate(self.groups):
            m = metrics_from_sums(sums[k])
            per_group.append({"split": s, "group_id": gid, "pairs": int(sums[k][0]),
                              "positive": int(sums[k][SUM_FIELDS.index("pos")]),
                              **{x: m[x] for x in ("gres_miou", "ciou", "n_acc", "t_acc")}})
        ci = bootstrap_ci(sums, bootstrap, seed) if bootstrap else None
        return Report(metrics, counts, cfg, per_split, per_group, ci)

    def pair_table(self) -> dict[str, np.ndarray]:
        """Per-pair arrays (for inspection and tests): keys, I, U, IoU, flags."""
        return {"inter": self.inter, "union": self.union, "iou": pair_iou(self.inter, self.union),
                "gt_pos": self.gt_pos, "pred_pos": self.pred_pos, "has_pred": self.has_pred,
                "gt_area": self.gt_area, "pred_area": self.pred_area}

    # -- shards ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """The processed pairs' statistics plus what identifies the ground truth and options."""
        rows = np.flatnonzero(self.has_pred)
        meta = {"format": "grdkit-eval-state/1", "fingerprint": self.fingerprint,
                "min_pixels": self.min_pixels, "cosod": self.cosod,
                "splits": list(self.gt.splits), "grdkit_version": __version__}
        st = {"meta": np.array(json.dumps(meta)), "rows": rows,
              "pred_area": self.pred_area[rows], "inter": self.inter[rows],
              "union": self.union[rows], "pred_pos": self.pred_pos[rows]}
        if self.cosod:
            st.update(c_mae=self.c_mae[rows], c_sm=self.c_sm[rows], c_em=self.c_em[rows],
                      c_f=self.c_f[rows])
        return st

    def save_state(self, path: str | Path) -> None:
        """Write :meth:`state_dict` as ``.npz`` atomically."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.state_dict())
        atomic_write_bytes(path, buf.getvalue())

    def load_state(self, state: dict, name: str = "state") -> None:
        """Add a shard's processed pairs; errors on another ground truth, options or overlap."""
        meta = json.loads(str(state["meta"]))
        if meta.get("format") != "grdkit-eval-state/1":
            raise InputError(name, "is not a grdkit evaluation state")
        if meta["fingerprint"] != self.fingerprint:
            raise InputError(name, "was evaluated against another ground truth",
                             hint="merge shards of the same --gt")
        for opt in ("min_pixels", "cosod"):
            if meta[opt] != getattr(self, opt):
                raise InputError(name, f"was evaluated with {opt}={meta[opt]}, "
                                 f"not {getattr(self, opt)}", hint="use the same options")
        rows = np.asarray(state["rows"], np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.keys)):
            raise InputError(name, "holds pair indices outside the ground truth")
        dup = rows[self.has_pred[rows]]
        if dup.size:
            raise InputError(name, "predicts a pair another shard already predicted",
                             f"(split, expression_id, image_id) {self.keys[int(dup[0])]}")
        self.has_pred[rows] = True
        self.pred_area[rows] = state["pred_area"]
        self.inter[rows] = state["inter"]
        self.union[rows] = state["union"]
        self.pred_pos[rows] = state["pred_pos"]
        if self.cosod:
            self.c_mae[rows], self.c_sm[rows] = state["c_mae"], state["c_sm"]
            self.c_em[rows], self.c_f[rows] = state["c_em"], state["c_f"]


def read_state(path: str | Path) -> dict:
    """Read a ``.npz`` evaluation state; :class:`InputError` if it is not one."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError(path, "state file not found") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(path, f"is not a grdkit evaluation state: {e}") from None


def state_meta(state: dict) -> dict:
    return json.loads(str(state["meta"]))


def bootstrap_ci(sums: np.ndarray, n: int, seed: int = 0) -> dict[str, list[float]]:
    """95% percentile intervals of every metric by resampling groups with replacement.

    Args:
        sums: per-group sums, shape ``(G, len(SUM_FIELDS))`` (see :func:`group_sums`).
        n: number of resamples.
        seed: numpy seed.

    Returns:
        ``{metric: [low, high]}`` (percent); metrics undefined in every resample are omitted.
    """
    rng = np.random.default_rng(seed)
    g = sums.shape[0]
    if g == 0:
        return {}
    idx = rng.integers(0, g, size=(n, g))
    weights = np.zeros((n, g))
    np.add.at(weights, (np.repeat(np.arange(n), g), idx.ravel()), 1.0)
    boot = metrics_from_sums(weights @ sums)
    out = {}
    for k, v in boot.items():
        v = np.asarray(v, np.float64)
        if np.all(np.isnan(v)):
            continue
        lo, hi = np.nanpercentile(v, [2.5, 97.5])
        out[k] = [float(lo), float(hi)]
    return out


__all__ = ["COSOD_METRICS", "GresEvaluator", "bootstrap_ci", "read_state"]
