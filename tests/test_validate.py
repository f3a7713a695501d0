"""`grdkit validate`: every check, injected one at a time, is found; clean inputs pass."""

import copy
import json
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage

from grdkit import masks
from grdkit.builders import build_dataset
from grdkit.format.dataset import dumps
from grdkit.format.masks import polygon_problems
from grdkit.format.rlecheck import check_rles, decode_counts
from grdkit.testing.synth import demo_root, generate_d3, write_d3
from grdkit.validate import validate_path

from .conftest import dataset_from_dense, run_cli
from .test_masks import column_major_runs


@pytest.fixture(scope="module")
def clean():
    return json.loads(dumps(build_dataset("g-refcocog", demo_root())[0]["val"]))


def kinds(path, img_root=None):
    r = validate_path(path, img_root)
    return {(p.severity, p.kind) for p in r.problems}, r


def write(tmp_path, d, name="val.json"):
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


def test_clean_dataset_has_no_problem(tmp_path, clean):
    found, r = kinds(write(tmp_path, clean))
    assert found == set() and r.checked["targets"] == len(clean["targets"])


def _pos(d):
    return next(i for i, t in enumerate(d["targets"]) if t["positive"])


def _neg(d):
    return next(i for i, t in enumerate(d["targets"]) if not t["positive"])


def _outsider(d):
    """(target index, image id) of an image of the dataset outside target 0's group."""
    e = d["targets"][0]["expression_id"]
    g = next(g for g in d["groups"] if e in g["expression_ids"])
    return next(im["id"] for im in d["images"] if im["id"] not in g["image_ids"])


INJECTIONS = {
    "schema": lambda d: d["targets"][3].__setitem__("positive", "yes"),
    "duplicate_id": lambda d: d["images"].append(dict(d["images"][0])),
    "dangling_reference": lambda d: d["expressions"][0].__setitem__("group_id", 999),
    "expression_group_mismatch": lambda d: d["groups"][1]["expression_ids"].append(
        d["groups"][0]["expression_ids"][0]),
    "missing_target": lambda d: d["targets"].pop(5),
    "extra_target": lambda d: d["targets"].append(dict(d["targets"][0],
                                                       image_id=_outsider(d))),
    "duplicate_target": lambda d: d["targets"].append(dict(d["targets"][2])),
    "rle_corrupt": lambda d: d["targets"][_pos(d)]["segmentation"].__setitem__(
        "counts", d["targets"][_pos(d)]["segmentation"]["counts"] + "3"),
    "rle_size": lambda d: d["targets"][_neg(d)].__setitem__("segmentation", masks.empty_rle(
        *[x + 1 for x in d["targets"][_neg(d)]["segmentation"]["size"]])),
    "empty_positive": lambda d: d["targets"][_pos(d)].__setitem__(
        "segmentation", masks.empty_rle(*d["targets"][_pos(d)]["segmentation"]["size"])),
    "nonempty_negative": lambda d: d["targets"][_neg(d)].__setitem__(
        "segmentation", d["targets"][_pos(d)]["segmentation"]),
    "area_mismatch": lambda d: d["targets"][_pos(d)].__setitem__(
        "area", masks.area(d["targets"][_pos(d)]["segmentation"]) * 2 + 10),
    "bbox_mismatch": lambda d: d["targets"][_pos(d)].__setitem__("bbox", [0, 0, 1, 1]),
}


@pytest.mark.parametrize("kind", sorted(INJECTIONS))
def test_each_error_is_found(tmp_path, clean, kind):
    d = copy.deepcopy(clean)
    INJECTIONS[kind](d)
    found, r = kinds(write(tmp_path, d))
    assert ("error", kind) in found, found
    p = next(p for p in r.problems if p.kind == kind)
    assert p.file.endswith("val.json") and p.record and p.message


def test_schema_error_names_the_field(tmp_path, clean):
    d = copy.deepcopy(clean)
    INJECTIONS["schema"](d)
    _, r = kinds(write(tmp_path, d))
    p = next(p for p in r.problems if p.kind == "schema")
    assert p.record == "targets[3].positive" and "is not of type 'boolean'" in p.message


def test_correct_area_and_bbox_pass(tmp_path, clean):
    d = copy.deepcopy(clean)
    t = d["targets"][_pos(d)]
    from pycocotools import mask as mu

    t["area"] = masks.area(t["segmentation"])
    t["bbox"] = [float(x) for x in mu.toBbox({"size": t["segmentation"]["size"],
                                              "counts": t["segmentation"]["counts"].encode()})]
    assert kinds(write(tmp_path, d))[0] == set()


def test_statistics_warnings(tmp_path):
    z = np.zeros((4, 4), bool)
    one = np.zeros((4, 4), bool)
    one[1:3, 1:3] = True
    ds = dataset_from_dense([[z, z], [one, one], [one] + [z] * 11])
    d = json.loads(dumps(ds))
    d["expressions"].append({"id": 9, "text": "Expression  2", "group_id": 2})
    d["groups"][1]["expression_ids"].append(9)
    for im in d["groups"][1]["image_ids"]:
        t = next(t for t in d["targets"] if t["expression_id"] == 2 and t["image_id"] == im)
        d["targets"].append(dict(t, expression_id=9))
    found, _ = kinds(write(tmp_path, d))
    assert found == {("warning", "group_no_positive"), ("warning", "group_no_negative"),
                     ("warning", "extreme_ratio"), ("warning", "duplicate_expression")}


def test_image_checks(tmp_path):
    one = np.zeros((4, 6), bool)
    one[1:3, 1:3] = True
    ds = dataset_from_dense([[one, one, one, one]])
    p = write(tmp_path, json.loads(dumps(ds)))
    root = tmp_path / "imgs"
    root.mkdir()
    PILImage.fromarray(np.zeros((4, 6), np.uint8)).save(root / "1.png")   # fine
    PILImage.fromarray(np.zeros((5, 6), np.uint8)).save(root / "2.png")   # wrong size
    (root / "3.png").write_bytes(b"not a png")                             # unreadable
    found, r = kinds(p, root)                                              # 4.png missing
    assert found == {("error", "image_size"), ("error", "image_unreadable"),
                     ("error", "image_missing"), ("warning", "group_no_negative")}
    assert {p.record for p in r.errors} == {"image id 2 (2.png)", "image id 3 (3.png)",
                                              "image id 4 (4.png)"}


# -- polygons (refer inputs) -----------------------------------------------------------------
@pytest.mark.parametrize("part, kind, severity", [
    ([1, 1, 5, 5], "polygon_points", "error"),
    ([1, 1, 5, 5, float("nan"), 2], "polygon_nonfinite", "error"),
    ([1, 1, 15, 1, 15, 8], "polygon_outside", "error"),
    ([1, 1, 1e308, 1, 5, 8], "polygon_range", "error"),  # pycocotools' rleFrPoly would crash
    ([1, 1, 2, 2, 3, 3], "polygon_zero_area", "error"),
    ([0, 0, 8, 8, 8, 0, 0, 8], "polygon_invalid", "warning"),
])
def test_polygon_checks(part, kind, severity):
    got = list(polygon_problems([part], 10, 10))
    assert [(p, k, s) for p, k, s, _ in got] == [(0, kind, severity)]


def test_structural_polygon_rules_are_the_builders():
    """Without geometry only the structural rules run: what the builders raise on."""
    part = [1, 1, 15, 1, 15, 8]  # outside the image: a geometry rule, not a structural one
    assert list(polygon_problems([part], 10, 10, geometry=False)) == []
    assert [k for _, k, _, _ in polygon_problems([], 10, 10)] == ["polygon_points"]
    with pytest.raises(masks.MaskError, match="at least 3"):
        masks.to_rle([[1, 1, 5, 5]], 10, 10)
    with pytest.raises(masks.MaskError, match="far outside"):  # the bound is structural
        masks.to_rle([[1, 1, 1e308, 1, 5, 8]], 10, 10)


def test_self_intersection_location():
    (_, _, _, msg), = polygon_problems([[0, 0, 8, 8, 8, 0, 0, 8]], 10, 10)
    assert msg == "Self-intersection[4 4]"


def test_real_refer_sample(refcocog_root):
    found, r = kinds(refcocog_root)
    # one real COCO polygon self-intersects; nothing else is wrong
    assert found == {("warning", "polygon_invalid")}
    (p,) = r.problems
    assert p.record == "annotation id 43695 (image id 543490) part 0"
    assert "Self-intersection[316.16 187.63]" in p.message


def test_refer_injected_problems(refer_copy):
    inst_p = refer_copy / "instances.json"
    inst = json.loads(inst_p.read_text())
    a0, a1, a2 = inst["annotations"][:3]
    a0["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]
    a1["segmentation"] = [a1["segmentation"][0] + [99999.0, 5.0]]
    a2["segmentation"] = {"size": [10, 10], "counts": [50, 10]}
    inst_p.write_text(json.dumps(inst))
    found, _ = kinds(refer_copy)
    assert {("error", "polygon_points"), ("error", "polygon_range"),
            ("error", "rle_corrupt")} <= found


# -- D³ -----------------------------------------------------------------------------------------
def test_d3_clean_and_injected(tmp_path):
    t = generate_d3(n_groups=3, images_per_group=5, presence_per_group=2, seed=2)
    root = write_d3(tmp_path / "d3", t)
    found, r = kinds(root)
    assert found == set() and r.input_kind == "d3" and r.checked["targets"] > 0
    ann = t["annotations.pkl"]
    ids = sorted(ann)
    ann[ids[0]]["area"] = ann[ids[0]]["area"] * 3 + 50
    ann[ids[1]]["bbox"] = [0.0, 0.0, 1.0, 1.0]
    c = ann[ids[2]]["segmentation"]["counts"]
    ann[ids[2]]["segmentation"]["counts"] = (c + b"3") if isinstance(c, bytes) else c + "3"
    t["groups.pkl"][1]["inner_sent_id"].append(10**6)
    write_d3(root, t)
    found, r = kinds(root)
    assert {("error", "area_mismatch"), ("error", "bbox_mismatch"), ("error", "rle_corrupt"),
            ("error", "dangling_reference")} <= found
    recs = {p.kind: p.record for p in r.problems}
    assert recs["area_mismatch"] == f"annotation id {ids[0]}"


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_exit_codes(tmp_path, clean, capsys):
    ok = write(tmp_path, clean, "ok.json")
    code, out, _ = run_cli(["validate", ok], capsys)
    assert code == 0 and "0 errors, 0 warnings" in out
    d = copy.deepcopy(clean)
    INJECTIONS["missing_target"](d)
    bad = write(tmp_path, d, "bad.json")
    js = tmp_path / "problems.json"
    code, out, _ = run_cli(["validate", bad, "--json", js], capsys)
    assert code == 1 and "missing_target" in out
    rep = json.loads(js.read_text())
    assert rep["errors"] == 1 and rep["problems"][0]["kind"] == "missing_target"
    (tmp_path / "broken.json").write_text("{")
    code, _, err = run_cli(["validate", tmp_path / "broken.json"], capsys)
    assert code == 2 and "invalid JSON" in err
    code, _, err = run_cli(["validate", tmp_path / "absent"], capsys)
    assert code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["validate", empty], capsys)
    assert code == 2 and "is neither" in err


def test_warnings_only_exit_0(refcocog_root, tmp_path, capsys):
    shutil.copytree(refcocog_root, tmp_path / "r")
    code, out, _ = run_cli(["validate", tmp_path / "r"], capsys)
    assert code == 0 and "0 errors, 1 warnings" in out


# -- the RLE decoder against an independent encoder ---------------------------------------------
def test_rle_decoder_matches_independent_runs():
    rng = np.random.default_rng(0)
    ms = [rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))) < rng.random()
          for _ in range(200)] + [np.ones((480, 640), bool), np.zeros((7, 3), bool)]
    rles = [masks.encode(m) for m in ms]
    runs = decode_counts([r["counts"] for r in rles])
    for r, m in zip(runs, ms):
        assert list(r) == column_major_runs(m.astype(np.uint8))
    ok, total, area = check_rles([r["counts"] for r in rles], [m.shape for m in ms])
    assert ok.all() and list(area) == [int(m.sum()) for m in ms]
    assert list(total) == [m.size for m in ms]
    bad, _, _ = check_rles(["W", "1\x7f", rles[0]["counts"] + "1"], [(3, 3), (3, 3),
                                                                      ms[0].shape])
    assert not bad.any()


def test_rle_check_chunking_is_invisible(monkeypatch):
    from grdkit.format import rlecheck

    rng = np.random.default_rng(1)
    ms = [rng.random((9, 7)) < 0.4 for _ in range(50)]
    counts = [masks.encode(m)["counts"] for m in ms]
    counts[13] += "3"  # one corrupt mask
    whole = check_rles(counts, [m.shape for m in ms])
    monkeypatch.setattr(rlecheck, "CHUNK", 6)
    chunked = check_rles(counts, [m.shape for m in ms])
    for a, b in zip(whole, chunked):
        np.testing.assert_array_equal(a, b)
    assert list(np.flatnonzero(~chunked[0])) == [13]
