"""A canonical GRES dataset from image files with PNG masks (e.g. a co-segmentation group).

Used for Co-SOD style groups such as MSRC "cow": every listed image with a mask is a positive
image of the expression, every listed image without one is a negative (no-target) image.
Mask PNGs may be grey or RGB; a pixel is foreground when its grey value is >= ``threshold``
(default 128, which also removes the stray grey edge pixels of hand-made masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from . import __version__, masks
from .dataset import Expression, GresDataset, Group, Image, Target
from .errors import InputError


def read_mask(path: str | Path, threshold: int = 128) -> np.ndarray:
    """Read a mask PNG as bool ``(h, w)``: grey value (ITU-R 601-2 for RGB) >= ``threshold``."""
    try:
        with PILImage.open(path) as im:
            return np.asarray(im.convert("L"), np.uint8) >= threshold
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot be read as a mask image: {e}") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, in pixels."""
    try:
        with PILImage.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot be read as an image: {e}") from None


def group_from_files(root: str | Path, expression: str,
                     positives: Sequence[tuple[str, str]], negatives: Sequence[str] = (),
                     name: str = "image-group", split: str = "test", threshold: int = 128
                     ) -> GresDataset:
    """One group, one expression, over the given images.

    Args:
        root: image root; every path below is relative to it (it becomes ``file_name``).
        expression: the referring expression (e.g. ``"cow"``).
        positives: ``(image path, mask path)`` pairs.
        negatives: image paths with no target.
        name, split: written to ``info``.
        threshold: mask binarisation threshold (0-255).

    Returns:
        A :class:`GresDataset` with image ids 1..N in the given order (positives first).

    Raises:
        InputError: unreadable image or mask, a mask whose size differs from its image, or an
            empty mask for a positive image.
    """
    root = Path(root)
    images, targets = [], []
    for k, (img, msk) in enumerate([*positives, *((n, None) for n in negatives)], start=1):
        h, w = image_size(root / img)
        images.append(Image(k, str(img), h, w))
        if msk is None:
            targets.append(Target(1, k, False, masks.empty_rle(h, w), ()))
            continue
        m = read_mask(root / msk, threshold)
        if m.shape != (h, w):
            raise InputError(root / msk, f"mask is {m.shape[1]}x{m.shape[0]}, image {img} is "
                             f"{w}x{h}", hint="masks must have their image's size")
        if not m.any():
            raise InputError(root / msk, "mask is empty for a positive image",
                             hint="list the image as a negative instead")
        targets.append(Target(1, k, True, masks.encode(m), ()))
    info = {"name": name, "split": split, "grdkit_version": __version__,
            "recipe": {"source": "image files + PNG masks", "threshold": threshold},
            "sources": {}}
    group = Group(1, (1,), tuple(im.id for im in images),
                  {"num_positive": len(positives), "num_negative": len(negatives)})
    return GresDataset(info, images, [Expression(1, expression, 1)], [group], targets)
