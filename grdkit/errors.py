"""Errors raised on bad input.

Every problem with a user's file is raised as :class:`InputError`, whose message names the file,
the record (id, key or line) and how to fix it. The CLI turns it into one line on stderr and exit
code 2, with no traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class GrdkitError(Exception):
    """Base class of every error grdkit raises on purpose."""


class InputError(GrdkitError):
    """An input file is missing, unreadable or holds an invalid record.

    Args:
        path: the offending file (or folder).
        message: what is wrong.
        record: the record concerned, e.g. ``"ref_id 40373"`` or ``"line 12"``; optional.
        hint: how to fix it; optional.
    """

    def __init__(self, path: str | Path | None, message: str, record: str | None = None,
                 hint: str | None = None) -> None:
        self.path = None if path is None else str(path)
        self.record = record
        self.hint = hint
        self.reason = message
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if record:
            parts.append(record)
        text = ": ".join(parts + [message]) if parts else message
        if hint:
            text += f" (fix: {hint})"
        super().__init__(text)

    def with_path(self, path: str | Path) -> InputError:
        """The same error naming ``path`` (when it names no file yet)."""
        return self if self.path is not None else InputError(path, self.reason, self.record,
                                                             self.hint)


@contextmanager
def naming(path: object) -> Iterator[None]:
    """Errors about records of one input name that input: an :class:`InputError` raised inside
    without a file (e.g. ``predictions[0]: peak ...`` from a parser handed the records) is
    re-raised naming ``path`` (issue 30, K). ``path`` that is not a file name (an in-memory
    list) leaves errors as they are."""
    try:
        yield
    except InputError as e:
        if e.path is None and isinstance(path, (str, Path)):
            raise e.with_path(path) from None
        raise
