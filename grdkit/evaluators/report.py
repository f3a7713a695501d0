"""Evaluation reports: JSON, Markdown (CI job summary) and the regression gate.

JSON layout: ``{"metrics": {...}, "counts": {...}, "config": {...}, "per_split": {...},
"per_group": [...], "ci": {...} | null}``. IoU-family metrics and accuracies are in percent,
Co-SOD metrics in 0-1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .cosod import COSOD_METRICS
from .functional import METRICS

LOWER_IS_BETTER = {"mae"}


@dataclass
class Report:
    """Result of an evaluation (see module header); ``to_dict`` is the JSON report."""

    metrics: dict[str, float | None]
    counts: dict[str, int]
    config: dict[str, Any]
    per_split: dict[str, dict] = field(default_factory=dict)
    per_group: list[dict] = field(default_factory=list)
    ci: dict[str, list[float]] | None = None

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "counts": self.counts, "config": self.config,
                "per_split": self.per_split, "per_group": self.per_group, "ci": self.ci}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    def to_markdown(self, failures: list[dict] | None = None) -> str:
        lines = ["## grdkit evaluation", "", "| metric | value | 95% CI |", "|---|---:|---|"]
        for k, v in self.metrics.items():
            ci = self.ci.get(k) if self.ci else None
            lines.append(f"| {k} | {fmt(k, v)} | "
                         f"{'' if not ci else f'{fmt(k, ci[0])} - {fmt(k, ci[1])}'} |")
        c = self.counts
        lines += ["", (f"{c['pairs']} pairs ({c['positive']} target, {c['negative']} no-target); "
                  f"TP {c['tp']}, TN {c['tn']}, FP {c['fp']}, FN {c['fn']}; "
                  f"{c['missing']} missing predictions counted as no target."), ""]
        if len(self.per_split) > 1:
            lines += ["| split | pairs | gres_miou | ciou | n_acc | t_acc |", "|---|---:|---:|---:|---:|---:|"]
            for s, r in self.per_split.items():
                m = r["metrics"]
                lines.append(f"| {s} | {r['counts']['pairs']} | {fmt('', m['gres_miou'])} | "
                             f"{fmt('', m['ciou'])} | {fmt('', m['n_acc'])} | "
                             f"{fmt('', m['t_acc'])} |")
            lines.append("")
        if failures is not None:
            if failures:
                lines += ["### Gate: FAILED", "", "| metric | value | limit | reason |",
                          "|---|---:|---:|---|"]
                lines += [f"| {f['metric']} | {fmt(f['metric'], f['value'])} | "
                          f"{fmt(f['metric'], f['limit'])} | {f['reason']} |" for f in failures]
            else:
                lines += ["### Gate: passed"]
            lines.append("")
        return "\n".join(lines)


def fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if metric in COSOD_METRICS else f"{v:.2f}"


def check_gate(report: dict, fail_under: dict[str, float] | None = None,
               baseline: dict | None = None, max_drop: float | None = None) -> list[dict]:
    """Regression gate. Returns the failures (empty list = pass).

    Args:
        report: a report dict (``Report.to_dict()``).
        fail_under: ``{metric: minimum}``; for ``mae`` the value is a maximum.
        baseline: a previous report dict; every metric present in both is compared.
        max_drop: allowed drop below the baseline, in points of percent metrics; Co-SOD metrics
            (0-1) are compared in hundredths (x100), and for ``mae`` a rise is a drop.

    Raises:
        KeyError: a ``fail_under`` metric the report does not have.
    """
    failures = []
    metrics = report["metrics"]
    for k, limit in (fail_under or {}).items():
        if k not in metrics:
            raise KeyError(k)
        v = metrics[k]
        if v is None:
            failures.append({"metric": k, "value": None, "limit": limit,
                             "reason": "undefined on this data"})
        elif (v > limit) if k in LOWER_IS_BETTER else (v < limit):
            failures.append({"metric": k, "value": v, "limit": limit,
                             "reason": f"{'above' if k in LOWER_IS_BETTER else 'below'} "
                                       "--fail-under"})
    if baseline is not None and max_drop is not None:
        for k, ref in baseline.get("metrics", {}).items():
            v = metrics.get(k)
            if ref is None or v is None or k not in (*METRICS, *COSOD_METRICS):
                continue
            scale = 100.0 if k in COSOD_METRICS else 1.0
            drop = (v - ref if k in LOWER_IS_BETTER else ref - v) * scale
            if drop > max_drop + 1e-9:
                lim = ref + max_drop / scale if k in LOWER_IS_BETTER else ref - max_drop / scale
                failures.append({"metric": k, "value": v, "limit": lim,
                                 "reason": f"dropped {drop:.2f} points from baseline "
                                           f"{fmt(k, ref)} (max {max_drop})"})
    return failures
