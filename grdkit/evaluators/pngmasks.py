"""Prediction masks as PNG files: listing ``<expression_id>/<image_id>.png`` and reading each.

One reader for every PNG a submission may hold, so no mode is silently misread:

* ``L`` (8-bit grey) as is; ``1`` as 0 / 255; ``RGB`` converted to grey (ITU-R 601-2);
* ``P`` (palette): a grey palette is read through it; a colour palette (VOC style: index 0
  background, index k an object in colour k) is read by index, foreground where the index is not
  0, and refused when it uses more than one object index (which one is the referent?);
* ``RGBA`` / ``LA``: opaque images are read by colour; an image whose colour is one flat value
  with the object in the alpha channel is read from alpha; both varying is refused;
* every other mode (16-bit, float, CMYK ...) is refused.

The size is checked from the header against the image's before any pixel is decoded (a PNG
declaring 50000 x 50000 pixels is refused unread, :func:`grdkit.io.images.open_image`).

Listing follows symlinked expression folders, refuses anything that is not
``<int>/<int>.png``, and refuses two files naming one pair (``1/1.png`` beside ``1/01.png``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.files import check_regular
from ..io.images import image_size, open_image

_INT = re.compile(r"-?\d+")
_PNG = re.compile(r"(-?\d+)\.png")


def list_mask_pngs(root: Path, skip: tuple[Path, ...] = ()) -> list[tuple[int, int, Path]]:
    """``(expression_id, image_id, path)`` of every ``<e>/<i>.png`` under ``root``, sorted;
    the files named in ``skip`` (e.g. a sidecar) are passed over.

    Raises:
        InputError: a file or folder that is not ``<int>/<int>.png``, or two files of one pair.
    """
    fix = "remove files that are not prediction masks"
    seen: dict[tuple[int, int], Path] = {}
    out = []
    for d in sorted(root.iterdir()):
        if d in skip:
            continue
        rel = d.relative_to(root)
        if not d.is_dir() or not _INT.fullmatch(d.name):  # is_dir follows symlinks
            raise InputError(d, "is not <expression_id>/<image_id>.png", f"file {rel}", fix)
        for f in sorted(d.iterdir()):
            rel = f.relative_to(root)
            m = _PNG.fullmatch(f.name)
            if m and not f.is_dir():  # a FIFO or a device named like a mask: said so
                check_regular(f, "prediction mask", record=f"file {rel}")
            if not m or not f.is_file():
                raise InputError(f, "is not <expression_id>/<image_id>.png", f"file {rel}", fix)
            key = (int(d.name), int(m.group(1)))
            if key in seen:
                raise InputError(f, f"names the same pair (expression_id {key[0]}, image_id "
                                 f"{key[1]}) as {seen[key].relative_to(root)}", f"file {rel}",
                                 "keep one file per pair")
            seen[key] = f
            out.append((*key, f))
    return out


def read_mask_png(path: Path, h: int, w: int, where: str) -> np.ndarray:
    """One prediction PNG as uint8 ``(h, w)`` in 0-255 (see the module header for modes).

    Raises:
        InputError: unreadable, a size other than ``(h, w)`` (checked before decoding), or a
            mode / palette / alpha layout that cannot be read unambiguously.
    """
    ph, pw = image_size(path, where)  # header only: nothing decoded yet
    if (ph, pw) != (h, w):
        raise InputError(path, f"mask is {pw}x{ph} (w x h), the image is {w}x{h}", where,
                         "save masks at the image's original resolution")
    with open_image(path, (h, w), where) as im:
        mode = im.mode
        if mode in ("L", "1", "RGB"):
            return np.asarray(im.convert("L"), np.uint8)
        if mode == "P":
            return _palette(im, path, where)
        if mode in ("RGBA", "LA"):
            return _alpha(im, path, where)
    raise InputError(path, f"unsupported PNG mode {mode}", where, "save 8-bit grey masks")


def _palette(im, path: Path, where: str) -> np.ndarray:
    idx = np.asarray(im, np.uint8)
    pal = np.asarray(im.getpalette() or [], np.int64).reshape(-1, 3)
    used = np.unique(idx)
    if used.size and used.max() < len(pal) and (pal[used, 0] == pal[used, 1]).all() \
            and (pal[used, 1] == pal[used, 2]).all():
        return pal[idx, 0].astype(np.uint8)  # a grey palette: the grey values
    objects = used[used != 0]
    if objects.size > 1:
        raise InputError(path, f"palette PNG uses {objects.size} object indices "
                         f"{objects[:5].tolist()}; which one is the referent is ambiguous",
                         where, "save a binary mask (index 0 background, one object index)")
    return np.where(idx != 0, 255, 0).astype(np.uint8)


def _alpha(im, path: Path, where: str) -> np.ndarray:
    a = np.asarray(im.getchannel("A"), np.uint8)
    grey = np.asarray(im.convert("L"), np.uint8)
    if (a == 255).all():
        return grey
    if (grey == grey.flat[0]).all():
        return a  # the object drawn in the alpha channel
    raise InputError(path, f"{im.mode} PNG varies in both colour and alpha; which one is the "
                     "mask is ambiguous", where, "save 8-bit grey masks")
