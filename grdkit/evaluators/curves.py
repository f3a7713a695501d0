"""Co-SOD curves as CSV and PNG: the PR curve, and F and E over the threshold.

``write_curves(report, folder)`` writes ``pr_curve.csv`` (threshold, precision, recall),
``f_curve.csv`` (threshold, f), ``e_curve.csv`` (threshold, e), ``roc_curve.csv`` (threshold,
fpr, tpr) and ``pr_curve.png``, ``f_curve.png``, ``e_curve.png``. The curves are the
pair-averaged ones of :func:`.cosod.cosod_metrics` (0-1, ascending thresholds on the normalised
prediction). The plots are drawn with PIL: matplotlib is not a grdkit dependency, and a line
chart with axes is all that is needed here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_write_bytes, atomic_write_text

PLOTS = {"pr_curve": ("recall", "precision", "PR curve"),
         "f_curve": ("threshold", "f", "F-measure (beta^2 = 0.3) over threshold"),
         "e_curve": ("threshold", "e", "E-measure over threshold")}


def line_plot_png(x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, title: str,
                  size: tuple[int, int] = (480, 360)) -> bytes:
    """A PNG line chart of ``y`` over ``x`` (both 0-1) with axes, ticks and labels."""
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 50, 15, 30, 40
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    pw, ph = w - left - right, h - top - bottom

    def xy(a, b):
        return left + float(a) * pw, top + (1.0 - float(b)) * ph

    for k in range(6):  # grid and ticks every 0.2
        v = k / 5
        gx, _ = xy(v, 0)
        _, gy = xy(0, v)
        d.line([(gx, top), (gx, top + ph)], fill=(225, 225, 225))
        d.line([(left, gy), (left + pw, gy)], fill=(225, 225, 225))
        d.text((gx - 8, top + ph + 5), f"{v:.1f}", fill="black")
        d.text((left - 28, gy - 6), f"{v:.1f}", fill="black")
    d.rectangle([left, top, left + pw, top + ph], outline="black")
    pts = [xy(a, b) for a, b in zip(np.clip(x, 0, 1), np.clip(y, 0, 1))]
    if len(pts) > 1:
        d.line(pts, fill=(31, 119, 180), width=2)
    d.text((left, 8), title, fill="black")
    d.text((left + pw // 2 - 20, h - 18), xlabel, fill="black")
    d.text((4, top - 14), ylabel, fill="black")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_curves(report, folder: str | Path, commit=None) -> list[Path]:
    """Write the CSVs and PNGs above into ``folder`` (created); returns the paths written.

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
        commit.write_bytes(p, png) if commit is not None else atomic_write_bytes(p, png)
        written.append(p)
    return written
