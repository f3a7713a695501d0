"""The classic RES builders (refcoco / refcoco+ / refcocog): counts, masks, fail-closed checks."""

import json
import pickle

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from grdkit import masks
from grdkit.builders import build_dataset
from grdkit.builders.res import build_res
from grdkit.registry import dataset_spec, refer_datasets
from grdkit.testing.synth import SPLIT_RATIOS, generate_refer, write_refer

from .conftest import run_cli

NAMES = {"refcoco": ("unc",), "refcoco+": ("unc",), "refcocog": ("umd", "google")}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Generated refer data in all three partitions (1% crowd instances, repeated phrases)."""
    refs, inst = generate_refer(120, seed=7, instances_per_image=4.0)
    # a ref naming a crowd annotation and a blank sentence, both must be handled as documented
    crowd = next(a for a in inst["annotations"] if a["iscrowd"])
    for by in refs.values():
        by.append({"ref_id": 99999, "image_id": crowd["image_id"], "ann_id": crowd["id"],
                   "category_id": crowd["category_id"],
                   "split": next(r["split"] for r in by if r["image_id"] == crowd["image_id"])
                   if any(r["image_id"] == crowd["image_id"] for r in by) else "train",
                   "sentences": [{"sent_id": 999990, "sent": "the crowd", "raw": "The crowd."},
                                 {"sent_id": 999991, "sent": "  ", "raw": "  "}]})
    root = tmp_path_factory.mktemp("res") / "refer"
    write_refer(root, refs, inst)
    return root, refs, inst


def expected_counts(refs):
    """Independent count: samples = non-blank sentences, images = images with one, per split."""
    out = {}
    for r in refs:
        for s in r["sentences"]:
            if (s.get("raw") or s["sent"]).strip():
                d = out.setdefault(r["split"], {"samples": 0, "images": set()})
                d["samples"] += 1
                d["images"].add(r["image_id"])
    return {k: (v["samples"], len(v["images"])) for k, v in out.items()}


@pytest.mark.parametrize("name,split_by", [(n, b) for n, bs in NAMES.items() for b in bs])
def test_counts_and_masks_on_generated_refer_data(generated, name, split_by):
    root, refs, inst = generated
    ds, report = build_dataset(name, root, split_by)
    exp = expected_counts(refs[split_by])
    spec = dataset_spec(name)
    assert list(ds) == [s for s in spec.splits_of(split_by) if s in exp]
    assert {s: (len(d.expressions), len(d.images)) for s, d in ds.items()} == exp
    assert {s: (rp["expressions"], rp["images"]) for s, rp in report.splits.items()} == exp
    assert sum(rp["empty_sentences"] for rp in report.splits.values()) == 1
    anns = {a["id"]: a for a in inst["annotations"]}
    ims = {i["id"]: i for i in inst["images"]}
    by_sent = {s["sent_id"]: r for r in refs[split_by] for s in r["sentences"]}
    for split, d in ds.items():
        assert len(d.targets) == len(d.expressions) == len({e.extra["sent_id"]
                                                            for e in d.expressions})
        assert all(t.positive for t in d.targets)
        assert [e.id for e in d.expressions] == list(range(1, len(d.expressions) + 1))
        for e in d.expressions:
            r = by_sent[e.extra["sent_id"]]
            assert (r["ref_id"], r["split"], e.group_id) == (e.extra["ref_id"], split,
                                                            r["image_id"])
            t = d.target(e.id, r["image_id"])
            # refer getMask: annToMask of the ref's annotation, crowd RLEs included
            a, im = anns[r["ann_id"]], ims[r["image_id"]]
            seg = a["segmentation"]
            rle = (mask_utils.merge(mask_utils.frPyObjects(seg, im["height"], im["width"]))
                   if isinstance(seg, list)
                   else mask_utils.frPyObjects(seg, im["height"], im["width"]))
            np.testing.assert_array_equal(masks.decode(t.segmentation),
                                          mask_utils.decode(rle))
    assert sum(rp["crowd_targets"] for rp in report.splits.values()) == 1


def test_deterministic_bytes_and_no_options(generated, tmp_path, capsys):
    root, *_ = generated
    outs = []
    for k in range(2):
        code, out, err = run_cli(["build", "refcoco", "--refer-root", root, "--out",
                                  tmp_path / str(k), "--no-progress"], capsys)
        assert code == 0, err
        outs.append({p.name: p.read_bytes() for p in (tmp_path / str(k)).iterdir()})
    assert outs[0] == outs[1] and set(outs[0]) == {"train.json", "val.json", "testA.json",
                                                    "testB.json", "README.md"}
    assert "120624" in out and "142210" in out  # published counts printed beside ours
    card = outs[0]["README.md"].decode()
    assert "RefCOCO (refcoco), RES setting" in card and "120,624" in card
    code, _, err = run_cli(["build", "refcocog", "--refer-root", root, "--out", tmp_path / "x",
                            "--neg-ratio", "2"], capsys)
    assert code == 2 and "--neg-ratio does not apply" in err


def test_registry_published_counts():
    """LTS §4.1: the per-split samples add up to the published expression totals; MABP §IV-A
    fills gRefCOCO's."""
    for name in ("refcoco", "refcoco+"):
        spec = dataset_spec(name)
        assert sum(spec.paper_splits["unc"].values()) == spec.paper["expressions"]
        assert tuple(spec.paper_splits["unc"]) == spec.splits
    assert dataset_spec("refcoco").paper_splits["unc"]["train"] == 120624
    assert dataset_spec("refcoco+").paper_splits["unc"]["testB"] == 4889
    assert dataset_spec("refcocog").paper["expressions"] == 104560
    assert dataset_spec("refcocog").splits_of("google") == ("train", "val")
    assert dataset_spec("grefcoco").paper == {"expressions": 278232,
                                              "multi_target_expressions": 80022,
                                              "no_target_expressions": 32202, "images": 19994}
    assert {"refcoco", "refcoco+", "refcocog"} <= set(refer_datasets())


def test_real_refcocog_one_sample_per_sentence(refcocog_root):
    with open(refcocog_root / "refs(umd).p", "rb") as f:
        refs = pickle.load(f)
    inst = json.loads((refcocog_root / "instances.json").read_text())
    ds, _ = build_res("refcocog", refcocog_root)
    n_sent = {s: sum(len(r["sentences"]) for r in refs if r["split"] == s)
              for s in ("train", "val", "test")}
    assert {s: len(d.expressions) for s, d in ds.items()} == n_sent == {"train": 9, "val": 10,
                                                                        "test": 9}
    assert {s: len(d.images) for s, d in ds.items()} == {"train": 5, "val": 5, "test": 5}
    anns = {a["id"]: a for a in inst["annotations"]}
    for d in ds.values():
        for t in d.targets:
            ref = next(r for r in refs if r["ref_id"] == d.expression(t.expression_id)
                       .extra["ref_id"])
            assert t.ann_ids == (ref["ann_id"],)
            im = d.image(t.image_id)
            seg = anns[ref["ann_id"]]["segmentation"]
            ref_mask = mask_utils.decode(mask_utils.merge(
                mask_utils.frPyObjects(seg, im.height, im.width)))
            np.testing.assert_array_equal(masks.decode(t.segmentation), ref_mask)
    raw = {s["sent_id"]: " ".join(s["raw"].split()) for r in refs for s in r["sentences"]}
    assert all(e.text == raw[e.extra["sent_id"]] for d in ds.values() for e in d.expressions)


@pytest.mark.parametrize("mutate,message", [
    (lambda refs: refs[0].update(split="testC"), "split 'testC' is not a split of RefCOCOg"),
    (lambda refs: refs[0].update(ann_id=10 ** 9), "is not in instances.json"),
    (lambda refs: refs[0].update(sentences=[]), "sentences must be a non-empty list"),
])
def test_bad_refs_exit_2_naming_the_ref(refer_copy, tmp_path, capsys, mutate, message):
    p = refer_copy / "refs(umd).p"
    refs = pickle.loads(p.read_bytes())
    mutate(refs)
    p.write_bytes(pickle.dumps(refs, protocol=2))
    code, _, err = run_cli(["build", "refcocog", "--refer-root", refer_copy, "--out",
                            tmp_path / "o"], capsys)
    assert code == 2 and message in err and "refs(umd).p" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_grefs_file_is_refused(tmp_path):
    root = tmp_path / "g"
    root.mkdir()
    (root / "grefs(unc).json").write_text("[]")
    (root / "instances.json").write_text(json.dumps({"images": [], "annotations": []}))
    from grdkit.errors import InputError

    with pytest.raises(InputError, match="gRefCOCO file"):
        build_res("refcoco", root)


def test_split_ratios_cover_the_registry():
    for name, bys in NAMES.items():
        for b in bys:
            assert {s for s, _ in SPLIT_RATIOS[b]} == set(dataset_spec(name).splits_of(b))
