"""Terminal helpers shared by commands: a progress bar and summary tables (rich)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# markup=False: user text (file names, expressions, --names, paths) reaches these consoles and
# tables; a "[/]" in it would raise rich's MarkupError, and "[red]" would restyle output. Styles
# are given as arguments (``out.print(text, style="green")``), never as markup (issue 30, B).
out = Console(highlight=False, markup=False)
err = Console(stderr=True, highlight=False, markup=False)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """Yield ``track(iterable, description, total)``; a rich progress bar on stderr.

    The bar starts on the first ``track`` call, so an unused one prints nothing.
    """
    if not enabled:
        yield lambda it, desc, total: it
        return
    prog = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=False)

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


def table(title: str, rows: list[dict], columns: list[str] | None = None) -> Table:
    """A rich table of ``rows`` (dicts), numbers right-aligned, short headers (:data:`LABELS`)."""
    columns = columns or (list(rows[0]) if rows else [])
    t = Table(title=title, title_justify="left")
    for c in columns:
        numeric = bool(rows) and all(isinstance(r.get(c), (int, float)) for r in rows)
        t.add_column(LABELS.get(c, c), justify="right" if numeric else "left")
    for r in rows:
        t.add_row(*(f"{r.get(c)}" for c in columns))
    return t
