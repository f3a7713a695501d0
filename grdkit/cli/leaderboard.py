"""``grdkit leaderboard``: methods' JSON reports side by side (thin layer over
:func:`grdkit.evaluators.leaderboard`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..evaluators import leaderboard
from ..io import atomic_write_text, check_outputs
from .ui import out, table


@click.command("leaderboard")
@click.argument("reports", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--names", help="Comma-separated method names, one per report (default: the "
                              "report file stems).")
@click.option("--sort", default="gres_miou", show_default=True,
              help="Metric to sort by, best first (lowest first for mae).")
@click.option("--metrics", help="Comma-separated columns (default: every metric some report "
                                "has).")
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the table as Markdown (best per column in bold).")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the table as CSV (values, CI bounds, <metric>_best flags).")
@click.option("--force", is_flag=True,
              help="Compare reports on other ground truth or under another protocol anyway.")
def leaderboard_cmd(reports, names, sort, metrics, markdown_out, csv_out, force):
    """Compare methods: one row per REPORT.json (written by grdkit eval --json).

    Reports on other ground truth or under another protocol are refused (exit 2) unless --force.
    Confidence intervals are shown where the reports were bootstrapped; the best value per
    column is marked.
    """
    check_outputs(list(reports), {"--markdown": markdown_out, "--csv": csv_out})
    split = (lambda v: [x.strip() for x in v.split(",")] if v else None)
    try:
        board = leaderboard(list(reports), names=split(names), sort=sort,
                            metrics=split(metrics), force=force)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    except KeyError as e:
        raise click.BadParameter(f"unknown metric {e.args[0]!r}", param_hint="--metrics") \
            from None
    if markdown_out:
        atomic_write_text(markdown_out, board.to_markdown())
    if csv_out:
        atomic_write_text(csv_out, board.to_csv())
    rows = [{"method": m, **{k: board.cell(m, k, bold="*") for k in board.metrics}}
            for m in board.table.index]
    out.print(table(f"leaderboard (sorted by {board.sort}; * best; GRES %, Co-SOD 0-1)", rows))
    return 0
