"""The one progress-callback type of grdkit's Python API.

A long operation takes ``progress: Progress | None``: a callable ``(iterable, description,
total) -> iterable`` that yields the same items (the CLI passes a rich progress bar; ``None``
shows nothing). Library code never prints progress itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

Progress: TypeAlias = Callable[[Iterable[Any], str, int], Iterable[Any]]


def tracked(progress: Progress | None, items: Iterable, description: str, total: int) -> Iterable:
    """``progress(items, description, total)``, or ``items`` unchanged when ``progress`` is None."""
    return items if progress is None else progress(items, description, total)
