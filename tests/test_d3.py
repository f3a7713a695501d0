"""D³ (GRD as released): reading the pickles with their quirks and converting them."""

import pickle

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from grdkit import masks
from grdkit.builders import convert_d3
from grdkit.errors import InputError
from grdkit.sources.d3 import read_d3
from grdkit.testing.synth import generate_d3, write_d3

from .conftest import run_cli

SMALL = {"n_groups": 4, "images_per_group": 6, "presence_per_group": 2.5, "shared_sentences": 1,
         "seed": 3}


@pytest.fixture
def d3_root(tmp_path):
    tables = generate_d3(**SMALL)
    return write_d3(tmp_path / "d3", tables), tables


def test_generator_has_the_quirks(d3_root):
    _, t = d3_root
    assert all(k == v["id"] for tab in t.values() for k, v in tab.items())  # ids as keys
    kinds = {type(a["segmentation"]["counts"]) for a in t["annotations.pkl"].values()}
    assert kinds == {bytes, str}
    assert any(len(s["group_id"]) > 1 for s in t["sentences.pkl"].values())
    assert any(s["is_negative"] for s in t["sentences.pkl"].values())


def _expected(t, setting, selection):
    """Independent expectation: {(sentence, image): dense union mask or None}."""
    sents = t["sentences.pkl"]
    keep = {s for s, r in sents.items()
            if selection == "all" or (selection == "absence") == r["is_negative"]}
    pairs = []
    if setting == "intra":
        for g in sorted(t["groups.pkl"].values(), key=lambda g: g["id"]):
            for s in sorted(set(g["inner_sent_id"]) & keep):
                pairs += [(s, i) for i in sorted(g["img_id"])]
    else:
        pairs = [(s, i) for s in sorted(keep) for i in sorted(t["images.pkl"])]
    out = []
    for s, i in pairs:
        im = t["images.pkl"][i]
        m = np.zeros((im["height"], im["width"]), np.uint8)
        for a in t["annotations.pkl"].values():
            if a["image_id"] == i and s in a["sent_id"]:
                seg = dict(a["segmentation"])
                if isinstance(seg["counts"], str):
                    seg["counts"] = seg["counts"].encode()
                m |= mask_utils.decode(seg)
        out.append((s, i, m))
    return out


@pytest.mark.parametrize("setting", ["intra", "inter"])
@pytest.mark.parametrize("selection", ["presence", "absence", "all"])
def test_convert_matches_independent_expectation(d3_root, setting, selection):
    root, t = d3_root
    ds = convert_d3(read_d3(root), setting, selection)
    exp = _expected(t, setting, selection)
    got = [(ds.expression(x.expression_id).extra["d3_sent_id"], x.image_id, x) for x in ds.targets]
    assert [(s, i) for s, i, _ in got] == [(s, i) for s, i, _ in exp]
    for (_, _, tgt), (_, _, m) in zip(got, exp):
        assert tgt.positive == bool(m.any())
        np.testing.assert_array_equal(masks.decode(tgt.segmentation), m)
    for e in ds.expressions:
        assert e.text == t["sentences.pkl"][e.extra["d3_sent_id"]]["raw_sent"]
    if setting == "intra":
        assert [g.id for g in ds.groups] == sorted(t["groups.pkl"])
    else:
        assert len(ds.groups) == 1


def test_shared_sentence_becomes_one_expression_per_group(d3_root):
    root, t = d3_root
    ds = convert_d3(read_d3(root))
    shared = [s for s, r in t["sentences.pkl"].items() if len(r["group_id"]) > 1]
    for s in shared:
        es = [e for e in ds.expressions if e.extra["d3_sent_id"] == s]
        assert sorted(e.group_id for e in es) == sorted(t["sentences.pkl"][s]["group_id"])


def test_grd_sized_generator_counts():
    """Pinned: the default generator is GRD-sized (106 groups, 10.6k images, 316 sentences)."""
    t = generate_d3()
    presence = [s for s in t["sentences.pkl"].values() if not s["is_negative"]]
    assert len(t["groups.pkl"]) == 106 and len(t["images.pkl"]) == 10600
    assert len(presence) == 316
    pairs = sum(len([s for s in g["inner_sent_id"] if not t["sentences.pkl"][s]["is_negative"]])
                * len(g["img_id"]) for g in t["groups.pkl"].values())
    assert pairs == 31900  # 316 sentences x 100 images + 3 listed in two groups


def test_cli_convert(d3_root, tmp_path, capsys):
    root, _ = d3_root
    out = tmp_path / "grd"
    code, stdout, _ = run_cli(["convert", "d3", "--anno-root", root, "--out", out], capsys)
    assert code == 0
    assert "31524" in stdout and "GRES paper" in stdout  # next to the paper's figures
    assert (out / "test.json").exists() and (out / "README.md").exists()
    code, _, _ = run_cli(["convert", "d3", "--anno-root", root, "--out", tmp_path / "x",
                          "--setting", "inter", "--expressions", "all"], capsys)
    assert code == 0


def test_bad_d3_inputs(d3_root, tmp_path, capsys):
    root, t = d3_root
    (root / "groups.pkl").unlink()
    code, _, err = run_cli(["convert", "d3", "--anno-root", root, "--out", tmp_path / "o"],
                           capsys)
    assert code == 2 and "groups.pkl: D³ pickle not found" in err
    bad = dict(t["groups.pkl"])
    g = dict(bad[2])
    del g["img_id"]
    bad[2] = g
    (root / "groups.pkl").write_bytes(pickle.dumps(bad))
    with pytest.raises(InputError, match=r"groups.pkl: key 2: missing field 'img_id'"):
        read_d3(root)
    bad[2] = dict(t["groups.pkl"][2], id=7)
    (root / "groups.pkl").write_bytes(pickle.dumps(bad))
    with pytest.raises(InputError, match="record id 7 differs from its key"):
        read_d3(root)
    (root / "groups.pkl").write_bytes(pickle.dumps(t["groups.pkl"]))
    ann = dict(t["annotations.pkl"])
    first = min(ann)
    ann[first] = dict(ann[first], image_id=10**9)
    (root / "annotations.pkl").write_bytes(pickle.dumps(ann))
    code, _, err = run_cli(["convert", "d3", "--anno-root", root, "--out", tmp_path / "o"],
                           capsys)
    assert code == 2 and f"annotation id {first}: image_id 1000000000 is not in images" in err
    assert not (tmp_path / "o").exists()


def test_img_root_check(d3_root, tmp_path, capsys):
    root, _ = d3_root
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    code, _, err = run_cli(["convert", "d3", "--anno-root", root, "--img-root", imgs, "--out",
                            tmp_path / "o"], capsys)
    assert code == 2 and "does not exist" in err
