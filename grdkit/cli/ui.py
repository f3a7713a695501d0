"""The CLI's output conventions, in one place (issue 25): logging, progress, tables, --format,
pipes and option aliases. Every command picks them up through these helpers.

* **Logging**: one ``grdkit`` logger (:mod:`logging`); :func:`configure` sets its level from the
  global ``-q/--quiet`` (warnings only), default (info) and ``-v/--verbose`` (debug). On a TTY the
  lines go through rich's handler (above any progress bar); otherwise they are plain, flushed
  lines ``2026-12-04 16:40:01 INFO train: ...`` on stderr, visible at once in a CI or SLURM log.
* **Progress** (:func:`progress_bar`): a rich bar when stderr is a TTY; otherwise (or with
  ``--log-format lines``) one log line per stage and at least one per ``GRDKIT_LOG_INTERVAL``
  seconds (default 30), e.g. ``evaluating: 12/31 steps (38%), 7.1 steps/s, eta 3 s``. Off with
  ``--no-progress``, ``-q`` or ``GRDKIT_NO_PROGRESS=1``.
* **Tables** (:class:`Output`): printed at the end of a command in its ``--format`` (table,
  markdown, csv, json). Outside a terminal a table prints at its full width (rich would cut it
  to 80 columns); ``None`` (an empty denominator) prints as ``-``. ``NO_COLOR`` is honoured by
  rich itself.
* **Pipes** (:class:`PipeSafe`): a closed stdout (``| head``) never raises: output files are
  still committed and the exit code is the command's own.
* **Aliases** (:class:`AliasOption`): an option's former spellings stay accepted, hidden from
  ``--help``.

rich (a well-kept library) draws the TTY bar and tables; the plain line logger and the
Markdown / CSV renderers are ours because rich has no non-interactive progress and no Markdown
table writer.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# markup=False everywhere: user text (file names, expressions, --names, paths) reaches these
# consoles and tables; a "[/]" in it would raise rich's MarkupError and "[red]" would restyle
# output. Styles are given as arguments (``out.print(text, style="green")``), never as markup
# (issue 30, class B).
log = logging.getLogger("grdkit")

LOG_FORMATS = ("auto", "bar", "lines")
FORMATS = ("table", "markdown", "csv", "json")
# process-wide CLI settings, set by the root group and the per-command -q / -v / --log-format
STATE = {"verbosity": 0, "log_format": "auto"}
WIDE = 100_000  # columns outside a terminal: rich never cuts or wraps a cell


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    tty = _is_tty(stream)
    return Console(file=stream, highlight=False, markup=False, width=None if tty else WIDE,
                   soft_wrap=not tty)


class _Stream:
    """``out`` / ``err``: ``.print`` renders through rich on the current sys.stdout / stderr
    (looked up at each call, so click's test runner and :class:`PipeSafe` see it)."""

    def __init__(self, stderr: bool):
        self.stderr = stderr

    def print(self, *objects, **kwargs) -> None:
        if self.stderr:  # notes and warnings are log records (levels honoured, -q hides notes)
            plain = " ".join(str(o) for o in objects)  # no markup (module comment)
            level = logging.INFO
            if plain.lower().startswith("warning:"):
                level, plain = logging.WARNING, plain[len("warning:"):].lstrip()
            log.log(level, plain)
            return
        _console(False).print(*objects, **kwargs)


out = _Stream(stderr=False)
err = _Stream(stderr=True)


class _StderrHandler(logging.StreamHandler):
    """A plain line per record on the current ``sys.stderr``, flushed at once."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # logging.StreamHandler assigns it; the current stderr is used
        pass


_TTY_CONSOLE: list[Console] = []


def _tty_console() -> Console:
    if not _TTY_CONSOLE or _TTY_CONSOLE[0].file is not sys.stderr:
        _TTY_CONSOLE[:] = [Console(file=sys.stderr, highlight=False, markup=False)]
    return _TTY_CONSOLE[0]


def lines_mode() -> bool:
    """Whether progress and logs are plain lines (stderr is no TTY, or ``--log-format lines``)."""
    fmt = STATE["log_format"]
    return fmt == "lines" or (fmt == "auto" and not _is_tty(sys.stderr))


def configure(verbosity: int | None = None, log_format: str | None = None) -> None:
    """Set the ``grdkit`` logger's level (verbosity -1 quiet: WARNING, 0: INFO, 1: DEBUG) and its
    handler (rich on a TTY, plain flushed lines otherwise). Idempotent."""
    if verbosity is not None:
        STATE["verbosity"] = verbosity
    if log_format is not None:
        STATE["log_format"] = log_format
    v = STATE["verbosity"]
    log.setLevel(logging.WARNING if v < 0 else logging.DEBUG if v > 0 else logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        if getattr(h, "_grdkit", False):
            log.removeHandler(h)
    if lines_mode():
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                         "%Y-%m-%d %H:%M:%S"))
    else:
        h = RichHandler(console=_tty_console(), show_path=False, markup=False)
    h._grdkit = True
    log.addHandler(h)


def progress_enabled(enabled: bool = True) -> bool:
    """Progress is shown unless ``--no-progress``, ``-q`` or ``GRDKIT_NO_PROGRESS=1``."""
    return (enabled and STATE["verbosity"] >= 0
            and os.environ.get("GRDKIT_NO_PROGRESS", "") in ("", "0"))


def log_interval() -> float:
    """Seconds between progress lines (``GRDKIT_LOG_INTERVAL``, default 30)."""
    try:
        return max(0.0, float(os.environ.get("GRDKIT_LOG_INTERVAL", "30")))
    except ValueError:
        return 30.0


def _duration(s: float) -> str:
    s = round(s)
    return f"{s} s" if s < 60 else f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _rate(n: float) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else f"{n:.1f}" if n >= 1 else f"{n:.2f}"


class LineProgress:
    """``track(iterable, description, total)`` logging plain lines: one at the end of each
    stage and one per :func:`log_interval` seconds, ``desc: n/total (p%), r/s, eta t``."""

    def __init__(self, interval: float | None = None, logger: logging.Logger | None = None):
        self.interval = log_interval() if interval is None else interval
        self.log = logger or logging.getLogger("grdkit.progress")

    def __call__(self, it: Iterable, desc: str, total: int) -> Iterator:
        t0 = last = time.monotonic()
        n = 0
        for item in it:
            yield item
            n += 1
            now = time.monotonic()
            if now - last >= self.interval and n < total:
                last = now
                rate = n / max(now - t0, 1e-9)
                pct = f" ({100 * n // total}%)" if total else ""
                self.log.info(f"{desc}: {n}/{total}{pct}, {_rate(rate)}/s, "
                              f"eta {_duration((total - n) / rate)}")
        dt = time.monotonic() - t0
        self.log.info(f"{desc}: {n}/{total} done in {_duration(dt)} "
                      f"({_rate(n / max(dt, 1e-9))}/s)")


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """Yield ``track(iterable, description, total)`` (:mod:`grdkit.progress`): a rich bar on
    stderr when it is a TTY, plain log lines otherwise (:class:`LineProgress`), nothing when
    disabled (:func:`progress_enabled`). An unused bar prints nothing."""
    if not progress_enabled(enabled):
        yield lambda it, desc, total: it
        return
    if lines_mode():
        yield LineProgress()
        return
    prog = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=_tty_console(),
                    transient=False)

    def track(it: Iterable, desc: str, total: int) -> Iterable:
        if not prog.live.is_started:
            prog.start()
        return prog.track(it, total=total, description=desc)

    try:
        yield track
    finally:
        if prog.live.is_started:
            prog.stop()


LABELS = {"expressions": "expr.", "positive_pairs": "positive", "negative_pairs": "negative",
          "dropped_groups": "dropped"}


def cell(v) -> str:
    """A table cell: ``None`` (an empty denominator, a missing value) is ``-``."""
    return "-" if v is None else f"{v}"


def table(title: str, rows: list[dict], columns: list[str] | None = None) -> Table:
    """A rich table of ``rows`` (dicts), numbers right-aligned, short headers (:data:`LABELS`);
    cells never wrap or get cut (the console is full width outside a terminal)."""
    columns = columns or (list(rows[0]) if rows else [])
    t = Table(title=title, title_justify="left")
    for c in columns:
        numeric = bool(rows) and all(isinstance(r.get(c), (int, float)) for r in rows)
        # fold, not ignore: rich drops the justification of an "ignore" column; outside a
        # terminal the console is WIDE, so nothing is ever folded or cut there
        t.add_column(LABELS.get(c, c), justify="right" if numeric else "left", no_wrap=True,
                     overflow="fold")
    for r in rows:
        t.add_row(*(cell(r.get(c)) for c in columns))
    return t


def _plain(s) -> str:
    return str(s)  # text is never markup (module comment)


def markdown_table(title: str, rows: list[dict], columns: list[str] | None = None) -> str:
    """``**title**`` and a GitHub Markdown table (``|`` in cells escaped, None as ``-``)."""
    columns = columns or (list(rows[0]) if rows else [])
    esc = (lambda s: _plain(s).replace("|", "\\|"))
    lines = [f"**{esc(title)}**", "", "| " + " | ".join(esc(LABELS.get(c, c)) for c in columns)
             + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(esc(cell(r.get(c))) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """CSV with a header row (grdkit's column keys); None is an empty cell."""
    columns = columns or (list(rows[0]) if rows else [])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else _plain(r.get(c)) for c in columns])
    return buf.getvalue()


def no_progress_option(f):
    """``--no-progress`` (also ``-q`` and ``GRDKIT_NO_PROGRESS=1``)."""
    return click.option("--no-progress", is_flag=True,
                        help="Hide the progress bar (and, without a terminal, the progress "
                             "lines); the same as GRDKIT_NO_PROGRESS=1.")(f)


def format_option(f):
    """``--format table|markdown|csv|json`` for a command that prints tables."""
    return click.option(
        "--format", "output_format", type=click.Choice(FORMATS), default="table",
        show_default=True,
        help="How the summary prints on stdout: table (full width when not a terminal), "
             "markdown, csv (several tables: a '# title' line before each) or json (the "
             "object the --json file holds, where the command has one). With csv and json "
             "the notes go to stderr.")(f)


class Output:
    """What a command prints on stdout, collected and rendered at the end (:meth:`emit`) in its
    ``--format``, after the output files are committed."""

    def __init__(self, fmt: str = "table"):
        self.fmt = fmt
        self.parts: list[tuple] = []

    def table(self, title: str, rows: list[dict], columns: list[str] | None = None) -> None:
        self.parts.append(("table", title, rows, columns))

    def text(self, line: str, style: str | None = None) -> None:
        """A note line (plain text, never markup; ``style`` e.g. "red" on a terminal); on
        stderr with csv and json."""
        self.parts.append(("text", line, style))

    def tables(self) -> list[dict]:
        """``[{"title", "rows"}]``: the default JSON object of a command without --json."""
        return [{"title": _plain(p[1]), "rows": [{c: r.get(c) for c in (p[3] or list(r))}
                                                  for r in p[2]]}
                for p in self.parts if p[0] == "table"]

    def emit(self, obj=None) -> None:
        """Print every part in the format; ``obj`` is the JSON (default :meth:`tables`)."""
        if self.fmt == "json":
            for p in self.parts:
                if p[0] == "text":
                    log.info(_plain(p[1]))
            click.echo(json.dumps(self.tables() if obj is None else obj, indent=1,
                                  allow_nan=False, default=str))
            return
        chunks = []
        for p in self.parts:
            if p[0] == "text":
                if self.fmt == "csv":
                    log.info(_plain(p[1]))
                elif self.fmt == "markdown":
                    chunks.append(_plain(p[1]) + "\n")
                else:
                    out.print(p[1], style=p[2])
            elif self.fmt == "table":
                out.print(table(p[1], p[2], p[3]))
            elif self.fmt == "markdown":
                chunks.append(markdown_table(p[1], p[2], p[3]))
            else:
                n_tables = sum(q[0] == "table" for q in self.parts)
                head = f"# {_plain(p[1])}\n" if n_tables > 1 else ""
                chunks.append(head + csv_table(p[2], p[3]))
        if chunks:
            click.echo("\n".join(chunks), nl=False)


def is_stdout(path) -> bool:
    """Whether an output option names stdout (``-``)."""
    return path is not None and str(path) == "-"


class PipeSafe:
    """sys.stdout that a closed reader (``| head``) cannot break: the first ``BrokenPipeError``
    points the descriptor at /dev/null (the recipe of Python's signal docs) and later writes are
    dropped, so the command goes on, commits its files and exits with its own code."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = False

    def write(self, s):
        if self.broken:
            return len(s)
        try:
            return self._stream.write(s)
        except BrokenPipeError:
            self._break()
            return len(s)

    def flush(self):
        if self.broken:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._break()

    def _break(self):
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


class AliasOption(click.Option):
    """An option whose extra spellings (``aliases``) are accepted but hidden from ``--help``
    (former names kept so that no script breaks)."""

    def __init__(self, *args, aliases: tuple[str, ...] = (), **kwargs):
        self.aliases = tuple(aliases)
        super().__init__(*args, **kwargs)

    def get_help_record(self, ctx):
        saved = self.opts
        self.opts = [o for o in self.opts if o not in self.aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = saved


class DefaultGroup(click.Group):
    """A group with a default command (``default``, hidden from the list): ``grdkit eval PREDS
    --gt GT`` runs ``eval run``; ``grdkit eval --help`` shows the default command's options
    and lists the other subcommands."""

    default = "run"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default, *args]
        elif not args:
            args = [self.default]
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter):
        cmd = self.commands[self.default]
        sub = click.Context(cmd, info_name=ctx.info_name, parent=ctx.parent)
        cmd.format_help(sub, formatter)
        others = [(n, c.get_short_help_str(80)) for n, c in self.commands.items()
                  if n != self.default and not c.hidden]
        if others:
            with formatter.section("Other commands"):
                formatter.write_dl([(f"{ctx.info_name} {n}", h) for n, h in others])


def split_file(path, split: str | None, option: str = "--split"):
    """The split file a command reads: ``path`` itself, or ``<path>/<split>.json`` when
    ``path`` is a built folder (every reader takes either). A folder with one split needs no
    ``split``; with several, ``split`` is required (nothing is guessed).

    Raises:
        InputError: ``split`` given with a file, a missing split, or no ``split`` for a folder
            with several.
    """
    from pathlib import Path

    from ..errors import InputError

    path = Path(path)
    if not path.is_dir():
        if split is not None and split != path.stem:
            raise InputError(path, f"is one split file ({path.stem}); {option} {split} applies "
                             "to a built folder", hint=f"drop {option} or pass the folder")
        return path
    names = sorted(p.stem for p in path.glob("*.json") if not p.name.startswith("."))
    if not names:
        raise InputError(path, "holds no <split>.json file", hint="run `grdkit build` first")
    if split is None:
        if len(names) == 1:
            return path / f"{names[0]}.json"
        raise InputError(path, f"is a built folder with splits {', '.join(names)}",
                         hint=f"choose one with {option}")
    if split not in names:
        raise InputError(path, f"has no split {split!r} (it has {', '.join(names)})",
                         hint=f"choose {option} from those")
    return path / f"{split}.json"
