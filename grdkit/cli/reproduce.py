"""``grdkit reproduce``: a paper table with one command, ours beside theirs."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from ..io import atomic_write_text, check_outputs, lock_folder
from .ui import DefaultGroup, Output, err, format_option, out


class _ReproduceGroup(DefaultGroup):
    """``grdkit reproduce list`` or ``grdkit reproduce NAME [options]``."""

    def parse_args(self, ctx, args):
        if not args:  # bare `grdkit reproduce`: its help
            args = ["--help"]
        return super().parse_args(ctx, args)


@click.group("reproduce", cls=_ReproduceGroup)
def reproduce_group():
    """Regenerate a table of the GRES, MABP or LTS paper: paper / ours / delta per cell.

    \b
    grdkit reproduce list
    grdkit reproduce gres/table5 --data-root ~/data --out runs/gres-t5 [--rows full,no-tqm]
    grdkit reproduce gres/table5 --dry-run        # the plan, GPU-hours estimated
    grdkit reproduce gres/table5 --smoke --out runs/smoke   # toy data, tiny models, CPU

    A recipe (grdkit/reproduce/recipes/<paper>/<table>.yaml) holds the paper's cells, the data
    each column needs, the run of each row and the evaluation profile of each column. Steps are
    keyed by their exact config and skipped when complete: rerunning resumes.
    """


@reproduce_group.command("list")
@format_option
def list_cmd(output_format):
    """Every recipe, its rows and the data it needs (folders under the --data-root of
    grdkit reproduce NAME). --format table prints the plain list; markdown, csv and json one
    row per recipe."""
    from ..reproduce import list_text, load_recipe, recipe_names

    if output_format == "table":
        click.echo(list_text(), nl=False)
        return
    rows = []
    for name in recipe_names():
        r = load_recipe(name)
        rows.append({
            "recipe": name, "title": r.title, "source": r.cite,
            **{k: ", ".join(x.id for x in r.rows if x.status == st) or None
               for k, st in (("grdkit rows", "ours"), ("not implemented", "not-implemented"),
                             ("published only", "published"))},
            "cells": len(r.cells()),
            "data": ", ".join(sorted({f"{d.source}/" for d in r.datasets.values()}
                                     | {f"{d.images}/" for d in r.datasets.values()}))})
    o = Output(output_format)
    o.table("recipes", rows)
    o.emit(rows)


def _sets(values: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs, VALUE read as JSON (else a string), each checked by the run options'
    one schema (:func:`grdkit.baselines.options.check_run_option`)."""
    import json

    from ..baselines.options import check_run_option

    res = {}
    for v in values:
        k, sep, raw = v.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"{v!r} is not KEY=VALUE", param_hint="--set")
        try:
            val = json.loads(raw)  # NaN, 1e999: floats, refused as not finite below
        except ValueError:
            val = raw
        res[k] = check_run_option(k, val, f"--set {k}")
    return res


def _lock(out_dir: Path) -> None:
    """Lock ``--out`` until the command ends (click closes the resource): a second reproduce
    into it is refused (issue 30, G). Taken after the checks, so a refused run creates nothing."""
    click.get_current_context().with_resource(lock_folder(out_dir))


@reproduce_group.command("run", hidden=True)
@click.argument("name")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
              help="Folder with the released data: refcoco/, refcoco+/, refcocog/, grefcoco/, "
                   "d3/, coca/, images/train2014/ (see the missing-data message).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where data/, runs/, preds/, evals/, steps/ and results/ go (share it "
                   "between recipes to share their common steps).")
@click.option("--rows", help="Comma-separated row ids (default: every row).")
@click.option("--dry-run", is_flag=True, help="Print the plan (commands, GPU-hours); run nothing.")
@click.option("--smoke", is_flag=True,
              help="Toy data in each source's real layout (written under --out), tiny models, "
                   "one step each, on CPU: checks the whole pipeline in minutes.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A preset's local weights or any run option for every row, e.g. --set "
                   "vision_weights=swin_base.pth --set text=bert-base-uncased/.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Where trainings and predictions run (auto: CUDA when "
                                      "available; --smoke: always cpu).")
@click.option("--launcher", type=click.Choice(["none", "torchrun"]), default="none",
              show_default=True, help="torchrun: each training runs under torchrun (DDP).")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes per node with --launcher torchrun.")
def run_cmd(name, data_root, out_dir, rows, dry_run, smoke, sets, device, launcher, nproc):
    """Regenerate a table of the GRES, MABP or LTS paper: paper / ours / delta per cell, for
    recipe NAME (see grdkit reproduce list).

    \b
    grdkit reproduce gres/table5 --data-root ~/data --out runs/gres-t5 [--rows full,no-tqm]
    grdkit reproduce gres/table5 --dry-run        # the plan, GPU-hours estimated
    grdkit reproduce gres/table5 --smoke --out runs/smoke   # toy data, tiny models, CPU

    A recipe (grdkit/reproduce/recipes/<paper>/<table>.yaml) holds the paper's cells, the data
    each column needs, the run of each row and the evaluation profile of each column. Steps are
    keyed by their exact config and skipped when complete: rerunning resumes.
    """
    from ..reproduce import load_recipe
    from ..reproduce.plan import build_plan, render_plan

    recipe = load_recipe(name)
    row_ids = [r.strip() for r in rows.split(",") if r.strip()] if rows else None
    if row_ids:
        for r in row_ids:
            recipe.row(r)
    from ..reproduce.api import known_option

    options = _sets(sets)
    models = {r.run.model for r in recipe.rows if r.run is not None}
    for k in options:
        if not any(known_option(m, k) for m in models):
            raise click.BadParameter(f"{k!r} is no run option of {', '.join(sorted(models))}",
                                     param_hint="--set")
    plan = build_plan(recipe, row_ids, smoke=smoke, sets=options)
    if dry_run:
        text = render_plan(plan)
        if launcher == "torchrun":
            text = text.replace("    grdkit train ",
                                f"    torchrun --nproc_per_node {nproc} -m grdkit.cli.main "
                                "train ")
        click.echo(text, nl=False)
        return 0
    if recipe.unavailable:
        raise InputError(None, f"{recipe.name} cannot run: {' '.join(recipe.unavailable.split())}",
                         hint="grdkit reproduce list shows what each table needs")
    if out_dir is None:
        raise click.UsageError("--out is required (except with --dry-run)")
    from ..reproduce import results
    from ..reproduce.execute import Executor, missing_data

    if smoke:
        from ..reproduce.smoke import write_toy_data

        if data_root is not None:
            raise click.UsageError("--smoke writes its own toy data; drop --data-root")
        _lock(out_dir)
        data_root = write_toy_data(out_dir / "toy-data")
        device = "cpu"
    elif data_root is None:
        raise click.UsageError("--data-root is required (or --smoke, or --dry-run)")
    else:
        check_outputs([data_root], folders={"--out": out_dir})  # runs never write into the data
        # everything a run needs is checked before any step: every weight, every folder, each
        # listed on its own line, then one error line
        from ..reproduce.api import WEIGHTS

        bad = [w for w in plan.weights() if w[3] is not None]
        for preset, k, v, problem in bad:
            info = WEIGHTS.get(preset, {}).get(k, {})
            click.echo(f"  {k} ({preset}): {problem}: {info.get('what', '')}; format: "
                       f"{info.get('format', '')}; get: {info.get('get', '')}", err=True)
        lacking = missing_data(plan, data_root)
        for line in lacking:
            click.echo(f"  {line}", err=True)
        if bad or lacking:
            what = [f"{len(bad)} pretrained weight(s)" if bad else "",
                    f"{len(lacking)} data folder(s)" if lacking else ""]
            raise InputError(data_root, f"this recipe needs {' and '.join(w for w in what if w)}"
                             " that are missing (listed above, one per line)",
                             hint="pass the weights with --set KEY=PATH and download the data "
                                  "in the layout named (paths relative to --data-root), or "
                                  "choose --rows that do not need them")
        _lock(out_dir)
    ex = Executor(out_dir, data_root, device, None if launcher == "none" else launcher, nproc,
                  log=lambda m: err.print(m, style="dim"))
    summary = ex.run(plan)
    cells = results.collect(plan, out_dir)
    res = out_dir / "results" / recipe.name
    res.mkdir(parents=True, exist_ok=True)
    atomic_write_text(res / "table.md", results.to_markdown(cells, recipe.title, plan.smoke))
    atomic_write_text(res / "table.csv", results.to_csv(cells))
    atomic_write_text(res / "table.json", results.to_json(cells, plan))
    boards = results.leaderboards(plan, out_dir)
    if boards:
        atomic_write_text(res / "leaderboard.md", boards)
    why = results.plot(cells, res / "plot.png", recipe.name, plan.smoke)
    out.print(results.to_rich(cells, f"{recipe.name}: {recipe.title}", plan.smoke))
    for line in results.legend(cells):
        out.print(f"  {line}")
    out.print(f"steps: {len(summary.done)} run, {len(summary.skipped)} already complete, "
              f"{len(summary.waiting)} waiting. Results: {res}/table.md, table.csv, "
              f"table.json{', leaderboard.md' if boards else ''}{'' if why else ', plot.png'}")
    if why:
        click.echo(why, err=True)
    return 0
