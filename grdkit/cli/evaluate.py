"""``grdkit eval`` (score predictions, CI gate) and ``grdkit eval merge`` (combine shards)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from ..evaluators import evaluate, load_ground_truth, merge_states, write_curves
from ..evaluators.cosod import COSOD_PROTOCOLS
from ..evaluators.functional import PROTOCOLS
from ..evaluators.names import NAMINGS, labels
from ..evaluators.report import Report, check_gate, check_report, comparability_problems, fmt
from ..io import Commit, check_outputs, read_json
from ..plots import MISSING
from .ui import out, progress_bar, table


class DefaultGroup(click.Group):
    """A group whose first argument, when it is not a subcommand, goes to the default command."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        elif not args:
            args = ["run"]
        return super().parse_args(ctx, args)


def _parse_fail_under(values: tuple[str, ...]) -> dict[str, float]:
    out_ = {}
    for v in values:
        k, sep, num = v.partition("=")
        try:
            out_[k.strip()] = float(num)
        except ValueError:
            sep = ""
        if not sep:
            raise click.BadParameter(f"{v!r} is not METRIC=VALUE (e.g. gres_miou=50)",
                                     param_hint="--fail-under")
    return out_


def _finish(report: Report, json_out, markdown_out, baseline, max_drop, fail_under,
            per_group: bool, curves=None, names=None, commit: Commit | None = None) -> int:
    """Gate and print; the output files join ``commit`` (all of a run's outputs, or none)."""
    if commit is None:
        with Commit() as c:
            return _finish(report, json_out, markdown_out, baseline, max_drop, fail_under,
                           per_group, curves, names, c)
    gates = _parse_fail_under(fail_under)
    report.names = names
    lab = labels(names, (*report.metrics, "gres_miou", "ciou", "n_acc", "t_acc"))
    base = None
    if baseline is not None:
        base = check_report(read_json(baseline, "baseline report"), baseline)
        problems = comparability_problems(report.config, base.get("config") or {})
        if problems:
            raise InputError(baseline, f"cannot be a baseline: it {problems[0]}",
                             hint="compare against a report on the same ground truth and "
                                  "protocol")
    try:
        failures = check_gate(report.to_dict(), gates, base, max_drop if base else None)
    except KeyError as e:
        raise click.BadParameter(f"unknown metric {e.args[0]!r}; choose from "
                                 f"{sorted(report.metrics)}", param_hint="--fail-under") from None
    if curves is not None:
        written = write_curves(report, curves, commit)
        if not any(p.suffix == ".png" for p in written):
            out.print(f"Curves: CSV only in {curves}; no PNG: {MISSING}")
    if json_out:
        commit.write_text(json_out, report.to_json())
    if markdown_out:
        gated = bool(gates) or base is not None
        commit.write_text(markdown_out, report.to_markdown(failures if gated else None))
    rows = [{"metric": lab[k], "value": fmt(k, v),
             **({"95% CI": f"{fmt(k, report.ci[k][0])} - {fmt(k, report.ci[k][1])}"
                 if k in report.ci else ""} if report.ci else {})}
            for k, v in report.metrics.items()]
    out.print(table("metrics (%; Co-SOD 0-1)", rows))
    c = report.counts
    out.print(f"{c['pairs']} pairs ({c['positive']} target, {c['negative']} no-target) in "
              f"{c['groups']} groups; TP {c['tp']}  TN {c['tn']}  FP {c['fp']}  FN {c['fn']}; "
              f"{c['missing']} missing predictions counted as no target")
    if len(report.per_split) > 1:
        out.print(table("per split", [
            {"split": s, "pairs": r["counts"]["pairs"],
             **{lab[k]: fmt(k, r["metrics"][k]) for k in ("gres_miou", "ciou", "n_acc", "t_acc")}}
            for s, r in report.per_split.items()]))
    for b, buckets in report.breakdowns.items():
        out.print(table(b, [{"bucket": k, "pairs": e["counts"]["pairs"],
                             "pos.": e["counts"]["positives"], "neg.": e["counts"]["negatives"],
                             **{lab[m]: fmt(m, e["metrics"][m])
                                for m in ("gres_miou", "ciou", "n_acc", "t_acc")}}
                            for k, e in buckets.items()]))
    if per_group:
        worst = report.worst_groups(per_group).to_dict("records")
        out.print(table(f"{len(worst)} lowest-scoring groups", [
            {"split": g["split"], "group": g["group_id"], "pairs": g["pairs"],
             **{k: fmt(k, g[k]) for k in ("gres_miou", "ciou", "n_acc", "t_acc")}}
            for g in worst]))
    if failures:
        out.print(table("gate failed", [
            {"metric": f["metric"], "value": fmt(f["metric"], f["value"]),
             "limit": fmt(f["metric"], f["limit"]), "reason": f["reason"]} for f in failures]))
        return 1
    if gates or base is not None:
        out.print("gate passed", style="green")
    return 0


def _cores() -> int:
    """CPU cores this process may run on."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_report_options = [
    click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
                 help="Write the JSON report {metrics, counts, config, per_split, per_group, ci, "
                      "breakdowns}."),
    click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False, path_type=Path),
                 help="Write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)."),
    click.option("--baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="A previous JSON report to compare against."),
    click.option("--max-drop", type=click.FloatRange(min=0), default=0.5, show_default=True,
                 help="With --baseline: fail when a metric drops more than this many points "
                      "(Co-SOD metrics in hundredths; for mae a rise is a drop)."),
    click.option("--fail-under", multiple=True, metavar="METRIC=VALUE",
                 help="Fail when METRIC is below VALUE (above, for mae); repeatable."),
    click.option("--per-group", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Print the N lowest-scoring groups."),
    click.option("--names", type=click.Choice(list(NAMINGS)),
                 help="Label metrics as a paper prints them (gres: mIoU with a bar, R_neg; "
                      "rela / mabp: gIoU, cIoU, N-acc, T-acc, Pr@X; lts: IoU (mIoU), oIoU, "
                      "prec@X; cosod: MAE, F_max, S_α, E_ξ = mean E-measure). JSON keys stay "
                      "grdkit's; the JSON report gains a 'names' entry."),
    click.option("--curves", type=click.Path(file_okay=False, path_type=Path),
                 help="With --cosod: write the PR, F- and E-over-threshold curves (CSV, and "
                      "PNG with the plots extra: matplotlib) into this folder."),
]


def report_options(f):
    for opt in reversed(_report_options):
        f = opt(f)
    return f


@click.group("eval", cls=DefaultGroup, invoke_without_command=False)
def eval_group():
    """Score predictions (every GRES / RES / gRefCOCO / Co-SOD metric) and gate a submission.

    \b
    grdkit eval PREDS --gt DATASET [--profile grdkit|rela|rela-2023-05|mcn] [--json OUT]
                [--markdown OUT]
                [--cosod [--cosod-protocol pysodmetrics|eval-co-sod] [--curves DIR]]
                [--baseline REF.json --max-drop 0.5] [--fail-under gres_miou=50 ...]
    grdkit eval merge SHARD.npz ... --gt DATASET [...]

    Exit 0 when everything passes, 1 when a gate fails, 2 on invalid input.
    """


@eval_group.command("run")
@click.argument("preds", type=click.Path(exists=True, path_type=Path))
@click.option("--gt", "gt_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="Ground truth: a split file (val.json) or a built folder (all splits).")
@click.option("--min-pixels", type=click.IntRange(min=1), default=1, show_default=True,
              help="Predictions with fewer foreground pixels are 'no target'.")
@click.option("--strict", is_flag=True, help="A pair without prediction is an error.")
@click.option("--profile", "--protocol", "protocol", type=click.Choice(PROTOCOLS),
              default="grdkit", show_default=True,
              help="Evaluation profile: the evaluator a paper's number came from. grdkit: I and "
                   "U at the original resolution. rela: ReLA after commit 884ef17, at 480x480. "
                   "rela-2023-05: ReLA's first release as MABP ships it (T_acc = TP/(TP+FP+1), "
                   "N_acc = TP/(TP+FN+1) in ReLA's naming; GT resized by OpenCV INTER_NEAREST). "
                   "mcn: the classic RES evaluator (MCN/LTS: mean IoU, prec@X as IoU > X) plus "
                   "overall IoU. --protocol is the former name. See grdkit.evaluators.profiles.")
@click.option("--cosod", is_flag=True,
              help="Also compute the Co-SOD metrics (MAE, F, E, S, AP, AUC; slower).")
@click.option("--cosod-protocol", type=click.Choice(COSOD_PROTOCOLS), default="pysodmetrics",
              show_default=True, help="Co-SOD reference: PySODMetrics or zzhanghub/eval-co-sod.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=0, show_default=True,
              help="Resample groups N times for 95% confidence intervals.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Bootstrap seed.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --cosod: processes scoring the Co-SOD statistics (default: the CPU "
                   "cores this process may use). The report is byte-identical to 1 worker's.")
@click.option("--save-state", type=click.Path(dir_okay=False, path_type=Path),
              help="Also save per-pair statistics (.npz) for `grdkit eval merge`.")
@report_options
def eval_run(preds, gt_path, min_pixels, strict, protocol, cosod, cosod_protocol, bootstrap, seed,
             workers, save_state, json_out, markdown_out, baseline, max_drop, fail_under, per_group,
             names, curves):
    """Score PREDS (preds.json, or a folder of <expression_id>/<image_id>.png masks).

    Predictions are checked first and any invalid record stops the run (exit 2) with its name:
    unknown or duplicate pairs, a mask size that differs from the image, NaN scores, bad JSON.
    Missing pairs count as 'no target' and are reported (--strict makes them an error).
    """
    _parse_fail_under(fail_under)
    if curves is not None and not cosod:
        raise click.BadParameter("needs --cosod", param_hint="--curves")
    check_outputs([preds, gt_path, baseline], {"--json": json_out, "--markdown": markdown_out,
                                               "--save-state": save_state}, {"--curves": curves})
    with Commit() as commit:  # every output of the run, or none
        with progress_bar() as bar:
            def track(it, desc, n):  # a bar only on long work
                return bar(it, desc, n) if n > 1 or cosod else it

            report = evaluate(preds, gt_path, min_pixels=min_pixels, strict=strict,
                              cosod=cosod, bootstrap=bootstrap, seed=seed, save_state=save_state,
                              progress=track, protocol=protocol, cosod_protocol=cosod_protocol,
                              workers=(workers or _cores()) if cosod else 1, commit=commit)
        return _finish(report, json_out, markdown_out, baseline, max_drop, fail_under,
                       per_group, curves, names, commit)


@eval_group.command("merge")
@click.argument("states", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--gt", "gt_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="The ground truth every shard was evaluated against.")
@click.option("--strict", is_flag=True, help="A pair predicted by no shard is an error.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@report_options
def eval_merge(states, gt_path, strict, bootstrap, seed, json_out, markdown_out, baseline,
               max_drop, fail_under, per_group, names, curves):
    """Combine shard states saved with --save-state into exactly the single-pass report.

    The protocol and Co-SOD options are those the shards were evaluated with."""
    _parse_fail_under(fail_under)
    check_outputs([*states, gt_path, baseline], {"--json": json_out, "--markdown": markdown_out},
                  {"--curves": curves})
    ev = merge_states(states, load_ground_truth(gt_path))
    if curves is not None and not ev.cosod:
        raise click.BadParameter("the shards have no Co-SOD statistics", param_hint="--curves")
    report = ev.evaluate(strict=strict, bootstrap=bootstrap, seed=seed,
                         config={"predictions": [str(p) for p in states], "gt": str(gt_path)})
    return _finish(report, json_out, markdown_out, baseline, max_drop, fail_under, per_group,
                   curves, names)
