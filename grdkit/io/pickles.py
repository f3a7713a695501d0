"""Reading pickles safely: plain data only, Python 2 byte strings decoded as UTF-8.

The refer toolkit's ``refs(*).p`` were written by Python 2 (``str`` objects are byte strings) and
hold only lists, dicts, strings and numbers. :func:`loads_pickle` uses an unpickler whose
``find_class`` refuses every global, so a pickle can only build built-in containers and scalars
and can never call a function (``os.system`` and friends are refused, not run).

The caller supplies ``hint``: how to fix the file, in the caller's terms.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from pathlib import Path
from typing import Any

from ..errors import InputError
from .files import LIMITS, read_bytes


class SafeUnpickler(pickle.Unpickler):
    """Builds only built-in containers and scalars: every global lookup is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refers to {module}.{name}; grdkit reads pickles of "
                                     "plain lists, dicts, strings and numbers only")


class NumpyUnpickler(SafeUnpickler):
    """Also rebuilds numpy arrays, scalars and dtypes, and nothing else.

    Allowed globals (recorded by pickling real arrays and scalars with protocols 2-5 under numpy 1
    and numpy 2; both spellings, so either version reads the other's pickles):
    ``numpy.core.multiarray._reconstruct`` / ``scalar``, ``numpy.core.numeric._frombuffer`` (and
    their ``numpy._core`` paths), ``numpy.ndarray``, ``numpy.dtype``, and ``_codecs.encode``
    (protocol 2 stores bytes as ``encode(str, "latin1")``). Every other global is refused, so a
    pickle still cannot call ``os.system`` or any other function.
    """

    ALLOWED = frozenset({
        *((f"numpy.{core}.multiarray", n) for core in ("core", "_core")
          for n in ("_reconstruct", "scalar")),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refers to {module}.{name}; grdkit reads pickles of "
                                         "plain data and numpy arrays only")
        if module == "_codecs":
            return codecs.encode
        import numpy as np

        if module == "numpy":
            return getattr(np, name)
        sub = module.rsplit(".", 1)[1]  # multiarray | numeric, from the installed numpy
        try:
            mod = importlib.import_module(f"numpy._core.{sub}")
        except ImportError:  # numpy 1
            mod = importlib.import_module(f"numpy.core.{sub}")
        return getattr(mod, name)


def loads_pickle(path: str | Path, data: bytes, hint: str | None = None,
                 unpickler: type[pickle.Unpickler] = SafeUnpickler) -> Any:
    """Unpickle ``data`` (read from ``path``, named in errors) with a safe unpickler.

    Args:
        path: the file the bytes came from (for messages).
        data: the pickle bytes.
        hint: how to fix an unreadable file, e.g. which file the caller expects.
        unpickler: a subclass of :class:`SafeUnpickler` that allows a few more globals.

    Raises:
        InputError: truncated, not a pickle, a Python 2 byte string that is not UTF-8, or a
            global the unpickler refuses (named in the message).
    """
    try:
        # Python 2 `str` objects are decoded by the C unpickler as strict UTF-8 (fast, and an
        # undecodable byte string is an error rather than a guess).
        return unpickler(io.BytesIO(data), encoding="utf-8", errors="strict").load()
    except UnicodeDecodeError as e:
        raise InputError(path, f"holds a Python 2 byte string that is not UTF-8 ({e.reason} at "
                         f"byte {e.start} of {e.object[:40]!r})") from None
    except RecursionError:
        raise InputError(path, "is not a readable pickle of plain data: nested too deeply",
                         hint=hint) from None
    except EOFError:
        raise InputError(path, "pickle is truncated (unexpected end of file)",
                         hint="download the file again") from None
    except (pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, MemoryError) as e:
        if "truncated" in str(e):
            raise InputError(path, "pickle is truncated (data ends early)",
                             hint="download the file again") from None
        raise InputError(path, f"is not a readable pickle of plain data: {e}",
                         hint=hint) from None


def load_pickle(path: str | Path, hint: str | None = None) -> Any:
    """Read and safely unpickle a file; see :func:`loads_pickle`."""
    return loads_pickle(path, read_bytes(path, "pickle", hint, limit=LIMITS["pickle"]), hint)
