"""Co-SOD curves as CSV and PNG: the PR curve, and F and E over the threshold.

``write_curves(report, folder)`` writes ``pr_curve.csv`` (threshold, precision, recall),
``f_curve.csv`` (threshold, f), ``e_curve.csv`` (threshold, e), ``roc_curve.csv`` (threshold,
fpr, tpr) and, with the ``plots`` extra (matplotlib, :mod:`grdkit.plots`), ``pr_curve.png``,
``f_curve.png``, ``e_curve.png``, drawn as step plots that stay readable for binary masks
(:func:`line_plot_png`). The curves are the pair-averaged ones of
:func:`.cosod.cosod_metrics` (0-1, ascending thresholds on the normalised prediction).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_write_bytes, atomic_write_text
from ..plots import png_bytes, pyplot

PLOTS = {"pr_curve": ("recall", "precision", "PR curve"),
         "f_curve": ("threshold", "f", "F-measure (beta^2 = 0.3) over threshold"),
         "e_curve": ("threshold", "e", "E-measure over threshold")}


def distinct_points(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The curve's points with consecutive repeats removed (binary masks give the same point at
    every threshold: 256 copies of one operating point)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.ones(len(x), bool)
    keep[1:] = (np.diff(x) != 0) | (np.diff(y) != 0)
    return x[keep], y[keep]


def line_plot_png(x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, title: str,
                  size: tuple[int, int] = (480, 360)) -> bytes | None:
    """A PNG step plot (``size`` pixels) of ``y`` over ``x`` (both 0-1, axes fixed to 0-1), or
    None without matplotlib (the ``plots`` extra).

    Drawn as steps (``drawstyle="steps-post"``, as scikit-learn's ``PrecisionRecallDisplay``
    draws a PR curve) over the points sorted by ``x``, with a marker on each distinct point when
    there are few (<= 20): binary masks give one or two operating points, which a line through
    256 identical points would not show. One distinct point is also written out in the plot.
    """
    plt = pyplot()
    if plt is None:
        return None
    px, py = distinct_points(x, y)
    order = np.argsort(px, kind="stable")
    px, py = px[order], py[order]
    fig, ax = plt.subplots(figsize=(size[0] / 100, size[1] / 100))
    ax.step(px, py, where="post", color="tab:blue", lw=1.5)
    if len(px) <= 20:
        ax.plot(px, py, "o", color="tab:blue", ms=6)
    if len(px) == 1:
        ax.annotate(f"one operating point (binary masks): {xlabel} {px[0]:.3f}, "
                    f"{ylabel} {py[0]:.3f}", (0.02, 0.04), xycoords="axes fraction",
                    fontsize=8)
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, color="0.9")
    fig.tight_layout()
    return png_bytes(fig, dpi=100)


def write_curves(report, folder: str | Path, commit=None) -> list[Path]:
    """Write the CSVs and PNGs above into ``folder`` (created); returns the paths written (the
    CSVs only without matplotlib: the caller can tell from the list).

    With ``commit`` (a :class:`grdkit.io.Commit`) the files join it (all or none).

    Raises:
        InputError: the report has no Co-SOD curves (evaluate with ``cosod=True``).
    """
    import pandas as pd

    c = report.curves
    if c is None:
        raise InputError(folder, "no Co-SOD curves to write", hint="evaluate with the Co-SOD metrics on")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tables = {"pr_curve": ["threshold", "precision", "recall"], "f_curve": ["threshold", "f"],
              "e_curve": ["threshold", "e"], "roc_curve": ["threshold", "fpr", "tpr"]}
    written = []
    for name, cols in tables.items():
        p = folder / f"{name}.csv"
        text = pd.DataFrame({k: c[k] for k in cols}).to_csv(index=False, float_format="%.10g")
        commit.write_text(p, text) if commit is not None else atomic_write_text(p, text)
        written.append(p)
    for name, (xk, yk, title) in PLOTS.items():
        p = folder / f"{name}.png"
        png = line_plot_png(c[xk], c[yk], xk, yk, title)
        if png is None:
            break
        commit.write_bytes(p, png) if commit is not None else atomic_write_bytes(p, png)
        written.append(p)
    return written
