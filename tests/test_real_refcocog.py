"""`grdkit build g-refcocog` on the real RefCOCOg (umd) sample from ../shared/data."""

import json
import pickle

import numpy as np
from pycocotools.coco import COCO

from grdkit import load_splits, masks

from .conftest import run_cli


def test_build_real_sample(tmp_path, refcocog_root, capsys):
    out = tmp_path / "g-refcocog"
    code, stdout, stderr = run_cli(["build", "g-refcocog", "--refer-root", refcocog_root,
                                    "--min-images", "1", "--out", out, "--no-progress"], capsys)
    assert code == 0, stderr
    assert "total" in stdout and "Traceback" not in stderr
    splits = load_splits(out)
    assert list(splits) == ["test", "train", "val"]
    # pinned: 15 refs with 28 distinct sentences -> 28 single-image groups, 1:1 negatives
    counts = {s: (len(d.groups), len(d.targets), sum(t.positive for t in d.targets))
              for s, d in splits.items()}
    assert counts == {"train": (9, 18, 9), "val": (10, 20, 10), "test": (9, 18, 9)}
    coco = COCO(str(refcocog_root / "instances.json"))
    refs = {}
    for r in pickle.loads((refcocog_root / "refs(umd).p").read_bytes()):
        for s in r["sentences"]:
            refs.setdefault((r["split"], " ".join(s["sent"].split())), set()).add(
                (r["image_id"], r["ann_id"]))
    for split, d in splits.items():
        for g in d.groups:
            e = d.expression(g.expression_ids[0])
            referred = refs[(split, e.text)]
            own_images = {img for img, _ in referred}
            for t in d.targets_of_group(g.id):
                if t.positive:
                    assert {(t.image_id, a) for a in t.ann_ids} <= referred
                    ref = np.zeros((d.image(t.image_id).height, d.image(t.image_id).width),
                                   np.uint8)
                    for a in t.ann_ids:
                        ref |= coco.annToMask(coco.anns[a])
                    np.testing.assert_array_equal(masks.decode(t.segmentation), ref)
                    assert ref.sum() > 0
                else:
                    assert t.image_id not in own_images
                    assert masks.area(t.segmentation) == 0
                    im = coco.imgs[t.image_id]
                    assert t.segmentation["size"] == [im["height"], im["width"]]
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "\npretty_name: G-RefCg\n" in card.split("\n---\n")[0]
    assert "refs(umd).p" in card
    info = json.loads((out / "val.json").read_text())["info"]
    assert info["sources"]["refs(umd).p"] == (
        "503be88dc37852e02522e3d55561f80bf1ce6f8f25eb127dc3fb18cb4ae6c1e6")
