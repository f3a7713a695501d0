"""Reading a JSON file with errors that name the file, the line and the column.

Bounds (:mod:`grdkit.io.limits`): integers must stay below 2^63 in magnitude (``10**400`` would
overflow every later ``float()`` or numpy cast), floats must be finite where NaN is not allowed
(``1e400`` parses as infinity; NaN and Infinity literals are refused too, by default), and
nesting too deep for the parser is an input error, not a
``RecursionError``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import InputError
from .files import LIMITS, read_bytes
from .limits import MAX_JSON_INT


def _no_constant(token: str):
    raise ValueError(f"{token} is not valid JSON")


def _bounded_int(token: str) -> int:
    if len(token.lstrip("-")) > 19 or abs(v := int(token)) >= MAX_JSON_INT:
        raise ValueError(f"integer {token[:24]}{'...' if len(token) > 24 else ''} is out of "
                         "range (|value| < 2^63)")
    return v


def _finite_float(token: str) -> float:
    v = float(token)
    if not math.isfinite(v):
        raise ValueError(f"number {token[:24]} is out of range (not a finite float)")
    return v


def read_json(path: str | Path, what: str = "file", hint: str | None = None,
              allow_nan: bool = False) -> Any:
    """Parse a UTF-8 JSON file.

    Args:
        path: the file. what: how to call it in "not found" messages.
        hint: how to fix a syntax error. allow_nan: accept the NaN / Infinity literals and
            numbers that overflow to infinity (off by default: no grdkit input holds them, and
            a NaN coordinate, score or metric would silently change a result).

    Raises:
        InputError: missing, not a regular file, above ``LIMITS["json"]`` bytes
            (:func:`grdkit.io.files.read_bytes`), unreadable, not UTF-8, or invalid JSON (line
            and column named).
    """
    path = Path(path)
    data = read_bytes(path, what, limit=LIMITS["json"])  # the checked opener: no FIFO, bounded
    return loads_json(path, data, hint, allow_nan)


def loads_json(path: str | Path, data: bytes, hint: str | None = None,
               allow_nan: bool = False) -> Any:
    """Parse JSON bytes read from ``path`` (named in errors; for readers that also hash them).

    Raises:
        InputError: not UTF-8, or invalid JSON (line and column named).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, f"is not UTF-8 text: {e}") from None
    try:
        return json.loads(text, parse_constant=None if allow_nan else _no_constant,
                          parse_int=_bounded_int,
                          parse_float=float if allow_nan else _finite_float)
    except json.JSONDecodeError as e:
        raise InputError(path, f"invalid JSON: {e.msg}", f"line {e.lineno} column {e.colno}",
                         hint) from None
    except ValueError as e:  # NaN / Infinity literals when not allowed, out-of-range numbers
        raise InputError(path, f"invalid JSON: {e}", hint="numbers must be finite") from None
    except RecursionError:
        raise InputError(path, "invalid JSON: nested too deeply for the parser",
                         hint="a grdkit file nests a few levels only") from None
