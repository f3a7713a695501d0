"""``grdkit`` entry point: the command group and the exit-code contract.

Exit codes: 0 success; 1 a check failed (e.g. validation errors, a metric gate); 2 bad input or bad
usage, reported as one line on stderr with no traceback.

:func:`main` is the CLI's one error path: grdkit's :class:`~grdkit.errors.InputError`, click's
usage errors, and what the operating system or a library raises on a hostile or impossible input
(``OSError``: a read-only folder, a file where a folder is needed, a full disk;
``RecursionError``; ``OverflowError``; ``MemoryError``; PIL's ``DecompressionBombError``) all end
as ``grdkit: error: ...`` on one line and exit 2. Every float option refuses NaN and infinities
(:func:`finite_floats`): click's ``FloatRange`` lets NaN through, since every comparison with NaN
is false.
"""

from __future__ import annotations

import math
import os
import signal
import sys

import click
from PIL import Image as PILImage

from .. import __version__
from ..errors import GrdkitError
from .baselines import cache_cmd, predict_cmd, train_cmd
from .build import build_cmd, stats_cmd
from .demo import demo_cmd
from .derive import derive_group
from .evaluate import eval_group, report_cmd
from .export import export_group
from .grd import convert_group, show_cmd, validate_cmd
from .leaderboard import leaderboard_cmd
from .reproduce import reproduce_group
from .ui import LOG_FORMATS, STATE, DefaultGroup, PipeSafe, configure
from .weights import weights_group


def _set_verbosity(value: int):
    def callback(ctx, param, flag):
        if flag:
            configure(verbosity=value)
    return callback


def _set_log_format(ctx, param, value):
    if value is not None:
        configure(log_format=value)


# the options every command takes (on the root group and, by common_options, on each command)
COMMON = [
    ("-q", "--quiet", {"is_flag": True, "expose_value": False, "is_eager": True,
                           "callback": _set_verbosity(-1),
                           "help": "Only warnings, errors and the results: no progress, no notes."}),
    ("-v", "--verbose", {"is_flag": True, "expose_value": False, "is_eager": True,
                             "callback": _set_verbosity(1), "help": "Also debug messages."}),
    ("--log-format", None, {"type": click.Choice(LOG_FORMATS), "expose_value": False,
                                "is_eager": True, "callback": _set_log_format,
                                "help": "Progress and log display: bar (rich, for a terminal), "
                                     "lines (plain flushed lines, for CI / SLURM / nohup "
                                     "logs), auto (bar when stderr is a terminal, else lines). "
                                     "Default: auto."}),
]


def _common_params() -> list[click.Option]:
    return [click.Option([n for n in (a, b) if n], **kw) for a, b, kw in COMMON]


def common_options(command: click.Command) -> None:
    """Give every command under ``command`` the global -q / -v / --log-format (so that
    ``grdkit eval P --gt G -q`` works like ``grdkit -q eval P --gt G``); also those other
    modules add."""
    for sub in getattr(command, "commands", {}).values():
        if isinstance(sub, click.Group):
            common_options(sub)
        elif not any(p.name == "quiet" for p in sub.params):
            sub.params.extend(_common_params())


class RootGroup(click.Group):
    """The root group: every invocation starts from the default settings (quiet / verbose /
    log format), also when one process runs several (tests)."""

    def make_context(self, info_name, args, parent=None, **extra):
        STATE.update(verbosity=0, log_format="auto")
        return super().make_context(info_name, args, parent, **extra)


@click.group(cls=RootGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="grdkit")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """grdkit: data, metrics and baselines for Group-wise Referring Expression Segmentation.

    Every command takes -q / -v / --log-format (before or after its name); NO_COLOR and
    GRDKIT_NO_PROGRESS=1 are honoured; outside a terminal, progress and training logs are plain
    lines on stderr and tables print at full width (see docs/ci.md).

    \b
    Write the bundled demo sample as files (refer data, images, photo folders):
        grdkit demo --out demo
    Build G-RefC / G-RefC+ / G-RefCg from refer-format data, gRefCOCO as released, or the
    classic RES benchmarks RefCOCO / RefCOCO+ / RefCOCOg (one sample per sentence):
        grdkit build g-refcocog --refer-root data/refcocog --out out/g-refcocog
        grdkit build grefcoco --refer-root data/grefcoco --out out/grefcoco
        grdkit build refcocog --refer-root data/refcocog --out out/refcocog
    Print statistics of a built dataset:
        grdkit stats out/g-refcocog
    Convert GRD (the D³ pickles or JSON), Co-SOD group folders, and validate any GRES dataset:
        grdkit convert d3 --anno-root d3/annotations --out out/grd
        grdkit convert cosod --img-root CoCA/image --masks CoCA/binary --out out/coca
        grdkit validate out/grd/test.json
    Derive a train / val split by group, the RES setting (negatives removed) or a union:
        grdkit derive split out/coca/test.json --val 0.2 --seed 0 --out out/coca-split
        grdkit derive res out/g-refcocog/val.json --out out/g-refcocog-res/val.json
    Look at a group with its masks:
        grdkit show out/g-refcocog/val.json --group 3 --out group.png
    Train a baseline (lts, grser, mabp) and predict:
        grdkit train grser --data train.json --img-root images --out runs/grser --val-data val.json
        grdkit predict --checkpoint runs/grser --data val.json --img-root images --out preds.json
    Score predictions and gate a submission:
        grdkit eval preds.json --gt out/g-refcocog/val.json --fail-under gres_miou=50
        grdkit eval preds.json --gt out/grefcoco/val.json --profile rela-2023-05 --names mabp
        grdkit eval preds.json --gt out/refcocog/val.json --profile mcn --names lts
    Look at the results as a web page (every pair's score, galleries of failures):
        grdkit eval preds.json --gt val.json --img-root images --html report/
    Compare methods:
        grdkit leaderboard a.json b.json --labels A,B --markdown board.md
    Reproduce a paper's table (paper / ours / delta per cell):
        grdkit reproduce list
        grdkit reproduce gres/table5 --data-root ~/data --out runs/gres-t5
    """
    configure()
    if ctx.invoked_subcommand is None:  # bare grdkit: the help, exit 0
        click.echo(ctx.get_help())
        ctx.exit(0)


cli.params.extend(_common_params())


cli.add_command(build_cmd)
cli.add_command(stats_cmd)
cli.add_command(eval_group)
cli.add_command(report_cmd)
cli.add_command(leaderboard_cmd)
cli.add_command(convert_group)
cli.add_command(validate_cmd)
cli.add_command(export_group)
cli.add_command(show_cmd)
cli.add_command(train_cmd)
cli.add_command(predict_cmd)
cli.add_command(cache_cmd)
cli.add_command(derive_group)
cli.add_command(reproduce_group)
cli.add_command(demo_cmd)
cli.add_command(weights_group)


class FiniteFloat(click.FloatRange):
    """``click.FloatRange`` that refuses NaN and +-infinity (a finite number is always meant)."""

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


def finite_floats(command: click.Command) -> None:
    """Make every float option of ``command`` and its subcommands refuse NaN and infinities
    (one place, so options other modules add are covered too)."""
    for p in command.params:
        t = p.type
        if isinstance(t, click.FloatRange) and not isinstance(t, FiniteFloat):
            p.type = FiniteFloat(t.min, t.max, t.min_open, t.max_open, t.clamp)
        elif isinstance(t, click.types.FloatParamType) and not isinstance(t, FiniteFloat):
            p.type = FiniteFloat()
    for sub in getattr(command, "commands", {}).values():
        finite_floats(sub)


finite_floats(cli)
common_options(cli)


def _follow_links(ctx, param, value):
    from ..io.images import set_follow_links

    set_follow_links(value)
    return value


# every command that reads images under an image root takes the same opt-in, which sets the one
# setting every image reader follows (grdkit.io.images.set_follow_links)
LINK_COMMANDS = (("validate",), ("show",), ("export", "hf"), ("train",), ("predict",),
                 ("cache",), ("convert", "cosod"))


def add_follow_links(root: click.Group) -> None:
    """Add ``--follow-links`` to every command of :data:`LINK_COMMANDS`."""
    for path in LINK_COMMANDS:
        cmd = root
        for name in path:
            cmd = cmd.commands[name]
        cmd.params.append(click.Option(
            ["--follow-links"], is_flag=True, expose_value=False, is_eager=True,
            callback=_follow_links,
            help="Follow links that lead outside the image root (a root assembled from "
                 "symlinked folders, e.g. images/coco -> /data/coco/train2014), for roots you "
                 "trust; default off: such links are refused. Recorded in the outputs of "
                 "convert cosod (info.recipe) and train (config.json data_sources)."))


add_follow_links(cli)

# what the OS or a library raises on a hostile or impossible input (module header)
INPUT_FAILURES = (OSError, RecursionError, OverflowError, MemoryError,
                  PILImage.DecompressionBombError)


def _one_line(text: str) -> str:
    # undecodable bytes of a path (surrogate escapes) shown as \udcff, never a UnicodeEncodeError
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return " ".join(text.split())


_TERMINATED: list[int] = []
_MAIN_PID: list[int] = []


def _terminate(signum, frame) -> None:
    if _MAIN_PID and os.getpid() != _MAIN_PID[-1]:
        # a forked worker (evaluation pool, DataLoader) inherited the handler: it ends as a
        # worker would without it; the main process does the cleanup
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _TERMINATED.append(signum)
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: every `finally` and temp-file cleanup runs


def handle_sigterm():
    """Treat SIGTERM (what CI runners, SLURM and ``timeout`` send) like Ctrl-C: raise
    ``KeyboardInterrupt`` in the main thread, so every ``finally`` / ``except BaseException``
    cleanup (:class:`grdkit.io.Commit`, :func:`grdkit.io.atomic_write_bytes`) removes its temp
    files, then exit 143 (128 + 15). Installed by :func:`main` only (not on import), and only
    in the main thread (Python's rule for signal handlers). Returns the previous handler (None
    when nothing was installed), which :func:`main` puts back when it returns."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    _MAIN_PID[:] = [os.getpid()]
    _TERMINATED.clear()
    return signal.signal(signal.SIGTERM, _terminate)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI (:func:`run_cli`) with stdout made :class:`~.ui.PipeSafe`: a reader that
    closes early (``| head``) costs neither an output file nor the exit code.

    Interrupts (Ctrl-C, and SIGTERM: :func:`handle_sigterm`) print ``grdkit: aborted`` and exit
    130 (143 for SIGTERM) after the temp files are removed."""
    if not isinstance(sys.stdout, PipeSafe):
        sys.stdout = PipeSafe(sys.stdout)
    previous = handle_sigterm()
    try:
        run_cli(argv)
    finally:
        sys.stdout.flush()  # PipeSafe: never raises on a closed pipe
        if previous is not None:  # an in-process caller (tests, notebooks) gets its handler back
            signal.signal(signal.SIGTERM, previous)


def run_cli(argv: list[str] | None = None) -> None:
    """Run the CLI; map every input and usage error to one line on stderr and exit code 2."""
    from ..io.images import set_follow_links

    set_follow_links(False)  # per run: only this run's --follow-links turns it on
    try:
        rv = cli.main(args=argv, prog_name="grdkit", standalone_mode=False)
    except GrdkitError as e:
        click.echo(f"grdkit: error: {_one_line(e)}", err=True)
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("grdkit: aborted" + (" (SIGTERM)" if _TERMINATED else ""), err=True)
        sys.exit(143 if _TERMINATED else 130)
    except click.exceptions.NoArgsIsHelpError as e:  # a bare group (grdkit convert): its help
        click.echo(e.ctx.get_help())
        sys.exit(0)
    except click.UsageError as e:
        where = _help_path(e.ctx)
        click.echo(f"grdkit: error: {_one_line(e.format_message())} (see {where} --help)",
                   err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"grdkit: error: {_one_line(e.format_message())}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except RecursionError:
        click.echo("grdkit: error: an input is nested too deeply to be read", err=True)
        sys.exit(2)
    except MemoryError:
        click.echo("grdkit: error: out of memory reading an input", err=True)
        sys.exit(2)
    except INPUT_FAILURES as e:
        click.echo(f"grdkit: error: {_one_line(_describe(e))}", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)


def _help_path(ctx: click.Context | None) -> str:
    """The command whose --help to point at: ``grdkit eval`` for eval's default command."""
    if ctx is None:
        return "grdkit"
    parent = ctx.parent
    if parent is not None and isinstance(parent.command, DefaultGroup) \
            and ctx.info_name == parent.command.default:
        return parent.command_path
    return ctx.command_path


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return f"{type(e).__name__}: {e}"


if __name__ == "__main__":
    main()
