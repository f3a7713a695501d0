"""Co-SOD metrics under two protocols, from per-pair statistics that merge exactly.

Every (expression, image) pair is one sample, including pairs whose ground truth is empty
(negative images), as Co-SOD benchmarks with distractors do. All values are in 0-1. The soft
map is scored *as submitted*: the GRES "no target" decision (``min_pixels``) never touches it.
The ground truth is always a binary mask (a canonical RLE), compared at its own resolution.

Protocols (``cosod_protocol``):

``pysodmetrics`` (default): lartpang/PySODMetrics v1.6.2 (``py_sod_metrics``). The prediction
(uint8) is divided by 255 and min-max normalised when not constant (``utils.prepare_data``); the
curves use 256 thresholds ``t/255``, t = 0..255, on ``(pred * 255).astype(uint8)`` with ``>=``
(``fmeasurev2.py`` ``dynamically_binarizing``; ``sod_metrics.py`` ``Emeasure``
``cal_em_with_cumsumhistogram``). Scalars come from the library itself: ``MAE``, ``Smeasure``
(alpha 0.5), ``WeightedFmeasure`` (beta 1), the adaptive E of ``Emeasure`` and the adaptive F of
``FmeasureV2`` + ``FmeasureHandler(beta=0.3)`` (threshold ``min(2 mean(pred), 1)``).

``eval-co-sod``: zzhanghub/eval-co-sod (commit 7dd2383, ``evaluator.py``), written here from its
definitions: 255 thresholds ``linspace(0, 1 - 1e-10, 255)`` with ``>=``; the prediction min-max
normalised as ``(p - min) / (max - min + 1e-20)`` for F, E, S, AP and AUC (so a constant map
becomes 0), the raw ``pred / 255`` for MAE; no special case for an empty ground truth in E (an
empty GT scores ~0.25 whatever the prediction, ``_eval_e``); S-measure with a 0-based centroid
(``_centroid``) and its own SSIM (``_ssim``). Missing predictions are *skipped* (its
``dataloader.py`` keeps only files present in both folders) and counted
(``counts["cosod_skipped"]``); under ``pysodmetrics`` they are scored as all-zero maps.
Differences from the reference, by design: float64 instead of torch float32; where the reference
gives NaN (a one-pixel region's unbiased std, an empty S-measure quadrant whose weight is 0), the
std is 0 and the quadrant contributes 0.

Metrics (:data:`COSOD_METRICS`; ``None`` where the protocol does not define it):

=============== =========================================================== ===== =====
key             definition                                                   pysod e-c-s
=============== =========================================================== ===== =====
``mae``         mean |pred - gt| (Perazzi et al. CVPR 2012)                   yes   yes
``f_max``       max over thresholds of the pair-averaged F curve, beta^2 0.3  yes   yes
                (Achanta et al. CVPR 2009)
``f_mean``      mean of that curve                                            yes   yes
``f_adaptive``  mean over pairs of F at ``min(2 mean(pred), 1)``              yes   no
``f_weighted``  mean weighted F, beta 1 (Margolin et al. CVPR 2014)          yes   no
``e_max``       max of the pair-averaged E curve (Fan et al. IJCAI 2018)     yes   yes
``e_measure``   mean of that curve (the GRES paper's E_xi)                    yes   yes
``e_adaptive``  mean over pairs of E at ``min(2 mean(pred), 1)``              yes   no
``s_measure``   mean S-measure, alpha 0.5 (Fan et al. ICCV 2017)              yes   yes
``ap``          VOC AP of the pair-averaged PR curve (``Eval_AP``)            no    yes
``auc``         trapezoid area of the pair-averaged ROC, sorted by FPR        no    yes
=============== =========================================================== ===== =====

Per-pair state (what shards save, :mod:`.state`): integer threshold counts ``tp`` (foreground
pixels predicted foreground) and ``pp`` (pixels predicted foreground), shape ``(P, T)`` int32
with T = 256 or 255, ascending thresholds; the GT foreground ``g`` and pixel count ``n``; five
float64 scalars per pair (:data:`SCALARS`); a ``skipped`` flag. Every curve is a function of the
counts (the GT is binary, so E at a threshold depends only on tp, pp, g, n), hence merging
shards is exact.
"""

from __future__ import annotations

import numpy as np

COSOD_PROTOCOLS = ("pysodmetrics", "eval-co-sod")
COSOD_METRICS = ("mae", "f_max", "f_mean", "f_adaptive", "f_weighted", "e_max", "e_measure",
                 "e_adaptive", "s_measure", "ap", "auc")
DEFINED = {
    "pysodmetrics": ("mae", "f_max", "f_mean", "f_adaptive", "f_weighted", "e_max", "e_measure",
                     "e_adaptive", "s_measure"),
    "eval-co-sod": ("mae", "f_max", "f_mean", "e_max", "e_measure", "s_measure", "ap", "auc"),
}
SCALARS = ("mae", "sm", "wfm", "f_adp", "e_adp")
BETA2 = 0.3
_EPS_ECS = 1e-20            # eval-co-sod's epsilon
_EPS_PYSOD = np.spacing(1)  # PySODMetrics' EPS (utils.py)


def n_thresholds(protocol: str) -> int:
    """Number of curve points: 256 (pysodmetrics) or 255 (eval-co-sod)."""
    return 256 if protocol == "pysodmetrics" else 255


def thresholds(protocol: str) -> np.ndarray:
    """Ascending thresholds on the normalised prediction (0-1), float64 ``(T,)``."""
    if protocol == "pysodmetrics":
        return np.arange(256) / 255.0
    return np.linspace(0, 1 - 1e-10, 255)


def _check(protocol: str) -> None:
    if protocol not in COSOD_PROTOCOLS:
        raise ValueError(f"unknown Co-SOD protocol {protocol!r}; choose from {COSOD_PROTOCOLS}")


def normalised_levels(pred: np.ndarray, protocol: str) -> np.ndarray:
    """The normalised value of each of the 256 uint8 levels for this prediction, ``(256,)``.

    pysodmetrics: ``prepare_data`` then ``(x * 255).astype(uint8)`` (truncating), returned as
    that integer level (compared with the integer thresholds 0..255, as the library's
    histograms do). eval-co-sod: ``(x - min) / (max - min + 1e-20)`` on ``x = pred / 255``.
    """
    lv = np.arange(256) / 255.0
    mn, mx = pred.min() / 255.0, pred.max() / 255.0
    if protocol == "pysodmetrics":
        if mx != mn:
            lv = (lv - mn) / (mx - mn)
        # levels outside [min, max] do not occur in this map; clip so the cast is defined
        return (np.clip(lv, 0, 1) * 255).astype(np.uint8).astype(np.int64)
    return (lv - mn) / (mx - mn + _EPS_ECS)


def threshold_counts(pred: np.ndarray, gt: np.ndarray, protocol: str
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(tp, pp)``: foreground-GT pixels and all pixels with normalised value >= each threshold.

    Args:
        pred: uint8 ``(h, w)`` map in 0-255. gt: bool ``(h, w)``.

    Returns:
        two int64 arrays of shape ``(T,)``, ascending thresholds (:func:`thresholds`).
    """
    hist_all = np.bincount(pred.ravel(), minlength=256)
    hist_fg = np.bincount(pred[gt], minlength=256)
    lv = normalised_levels(pred, protocol)
    th = np.arange(256) if protocol == "pysodmetrics" else thresholds(protocol)
    ge = (lv[None, :] >= th[:, None]).astype(np.int64)
    return ge @ hist_fg, ge @ hist_all


def _div(num, den, eps: float | None):
    """``num / (den + eps)`` (eval-co-sod) or 0 where ``den == 0`` (PySODMetrics' divide)."""
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    if eps is not None:
        return num / (den + eps)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def curves_from_counts(tp, pp, g, n, protocol: str) -> dict[str, np.ndarray]:
    """Per-pair curves from counts: precision, recall (= TPR), F, E, FPR; each ``(P, T)``.

    Args:
        tp, pp: ``(P, T)`` counts (:func:`threshold_counts`); g, n: ``(P,)`` GT foreground and
            pixel counts.

    F = (1 + beta^2) P R / (beta^2 P + R), 0 where undefined. E (Fan et al. IJCAI 2018, Eq. 4-6)
    from the four pixel classes: with demeaned values a = b_pred - mean(b_pred) and
    c = gt - mean(gt), align = 2ac / (a^2 + c^2 + eps), enhanced = (align + 1)^2 / 4, and
    E = sum(enhanced) / (n - 1 + eps). pysodmetrics replaces the sum by the number of correctly
    labelled pixels when the GT is empty or full (``Emeasure.cal_em_with_cumsumhistogram``).
    """
    tp = np.asarray(tp, np.float64)
    pp = np.asarray(pp, np.float64)
    g = np.asarray(g, np.float64)[:, None]
    n = np.asarray(n, np.float64)[:, None]
    ecs = protocol == "eval-co-sod"
    eps = _EPS_ECS if ecs else None
    prec = _div(tp, pp, eps)
    rec = _div(tp, np.broadcast_to(g, tp.shape), eps)
    num, den = (1 + BETA2) * prec * rec, BETA2 * prec + rec
    if ecs:
        with np.errstate(invalid="ignore", divide="ignore"):
            f = num / den
        f[~np.isfinite(f)] = 0.0
    else:
        f = _div(num, den, None)
    fp = pp - tp
    fpr = _div(fp, np.broadcast_to(n - g, tp.shape), eps)
    e_eps = _EPS_ECS if ecs else _EPS_PYSOD
    mp, mg = pp / n, g / n
    total = np.zeros_like(tp)
    for cnt, pv, gv in ((tp, 1.0, 1.0), (fp, 1.0, 0.0), (g - tp, 0.0, 1.0),
                        (n - g - fp, 0.0, 0.0)):
        a, c = pv - mp, gv - mg
        align = 2 * a * c / (a * a + c * c + e_eps)
        total = total + cnt * (align + 1) ** 2 / 4
    if not ecs:
        empty = (g == 0)[:, 0]
        full = (g == n)[:, 0]
        total[empty] = (n - pp)[empty]
        total[full] = pp[full]
    e = total / (n - 1 + e_eps)
    return {"precision": prec, "recall": rec, "f": f, "e": e, "fpr": fpr}


# -- eval-co-sod's S-measure (evaluator.py Eval_Smeasure, _S_object, _S_region, _ssim) ---------
# Written here because no maintained package implements this variant (0-based centroid, its
# SSIM with 1e-20 terms); PySODMetrics' Smeasure is the MATLAB (+1 centroid) one.
def _ecs_object(vals: np.ndarray) -> float:
    x = vals.mean()
    sd = vals.std(ddof=1) if vals.size > 1 else 0.0
    return 2.0 * x / (x * x + 1.0 + sd + _EPS_ECS)


def _ecs_ssim(p: np.ndarray, g: np.ndarray) -> float:
    n = p.size
    x, y = p.mean(), g.mean()
    sx2 = ((p - x) ** 2).sum() / (n - 1 + _EPS_ECS)
    sy2 = ((g - y) ** 2).sum() / (n - 1 + _EPS_ECS)
    sxy = ((p - x) * (g - y)).sum() / (n - 1 + _EPS_ECS)
    alpha = 4 * x * y * sxy
    beta = (x * x + y * y) * (sx2 + sy2)
    if alpha != 0:
        return alpha / (beta + _EPS_ECS)
    return 1.0 if beta == 0 else 0.0


def ecs_smeasure(pred: np.ndarray, gt: np.ndarray) -> float:
    """eval-co-sod's S-measure (alpha 0.5) of a normalised float map ``pred`` vs bool ``gt``."""
    y = gt.mean()
    if y == 0:
        return float(1.0 - pred.mean())
    if y == 1:
        return float(pred.mean())
    g = gt.astype(np.float64)
    u = g.mean()
    obj = u * _ecs_object(pred[gt]) + (1 - u) * _ecs_object(1.0 - pred[~gt])
    h, w = gt.shape
    total = g.sum()
    cx = int(np.round((g.sum(axis=0) * np.arange(w)).sum() / total + _EPS_ECS))
    cy = int(np.round((g.sum(axis=1) * np.arange(h)).sum() / total + _EPS_ECS))
    area = h * w
    w1 = cx * cy / area
    w2 = (w - cx) * cy / area
    w3 = cx * (h - cy) / area
    weights = (w1, w2, w3, 1 - w1 - w2 - w3)
    quads = ((slice(0, cy), slice(0, cx)), (slice(0, cy), slice(cx, w)),
             (slice(cy, h), slice(0, cx)), (slice(cy, h), slice(cx, w)))
    region = sum(wt * _ecs_ssim(pred[q], g[q]) for wt, q in zip(weights, quads)
                 if pred[q].size)
    return float(max(0.5 * obj + 0.5 * region, 0.0))


WFM_MARGIN = 3  # half of PySODMetrics' 7 x 7 Gaussian window (WeightedFmeasure.cal_wfm)


def pysod_scalars(pred: np.ndarray, gt: np.ndarray) -> list[float]:
    """The five :data:`SCALARS` of one pair by PySODMetrics' own code, without its wasted work.

    Each metric object's ``step`` normalises the map again (``utils.prepare_data``) and
    ``Emeasure.step`` also computes the 256-threshold curve, which grdkit computes from counts
    (:func:`curves_from_counts`); here the map is prepared once and the library's per-metric
    functions are called on it as each ``step`` calls them: ``MAE.cal_mae``,
    ``Smeasure.cal_sm``, ``FmeasureV2.adaptively_binarizing`` + ``FmeasureHandler``,
    ``Emeasure.cal_adaptive_em`` (with the two attributes ``step`` sets), and ``WeightedFmeasure.cal_wfm`` on a crop: every pixel
    where ``|pred - gt|`` is non-zero lies in the box of ``gt | pred != 0``, the distance
    transform of a crop holding every GT pixel gives each pixel of it the same distance, and
    the 7 x 7 filter reads 3 pixels beyond a GT pixel, so the box grown by
    :data:`WFM_MARGIN` (clipped to the image, where the filter's zero padding is the image's)
    gives the same weighted errors; sums over the crop differ from the full image's only in
    float rounding (tests compare with the library's ``step`` to 1e-13). ~2-3x the library's
    five ``step`` calls on 480 x 640 maps with objects of a fifth of the image.

    Args:
        pred: uint8 ``(h, w)`` map in 0-255. gt: bool ``(h, w)``.

    Returns:
        ``[mae, s_measure, f_weighted, f_adaptive, e_adaptive]`` (:data:`SCALARS` order).
    """
    import py_sod_metrics as sod  # imported on first use: it pulls in scipy (slow)
    from py_sod_metrics.utils import prepare_data

    gt255 = np.where(gt, 255, 0).astype(np.uint8)
    p, g = prepare_data(pred, gt255)  # what every step() does first
    mae = sod.MAE().cal_mae(p, g)
    sm = sod.Smeasure(alpha=0.5).cal_sm(p, g)
    handler = sod.FmeasureHandler(with_dynamic=False, with_adaptive=True, beta=BETA2)
    fg = np.count_nonzero(g)  # as FmeasureV2.step computes them
    counts = sod.FmeasureV2(metric_handlers={"fm": handler}).adaptively_binarizing(
        pred=p, gt=g, FG=fg, BG=g.size - fg)
    f_adp = handler(**counts)
    em = sod.Emeasure()
    em.gt_fg_numel = np.count_nonzero(g)  # as Emeasure.step sets them
    em.gt_size = g.shape[0] * g.shape[1]
    e_adp = em.cal_adaptive_em(p, g)
    if np.all(~g):  # WeightedFmeasure.step
        wfm = 0
    else:
        rows = np.flatnonzero((g | (p != 0)).any(axis=1))
        cols = np.flatnonzero((g | (p != 0)).any(axis=0))
        r0, r1 = max(rows[0] - WFM_MARGIN, 0), min(rows[-1] + WFM_MARGIN + 1, g.shape[0])
        c0, c1 = max(cols[0] - WFM_MARGIN, 0), min(cols[-1] + WFM_MARGIN + 1, g.shape[1])
        wfm = sod.WeightedFmeasure(beta=1).cal_wfm(p[r0:r1, c0:c1], g[r0:r1, c0:c1])
    # get_results(): the mean over the one pair stepped (float64)
    return [float(np.mean(np.array([v], np.float64))) for v in (mae, sm, wfm, f_adp, e_adp)]


def cosod_pair(pred: np.ndarray, gt: np.ndarray, protocol: str = "pysodmetrics") -> dict:
    """Co-SOD statistics of one pair.

    Args:
        pred: uint8 ``(h, w)`` map in 0-255 (binary masks as 0/255).
        gt: bool or uint8 ``(h, w)``; nonzero = foreground.
        protocol: one of :data:`COSOD_PROTOCOLS`.

    Returns:
        ``{"tp", "pp"}`` int64 ``(T,)``, ``"g"``, ``"n"`` ints and ``"scalars"`` float64
        ``(5,)`` in :data:`SCALARS` order (NaN where the protocol does not define it).
    """
    _check(protocol)
    pred = np.asarray(pred, np.uint8)
    gt = np.asarray(gt) != 0
    tp, pp = threshold_counts(pred, gt, protocol)
    if protocol == "pysodmetrics":
        scal = pysod_scalars(pred, gt)
    else:
        x = pred / 255.0
        norm = (x - x.min()) / (x.max() - x.min() + _EPS_ECS)
        scal = [np.mean(np.abs(x - gt)), ecs_smeasure(norm, gt), np.nan, np.nan, np.nan]
    return {"tp": tp, "pp": pp, "g": int(gt.sum()), "n": int(gt.size),
            "scalars": np.asarray(scal, np.float64)}


def _voc_ap(prec: np.ndarray, rec: np.ndarray) -> float:
    """eval-co-sod ``Eval_AP``: Detectron ``voc_eval`` precision envelope on the mean curve."""
    r = np.concatenate(([0.0], rec, [1.0]))
    p = np.concatenate(([0.0], prec, [0.0]))
    order = np.argsort(r, kind="stable")
    r, p = r[order], p[order]
    p = np.maximum.accumulate(p[::-1])[::-1]
    i = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[i + 1] - r[i]) * p[i + 1]))


def cosod_metrics(tp, pp, g, n, scalars, skipped, protocol: str) -> tuple[dict, dict | None]:
    """Aggregate per-pair statistics (flat means over pairs, as both references do).

    Args:
        tp, pp: ``(P, T)``; g, n: ``(P,)``; scalars: ``(P, 5)``; skipped: bool ``(P,)`` (pairs
            left out: eval-co-sod's missing predictions).

    Returns:
        ``(metrics, curves)``: metrics in 0-1 (:data:`COSOD_METRICS`, None where undefined or no
        pair), curves ``{"threshold", "precision", "recall", "f", "e", "tpr", "fpr"}`` of the
        pair-averaged curves, each ``(T,)`` (None when no pair).
    """
    _check(protocol)
    keep = ~np.asarray(skipped, bool)
    out = dict.fromkeys(COSOD_METRICS)
    if not keep.any():
        return out, None
    c = curves_from_counts(np.asarray(tp)[keep], np.asarray(pp)[keep], np.asarray(g)[keep],
                           np.asarray(n)[keep], protocol)
    mean = {k: v.mean(axis=0) for k, v in c.items()}
    s = np.asarray(scalars, np.float64)[keep].mean(axis=0)
    vals = {"mae": s[0], "s_measure": s[1], "f_weighted": s[2], "f_adaptive": s[3],
            "e_adaptive": s[4], "f_max": mean["f"].max(), "f_mean": mean["f"].mean(),
            "e_max": mean["e"].max(), "e_measure": mean["e"].mean()}
    if protocol == "eval-co-sod":
        vals["ap"] = _voc_ap(mean["precision"], mean["recall"])
        order = np.argsort(mean["fpr"], kind="stable")
        trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
        vals["auc"] = float(trapezoid(mean["recall"][order], mean["fpr"][order]))
    for k in DEFINED[protocol]:
        out[k] = float(vals[k])
    curves = {"threshold": thresholds(protocol), "precision": mean["precision"],
              "recall": mean["recall"], "f": mean["f"], "e": mean["e"], "tpr": mean["recall"],
              "fpr": mean["fpr"]}
    return out, curves
