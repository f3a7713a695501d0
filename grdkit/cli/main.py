"""``grdkit`` entry point: the command group and the exit-code contract.

Exit codes: 0 success; 1 a check failed (e.g. validation errors, a metric gate); 2 bad input or bad
usage, reported as one line on stderr with no traceback.
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import GrdkitError
from .baselines import cache_cmd, predict_cmd, train_cmd
from .build import build_cmd, stats_cmd
from .evaluate import eval_group
from .export import export_group
from .grd import convert_group, show_cmd, validate_cmd
from .leaderboard import leaderboard_cmd
from .reproduce import reproduce_group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="grdkit")
def cli() -> None:
    """grdkit: data, metrics and baselines for Group-wise Referring Expression Segmentation.

    \b
    Build G-RefC / G-RefC+ / G-RefCg from refer-format data, or gRefCOCO as released:
        grdkit build g-refcocog --refer-root data/refcocog --out out/g-refcocog
        grdkit build grefcoco --refer-root data/grefcoco --out out/grefcoco
    Print statistics of a built dataset:
        grdkit stats out/g-refcocog
    Convert GRD (the D³ pickles or JSON), Co-SOD group folders, and validate any GRES dataset:
        grdkit convert d3 --anno-root d3/annotations --out out/grd
        grdkit convert cosod --images CoCA/image --masks CoCA/binary --out out/coca
        grdkit validate out/grd/test.json
    Look at a group with its masks:
        grdkit show out/g-refcocog/val.json --group 3 --out group.png
    Train a baseline (lts, grser, mabp) and predict:
        grdkit train grser --data train.json --img-root images --out runs/grser --val-data val.json
        grdkit predict --checkpoint runs/grser --data val.json --img-root images --out preds.json
    Score predictions and gate a submission:
        grdkit eval preds.json --gt out/g-refcocog/val.json --fail-under gres_miou=50
        grdkit eval preds.json --gt out/grefcoco/val.json --protocol rela
    Compare methods:
        grdkit leaderboard a.json b.json --names A,B --markdown board.md
    Reproduce a paper's table (paper / ours / delta per cell):
        grdkit reproduce list
        grdkit reproduce gres/table5 --data-root ~/data --out runs/gres-t5
    """


cli.add_command(build_cmd)
cli.add_command(stats_cmd)
cli.add_command(eval_group)
cli.add_command(leaderboard_cmd)
cli.add_command(convert_group)
cli.add_command(validate_cmd)
cli.add_command(export_group)
cli.add_command(show_cmd)
cli.add_command(train_cmd)
cli.add_command(predict_cmd)
cli.add_command(cache_cmd)
cli.add_command(reproduce_group)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map grdkit's input errors and usage errors to exit code 2."""
    try:
        rv = cli.main(args=argv, prog_name="grdkit", standalone_mode=False)
    except GrdkitError as e:
        click.echo(f"grdkit: error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("grdkit: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
