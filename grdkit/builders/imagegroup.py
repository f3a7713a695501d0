"""A canonical GRES dataset from image files with PNG masks (e.g. a co-segmentation group).

Used for Co-SOD style groups such as MSRC "cow": every listed image with a mask is a positive
image of the expression, every listed image without one is a negative (no-target) image. Masks are
read by :func:`grdkit.sources.images.read_mask` (grey value >= ``threshold``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..format import GresDataset, masks
from ..sources.images import image_size, positive_mask
from .assemble import SplitAssembler


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
    asm = SplitAssembler()
    listed = [*positives, *((n, None) for n in negatives)]
    sizes = [image_size(root / img) for img, _ in listed]
    for k, ((img, _), (h, w)) in enumerate(zip(listed, sizes), start=1):
        asm.add_image(k, str(img), h, w)
    asm.add_group(1, [(1, expression, {})], range(1, len(listed) + 1),
                  {"num_positive": len(positives), "num_negative": len(negatives)})
    for k, (img, msk) in enumerate(listed, start=1):
        if msk is None:
            asm.add_target(1, k)
            continue
        h, w = sizes[k - 1]
        m = positive_mask(root / msk, h, w, threshold, f"image {img}")
        asm.add_target(1, k, mask=masks.encode(m))
    return asm.dataset(name, split, {"source": "image files + PNG masks",
                                     "threshold": threshold}, {})
