"""The GRES evaluator: detectron2-style ``reset`` / ``process`` / ``evaluate`` over a pair table.

Memory holds only per-pair sufficient statistics (I, U, prediction area, target flags; plus four
Co-SOD values and a 256-point F curve when Co-SOD is on), never masks. Statistics are integers and
metrics are always computed from the full arrays in the ground truth's pair order, so shards
combine exactly (:mod:`.state`). Report assembly and the bootstrap live in :mod:`.report`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import numpy as np

from .. import __version__
from ..errors import InputError
from ..format import GresDataset, masks
from .cosod import cosod_pair
from .functional import pair_stats
from .predictions import GroundTruth, Prediction, check_predictions
from .report import Report, assemble_report


class GresEvaluator:
    """Accumulates per-pair statistics of predictions against one or more ground-truth splits.

    Args:
        gt: ``{split: GresDataset}`` (one or more splits) or a single :class:`GresDataset`.
        min_pixels: predictions with fewer foreground pixels are "no target" (>= 1).
        cosod: also compute Co-SOD metrics (decodes masks; slower).

    Raises:
        InputError: an incomplete ground truth (see :meth:`GresDataset.require_complete`);
            from :meth:`process`, an invalid prediction or a pair predicted twice.
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
        self.row_of: dict[tuple[str, int, int], int] = {}
        group_index: dict[tuple[str, int], int] = {}
        for split, ds in gt.items():
            ds.require_complete()
            for g in ds.groups:
                group_index[(split, g.id)] = len(self.groups)
                self.groups.append((split, g.id))
            for t in ds.targets:
                gid = ds.expression(t.expression_id).group_id
                self.row_of[(split, t.expression_id, t.image_id)] = len(rows)
                rows.append((group_index[(split, gid)], t.expression_id, t.image_id,
                             masks.area(t.segmentation), t.positive))
        arr = np.array(rows, dtype=np.int64).reshape(-1, 5)
        self.group_idx = arr[:, 0]
        self.gt_area = arr[:, 3]
        self.gt_pos = arr[:, 4].astype(bool)
        self.keys = list(self.row_of)
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

    def gt_rle(self, row: int) -> dict:
        """Ground-truth RLE of pair ``row``."""
        split, e, i = self.keys[row]
        return self.gt.splits[split].target(e, i).segmentation

    def process(self, predictions: Iterable[Prediction | dict]) -> None:
        """Validate a batch of predictions against the ground truth, then add it.

        Args:
            predictions: :class:`Prediction` objects or ``preds.json``-style dicts (see
                :mod:`.predictions`); checked by :func:`.predictions.check_predictions`.

        Raises:
            InputError: an invalid prediction, or a pair already processed.
        """
        for p in check_predictions(predictions, self.gt):
            row = self.row_of[(p.split, p.expression_id, p.image_id)]
            if self.has_pred[row]:
                raise InputError(None, "pair predicted twice", f"(split {p.split!r}, "
                                 f"expression_id {p.expression_id}, image_id {p.image_id})")
            gt_rle = self.gt_rle(row)
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

    def evaluate(self, strict: bool = False, bootstrap: int = 0, seed: int = 0,
                 config: dict | None = None) -> Report:
        """Compute the report (:func:`.report.assemble_report`).

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
            raise InputError(None, f"{missing.size} pairs have no prediction (strict)",
                             f"(split, expression_id, image_id) {names}"
                             f"{' ...' if missing.size > 5 else ''}",
                             "predict every pair, null for no target")
        cosod = None
        if self.cosod:
            for r in missing:  # a missing prediction is an all-zero map
                if np.isnan(self.c_mae[r]):
                    gt_rle = self.gt_rle(int(r))
                    self._cosod_row(int(r), np.zeros(tuple(gt_rle["size"]), np.uint8), gt_rle)
            cosod = {"mae": self.c_mae, "sm": self.c_sm, "em": self.c_em, "f": self.c_f}
        cfg = {"min_pixels": self.min_pixels, "strict": strict, "cosod": self.cosod,
               "bootstrap": bootstrap, "seed": seed, "splits": list(self.gt.splits),
               "gt_fingerprint": self.fingerprint, "grdkit_version": __version__,
               **(config or {})}
        return assemble_report(
            inter=self.inter, union=self.union, gt_pos=self.gt_pos, pred_pos=self.pred_pos,
            has_pred=self.has_pred, group_idx=self.group_idx, groups=self.groups,
            splits=list(self.gt.splits), cosod=cosod, config=cfg, bootstrap=bootstrap,
            seed=seed)


__all__ = ["GresEvaluator"]
