"""D³ as released: numpy-laden pickles, RLE lists, COCO JSON, and the safe numpy unpickler.

Facts from the D³ authors' toolkit (shikras/d-cube): ``d_cube/d3.py`` ``convert2coco`` reads
``segmentation[0]`` (a list holding an RLE dict whose counts are bytes), ``int(area[0])`` and
``bbox[0].tolist()`` (numpy arrays); ``get_mask`` and ``d_cube/data_util.py`` ``rle2bmask``
decode a list of RLEs and sum them; ``scripts/eval_and_analysis_json.py`` reads
``d3_full_annotations.json`` / ``d3_pres_annotations.json`` / ``d3_abs_annotations.json``.
"""

import json
import os
import pickle

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from grdkit.builders import convert_d3
from grdkit.errors import InputError
from grdkit.format import dumps, load_dataset
from grdkit.io import NumpyUnpickler, SafeUnpickler, loads_pickle
from grdkit.sources.d3 import normalise_annotation, read_d3, read_d3_json
from grdkit.testing.synth import generate_d3, write_d3, write_d3_json

from .conftest import run_cli
from .test_masks import column_major_runs

SMALL = {"n_groups": 4, "images_per_group": 6, "presence_per_group": 2.5, "shared_sentences": 1,
         "seed": 3}


def _without_sources(ds):
    ds.info["sources"] = {}
    return dumps(ds)


# -- the numpy unpickler -------------------------------------------------------------------------
NUMPY_OBJECTS = [np.array([3.5]), np.array([[1.0, 2.0, 30.0, 40.0]], np.float32),
                 np.int64(7), np.float64(2.5), np.bool_(True), np.asfortranarray(np.ones((2, 3))),
                 np.arange(6)[::2], np.array([b"ab", b"c"])]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_and_scalars_round_trip(protocol):
    for obj in NUMPY_OBJECTS:
        got = loads_pickle("x.pkl", pickle.dumps({"v": obj}, protocol=protocol),
                           unpickler=NumpyUnpickler)["v"]
        assert type(got) is type(obj)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(obj))
        assert np.asarray(got).dtype == np.asarray(obj).dtype


def test_other_numpy_major_version_spelling_is_read():
    """numpy 1 pickles name numpy.core.*, numpy 2 pickles numpy._core.*: both are allowed."""
    data = pickle.dumps([np.array([1, 2]), np.int64(3)], protocol=2)  # GLOBAL opcodes as text
    ours, other = (b"numpy._core.", b"numpy.core.") if b"numpy._core." in data else \
        (b"numpy.core.", b"numpy._core.")
    assert ours in data
    got = loads_pickle("x.pkl", data.replace(ours, other), unpickler=NumpyUnpickler)
    assert got[0].tolist() == [1, 2] and got[1] == 3


def test_plain_unpickler_still_refuses_numpy():
    with pytest.raises(InputError, match="numpy"):
        loads_pickle("x.pkl", pickle.dumps(np.array([1])), unpickler=SafeUnpickler)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_calling_os_system_is_refused_and_does_not_run(tmp_path, capsys):
    root = write_d3(tmp_path / "d3", generate_d3(**SMALL, layout="released"))
    marker = tmp_path / "pwned"
    (root / "annotations.pkl").write_bytes(pickle.dumps({1: _Evil(marker)}, protocol=2))
    code, _, err = run_cli(["convert", "d3", "--anno-root", root, "--out", tmp_path / "o"],
                           capsys)
    assert code == 2 and not marker.exists()
    assert err.count("\n") == 1 and "annotations.pkl" in err and "system" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    code, _, err = run_cli(["validate", root], capsys)
    assert code == 2 and not marker.exists() and "annotations.pkl" in err


# -- the released layout -------------------------------------------------------------------------
def test_released_generator_has_the_quirks():
    t = generate_d3(**SMALL, layout="released")
    anns = list(t["annotations.pkl"].values())
    assert all(isinstance(a["segmentation"], list) for a in anns)
    assert all(isinstance(r["counts"], bytes) for a in anns for r in a["segmentation"])
    assert any(len(a["segmentation"]) == 2 for a in anns)  # rle2bmask sums a list
    a = anns[0]
    assert isinstance(a["area"], np.ndarray) and a["area"].shape == (1,)  # int(area[0])
    assert a["bbox"].shape == (1, 4)  # bbox[0].tolist()
    assert isinstance(a["group_id"], np.integer) and isinstance(a["image_id"], np.integer)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_both_layouts_convert_to_the_identical_dataset(tmp_path, protocol):
    doc = write_d3(tmp_path / "doc", generate_d3(**SMALL))
    rel = write_d3(tmp_path / "rel", generate_d3(**SMALL, layout="released"), protocol)
    for setting, sel in (("intra", "presence"), ("inter", "all")):
        a = convert_d3(read_d3(doc), setting, sel)
        b = convert_d3(read_d3(rel), setting, sel)
        assert a.info["sources"] != b.info["sources"]  # different files ...
        assert _without_sources(a) == _without_sources(b)  # ... the same dataset


def test_union_of_an_rle_list_is_independent_or_of_decoded_parts():
    t = generate_d3(**SMALL, layout="released")
    split = [a for a in t["annotations.pkl"].values() if len(a["segmentation"]) == 2]
    for a in split:
        expect = np.zeros(a["segmentation"][0]["size"], np.uint8)
        for r in a["segmentation"]:
            expect |= mask_utils.decode(r)
        got = normalise_annotation(a)
        seg = got["segmentation"]
        assert isinstance(seg["counts"], str)
        np.testing.assert_array_equal(mask_utils.decode({**seg, "counts": seg["counts"].encode()}),
                                      expect)
        assert got["area"] == int(expect.sum()) or abs(got["area"] - expect.sum()) < 1e-6
        assert isinstance(got["bbox"], list) and len(got["bbox"]) == 4
        assert type(got["iscrowd"]) is int and type(got["group_id"]) is int
        assert type(got["image_id"]) is int


def test_uncompressed_rle_and_plain_lists_are_normalised():
    m = np.zeros((4, 5), np.uint8)
    m[1:3, 2:4] = 1
    counts = column_major_runs(m)
    got = normalise_annotation({"id": 1, "segmentation": [{"size": [4, 5], "counts": counts}],
                                "area": [4], "bbox": [[2, 1, 2, 2]], "iscrowd": [0],
                                "group_id": [3], "image_id": 1, "sent_id": [1]})
    seg = got["segmentation"]
    np.testing.assert_array_equal(mask_utils.decode({**seg, "counts": seg["counts"].encode()}), m)
    assert (got["area"], got["bbox"], got["iscrowd"], got["group_id"]) == (4, [2, 1, 2, 2], 0, 3)


def test_validate_works_on_both_layouts(tmp_path, capsys):
    for layout in ("documented", "released"):
        root = write_d3(tmp_path / layout, generate_d3(**SMALL, layout=layout))
        code, out, _ = run_cli(["validate", root, "--json", tmp_path / f"{layout}.json"], capsys)
        assert code == 0, out
        rep = json.loads((tmp_path / f"{layout}.json").read_text())
        assert rep["input_kind"] == "d3" and rep["errors"] == 0


def test_corrupt_rle_in_a_list_is_reported_not_crashed(tmp_path, capsys):
    t = generate_d3(**SMALL, layout="released")
    aid = min(t["annotations.pkl"])
    t["annotations.pkl"][aid]["segmentation"] = [{"size": [5, 5], "counts": b"zz"}]
    root = write_d3(tmp_path / "d3", t)
    code, out, _ = run_cli(["validate", root], capsys)
    assert code == 1 and "rle_size" in out
    code, _, err = run_cli(["convert", "d3", "--anno-root", root, "--out", tmp_path / "o"],
                           capsys)
    assert code == 2 and f"annotation id {aid}" in err and "annotations.pkl" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("d3_name, ours", [("full", "all"), ("pres", "presence"),
                                           ("abs", "absence")])
def test_d3_expression_names(tmp_path, capsys, d3_name, ours):
    root = write_d3(tmp_path / "d3", generate_d3(**SMALL, layout="released"))
    for name, out in ((d3_name, "a"), (ours, "b")):
        code, _, _ = run_cli(["convert", "d3", "--anno-root", root, "--out", tmp_path / out,
                              "--expressions", name], capsys)
        assert code == 0
    assert (tmp_path / "a" / "test.json").read_bytes() == (tmp_path / "b" / "test.json"
                                                           ).read_bytes()
    assert load_dataset(tmp_path / "a" / "test.json").info["recipe"]["expressions"] == ours


# -- COCO JSON -----------------------------------------------------------------------------------
def _targets(ds):
    return [(ds.expression(t.expression_id).extra["d3_sent_id"], t.image_id, t.positive,
             t.segmentation) for t in ds.targets]


def test_json_with_groups_equals_the_pickles(tmp_path, capsys):
    t = generate_d3(**SMALL)
    rel = write_d3(tmp_path / "rel", generate_d3(**SMALL, layout="released"))
    ref = convert_d3(read_d3(rel), "intra", "presence")
    j = write_d3_json(tmp_path / "json", t, "pres")
    got = convert_d3(read_d3_json(j, rel), "intra", "presence")
    assert _targets(got) == _targets(ref)
    assert [e.text for e in got.expressions] == [e.text for e in ref.expressions]
    assert [g.id for g in got.groups] == [g.id for g in ref.groups]
    code, out, _ = run_cli(["convert", "d3", "--json", j, "--anno-root", rel, "--out",
                            tmp_path / "o"], capsys)
    assert code == 0 and "31524" in out  # GRD's setting: printed beside the paper's counts


def test_json_alone_gives_the_inter_setting(tmp_path, capsys):
    t = generate_d3(**SMALL)
    doc = write_d3(tmp_path / "doc", t)
    full = write_d3_json(tmp_path / "json", t, "full")
    ref = convert_d3(read_d3(doc), "inter", "all")
    got = convert_d3(read_d3_json(full), "inter", "full")
    assert _targets(got) == _targets(ref)
    code, _, _ = run_cli(["convert", "d3", "--json", full, "--setting", "inter", "--out",
                          tmp_path / "o"], capsys)
    assert code == 0
    ds = load_dataset(tmp_path / "o" / "test.json")
    assert ds.info["recipe"] == {"source": "D³ COCO JSON", "setting": "inter",
                                 "expressions": "all", "groups_without_expressions": 0}
    # the pres file knows its sentences are presence ones from its name
    pres = write_d3_json(tmp_path / "json", t, "pres")
    got = convert_d3(read_d3_json(pres), "inter", "presence")
    assert _targets(got) == _targets(convert_d3(read_d3(doc), "inter", "presence"))


def test_json_settings_that_cannot_be_honoured(tmp_path, capsys):
    t = generate_d3(**SMALL)
    full = write_d3_json(tmp_path / "json", t, "full")
    code, _, err = run_cli(["convert", "d3", "--json", full, "--out", tmp_path / "o"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "d3_full_annotations.json" in err and "intra-group setting needs groups.pkl" in err
    assert "--" not in err.split("(fix:")[1]  # library hints name no CLI flags
    code, _, err = run_cli(["convert", "d3", "--json", full, "--setting", "inter",
                            "--expressions", "pres", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "presence / absence is unknown" in err
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli(["convert", "d3", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "--anno-root" in err


def test_bad_json_is_named(tmp_path, capsys):
    t = generate_d3(**SMALL)
    full = write_d3_json(tmp_path / "json", t, "full")
    coco = json.loads(full.read_text())
    del coco["annotations"][3]["category_id"]
    full.write_text(json.dumps(coco))
    code, _, err = run_cli(["convert", "d3", "--json", full, "--setting", "inter", "--out",
                            tmp_path / "o"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "d3_full_annotations.json: annotations[3]: missing field 'category_id'" in err
    full.write_text('{"images": [')
    code, _, err = run_cli(["convert", "d3", "--json", full, "--setting", "inter", "--out",
                            tmp_path / "o"], capsys)
    assert code == 2 and "invalid JSON" in err and "line 1" in err
    assert not (tmp_path / "o").exists()
