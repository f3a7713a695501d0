"""The result of a reproduction: every paper cell with the paper's value, ours and the delta.

:func:`collect` reads the evaluation reports of a plan's cells from ``--out``; a cell's
``status`` is ``ok`` (ours measured), ``published`` (another method's row: the paper's number
only), ``not implemented`` (grdkit has no such variant), ``waits for ...`` (an option another
issue adds), or ``not run``. ``delta = ours - paper`` in the metric's unit (percentage points
for ``%``, 0-1 for Co-SOD metrics; for ``mae`` lower is better). Renderings: :func:`to_rich`
(terminal), :func:`to_markdown`, :func:`to_csv` (one row per cell), :func:`to_json`, and
:func:`plot` (ours against the paper's value; needs the ``plots`` extra, matplotlib).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..evaluators.report import check_report
from ..io import atomic_write_bytes, read_json
from ..plots import MISSING, png_bytes, pyplot
from . import api
from .plan import Plan

SMOKE_NOTE = "smoke run: toy data, numbers are not comparable"
# one marker per metric (mIoU-bar, R_neg, gIoU, ...), one colour per benchmark
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def collect(plan: Plan, out: str | Path) -> list[dict]:
    """One dict per cell of the selected rows: recipe, row, label, status, benchmark, metric,
    label, unit, paper, ours, delta, note."""
    out = Path(out)
    cells = []
    for row, b, m, paper in plan.recipe.cells():
        if row.id not in plan.rows:
            continue
        ours, note = None, row.note
        if row.status == "published":
            status = "published"
        elif row.status == "not-implemented":
            status = "not implemented"
        else:
            eval_id = plan.cells[(row.id, b.id)]
            wait = plan.waiting(eval_id)
            path = out / "evals" / f"{eval_id.split('-', 1)[1]}.json"
            if wait:
                status = "waits for " + "; ".join(dict.fromkeys(api.PENDING.get(w, w)
                                                               for w in wait))
            elif path.exists():
                rep = check_report(read_json(path, "evaluation report"), path,
                                   "delete it: the evaluation step runs again")
                ours = rep["metrics"].get(m.key)
                status = "ok" if ours is not None else f"no {m.key} in the report"
            else:
                status = "not run"
        delta = None if ours is None or paper is None else round(ours - paper, 4)
        cells.append({"recipe": plan.recipe.name, "row": row.id, "row_label": row.label,
                      "status": status, "benchmark": b.id, "benchmark_label": b.label,
                      "metric": m.key, "metric_label": m.label, "unit": m.unit,
                      "paper": paper, "ours": None if ours is None else round(ours, 4),
                      "delta": delta, "note": note})
    return cells


def _num(v, unit: str) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if unit == "0-1" else f"{v:.2f}"


def _cell_text(c: dict) -> str:
    p = _num(c["paper"], c["unit"])
    if c["status"] == "ok":
        d = c["delta"]
        ds = "" if d is None else f" ({'+' if d >= 0 else ''}{_num(d, c['unit'])})"
        return f"{p} / {_num(c['ours'], c['unit'])}{ds}"
    if c["status"] == "published":
        return p
    short = {"not implemented": "n/i", "not run": "not run"}.get(c["status"], "waits")
    return f"{p} / {short}"


def _grid(cells: list[dict]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    cols = list(dict.fromkeys(f"{c['benchmark_label']} {c['metric_label']}" for c in cells))
    rows: dict[str, list[str]] = {}
    for c in cells:
        rows.setdefault(c["row_label"], []).append(_cell_text(c))
    return cols, list(rows.items())


def legend(cells: list[dict]) -> list[str]:
    """The footnotes: what waits for what, which rows are not implemented."""
    out = []
    for status in dict.fromkeys(c["status"] for c in cells):
        if status.startswith("waits for") or status in ("not implemented", "not run"):
            rows = sorted({c["row"] for c in cells if c["status"] == status})
            out.append(f"{', '.join(rows)}: {status}")
    return out


def to_markdown(cells: list[dict], title: str = "", smoke: bool = False) -> str:
    """A Markdown table: each cell 'paper / ours (delta)'; footnotes below. A ``smoke`` run
    says so above the table (:data:`SMOKE_NOTE`)."""
    cols, rows = _grid(cells)
    lines = [f"### {title}", ""] if title else []
    if smoke:
        lines += [f"> **{SMOKE_NOTE}**", ""]
    lines += ["| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    lines += [f"| {label} | " + " | ".join(vals) + " |" for label, vals in rows]
    lines += [""] + [f"- {x}" for x in legend(cells)]
    return "\n".join(lines) + "\n"


def to_rich(cells: list[dict], title: str = "", smoke: bool = False):
    """A rich table (terminal)."""
    from rich.table import Table

    cols, rows = _grid(cells)
    t = Table(title=f"{title}  (paper / ours (delta)){f'  [{SMOKE_NOTE}]' if smoke else ''}",
              title_justify="left")
    t.add_column("method")
    for c in cols:
        t.add_column(c, justify="right")
    for label, vals in rows:
        t.add_row(label, *vals)
    return t


def to_csv(cells: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(cells[0]) if cells else ["recipe"],
                       lineterminator="\n")
    w.writeheader()
    for c in cells:
        w.writerow({k: "" if v is None else v for k, v in c.items()})
    return buf.getvalue()


def to_json(cells: list[dict], plan: Plan) -> str:
    r = plan.recipe
    return json.dumps({"recipe": r.name, "title": r.title, "cite": r.cite, "notes": r.notes,
                       "rows": plan.rows, "smoke": plan.smoke,
                       **({"smoke_note": SMOKE_NOTE} if plan.smoke else {}), "cells": cells},
                      indent=1) + "\n"


def plot_figure(cells: list[dict], title: str = "", smoke: bool = False):
    """The matplotlib figure of :func:`plot`, or a string saying why there is none."""
    plt = pyplot()
    if plt is None:
        return f"no plot: {MISSING}"
    done = [c for c in cells if c["status"] == "ok" and c["paper"] is not None]
    if not done:
        return "no plot: no cell has both the paper's value and ours"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    benches = list(dict.fromkeys(c["benchmark_label"] for c in done))
    metrics = list(dict.fromkeys(c["metric_label"] for c in done))
    colour = {b: f"C{k % 10}" for k, b in enumerate(benches)}
    marker = {m: MARKERS[k % len(MARKERS)] for k, m in enumerate(metrics)}
    for ax, unit in zip(axes, ("%", "0-1")):
        sub = [c for c in done if c["unit"] == unit]
        if not sub:
            ax.set_visible(False)
            continue
        for b in benches:
            for m in metrics:
                pts = [c for c in sub if c["benchmark_label"] == b and c["metric_label"] == m]
                if pts:
                    ax.scatter([c["paper"] for c in pts], [c["ours"] for c in pts], s=30,
                               color=colour[b], marker=marker[m], label=f"{b} · {m}")
        lo = min(min(c["paper"], c["ours"]) for c in sub)
        hi = max(max(c["paper"], c["ours"]) for c in sub)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"paper ({unit})")
        ax.set_ylabel(f"ours ({unit})")
        ax.legend(fontsize=7, title="benchmark · metric (colour · marker)", title_fontsize=7)
        if smoke:
            ax.text(0.5, 0.5, "SMOKE RUN", transform=ax.transAxes, fontsize=34, alpha=0.15,
                    color="red", ha="center", va="center", rotation=25)
    fig.suptitle(f"{title}\n{SMOKE_NOTE}" if smoke else title,
                 color="firebrick" if smoke else "black")
    fig.tight_layout()
    return fig


def plot(cells: list[dict], path: str | Path, title: str = "", smoke: bool = False
         ) -> str | None:
    """Ours against the paper's value per cell (colour: benchmark, marker: metric; the diagonal
    is a perfect reproduction), written to ``path`` (PNG); a ``smoke`` run is labelled
    (:data:`SMOKE_NOTE`) in the title and across each panel. Returns None when done, else why
    not (matplotlib missing, no measured cell)."""
    fig = plot_figure(cells, title, smoke)
    if isinstance(fig, str):
        return fig
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, png_bytes(fig, dpi=120))
    return None


def leaderboards(plan: Plan, out: str | Path) -> str:
    """The leaderboard of the runs (:func:`grdkit.evaluators.leaderboard`), one per benchmark:
    the evaluation reports of the grdkit rows measured so far, side by side (Markdown)."""
    from ..evaluators import leaderboard

    out = Path(out)
    parts = []
    for b in plan.recipe.benchmarks:
        reports, names = [], []
        for row in plan.recipe.rows:
            eval_id = plan.cells.get((row.id, b.id))
            path = out / "evals" / f"{eval_id.split('-', 1)[1]}.json" if eval_id else None
            if path is not None and path.exists():
                reports.append(path)
                names.append(row.id)
        if reports:
            board = leaderboard(reports, names=names, sort=b.metrics[0].key)
            parts.append(f"### {b.label} ({b.test}, profile {b.profile})\n\n"
                         + board.to_markdown())
    return "\n".join(parts)
