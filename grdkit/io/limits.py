"""Sane bounds on what an input may declare, checked before any C code (pycocotools, PIL) sees it.

Work and memory stay bounded by the input's real size only if a record cannot declare more than
it holds: an image of 100000 x 100000 pixels (past 2^32, pycocotools' ``uint`` run lengths wrap
and its C code writes out of bounds), a polygon at 1e308 (pycocotools' ``rleFrPoly`` converts
``5 * x`` to ``int``), a JSON integer of 400 digits. The bounds:

* :data:`MAX_PIXELS` = 2^28 pixels per image (e.g. 16384 x 16384; the largest benchmark images
  are a few thousand pixels a side) and :data:`MAX_SIDE` = 65535 pixels per side. At these sizes
  every run length and every delta pycocotools' ``rleToString`` writes fits in 6 characters
  (30 bits signed), so the RLE checker refuses longer tokens (:mod:`grdkit.format.rlecheck`);
* polygon coordinates within one image size beyond each border (:data:`POLY_MARGIN`);
* JSON integers below 2^63 in magnitude and finite floats (:func:`grdkit.io.loads_json`).
"""

from __future__ import annotations

MAX_PIXELS = 1 << 28  # pixels per image (height * width)
MAX_SIDE = 65535  # pixels per side
POLY_MARGIN = 1.0  # polygon coordinates in [-MARGIN * w, (1 + MARGIN) * w] (same for y, h)
MAX_JSON_INT = 1 << 63  # |int| in JSON inputs


def size_problem(height: object, width: object) -> str | None:
    """Why ``height x width`` is not a sane image size (None when it is).

    Integers >= 1, each side <= :data:`MAX_SIDE` and the area <= :data:`MAX_PIXELS`.
    """
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (height, width)):
        return f"size {height!r}x{width!r} is not two integers"
    if height < 1 or width < 1:
        return f"size {height}x{width} is not positive"
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        return (f"size {height}x{width} (h x w) exceeds grdkit's bounds ({MAX_SIDE} px a "
                f"side, {MAX_PIXELS} px in all)")
    return None
