"""Atomic file output: write to a temporary file in the destination folder, then rename.

A reader never sees a half-written file, and an interrupted run leaves the previous file intact.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``).

    Creates missing parent folders. Raises ``OSError`` if the folder is not writable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically; see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def lock_folder(folder: str | Path, option: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing) for a run that writes into it.

    The lock is ``fcntl.flock`` on the folder itself (no lock file is left behind; released by
    the kernel when the process ends, even when killed). A second run writing into the same
    folder is refused at once rather than mixing its files with the first's. On a platform
    without ``fcntl`` (Windows) nothing is locked.

    Raises:
        InputError: another process holds the lock (``option`` named in the fix).
    """
    from ..errors import InputError

    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(folder, "another grdkit run is writing into this folder (locked)",
                             hint=f"wait for it to end, or choose another {option}") from None
        yield
    finally:
        os.close(fd)  # releases the lock


class Commit:
    """Several output files committed as a whole: written to temp files, then renamed together.

    Every file is first written completely as a hidden temp file beside its destination
    (``.<name>.<random>.tmp``); only when all are written are they renamed into place (and the
    ``stale`` files removed). An error or an interrupt before that removes the temp files and
    leaves every earlier output untouched. If a rename fails part-way (a read-only or immutable
    file, a full disk), the files already renamed are rolled back to their earlier content (kept
    as hard links until the commit ends) and the stale files restored: the folder holds the
    earlier run's files, never a mix (issue 30, G). With ``lock``, the folder is locked
    (:func:`lock_folder`) from ``__enter__`` to the end, so a second writer is refused. Use as a
    context manager::

        with Commit(lock=out) as c:
            c.write_text(out / "val.json", text)
            with open(c.temp_for(out / "shard.parquet"), "wb") as f: ...
            c.remove(out / "old-shard.parquet")

    Files of the folder that are not named are kept (an output folder may hold a user's files).
    """

    def __init__(self, lock: str | Path | None = None, option: str = "--out") -> None:
        self._temps: dict[Path, Path] = {}
        self._stale: list[Path] = []
        self._lock = None if lock is None else lock_folder(lock, option)

    def temp_for(self, path: str | Path) -> Path:
        """A fresh temp path beside ``path`` that becomes ``path`` at commit."""
        path = Path(path)
        if path in self._temps:
            raise ValueError(f"{path} is written twice in one commit")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self._temps[path] = Path(tmp)
        return Path(tmp)

    def write_bytes(self, path: str | Path, data: bytes) -> None:
        tmp = self.temp_for(path)
        with open(tmp, "wb") as f:
            f.write(data)

    def write_text(self, path: str | Path, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def remove(self, path: str | Path) -> None:
        """Delete ``path`` at commit (e.g. a shard of an earlier export)."""
        self._stale.append(Path(path))

    @property
    def paths(self) -> list[Path]:
        return list(self._temps)

    @property
    def temps(self) -> dict[Path, Path]:
        """Destination -> temp file, for the files not yet committed."""
        return dict(self._temps)

    def __enter__(self) -> Commit:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        if self._lock is not None:
            self._lock.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                self.abort()
                return
            self._commit()
        finally:
            if self._lock is not None:
                self._lock.__exit__(None, None, None)

    def _commit(self) -> None:
        try:
            for path in self._temps:  # a rename that would fail, refused before the first
                if path.is_dir():
                    raise IsADirectoryError(21, "Is a directory", str(path))
            mode = 0o666 & ~_umask()
            for tmp in self._temps.values():
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.chmod(tmp, mode)
        except BaseException:
            self.abort()
            raise
        backups: dict[Path, Path] = {}  # destination -> its earlier content (a hard link)
        placed: list[Path] = []
        removed: dict[Path, Path] = {}  # stale file -> where it was moved aside
        try:
            for path in self._temps:
                if os.path.lexists(path):
                    backups[path] = self._aside(path, link=True)
            for p in dict.fromkeys(self._stale):
                if p not in self._temps and os.path.lexists(p):
                    removed[p] = self._aside(p, link=False)
            for path, tmp in self._temps.items():
                os.replace(tmp, path)
                placed.append(path)
        except BaseException as e:
            self._roll_back(placed, backups, removed)
            self.abort()
            if isinstance(e, OSError):
                from ..errors import InputError

                raise InputError(e.filename, f"cannot be replaced ({e.strerror or e}); nothing "
                                 "of this run was written, the earlier files are as they were",
                                 hint="make it writable (chmod, chattr -i) or choose another "
                                      "--out") from None
            raise
        self._temps.clear()
        for b in [*backups.values(), *removed.values()]:
            try:
                os.unlink(b)
            except OSError:
                pass

    @staticmethod
    def _aside(path: Path, link: bool) -> Path:
        """A hidden name beside ``path`` holding its current content: a hard link (``link``:
        the file stays in place), else a rename; a file system without hard links falls back to
        a copy."""
        fd, b = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent)
        os.close(fd)
        os.unlink(b)
        if not link:
            os.replace(path, b)
        else:
            try:
                os.link(path, b, follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise  # EPERM (immutable), EACCES: this file cannot be replaced either
                shutil.copy2(path, b, follow_symlinks=False)
        return Path(b)

    @staticmethod
    def _roll_back(placed: list[Path], backups: dict[Path, Path],
                   removed: dict[Path, Path]) -> None:
        for path in placed:
            try:
                if path in backups:
                    os.replace(backups.pop(path), path)
                else:
                    os.unlink(path)
            except OSError:
                pass
        for b in backups.values():
            try:
                os.unlink(b)
            except OSError:
                pass
        for p, b in removed.items():
            try:
                os.replace(b, p)
            except OSError:
                pass

    def abort(self) -> None:
        """Remove every temp file; the destinations are untouched."""
        for tmp in self._temps.values():
            try:
                tmp.unlink()
            except OSError:
                pass
        self._temps.clear()


def check_outputs(inputs: list[str | Path | None], files: dict[str, str | Path | None] | None = None,
                  folders: dict[str, str | Path | None] | None = None) -> None:
    """Refuse an output that names an input, before any work.

    Args:
        inputs: input files and folders (None entries are skipped).
        files: option name -> output file (None: not given); refused when it is an input.
        folders: option name -> output folder; refused when it is an input or holds one.

    Raises:
        InputError: naming the option and the input.
    """
    from ..errors import InputError

    ins = [(p, Path(os.path.realpath(p))) for p in inputs if p is not None]
    for outs, folder in ((files or {}, False), (folders or {}, True)):
        for opt, out in outs.items():
            if out is None:
                continue
            o = Path(os.path.realpath(out))
            for raw, i in ins:
                same = o == i or (o.exists() and Path(raw).exists() and os.path.samefile(o, raw))
                if same or (folder and o in i.parents):
                    raise InputError(out, f"{opt} {'holds' if not same else 'is'} an input "
                                     f"({raw}); inputs are never overwritten",
                                     hint=f"choose another {opt}")


def ensure_writable(folder: str | Path, what: str = "output folder") -> None:
    """Create ``folder`` (and parents) and check a file can be written in it, before any work.

    Raises:
        InputError: it cannot be created (a file in the path, a read-only parent) or written.
    """
    from ..errors import InputError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".grdkit-write-check.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InputError(folder, f"{what} is not writable: {e.strerror or e}",
                         hint="choose a writable folder") from None
