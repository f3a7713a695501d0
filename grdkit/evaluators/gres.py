"""The GRES evaluator: detectron2-style ``reset`` / ``process`` / ``evaluate`` over a pair table.

Memory holds only per-pair sufficient statistics (I, U, prediction area, target flags; with
Co-SOD, integer threshold counts and five scalars per pair, :mod:`.cosod`), never masks. Statistics are integers and
metrics are always computed from the full arrays in the ground truth's pair order, so shards
combine exactly (:mod:`.state`). Report assembly and the bootstrap live in :mod:`.report`.

Per-pair I and U follow the evaluation profile (:mod:`.profiles`). A prediction carrying its own
no-target decision (``"no_target"``, :mod:`.predictions`) is scored as ReLA's and MABP's
evaluators score a head's decision with its mask: the mask, whatever its size, is measured as
submitted (``min_pixels`` does not apply), then a no-target sample predicted no-target adds
I = U = 0, one predicted targeted adds U = its mask's area; a target sample predicted no-target
adds I = 0 and U = |mask ∪ GT| (its mask stays in U), one predicted targeted its I and U. Under
the ``mcn`` profile (``masks_only``) I and U are always the mask's. Without the key the mask is the
decision: fewer than ``min_pixels`` pixels is "no target" and counts as an empty mask.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import numpy as np

from .. import __version__
from ..errors import InputError
from ..format import GresDataset, masks
from . import breakdowns as bd
from .cosod import COSOD_PROTOCOLS, SCALARS, cosod_pair, n_thresholds
from .functional import rle_areas, rle_intersections
from .predictions import GroundTruth, Prediction, check_predictions
from .profiles import get_profile
from .report import Report, assemble_report


class GresEvaluator:
    """Accumulates per-pair statistics of predictions against one or more ground-truth splits.

    Args:
        gt: ``{split: GresDataset}`` (one or more splits) or a single :class:`GresDataset`.
        min_pixels: predictions with fewer foreground pixels are "no target" (>= 1).
        cosod: also compute Co-SOD metrics (decodes masks; slower).
        protocol: the evaluation profile's name (:mod:`.profiles`: ``grdkit``, ``rela``,
            ``rela-2023-05``, ``mcn``) or a :class:`~.profiles.Profile`.
        cosod_protocol: ``"pysodmetrics"`` or ``"eval-co-sod"`` (:mod:`.cosod`).
        workers: processes scoring the Co-SOD statistics (>= 1; 1 = in this process). Each
            pair's statistics are computed by the same function whichever process runs it and
            stored in the same per-pair rows, so the report is byte-identical to one worker's
            (what shards rely on, :mod:`.state`). Only Co-SOD uses them: it is ~100x the cost
            of the RLE-domain GRES statistics.

    Raises:
        ValueError: an unknown profile, ``min_pixels < 1`` or ``workers < 1``.
        InputError: an incomplete ground truth (see :meth:`GresDataset.require_complete`);
            from :meth:`process`, an invalid prediction or a pair predicted twice.
    """

    def __init__(self, gt: dict[str, GresDataset] | GresDataset, min_pixels: int = 1,
                 cosod: bool = False, protocol: str = "grdkit",
                 cosod_protocol: str = "pysodmetrics", workers: int = 1):
        if isinstance(gt, GresDataset):
            gt = {gt.split or "test": gt}
        if min_pixels < 1:
            raise ValueError("min_pixels must be >= 1")
        self.profile = get_profile(protocol)
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = int(workers)
        self._pool = None
        if cosod_protocol not in COSOD_PROTOCOLS:
            raise ValueError(f"unknown Co-SOD protocol {cosod_protocol!r}; choose from "
                             f"{COSOD_PROTOCOLS}")
        self.protocol = self.profile.name
        self.cosod_protocol = cosod_protocol
        self.gt = GroundTruth(gt)
        self.min_pixels = int(min_pixels)
        self.cosod = bool(cosod)
        rows, self.groups, labels, counts = [], [], [], []
        any_kind = False
        self.row_of: dict[tuple[str, int, int], int] = {}
        group_index: dict[tuple[str, int], int] = {}
        for split, ds in gt.items():
            ds.require_complete()
            for g in ds.groups:
                group_index[(split, g.id)] = len(self.groups)
                self.groups.append((split, g.id))
            expr_labels = {}  # per expression: its group row, length bin and kind
            for ex in ds.expressions:
                neg = ex.extra.get("is_negative")
                any_kind |= neg is not None
                expr_labels[ex.id] = (group_index[(split, ex.group_id)],
                                      bd.length_bin(bd.words(ex.text)), bd.kind(neg))
            for t in ds.targets:
                gi, length, kind = expr_labels[t.expression_id]
                self.row_of[(split, t.expression_id, t.image_id)] = len(rows)
                seg = t.segmentation
                rows.append((gi, t.expression_id, t.image_id, seg["size"][0], seg["size"][1],
                             t.positive))
                counts.append(seg["counts"])
                labels.append((bd.target_type(t.positive, len(t.ann_ids)), length, kind))
        info = np.array(rows, dtype=np.int64).reshape(-1, 6)
        self.height, self.width = info[:, 3], info[:, 4]
        prof = self.profile
        # every GT area at once from its runs (the strings passed the load-time check), and at
        # the profile's resolution for the resizing profiles (:func:`.functional.rle_areas`)
        self.gt_area = np.concatenate([ds.target_areas() for ds in gt.values()]).astype(
            np.int64) if rows else np.zeros(0, np.int64)
        self._gt_runs = [r for ds in gt.values() for r in ds.target_runs()]  # row order
        self.gt_area_r = rle_areas(self._gt_runs, self.height, self.width, prof.size,
                                   prof.resize)[1] if prof.resize else None
        arr = np.column_stack([info[:, :3], self.gt_area, info[:, 5]])
        self.group_idx = arr[:, 0]
        self.gt_pos = arr[:, 4].astype(bool)
        self.keys = list(self.row_of)
        lab = np.array(labels, dtype=np.int64).reshape(-1, 3)
        self.labels = {"by_target_type": lab[:, 0], "by_length": lab[:, 1],
                       "by_expression_kind": lab[:, 2] if any_kind else None}
        h = hashlib.sha256()
        h.update(json.dumps([list(gt), self.groups]).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
        # the masks themselves, not only their areas (one update of the concatenation is the
        # same digest as one update per string)
        h.update("".join(counts).encode("ascii"))
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
        self.union = self.gt_area.copy()  # rela: rescaled in evaluate() where nothing came
        self.pred_pos = np.zeros(n, bool)
        if self.cosod:
            t = n_thresholds(self.cosod_protocol)
            self.c_done = np.zeros(n, bool)
            self.c_tp = np.zeros((n, t), np.int32)
            self.c_pp = np.zeros((n, t), np.int32)
            self.c_g = np.zeros(n, np.int64)
            self.c_n = np.zeros(n, np.int64)
            self.c_scalars = np.full((n, len(SCALARS)), np.nan)

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
        batch = check_predictions(predictions, self.gt)
        n = len(batch)
        rows = np.empty(n, np.int64)
        for k, p in enumerate(batch):
            row = self.row_of.get((p.split, p.expression_id, p.image_id))
            if row is None:  # a Prediction checked against another ground truth
                raise InputError(None, "prediction for a pair this ground truth does not have",
                                 f"(split {p.split!r}, expression_id {p.expression_id}, "
                                 f"image_id {p.image_id})")
            rows[k] = row
        twice = self.has_pred[rows] | _repeated(rows)
        if twice.any():
            p = batch[int(np.flatnonzero(twice)[0])]
            raise InputError(None, "pair predicted twice", f"(split {p.split!r}, "
                             f"expression_id {p.expression_id}, image_id {p.image_id})")
        self._add_stats(batch, rows)
        if not self.cosod:
            return
        pending = []  # Co-SOD work for the worker processes: (row, map or RLE, GT RLE)
        for p, row in zip(batch, rows.tolist()):  # the map as submitted (no-target: GRES only)
            gt_rle = self.gt_rle(row)
            if self.workers > 1:
                pending.append((row, p.soft if p.soft is not None else p.rle, gt_rle))
                continue
            self._cosod_row(row, _dense_map(p.soft if p.soft is not None else p.rle, gt_rle),
                            gt_rle)
        if pending:
            self._cosod_parallel(pending)

    def _add_stats(self, batch: list[Prediction], rows: np.ndarray) -> None:
        """Per-pair I, U, prediction area and decision of a checked batch, all pairs at once
        (:func:`.functional.rle_areas`, :func:`.functional.rle_intersections`; the rules are
        the module header's and :func:`.functional.pair_stats`' / ``mask_stats``')."""
        prof = self.profile
        mode = prof.resize
        has = np.array([p.rle is not None for p in batch], bool)
        nt_given = np.array([p.no_target is not None for p in batch], bool)
        nt = np.array([bool(p.no_target) for p in batch], bool)
        with_rle = np.flatnonzero(has)
        hs, ws = self.height[rows], self.width[rows]
        a = np.zeros(len(batch), np.int64)  # the mask's pixels at its own resolution
        ar = np.zeros(len(batch), np.int64)  # and at the profile's (resizing profiles)
        known = [batch[k].area for k in with_rle]
        if mode or None in known:
            runs = [batch[k].runs for k in with_rle]
            if any(x is None for x in runs):
                runs = [batch[k].rle["counts"] for k in with_rle]
            pa, par = rle_areas(runs, hs[with_rle], ws[with_rle], prof.size, mode)
            a[with_rle] = pa
            if mode:
                ar[with_rle] = par
        else:  # areas found by the reader's RLE check
            a[with_rle] = known
        g = self.gt_area[rows]
        both = np.flatnonzero((a > 0) & (g > 0))
        inter = np.zeros(len(batch), np.int64)
        inter_r = np.zeros(len(batch), np.int64)
        pr = [batch[k].runs for k in both]
        if any(x is None for x in pr):
            pr = [batch[k].rle["counts"] for k in both]
        i0, i1 = rle_intersections(pr, [self._gt_runs[int(rows[k])] for k in both],
                                   hs[both], ws[both], prof.size, mode)
        inter[both] = i0
        if mode:
            inter_r[both] = i1
            gr = self.gt_area_r[rows]
            a_, g_, i_ = ar, gr, inter_r
        else:
            a_, g_, i_ = a, g, inter
        # without a decision: fewer than min_pixels pixels is "no target", an empty mask
        pos = np.where(nt_given, ~nt, (a >= self.min_pixels) & (a > 0))
        scored = pos | nt_given  # a decision's mask is measured as submitted
        i_out = np.where(scored, i_, 0)
        u_out = np.where(scored, a_ + g_ - i_, g_)
        if not prof.masks_only:  # ReLA: a no-target decision adds I = 0, and U = 0 on a negative
            i_out = np.where(nt_given & nt, 0, i_out)
            u_out = np.where(nt_given & nt & ~self.gt_pos[rows], 0, u_out)
        self.has_pred[rows] = True
        self.pred_area[rows] = np.where(nt_given | pos, a, 0)
        self.inter[rows] = i_out
        self.union[rows] = u_out
        self.pred_pos[rows] = pos

    def _cosod_parallel(self, tasks: list) -> None:
        """Score ``(row, map or RLE, GT RLE)`` tasks in worker processes (a pool kept for the
        evaluator's life, closed by :meth:`close`); results land in their rows."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            if self.cosod_protocol == "pysodmetrics":  # imported once, before the fork
                import py_sod_metrics  # noqa: F401
            ctx = multiprocessing.get_context("fork" if "fork" in
                                              multiprocessing.get_all_start_methods() else None)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
        chunk = max(1, len(tasks) // (4 * self.workers))
        proto = self.cosod_protocol
        for row, r in zip((t[0] for t in tasks),
                          self._pool.map(_cosod_task, ((m, g, proto) for _, m, g in tasks),
                                         chunksize=chunk)):
            self.c_tp[row], self.c_pp[row] = r["tp"], r["pp"]
            self.c_g[row], self.c_n[row], self.c_scalars[row] = r["g"], r["n"], r["scalars"]
            self.c_done[row] = True

    def close(self) -> None:
        """Stop the Co-SOD worker processes, if any (also done by :meth:`evaluate`)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _cosod_row(self, row: int, dense: np.ndarray, gt_rle: dict) -> None:
        r = cosod_pair(dense, masks.decode(gt_rle), self.cosod_protocol)
        self.c_tp[row], self.c_pp[row] = r["tp"], r["pp"]
        self.c_g[row], self.c_n[row], self.c_scalars[row] = r["g"], r["n"], r["scalars"]
        self.c_done[row] = True

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
        self.close()
        missing = np.flatnonzero(~self.has_pred)
        if strict and missing.size:
            names = ", ".join(f"{self.keys[r]}" for r in missing[:5])
            raise InputError(None, f"{missing.size} pairs have no prediction (strict)",
                             f"(split, expression_id, image_id) {names}"
                             f"{' ...' if missing.size > 5 else ''}",
                             "predict every pair, null for no target")
        cosod = None
        if self.cosod:
            skipped = ~self.has_pred
            if self.cosod_protocol == "pysodmetrics":  # a missing prediction: all-zero map
                skipped = np.zeros_like(skipped)
                for r in missing:
                    if not self.c_done[r]:
                        gt_rle = self.gt_rle(int(r))
                        self._cosod_row(int(r), np.zeros(tuple(gt_rle["size"]), np.uint8),
                                        gt_rle)
            cosod = {"tp": self.c_tp, "pp": self.c_pp, "g": self.c_g, "n": self.c_n,
                     "scalars": self.c_scalars, "skipped": skipped,
                     "protocol": self.cosod_protocol}
        cfg = {"protocol": self.protocol, "profile": self.profile.record(),
               "min_pixels": self.min_pixels, "strict": strict,
               "cosod": self.cosod,
               **({"cosod_protocol": self.cosod_protocol} if self.cosod else {}),
               "bootstrap": bootstrap, "seed": seed, "splits": list(self.gt.splits),
               "gt_fingerprint": self.fingerprint, "grdkit_version": __version__,
               **(config or {})}
        union = self.union
        prof = self.profile
        if prof.resize is not None:  # a missing pair adds its GT's area at 480 x 480 to U
            union = union.copy()
            union[missing] = self.gt_area_r[missing]
        return assemble_report(
            inter=self.inter, union=union, gt_pos=self.gt_pos, pred_pos=self.pred_pos,
            has_pred=self.has_pred, group_idx=self.group_idx, groups=self.groups,
            splits=list(self.gt.splits), cosod=cosod, config=cfg, bootstrap=bootstrap,
            seed=seed, labels=self.labels, profile=self.profile)


def _repeated(rows: np.ndarray) -> np.ndarray:
    """True at every occurrence of a value after its first (bool, like ``rows``)."""
    out = np.zeros(len(rows), bool)
    if len(rows) > 1:
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        out[order[1:]] = srt[1:] == srt[:-1]
    return out


def _dense_map(pred, gt_rle: dict) -> np.ndarray:
    """The uint8 0-255 map Co-SOD scores: a soft map as submitted, an RLE as 0/255, or zeros."""
    if isinstance(pred, np.ndarray):
        return pred
    if pred is not None:
        return masks.decode(pred) * np.uint8(255)
    return np.zeros(tuple(gt_rle["size"]), np.uint8)


def _cosod_task(args) -> dict:
    """One pair's Co-SOD statistics in a worker process (module level: picklable)."""
    pred, gt_rle, protocol = args
    return cosod_pair(_dense_map(pred, gt_rle), masks.decode(gt_rle), protocol)


__all__ = ["GresEvaluator"]
