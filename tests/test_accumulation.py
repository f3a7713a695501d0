"""Issue 19: ``batch_size`` is the number of items per optimiser step in total, divided by the
engine over processes and gradient-accumulation micro-steps (evenly, or with an uneven split whose
losses are weighted per item), and accumulation over K micro-batches equals one batch of K.

The model is MABP on a LayerNorm backbone (timm ``convnext_atto``, random weights): a BatchNorm
backbone would make a batch of K differ from K batches of one through its batch statistics."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the grdkit[baselines] extra")

import grdkit
from grdkit.baselines.data import EpochBatches, collate, make_item, split_sizes
from grdkit.baselines.engine import micro_step, resolve_batch, train
from grdkit.baselines.mabp import MABP
from grdkit.baselines.run import TrainConfig
from grdkit.errors import InputError

from .test_mabp import synthetic_single_images

LN_TINY = {"vision": "convnext_atto", "vision_weights": None, "width": 32, "heads": 4,
           "enc_layers": 1, "enc_ffn": 64, "dec_ffn": 64, "layers": 1}


def test_split_sizes_and_epoch_batches_cover_each_step_once():
    assert split_sizes(42, 4) == [11, 11, 10, 10] and split_sizes(42, 6) == [7] * 6
    assert split_sizes(5, 5) == [1] * 5
    with pytest.raises(ValueError, match="non-empty"):
        split_sizes(3, 4)
    n, bs, world, accum = 100, 42, 4, 2                 # 42 on 4 processes x 2 micro-steps
    per_rank = [list(EpochBatches(n, bs, r, world, seed=3, accum=accum)) for r in range(world)]
    ref = EpochBatches(n, bs, 0, world, seed=3, accum=accum)
    assert ref.steps() == 3 and all(len(p) == 3 * accum for p in per_rank)
    order = ref.order(0)
    for s in range(3):                                  # each step: exactly its 42 items
        got = sorted(k for p in per_rank for mb in p[s * accum:(s + 1) * accum] for _, k in mb)
        assert got == sorted(order[s * bs:(s + 1) * bs].tolist())
    sizes = sorted(len(mb) for p in per_rank for mb in p[:accum])
    assert sizes == [5] * 6 + [6] * 2                   # 42 = 6 x 5 + 2 x 6
    # world 1, accum 1: the whole batch in one micro-batch (the earlier behaviour)
    assert [len(b) for b in EpochBatches(10, 4, seed=0)] == [4, 4, 4]


def test_resolve_batch_defaults_and_errors():
    cfg = TrainConfig(model="mabp")
    assert resolve_batch(cfg, 1).batch_size == 1
    assert resolve_batch(TrainConfig(model="mabp", accum_steps=3), 2).batch_size == 6
    assert resolve_batch(TrainConfig(model="mabp", batch_size=42), 5).batch_size == 42
    with pytest.raises(InputError, match="smaller than processes x accum_steps"):
        resolve_batch(TrainConfig(model="mabp", batch_size=3, accum_steps=2), 2)
    with pytest.raises(InputError, match="accum_steps"):
        resolve_batch(TrainConfig(model="mabp", accum_steps=0), 1)


def items(tmp_path, k):
    """k single-image items of the synthetic set (positives and negatives), as make_item gives."""
    from grdkit.baselines.data import build_store

    ds = synthetic_single_images(tmp_path / "img")
    store = build_store(ds, tmp_path / "img", 64, tmp_path / "cache")
    return [make_item(ds, store, e.id, list(ds.group(e.group_id).image_ids))
            for e in ds.expressions[:k]]


def grads_after(model, batches, bs):
    model.zero_grad(set_to_none=True)
    total = 0.0
    for b in batches:
        w = len(b["counts"]) / bs
        loss, _ = micro_step(model, model, b, w, torch.device("cpu"))
        total += float(loss) * w
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}, total


def test_accumulated_gradient_equals_one_batch(tmp_path):
    torch.set_num_threads(1)
    its = items(tmp_path, 3)
    model = MABP(**LN_TINY, seed=0)
    model.train()
    one, loss_one = grads_after(model, [collate(its)], 3)
    singles, loss_k = grads_after(model, [collate([it]) for it in its], 3)
    uneven, loss_u = grads_after(model, [collate(its[:2]), collate(its[2:])], 3)
    assert set(one) == set(singles) == set(uneven) and len(one) > 50
    # float32 tolerance relative to the largest gradient: the random backbone's 2 x 2 map at 1/32
    # feeds a GroupNorm over 4 nearly equal values, which magnifies last-bit differences between
    # a batched and a single-sample forward (about 1e-3 of the largest gradient at most)
    scale = max(float(g.abs().max()) for g in one.values())
    for k in one:
        torch.testing.assert_close(singles[k], one[k], rtol=0, atol=3e-3 * scale)
        torch.testing.assert_close(uneven[k], one[k], rtol=0, atol=3e-3 * scale)
    assert loss_k == pytest.approx(loss_one, rel=1e-4) and loss_u == pytest.approx(loss_one,
                                                                                   rel=1e-4)

    def worst(g):
        return max(float((g[k] - one[k]).abs().max()) for k in one) / scale

    # the test can fail: a sum instead of a mean, or equal weights for an uneven split
    assert worst(grads_after(model, [collate(its), collate(its)], 3)[0]) > 0.1
    model.zero_grad(set_to_none=True)
    for b in (collate(its[:2]), collate(its[2:])):
        micro_step(model, model, b, 0.5, torch.device("cpu"))
    assert worst({k: p.grad for k, p in model.named_parameters() if p.grad is not None}) > 0.02


def test_engine_step_with_accumulation_equals_one_batch(tmp_path):
    """Parameters after optimiser steps: batch 4 in one micro-batch vs 4 micro-batches of 1."""
    torch.set_num_threads(1)
    ds = synthetic_single_images(tmp_path / "img")
    runs = {}
    for accum in (1, 4):
        cfg = TrainConfig(model="mabp", epochs=1, batch_size=4, accum_steps=accum,
                          group_size=1, size=64, device="cpu", lr=1e-3, clip=0.0,
                          max_steps=1, workers=0, log_every=1, model_args=dict(LN_TINY))
        out = tmp_path / f"run{accum}"
        res = train(cfg, ds, tmp_path / "img", out, cache_dir=tmp_path / "cache")
        assert res["steps"] == 1
        saved = json.loads((out / "config.json").read_text())
        assert (saved["batch_size"], saved["accum_steps"]) == (4, accum)
        done = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert done["items_per_step"] == 4 and done["micro_batches"] == [4 // accum] * accum
        first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
        runs[accum] = (torch.load(out / "checkpoint.pt", weights_only=True)["model"],
                       first["loss"])
    (a, loss_a), (b, loss_b) = runs[1], runs[4]
    assert loss_a == pytest.approx(loss_b, rel=1e-5)       # the step's mean loss over 4 items
    # AdamW's first update of a weight is lr * g / (|g| + eps), about sign(g) * lr: weights agree
    # to float precision except where g itself is float noise (gradients that are 0 in exact
    # arithmetic, e.g. a key bias under softmax), whose sign may flip: at most 2 lr apart
    init = MABP(**LN_TINY).state_dict()
    changed = total = off = 0
    for k in a:
        d = (b[k].double() - a[k].double()).abs()
        assert float(d.max()) <= 2.02e-3
        off += int((d > 1e-5).sum())
        total += d.numel()
        changed += not torch.equal(a[k], init[k])
    assert off <= 1e-2 * total and changed > 50  # measured: 0.3 % of the weights


def test_mabp_paper_preset_reaches_42_images_on_any_number_of_processes():
    from grdkit.baselines.run import apply_preset

    cfg = apply_preset(TrainConfig(model="mabp", preset="mabp-paper"),
                       {"vision_weights", "text"})
    for world in (1, 2, 4, 5, 6, 8):
        for accum in (1, 3):
            c = resolve_batch(TrainConfig(**{**cfg.__dict__, "accum_steps": accum}), world)
            sizes = EpochBatches(1000, c.batch_size, 0, world, accum=accum).sizes
            assert sum(sizes) == 42 and len(sizes) == world * accum
            assert max(sizes) - min(sizes) <= 1
    assert np.isclose(sum(s / 42 for s in split_sizes(42, 4)), 1.0)
    assert grdkit  # the package under test is importable alongside torch
