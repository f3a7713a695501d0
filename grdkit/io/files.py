"""The one checked opener for every input file: a regular file, of a bounded size, opened so that
nothing can block.

A FIFO given as the predictions blocks ``open()`` forever; ``/dev/zero`` given as a refs file is
read until memory runs out; a folder where a file is expected raises ``IsADirectoryError`` deep in
a library. Every reader of an input (JSON, pickles, images through PIL, checkpoints through
torch, numpy states, GloVe text, recipes, and the fingerprints that hash inputs) opens it here:

1. ``os.stat`` before opening: anything but a regular file (FIFO, socket, character or block
   device, folder) is refused with its kind named;
2. ``os.open(..., O_RDONLY | O_NONBLOCK)``: a FIFO swapped in after the check cannot block the
   open, and ``fstat`` of the opened descriptor must still be the same regular file (same device
   and inode), so what is read is what was checked;
3. the size (``st_size``) is checked against the reader's ``limit`` *before* reading, and
   :func:`read_bytes` reads at most ``st_size`` bytes (a file that grows while read is cut at the
   checked size and refused, not followed).

Python's own ``open()`` has no "regular files only" mode, and no library in grdkit's
dependencies offers one (pathlib, ``io``, fsspec all block on a FIFO), hence this module.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from ..errors import InputError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
# Default size bounds per kind of input (bytes). They sit far above the largest real file of
# each kind (GRD's test.json ~120 MB, gRefCOCO's instances.json ~400 MB, a 300-d GloVe 840B
# ~5.6 GB, MABP's Swin-B checkpoint ~1 GB) and far below what would exhaust a machine.
LIMITS = {
    "json": 4 * GiB,
    "pickle": 4 * GiB,
    "image": 1 * GiB,
    "checkpoint": 16 * GiB,
    "state": 4 * GiB,
    "text": 16 * GiB,
    "recipe": 1 * MiB,
}
DEFAULT_LIMIT = 4 * GiB  # read_bytes without a limit: what one input may put in memory


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a link")):
        if test(mode):
            return name
    return "not a regular file"


def _fmt(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def check_regular(path: str | Path, what: str = "file", limit: int | None = None,
                  hint: str | None = None, record: str | None = None) -> os.stat_result:
    """``os.stat(path)`` of a regular file within ``limit`` bytes, checked without opening it.

    Raises:
        InputError: missing ("<what> not found"), not a regular file (its kind named), larger
            than ``limit``, or not stat-able.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(path, f"{what} not found", record, hint) from None
    except (OSError, ValueError) as e:
        raise InputError(path, f"{what} cannot be read: {getattr(e, 'strerror', None) or e}",
                         record, hint) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(path, f"{what} is {_kind(st.st_mode)}, not a regular file", record,
                         hint or "give a regular file (pipes and devices are not read)")
    if limit is not None and st.st_size > limit:
        raise InputError(path, f"{what} is {_fmt(st.st_size)}, above grdkit's bound of "
                         f"{_fmt(limit)} for it", record, hint)
    return st


def open_regular(path: str | Path, what: str = "file", limit: int | None = None,
                 hint: str | None = None, record: str | None = None, *, mode: str = "rb"):
    """Open a regular input file for reading, never blocking (module header).

    Args:
        path: the file (symlinks are followed, to a regular file only).
        what: how the file is called in messages (e.g. ``"predictions file"``).
        limit: the largest size accepted, in bytes (None: no bound; see :data:`LIMITS`).
        hint: how to fix it; record: the record that names the file, if any.
        mode: ``"rb"`` (bytes) or ``"r"`` (UTF-8 text, strict: an undecodable byte raises
            ``UnicodeDecodeError`` when read).

    Returns:
        A file object (``io.BufferedReader``, or ``io.TextIOWrapper`` for ``"r"``), to be
        closed by the caller (``with``).

    Raises:
        InputError: see :func:`check_regular`; or the file changed between check and open.
        ValueError: a ``mode`` other than ``"rb"`` / ``"r"``.
    """
    if mode not in ("rb", "r"):
        raise ValueError(f"open_regular reads only: mode 'rb' or 'r', not {mode!r}")
    st = check_regular(path, what, limit, hint, record)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise InputError(path, f"{what} cannot be read: {e.strerror or e}", record,
                         hint) from None
    try:
        st2 = os.fstat(fd)
        if not stat.S_ISREG(st2.st_mode) or (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
            now = _kind(st2.st_mode) if not stat.S_ISREG(st2.st_mode) else "another file"
            raise InputError(path, f"{what} was replaced while being opened (now {now})",
                             record, "do not change inputs while grdkit reads them")
        if limit is not None and st2.st_size > limit:
            raise InputError(path, f"{what} is {_fmt(st2.st_size)}, above grdkit's bound of "
                             f"{_fmt(limit)} for it", record, hint)
        f = os.fdopen(fd, "rb")
        return f if mode == "rb" else io.TextIOWrapper(f, encoding="utf-8", errors="strict")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, what: str = "file", hint: str | None = None, *,
               limit: int | None = DEFAULT_LIMIT, record: str | None = None) -> bytes:
    """The bytes of a regular input file of at most ``limit`` bytes (module header).

    Reads at most the size checked before opening (plus one byte, to notice a file that grew:
    refused, since what was checked is no longer what is read).

    Raises:
        InputError: missing, not a regular file, above ``limit``, unreadable, or changed size
            while read.
    """
    with open_regular(path, what, limit, hint, record) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            data = f.read(size + 1)
        except OSError as e:
            raise InputError(path, f"{what} cannot be read: {e.strerror or e}", record,
                             hint) from None
    if len(data) != size:
        raise InputError(path, f"{what} changed size while being read ({size} bytes when "
                         f"opened, {len(data)}{'+' if len(data) > size else ''} read)", record,
                         "do not change inputs while grdkit reads them")
    return data
