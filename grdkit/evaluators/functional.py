"""Functional core of the GRES / RES metrics: per-pair sufficient statistics -> metrics.

Every metric is a function of four per-pair quantities, kept as int64 / bool arrays:

* ``inter`` I: pixels in prediction AND ground truth;
* ``union`` U: pixels in prediction OR ground truth;
* ``gt_pos``: the pair is a target (positive) pair;
* ``pred_pos``: the prediction is "targeted", i.e. has at least ``min_pixels`` foreground pixels.
  A prediction below ``min_pixels`` counts as "no target" and as an empty mask everywhere.

Per-pair IoU is I/U; for an empty prediction on an empty ground truth (U = 0) it is taken as 1.
pycocotools' ``iou`` returns 0 in that case, hence I and U are computed here from ``area`` and
``merge`` instead. Definitions, all in percent:

* ``gres_miou`` (GRES, Wu et al. ICCV 2023, §5.1): mean over all pairs of a per-pair score:
  true positive -> I/U, true negative -> 1, false positive or false negative -> 0.
* ``res_miou`` (GRES §5.1, RES setting): mean I/U over target pairs only.
* ``giou`` (gRefCOCO / ReLA, Liu et al. CVPR 2023, §6.1): mean per-pair IoU where a no-target
  pair scores 1 if predicted no-target and 0 otherwise. It equals ``gres_miou`` by construction
  (a false negative has I = 0 anyway); both names are reported because both papers use them.
* ``ciou`` (ReLA §6.1): sum(I) / sum(U) over all pairs; a no-target pair wrongly predicted as
  targeted adds its prediction's area to U (its U), a true negative adds nothing. When sum(U) = 0
  (nothing to segment, nothing predicted) cIoU is None, like every metric whose denominator is
  empty (grdkit reported 100 before issue 25; ReLA's cum_I / cum_U would divide by zero).
* ``n_acc`` (ReLA): true negatives / no-target pairs. ``t_acc``: target pairs predicted as
  targeted / target pairs. ``r_neg`` (GRES R_neg, recall of negative pairs) equals ``n_acc``.
* ``pr@X`` (X = 0.5 ... 0.9): share of target pairs with IoU >= X.

ReLA's own naming (``gres_model/evaluation/refer_evaluation.py``) treats "no target" as the
positive class: its "TP" is a no-target pair predicted no-target (grdkit's true negative), "FN" a
no-target pair predicted targeted, "FP" a target pair predicted no-target, "TN" a target pair
predicted targeted. Its N-acc = TP/(TP+FN) and T-acc = TN/(TN+FP) are fractions (grdkit reports
percent). ReLA's first release (a389648, before commit 884ef17 "fix eval metrics") had
T_acc = TP/(TP+FP+1) and N_acc = TP/(TP+FN+1) in that naming, i.e. the precision of no-target
predictions and a shrunk no-target recall; MABP still ships them. grdkit uses the corrected
formulas above. A metric whose denominator is empty (e.g. ``n_acc`` with no negative pair) is
``None``.

Profiles (:mod:`.profiles`, :data:`PROTOCOLS` their names) change how the per-pair statistics
are counted and a few formulas (empty-union IoU, smoothing, prec@X comparison, the 2023-05
accuracies); the functions below take a :class:`~.profiles.Profile` (``None``: ``grdkit``).
``grdkit`` counts I and U at the image's original resolution.
``rela`` follows ReLA's test pipeline (``refcoco_mapper.py``: ``T.Resize((480, 480))``, and the
evaluator compares masks at that size): every ground-truth and predicted mask is resized to
480 x 480 with centre-sampled nearest neighbour (:func:`resize_nearest`) and I and U are counted
there; the no-target decision is still taken on the submitted mask at its own resolution
(``min_pixels``). ReLA rasterises the GT *polygons after* scaling them to 480 x 480
(``transform_instance_annotations`` then ``convert_coco_poly_to_mask``), so resizing the
rasterised GT mask is an approximation at object boundaries (see
``benchmarks/rela_protocol_refcocog.py`` for its size on real RefCOCOg).
"""

from __future__ import annotations

import numpy as np

from ..format import masks
from .profiles import DEFAULT, PROFILES, Profile

PROTOCOLS = tuple(PROFILES)  # evaluation profile names (``--profile``, formerly ``--protocol``)
RELA_SIZE = 480  # ReLA configs/referring_R50.yaml INPUT.IMAGE_SIZE
PR_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
METRICS = ("gres_miou", "res_miou", "giou", "ciou", "n_acc", "t_acc", "r_neg",
           *(f"pr@{t}" for t in PR_THRESHOLDS))


def pair_stats(pred: dict | None, gt: dict, gt_area: int, min_pixels: int = 1
               ) -> tuple[int, int, int, bool]:
    """Sufficient statistics of one pair, computed on RLEs (no densification).

    Args:
        pred: COCO compressed RLE of the prediction, or None for "no target".
        gt: COCO compressed RLE of the ground truth (same size).
        gt_area: foreground pixels of ``gt`` (precomputed).
        min_pixels: predictions with fewer foreground pixels are "no target".

    Returns:
        ``(pred_area, inter, union, pred_pos)`` in pixels; ``pred_area`` is 0 when the prediction
        counts as no target.
    """
    if pred is None:
        return 0, 0, gt_area, False
    p_area = masks.area(pred)
    if p_area < min_pixels or p_area == 0:
        return 0, 0, gt_area, False
    if gt_area == 0:
        return p_area, 0, p_area, True
    inter = masks.area(masks.intersection(pred, gt))
    return p_area, inter, p_area + gt_area - inter, True


def resize_index(in_size: int, out_size: int = RELA_SIZE, mode: str = "centre") -> np.ndarray:
    """Source index of each output pixel for nearest-neighbour resizing, int64 ``(out,)``.

    ``centre``: output pixel i takes input pixel ``floor((i + 0.5) * in_size / out_size)`` (the
    centre of output pixel i mapped back into the input), in exact integer arithmetic.
    ``opencv``: OpenCV's ``INTER_NEAREST`` (``resizeNN`` in ``imgproc/src/resize.cpp``):
    ``min(floor(i * (1 / (out_size / in_size))), in_size - 1)`` in float64, which is what
    ``cv2.resize`` computes (the float product differs from the exact ``floor(i * in / out)``
    for some sizes, e.g. 2 of 480 rows at ``in_size`` 39; tests compare with ``cv2.resize``).
    """
    i = np.arange(out_size, dtype=np.int64)
    if mode == "opencv":
        ifx = 1.0 / (out_size / in_size)
        return np.minimum(np.floor(i * ifx).astype(np.int64), in_size - 1)
    if mode != "centre":
        raise ValueError(f"unknown resize mode {mode!r}")
    return ((2 * i + 1) * in_size) // (2 * out_size)


def resize_nearest(mask: np.ndarray, out_h: int = RELA_SIZE, out_w: int = RELA_SIZE,
                   mode: str = "centre") -> np.ndarray:
    """Resize a ``(H, W)`` mask to ``(out_h, out_w)`` by centre-sampled nearest neighbour.

    ``out[i, j] = mask[floor((i + 0.5) H / out_h), floor((j + 0.5) W / out_w)]``. Written as an
    index map because library resizers differ at exactly this point: OpenCV's INTER_NEAREST
    samples ``floor(i H / out_h)`` (no half-pixel offset), and scikit-image / scipy's order-0
    resize rounds ``(i + 0.5) H / out_h - 0.5``, which breaks ties the other way; PIL's NEAREST
    computes this map in floating point and lands one pixel lower on exact ties (e.g. 99 of 480
    rows for H = 640). ``mode="opencv"`` gives OpenCV's map instead (:func:`resize_index`).
    """
    h, w = mask.shape
    # two 1-D gathers (whole rows first on C-ordered masks) are ~8x faster than one np.ix_
    # gather at 480 x 640
    return mask[resize_index(h, out_h, mode)][:, resize_index(w, out_w, mode)]


def resized_area(rle: dict, size: int = RELA_SIZE, mode: str = "centre") -> int:
    """Foreground pixels of a mask after resizing it to ``size x size`` (:func:`resize_nearest`)."""
    return int(np.count_nonzero(resize_nearest(masks.decode(rle), size, size, mode)))


def mask_stats(pred: dict | None, gt: dict, gt_area: int, profile: Profile | None = None
               ) -> tuple[int, int]:
    """``(inter, union)`` in pixels of the prediction mask *as submitted* (no no-target rule)
    against the ground truth, at the profile's resolution (original, or resized to
    ``profile.size`` squared). Used when a prediction carries its own no-target decision.

    Args:
        pred: compressed RLE or None (empty). gt: compressed RLE; gt_area: its pixels.
    """
    p = profile or DEFAULT
    if p.resize is None:
        if pred is None:
            return 0, gt_area
        pa = masks.area(pred)
        inter = masks.area(masks.intersection(pred, gt)) if pa and gt_area else 0
        return inter, pa + gt_area - inter
    if pred is None or masks.area(pred) == 0:
        return 0, resized_area(gt, p.size, p.resize) if gt_area else 0
    return pair_stats_resized(pred, True, gt, gt_area, p.size, p.resize)


def pair_stats_resized(pred: dict | None, pred_pos: bool, gt: dict, gt_area: int,
                       size: int = RELA_SIZE, mode: str = "centre") -> tuple[int, int]:
    """``(inter, union)`` of one pair after resizing both masks to ``size x size``; each mask is
    decoded once, and not at all when it is empty.

    Args:
        pred: prediction RLE (or None); pred_pos: the no-target decision taken at its own
            resolution (a "no target" prediction is an empty mask).
        gt: GT RLE; gt_area: its foreground pixels at its own resolution.
    """
    if pred is None or not pred_pos:
        return 0, resized_area(gt, size, mode) if gt_area else 0
    p = resize_nearest(masks.decode(pred), size, size, mode)  # uint8 0/1
    pa = int(np.count_nonzero(p))
    if gt_area == 0:
        return 0, pa
    g = resize_nearest(masks.decode(gt), size, size, mode)
    inter = int(np.count_nonzero(p & g))
    return inter, pa + int(np.count_nonzero(g)) - inter


def pair_iou(inter: np.ndarray, union: np.ndarray, profile: Profile | None = None
             ) -> np.ndarray:
    """Per-pair IoU (0-1): I/U, and where U = 0 (empty vs. empty) 1 (``grdkit``) or the
    profile's ``empty_union_iou``; with ``profile.smooth`` s, (I + s) / (U + s) (MCN)."""
    p = profile or DEFAULT
    inter = np.asarray(inter, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    if p.smooth:
        return (inter + p.smooth) / (union + p.smooth)
    out = np.full_like(inter, p.empty_union_iou)
    nz = union > 0
    out[nz] = inter[nz] / union[nz]
    return out


def confusion(gt_pos: np.ndarray, pred_pos: np.ndarray) -> dict[str, int]:
    """Image-level TP / TN / FP / FN of the target vs. no-target decision."""
    gt_pos = np.asarray(gt_pos, bool)
    pred_pos = np.asarray(pred_pos, bool)
    return {"tp": int(np.sum(gt_pos & pred_pos)), "tn": int(np.sum(~gt_pos & ~pred_pos)),
            "fp": int(np.sum(~gt_pos & pred_pos)), "fn": int(np.sum(gt_pos & ~pred_pos))}


def group_sums(inter, union, gt_pos, pred_pos, group_index: np.ndarray, n_groups: int,
               profile: Profile | None = None) -> np.ndarray:
    """Per-group sums from which every metric follows (used for totals and the bootstrap).

    ``profile`` (default ``grdkit``) sets the per-pair IoU (:func:`pair_iou`) and prec@X's
    comparison; with ``masks_only`` (``mcn``) mIoU and prec@X take every target pair's IoU
    whatever the no-target decision.

    Returns a float64 array of shape ``(n_groups, len(SUM_FIELDS))``.
    """
    p = profile or DEFAULT
    gt_pos = np.asarray(gt_pos, bool)
    pred_pos = np.asarray(pred_pos, bool)
    iou = pair_iou(inter, union, p)
    tp = gt_pos & pred_pos
    tn = ~gt_pos & ~pred_pos
    score = np.where(tp, iou, np.where(tn, 1.0, 0.0))
    scored = gt_pos if p.masks_only else tp
    pos_iou = np.where(scored, iou, 0.0)
    cols = [np.ones(len(gt_pos)), score, np.asarray(inter, np.float64),
            np.asarray(union, np.float64), gt_pos, ~gt_pos, tp, tn, pos_iou]
    cols += [scored & ((iou > t) if p.pr_strict else (iou >= t)) for t in p.pr_thresholds]
    data = np.stack([np.asarray(c, np.float64) for c in cols], axis=1)
    out = np.zeros((n_groups, data.shape[1]))
    np.add.at(out, np.asarray(group_index, np.int64), data)
    return out


SUM_FIELDS = ("pairs", "score", "inter", "union", "pos", "neg", "tp", "tn", "pos_iou",
              *(f"pr{t}" for t in PR_THRESHOLDS))


def metrics_from_sums(s: np.ndarray, profile: Profile | None = None
                      ) -> dict[str, float | None]:
    """Metrics (percent) from summed :data:`SUM_FIELDS` (shape ``(F,)`` or ``(B, F)``);
    ``profile`` ``rela-2023-05`` uses that release's N-acc / T-acc (:mod:`.profiles`)."""
    p = profile or DEFAULT
    s = np.asarray(s, np.float64)
    f = {k: s[..., i] for i, k in enumerate(SUM_FIELDS)}

    def ratio(num, den, empty=None):
        den = np.asarray(den)
        if den.ndim == 0:
            if den == 0:
                return empty
            return float(100.0 * num / den)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(den > 0, 100.0 * num / np.where(den > 0, den, 1), np.nan)
        if empty is not None:
            r = np.where(den > 0, r, empty)
        return r

    out = {
        "gres_miou": ratio(f["score"], f["pairs"]),
        "res_miou": ratio(f["pos_iou"], f["pos"]),
        "giou": ratio(f["score"], f["pairs"]),
        "ciou": ratio(f["inter"], f["union"]),  # None when sum(U) = 0 (module header)
        "n_acc": ratio(f["tn"], f["neg"]),
        "t_acc": ratio(f["tp"], f["pos"]),
        "r_neg": ratio(f["tn"], f["neg"]),
    }
    if p.accuracies == "rela-2023-05":
        # ReLA a389648: T_acc = TP/(TP+FP+1), N_acc = TP/(TP+FN+1) in its naming, where its TP
        # is grdkit's tn, its FP grdkit's fn (= pos - tp) and its FN grdkit's fp (= neg - tn)
        old_t = ratio(f["tn"], f["tn"] + f["pos"] - f["tp"] + 1)
        old_n = ratio(f["tn"], f["neg"] + 1)
        undefined = f["neg"] == 0  # the reference prints 0 there; grdkit: undefined
        if np.ndim(undefined) == 0:
            out["t_acc"], out["n_acc"] = (None, None) if undefined else (old_t, old_n)
        else:
            out["t_acc"] = np.where(undefined, np.nan, old_t)
            out["n_acc"] = np.where(undefined, np.nan, old_n)
    for t in PR_THRESHOLDS:
        out[f"pr@{t}"] = ratio(f[f"pr{t}"], f["pos"])
    return out


def gres_metrics(inter, union, gt_pos, pred_pos, profile: Profile | None = None
                 ) -> dict[str, float | None]:
    """All :data:`METRICS` (percent, or None when undefined) from per-pair statistics.

    Args:
        inter, union: I and U per pair (pixels), shape ``(P,)``.
        gt_pos, pred_pos: bool ``(P,)``: the pair is a target; the prediction is targeted.

    Example: a true positive with IoU 0.5, a true negative, a false positive (10 px) and a
    false negative (4 px)::

        >>> m = gres_metrics([5, 0, 0, 0], [10, 0, 10, 4], [1, 0, 0, 1], [1, 0, 1, 0])
        >>> m["gres_miou"], m["res_miou"], m["ciou"], m["n_acc"], m["t_acc"]
        (37.5, 25.0, 20.833333333333332, 50.0, 50.0)
    """
    n = len(np.asarray(gt_pos))
    sums = group_sums(inter, union, gt_pos, pred_pos, np.zeros(n, np.int64), 1, profile)[0]
    return metrics_from_sums(sums, profile)


# -- the per-pair statistics of many pairs at once, from the runs of their RLEs -----------------
# pycocotools' merge / area / decode are C, but called once per pair from Python they cost more
# than the arithmetic (v0.3 spent ~0.7 s on 31.6k pairs there); the functions below compute the
# same integers for a whole batch with numpy passes over the run lengths
# (:func:`grdkit.format.rlecheck.parse_runs`), and count the pixels of a nearest-resized mask
# without decoding it: nearest resizing keeps each source pixel ``(y, x)`` ``r[y] * m[x]``
# times, where ``r[y]`` / ``m[x]`` count the output rows / columns whose source index
# (:func:`resize_index`) is ``y`` / ``x``; so the resized area of a run of column-major pixels
# ``[s, e)`` is ``W(e) - W(s)`` with ``W(p) = M[p // h] * out + m[p // h] * R[p % h]``
# (``M``, ``R``: exclusive cumulative sums of ``m``, ``r``), and resizing commutes with AND,
# so the resized intersection is the resized area of the intersection.
BATCH = 256  # masks parsed per numpy pass (keeps the passes in cache; ~2x faster than 2048)


class _Weights:
    """Tables of ``W`` (module comment above) for the image sizes of a batch of pairs."""

    def __init__(self, hs: np.ndarray, ws: np.ndarray, size: int, mode: str):
        self.size = size
        self.h = hs
        self.roff, r_tab = _tables(hs, size, mode, rows=True)
        self.moff, m_tab, big_m = _tables(ws, size, mode, rows=False)
        self.r_tab, self.m_tab, self.big_m = r_tab, m_tab, big_m

    def at(self, pair: np.ndarray, p: np.ndarray) -> np.ndarray:
        """``W`` of local positions ``p`` (int64) of pairs ``pair``."""
        h = self.h[pair]
        x = p // h
        y = p - x * h
        mi = self.moff[pair] + x
        return self.big_m[mi] * self.size + self.m_tab[mi] * self.r_tab[self.roff[pair] + y]


def _tables(sides: np.ndarray, size: int, mode: str, rows: bool):
    uniq, inv = np.unique(sides, return_inverse=True)
    parts, big = [], []
    for s in uniq:
        counts = np.bincount(resize_index(int(s), size, mode), minlength=int(s) + 1)
        if rows:  # R[y] = output rows whose source row is < y
            parts.append(np.concatenate(([0], np.cumsum(counts)[:-1])))
        else:
            parts.append(counts)
            big.append(np.concatenate(([0], np.cumsum(counts)[:-1])))
    lens = np.array([len(p) for p in parts], np.int64)
    offs = np.concatenate(([0], np.cumsum(lens)[:-1]))[inv]
    if rows:
        return offs, np.concatenate(parts).astype(np.int64)
    return offs, np.concatenate(parts).astype(np.int64), np.concatenate(big).astype(np.int64)


def _starts(values: np.ndarray) -> np.ndarray:
    return np.cumsum(values) - values


def rle_areas(counts: list, hs: np.ndarray, ws: np.ndarray, size: int = RELA_SIZE,
              mode: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Foreground pixels of many sound compressed RLEs, and with ``mode`` (a
    :func:`resize_index` mode) of each mask resized to ``size x size`` (int64 ``(n,)`` each;
    the second is None without ``mode``). Equal to ``masks.area`` and to
    :func:`resized_area` (tests compare them); the strings must have passed
    :func:`grdkit.format.rlecheck.check_rles`. ``counts`` may hold the run lengths that check
    kept instead (:func:`grdkit.format.rlecheck.check_rles_runs`), one kind per list."""
    from ..format.rlecheck import parse_runs, runs_of

    n = len(counts)
    area = np.zeros(n, np.int64)
    area_r = np.zeros(n, np.int64) if mode else None
    for k0 in range(0, n, BATCH):
        c = counts[k0:k0 + BATCH]
        r = runs_of(c) if c and not isinstance(c[0], str) else parse_runs(c)
        k = len(r.bad)
        fg = r.fg
        area[k0:k0 + k] = np.bincount(r.seg[fg], weights=r.values[fg], minlength=k)
        if mode:
            hh, ww = hs[k0:k0 + k], ws[k0:k0 + k]
            wt = _Weights(hh, ww, size, mode)
            start = _starts(r.values)  # global; local = global - offset of its mask
            off = np.concatenate(([0], np.cumsum(hh * ww)[:-1]))
            seg = r.seg[fg]
            s = start[fg] - off[seg]
            wl = wt.at(seg, s + r.values[fg]) - wt.at(seg, s)
            area_r[k0:k0 + k] = np.bincount(seg, weights=wl, minlength=k)
    return area, area_r


def rle_intersections(pred: list, gt: list, hs: np.ndarray, ws: np.ndarray,
                      size: int = RELA_SIZE, mode: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels of ``pred[k] AND gt[k]`` for many pairs of sound compressed RLEs of one size each
    (int64 ``(n,)``), and with ``mode`` the same after resizing both to ``size x size``.
    ``pred`` and ``gt`` hold counts strings, or run lengths kept by a check
    (:func:`grdkit.format.rlecheck.check_rles_runs`), one kind per list.

    Equal to ``masks.area(masks.intersection(p, g))`` (pycocotools ``merge``) and to
    :func:`pair_stats_resized`'s intersection. Written on runs: for each foreground run
    ``[s, e)`` of the prediction, the ground truth's foreground pixels (or resized pixels)
    before ``e`` minus those before ``s``, found by one ``searchsorted`` over the runs of
    every pair laid end to end.
    """
    from ..format.rlecheck import parse_runs, runs_of

    n = len(pred)
    inter = np.zeros(n, np.int64)
    inter_r = np.zeros(n, np.int64) if mode else None
    for k0 in range(0, n, BATCH):
        p, g = pred[k0:k0 + BATCH], gt[k0:k0 + BATCH]
        i0, i1 = _intersect(runs_of(p) if p and not isinstance(p[0], str) else parse_runs(p),
                            runs_of(g) if g and not isinstance(g[0], str) else parse_runs(g),
                            hs[k0:k0 + BATCH], ws[k0:k0 + BATCH], size, mode)
        inter[k0:k0 + len(i0)] = i0
        if mode:
            inter_r[k0:k0 + len(i0)] = i1
    return inter, inter_r


def _intersect(rp, rg, hh: np.ndarray, ww: np.ndarray, size: int, mode: str | None):
    """:func:`rle_intersections` of one batch of parsed runs."""
    k = len(rp.bad)
    off = np.concatenate(([0], np.cumsum(hh * ww)[:-1]))
    gv, pv, gfg = rg.values, rp.values, rg.fg
    gs = _starts(gv)  # every mask sums to h*w: starts are global positions
    before = _starts(np.where(gfg, gv, 0))
    fg = rp.fg
    seg = rp.seg[fg]
    ps = _starts(pv)[fg]
    pe = ps + pv[fg]
    ts = np.searchsorted(gs, ps, "right") - 1  # the GT run holding each start / end
    te = np.searchsorted(gs, pe, "right") - 1

    def covered(x, t):
        return before[t] + np.where(gfg[t], np.minimum(x - gs[t], gv[t]), 0)

    inter = np.bincount(seg, weights=covered(pe, te) - covered(ps, ts), minlength=k)
    if not mode:
        return inter, None
    wt = _Weights(hh, ww, size, mode)
    gseg = rg.seg
    gl = gs - off[gseg]
    wbefore = _starts(np.where(gfg, wt.at(gseg, gl + gv) - wt.at(gseg, gl), 0))

    def wcovered(x, t):
        pair = gseg[t]
        part = wt.at(pair, np.maximum(x - off[pair], gl[t])) - wt.at(pair, gl[t])
        return wbefore[t] + np.where(gfg[t], part, 0)

    return inter, np.bincount(seg, weights=wcovered(pe, te) - wcovered(ps, ts), minlength=k)
