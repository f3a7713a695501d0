"""Errors raised on bad input.

Every problem with a user's file is raised as :class:`InputError`, whose message names the file,
the record (id, key or line) and how to fix it. The CLI turns it into one line on stderr and exit
code 2, with no traceback.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

QUOTE_CHARS = 80  # a value quoted in a message is cut to this many characters
PART_CHARS = 300  # any one part of a message (record, reason, hint), as a last bound
_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
for _k, _v in {"maxlevel": 3, "maxtuple": 12, "maxlist": 12, "maxarray": 12, "maxdict": 6,
               "maxset": 6, "maxfrozenset": 6, "maxdeque": 6, "maxstring": QUOTE_CHARS,
               "maxlong": 40, "maxother": QUOTE_CHARS}.items():
    setattr(_REPR, _k, _v)


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: a value read from a
    hostile input (a list of a million ids) must not become a megabyte line on stderr.

    Built with the standard library's :mod:`reprlib` (bounded work: it looks at a few items of
    each container and a few levels deep, whatever the value's size), then cut; a cut text ends
    with ``...`` and, for a sized value, its length (``(list of 1000000 items)``).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<integer of {value.bit_length()} bits>"  # repr of a huge int is quadratic
    try:
        text = _REPR.repr(value)
    except ValueError:  # a huge int nested in a container (int to str conversion limit)
        text = f"<{type(value).__name__}>"
    if len(text) <= limit and "..." not in text:
        return text
    size = ""
    if isinstance(value, (str, bytes)):
        size = f" ({len(value)} chars)"
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        size = f" ({type(value).__name__} of {len(value)} items)"
    return f"{text[:limit].removesuffix('...')}...{size}"


def _cut(text: str, limit: int = PART_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


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
        self.path = None if path is None else _cut(str(path), 4 * PART_CHARS)
        record = None if record is None else _cut(str(record))
        hint = None if hint is None else _cut(str(hint))
        message = _cut(str(message))
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
