"""Segmentation masks as COCO compressed RLE, through pycocotools.

Contract: every mask grdkit stores or exchanges is a COCO *compressed* RLE
``{"size": [height, width], "counts": str}`` (column-major, as pycocotools writes it). Inputs in the
three COCO forms are accepted:

* polygons: ``[[x1, y1, x2, y2, ...], ...]`` (one list per part, pixel coordinates, >= 3 points);
* uncompressed RLE (COCO crowd annotations): ``{"size": [h, w], "counts": [int, ...]}``;
* compressed RLE: ``{"size": [h, w], "counts": str | bytes}``.

Rasterisation, union and area are pycocotools' (the reference implementation every COCO-derived
benchmark uses), so masks agree bit for bit with ``COCO.annToMask``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

RLE = dict  # {"size": [h, w], "counts": str}


class MaskError(ValueError):
    """A segmentation cannot be turned into a mask; the message says why."""


def _to_c(rle: dict) -> dict:
    """Return a pycocotools-ready RLE (counts as bytes)."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def _to_py(rle: dict) -> RLE:
    """Return a JSON-ready RLE (counts as str)."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def check_polygons(polygons: Any, height: int, width: int) -> None:
    """Check COCO polygons before rasterisation.

    Args:
        polygons: list of parts, each a flat list ``[x1, y1, ...]`` in pixels.
        height, width: image size in pixels.

    Raises:
        MaskError: no parts, a part with an odd number of coordinates or fewer than 3 points,
            or a non-finite coordinate. (pycocotools would silently read a 4-number part as a
            bounding box, hence the explicit check.)
    """
    if not isinstance(polygons, list) or not polygons:
        raise MaskError("polygon segmentation has no parts")
    for k, part in enumerate(polygons):
        if not isinstance(part, (list, tuple)):
            raise MaskError(f"polygon part {k} is not a list of coordinates")
        if len(part) % 2:
            raise MaskError(f"polygon part {k} has an odd number of coordinates ({len(part)})")
        if len(part) < 6:
            raise MaskError(f"polygon part {k} has {len(part) // 2} points; at least 3 are needed")
        try:
            finite = all(map(math.isfinite, part))
        except TypeError:
            finite = False
        if not finite or any(isinstance(v, bool) for v in part):
            bad = next((v for v in part if isinstance(v, bool) or not isinstance(v, (int, float))
                        or not math.isfinite(v)), None)
            raise MaskError(f"polygon part {k} has a non-finite or non-numeric coordinate {bad!r}")


def to_rle(segmentation: Any, height: int, width: int) -> RLE:
    """Convert a COCO segmentation (polygons, uncompressed or compressed RLE) to compressed RLE.

    Args:
        segmentation: see the module header.
        height, width: image size in pixels (> 0).

    Returns:
        ``{"size": [height, width], "counts": str}``; several polygon parts are merged into one.

    Raises:
        MaskError: invalid polygon, RLE whose size differs from ``(height, width)``, or an
            unknown segmentation type.
    """
    if height <= 0 or width <= 0:
        raise MaskError(f"image size {height}x{width} is not positive")
    if isinstance(segmentation, list):
        check_polygons(segmentation, height, width)
        parts = mask_utils.frPyObjects([[float(v) for v in p] for p in segmentation], height,
                                       width)
        return _to_py(mask_utils.merge(parts) if len(parts) > 1 else parts[0])
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(s) for s in segmentation["size"]]
        if size != [height, width]:
            raise MaskError(f"RLE size {size} differs from the image size [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if sum(counts) != height * width:
                raise MaskError(f"uncompressed RLE counts sum to {sum(counts)}, "
                                f"not height*width = {height * width}")
            return _to_py(mask_utils.frPyObjects(segmentation, height, width))
        if isinstance(counts, (str, bytes)):
            return _to_py(_to_c(segmentation))
    raise MaskError(f"unknown segmentation type {type(segmentation).__name__}")


def union(rles: list[RLE]) -> RLE:
    """Pixel-wise union (OR) of compressed RLEs of one size; a single RLE is returned as is."""
    if not rles:
        raise MaskError("union of no masks")
    if len(rles) == 1:
        return _to_py(rles[0])
    return _to_py(mask_utils.merge([_to_c(r) for r in rles], intersect=0))


def intersection(a: RLE, b: RLE) -> RLE:
    """Pixel-wise intersection (AND) of two compressed RLEs of one size."""
    return _to_py(mask_utils.merge([_to_c(a), _to_c(b)], intersect=1))


@lru_cache(maxsize=4096)
def _empty_counts(height: int, width: int) -> str:
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": [height * width]},
                                 height, width)
    return rle["counts"].decode("ascii")


def empty_rle(height: int, width: int) -> RLE:
    """The all-zero mask of ``height x width`` pixels as compressed RLE."""
    return {"size": [int(height), int(width)], "counts": _empty_counts(int(height), int(width))}


def area(rle: RLE) -> int:
    """Foreground pixel count of a compressed RLE."""
    return int(mask_utils.area(_to_c(rle)))


def bbox(rle: RLE) -> np.ndarray:
    """Bounding box ``[x, y, width, height]`` (float64, pixels) of a compressed RLE's mask."""
    return mask_utils.toBbox(_to_c(rle))


def decode(rle: RLE) -> np.ndarray:
    """Decode a compressed RLE to a ``uint8`` array of shape ``(height, width)`` with values 0/1."""
    return np.ascontiguousarray(mask_utils.decode(_to_c(rle)))


def encode(mask: np.ndarray) -> RLE:
    """Encode a binary mask (any dtype, shape ``(height, width)``, nonzero = foreground)."""
    m = np.asfortranarray((np.asarray(mask) != 0).astype(np.uint8))
    if m.ndim != 2:
        raise MaskError(f"mask must be 2-D, got shape {m.shape}")
    return _to_py(mask_utils.encode(m))
