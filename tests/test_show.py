"""`grdkit show`: the picture shows the masks where they are, and bad input exits 2.

The checks read the picture as a person would (where is green, where is red, what shape), not the
drawing code's offsets.
"""

import numpy as np
from PIL import Image as PILImage

import grdkit
from grdkit.export.show import TILE, render_group

from .conftest import dataset_from_dense, run_cli


def _green(img):
    r, g, b = (img[..., k].astype(int) for k in range(3))
    return (g > r + 50) & (g > b + 50)


def _red(img):
    r, g, b = (img[..., k].astype(int) for k in range(3))
    return (r > 180) & (g < 90) & (b < 90)


def _box(m):
    ys, xs = np.nonzero(m)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_render_marks_ground_truth_and_prediction():
    gt = np.zeros((60, 80), bool)
    gt[10:30, 20:60] = True                      # 40 x 20 px
    pred = np.zeros((60, 80), bool)
    pred[30:50, 10:30] = True                    # 20 x 20 px, on the negative image
    ds = dataset_from_dense([[gt, np.zeros((60, 80), bool)]])
    scale = TILE / 80
    img = np.asarray(render_group(ds, 1, columns=2))
    green = _green(img)
    # the positive (first) tile's mask is green, at the tile's scale, with the mask's shape;
    # nothing is green on the negative (second) tile
    assert abs(green.sum() / (gt.sum() * scale ** 2) - 1) < 0.1
    x0, y0, x1, y1 = _box(green)
    assert abs((x1 - x0) / (y1 - y0) - 2) < 0.15 and x1 < img.shape[1] / 2
    assert not _red(img).any()
    with_pred = np.asarray(render_group(ds, 1, predictions={1: None, 2: grdkit.masks.encode(pred)},
                                        columns=2))
    red = _red(with_pred)
    # the prediction is outlined on the second tile: a square outline, hollow inside
    x0, y0, x1, y1 = _box(red)
    assert x0 > with_pred.shape[1] / 2
    assert abs((x1 - x0) - 20 * scale) <= 2 and abs((y1 - y0) - 20 * scale) <= 2
    assert not red[(y0 + y1) // 2, (x0 + x1) // 2]
    assert red.sum() < 0.5 * (20 * scale) ** 2
    assert abs(_green(with_pred).sum() - green.sum()) <= 0.02 * green.sum()


def test_cli_show(tmp_path, capsys):
    gt = np.zeros((30, 40), bool)
    gt[5:15, 5:20] = True
    ds = dataset_from_dense([[gt, gt]])
    p = tmp_path / "val.json"
    grdkit.save_dataset(ds, p)
    out = tmp_path / "g.png"
    code, _, _ = run_cli(["show", p, "--group", 1, "--out", out], capsys)
    assert code == 0 and PILImage.open(out).size[0] > 2 * TILE
    code, _, err = run_cli(["show", p, "--group", 9, "--out", out], capsys)
    assert code == 2 and "no group 9" in err
    code, _, err = run_cli(["show", p, "--img-root", tmp_path, "--out", out], capsys)
    assert code == 2 and "image file not found" in err
