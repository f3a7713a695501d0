"""Evaluation reports: assembly from per-pair statistics, the bootstrap, JSON, Markdown (CI job
summary), pandas tables and the regression gate.

JSON layout: ``{"metrics": {...}, "counts": {...}, "config": {...}, "per_split": {...},
"per_group": [...], "ci": {...} | null, "breakdowns": {...}}``. IoU-family metrics and
accuracies are in percent, Co-SOD metrics in 0-1. ``config`` records ``protocol``,
``cosod_protocol`` (with Co-SOD) and ``gt_fingerprint``; :func:`comparability_problems` says
whether two reports may be compared (baseline gate, leaderboard). The pair-averaged Co-SOD
curves (``Report.curves``) are kept on the object, not in the JSON (:mod:`.curves` writes them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .breakdowns import all_breakdowns
from .cosod import COSOD_METRICS, cosod_metrics
from .functional import METRICS, SUM_FIELDS, confusion, group_sums, metrics_from_sums
from .names import labels
from .profiles import Profile

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
    breakdowns: dict[str, dict] = field(default_factory=dict)
    curves: dict[str, np.ndarray] | None = field(default=None, compare=False, repr=False)
    names: str | None = None  # label scheme (:mod:`.names`); keys never change
    # per-pair rows (:mod:`.pairs`, a DataFrame) and the predicted masks {(split, expression
    # id, image id): RLE or None}, kept by evaluate(per_pair=True); not in the JSON
    pairs: Any = field(default=None, compare=False, repr=False)
    pair_masks: dict | None = field(default=None, compare=False, repr=False)

    def labels(self) -> dict[str, str]:
        """``{metric key: label}`` under :attr:`names` (the keys themselves when None)."""
        return labels(self.names, self.metrics)

    def to_dict(self) -> dict:
        d = {"metrics": self.metrics, "counts": self.counts, "config": self.config,
             "per_split": self.per_split, "per_group": self.per_group, "ci": self.ci,
             "breakdowns": self.breakdowns}
        if self.names is not None:
            d["names"] = {"scheme": self.names, "labels": self.labels()}
        return d

    def breakdown_frame(self):
        """The breakdowns as one DataFrame: a row per (breakdown, bucket) with ``pairs``,
        ``positives``, ``negatives`` and every GRES metric (percent)."""
        import pandas as pd

        return pd.DataFrame([{"breakdown": b, "bucket": k, **e["counts"], **e["metrics"]}
                             for b, buckets in self.breakdowns.items()
                             for k, e in buckets.items()])

    def frames(self) -> dict:
        """The report as pandas DataFrames: ``metrics`` (one row per metric, with the 95% CI
        when bootstrapped), ``per_split`` and ``per_group`` (one row each), ``breakdowns``
        (:meth:`breakdown_frame`), with Co-SOD ``curves`` (one row per threshold) and, when
        evaluated with ``per_pair=True``, ``pairs`` (:mod:`.pairs`, one row per pair)."""
        import pandas as pd

        metrics = pd.DataFrame({"metric": list(self.metrics), "value": list(self.metrics.values())})
        if self.ci:
            metrics["ci_low"] = [self.ci.get(k, [None, None])[0] for k in self.metrics]
            metrics["ci_high"] = [self.ci.get(k, [None, None])[1] for k in self.metrics]
        per_split = pd.DataFrame([{"split": s, **r["counts"], **r["metrics"]}
                                  for s, r in self.per_split.items()])
        out = {"metrics": metrics.set_index("metric"), "per_split": per_split,
               "per_group": pd.DataFrame(self.per_group), "breakdowns": self.breakdown_frame()}
        if self.curves is not None:
            out["curves"] = pd.DataFrame(self.curves)
        if self.pairs is not None:
            out["pairs"] = self.pairs
        return out

    def worst_groups(self, n: int, metric: str = "gres_miou"):
        """The ``n`` lowest-scoring groups by ``metric`` (ties by split and group id), as a
        DataFrame."""
        df = self.frames()["per_group"]
        if df.empty:
            return df
        return df.sort_values([metric, "split", "group_id"], kind="stable").head(n)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    def to_markdown(self, failures: list[dict] | None = None) -> str:
        lab = labels(self.names, (*self.metrics, "gres_miou", "ciou", "n_acc", "t_acc"))
        lines = ["## grdkit evaluation", "", "| metric | value | 95% CI |", "|---|---:|---|"]
        for k, v in self.metrics.items():
            ci = self.ci.get(k) if self.ci else None
            lines.append(f"| {lab[k]} | {fmt(k, v)} | "
                         f"{'' if not ci else f'{fmt(k, ci[0])} - {fmt(k, ci[1])}'} |")
        c = self.counts
        lines += ["", (f"{c['pairs']} pairs ({c['positive']} target, {c['negative']} no-target); "
                  f"TP {c['tp']}, TN {c['tn']}, FP {c['fp']}, FN {c['fn']}; "
                  f"{c['missing']} missing predictions counted as no target."), ""]
        if len(self.per_split) > 1:
            cols = " | ".join(lab[k] for k in ("gres_miou", "ciou", "n_acc", "t_acc"))
            lines += [f"| split | pairs | {cols} |", "|---|---:|---:|---:|---:|---:|"]
            for s, r in self.per_split.items():
                m = r["metrics"]
                lines.append(f"| {s} | {r['counts']['pairs']} | {fmt('', m['gres_miou'])} | "
                             f"{fmt('', m['ciou'])} | {fmt('', m['n_acc'])} | "
                             f"{fmt('', m['t_acc'])} |")
            lines.append("")
        for b, buckets in self.breakdowns.items():
            cols = " | ".join(lab[k] for k in ("gres_miou", "ciou", "n_acc", "t_acc"))
            lines += [f"### {b}", "", f"| bucket | pairs | positives | negatives | {cols} |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|"]
            for k, e in buckets.items():
                c, m = e["counts"], e["metrics"]
                lines.append(f"| {k} | {c['pairs']} | {c['positives']} | {c['negatives']} | "
                             + " | ".join(fmt('', m[x]) for x in ("gres_miou", "ciou", "n_acc",
                                                                   "t_acc")) + " |")
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
    """A metric for a table: 2 decimals (percent), 4 for Co-SOD (0-1); ``-`` for None (an
    empty denominator)."""
    if v is None:
        return "-"
    return f"{v:.4f}" if metric in COSOD_METRICS else f"{v:.2f}"


def check_report(d: object, where: str | Path,
                 hint: str = "pass JSON reports written by grdkit's evaluation") -> dict:
    """A report read back from JSON (a ``--baseline``, a leaderboard entry, a reproduce step's
    evaluation), checked before any use: an object with ``metrics`` and ``config`` objects, and
    every metric null or a finite number within its unit: Co-SOD metrics (:data:`COSOD_METRICS`)
    in [0, 1], every other (GRES metrics, ``loc_acc``) a percentage in [0, 100]. A forged
    ``1e9`` would otherwise rank first, a string would raise ``TypeError`` in a comparison.

    Returns:
        ``d``. Raises: InputError naming ``where`` and the metric.
    """
    if not isinstance(d, dict) or not isinstance(d.get("metrics"), dict) \
            or not isinstance(d.get("config"), dict):
        raise InputError(where, "is not a grdkit JSON report (no 'metrics' / 'config' object)",
                         hint=hint)
    for name, v in d["metrics"].items():
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not math.isfinite(v)):
            raise InputError(where, f"metric {str(name)[:40]!r} is {shown}, not a finite "
                             "number or null", "metrics", hint)
        lo, hi = (0.0, 1.0) if name in COSOD_METRICS else (0.0, 100.0)
        if v is not None and not lo <= v <= hi:
            unit = "0-1" if hi == 1.0 else "%"
            raise InputError(where, f"metric {str(name)[:40]!r} is {shown}, outside "
                             f"[{lo:g}, {hi:g}] ({unit})", "metrics", hint)
    return d


def comparability_problems(config: dict, other: dict) -> list[str]:
    """Why two reports' configs cannot be compared (empty list = comparable).

    They must be on the same ground truth (``gt_fingerprint``), under the same ``protocol``
    (missing = ``"grdkit"``, as before protocols existed) and, when both have Co-SOD metrics,
    the same ``cosod_protocol`` (missing = ``"pysodmetrics"``).
    """
    out = []
    fa, fb = config.get("gt_fingerprint"), other.get("gt_fingerprint")
    if fa is None or fb is None:
        out.append("has no gt_fingerprint (not a grdkit report?)")
    elif fa != fb:
        out.append(f"was made on other ground truth (gt_fingerprint {fb[:12]}..., this one "
                   f"{fa[:12]}...)")
    pa, pb = config.get("protocol", "grdkit"), other.get("protocol", "grdkit")
    if pa != pb:
        out.append(f"was made under protocol {pb!r}, this one under {pa!r}")
    else:  # same profile name: same version (reports before versions existed: version 1)
        va = (config.get("profile") or {}).get("version", 1)
        vb = (other.get("profile") or {}).get("version", 1)
        if va != vb:
            out.append(f"was made under version {vb} of profile {pb!r}, this one under "
                       f"version {va}")
    if config.get("cosod") and other.get("cosod"):
        ca = config.get("cosod_protocol", "pysodmetrics")
        cb = other.get("cosod_protocol", "pysodmetrics")
        if ca != cb:
            out.append(f"was made under Co-SOD protocol {cb!r}, this one under {ca!r}")
    return out


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
                             "reason": "above the maximum" if k in LOWER_IS_BETTER
                             else "below the minimum"})
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


def assemble_report(*, inter: np.ndarray, union: np.ndarray, gt_pos: np.ndarray,
                    pred_pos: np.ndarray, has_pred: np.ndarray, group_idx: np.ndarray,
                    groups: list[tuple[str, int]], splits: list[str], cosod: dict | None,
                    config: dict, bootstrap: int = 0, seed: int = 0,
                    labels: dict | None = None, profile: Profile | None = None) -> Report:
    """A :class:`Report` from per-pair statistics (all arrays of length P, in pair order).

    Args:
        inter, union: int64 I and U per pair (pixels). gt_pos, pred_pos, has_pred: bool flags.
        group_idx: int64 index into ``groups`` per pair. groups: ``(split, group id)``.
        splits: split names in report order.
        cosod: per-pair Co-SOD statistics ``{"tp", "pp": (P, T), "g", "n": (P,), "scalars":
            (P, 5), "skipped": bool (P,), "protocol": str}`` (:mod:`.cosod`) or None.
        config: the report's ``config``.
        bootstrap, seed: resamples of groups for 95% intervals (:func:`bootstrap_ci`).
        labels: per-pair bucket codes of each breakdown (:mod:`.breakdowns`); None = none.
        profile: the evaluation profile (:mod:`.profiles`; None = ``grdkit``).
    """
    n_groups = len(groups)
    sums = group_sums(inter, union, gt_pos, pred_pos, group_idx, n_groups, profile)
    metrics = metrics_from_sums(sums.sum(axis=0), profile)

    def cosod_of(rows=slice(None), with_curves=False):
        if cosod is None:
            return ({}, None) if with_curves else {}
        m, c = cosod_metrics(cosod["tp"][rows], cosod["pp"][rows], cosod["g"][rows],
                             cosod["n"][rows], cosod["scalars"][rows], cosod["skipped"][rows],
                             cosod["protocol"])
        return (m, c) if with_curves else m

    def counts_of(rows=slice(None)) -> dict:
        return {"pairs": int(np.asarray(gt_pos[rows]).size), "positive": int(gt_pos[rows].sum()),
                "negative": int((~gt_pos[rows]).sum()), **confusion(gt_pos[rows], pred_pos[rows])}

    cm, curves = cosod_of(with_curves=True)
    metrics.update(cm)
    counts = {**counts_of(), "predictions": int(has_pred.sum()),
              "missing": int((~has_pred).sum()), "groups": n_groups}
    if cosod is not None and cosod["protocol"] == "eval-co-sod":
        counts["cosod_skipped"] = int(np.sum(cosod["skipped"]))
    per_split = {}
    split_of_group = np.array([s for s, _ in groups])
    for s in splits:
        sel = split_of_group == s
        rows = np.isin(group_idx, np.flatnonzero(sel))
        per_split[s] = {"metrics": {**metrics_from_sums(sums[sel].sum(axis=0), profile),
                                    **cosod_of(rows)},
                        "counts": {**counts_of(rows), "missing": int((~has_pred[rows]).sum())}}
    per_group = []
    for k, (s, gid) in enumerate(groups):
        m = metrics_from_sums(sums[k], profile)
        per_group.append({"split": s, "group_id": gid, "pairs": int(sums[k][0]),
                          "positive": int(sums[k][SUM_FIELDS.index("pos")]),
                          **{x: m[x] for x in ("gres_miou", "ciou", "n_acc", "t_acc")}})
    ci = bootstrap_ci(sums, bootstrap, seed, profile) if bootstrap else None
    breakdowns = all_breakdowns(labels or {}, inter, union, gt_pos, pred_pos, profile)
    return Report(metrics, counts, config, per_split, per_group, ci, breakdowns, curves)


def bootstrap_ci(sums: np.ndarray, n: int, seed: int = 0, profile: Profile | None = None
                 ) -> dict[str, list[float]]:
    """95% percentile intervals of every metric by resampling groups with replacement.

    Args:
        sums: per-group sums, shape ``(G, len(SUM_FIELDS))`` (see
            :func:`.functional.group_sums`).
        n: number of resamples.
        seed: numpy seed.

    Returns:
        ``{metric: [low, high]}`` (percent); metrics undefined in every resample are omitted.
    """
    rng = np.random.default_rng(seed)
    g = sums.shape[0]
    if g == 0:
        return {}
    idx = rng.integers(0, g, size=(n, g))
    weights = np.zeros((n, g))
    np.add.at(weights, (np.repeat(np.arange(n), g), idx.ravel()), 1.0)
    boot = metrics_from_sums(weights @ sums, profile)
    out = {}
    for k, v in boot.items():
        v = np.asarray(v, np.float64)
        if np.all(np.isnan(v)):
            continue
        lo, hi = np.nanpercentile(v, [2.5, 97.5])
        out[k] = [float(lo), float(hi)]
    return out
