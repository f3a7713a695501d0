"""`grdkit export refer` / `export grefcoco`: the outputs load through pycocotools and through the
owners' loaders, transcribed here (Python 3, logic unchanged) from:

* lichengunc/refer ``refer.py`` @ e3bbaa30d2ca41cf0e5c0d3819d7e4ed9fd38fff: ``REFER.__init__``
  (pickle + instances.json), ``createIndex``, ``getMask``;
* henghuiding/ReLA ``gres_model/data/datasets/grefer.py`` @
  3ca955198da8ace68f8980b6fcbada0791cc51c2: ``G_REFER.__init__`` (``grefs(<splitBy>).json``),
  ``createIndex``, ``getMask``, ``getMaskByRef(merge=True)``; and the asserts of
  ``gres_model/data/datasets/grefcoco.py`` (same commit) on no-target refs;

and they round-trip through `grdkit build` exactly (same expressions, groups, images, targets;
masks byte-equal RLE)."""

import json
import pickle
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

import grdkit
from grdkit.export.refer import export_grefcoco, export_refer, mask_polygons
from grdkit.format import masks
from grdkit.testing.synth import grefs_from_refer
from grdkit.testing.synth import write_grefcoco as synth_write_grefcoco

from .conftest import REFCOCOG, load_refs_py3, need, run_cli
from .test_grefcoco import write_grefcoco


class Refer:
    """lichengunc/refer refer.py @ e3bbaa30 (REFER), the parts LAVT / CRIS call."""

    def __init__(self, folder: Path, split_by: str):
        with open(folder / f"refs({split_by}).p", "rb") as f:  # refer: pickle.load(open(...))
            self.data = {"refs": pickle.load(f)}
        instances = json.loads((folder / "instances.json").read_text())
        self.data["images"] = instances["images"]
        self.data["annotations"] = instances["annotations"]
        self.data["categories"] = instances["categories"]
        self.createIndex()

    def createIndex(self):
        Anns, Imgs, Cats, imgToAnns = {}, {}, {}, {}
        for ann in self.data["annotations"]:
            Anns[ann["id"]] = ann
            imgToAnns[ann["image_id"]] = imgToAnns.get(ann["image_id"], []) + [ann]
        for img in self.data["images"]:
            Imgs[img["id"]] = img
        for cat in self.data["categories"]:
            Cats[cat["id"]] = cat["name"]
        Refs, imgToRefs, refToAnn, annToRef, catToRefs = {}, {}, {}, {}, {}
        Sents, sentToRef, sentToTokens = {}, {}, {}
        for ref in self.data["refs"]:
            ref_id, ann_id = ref["ref_id"], ref["ann_id"]
            category_id, image_id = ref["category_id"], ref["image_id"]
            Refs[ref_id] = ref
            imgToRefs[image_id] = imgToRefs.get(image_id, []) + [ref]
            catToRefs[category_id] = catToRefs.get(category_id, []) + [ref]
            refToAnn[ref_id] = Anns[ann_id]
            annToRef[ann_id] = ref
            for sent in ref["sentences"]:
                Sents[sent["sent_id"]] = sent
                sentToRef[sent["sent_id"]] = ref
                sentToTokens[sent["sent_id"]] = sent["tokens"]
        self.Refs, self.Anns, self.Imgs, self.Sents = Refs, Anns, Imgs, Sents
        self.refToAnn, self.sentToRef = refToAnn, sentToRef

    def getMask(self, ref):
        ann = self.refToAnn[ref["ref_id"]]
        image = self.Imgs[ref["image_id"]]
        if type(ann["segmentation"][0]) == list:  # polygon
            rle = mask_utils.frPyObjects(ann["segmentation"], image["height"], image["width"])
        else:
            rle = ann["segmentation"]
        m = mask_utils.decode(rle)
        m = np.sum(m, axis=2)
        m = m.astype(np.uint8)
        area = sum(mask_utils.area(rle))
        return {"mask": m, "area": area}


class GRefer:
    """henghuiding/ReLA grefer.py @ 3ca95519 (G_REFER): loading, createIndex, getMaskByRef."""

    def __init__(self, folder: Path, split_by: str = "unc"):
        self.data = {"refs": json.loads((folder / f"grefs({split_by}).json").read_bytes())}
        instances = json.loads((folder / "instances.json").read_text())
        self.data["images"] = instances["images"]
        self.data["annotations"] = instances["annotations"]
        self.data["categories"] = instances["categories"]
        Anns, Imgs = {-1: None}, {}
        for ann in self.data["annotations"]:
            Anns[ann["id"]] = ann
        for img in self.data["images"]:
            Imgs[img["id"]] = img
        Refs, refToAnn, Sents = {}, {}, {}
        for ref in self.data["refs"]:
            assert ref["ref_id"] not in Refs, "Duplicate ref id"
            Refs[ref["ref_id"]] = ref
            ann_id = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
            refToAnn[ref["ref_id"]] = [Anns[a] for a in ann_id]
            for sent in ref["sentences"]:
                Sents[sent["sent_id"]] = sent
        self.Refs, self.Anns, self.Imgs, self.refToAnn, self.Sents = Refs, Anns, Imgs, \
            refToAnn, Sents

    def getMask(self, ann):
        if not ann:
            return None
        if ann["iscrowd"]:
            raise ValueError("Crowd object")
        image = self.Imgs[ann["image_id"]]
        if type(ann["segmentation"][0]) == list:  # polygon
            rle = mask_utils.frPyObjects(ann["segmentation"], image["height"], image["width"])
        else:
            rle = ann["segmentation"]
        m = mask_utils.decode(rle)
        m = np.sum(m, axis=2)
        return {"mask": m.astype(np.uint8), "area": sum(mask_utils.area(rle))}

    def getMaskByRef(self, ref):
        ann_ids = ref["ann_id"]
        if ann_ids == [-1]:
            img = self.Imgs[ref["image_id"]]
            return {"mask": np.zeros([img["height"], img["width"]], dtype=np.uint8),
                    "empty": True}
        anns = [self.Anns[a] for a in ann_ids]
        mask_list = [self.getMask(ann) for ann in anns if not ann["iscrowd"]]
        merged = sum([m["mask"] for m in mask_list])
        merged[np.where(merged > 1)] = 1
        return {"mask": merged, "empty": False}


def same_samples(a: dict, b: dict) -> None:
    """The samples of two builds: everything but ``info`` (sources, versions)."""
    assert a.keys() == b.keys()
    for split, ds in a.items():
        da, db = ds.to_dict(), b[split].to_dict()
        for section in ("images", "expressions", "groups", "targets"):
            assert da[section] == db[section], (split, section)


def test_polygons_rasterise_back_exactly():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:97, :131]
    blob = (((yy - 48) / 30.0) ** 2 + ((xx - 65) / 40.0) ** 2 < 1).astype(np.uint8)
    blob[45:50, 60:70] = 0  # a hole
    cases = [blob, np.ones((3, 4), np.uint8)]
    for h, w, p in [(1, 1, 1.0), (37, 53, 0.3), (20, 9, 0.8), (64, 64, 0.05), (120, 160, 0.5)]:
        cases += [(rng.random((h, w)) < p).astype(np.uint8) for _ in range(3)]
    for m in cases:
        if not m.any():
            continue
        h, w = m.shape
        rle = masks.encode(m)
        polys = mask_polygons(rle)
        assert len(polys) == 1  # one part: refer's getMask sums mask.area over the parts
        back = mask_utils.decode(mask_utils.frPyObjects(polys, h, w))[:, :, 0]
        assert np.array_equal(back, m)
        assert masks.to_rle(polys, h, w)["counts"] == rle["counts"]
        x, y = polys[0][0::2], polys[0][1::2]  # every point inside the mask's bounding box
        bx, by, bw, bh = masks.bbox(rle)
        assert min(x) == bx and max(x) == bx + bw and min(y) == by and max(y) == by + bh
    assert mask_polygons(masks.encode(np.zeros((2, 2), np.uint8))) == []


def test_refcocog_round_trip_and_owner_loaders(tmp_path, capsys):
    need(REFCOCOG)
    built = tmp_path / "built"
    code, _, err = run_cli(["build", "refcocog", "--refer-root", REFCOCOG, "--out", built],
                           capsys)
    assert code == 0, err
    out = tmp_path / "refer"
    code, text, err = run_cli(["export", "refer", built, "--out", out], capsys)
    assert code == 0, err
    assert "refs" in text and "15" in text and "sentences" in text and "28" in text
    splits = grdkit.load_splits(built)
    # the owner's loader: every sentence's ref mask is the target's mask
    api = Refer(out, "umd")
    own = load_refs_py3(REFCOCOG / "refs(umd).p")
    assert {r["ref_id"] for r in api.Refs.values()} == {r["ref_id"] for r in own}
    assert {s for r in own for s in r["sent_ids"]} == set(api.Sents)
    n = 0
    for ds in splits.values():
        for t in ds.targets:
            sid = ds.expression(t.expression_id).extra["sent_id"]
            ref = api.sentToRef[sid]
            assert ref["ann_id"] == t.ann_ids[0]  # the COCO annotation id is kept
            assert np.array_equal(api.getMask(ref)["mask"], masks.decode(t.segmentation))
            n += 1
    assert n == 28
    coco = COCO(str(out / "instances.json"))  # pycocotools reads it (annToMask: polygons)
    for ann_id in coco.getAnnIds():
        ann = coco.loadAnns(ann_id)[0]
        assert coco.annToMask(ann).sum() == ann["area"] > 0
    rebuilt = tmp_path / "rebuilt"
    code, _, err = run_cli(["build", "refcocog", "--refer-root", out, "--out", rebuilt], capsys)
    assert code == 0, err
    same_samples(splits, grdkit.load_splits(rebuilt))
    again = tmp_path / "again"
    export_refer(splits, again, "umd")
    for name in ("refs(umd).p", "instances.json"):  # byte-deterministic
        assert (again / name).read_bytes() == (out / name).read_bytes()


def _check_grefer(folder: Path, splits: dict) -> None:
    api = GRefer(folder)
    by_sent = {s: r for r in api.Refs.values() for s in r["sent_ids"]}
    for ds in splits.values():
        for t in ds.targets:
            e = ds.expression(t.expression_id)
            refs = [r for r in api.Refs.values() if r["image_id"] == t.image_id and any(
                s["grdkit_expression_id"] == e.id for s in r["sentences"])]
            assert len(refs) == 1
            ref = refs[0]
            if "sent_id" in e.extra:
                assert by_sent[e.extra["sent_id"]] is ref
            got = api.getMaskByRef(ref)
            assert got["empty"] == (not t.positive) == ref["no_target"]
            if not t.positive:  # ReLA grefcoco.py: no-target refs are exactly ann_id [-1]
                assert ref["ann_id"] == [-1] and api.refToAnn[ref["ref_id"]] == [None]
            assert np.array_equal(got["mask"], masks.decode(t.segmentation))


def test_grefcoco_round_trip_and_owner_loader(tmp_path, capsys):
    """gRefCOCO's layout with every case (multi-target, crowd, no-target, refs without
    sentences) in; `build grefcoco` of the export gives the same samples."""
    root = write_grefcoco(tmp_path / "g")
    splits, _ = grdkit.build_dataset("grefcoco", root)
    out = tmp_path / "export"
    summary = export_grefcoco(splits, out)
    assert summary["no_target_refs"] == 2 and summary["annotations_new"] == 0
    _check_grefer(out, splits)
    COCO(str(out / "instances.json"))
    again, _ = grdkit.build_dataset("grefcoco", out)
    same_samples(splits, again)


def test_grefcoco_round_trip_on_real_polygons(tmp_path):
    need(REFCOCOG)
    refs = load_refs_py3(REFCOCOG / "refs(umd).p")
    instances = json.loads((REFCOCOG / "instances.json").read_text())
    grefs = grefs_from_refer(refs, instances, seed=1, p_no_target=0.6, p_multi=0.6)
    root = tmp_path / "g"
    synth_write_grefcoco(root, grefs, instances)
    splits, _ = grdkit.build_dataset("grefcoco", root)
    assert any(len(t.ann_ids) > 1 for ds in splits.values() for t in ds.targets)
    assert any(not t.positive for ds in splits.values() for t in ds.targets)
    out = tmp_path / "export"
    export_grefcoco(splits, out)
    _check_grefer(out, splits)
    again, _ = grdkit.build_dataset("grefcoco", out)
    same_samples(splits, again)


def test_grefc_groups_and_negatives_are_kept_and_counted(tmp_path, capsys):
    """G-RefCg (groups of images, sampled negatives) to both layouts: refer keeps the
    negatives in instances.json["grdkit"], gRefCOCO writes them as no-target refs."""
    need(REFCOCOG)
    splits, _ = grdkit.build_dataset("g-refcocog", REFCOCOG, min_images=1)
    negatives = {(s, t.expression_id, t.image_id) for s, ds in splits.items()
                 for t in ds.targets if not t.positive}
    assert negatives
    out = tmp_path / "refer"
    summary = export_refer(splits, out)
    inst = json.loads((out / "instances.json").read_text())
    assert {tuple(x) for x in inst["grdkit"]["negatives"]} == negatives
    assert summary["negatives_in_extra"] == len(negatives)
    assert summary["groups_in_extra"] == sum(len(ds.groups) for ds in splits.values())
    api = Refer(out, "umd")
    assert len(api.Refs) == sum(t.positive for ds in splits.values() for t in ds.targets)
    g = tmp_path / "grefs"
    summary = export_grefcoco(splits, g)
    assert summary["no_target_refs"] == len(negatives)
    _check_grefer(g, splits)
    sent_ids = [s["sent_id"] for r in GRefer(g).Refs.values() for s in r["sentences"]]
    assert len(sent_ids) == len(set(sent_ids))  # one sentence in several refs: new ids


def test_export_refuses_a_split_file_that_is_not_one(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    code, _, err = run_cli(["export", "refer", bad, "--out", tmp_path / "o"], capsys)
    assert code == 2 and err.startswith("grdkit: error:") and "Traceback" not in err
