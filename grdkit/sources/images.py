"""Image and mask files: sizes and binary masks read from PNG / JPEG files.

Mask PNGs may be grey or RGB (converted to grey, ITU-R 601-2); a pixel is foreground when its grey
value is >= ``threshold`` (default 128, which also removes the stray grey edge pixels of hand-made
masks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from ..errors import InputError

# what PIL raises on unreadable, corrupt or oversized image files
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError)


def read_mask(path: str | Path, threshold: int = 128) -> np.ndarray:
    """A mask file as bool ``(h, w)``: grey value >= ``threshold`` (0-255).

    Raises:
        InputError: the file cannot be read as an image.
    """
    try:
        with PILImage.open(path) as im:
            return np.asarray(im.convert("L"), np.uint8) >= threshold
    except IMAGE_ERRORS as e:
        raise InputError(path, f"cannot be read as a mask image: {e}") from None


def positive_mask(path: str | Path, height: int, width: int, threshold: int = 128,
                  record: str | None = None) -> np.ndarray:
    """The mask of a positive image: bool ``(h, w)`` of its image's size, with foreground.

    Raises:
        InputError: unreadable, a size other than ``(height, width)`` (pixels), or no pixel with
            grey >= ``threshold``; ``record`` names the image or group in the message.
    """
    m = read_mask(path, threshold)
    if m.shape != (height, width):
        raise InputError(path, f"mask is {m.shape[1]}x{m.shape[0]}, its image is "
                         f"{width}x{height}", record, "masks must have their image's size")
    if not m.any():
        raise InputError(path, f"mask has no foreground (grey >= {threshold})", record,
                         "fix the mask, or list the image as a negative")
    return m


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, in pixels (header only).

    Raises:
        InputError: the file cannot be read as an image.
    """
    try:
        with PILImage.open(path) as im:
            return im.height, im.width
    except IMAGE_ERRORS as e:
        raise InputError(path, f"cannot be read as an image: {e}") from None
