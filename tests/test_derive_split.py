"""grdkit derive split (a train / val split by group), grdkit demo (the bundled sample as files)
and --refer-root given as a parent folder: the newcomer's paths of issue 31."""

import hashlib
import json
import os
import pickle

import numpy as np
import pytest

import grdkit
from grdkit.builders.cosod import build_cosod
from grdkit.errors import InputError
from grdkit.format.derive import split_groups
from grdkit.testing import demo_root, write_cosod_folders

from .conftest import REFCOCOG, need, run_cli


def _cosod(tmp_path, groups=None):
    root = write_cosod_folders(tmp_path / "photos", groups or {f"g{k}": 3 for k in range(10)})
    ds, _ = build_cosod(root / "image", root / "binary", negatives=1, seed=0)
    return ds


def test_split_is_by_whole_groups_and_loses_nothing(tmp_path):
    ds = _cosod(tmp_path)
    parts, counts = split_groups(ds, 0.2, seed=0)
    tr, va = parts["train"], parts["val"]
    assert (len(tr.groups), len(va.groups)) == (8, 2)  # round(0.2 x 10)
    assert {g.id for g in tr.groups}.isdisjoint({g.id for g in va.groups})
    assert {g.id for g in tr.groups} | {g.id for g in va.groups} == {g.id for g in ds.groups}
    # every target of the source is on exactly the side of its expression's group, unchanged
    side = {g.id: "train" for g in tr.groups} | {g.id: "val" for g in va.groups}
    group_of = {e.id: e.group_id for e in ds.expressions}
    for t in ds.targets:
        part = parts[side[group_of[t.expression_id]]]
        assert part.target(t.expression_id, t.image_id) == t
    assert len(tr.targets) + len(va.targets) == len(ds.targets)
    # images: exactly those the side's groups use (negatives may be shared between sides)
    for part in parts.values():
        assert {im.id for im in part.images} == {i for g in part.groups for i in g.image_ids}
    shared = {im.id for im in tr.images} & {im.id for im in va.images}
    assert counts.kept["shared_images"] == len(shared)
    assert (tr.split, va.split) == ("train", "val")
    assert va.info["recipe"]["derive_split"] == {"val": 0.2, "seed": 0, "source_split": "test",
                                                 "by": "group"}


def test_split_is_deterministic_and_follows_the_seed(tmp_path):
    ds = _cosod(tmp_path)
    a = [g.id for g in split_groups(ds, 0.3, 0)[0]["val"].groups]
    b = [g.id for g in split_groups(ds, 0.3, 0)[0]["val"].groups]
    others = {tuple(g.id for g in split_groups(ds, 0.3, s)[0]["val"].groups) for s in range(8)}
    assert a == b and len(a) == 3
    assert len(others) > 1  # the seed changes the draw
    # the rule as documented: numpy's permutation seeded with (seed, crc32(name)), first n_val
    import zlib
    ids = sorted(g.id for g in ds.groups)
    order = np.random.default_rng([0, zlib.crc32(ds.name.encode())]).permutation(len(ids))
    assert sorted(a) == sorted(ids[i] for i in order[:3])


@pytest.mark.parametrize(("n", "val", "n_val"), [(2, 0.01, 1), (2, 0.99, 1), (5, 0.5, 2),
                                                  (3, 0.9, 2)])
def test_split_keeps_a_group_on_each_side(tmp_path, n, val, n_val):
    ds = _cosod(tmp_path, {f"g{k}": 2 for k in range(n)})
    parts, _ = split_groups(ds, val, 1)
    assert len(parts["val"].groups) == n_val and len(parts["train"].groups) == n - n_val


@pytest.mark.parametrize("val", [0, 1, -0.5, 1.5, float("nan")])
def test_split_refuses_a_share_outside_0_1(tmp_path, val):
    with pytest.raises(InputError, match="share of the groups"):
        split_groups(_cosod(tmp_path, {"a": 2, "b": 2}), val)


def test_split_cli_writes_byte_identical_files_and_refuses_one_group(tmp_path, capsys):
    src = tmp_path / "ds.json"
    grdkit.save_dataset(_cosod(tmp_path), src)
    digests = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        code, text, err = run_cli(["derive", "split", src, "--val", "0.2", "--seed", "3",
                                   "--out", out], capsys)
        assert code == 0, err
        assert sorted(p.name for p in out.iterdir()) == ["README.md", "train.json", "val.json"]
        digests.append([hashlib.sha256((out / f).read_bytes()).hexdigest()
                        for f in ("train.json", "val.json")])
        assert grdkit.load_dataset(out / "val.json").split == "val"
    assert digests[0] == digests[1]
    assert "train" in text and "val" in text
    one = tmp_path / "one.json"
    grdkit.save_dataset(_cosod(tmp_path / "x", {"only": 3}), one)
    code, _, err = run_cli(["derive", "split", one, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "holds 1 group(s)" in err and "\n" not in err.strip()
    code, _, err = run_cli(["derive", "split", src, "--val", "1.5", "--out", tmp_path / "o"],
                           capsys)
    assert code == 2 and "--val" in err
    code, _, err = run_cli(["derive", "split", src, "--out", tmp_path], capsys)
    assert code == 2 and "input" in err  # an output folder holding the input is refused


# -- grdkit demo -----------------------------------------------------------------------------
def test_demo_files_build_what_the_bundled_sample_builds(tmp_path, capsys):
    code, _text, err = run_cli(["demo", "--out", tmp_path / "demo"], capsys)
    assert code == 0, err
    demo = tmp_path / "demo"
    for f in demo_root().iterdir():
        if f.suffix in (".p", ".json"):
            assert (demo / "refer" / f.name).read_bytes() == f.read_bytes()
    inst = json.loads((demo_root() / "instances.json").read_text())
    from PIL import Image as PILImage

    for im in inst["images"]:
        with PILImage.open(demo / "images" / im["file_name"]) as pic:
            assert pic.size == (im["width"], im["height"])
    # the painted objects are where the annotations are: an annotated pixel is not background
    im = inst["images"][0]
    ann = next(a for a in inst["annotations"] if a["image_id"] == im["id"] and not a["iscrowd"])
    from pycocotools import mask as mask_utils

    m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"],
                                                                   im["height"], im["width"])))
    with PILImage.open(demo / "images" / im["file_name"]) as pic:
        arr = np.asarray(pic.convert("RGB")).astype(int)
    assert abs(arr[m > 0].mean() - arr[m == 0].mean()) > 20
    assert len(list((demo / "photos" / "image").glob("*/*.jpg"))) == 25
    assert len(list((demo / "photos" / "binary").glob("*/*.png"))) == 25
    # building from the written folder gives the bytes the bundled sample gives
    for name, root in (("a", demo / "refer"), ("b", None)):
        argv = ["build", "g-refcocog", "--out", tmp_path / name, "--no-progress"]
        code, _, err = run_cli(argv + (["--refer-root", root] if root else []), capsys)
        assert code == 0, err
    assert (tmp_path / "a" / "val.json").read_bytes() == (tmp_path / "b" / "val.json").read_bytes()
    # same call, same bytes
    run_cli(["demo", "--out", tmp_path / "again"], capsys)
    for f in sorted((demo / "images").iterdir())[:5]:
        assert (tmp_path / "again" / "images" / f.name).read_bytes() == f.read_bytes()


# -- --refer-root: the folder, or a parent of it ---------------------------------------------
def test_refer_root_may_be_a_parent_in_the_refer_toolkit_layout(tmp_path, capsys):
    need(REFCOCOG)
    (tmp_path / "refer" / "data").mkdir(parents=True)
    os.symlink(REFCOCOG, tmp_path / "refer" / "data" / "refcocog")
    outs = {}
    for k, root in enumerate(("refer/data/refcocog", "refer/data", "refer")):
        out = tmp_path / f"o{k}"
        code, _, err = run_cli(["build", "g-refcocog", "--refer-root", tmp_path / root,
                                "--min-images", "1", "--out", out, "--no-progress"], capsys)
        assert code == 0, (root, err)
        outs[root] = (out / "val.json").read_bytes()
    assert len(set(outs.values())) == 1
    assert len(grdkit.load_dataset(tmp_path / "o0" / "val.json").groups) == 10


def test_refer_root_errors_name_the_absolute_path_and_the_choices(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["build", "g-refcocog", "--refer-root", "../nowhere/refcocog",
                            "--out", "o", "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert str((tmp_path / "../nowhere/refcocog").absolute()) in err
    assert "github.com/lichengunc/refer" in err
    # two subfolders with a refs(unc).p: ambiguous, both named
    for d in ("a", "b"):
        (tmp_path / "p" / d).mkdir(parents=True)
        (tmp_path / "p" / d / "refs(unc).p").write_bytes(pickle.dumps([]))
    code, _, err = run_cli(["build", "g-refcoco", "--refer-root", "p", "--out", "o",
                            "--no-progress"], capsys)
    assert code == 2 and "several subfolders" in err and "a, b" in err
    # the dataset's own folder name wins over the others
    (tmp_path / "p" / "refcoco").mkdir()
    (tmp_path / "p" / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([]))
    code, _, err = run_cli(["build", "g-refcoco", "--refer-root", "p", "--out", "o",
                            "--no-progress"], capsys)
    assert code == 2 and "p/refcoco/instances.json" in err
