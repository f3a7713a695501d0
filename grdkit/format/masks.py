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
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ..io.limits import POLY_MARGIN, size_problem
from .rlecheck import rle_problem

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


POLY_TOL_PX = 1.0  # a polygon may reach this far beyond the image border (pixels)


def polygon_problems(polygons: Any, height: int, width: int, geometry: bool = True
                     ) -> Iterator[tuple[int | None, str, str, str]]:
    """Every problem of a COCO polygon segmentation, as ``(part, kind, severity, message)``.

    Args:
        polygons: list of parts, each a flat list ``[x1, y1, x2, y2, ...]`` in pixels.
        height, width: image size in pixels.
        geometry: also check each part's geometry with shapely (slower): ``polygon_outside``
            (beyond the image by more than :data:`POLY_TOL_PX`), ``polygon_zero_area`` (errors)
            and ``polygon_invalid`` (self-intersection with its location; a warning, since
            rasterisation stays well defined).

    Yields:
        ``part`` is the part index (None for the whole segmentation). Structural errors, always
        checked: ``polygon_points`` (no parts, not a list, an odd number of coordinates or fewer
        than 3 points: pycocotools would silently read a 4-number part as a box),
        ``polygon_nonfinite`` and ``polygon_range`` (a coordinate more than one image size
        beyond the border, :data:`grdkit.io.limits.POLY_MARGIN`: pycocotools' ``rleFrPoly``
        walks every pixel of the outline at 5x, so the work must stay bounded by the image).
        The builders raise the first error; ``grdkit validate`` lists all.
    """
    if not isinstance(polygons, list) or not polygons:
        yield None, "polygon_points", "error", "polygon segmentation has no parts"
        return
    for k, part in enumerate(polygons):
        if not isinstance(part, (list, tuple)):
            yield k, "polygon_points", "error", f"polygon part {k} is not a list of coordinates"
            continue
        if len(part) % 2:
            yield k, "polygon_points", "error", (
                f"polygon part {k} has an odd number of coordinates ({len(part)})")
            continue
        if len(part) < 6:
            yield k, "polygon_points", "error", (
                f"polygon part {k} has {len(part) // 2} points; at least 3 are needed")
            continue
        if not _all_finite(part):
            bad = next((v for v in part if isinstance(v, bool)
                        or not isinstance(v, (int, float)) or not math.isfinite(v)), None)
            yield k, "polygon_nonfinite", "error", (
                f"polygon part {k} has a non-finite or non-numeric coordinate {bad!r}")
            continue
        xs, ys = part[0::2], part[1::2]
        mx, my = POLY_MARGIN * width, POLY_MARGIN * height
        if (min(xs) < -mx or max(xs) > width + mx or min(ys) < -my
                or max(ys) > height + my):
            yield k, "polygon_range", "error", (
                f"polygon part {k} reaches x in [{min(xs)}, {max(xs)}], y in [{min(ys)}, "
                f"{max(ys)}], far outside the {width}x{height} image")
            continue
        if geometry:
            yield from ((k, *p) for p in _geometry_problems(part, height, width))


def _all_finite(part) -> bool:
    try:
        return all(map(math.isfinite, part)) and not any(isinstance(v, bool) for v in part)
    except TypeError:
        return False


def _geometry_problems(part, h: int, w: int) -> Iterator[tuple[str, str, str]]:
    from shapely.geometry import Polygon
    from shapely.validation import explain_validity, make_valid

    xs, ys = part[0::2], part[1::2]
    if (min(xs) < -POLY_TOL_PX or max(xs) > w + POLY_TOL_PX or min(ys) < -POLY_TOL_PX
            or max(ys) > h + POLY_TOL_PX):
        yield "polygon_outside", "error", (
            f"x in [{min(xs)}, {max(xs)}], y in [{min(ys)}, {max(ys)}] outside the {w}x{h} image")
    poly = Polygon(list(zip(xs, ys)))
    # a bow-tie's signed parts cancel in poly.area: measure the repaired geometry instead
    if make_valid(poly).area == 0:
        yield "polygon_zero_area", "error", "polygon has zero area"
    elif not poly.is_valid:
        yield "polygon_invalid", "warning", explain_validity(poly)


def to_rle(segmentation: Any, height: int, width: int) -> RLE:
    """Convert a COCO segmentation (polygons, uncompressed or compressed RLE) to compressed RLE.

    Args:
        segmentation: see the module header.
        height, width: image size in pixels (> 0).

    Returns:
        ``{"size": [height, width], "counts": str}``; several polygon parts are merged into one.

    Raises:
        MaskError: a structurally invalid polygon (see :func:`polygon_problems`), RLE whose size differs from ``(height, width)``, or an
            unknown segmentation type.
    """
    problem = size_problem(height, width)
    if problem:
        raise MaskError(f"image {problem}")
    if isinstance(segmentation, list):
        for _, _, _, message in polygon_problems(segmentation, height, width, geometry=False):
            raise MaskError(message)
        parts = mask_utils.frPyObjects([[float(v) for v in p] for p in segmentation], height,
                                       width)
        return _to_py(mask_utils.merge(parts) if len(parts) > 1 else parts[0])
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        try:
            size = [int(s) for s in segmentation["size"]]
        except (TypeError, ValueError):
            raise MaskError(f"RLE size {segmentation['size']!r} is not [height, width]") from None
        if size != [height, width]:
            raise MaskError(f"RLE size {size} differs from the image size [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                       for c in counts):
                raise MaskError("uncompressed RLE counts must be non-negative integers")
            if sum(counts) != height * width:
                raise MaskError(f"uncompressed RLE counts sum to {sum(counts)}, "
                                f"not height*width = {height * width}")
            return _to_py(mask_utils.frPyObjects(segmentation, height, width))
        if isinstance(counts, (str, bytes)):
            problem = rle_problem(counts, (height, width))
            if problem:  # checked before pycocotools reads it (it does not check)
                raise MaskError(f"compressed RLE {problem}")
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


AREA_TOL_REL, AREA_TOL_PX, BBOX_TOL_PX = 0.02, 2.0, 2.0


def area_agrees(recorded: Any, area_px: int) -> bool:
    """A recorded ``area`` agrees with the mask's pixel count within 2% + 2 px (False when it is
    not a number). COCO's ``area`` of a polygon is the polygon's area, not the raster's."""
    try:
        return abs(float(recorded) - area_px) <= AREA_TOL_PX + AREA_TOL_REL * area_px
    except (TypeError, ValueError):
        return False


def bbox_agrees(recorded: Any, mask_bbox: np.ndarray) -> bool:
    """A recorded ``[x, y, w, h]`` agrees with the mask's box within 2 px per coordinate."""
    try:
        return all(abs(float(a) - float(b)) <= BBOX_TOL_PX
                   for a, b in zip(recorded, mask_bbox, strict=True))
    except (TypeError, ValueError):
        return False
