"""Metric labels as the papers print them (``grdkit eval --names gres|rela|mabp|lts|cosod``).

Only the labels change: JSON reports keep grdkit's keys (``metrics``, ``per_split`` ...) and
gain ``"names": {"scheme": ..., "labels": {key: label}}``; the terminal and Markdown tables show
the labels. A key a scheme does not name keeps its key as label.

Sources: GRES (Wu et al. ICCV 2023) §5.1 and Tables 2-6 (mIoU with a bar for ``gres_miou``,
R_neg, and Table 3's Co-SOD MAE, F_max, S_α and E_ξ, where E_ξ is the *mean* E-measure,
grdkit's ``e_measure``); ReLA (Liu et al. CVPR 2023) §6.1 (gIoU, cIoU, N-acc, T-acc, Pr@X); MABP
(IEEE TMM) Tables I-IV (cIoU, gIoU, N-acc., T-acc., Pr@X); LTS (Jing et al. CVPR 2021) §4.1 and
Table 1 ("IoU" and prec@X; its "IoU" may be the mean or the overall IoU, so both are labelled
explicitly: mIoU, oIoU).
"""

from __future__ import annotations

_PR = (0.5, 0.6, 0.7, 0.8, 0.9)
_COSOD = {"mae": "MAE", "f_max": "F_max", "f_mean": "F_mean", "f_adaptive": "F_adp",
          "f_weighted": "F^w_β", "e_max": "E_max", "e_measure": "E_ξ", "e_adaptive": "E_adp",
          "s_measure": "S_α", "ap": "AP", "auc": "AUC"}
_RELA = {"giou": "gIoU", "ciou": "cIoU", "n_acc": "N-acc", "t_acc": "T-acc",
         **{f"pr@{t}": f"Pr@{t}" for t in _PR}}

NAMINGS: dict[str, dict[str, str]] = {
    # GRES writes an overline over mIoU (combining overline, U+0305, on each letter)
    "gres": {"gres_miou": "m\u0305I\u0305o\u0305U\u0305", "res_miou": "mIoU", "r_neg": "R_neg",
             **_COSOD},
    "rela": dict(_RELA),
    "mabp": {**_RELA, "n_acc": "N-acc.", "t_acc": "T-acc."},
    "lts": {"res_miou": "IoU (mIoU)", "ciou": "oIoU", "loc_acc": "localisation accuracy",
            **{f"pr@{t}": f"prec@{t}" for t in _PR}},
    "cosod": dict(_COSOD),
}


def labels(scheme: str | None, keys) -> dict[str, str]:
    """``{key: label}`` for ``keys`` under ``scheme`` (None: the keys themselves).

    Raises:
        ValueError: an unknown scheme (the message lists the choices).
    """
    if scheme is None:
        return {k: k for k in keys}
    if scheme not in NAMINGS:
        raise ValueError(f"unknown naming {scheme!r}; choose from {list(NAMINGS)}")
    table = NAMINGS[scheme]
    return {k: table.get(k, k) for k in keys}


__all__ = ["NAMINGS", "labels"]
