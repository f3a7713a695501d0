"""`grdkit show`: the picture holds the masks where they are, and bad input exits 2."""

import numpy as np
from PIL import Image as PILImage

import grdkit
from grdkit.export.show import TILE, render_group

from .conftest import dataset_from_dense, run_cli


def test_render_marks_ground_truth(tmp_path):
    gt = np.zeros((60, 80), bool)
    gt[10:30, 20:60] = True
    ds = dataset_from_dense([[gt, np.zeros((60, 80), bool)]])
    img = np.asarray(render_group(ds, 1, columns=2))
    scale = TILE / 80
    # a pixel inside the mask of tile 1 is green-tinted, one outside stays grey (90)
    y0 = 28 + 18
    inside = img[y0 + int(20 * scale), 6 + int(40 * scale)]
    outside = img[y0 + int(50 * scale), 6 + int(10 * scale)]
    assert inside[1] > inside[0] + 50 and tuple(outside) == (90, 90, 90)
    right = img[y0 + int(20 * scale), 6 + TILE + 6 + int(40 * scale)]
    assert tuple(right) == (90, 90, 90)  # negative tile: nothing drawn


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
    assert code == 2 and "cannot open image" in err
