"""Image files from an untrusted dataset: one path resolver and one checked decoder.

Every reader of an image named by a dataset record (``grdkit validate --img-root``, ``show``,
``export hf``, ``cache``, ``train``, ``predict``) goes through :func:`image_path`, which keeps
the path inside the image root: a ``file_name`` that is absolute, holds ``..``, a backslash or a
NUL, or whose resolved path leaves the root through a symlink is refused. Image bytes are opened
with :func:`open_image`, which refuses what is not a decodable image of a sane, expected size
*before* the pixels are decoded: zero-byte, non-image, corrupt and truncated files, and
decompression bombs (PIL's limit is set explicitly to :data:`~grdkit.io.limits.MAX_PIXELS`, and
the header's size is checked against it and against the recorded size first).
"""

from __future__ import annotations

import contextvars
import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from PIL import Image as PILImage

from ..errors import InputError
from .files import LIMITS, open_regular, read_bytes
from .limits import MAX_PIXELS, size_problem

# PIL warns above MAX_IMAGE_PIXELS and raises above twice it; grdkit checks the header itself
# (size_problem) before decoding, and sets PIL's own guard explicitly as a second line.
PILImage.MAX_IMAGE_PIXELS = MAX_PIXELS

# what PIL raises on unreadable, corrupt, truncated or oversized image files
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, PILImage.DecompressionBombError)


_FOLLOW_LINKS: contextvars.ContextVar[bool] = contextvars.ContextVar("follow_links",
                                                                    default=False)


def set_follow_links(on: bool) -> None:
    """Opt in (``--follow-links``) to image roots whose links lead outside them, e.g.
    ``images/coco -> /data/coco/train2014`` (a root assembled from symlinked folders for union
    training). Off by default: a dataset's ``file_name`` then cannot reach a file outside the
    root through a link. Every reader (:func:`image_path`) follows this one setting, so
    ``convert``, ``validate``, ``show``, ``export`` and the baselines agree."""
    _FOLLOW_LINKS.set(bool(on))


def follow_links() -> bool:
    """Whether links leaving the image root are followed (:func:`set_follow_links`)."""
    return _FOLLOW_LINKS.get()


def image_path(img_root: str | Path, file_name: object, record: str | None = None) -> Path:
    """The file ``img_root / file_name``, refused when it could leave the image root.

    Args:
        img_root: the image folder (``--img-root``).
        file_name: a record's relative ``file_name`` (POSIX separators).
        record: how the record is named in messages.

    Raises:
        InputError: ``file_name`` is not a non-empty string, is absolute, holds ``..``, a
            backslash or a NUL, or resolves (symlinks followed) outside ``img_root`` (unless
            :func:`set_follow_links` opted in).
    """
    root = Path(img_root)
    fix = "file_name must be a path relative to the image root, inside it"
    if not isinstance(file_name, str) or not file_name or "\0" in file_name \
            or "\\" in file_name:
        raise InputError(root, f"file_name {file_name!r} is not a relative path", record, fix)
    pp = PurePosixPath(file_name)
    if pp.is_absolute() or ".." in pp.parts or (len(file_name) > 1 and file_name[1] == ":"):
        raise InputError(root, f"file_name {file_name!r} leaves the image root", record, fix)
    path = root / file_name
    try:
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot be resolved: {e}", record) from None
    if os.path.commonpath([real_root, real]) != real_root and not follow_links():
        raise InputError(root, f"file_name {file_name!r} is a link that leaves the image root "
                         f"(to {real})", record,
                         "keep images inside --img-root, or pass --follow-links if you trust "
                         "the links of this root")
    return path


@contextmanager
def open_image(source: str | Path | bytes, size: tuple[int, int] | None = None,
               record: str | None = None, name: str | Path | None = None
               ) -> Iterator[PILImage.Image]:
    """Open an image file (or its bytes) and decode it, checking it first.

    Args:
        source: a path or the file's bytes.
        size: the expected ``(height, width)``; checked from the header, before decoding.
        record: how the record is named in messages. name: the file named in messages when
            ``source`` is bytes.

    Yields:
        The decoded (``load()``-ed) PIL image.

    Raises:
        InputError: missing, zero-byte, not an image, corrupt or truncated, a size beyond
            :func:`~grdkit.io.limits.size_problem`'s bounds, or not ``size``.
    """
    where = name if name is not None else (None if isinstance(source, bytes) else source)
    src = io.BytesIO(source) if isinstance(source, bytes) else \
        open_regular(source, "image file", LIMITS["image"], record=record)  # checked opener
    try:
        with src, warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(src) as im:
                _check_header(im, size, where, record)
                im.load()
                yield im
    except InputError:
        raise
    except (*IMAGE_ERRORS, PILImage.DecompressionBombWarning) as e:
        raise InputError(where, f"cannot be read as an image: {e}", record,
                         "replace the file with a complete image") from None


def _check_header(im: PILImage.Image, size: tuple[int, int] | None, where, record) -> None:
    w, h = im.size
    problem = size_problem(h, w)
    if problem:
        raise InputError(where, f"image {problem}", record)
    if size is not None and (h, w) != tuple(size):
        raise InputError(where, f"image is {w}x{h} (w x h), recorded {size[1]}x{size[0]}",
                         record, "fix the recorded size or the file")


def check_image_bytes(data: bytes, size: tuple[int, int] | None = None,
                      record: str | None = None, name: str | Path | None = None) -> None:
    """Check that ``data`` decodes completely as an image (see :func:`open_image`).

    JPEGs are decoded at 1/8 scale (``draft``), which still reads every byte of the file, so a
    truncated file is refused at a fraction of the cost.
    """
    src = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(src) as im:
                _check_header(im, size, name, record)
                if im.format == "JPEG":
                    im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except InputError:
        raise
    except (*IMAGE_ERRORS, PILImage.DecompressionBombWarning) as e:
        raise InputError(name, f"cannot be read as an image: {e}", record,
                         "replace the file with a complete image") from None


def read_image_file(img_root: str | Path, file_name: object, size: tuple[int, int] | None = None,
                    record: str | None = None) -> bytes:
    """The checked bytes of an image named by a record: :func:`image_path`, then
    :func:`check_image_bytes`. Raises :class:`InputError` as those do, or when unreadable."""
    path = image_path(img_root, file_name, record)
    data = read_bytes(path, "image file", "check --img-root", limit=LIMITS["image"],
                      record=record)
    check_image_bytes(data, size, record, path)
    return data


def image_size(path: str | Path, record: str | None = None) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header, within grdkit's bounds.

    Raises:
        InputError: missing, not an image, or a size beyond
            :func:`~grdkit.io.limits.size_problem`'s bounds.
    """
    try:
        with open_regular(path, "image file", LIMITS["image"], record=record) as f, \
                warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(f) as im:
                _check_header(im, None, path, record)
                return im.height, im.width
    except InputError:
        raise
    except (*IMAGE_ERRORS, PILImage.DecompressionBombWarning) as e:
        raise InputError(path, f"cannot be read as an image: {e}", record) from None
