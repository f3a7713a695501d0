"""Reading a JSON file with errors that name the file, the line and the column.

Bounds (:mod:`grdkit.io.limits`): integers must stay below 2^63 in magnitude (``10**400`` would
overflow every later ``float()`` or numpy cast), floats must be finite where NaN is not allowed
(``1e400`` parses as infinity; NaN and Infinity literals are refused too, by default), and
nesting too deep for the parser is an input error, not a
``RecursionError``.

Decoding is msgspec's (``msgspec.json.decode``, C, strict RFC 8259: NaN / Infinity literals and
numbers that overflow a double are refused, invalid UTF-8 is refused, integers are exact), about
2x the standard library with its per-token hooks on grdkit's files. msgspec rather than orjson:
orjson turns an integer beyond 64 bits into a float silently (``10**30`` -> ``1e+30``) and
beyond 2^63 into an unbounded int, so the 2^63 bound could not be told from its output, while
msgspec keeps integers exact and also decodes into typed, range-checked structs (the
predictions' schema, :mod:`grdkit.evaluators.predictions`). The only bound it cannot apply to
untyped data is 2^63: a cheap byte scan (:func:`_may_hold_long_int`, a number of 19 or more
digits after a JSON delimiter) sends the rare file that might hold one, and every file msgspec refuses, to the
standard library's parser with the bounded hooks, which gives the exact error (line, column)
or the same value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec

from ..errors import InputError
from .files import LIMITS, read_bytes
from .limits import MAX_JSON_INT

# Which bytes may hold an integer of 19 or more digits (|value| may reach 2^63): the bytes are
# mapped to classes in C (``bytes.translate``: digit "0", delimiter before a number "d", blank or
# minus " ", delimiter after a number "e", other "."), then every run of 19 digits is found by
# ``bytes.find``; a run counts when a "d" (or the start) precedes it, past blanks, and an "e",
# a blank or the end follows it. Digits inside strings (RLE counts hold runs of digits) rarely
# pass both tests, and then only cost the exact slow path. (A regular expression over the raw
# bytes takes ~1 s on 18 MB of RLE-heavy JSON; this takes ~20 ms.)
_CLASSES = bytearray(b"." * 256)
for _c in b"0123456789":
    _CLASSES[_c] = ord("0")
for _c in b"[:,":
    _CLASSES[_c] = ord("d")
for _c in b" \t\r\n-":
    _CLASSES[_c] = ord(" ")
for _c in b"]}":
    _CLASSES[_c] = ord("e")
_CLASSES[ord(",")] = ord("d")  # "," both precedes and follows a number: tested below
_CLASSES = bytes(_CLASSES)
_RUN = b"0" * 19


def _may_hold_long_int(data: bytes) -> bool:
    t = data.translate(_CLASSES)
    pos = t.find(_RUN)
    while pos >= 0:
        end = pos + 19
        while end < len(t) and t[end] == 48:  # the whole run of digits
            end += 1
        k = pos - 1
        while k >= 0 and t[k] == 32:
            k -= 1
        after = t[end] if end < len(t) else 32
        if (k < 0 or t[k] == 100) and (after in (32, 101) or data[end] == 44):
            return True
        pos = t.find(_RUN, end)
    return False


_FAST = msgspec.json.Decoder()


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
    if not allow_nan and not _may_hold_long_int(data):
        try:
            return _FAST.decode(data)
        except (msgspec.DecodeError, RecursionError):
            pass  # the exact parser below names the problem (or accepts what msgspec refuses)
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
