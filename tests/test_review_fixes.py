"""Regressions found by reviewing the re-layout: each bad input is an error that names its record
(never a traceback, never a corrupt or half-stale output)."""

import json

import numpy as np
import pytest

import grdkit
from grdkit import masks
from grdkit.builders import build_dataset, convert_d3
from grdkit.errors import InputError
from grdkit.evaluators import GresEvaluator
from grdkit.evaluators.predictions import Prediction
from grdkit.export import write_dataset
from grdkit.format.rlecheck import check_rles
from grdkit.sources.d3 import read_d3
from grdkit.testing.synth import demo_root, generate_d3, write_d3

from .conftest import dataset_from_dense, run_cli


def test_non_ascii_counts_are_corrupt_not_valid():
    ok, _, _ = check_rles(["é9", "?9", masks.encode(np.ones((3, 3)))["counts"]],
                          [(3, 3)] * 3)
    assert ok.tolist() == [False, False, True]  # "?" is itself a malformed count here
    with pytest.raises(masks.MaskError, match="non-ASCII"):
        masks.to_rle({"size": [3, 3], "counts": "é9"}, 3, 3)
    with pytest.raises(masks.MaskError, match="not \\[height, width\\]"):
        masks.to_rle({"size": ["a", 3], "counts": "9"}, 3, 3)


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d["targets"][0]["segmentation"].__setitem__("size", ["a", 2]), "integers >= 1"),
    (lambda d: d["images"][0].__setitem__("height", 0), "'height' is 0"),
    (lambda d: d["groups"][0].__setitem__("image_ids", []), "'image_ids' is empty"),
])
def test_loader_rejects_values_the_schema_rejects(tmp_path, mutate, msg):
    ds = dataset_from_dense([[np.ones((2, 2), bool), np.zeros((2, 2), bool)]])
    d = ds.to_dict()
    mutate(d)
    p = tmp_path / "x.json"
    p.write_text(json.dumps(d))
    with pytest.raises(InputError, match=msg):
        grdkit.load_dataset(p)


def test_nan_in_a_split_file_is_named(tmp_path):
    ds = dataset_from_dense([[np.ones((2, 2), bool)]])
    p = tmp_path / "x.json"
    p.write_text(grdkit.format.dumps(ds).replace('"recipe":{}', '"recipe":{"r":NaN}'))
    with pytest.raises(InputError, match="numbers must be finite"):
        grdkit.load_dataset(p)


def test_a_referent_that_rasterises_to_nothing_is_an_error(tmp_path):
    import shutil

    root = tmp_path / "refer"
    shutil.copytree(demo_root(), root)
    inst = json.loads((root / "instances.json").read_text())
    refs_target = {a["id"] for a in inst["annotations"] if not a.get("iscrowd")}
    a = next(a for a in inst["annotations"] if a["id"] in refs_target)
    a["segmentation"] = [[0.0, 0.0, 0.4, 0.0, 0.4, 0.4]]  # a sliver inside one pixel
    (root / "instances.json").write_text(json.dumps(inst))
    with pytest.raises(InputError, match=rf"annotation ids \[{a['id']}\].*empty mask"):
        build_dataset("g-refcocog", root, min_images=1)


def test_write_dataset_removes_stale_splits_and_refuses_nothing(tmp_path):
    splits, _ = build_dataset("g-refcocog", demo_root())
    write_dataset(splits, tmp_path)
    (tmp_path / "testA.json").write_text((tmp_path / "val.json").read_text())  # a stale split
    (tmp_path / "notes.json").write_text("{}")                               # not a split
    write_dataset({"val": splits["val"]}, tmp_path)
    # the folder holds exactly this build: earlier splits go, other JSON files stay
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["notes.json", "val.json"]
    with pytest.raises(InputError, match="nothing to write"):
        write_dataset({}, tmp_path / "empty")


def test_process_normalises_uncompressed_prediction_objects():
    gt = np.zeros((4, 4), bool)
    gt[1:3, 1:3] = True
    ds = dataset_from_dense([[gt]])
    runs = [5, 2, 2, 2, 5]  # column-major: the 2x2 square
    ev = GresEvaluator(ds)
    ev.process([Prediction(ds.split, 1, 1, {"size": [4, 4], "counts": runs})])
    assert ev.evaluate().metrics["gres_miou"] == 100.0


def test_convert_d3_refuses_a_corrupt_rle(tmp_path, capsys):
    t = generate_d3(n_groups=2, images_per_group=3, presence_per_group=2, seed=1)
    aid = min(t["annotations.pkl"])
    seg = t["annotations.pkl"][aid]["segmentation"]
    c = seg["counts"]
    seg["counts"] = (c + b"3") if isinstance(c, bytes) else c + "3"
    root = write_d3(tmp_path / "d3", t)
    with pytest.raises(InputError, match=f"annotation id {aid}: RLE is malformed"):
        convert_d3(read_d3(root))
    code, _, err = run_cli(["convert", "d3", "--anno-root", root, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "Traceback" not in err and not (tmp_path / "o").exists()


def test_grd_counts_groups_left_without_expressions(tmp_path):
    t = generate_d3(n_groups=3, images_per_group=3, presence_per_group=2, seed=4)
    g = t["groups.pkl"][min(t["groups.pkl"])]
    g["inner_sent_id"] = [s for s in g["inner_sent_id"] if t["sentences.pkl"][s]["is_negative"]]
    ds = convert_d3(read_d3(write_d3(tmp_path / "d3", t)), "intra", "presence")
    assert ds.info["recipe"]["groups_without_expressions"] == 1 and len(ds.groups) == 2


def test_fingerprint_sees_mask_content_not_only_areas():
    a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    a[0, 0], b[3, 3] = True, True  # same area, other pixel
    fa = GresEvaluator(dataset_from_dense([[a]])).fingerprint
    fb = GresEvaluator(dataset_from_dense([[b]])).fingerprint
    assert fa != fb and fa == GresEvaluator(dataset_from_dense([[a]])).fingerprint
