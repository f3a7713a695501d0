"""Leaderboards: several methods' JSON reports side by side (pandas).

``leaderboard(["a.json", "b.json"], names=["A", "B"], sort="gres_miou")`` returns a
:class:`Leaderboard`: ``table`` (a DataFrame, one row per method, one float column per metric,
sorted best first), ``ci`` (95% intervals where a report was bootstrapped), ``best`` (the best
method(s) per metric: highest, or lowest for ``mae``), and Markdown / CSV renderings.

Reports must be comparable (:func:`.report.comparability_problems`: same ground truth, same
protocol, same Co-SOD protocol); otherwise :class:`~grdkit.errors.InputError` names the file,
unless ``force=True``. Units as in the reports: GRES metrics in percent, Co-SOD in 0-1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import read_json
from .cosod import COSOD_METRICS
from .functional import METRICS
from .report import LOWER_IS_BETTER, Report, check_report, comparability_problems, fmt


@dataclass
class Leaderboard:
    """Methods side by side; see the module header."""

    table: Any  # pandas.DataFrame, index "method"
    ci: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    best: dict[str, list[str]] = field(default_factory=dict)
    sort: str = "gres_miou"

    @property
    def metrics(self) -> list[str]:
        return list(self.table.columns)

    def cell(self, method: str, metric: str, bold: str = "**") -> str:
        """One formatted cell: value, ``[low, high]`` when bootstrapped, bold when best."""
        v = self.table.loc[method, metric]
        v = None if np.isnan(v) else float(v)
        s = fmt(metric, v)
        if method in self.best.get(metric, ()):
            s = f"{bold}{s}{bold}"
        ci = self.ci.get(method, {}).get(metric)
        if ci:
            s += f" [{fmt(metric, ci[0])}, {fmt(metric, ci[1])}]"
        return s

    def to_markdown(self) -> str:
        """A Markdown table; the best value per column in bold, 95% CI in brackets."""
        cols = self.metrics
        lines = ["| method | " + " | ".join(cols) + " |",
                 "|---|" + "---:|" * len(cols)]
        for m in self.table.index:
            lines.append(f"| {m} | " + " | ".join(self.cell(m, c) for c in cols) + " |")
        return "\n".join(lines) + "\n"

    def to_frame(self):
        """A flat DataFrame for CSV: the values, ``<metric>_ci_low`` / ``_ci_high`` where some
        report has intervals, and ``<metric>_best`` (bool)."""
        df = self.table.copy()
        for k in self.metrics:
            if any(k in c for c in self.ci.values()):
                df[f"{k}_ci_low"] = [self.ci.get(m, {}).get(k, [None, None])[0] for m in df.index]
                df[f"{k}_ci_high"] = [self.ci.get(m, {}).get(k, [None, None])[1]
                                      for m in df.index]
            df[f"{k}_best"] = [m in self.best.get(k, ()) for m in df.index]
        return df

    def to_csv(self) -> str:
        return self.to_frame().to_csv(float_format="%.6f")


def _load(src: Any, k: int) -> tuple[str, dict, str | None]:
    """(name of the source for messages, report dict, file stem or None)."""
    if isinstance(src, Report):
        return f"reports[{k}]", src.to_dict(), None
    if isinstance(src, dict):
        d, where, stem = src, f"reports[{k}]", None
    else:
        p = Path(src)
        d = read_json(p, "grdkit JSON report", "pass JSON reports written by grdkit's evaluation")
        where, stem = str(p), p.stem
    check_report(d, where)  # a forged inf / NaN / text / 1e9 would rank first or crash
    return where, d, stem


def leaderboard(reports: list, names: list[str] | None = None, sort: str = "gres_miou",
                metrics: list[str] | None = None, force: bool = False) -> Leaderboard:
    """Build a :class:`Leaderboard` from JSON report paths, report dicts or :class:`Report`\\ s.

    Args:
        names: one per report (default: the file stems, or ``method<k>``); must be unique.
        sort: metric to sort by, best first (ascending for ``mae``).
        metrics: columns (default: every metric some report defines: the GRES / Co-SOD ones
            in their order, then the others, e.g. ``loc_acc``, in the reports' order).
        force: compare reports on other ground truth or under another protocol anyway.

    Raises:
        InputError: an unreadable or non-report file, or reports that are not comparable (the
            file is named), unless ``force``.
        ValueError: no report, wrong number of / duplicate names, or an unknown ``sort`` metric.
    """
    import pandas as pd

    if not reports:
        raise ValueError("no report to compare")
    loaded = [_load(r, k) for k, r in enumerate(reports)]
    if names is None:
        names = [stem or f"method{k + 1}" for k, (_, _, stem) in enumerate(loaded)]
    if len(names) != len(loaded):
        raise ValueError(f"{len(names)} names for {len(loaded)} reports")
    if len(set(names)) != len(names):
        raise ValueError(f"method names are not unique: {names}")
    ref_where, ref, _ = loaded[0]
    if not force:
        for where, d, _ in loaded[1:]:
            problems = comparability_problems(ref["config"], d["config"])
            if problems:
                raise InputError(where, f"{problems[0]} than {ref_where}",
                                 hint="compare reports on the same ground truth and protocol, "
                                      "or force the comparison")
    if metrics is None:
        # the known metrics in their order, then any other some report has (e.g. loc_acc)
        order = list(dict.fromkeys([*METRICS, *COSOD_METRICS,
                                    *(k for _, d, _ in loaded for k in d["metrics"])]))
        metrics = [k for k in order if any(d["metrics"].get(k) is not None for _, d, _ in loaded)]
    data = {k: [d["metrics"].get(k) for _, d, _ in loaded] for k in metrics}
    table = pd.DataFrame(data, index=pd.Index(names, name="method"), dtype="float64")
    if sort not in table.columns:
        raise ValueError(f"unknown sort metric {sort!r}; choose from {list(table.columns)}")
    table = table.sort_values(sort, ascending=sort in LOWER_IS_BETTER, kind="stable",
                              na_position="last")
    ci = {n: {k: v for k, v in (d.get("ci") or {}).items() if k in metrics}
          for n, (_, d, _) in zip(names, loaded) if d.get("ci")}
    best = {}
    for k in metrics:
        col = table[k].dropna()
        if col.empty:
            continue
        target = col.min() if k in LOWER_IS_BETTER else col.max()
        best[k] = [m for m in col.index if col[m] == target]
    return Leaderboard(table, ci, best, sort)


__all__ = ["Leaderboard", "leaderboard"]
