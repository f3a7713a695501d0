"""``grdkit eval`` (score predictions, CI gate) and ``grdkit eval merge`` (combine shards)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from ..evaluators import (
    add_localisation,
    evaluate,
    evaluator_from_pairs,
    load_ground_truth,
    merge_states,
    pair_frame,
    read_pairs,
    write_curves,
    write_pairs,
)
from ..evaluators.cosod import COSOD_PROTOCOLS
from ..evaluators.functional import PROTOCOLS
from ..evaluators.names import NAMINGS, labels
from ..evaluators.report import Report, check_gate, check_report, comparability_problems, fmt
from ..io import Commit, check_outputs, read_json
from ..plots import MISSING
from .ui import (
    AliasOption,
    DefaultGroup,
    Output,
    err,
    format_option,
    is_stdout,
    progress_bar,
)


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
            per_group: bool, curves=None, names=None, commit: Commit | None = None,
            output_format: str = "table", shows: list | None = None, extra=None) -> int:
    """Gate and print; the output files join ``commit`` (all of a run's outputs, or none) and
    are committed before anything is printed (a closed stdout cannot cost them): with a
    ``commit`` given, the printing is appended to ``shows``, for the caller to run after it.
    ``extra(commit, gate)``, when given, writes more outputs once the gate is known (``gate``:
    ``{"gated": bool, "failures": [...]}``)."""
    if commit is None:
        shows = []
        with Commit() as c:
            code = _finish(report, json_out, markdown_out, baseline, max_drop, fail_under,
                           per_group, curves, names, c, output_format, shows, extra)
        for show in shows:
            show()
        return code
    code, show = _gate(report, json_out, markdown_out, baseline, max_drop, fail_under,
                       per_group, curves, names, commit, output_format, extra)
    shows.append(show)
    return code


def _gate(report, json_out, markdown_out, baseline, max_drop, fail_under, per_group, curves,
          names, commit, output_format, extra=None):
    """Gate, write the files into ``commit``; return (exit code, the printing to do after)."""
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
    o = Output(output_format)
    if curves is not None:
        written = write_curves(report, curves, commit)
        if not any(p.suffix == ".png" for p in written):
            o.text(f"Curves: CSV only in {curves}; no PNG: {MISSING}")
    gated = bool(gates) or base is not None
    if extra is not None:
        extra(commit, {"gated": gated, "failures": failures})
    stdout_doc = None  # --json - / --markdown -: that document is stdout
    if json_out:
        if is_stdout(json_out):
            stdout_doc = report.to_json()
        else:
            commit.write_text(json_out, report.to_json())
    if markdown_out:
        if is_stdout(markdown_out):
            stdout_doc = report.to_markdown(failures if gated else None)
        else:
            commit.write_text(markdown_out, report.to_markdown(failures if gated else None))
    rows = [{"metric": lab[k], "value": fmt(k, v),
             **({"95% CI": f"{fmt(k, report.ci[k][0])} - {fmt(k, report.ci[k][1])}"
                 if k in report.ci else ""} if report.ci else {})}
            for k, v in report.metrics.items()]
    o.table("metrics (%; Co-SOD 0-1)", rows)
    c = report.counts
    o.text(f"{c['pairs']} pairs ({c['positive']} target, {c['negative']} no-target) in "
           f"{c['groups']} groups; TP {c['tp']}  TN {c['tn']}  FP {c['fp']}  FN {c['fn']}; "
           f"{c['missing']} missing predictions counted as no target")
    if len(report.per_split) > 1:
        o.table("per split", [
            {"split": s, "pairs": r["counts"]["pairs"],
             **{lab[k]: fmt(k, r["metrics"][k]) for k in ("gres_miou", "ciou", "n_acc", "t_acc")}}
            for s, r in report.per_split.items()])
    for b, buckets in report.breakdowns.items():
        o.table(b, [{"bucket": k, "pairs": e["counts"]["pairs"],
                     "pos.": e["counts"]["positives"], "neg.": e["counts"]["negatives"],
                     **{lab[m]: fmt(m, e["metrics"][m])
                        for m in ("gres_miou", "ciou", "n_acc", "t_acc")}}
                    for k, e in buckets.items()])
    if per_group:
        worst = report.worst_groups(per_group).to_dict("records")
        o.table(f"{len(worst)} lowest-scoring groups", [
            {"split": g["split"], "group": g["group_id"], "pairs": g["pairs"],
             **{k: fmt(k, g[k]) for k in ("gres_miou", "ciou", "n_acc", "t_acc")}}
            for g in worst])
    if failures:
        o.table("gate failed", [
            {"metric": f["metric"], "value": fmt(f["metric"], f["value"]),
             "limit": fmt(f["metric"], f["limit"]), "reason": f["reason"]} for f in failures])
    elif gated:
        o.text("gate passed", style="green")

    def show():
        if stdout_doc is not None:
            click.echo(stdout_doc, nl=not stdout_doc.endswith("\n"))
        else:
            o.emit(report.to_dict())
    return (1 if failures else 0), show


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
                      "breakdowns}; '-' writes it to stdout (instead of the tables)."),
    click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False, path_type=Path),
                 help="Write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY); '-' writes it to "
                      "stdout (instead of the tables)."),
    click.option("--baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="A previous JSON report to compare against."),
    click.option("--max-drop", type=click.FloatRange(min=0), default=0.5, show_default=True,
                 help="With --baseline: fail when a metric drops more than this many points "
                      "(Co-SOD metrics in hundredths; for mae a rise is a drop)."),
    click.option("--fail-under", multiple=True, metavar="METRIC=VALUE",
                 help="Fail when METRIC is below VALUE (above, for mae); repeatable."),
    click.option("--per-group", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Print the N lowest-scoring groups (0: none)."),
    click.option("--names", type=click.Choice(list(NAMINGS)),
                 help="Label metrics as a paper prints them (gres: mIoU with a bar, R_neg; "
                      "rela / mabp: gIoU, cIoU, N-acc, T-acc, Pr@X; lts: IoU (mIoU), oIoU, "
                      "prec@X; cosod: MAE, F_max, S_α, E_ξ = mean E-measure). JSON keys stay "
                      "grdkit's; the JSON report gains a 'names' entry."),
    click.option("--curves", type=click.Path(file_okay=False, path_type=Path),
                 help="With --cosod: write the PR, F- and E-over-threshold curves (CSV, and "
                      "PNG with the plots extra: matplotlib) into this folder."),
]


_html_options = [
    click.option("--img-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
                 help="HTML report: the image folder the thumbnails are drawn on (default: "
                      "grey canvases)."),
    click.option("--gallery", type=click.IntRange(min=1), default=60, show_default=True,
                 help="HTML report: tiles per gallery (worst positives, false alarms, misses); "
                      "the rest are in the pairs table."),
    click.option("--max-thumbs", type=click.IntRange(min=0), default=600, show_default=True,
                 help="HTML report: thumbnails drawn at most, 180 px wide (galleries first, "
                      "then whole groups, worst first); other pairs are text tiles."),
]


def html_options(f):
    for opt in reversed(_html_options):
        f = opt(f)
    return f


def report_options(f):
    """The options every scoring command shares (outputs, gates, labels, --format)."""
    for opt in reversed([*_report_options, format_option]):
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


@eval_group.command("run", hidden=True)
@click.argument("preds", type=click.Path(exists=True, path_type=Path))
@click.option("--gt", "gt_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="Ground truth: a split file (val.json) or a built folder (all splits).")
@click.option("--min-pixels", type=click.IntRange(min=1), default=1, show_default=True,
              help="Predictions with fewer foreground pixels (count) are 'no target'.")
@click.option("--strict", is_flag=True, help="A pair without prediction is an error.")
@click.option("--profile", "--protocol", "protocol", type=click.Choice(PROTOCOLS),
              cls=AliasOption, aliases=("--protocol",), default="grdkit", show_default=True,
              help="Evaluation profile: the evaluator a paper's number came from. grdkit: I and "
                   "U at the original resolution. rela: ReLA after commit 884ef17, at 480x480. "
                   "rela-2023-05: ReLA's first release as MABP ships it (T_acc = TP/(TP+FP+1), "
                   "N_acc = TP/(TP+FN+1) in ReLA's naming; GT resized by OpenCV INTER_NEAREST). "
                   "mcn: the classic RES evaluator (MCN/LTS: mean IoU, prec@X as IoU > X) plus "
                   "overall IoU. See grdkit.evaluators.profiles.")
@click.option("--cosod", is_flag=True,
              help="Also compute the Co-SOD metrics (MAE, F, E, S, AP, AUC; slower).")
@click.option("--cosod-protocol", type=click.Choice(COSOD_PROTOCOLS), default="pysodmetrics",
              show_default=True, help="Co-SOD reference: PySODMetrics or zzhanghub/eval-co-sod.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=0, show_default=True,
              help="Resample groups N times for 95% confidence intervals (0: none).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the bootstrap resampling.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --cosod: processes scoring the Co-SOD statistics (default: the CPU "
                   "cores this process may use). The report is byte-identical to 1 worker's.")
@click.option("--save-state", type=click.Path(dir_okay=False, path_type=Path),
              help="Also save per-pair statistics (.npz) for `grdkit eval merge`.")
@click.option("--per-pair", "per_pair_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write one JSON line per (expression, image) pair: split, group, expression "
                   "id and text, image id, positive, pred_area / I / U (pixels), IoU (0-1), "
                   "outcome TP / TN / FP / FN, the no-target decision, under --profile.")
@click.option("--html", "html_out", type=click.Path(file_okay=False, path_type=Path),
              help="Write the report as a static web page into this folder (index.html: "
                   "summary; pairs, galleries of the worst pairs, false alarms and misses, one "
                   "page per group). Works from file://, no network.")
@html_options
@report_options
def eval_run(preds, gt_path, min_pixels, strict, protocol, cosod, cosod_protocol, bootstrap, seed,
             workers, save_state, per_pair_out, html_out, img_root, gallery, max_thumbs,
             json_out, markdown_out, baseline, max_drop, fail_under, per_group, names, curves,
             output_format):
    """Score PREDS (preds.json, or a folder of <expression_id>/<image_id>.png masks) against
    the ground truth --gt; gate a submission. Exit 0 when everything passes, 1 when a gate
    fails, 2 on invalid input. Shards: see grdkit eval merge.

    Predictions are checked first and any invalid record stops the run (exit 2) with its name:
    unknown or duplicate pairs, a mask size that differs from the image, NaN scores, bad JSON.
    Missing pairs count as 'no target' and are reported (--strict makes them an error).
    """
    _parse_fail_under(fail_under)
    if curves is not None and not cosod:
        raise click.BadParameter("needs --cosod", param_hint="--curves")
    if img_root is not None and html_out is None:
        raise click.BadParameter("needs --html", param_hint="--img-root")
    check_outputs([preds, gt_path, baseline, img_root],
                  {"--json": _file(json_out), "--markdown": _file(markdown_out),
                   "--save-state": save_state, "--per-pair": per_pair_out},
                  {"--curves": curves, "--html": html_out})
    want_pairs = per_pair_out is not None or html_out is not None
    shows = []
    with Commit() as commit:  # every output of the run, or none; printed after the commit
        with progress_bar() as bar:
            def track(it, desc, n):  # a bar (or progress lines) only on long work
                return bar(it, desc, n) if n > 1 or cosod else it

            report = evaluate(preds, gt_path, min_pixels=min_pixels, strict=strict,
                              cosod=cosod, bootstrap=bootstrap, seed=seed, save_state=save_state,
                              progress=track, protocol=protocol, cosod_protocol=cosod_protocol,
                              workers=(workers or _cores()) if cosod else 1, commit=commit,
                              per_pair=want_pairs)
        extra = None
        if want_pairs:
            def extra(c, gate):
                if per_pair_out is not None:
                    write_pairs(report.pairs, per_pair_out, c)
                if html_out is not None:
                    _html(report, load_ground_truth(gt_path), html_out, img_root,
                          report.pair_masks, gate, gallery, max_thumbs, c)
        code = _finish(report, json_out, markdown_out, baseline, max_drop, fail_under,
                       per_group, curves, names, commit, output_format, shows, extra)
    for show in shows:
        show()
    return code


def _html(report, gt, html_out, img_root, pred_masks, gate, gallery, max_thumbs, commit):
    from ..html import write_html_report

    with progress_bar() as bar:
        info = write_html_report(report, report.pairs, gt, html_out, img_root=img_root,
                                 pred_masks=pred_masks, gate=gate, gallery=gallery,
                                 max_thumbs=max_thumbs, progress=bar, commit=commit)
    # a status line on stderr: stdout holds the --format document, printed after the commit
    err.print(f"HTML report: {html_out / 'index.html'} ({info['pages']} pages, "
              f"{info['thumbs']} thumbnails, {info['bytes'] / 1e6:.1f} MB)")


def _file(path):
    """An output path to check against the inputs (None for stdout, '-')."""
    return None if is_stdout(path) else path


@eval_group.command("merge")
@click.argument("states", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--gt", "gt_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="The ground truth every shard was evaluated against.")
@click.option("--strict", is_flag=True, help="A pair predicted by no shard is an error.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=0, show_default=True,
              help="Resample groups N times for 95% confidence intervals (0: none).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the bootstrap resampling.")
@click.option("--per-pair", "per_pair_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write one JSON line per pair (see grdkit eval --per-pair).")
@click.option("--html", "html_out", type=click.Path(file_okay=False, path_type=Path),
              help="Write the HTML report into this folder (shards hold no masks: the tiles "
                   "show the ground truth; see grdkit report --preds).")
@html_options
@report_options
def eval_merge(states, gt_path, strict, bootstrap, seed, per_pair_out, html_out, img_root,
               gallery, max_thumbs, json_out, markdown_out, baseline, max_drop, fail_under,
               per_group, names, curves, output_format):
    """Combine shard states saved with --save-state into exactly the single-pass report.

    The protocol and Co-SOD options are those the shards were evaluated with."""
    _parse_fail_under(fail_under)
    if img_root is not None and html_out is None:
        raise click.BadParameter("needs --html", param_hint="--img-root")
    check_outputs([*states, gt_path, baseline, img_root],
                  {"--json": _file(json_out), "--markdown": _file(markdown_out),
                   "--per-pair": per_pair_out}, {"--curves": curves, "--html": html_out})
    gt = load_ground_truth(gt_path)
    ev = merge_states(states, gt)
    if curves is not None and not ev.cosod:
        raise click.BadParameter("the shards have no Co-SOD statistics", param_hint="--curves")
    report = ev.evaluate(strict=strict, bootstrap=bootstrap, seed=seed,
                         config={"predictions": [str(p) for p in states], "gt": str(gt_path)})
    add_localisation(report, ev.localisation)  # loc_acc as the single pass reports it
    extra = None
    if per_pair_out is not None or html_out is not None:
        report.pairs = pair_frame(ev)

        def extra(c, gate):
            if per_pair_out is not None:
                write_pairs(report.pairs, per_pair_out, c)
            if html_out is not None:
                _html(report, gt, html_out, img_root, None, gate, gallery, max_thumbs, c)
    return _finish(report, json_out, markdown_out, baseline, max_drop, fail_under, per_group,
                   curves, names, output_format=output_format, extra=extra)


@click.command("report")
@click.option("--per-pair", "per_pair", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The per-pair file of a finished run (grdkit eval --per-pair FILE.jsonl).")
@click.option("--gt", "gt_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="The ground truth the run was scored on (split file or built folder).")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Output folder of the web page (index.html and the rest).")
@click.option("--preds", type=click.Path(exists=True, path_type=Path),
              help="The run's predictions (preds.json or PNG folder), drawn on the tiles; "
                   "without them tiles show the ground truth only.")
@html_options
@click.option("--names", type=click.Choice(list(NAMINGS)),
              help="Label metrics as a paper prints them (see grdkit eval --help).")
@click.option("--bootstrap", type=click.IntRange(min=0), default=0, show_default=True,
              help="Resample groups N times for 95% confidence intervals.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Bootstrap seed.")
@click.option("--fail-under", multiple=True, metavar="METRIC=VALUE",
              help="Gate shown on the summary page: fail when METRIC is below VALUE (above, "
                   "for mae); repeatable. Exit 1 when it fails.")
@format_option
def report_cmd(per_pair, gt_path, out_dir, preds, img_root, gallery, max_thumbs, names,
               bootstrap, seed, fail_under, output_format):
    """Build the HTML report of a finished run from its per-pair file.

    The rows are loaded back into an evaluator under their profile and re-aggregated: the
    metrics are exactly those grdkit eval printed (GRES metrics; Co-SOD ones need the masks).
    """
    gates = _parse_fail_under(fail_under)
    check_outputs([per_pair, gt_path, preds, img_root], folders={"--out": out_dir})
    gt = load_ground_truth(gt_path)
    df = read_pairs(per_pair)
    ev = evaluator_from_pairs(df, gt, str(per_pair))
    report = ev.evaluate(bootstrap=bootstrap, seed=seed,
                         config={"per_pair": str(per_pair), "gt": str(gt_path)})
    report.names = names
    report.pairs = df
    try:
        failures = check_gate(report.to_dict(), gates)
    except KeyError as e:
        raise click.BadParameter(f"unknown metric {e.args[0]!r}; choose from "
                                 f"{sorted(report.metrics)}", param_hint="--fail-under") from None
    pred_masks = None
    if preds is not None:
        from ..evaluators.predictions import GroundTruth, load_predictions

        pred_masks = {(p.split, p.expression_id, p.image_id): p.rle
                      for p in load_predictions(preds, GroundTruth(gt))}
    with Commit() as commit:
        _html(report, gt, out_dir, img_root, pred_masks,
              {"gated": bool(gates), "failures": failures}, gallery, max_thumbs, commit)
    lab = labels(names, report.metrics)
    o = Output(output_format)
    o.table("metrics (%)", [{"metric": lab[k], "value": fmt(k, v)}
                            for k, v in report.metrics.items()])
    if failures:
        o.text("gate failed", style="red")
    o.emit(report.to_dict())
    return 1 if failures else 0
