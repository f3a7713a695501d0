"""Pictures of a group: every image of one expression's group with its mask (and a prediction).

Rendered with Pillow: a grid of tiles, each the image (or a grey canvas when no image root is
given) with the ground-truth mask tinted green, an optional predicted mask outlined in red (the
outline is scikit-image's ``find_boundaries``, inner mode, 2 px thick), and a caption with the image
id and its label (positive / negative, and TP / TN / FP / FN with predictions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from ..format import GresDataset, masks
from ..io.images import image_path, open_image

TILE = 240  # tile width in pixels
GT_RGB = np.array([40, 200, 80], np.float32)
PRED_RGB = (230, 40, 40)


CAPTION = 160  # characters of an expression shown in the header (the sheet is narrower)


def _cut(text: str, n: int = CAPTION) -> str:
    """User text bounded for drawing: PIL refuses text past 1M characters (ValueError) and
    lays out every character it is given, whatever the sheet's width."""
    return text if len(text) <= n else text[:n - 3] + "..."


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str) -> None:
    """Draw ``text`` with PIL's default font; characters that font cannot encode (the bitmap
    fallback is Latin-1 only) are drawn as ``\\u`` escapes instead of raising."""
    font = ImageFont.load_default()
    try:
        draw.text(xy, text, fill="black", font=font)
    except UnicodeEncodeError:
        draw.text(xy, text.encode("latin-1", "backslashreplace").decode("latin-1"),
                  fill="black", font=font)


def _tile(ds: GresDataset, eid: int, iid: int, img_root: Path | None,
          pred: dict | None, has_pred: bool) -> PILImage.Image:
    im = ds.image(iid)
    t = ds.target(eid, iid)
    if img_root is not None:
        p = image_path(img_root, im.file_name, f"image id {iid}")
        with open_image(p, (im.height, im.width), f"image id {iid}") as f:
            base = np.asarray(f.convert("RGB"), np.float32)
    else:
        base = np.full((im.height, im.width, 3), 90, np.float32)
    gt = masks.decode(t.segmentation).astype(bool)
    base[gt] = 0.45 * base[gt] + 0.55 * GT_RGB
    tile = PILImage.fromarray(base.clip(0, 255).astype(np.uint8))
    pred_pos = False
    if pred is not None:
        pm = masks.decode(pred).astype(bool)
        pred_pos = bool(pm.any())
        from skimage.segmentation import find_boundaries

        # inner boundary, then one more pixel inwards: a 2 px outline inside the predicted mask
        edge = find_boundaries(pm, mode="inner")
        edge |= find_boundaries(pm & ~edge, mode="inner")
        arr = np.asarray(tile).copy()
        arr[edge] = PRED_RGB
        tile = PILImage.fromarray(arr)
    scale = TILE / im.width
    tile = tile.resize((TILE, max(1, round(im.height * scale))), PILImage.BILINEAR)
    label = "positive" if t.positive else "negative"
    if has_pred:
        label = {(True, True): "TP", (False, False): "TN", (False, True): "FP",
                 (True, False): "FN"}[(t.positive, pred_pos)] + f" ({label})"
    canvas = PILImage.new("RGB", (TILE, tile.height + 18), "white")
    canvas.paste(tile, (0, 18))
    _text(ImageDraw.Draw(canvas), (3, 3), f"{iid}: {label}")
    return canvas


def render_group(ds: GresDataset, expression_id: int, img_root: str | Path | None = None,
                 predictions: dict[int, dict | None] | None = None, columns: int = 4
                 ) -> PILImage.Image:
    """Grid picture of one expression over its group.

    Args:
        ds: the dataset.
        expression_id: which expression (its group's images are shown).
        img_root: image folder; None draws masks on grey canvases.
        predictions: ``{image_id: RLE or None}`` for this expression, outlined in red.
        columns: tiles per row.

    Returns:
        An RGB ``PIL.Image``.

    Raises:
        KeyError: unknown expression id. InputError: unreadable or wrongly sized image.
    """
    ds.require_complete()
    e = ds.expression(expression_id)
    g = ds.group(e.group_id)
    root = Path(img_root) if img_root is not None else None
    tiles = [_tile(ds, expression_id, i, root, (predictions or {}).get(i),
                   predictions is not None) for i in g.image_ids]
    rows = -(-len(tiles) // columns)
    row_h = [max(t.height for t in tiles[r * columns:(r + 1) * columns]) for r in range(rows)]
    header = 28
    sheet = PILImage.new("RGB", (columns * (TILE + 6) + 6, header + sum(h + 6 for h in row_h)),
                         (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    n_pos = sum(ds.target(expression_id, i).positive for i in g.image_ids)
    _text(draw, (6, 8), f'"{_cut(e.text)}"  (group {g.id}: {n_pos} positive, '
          f"{len(g.image_ids) - n_pos} negative; green = ground truth"
          f"{', red = prediction' if predictions is not None else ''})")
    y = header
    for r in range(rows):
        for c, t in enumerate(tiles[r * columns:(r + 1) * columns]):
            sheet.paste(t, (6 + c * (TILE + 6), y))
        y += row_h[r] + 6
    return sheet
