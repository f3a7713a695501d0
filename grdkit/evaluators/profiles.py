"""Evaluation profiles: the evaluator a paper's number came from, by name and version.

A profile fixes everything in which published evaluators differ while the metric *names* stay the
same: the resolution I and U are counted at (and how masks are resized to it), the per-pair IoU
of an empty union, smoothing, the prec@X comparison and thresholds, the no-target accuracies, and
whether a no-target decision zeroes a pair's intersection. Every report records the profile
(``config["protocol"]``: its name, ``config["profile"]``: name, version, reference), and
``--baseline``, ``grdkit eval merge`` and the leaderboard refuse to compare reports of different
profiles or versions (:func:`grdkit.evaluators.report.comparability_problems`).

=================  ===========================================================================
``grdkit``         default. I and U at the image's original resolution; GRES mIoU / R_neg (Wu
                   et al. ICCV 2023 §5.1), ReLA's gIoU / cIoU / N-acc / T-acc formulas after
                   ReLA commit 884ef17; prec@X counts IoU >= X over target pairs.
``rela``           ReLA after commit 884ef17 (henghuiding/ReLA
                   ``gres_model/evaluation/refer_evaluation.py`` @ 884ef173): I and U at
                   480 x 480; both masks resized by centre-sampled nearest neighbour (grdkit's
                   approximation of ReLA's GT, whose polygons are rasterised at 480:
                   ``refcoco_mapper.py``); T_acc = TN/(TN+FP), N_acc = TP/(TP+FN) in ReLA's
                   naming; a targeted sample whose union is empty scores IoU 0.
``rela-2023-05``   ReLA before 884ef17 (its first release a389648, ``refer_evaluation.py``),
                   which MABP's official evaluator still ships (buptLwz/MABP
                   ``gres_model/evaluation/refer_evaluation.py`` @ 5e871fbc): T_acc =
                   TP/(TP+FP+1) and N_acc = TP/(TP+FN+1) in ReLA's naming, i.e. grdkit's
                   ``t_acc`` = TN/(TN+FN+1) (the precision of the no-target predictions, shrunk)
                   and ``n_acc`` = TN/(negatives+1); the ground truth resized to 480 x 480 by
                   OpenCV ``INTER_NEAREST`` (``cv2.resize`` in MABP's ``refcoco_mapper.py`` @
                   5e871fbc, line 167: source index ``floor(i * (1 / (480 / H)))`` in
                   float64, no half-pixel offset), the prediction by the same map.
``mcn``            the classic RES evaluator of LTS's lineage (luogen1996/MCN
                   ``callbacks/eval.py`` @ 0ea06876, ``cal_seg_iou``): IoU per sample =
                   (I + 1e-10) / (U + 1e-10) at the original resolution, mIoU their mean,
                   prec@X the share of samples with IoU *strictly above* X at MCN's thresholds
                   ``np.arange(0.5, 1, 0.05)`` (so 0.7 is 0.7000000000000002); plus the
                   cumulative overall IoU sum(I) / sum(U) (LAVT ``test.py`` @ 066bcf26 "overall
                   IoU"; CRIS / MABP's "oIoU" / "cIoU"). The mask is scored as submitted: a
                   no-target decision does not zero its intersection.
=================  ===========================================================================

Differences from the reference code, by design (all profiles): grdkit reports percent (ReLA and
MABP print N_acc / T_acc as fractions); a metric whose denominator is empty is ``None``: without
no-target samples ReLA / MABP print 0 for N_acc and T_acc, where grdkit gives ``n_acc`` None and
``t_acc`` its definition (None under ``rela-2023-05``), and MABP's Pr@X divides by
max(1, targets); where the sum of unions is 0, cIoU is 100 (the references divide by zero). In
``mcn``, mIoU and prec@X average over *target* pairs (MCN averages over every sample, which is
the same on RES benchmarks, where every sample is a target); LTS's tables print "IoU" without
saying which of mIoU and oIoU it is (LTS §4.1 describes the per-sample IoU), so compare with
care. What the reference evaluators take from their models, and grdkit from the submission: ReLA's
mask is the argmax of its two-channel output and MABP's the output > 0.5, both at 480 x 480, and
MABP's ``pred_nt`` is the OR of its intermediate no-target heads (the "trick" in its ``process``);
grdkit resizes the submitted full-resolution mask to 480 x 480 with the profile's map (ours: the
references have no such step). MABP's GT is its own PNG rendering of the referred mask (lmdb) at
full resolution; grdkit's is the dataset's RLE, the same union. MABP's ``evaluate`` files every
sample under one source (a leftover loop variable), which changes nothing for one dataset; ReLA's
"full" multi-source line is not reproduced. ReLA / MABP print Pr@0.7-0.9 only; grdkit adds 0.5
and 0.6 by the same rule.

ReLA's / MABP's no-target decision comes from a classifier head; submit it as the
``"no_target"`` key of a prediction (:mod:`.predictions`), otherwise an empty mask (below
``min_pixels``) is the decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Profile:
    """One evaluation profile (see the module header).

    Attributes:
        name, version: what reports record; a new version whenever results can change.
        reference: repository, file and commit of the code reproduced.
        resize: ``None`` (original resolution), ``"centre"`` (centre-sampled nearest) or
            ``"opencv"`` (OpenCV INTER_NEAREST) to ``size`` x ``size``.
        size: the side of the square I and U are counted at when ``resize`` is set.
        empty_union_iou: IoU of a targeted pair whose union is empty (1.0 GRES, 0.0 ReLA).
        smooth: added to I and U in the per-pair IoU (MCN's 1e-10), 0 for none.
        pr_strict: prec@X counts IoU > X (MCN) instead of IoU >= X.
        pr_thresholds: the X compared against (keys stay ``pr@0.5`` ... ``pr@0.9``).
        accuracies: ``"corrected"`` (ReLA after 884ef17) or ``"rela-2023-05"``.
        masks_only: per-pair I and U of the mask as submitted, whatever the no-target decision
            (MCN has no such decision); otherwise ReLA's rule (module header of :mod:`.gres`).
    """

    name: str
    version: int
    reference: str
    resize: str | None = None
    size: int = 480
    empty_union_iou: float = 1.0
    smooth: float = 0.0
    pr_strict: bool = False
    pr_thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    accuracies: str = "corrected"
    masks_only: bool = False

    def record(self) -> dict:
        """What a report's ``config["profile"]`` holds."""
        return {"name": self.name, "version": self.version, "reference": self.reference}


_RELA = "henghuiding/ReLA gres_model/evaluation/refer_evaluation.py"
_MCN_THRESHOLDS = tuple(float(x) for x in np.arange(0.5, 1, 0.05)[0::2])  # MCN cal_seg_iou

PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("grdkit", 1, "grdkit (GRES ICCV 2023 §5.1; ReLA gIoU / cIoU / N-acc / T-acc after "
            "884ef17) at original resolution"),
    Profile("rela", 1, f"{_RELA} @ 884ef173d3f4821355625babdd4abcba9e5e3230; "
            "gres_model/data/dataset_mappers/refcoco_mapper.py (480 x 480)", resize="centre",
            empty_union_iou=0.0),
    Profile("rela-2023-05", 1, f"{_RELA} @ a389648 (before 884ef17) as shipped by buptLwz/MABP "
            "gres_model/evaluation/refer_evaluation.py @ 5e871fbc46bad69dac316120b524826fbafe7b43;"
            " GT resize: MABP gres_model/data/dataset_mappers/refcoco_mapper.py @ "
            "5e871fbc46bad69dac316120b524826fbafe7b43 line 167 (cv2.INTER_NEAREST)",
            resize="opencv",
            empty_union_iou=0.0, accuracies="rela-2023-05"),
    Profile("mcn", 1, "luogen1996/MCN callbacks/eval.py @ 0ea06876b3d556a13105f6f1f930ccc897df6d8c"
            " (cal_seg_iou); overall IoU: yz93/LAVT-RIS test.py @ "
            "066bcf26cb07ad6e8ffcbf839fde416fdf94009f", smooth=1e-10, pr_strict=True,
            pr_thresholds=_MCN_THRESHOLDS, masks_only=True),
)}
DEFAULT = PROFILES["grdkit"]


def get_profile(name: str | Profile | None) -> Profile:
    """The profile called ``name`` (``None``: ``grdkit``).

    Raises:
        ValueError: an unknown name (the message lists the choices).
    """
    if isinstance(name, Profile):
        return name
    if name is None:
        return DEFAULT
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown evaluation profile {name!r}; choose from "
                         f"{list(PROFILES)}") from None


__all__ = ["DEFAULT", "PROFILES", "Profile", "get_profile"]
