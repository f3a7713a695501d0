"""Canonical format: round trip, lookups, determinism, schema, and errors naming the record."""

import json

import jsonschema
import pytest

from grdkit import GresDataset, load_dataset, save_dataset
from grdkit.builders import build_dataset
from grdkit.errors import InputError
from grdkit.format import json_schema
from grdkit.format.dataset import dumps, load_splits
from grdkit.format.masks import empty_rle
from grdkit.testing.synth import demo_root

SCHEMA = json_schema()


@pytest.fixture(scope="module")
def demo_val():
    return build_dataset("g-refcocog", demo_root())[0]["val"]


def test_round_trip_is_byte_identical(tmp_path, demo_val):
    p = tmp_path / "val.json"
    save_dataset(demo_val, p)
    again = load_dataset(p)
    q = tmp_path / "val2.json"
    save_dataset(again, q)
    assert p.read_bytes() == q.read_bytes()
    assert again.to_dict() == demo_val.to_dict()
    assert json.loads(p.read_text()) == demo_val.to_dict()  # the file is plain JSON


def test_schema_accepts_built_files(demo_val):
    jsonschema.validate(json.loads(dumps(demo_val)), SCHEMA)


def test_lookups(demo_val):
    ds = demo_val
    g = ds.groups[0]
    e = ds.expression(g.expression_ids[0])
    assert e.group_id == g.id
    ts = ds.targets_of_group(g.id)
    assert [(t.expression_id, t.image_id) for t in ts] == [(e.id, i) for i in g.image_ids]
    assert ts == ds.targets_of_expression(e.id)
    t = ts[0]
    assert ds.target(e.id, t.image_id) is t and ds.has_target(e.id, t.image_id)
    assert t in ds.targets_of_image(t.image_id)
    assert ds.image(t.image_id).height == t.segmentation["size"][0]
    assert sum(1 for _ in ds.pairs()) == len(ds) == len(ds.targets)
    with pytest.raises(KeyError):
        ds.target(10**9, 1)


def test_extra_keys_survive(tmp_path, demo_val):
    d = demo_val.to_dict()
    d["images"][0]["flickr_url"] = "http://x"
    ds = GresDataset.from_dict(d)
    assert ds.to_dict()["images"][0]["flickr_url"] == "http://x"


def _write(tmp_path, d):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d["targets"][1].pop("positive"),
     r"targets\[1\] \(expression_id \d+, image_id \d+\): missing key 'positive'"),
    (lambda d: d["images"][0].__setitem__("height", "480"),
     r"images\[0\] \(id \d+\): key 'height' is str"),
    (lambda d: d["groups"][0].__setitem__("image_ids", [1, "2"]),
     r"groups\[0\] \(id 1\): key 'image_ids' must be a list of integers"),
    (lambda d: d["targets"][0].__setitem__("segmentation", {"size": [1, 1], "counts": [1]}),
     r"targets\[0\].*compressed RLE"),
    (lambda d: d["images"].append(dict(d["images"][0])), r"images\[\d+\] \(id \d+\): duplicate id"),
    (lambda d: d["targets"].append(dict(d["targets"][0])), r"duplicate target pair"),
    (lambda d: d.pop("groups"), "missing top-level key 'groups'"),
])
def test_malformed_records_are_named(tmp_path, demo_val, mutate, msg):
    d = demo_val.to_dict()
    mutate(d)
    p = _write(tmp_path, d)
    with pytest.raises(InputError, match=msg) as e:
        load_dataset(p)
    assert str(p) in str(e.value)


def test_invalid_json_names_line(tmp_path, demo_val):
    text = dumps(demo_val).splitlines()
    text[3] = '{"id":oops},'  # break the 4th line (first image record)
    p = tmp_path / "val.json"
    p.write_text("\n".join(text))
    with pytest.raises(InputError, match="line 4 column"):
        load_dataset(p)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_dataset(tmp_path / "nope.json")
    with pytest.raises(InputError, match="is a folder"):
        load_dataset(tmp_path)
    with pytest.raises(InputError, match="no <split>.json"):
        load_splits(tmp_path)


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d["targets"].pop(3), r"group id \d+: has no target for"),
    (lambda d: d["groups"][0]["image_ids"].append(10**7), r"group id 1: lists missing image"),
    (lambda d: d["expressions"][0].__setitem__("group_id", 2),
     r"expression id 1: names group 2, which does not list it"),
    (lambda d: d["targets"].append(dict(d["targets"][0], image_id=(im := next(
        im for im in d["images"] if im["id"] not in d["groups"][0]["image_ids"]))["id"],
        positive=False, segmentation=empty_rle(im["height"], im["width"]))),
     r"targets\[\d+\] \(expression_id \d+, image_id \d+\): target outside its expression's group"),
])
def test_require_complete_names_the_problem(tmp_path, demo_val, mutate, msg, capsys):
    d = demo_val.to_dict()
    mutate(d)
    p = _write(tmp_path, d)
    ds = load_dataset(p)  # loads: the format is fine, the references are not
    with pytest.raises(InputError, match=msg):
        ds.require_complete()
    from .conftest import run_cli

    preds = tmp_path / "preds.json"
    preds.write_text("[]")
    code, _, err = run_cli(["eval", preds, "--gt", p], capsys)
    assert code == 2 and "grdkit validate" in err and "Traceback" not in err
