"""Image and mask files: sizes and binary masks read from PNG / JPEG files.

Mask PNGs may be grey or RGB (converted to grey, ITU-R 601-2); a pixel is foreground when its grey
value is >= ``threshold`` (default 128, which also removes the stray grey edge pixels of hand-made
masks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.images import image_size as _header_size
from ..io.images import open_image


def read_mask(path: str | Path, threshold: int = 128, size: tuple[int, int] | None = None,
              record: str | None = None) -> np.ndarray:
    """A mask file as bool ``(h, w)``: grey value >= ``threshold`` (0-255).

    Decoded through :func:`grdkit.io.images.open_image` (bounded, checked; ``size`` is checked
    from the header before decoding).

    Raises:
        InputError: the file cannot be read as an image, or is not ``size``.
    """
    with open_image(path, size, record) as im:
        return np.asarray(im.convert("L"), np.uint8) >= threshold


def positive_mask(path: str | Path, height: int, width: int, threshold: int = 128,
                  record: str | None = None) -> np.ndarray:
    """The mask of a positive image: bool ``(h, w)`` of its image's size, with foreground.

    Raises:
        InputError: unreadable, a size other than ``(height, width)`` (pixels), or no pixel with
            grey >= ``threshold``; ``record`` names the image or group in the message.
    """
    m = any_mask(path, height, width, threshold, record)
    if not m.any():
        raise InputError(path, f"mask has no foreground (grey >= {threshold})", record,
                         "fix the mask, or list the image as a negative")
    return m


def any_mask(path: str | Path, height: int, width: int, threshold: int = 128,
             record: str | None = None) -> np.ndarray:
    """The mask of an image, possibly empty: bool ``(h, w)`` of its image's size.

    Raises:
        InputError: unreadable, or a size other than ``(height, width)`` (pixels; checked from
            the header, before decoding).
    """
    h, w = _header_size(path, record)
    if (h, w) != (height, width):
        raise InputError(path, f"mask is {w}x{h}, its image is {width}x{height}", record,
                         "masks must have their image's size")
    return read_mask(path, threshold, (height, width), record)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, in pixels (header only, within grdkit's bounds:
    :func:`grdkit.io.images.image_size`).

    Raises:
        InputError: the file cannot be read as an image.
    """
    return _header_size(path)
