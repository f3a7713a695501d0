"""``grdkit leaderboard``: methods' JSON reports side by side (thin layer over
:func:`grdkit.evaluators.leaderboard`)."""

from __future__ import annotations

import math
from pathlib import Path

import click

from ..evaluators import leaderboard
from ..io import atomic_write_text, check_outputs
from .ui import AliasOption, Output, format_option, is_stdout


@click.command("leaderboard")
@click.argument("reports", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--labels", "--names", "names", cls=AliasOption, aliases=("--names",),
              help="Comma-separated method labels, one per report (default: the report file "
                   "stems).")
@click.option("--sort", default="gres_miou", show_default=True,
              help="Metric to sort by, best first (lowest first for mae).")
@click.option("--metrics", help="Comma-separated columns (default: every metric some report "
                                "has).")
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the table as Markdown (best per column in bold); '-': to stdout.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the table as CSV (values, CI bounds, <metric>_best flags); '-': to "
                   "stdout.")
@click.option("--force", is_flag=True,
              help="Compare reports on other ground truth or under another protocol anyway.")
@format_option
def leaderboard_cmd(reports, names, sort, metrics, markdown_out, csv_out, force, output_format):
    """Compare methods: one row per REPORT.json (written by grdkit eval --json).

    Reports on other ground truth or under another protocol are refused (exit 2) unless --force.
    Confidence intervals are shown where the reports were bootstrapped; the best value per
    column is marked. A metric whose denominator is empty in a report shows '-'. --format
    markdown / csv print what --markdown / --csv write; json one object per method:
    {"method", metric: value or null, ..., "ci": {...}}.
    """
    check_outputs(list(reports), {"--markdown": None if is_stdout(markdown_out) else markdown_out,
                                  "--csv": None if is_stdout(csv_out) else csv_out})
    split = (lambda v: [x.strip() for x in v.split(",")] if v else None)
    try:
        board = leaderboard(list(reports), names=split(names), sort=sort,
                            metrics=split(metrics), force=force)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    except KeyError as e:
        raise click.BadParameter(f"unknown metric {e.args[0]!r}", param_hint="--metrics") \
            from None
    docs = {"--markdown": (markdown_out, board.to_markdown()), "--csv": (csv_out, board.to_csv())}
    for path, text in docs.values():
        if path and not is_stdout(path):
            atomic_write_text(path, text)  # files first: a closed stdout cannot cost them
    for path, text in docs.values():
        if is_stdout(path):
            click.echo(text, nl=not text.endswith("\n"))
            return 0
    if output_format in ("markdown", "csv"):  # the very text of --markdown / --csv
        text = board.to_markdown() if output_format == "markdown" else board.to_csv()
        click.echo(text, nl=not text.endswith("\n"))
        return 0
    rows = [{"method": m, **{k: board.cell(m, k, bold="*") for k in board.metrics}}
            for m in board.table.index]
    o = Output(output_format)
    o.table(f"leaderboard (sorted by {board.sort}; * best; GRES %, Co-SOD 0-1)", rows)
    o.emit([{"method": m, **{k: _value(board.table.loc[m, k]) for k in board.metrics},
             "ci": board.ci.get(m, {})} for m in board.table.index])
    return 0


def _value(v) -> float | None:
    return None if math.isnan(v) else float(v)  # NaN (no value) -> None
