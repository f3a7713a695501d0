"""`grdkit show` with scores (issue 28 §3): IoU and outcome per tile, whole-image predictions
visibly tinted and outlined, --worst N groups, a built folder as input."""

import json

import numpy as np
from PIL import Image as PILImage

import grdkit
from grdkit.export.show import FULL_RGB, TILE, caption, render_group

from .conftest import dataset_from_dense, run_cli


def _orange(img):
    r, g, b = (img[..., k].astype(int) for k in range(3))
    return (abs(r - int(FULL_RGB[0])) < 30) & (abs(g - int(FULL_RGB[1])) < 30) & (b < 60)


def _red(img):
    r, g, b = (img[..., k].astype(int) for k in range(3))
    return (r > 180) & (g < 90) & (b < 90)


def test_whole_image_prediction_is_outlined_and_tinted():
    """The LTS case of the issue: a mask filling the tile used to leave no visible edge."""
    gt = np.zeros((60, 80), bool)
    gt[10:30, 20:60] = True
    ds = dataset_from_dense([[gt, np.zeros((60, 80), bool)]])
    full = grdkit.masks.encode(np.ones((60, 80), bool))
    none = np.asarray(render_group(ds, 1, predictions={1: None, 2: None}, columns=2))
    img = np.asarray(render_group(ds, 1, predictions={1: full, 2: full}, columns=2))
    half = img.shape[1] // 2
    # each tile is framed in orange, tinted (more orange pixels than without the prediction)
    # and outlined in red along its border
    for sl in (slice(0, half), slice(half, None)):
        assert _orange(img[:, sl]).sum() > 0.08 * TILE * TILE * 0.75
        assert _orange(none[:, sl]).sum() == 0
    # the negative tile's colours moved towards orange: the mean red-minus-blue rose
    tile2 = img[40:, half + 10:-10].astype(int)
    base2 = none[40:, half + 10:-10].astype(int)
    assert (tile2[..., 0] - tile2[..., 2]).mean() > (base2[..., 0] - base2[..., 2]).mean() + 40


def test_caption_says_outcome_and_iou():
    assert caption("TP", 0.4567, True) == "TP  IoU 0.46"
    assert caption("FN", 0.0, True) == "FN (missed positive)  IoU 0.00"
    assert caption("FP", 0.0, False) == "FP on a negative"
    assert caption("TN", 1.0, False) == "TN (negative)"
    assert caption(None, None, True) == "positive"


def _two_groups(tmp_path):
    """Group 1 predicted perfectly, group 2 with a whole-image false alarm and a miss."""
    a = np.zeros((30, 40), bool)
    a[5:15, 5:20] = True
    b = np.zeros((30, 40), bool)
    b[10:25, 10:30] = True
    ds = dataset_from_dense([[a, np.zeros_like(a)], [b, np.zeros_like(b)]])
    root = tmp_path / "built"
    root.mkdir()
    grdkit.save_dataset(ds, root / "val.json")
    preds = [{"expression_id": 1, "image_id": 1, "segmentation": grdkit.masks.encode(a)},
             {"expression_id": 1, "image_id": 2, "segmentation": None},
             {"expression_id": 2, "image_id": 3, "segmentation": None},
             {"expression_id": 2, "image_id": 4,
              "segmentation": grdkit.masks.encode(np.ones((30, 40), bool))}]
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(preds))
    return root, p


def test_worst_groups_from_a_built_folder(tmp_path, capsys):
    root, preds = _two_groups(tmp_path)
    out = tmp_path / "sheets"
    code, stdout, err = run_cli(["show", root, "--preds", preds, "--worst", "1", "--out", out],
                                capsys)
    assert code == 0, err
    # group 2 scores 0 (a miss and a false alarm), group 1 100: only group 2 is drawn
    assert sorted(p.name for p in out.iterdir()) == ["val-group2-expression2.png"]
    assert "1 lowest-scoring groups" in stdout
    img = np.asarray(PILImage.open(out / "val-group2-expression2.png").convert("RGB"))
    assert _orange(img).sum() > 0  # the whole-image false alarm is tinted
    # a folder with one split needs no --split; an unknown split is refused
    code, _, err = run_cli(["show", root, "--group", 1, "--out", tmp_path / "g.png"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["show", root, "--split", "test", "--out", tmp_path / "g.png"],
                           capsys)
    assert code == 2 and "no split 'test'" in err
    code, _, err = run_cli(["show", root, "--worst", "1", "--out", out], capsys)
    assert code == 2 and "--worst needs --preds" in err


def test_pr_curve_of_binary_masks_is_not_blank(tmp_path):
    """Binary predictions give one PR operating point at every threshold: it is drawn (a
    marker) and written out, where a line through 256 identical points drew nothing."""
    from grdkit.evaluators.curves import distinct_points, line_plot_png

    rec, prec = np.full(256, 0.625), np.full(256, 0.8)
    x, y = distinct_points(rec, prec)
    assert x.tolist() == [0.625] and y.tolist() == [0.8]
    png = line_plot_png(rec, prec, "recall", "precision", "PR curve")
    path = tmp_path / "pr.png"
    path.write_bytes(png)
    px = np.asarray(PILImage.open(path).convert("RGB")).astype(int)
    blue = np.abs(px - [31, 119, 180]).sum(2) < 40
    assert blue.sum() > 40  # the marker
    ys, xs = np.nonzero(blue)
    # where the data say: about 62.5% across the axes and 80% up (axes span most of the PNG)
    assert 0.45 < xs.mean() / px.shape[1] < 0.8 and 0.1 < ys.mean() / px.shape[0] < 0.45
