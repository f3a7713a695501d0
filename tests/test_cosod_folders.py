"""`grdkit convert cosod`: Co-SOD group folders (CoCA / CoSal2015 / CoSOD3k layout) as GRES data.

Layout as released (CoCA ``image/<group>/*.jpg`` + ``binary/<group>/*.png``; lartpang/
CoSaliencyProj ``configs/cosod_path.py``); pairing by stem as GCoNet+ ``dataset.py`` does, but
unpaired files are errors here where zzhanghub/eval-co-sod ``dataloader.py`` drops them silently.
Real data: the MSRC "cow" group (30 photos, hand-made masks) and the 33 COCO train2014 images
made into a second group with masks generated here.
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage

import grdkit
from grdkit import masks
from grdkit.builders import build_cosod
from grdkit.errors import InputError
from grdkit.format import load_dataset
from grdkit.sources.cosod import read_cosod_folders

from .conftest import COCO_IMAGES, MSRC_COW, need, run_cli


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(arr).save(path)


def _box_mask(h, w):
    """The generated mask of a COCO image: its central quarter (grey 255), 0 elsewhere."""
    m = np.zeros((h, w), np.uint8)
    m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    return m


@pytest.fixture
def real_cosod(tmp_path):
    """CoCA-style folders: group "cow" (MSRC) and group "coco_scene" (COCO images with generated
    masks). Copies, not symlinks: an image path never leaves --img-root, links included."""
    need(MSRC_COW)
    need(COCO_IMAGES)
    images, gts = tmp_path / "CoCA" / "image", tmp_path / "CoCA" / "binary"
    for sub in ("cow", "coco_scene"):
        (images / sub).mkdir(parents=True)
        (gts / sub).mkdir(parents=True)
    for p in sorted((MSRC_COW / "images").glob("*.png")):
        shutil.copyfile(p, images / "cow" / p.name)
        shutil.copyfile(MSRC_COW / "masks" / p.name, gts / "cow" / p.name)
    for p in sorted(COCO_IMAGES.glob("*.jpg")):
        shutil.copyfile(p, images / "coco_scene" / p.name)
        with PILImage.open(p) as im:
            w, h = im.size
        _png(gts / "coco_scene" / (p.stem + ".png"), _box_mask(h, w))
    return images, gts


def _independent_mask(path):
    with PILImage.open(path) as im:
        return np.asarray(im.convert("L")) >= 128


def test_real_groups_convert_with_independent_masks(real_cosod):
    images, gts = real_cosod
    ds, report = build_cosod(images, gts, negatives=5, seed=1)
    assert [e.text for e in ds.expressions] == ["coco scene", "cow"]
    assert [g.extra["name"] for g in ds.groups] == ["coco_scene", "cow"]
    assert len(ds.images) == 63 and len(ds.targets) == 30 + 5 + 33 + 5
    assert (report.positives, report.negatives, report.shortfall_groups) == (63, 10, 0)
    for g in ds.groups:
        own = g.extra["name"]
        for t in ds.targets_of_group(g.id):
            im = ds.image(t.image_id)
            folder, name = im.file_name.split("/")
            assert t.positive == (folder == own)  # negatives come from the other group
            if t.positive:
                stem = name.rsplit(".", 1)[0]
                np.testing.assert_array_equal(masks.decode(t.segmentation).astype(bool),
                                              _independent_mask(gts / folder / f"{stem}.png"))
            else:
                assert masks.area(t.segmentation) == 0
    cow = next(g for g in ds.groups if g.extra["name"] == "cow")
    assert list(cow.image_ids) == sorted(cow.image_ids)


def test_cli_convert_validate_and_evaluate(real_cosod, tmp_path, capsys):
    images, gts = real_cosod
    out = tmp_path / "out"
    code, stdout, err = run_cli(["convert", "cosod", "--images", images, "--masks", gts,
                                 "--out", out, "--negatives", "5", "--seed", "1",
                                 "--no-progress"], capsys)
    assert code == 0, err
    assert "not certified" in err
    row = next(line for line in stdout.splitlines() if line.strip().startswith("│"))
    assert [int(x) for x in row.replace("│", " ").split()] == [2, 63, 73, 63, 10, 0]
    card = (out / "README.md").read_text()
    assert "NOT certified" in card and "Co-SOD" in card
    code, vout, _ = run_cli(["validate", out / "test.json", "--img-root", images], capsys)
    assert code == 0, vout
    # determinism; another seed draws other negatives
    run_cli(["convert", "cosod", "--images", images, "--masks", gts, "--out", tmp_path / "b",
             "--negatives", "5", "--seed", "1", "--no-progress"], capsys)
    assert (out / "test.json").read_bytes() == (tmp_path / "b" / "test.json").read_bytes()
    run_cli(["convert", "cosod", "--images", images, "--masks", gts, "--out", tmp_path / "c",
             "--negatives", "5", "--seed", "2", "--no-progress"], capsys)
    assert (out / "test.json").read_bytes() != (tmp_path / "c" / "test.json").read_bytes()
    # ground truth as predictions scores 100; eroded masks score below
    ds = load_dataset(out / "test.json")
    perfect, eroded = [], []
    for t in ds.targets:
        m = masks.decode(t.segmentation).astype(bool)
        e = m.copy()
        for ax, sh in ((0, 3), (0, -3), (1, 3), (1, -3)):
            e &= np.roll(m, sh, axis=ax)
        rec = {"expression_id": t.expression_id, "image_id": t.image_id}
        perfect.append({**rec, "segmentation": t.segmentation if t.positive else None})
        eroded.append({**rec, "segmentation": masks.encode(e) if e.any() else None})
    (tmp_path / "perfect.json").write_text(json.dumps(perfect))
    code, _, _ = run_cli(["eval", tmp_path / "perfect.json", "--gt", out / "test.json",
                          "--json", tmp_path / "r1.json", "--fail-under", "gres_miou=100"],
                         capsys)
    assert code == 0
    r1 = json.loads((tmp_path / "r1.json").read_text())["metrics"]
    assert r1["gres_miou"] == r1["ciou"] == r1["n_acc"] == 100.0
    r2 = grdkit.evaluate(eroded, ds).metrics
    assert 50.0 < r2["gres_miou"] < 100.0 and r2["n_acc"] == 100.0 and r2["ciou"] < 100.0


def _tiny(tmp_path, groups=(("red_car", 2), ("dog", 3))):
    images, gts = tmp_path / "Image", tmp_path / "GroundTruth"
    for g, n in groups:
        for k in range(n):
            img = np.full((6, 8, 3), 40 * k, np.uint8)
            _png(images / g / f"{k:03d}.jpg", img)
            m = np.zeros((6, 8), np.uint8)
            m[1:4, k:k + 3] = 200
            _png(gts / g / f"{k:03d}.png", m)
    return images, gts


def test_pairing_underscore_negatives_and_shortfall(tmp_path):
    images, gts = _tiny(tmp_path)
    groups = read_cosod_folders(images, gts)
    assert [(g.name, g.pairs[0]) for g in groups] == [("dog", ("dog/000.jpg", "dog/000.png")),
                                                      ("red_car", ("red_car/000.jpg",
                                                                   "red_car/000.png"))]
    ds, rep = build_cosod(images, gts, negatives=3, seed=0)
    assert [e.text for e in ds.expressions] == ["dog", "red car"]
    assert rep.per_group == {"dog": {"positive": 3, "negative": 2},
                             "red_car": {"positive": 2, "negative": 3}}
    assert (rep.shortfall_groups, rep.shortfall_images) == (1, 1)
    ds0, _ = build_cosod(images, gts)
    assert all(t.positive for t in ds0.targets) and len(ds0.targets) == 5


def _convert(images, gts, out, capsys):
    return run_cli(["convert", "cosod", "--images", images, "--masks", gts, "--out", out,
                    "--no-progress"], capsys)


@pytest.mark.parametrize("break_it, names", [
    (lambda i, g: (g / "dog" / "001.png").unlink(), ("Image/dog/001.jpg", "image has no mask")),
    (lambda i, g: (i / "dog" / "002.jpg").unlink(), ("GroundTruth/dog/002.png",
                                                     "mask has no image")),
    (lambda i, g: (g / "cat").mkdir(), ("GroundTruth/cat", "mask folder has no image folder")),
    (lambda i, g: _png(i / "dog" / "000.png", np.zeros((6, 8, 3), np.uint8)),
     ("Image/dog/000.png", "same name as 000.jpg")),
    (lambda i, g: _png(g / "dog" / "001.png", np.zeros((5, 8), np.uint8)),
     ("GroundTruth/dog/001.png", "mask is 8x5, its image is 8x6")),
    (lambda i, g: (i / "dog" / "notes.txt").write_text("x"), ("Image/dog/notes.txt",
                                                              "is not an image file")),
])
def test_bad_folders_exit_2_naming_the_file(tmp_path, capsys, break_it, names):
    images, gts = _tiny(tmp_path)
    break_it(images, gts)
    code, _, err = _convert(images, gts, tmp_path / "out", capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for n in names:
        assert n in err, err
    assert "group 'dog'" in err or "group 'cat'" in err
    assert not (tmp_path / "out").exists()


def test_all_zero_mask_is_a_certified_negative(tmp_path, capsys):
    """SOC and D³'s CoCA export mark an image without the object by an all-zero mask:
    shikras/d-cube ``d_cube/d3.py`` ``D3.data2coca`` writes, for every sentence of a group, a
    mask for every image of the group, ``merge2bin`` of that image's annotations for the
    sentence, which is all zero where it has none."""
    images, gts = _tiny(tmp_path)
    _png(gts / "dog" / "001.png", np.full((6, 8), 127, np.uint8))  # below 128: empty
    ds, rep = build_cosod(images, gts)
    assert (rep.positives, rep.certified_negatives) == (4, 1)
    dog = next(g for g in ds.groups if g.extra["name"] == "dog")
    assert dog.extra["num_certified_negative"] == 1 and dog.extra["num_positive"] == 2
    neg = [t for t in ds.targets if not t.positive]
    assert [ds.image(t.image_id).file_name for t in neg] == ["dog/001.jpg"]
    code, out, err = _convert(images, gts, tmp_path / "out", capsys)
    assert code == 0, err
    assert "1 certified negative pairs" in (tmp_path / "out" / "README.md").read_text()
    assert "certified" in out


def test_missing_roots(tmp_path, capsys):
    images, _ = _tiny(tmp_path)
    code, _, err = _convert(images, tmp_path / "nope", tmp_path / "out", capsys)
    assert code == 2 and "nope: masks folder not found" in err
    (tmp_path / "e1").mkdir()
    (tmp_path / "e2").mkdir()
    with pytest.raises(InputError, match="e1: holds no group folder"):
        read_cosod_folders(tmp_path / "e1", tmp_path / "e2")
