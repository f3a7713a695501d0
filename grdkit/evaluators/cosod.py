"""Co-SOD metrics (MAE, max F-measure, S-measure, mean E-measure) through pysodmetrics.

Definitions are PySODMetrics' (Pang et al.): MAE (Perazzi et al. CVPR 2012); F-measure with
beta^2 = 0.3 (Achanta et al. CVPR 2009), its maximum over 256 thresholds of the per-image-averaged
curve; S-measure with alpha = 0.5 (Fan et al. ICCV 2017); E-measure (Fan et al. IJCAI 2018), the
mean of its curve. All in 0-1. Every (expression, image) pair is one sample, including pairs whose
ground truth is empty (negative images), as Co-SOD benchmarks with distractors do.

On an image whose ground truth is empty, pysodmetrics' F-measure is 0 whatever the prediction
(recall is undefined), so ``f_max`` cannot exceed the share of target pairs; a perfect prediction on
a half-negative set scores f_max = 0.5. S-measure and E-measure do reward an empty prediction there.

Per-pair values are kept (``mae``, ``sm``, ``em`` mean, and the 256-point F curve) so shards merge
exactly; the dense maps are never stored.
"""

from __future__ import annotations

import numpy as np

COSOD_METRICS = ("mae", "f_max", "s_measure", "e_measure")


def cosod_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """Co-SOD statistics of one pair.

    Args:
        pred: uint8 ``(h, w)`` map in 0-255 (binary masks as 0/255).
        gt: uint8 or bool ``(h, w)``; nonzero = foreground.

    Returns:
        ``(mae, s_measure, e_measure_mean, f_curve)`` with ``f_curve`` float64 of shape (256,).
    """
    import py_sod_metrics as sod  # imported on first use: it pulls in scipy (slow to import)

    gt255 = np.where(np.asarray(gt) != 0, 255, 0).astype(np.uint8)
    pred = np.asarray(pred, np.uint8)
    mae, sm, em = sod.MAE(), sod.Smeasure(alpha=0.5), sod.Emeasure()
    fm = sod.FmeasureV2(metric_handlers={"fm": sod.FmeasureHandler(
        with_dynamic=True, with_adaptive=False, beta=0.3)})
    for m in (mae, sm, em, fm):
        m.step(pred=pred, gt=gt255)
    return (float(mae.get_results()["mae"]), float(sm.get_results()["sm"]),
            float(np.mean(em.get_results()["em"]["curve"])),
            np.asarray(fm.get_results()["fm"]["dynamic"], np.float64).reshape(-1))


def cosod_metrics(mae: np.ndarray, sm: np.ndarray, em: np.ndarray, f_curves: np.ndarray
                  ) -> dict[str, float | None]:
    """Aggregate per-pair values (means over pairs; F-max of the mean curve), 0-1."""
    if len(mae) == 0:
        return dict.fromkeys(COSOD_METRICS)
    return {"mae": float(np.mean(mae)), "f_max": float(np.max(np.mean(f_curves, axis=0))),
            "s_measure": float(np.mean(sm)), "e_measure": float(np.mean(em))}
