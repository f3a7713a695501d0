"""grdkit.torch.GRESDataset: pair and group items from real files, torchvision v2 transforms on
image and mask together, collates, determinism with DataLoader workers, and the epoch unit
(MABP's epoch counts refs: buptLwz/MABP refcoco_mapper.py @ ec810ea, lines 173-174)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the grdkit[baselines] extra")
from torchvision import tv_tensors
from torchvision.transforms import v2

import grdkit
from grdkit.format import masks
from grdkit.torch import GRESDataset, collate, collate_groups

from .conftest import COCO_IMAGES, MSRC_COW, REFCOCOG, SHARED, cow_dataset, load_refs_py3, need


def test_pair_items_are_the_files_and_the_masks():
    need(COCO_IMAGES), need(MSRC_COW)
    ds = cow_dataset()
    data = GRESDataset(ds, SHARED)
    assert len(data) == len(ds.targets) == 63
    for k in (0, 40):  # a cow photo and a COCO photo (no cow)
        it, t = data[k], ds.targets[k]
        im = ds.image(t.image_id)
        assert isinstance(it["image"], tv_tensors.Image) and isinstance(it["mask"], tv_tensors.Mask)
        assert it["image"].shape == (3, im.height, im.width) and it["image"].dtype == torch.uint8
        assert np.array_equal(it["mask"].numpy(), masks.decode(t.segmentation))
        assert it["positive"] == t.positive == bool(it["mask"].any())
        assert (it["expression_id"], it["image_id"], it["size"]) == \
            (t.expression_id, t.image_id, (im.height, im.width))
        assert it["target_rle"] == t.segmentation


def test_transforms_move_image_and_mask_together_and_collate():
    need(COCO_IMAGES), need(MSRC_COW)
    ds = cow_dataset()
    flip = GRESDataset(ds, SHARED, transforms=v2.RandomHorizontalFlip(p=1.0))
    a, b = flip[0], GRESDataset(ds, SHARED)[0]
    assert torch.equal(a["mask"], b["mask"].flip(-1)) and torch.equal(a["image"],
                                                                      b["image"].flip(-1))
    plain = GRESDataset(ds, SHARED, transforms=v2.Resize((48, 64)))
    a = plain[0]
    assert a["image"].shape == (3, 48, 64) and a["mask"].shape == (48, 64)
    assert set(a["mask"].unique().tolist()) == {0, 1}  # the mask is resized nearest
    batch = collate([plain[k] for k in (0, 1, 40)])
    assert batch["image"].shape == (3, 3, 48, 64) and batch["positive"].tolist() == \
        [True, True, False]
    with pytest.raises(ValueError, match="different sizes"):
        collate([GRESDataset(ds, SHARED)[k] for k in (0, 40)])


def test_group_items_are_balanced_deterministic_and_worker_safe():
    need(COCO_IMAGES), need(MSRC_COW)
    ds = cow_dataset()
    data = GRESDataset(ds, SHARED, mode="group", group_size=6, seed=3,
                       transforms=v2.Resize((32, 32)))
    assert len(data) == 1
    it = data[(0, 0)]
    assert int(it["positive"].sum()) == 3 and len(it["image_ids"]) == 6
    assert it["image_ids"] == data[(0, 0)]["image_ids"] != data[(1, 0)]["image_ids"]
    for img, msk, pos in zip(it["images"], it["masks"], it["positive"]):
        assert img.shape == (3, 32, 32) and bool(msk.any()) == bool(pos)
    keys = [(e, 0) for e in range(4)]
    loads = [list(torch.utils.data.DataLoader(data, sampler=keys, batch_size=2, num_workers=w,
                                              collate_fn=collate_groups)) for w in (0, 2)]
    for b0, b2 in zip(*loads):
        assert b0["image_ids"] == b2["image_ids"] and torch.equal(b0["images"], b2["images"])
    assert loads[0][0]["images"].shape == (2, 6, 3, 32, 32)


def _refcocog_val():
    need(REFCOCOG)
    splits, _ = grdkit.build_dataset("refcocog", REFCOCOG)
    return splits


class _Reader:  # images are not needed to count and sample
    size = 8

    def image(self, image_id):
        return np.zeros((8, 8, 3), np.uint8)

    def mask(self, expression_id, image_id):
        return np.zeros((8, 8), np.uint8)


def test_epoch_unit_ref_counts_refs_and_draws_a_sentence_per_epoch():
    splits = _refcocog_val()
    refs = load_refs_py3(REFCOCOG / "refs(umd).p")  # the owner's file, read independently
    for split, ds in splits.items():
        own = [r for r in refs if r["split"] == split]
        by_ref = GRESDataset(ds, mode="group", group_size=1, epoch_unit="ref", reader=_Reader())
        by_sentence = GRESDataset(ds, mode="group", group_size=1, reader=_Reader())
        assert len(by_ref) == len(own) == 5
        assert len(by_sentence) == sum(len(r["sentences"]) for r in own)
    train = splits["train"]
    data = GRESDataset(train, mode="group", group_size=1, epoch_unit="ref", reader=_Reader())
    multi = [k for k, u in enumerate(data.units) if len(u) > 1]
    assert multi, "the sample has refs with two sentences"
    k = multi[0]
    drawn = {data.sample(e, k)[0] for e in range(12)}
    assert drawn == set(data.units[k])  # each of the ref's sentences is drawn over epochs
    again = GRESDataset(train, mode="group", group_size=1, epoch_unit="ref", reader=_Reader())
    assert [again.sample(e, k) for e in range(12)] == [data.sample(e, k) for e in range(12)]


def test_mabp_paper_epoch_is_the_refs():
    """Issue 29 point 1: the mabp-paper preset trains one item per ref per epoch."""
    from grdkit.baselines.data import GroupDataset
    from grdkit.baselines.run import TrainConfig, apply_preset

    cfg = apply_preset(TrainConfig(model="mabp", preset="mabp-paper"),
                       {"vision_weights", "text"})
    assert cfg.epoch_unit == "ref"
    assert TrainConfig().epoch_unit == "sentence"  # LTS and GRSer count sentences
    lts = apply_preset(TrainConfig(model="lts", preset="lts-paper"), {"vision_weights", "text"})
    assert lts.epoch_unit == "sentence"
    ds = _refcocog_val()["train"]
    refs = [r for r in load_refs_py3(REFCOCOG / "refs(umd).p") if r["split"] == "train"]
    items = GroupDataset(ds, _Reader(), cfg.group_size, cfg.seed, cfg.repeats,
                         epoch_unit=cfg.epoch_unit)
    assert len(items) == len(refs) < len(ds.expressions)


def test_bad_arguments():
    ds = cow_dataset()
    with pytest.raises(ValueError, match="mode"):
        GRESDataset(ds, SHARED, mode="triplet")
    with pytest.raises(ValueError, match="epoch_unit"):
        GRESDataset(ds, SHARED, epoch_unit="image")
    with pytest.raises(ValueError, match="img_root"):
        GRESDataset(ds)


def test_a_built_folder_needs_its_split(tmp_path):
    from grdkit.errors import InputError

    splits = _refcocog_val()
    for name, ds in splits.items():
        grdkit.save_dataset(ds, tmp_path / f"{name}.json")
    data = GRESDataset(tmp_path, split="val", reader=_Reader())
    assert len(data) == len(splits["val"].targets)
    with pytest.raises(InputError, match="split 'testA' is not one of them"):
        GRESDataset(tmp_path, split="testA", reader=_Reader())
