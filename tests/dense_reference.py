"""An independent, plainly written dense numpy evaluator (the reference the tests compare to).

It shares no code with grdkit.evaluators: masks are full numpy arrays, every metric is written
out from its definition in the papers (GRES ICCV 2023 §5.1; ReLA / gRefCOCO CVPR 2023 §6.1).
"""

import numpy as np


def dense_metrics(pairs, min_pixels=1, pred_pos=None):
    """pairs: list of (gt_mask bool HxW, pred_mask bool HxW or None). Returns metrics in percent.

    pred_pos: optional per-pair "targeted" decisions taken elsewhere (e.g. at another
    resolution); by default a prediction is targeted when it has >= min_pixels pixels.
    """
    scores, res_ious, inters, unions = [], [], 0, 0
    tp = tn = fp = fn = 0
    pos_ious = []
    for k, (gt, pred) in enumerate(pairs):
        gt = np.asarray(gt, bool)
        decided = None if pred_pos is None else bool(pred_pos[k])
        if pred is None or decided is False or (
                decided is None and np.count_nonzero(pred) < min_pixels):
            pred = np.zeros_like(gt)
        pred = np.asarray(pred, bool)
        gt_has = gt.any()
        pred_has = pred.any() if decided is None else decided
        i = np.logical_and(gt, pred).sum()
        u = np.logical_or(gt, pred).sum()
        inters += i
        unions += u
        if gt_has:
            iou = i / u
            pos_ious.append(iou if pred_has else 0.0)
            res_ious.append(iou)
            if pred_has:
                tp += 1
                scores.append(iou)
            else:
                fn += 1
                scores.append(0.0)
        else:
            if pred_has:
                fp += 1
                scores.append(0.0)
            else:
                tn += 1
                scores.append(1.0)
    n_pos, n_neg = tp + fn, tn + fp
    out = {
        "gres_miou": 100 * np.mean(scores),
        "giou": 100 * np.mean(scores),
        "res_miou": 100 * np.mean(res_ious) if res_ious else None,
        "ciou": 100 * inters / unions if unions else None,
        "n_acc": 100 * tn / n_neg if n_neg else None,
        "r_neg": 100 * tn / n_neg if n_neg else None,
        "t_acc": 100 * tp / n_pos if n_pos else None,
    }
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        out[f"pr@{t}"] = 100 * np.mean([x >= t for x in pos_ious]) if pos_ious else None
    out["counts"] = {"tp": tp, "tn": tn, "fp": fp, "fn": fn}
    return out
