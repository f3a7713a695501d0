"""Pictures of a group: every image of one expression's group with its mask (and a prediction).

Rendered with Pillow: a grid of tiles, each the image (or a grey canvas when no image root is
given) with the ground-truth mask tinted green, an optional predicted mask outlined in red (the
outline is scikit-image's ``find_boundaries``, inner mode, 2 px thick, with the image border
counted as outside so that a mask filling the image is outlined too), and a caption with the
image id and its label (positive / negative; with predictions the outcome TP / TN / FP on a
negative / FN on a positive, and the IoU on positives). A prediction covering at least
:data:`FULL_COVER` of the image is tinted orange, framed and captioned "WHOLE IMAGE".
:func:`pair_picture` draws one pair (also for the HTML report, which fills the prediction and
outlines the ground truth instead).
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
FULL_RGB = np.array([255, 150, 0], np.float32)  # tint and frame of a whole-image prediction
# a prediction covering at least this share of the image is drawn as "whole image": tinted and
# framed, since its outline would run along the tile's border (grdkit's choice, issue 28)
FULL_COVER = 0.95
PRED_LEGEND = ", red = prediction, orange frame = it covers the whole image"


def _outline(m: np.ndarray) -> np.ndarray:
    """A 2 px outline just inside mask ``m``; the image border counts as outside, so a mask
    that fills the image is outlined along the border (scikit-image's ``find_boundaries``)."""
    from skimage.segmentation import find_boundaries

    padded = np.pad(m, 1)
    edge = find_boundaries(padded, mode="inner")
    edge |= find_boundaries(padded & ~edge, mode="inner")
    return edge[1:-1, 1:-1]


def caption(outcome: str | None, iou: float | None, positive: bool) -> str:
    """The words under a tile: the outcome and, on a positive, the IoU (0-1)."""
    if outcome is None:
        return "positive" if positive else "negative"
    words = {"TP": "TP", "TN": "TN (negative)", "FP": "FP on a negative",
             "FN": "FN (missed positive)"}[outcome]
    if positive and iou is not None:
        words += f"  IoU {iou:.2f}"
    return words


def pair_picture(base: np.ndarray, gt: np.ndarray, pred: np.ndarray | None,
                 fill_pred: bool = False, whole: bool | None = None
                 ) -> tuple[PILImage.Image, bool]:
    """One pair drawn over its image.

    Args:
        base: float32 ``(H, W, 3)`` RGB in 0-255 (the image, or a grey canvas).
        gt: bool ``(H, W)`` ground truth. pred: bool ``(H, W)`` prediction or None.
        fill_pred: ``True`` (the HTML report): the ground truth outlined in green, the
            prediction filled in translucent red; ``False`` (``grdkit show``): the ground truth
            tinted green, the prediction outlined in red.
        whole: whether the prediction covers the whole image, when the caller knows it from
            the full-resolution mask (a picture drawn from shrunk masks); None: from ``pred``.

    Returns:
        ``(picture, whole)``: the RGB picture at the image's size, and whether the prediction
        covers at least :data:`FULL_COVER` of the image (then tinted orange and framed).
    """
    base = base.copy()
    if whole is None:
        whole = pred is not None and pred.mean() >= FULL_COVER
    if fill_pred:
        if pred is not None:
            base[pred] = 0.5 * base[pred] + 0.5 * np.array(PRED_RGB, np.float32)
        base[_outline(gt)] = GT_RGB
    else:
        base[gt] = 0.45 * base[gt] + 0.55 * GT_RGB
        if pred is not None:
            base[_outline(pred)] = PRED_RGB
    if whole:
        base = 0.7 * base + 0.3 * FULL_RGB
        f = max(3, min(base.shape[:2]) // 40)
        base[:f], base[-f:], base[:, :f], base[:, -f:] = FULL_RGB, FULL_RGB, FULL_RGB, FULL_RGB
    return PILImage.fromarray(base.clip(0, 255).astype(np.uint8)), bool(whole)


def load_base(ds: GresDataset, iid: int, img_root: Path | None) -> np.ndarray:
    """The image of ``iid`` as float32 RGB ``(H, W, 3)``, or a grey canvas without a root.

    Raises:
        InputError: unreadable, missing or wrongly sized image (:mod:`grdkit.io.images`).
    """
    im = ds.image(iid)
    if img_root is None:
        return np.full((im.height, im.width, 3), 90, np.float32)
    p = image_path(img_root, im.file_name, f"image id {iid}")
    with open_image(p, (im.height, im.width), f"image id {iid}") as f:
        return np.asarray(f.convert("RGB"), np.float32)


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
          pred: dict | None, has_pred: bool, score: tuple | None = None) -> PILImage.Image:
    im = ds.image(iid)
    t = ds.target(eid, iid)
    gt = masks.decode(t.segmentation).astype(bool)
    pm = masks.decode(pred).astype(bool) if pred is not None else None
    tile, whole = pair_picture(load_base(ds, iid, img_root), gt, pm)
    pred_pos = bool(pm is not None and pm.any())
    scale = TILE / im.width
    tile = tile.resize((TILE, max(1, round(im.height * scale))), PILImage.BILINEAR)
    if score is not None:
        outcome, iou = score
    elif has_pred:
        outcome, iou = {(True, True): "TP", (False, False): "TN", (False, True): "FP",
                        (True, False): "FN"}[(t.positive, pred_pos)], None
    else:
        outcome, iou = None, None
    label = caption(outcome, iou, t.positive) + ("  WHOLE IMAGE" if whole else "")
    canvas = PILImage.new("RGB", (TILE, tile.height + 18), "white")
    canvas.paste(tile, (0, 18))
    _text(ImageDraw.Draw(canvas), (3, 3), f"{iid}: {label}")
    return canvas


def render_group(ds: GresDataset, expression_id: int, img_root: str | Path | None = None,
                 predictions: dict[int, dict | None] | None = None, columns: int = 4,
                 scores: dict[int, tuple[str, float]] | None = None) -> PILImage.Image:
    """Grid picture of one expression over its group.

    Args:
        ds: the dataset.
        expression_id: which expression (its group's images are shown).
        img_root: image folder; None draws masks on grey canvases.
        predictions: ``{image_id: RLE or None}`` for this expression, outlined in red.
        columns: tiles per row.
        scores: ``{image_id: (outcome, IoU 0-1)}`` as the evaluator scored them (e.g. the
            per-pair rows of :mod:`grdkit.evaluators.pairs`), printed on each tile; without
            them the outcome follows from the mask (empty = no target) and no IoU is printed.

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
                   predictions is not None, (scores or {}).get(i)) for i in g.image_ids]
    rows = -(-len(tiles) // columns)
    row_h = [max(t.height for t in tiles[r * columns:(r + 1) * columns]) for r in range(rows)]
    header = 28
    sheet = PILImage.new("RGB", (columns * (TILE + 6) + 6, header + sum(h + 6 for h in row_h)),
                         (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    n_pos = sum(ds.target(expression_id, i).positive for i in g.image_ids)
    _text(draw, (6, 8), f'"{_cut(e.text)}"  (group {g.id}: {n_pos} positive, '
          f"{len(g.image_ids) - n_pos} negative; green = ground truth"
          f"{PRED_LEGEND if predictions is not None else ''})")
    y = header
    for r in range(rows):
        for c, t in enumerate(tiles[r * columns:(r + 1) * columns]):
            sheet.paste(t, (6 + c * (TILE + 6), y))
        y += row_h[r] + 6
    return sheet
