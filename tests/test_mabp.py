"""MABP: deformable attention against a naive reference, each component on hand cases (regions,
RSH gradient locality, no-target branch, losses), and train -> predict -> eval on CPU (synthetic
single images, and the real cow group with COCO negatives). Models are tiny (width 32, 64 px)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the grdkit[baselines] extra")

import grdkit
from grdkit.baselines import MODELS, model_options
from grdkit.baselines.mabp import (
    LOSS_WEIGHTS,
    MABP,
    MIN_PIXELS,
    NT_CLASS_WEIGHTS,
    THRESHOLD,
    NoTargetHead,
    dice_loss,
    nearest_target,
    region_ids,
    region_means,
    regional_logits,
    upsample_queries,
)
from grdkit.baselines.msdeform import MSDeformAttn, PixelDecoder, ms_deform_attn, reference_points

from .conftest import COCO_IMAGES, SHARED, cow_dataset, dataset_from_dense, need, run_cli

TINY = {"vision_weights": None, "width": 32, "heads": 4, "enc_layers": 1, "enc_ffn": 64,
        "dec_ffn": 64, "layers": 1}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MABP(**TINY)


# ------------------------------------------------------------ deformable attention

def naive_ms_deform_attn(value, shapes, loc, weights):
    """Per point bilinear interpolation with zero outside, pixel centres at (i + 0.5) / W."""
    n, _, heads, d = value.shape
    _, lq, _, _, points, _ = loc.shape
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    out = value.new_zeros(n, lq, heads, d)
    for b in range(n):
        for q in range(lq):
            for m in range(heads):
                acc = value.new_zeros(d)
                for lv, (h, w) in enumerate(shapes):
                    img = value[b, starts[lv]:starts[lv + 1], m].reshape(h, w, d)
                    for p in range(points):
                        x = loc[b, q, m, lv, p, 0] * w - 0.5
                        y = loc[b, q, m, lv, p, 1] * h - 0.5
                        x0, y0 = math.floor(float(x.detach())), math.floor(float(y.detach()))
                        s = value.new_zeros(d)
                        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                            if 0 <= yy < h and 0 <= xx < w:
                                s = s + (1 - (x - xx).abs()) * (1 - (y - yy).abs()) * img[yy, xx]
                        acc = acc + weights[b, q, m, lv, p] * s
                out[b, q, m] = acc
    return out.flatten(2)


def test_ms_deform_attn_matches_naive_reference():
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (2, 2), (5, 3)]
    s = sum(h * w for h, w in shapes)
    value = torch.randn(2, s, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    loc = (torch.rand(2, 4, 2, 3, 2, 2, generator=g, dtype=torch.float64) * 1.3 - 0.15)
    loc.requires_grad_(True)  # some points fall outside the map: zero padding
    w = torch.rand(2, 4, 2, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    fast = ms_deform_attn(value, shapes, loc, w)
    slow = naive_ms_deform_attn(value, shapes, loc, w)
    assert fast.shape == (2, 4, 6)
    torch.testing.assert_close(fast, slow)
    ct = torch.randn_like(fast)
    g_fast = torch.autograd.grad((fast * ct).sum(), (value, loc, w))
    g_slow = torch.autograd.grad((slow * ct).sum(), (value, loc, w))
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b)


def test_ms_deform_attn_samples_pixel_centres_exactly():
    shapes = [(2, 3), (1, 2)]
    value = torch.arange(8.0).view(1, 8, 1, 1)
    ref = reference_points(shapes)                     # (8, 2): every pixel centre
    loc = ref.view(1, 8, 1, 1, 1, 2).expand(1, 8, 1, 2, 1, 2).clone()
    w = torch.zeros(1, 8, 1, 2, 1)
    for k in range(8):                                  # weight 1 on the pixel's own level
        w[0, k, 0, 0 if k < 6 else 1, 0] = 1.0
    assert ms_deform_attn(value, shapes, loc, w).flatten().tolist() == pytest.approx(range(8),
                                                                              abs=1e-6)


def test_ms_deform_attn_against_transformers_when_available():
    try:
        from transformers.models.deformable_detr.modeling_deformable_detr import (
            MultiScaleDeformableAttention,
        )
    except ImportError:
        pytest.skip("transformers has no MultiScaleDeformableAttention module in this version")
    shapes = [(4, 4), (2, 3)]
    g = torch.Generator().manual_seed(1)
    value = torch.randn(1, 22, 2, 4, generator=g)
    loc = torch.rand(1, 5, 2, 2, 3, 2, generator=g)
    w = torch.rand(1, 5, 2, 2, 3, generator=g)
    ref = MultiScaleDeformableAttention()(value, torch.tensor(shapes), shapes,
                                          torch.tensor([0, 16]), loc, w, 64)
    torch.testing.assert_close(ms_deform_attn(value, shapes, loc, w), ref)


def test_msdeform_module_and_pixel_decoder_shapes():
    attn = MSDeformAttn(dim=16, levels=3, heads=4, points=2)
    shapes = [(2, 2), (4, 4), (8, 8)]
    src = torch.randn(2, 84, 16)
    ref = reference_points(shapes)[None, :, None].expand(2, -1, 3, -1)
    assert attn(src, ref, src, shapes).shape == (2, 84, 16)
    with pytest.raises(ValueError):
        MSDeformAttn(dim=10, heads=4)
    dec = PixelDecoder([8, 12, 20, 24], dim=16, layers=2, ffn=32, heads=4, points=2)
    feats = [torch.randn(2, c, s, s) for c, s in ((8, 16), (12, 8), (20, 4), (24, 2))]
    mask_feat, scales = dec(feats)
    assert mask_feat.shape == (2, 16, 16, 16)
    assert [tuple(x.shape) for x in scales] == [(2, 16, 2, 2), (2, 16, 4, 4), (2, 16, 8, 8)]


# ------------------------------------------------------------ regions, RSH, no-target branch

@pytest.mark.parametrize(("size", "r", "before", "side"),
                         [(15, 4, 0, 4), (30, 8, 1, 4), (60, 16, 2, 4), (120, 16, 4, 8)])
def test_region_layout_matches_official_480_padding(size, r, before, side):
    """At 480 px the official windows are 4, 4, 4, 8 pixels with padding (0,1), (1,1), (2,2),
    (4,4) at 1/32, 1/16, 1/8, 1/4."""
    ids = region_ids(size, size, r).view(size, size)
    row = ids[0].tolist()
    assert row.count(0) == side - before and row.count(r - 1) == size - (r - 1) * side + before
    assert ids.max() == r * r - 1 and ids[0, 0] == 0 and ids[0, -1] == r - 1


def test_region_ids_and_means_on_a_small_map():
    ids = region_ids(3, 3, 2).view(3, 3)        # windows of 2, padding 1 after
    assert ids.tolist() == [[0, 0, 1], [0, 0, 1], [2, 2, 3]]
    feat = torch.arange(9.0).view(1, 1, 3, 3)
    # window means over real pixels only: (0+1+3+4)/4, (2+5)/2, (6+7)/2, 8
    assert region_means(feat, 2)[0, :, 0].tolist() == [2.0, 3.5, 6.5, 8.0]
    assert region_means(torch.ones(1, 1, 2, 2), 4)[0, :, 0].tolist().count(0.0) == 12


def test_rsh_gradient_of_a_query_comes_only_from_its_window():
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(1, 16, 5, generator=g, requires_grad=True)
    feat = torch.randn(1, 5, 15, 15, generator=g)
    logits = regional_logits(embed, feat, 4)
    assert logits.shape == (1, 1, 15, 15)
    inside = (region_ids(15, 15, 4) == 5).view(1, 1, 15, 15)
    (grad_out,) = torch.autograd.grad(logits[~inside].sum(), embed, retain_graph=True)
    assert torch.count_nonzero(grad_out[0, 5]) == 0          # no gradient from outside
    assert torch.count_nonzero(grad_out[0, 4]) > 0
    (grad_in,) = torch.autograd.grad(logits[inside].sum(), embed)
    torch.testing.assert_close(grad_in[0, 5], feat[0][:, inside[0, 0]].sum(1))
    assert torch.count_nonzero(grad_in[0, torch.arange(16) != 5]) == 0


def test_rsh_locality_through_the_model_head(tiny):
    """The same property for the model's RSH (LayerNorm + MLP per query, then windows)."""
    q = torch.randn(1, 64, 32, requires_grad=True)
    feat = torch.randn(1, 32, 10, 10)
    lang, pad = torch.randn(1, 3, 32), torch.zeros(1, 3, dtype=torch.bool)
    logits, nt = tiny.head(1, q, feat, 8, lang, pad)
    assert logits.shape == (1, 1, 10, 10) and nt.shape == (1, 2)
    outside = (region_ids(10, 10, 8) != 9).view(1, 1, 10, 10)
    (g,) = torch.autograd.grad(logits[outside].sum(), q)
    assert torch.count_nonzero(g[0, 9]) == 0 and torch.count_nonzero(g[0, 10]) > 0


def test_attention_mask_never_blocks_own_window(tiny):
    q = torch.randn(2, 16, 32)
    feat = torch.randn(2, 32, 6, 6)
    blocked = tiny.blocked(0, q, feat, 4)
    assert blocked.shape == (2, 16, 36) and blocked.dtype == torch.bool
    own = region_ids(6, 6, 4)[None, :] == torch.arange(16)[:, None]
    assert not blocked[:, own].any()
    logits = regional_logits(tiny.mask_embed[0](tiny.norms[0](q)), feat, 4).flatten(1)
    # outside its window, a query may attend exactly the pixels predicted foreground
    assert torch.equal(blocked[:, ~own], (logits < 0)[:, None, :].expand(-1, 16, -1)[:, ~own])


def test_no_target_branch_hand_case():
    """``mean`` sentence (the earlier reading): masked mean over words, then a channel MLP."""
    head = NoTargetHead(dim=2, queries=2, hidden_layers=2, sentence="mean")
    with torch.no_grad():
        for lin in (head.embed, head.centroid, *head.sentence.layers):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    mask_embed = torch.tensor([[[1.0, 2.0], [0.0, -1.0]]])     # e_q
    means = torch.tensor([[[3.0, 1.0], [2.0, 5.0]]])           # c_q
    # words: mean of the two real ones = s = (0.5, 4) (positive: ReLU is identity); 3rd padded
    lang = torch.tensor([[[0.0, 3.0], [1.0, 5.0], [99.0, 99.0]]])
    pad = torch.tensor([[False, False, True]])
    # a = [<e_q, s>] = [0.5 + 8, -4]; b = [<e_q, c_q>] = [3 + 2, -5]
    assert head.scores(mask_embed, means, lang, pad)[0].tolist() == [8.5, -4.0, 5.0, -5.0]
    assert head(mask_embed, means, lang, pad).shape == (1, 2)
    assert len(head.mlp.layers) == 3                              # two hidden layers of 2Q
    assert head.mlp.layers[0].in_features == 4 and head.mlp.layers[1].out_features == 4


def test_no_target_sentence_mlp_aggregates_over_words():
    """§III-D2 (``words``, default): an MLP over the word axis (official nt_lang_emb_proj =
    MLP(20, 20, 1, 2 layers), buptLwz/MABP referring_transformer_decoder.py @ ec810ea), the
    words zero-padded to 20, so padded words never contribute; checked against a plain loop."""
    g = torch.Generator().manual_seed(0)
    head = NoTargetHead(dim=3, queries=4, sentence="words")
    assert [(lin.in_features, lin.out_features) for lin in head.sentence.layers] == \
        [(20, 20), (20, 1)]
    lang = torch.randn(2, 5, 3, generator=g)
    pad = torch.tensor([[False, False, False, True, True], [False] * 5])
    s = head.sentence_embedding(lang, pad)
    w1, b1 = head.sentence.layers[0].weight, head.sentence.layers[0].bias
    w2, b2 = head.sentence.layers[1].weight, head.sentence.layers[1].bias
    for n in range(2):
        for c in range(3):                      # channel c: its 20 word values -> one number
            x = torch.zeros(20)
            for t in range(5):
                if not pad[n, t]:
                    x[t] = lang[n, t, c]
            hidden = torch.relu(w1 @ x + b1)
            torch.testing.assert_close(s[n, c], (w2 @ hidden + b2)[0])
    lang2 = lang.clone()
    lang2[0, 3:] = 50.0                                           # garbage in the padding
    torch.testing.assert_close(head.sentence_embedding(lang2, pad), s)
    lang3 = lang.clone()
    lang3[0, 1] += 1.0                                            # a real word matters
    assert not torch.allclose(head.sentence_embedding(lang3, pad)[0], s[0])
    with pytest.raises(ValueError, match="nt_sentence"):
        NoTargetHead(dim=3, queries=4, sentence="max")


def test_no_target_rules():
    nt = [torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
          torch.tensor([[1.0, 0.0], [0.0, 2.0]])]                 # class 1 = no target
    out = {"nt": nt, "masks": [torch.zeros(2, 1, 4, 4)]}
    for rule, expect in (("any", [True, True]), ("first", [True, False]),
                         ("last", [False, True])):
        model = SimpleNamespace(nt_rule=rule)
        assert MABP.no_target(model, out).tolist() == expect
        model.no_target = lambda o, m=model: MABP.no_target(m, o)
        probs, decision = MABP.probabilities(model, out)
        assert decision.tolist() == [not e for e in expect] and probs.shape == (2, 1, 4, 4)


# ------------------------------------------------------------ queries, losses

def test_query_upsampling_is_nearest_x2():
    q = torch.arange(4.0).view(1, 4, 1)                           # 2 x 2 grid 0 1 / 2 3
    up = upsample_queries(q, 2).view(4, 4).tolist()
    assert up == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def test_query_generator_ignores_padding(tiny):
    words = torch.randn(2, 5, tiny.text.dim)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    q, lang = tiny.generate_queries(words, mask)
    assert q.shape == (2, 16, 32) and lang.shape == (2, 5, 32)
    words2 = words.clone()
    words2[0, 3:] = 100.0
    torch.testing.assert_close(tiny.generate_queries(words2, mask)[0][0], q[0])
    q2 = tiny.generate_queries(words.flip(0), mask.flip(0))[0]
    torch.testing.assert_close(q2[1], q[0])     # each sample on its own
    assert not torch.allclose(q[1], q[0])       # queries depend on the text


def test_nearest_target_and_dice():
    y = torch.zeros(1, 1, 4, 4)
    y[0, 0, 2, 0] = 1.0
    assert nearest_target(y, (2, 2))[0, 0].tolist() == [[0.0, 0.0], [1.0, 0.0]]
    # zero logits, p = 1/2: one target pixel of 4 -> 1 - (2 * .5 + 1) / (2 + 1 + 1) = 0.5
    assert float(dice_loss(torch.zeros(1, 1, 2, 2), nearest_target(y, (2, 2)))) == 0.5
    assert float(dice_loss(torch.full((1, 1, 2, 2), -50.0), torch.zeros(1, 1, 2, 2))) < 1e-6


def test_loss_on_a_hand_case(tiny):
    s = 64
    masks = torch.zeros(1, 2, 1, s, s)
    masks[0, 0] = 1.0                                             # positive: all foreground
    batch = {"masks": masks, "positive": torch.tensor([[True, False]]),
             "valid": torch.tensor([[True, True]]), "index": torch.tensor([0, 1])}
    sides = (2, 4, 8, 16)
    out = {"masks": [torch.zeros(2, 1, k, k) for k in sides],
           "nt": [torch.zeros(2, 2) for _ in sides]}
    loss, parts = tiny.loss(out, batch)

    def dice(k):  # p = 1/2 everywhere; positive: y = 1 on k*k pixels; negative: y = 0
        pos = 1 - (k * k + 1) / (1.5 * k * k + 1)
        neg = 1 - 1 / (0.5 * k * k + 1)
        return (pos + neg) / 2

    ln2 = math.log(2)
    # cross-entropy with zero logits: (0.9 ln2 + 1.1 ln2) / 2 = ln2
    assert parts["bce"] == pytest.approx(ln2) and parts["bce_mid"] == pytest.approx(ln2)
    assert parts["nt"] == pytest.approx(ln2 * sum(NT_CLASS_WEIGHTS) / 2)
    assert parts["dice"] == pytest.approx(dice(16))
    mid = sum(dice(k) for k in sides[:3]) / 3
    assert parts["dice_mid"] == pytest.approx(mid)
    w = LOSS_WEIGHTS
    expect = (w["bce_final"] * ln2 + w["dice_final"] * dice(16) + w["bce_mid"] * ln2
              + w["dice_mid"] * mid + w["nt"] * ln2)
    assert float(loss) == pytest.approx(expect, rel=1e-5)
    assert (w["bce_final"], w["dice_final"], w["bce_mid"], w["dice_mid"], w["nt"]) == \
        (5.0, 5.0, 0.5, 0.5, 2.5)


# ------------------------------------------------------------ whole model

def toy_batch(s=64):
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 2, 1, s, s)
    masks[0, 0, :, 8:40, 16:48] = 1.0
    masks[1, 0, :, 20:60, 4:30] = 1.0
    return {"images": torch.rand(2, 2, 3, s, s, generator=g), "masks": masks,
            "positive": torch.tensor([[True, False], [True, False]]),
            "valid": torch.tensor([[True, True], [True, False]]),
            "counts": [2, 1], "index": torch.tensor([0, 1, 2]), "group": torch.tensor([0, 0, 1]),
            "expression": ["the cow", "a brown cow on the left"]}


def test_forward_shapes_and_every_parameter_trains(tiny):
    b = toy_batch()
    tiny.train()
    tiny.zero_grad()
    out = tiny(b)
    assert [tuple(m.shape) for m in out["masks"]] == [(3, 1, 2, 2), (3, 1, 4, 4), (3, 1, 8, 8),
                                                      (3, 1, 16, 16)]
    assert [tuple(t.shape) for t in out["nt"]] == [(3, 2)] * 4 and out["regions"] == [4, 8, 16, 16]
    loss, parts = tiny.loss(out, b)
    assert torch.isfinite(loss) and set(parts) == {"bce", "dice", "bce_mid", "dice_mid", "nt"}
    loss.backward()
    # DDP runs with find_unused_parameters=False: every trainable parameter must get a gradient
    no_grad = [k for k, p in tiny.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert all(p.grad is None for p in tiny.text.model.parameters())  # frozen text encoder
    tiny.eval()
    with torch.no_grad():
        probs, decision = tiny.probabilities(tiny(b))
    assert probs.shape == (3, 1, 16, 16) and decision.dtype == torch.bool
    assert 0 <= float(probs.min()) and float(probs.max()) <= 1


def test_registry_options_and_defaults():
    assert MODELS["mabp"] == "grdkit.baselines.mabp:MABP"
    opts = model_options("mabp", {"width": 64, "d_k": 16, "regions": 2, "seed": 3,
                                  "group_size": 8})
    assert opts == {"width": 64, "regions": 2, "seed": 3}
    assert (MABP.default_threshold, MIN_PIXELS) == (THRESHOLD, 50) == (0.5, 50)
    # the NT branch decides (no pixel rule); the 50-pixel rule is the no-NT-branch ablation's
    assert MABP(**TINY).default_min_pixels == 1 and MABP(**TINY).decides_no_target
    no_nt = MABP(**TINY, nt_depth=0)
    assert no_nt.default_min_pixels == MIN_PIXELS and not no_nt.decides_no_target
    from grdkit.baselines.run import PRESETS, TrainConfig

    paper = PRESETS["mabp-paper"]
    assert model_options("mabp", paper["model_args"]) == paper["model_args"]
    assert set(paper["config"]) <= set(TrainConfig.__dataclass_fields__)
    c = paper["config"]
    assert (c["size"], c["lr"], c["epochs"], c["clip"]) == (480, 2e-5, 30, 0.01)
    for bad in ({"nt_sentence": "max"}, {"fusion": "film"}, {"main_depth": 0},
                {"nt_depth": 4}):
        with pytest.raises(ValueError):
            MABP(vision_weights=None, **bad)
    with pytest.raises(ValueError, match="nt_rule"):
        MABP(vision_weights=None, nt_rule="best")
    with pytest.raises(ValueError, match="divisible"):
        MABP(vision_weights=None, width=30, heads=4)


def test_seed_fixes_the_initialisation():
    a = MABP(**TINY, seed=1)
    b = MABP(**TINY, seed=1)
    c = MABP(**TINY, seed=2)
    assert torch.equal(a.query_feat.weight, b.query_feat.weight)
    assert not torch.equal(a.query_feat.weight, c.query_feat.weight)


# ------------------------------------------------------------ train -> predict -> eval

def synthetic_single_images(root: Path):
    """Groups of single images (gRefCOCO style): a red square is the target; negatives are
    plain. Images 48 x 64 (not square: predictions are pasted back at full size)."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    groups = []
    for g in range(6):
        m = np.zeros((48, 64), bool)
        if g % 2 == 0:
            y, x = rng.integers(4, 20), rng.integers(4, 30)
            m[y:y + 20, x:x + 24] = True
        groups.append([m])
    ds = dataset_from_dense(groups, name="toy", split="train")
    root.mkdir(parents=True, exist_ok=True)
    for img, t in zip(ds.images, ds.targets):
        mask = grdkit.masks.decode(t.segmentation).astype(bool)
        pix = np.full((48, 64, 3), 40, np.uint8) + rng.integers(0, 20, (48, 64, 3), dtype=np.uint8)
        pix[mask] = (220, 30, 30)
        PILImage.fromarray(pix).save(root / img.file_name)
    return ds


def test_train_predict_eval_on_single_images(tmp_path):
    from grdkit.baselines.engine import train
    from grdkit.baselines.predict import predict
    from grdkit.baselines.run import TrainConfig

    torch.set_num_threads(1)
    ds = synthetic_single_images(tmp_path / "img")
    cfg = TrainConfig(model="mabp", epochs=2, group_size=1, size=64, device="cpu", lr=1e-3,
                      threshold=THRESHOLD, log_every=1, model_args=dict(TINY))
    res = train(cfg, ds, tmp_path / "img", tmp_path / "run")
    assert res["steps"] == 12 and math.isfinite(res["last_loss"])
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"bce", "dice", "bce_mid", "dice_mid", "nt"} <= set(recs[0])
    preds = predict(tmp_path / "run", ds, tmp_path / "img", "cpu", min_pixels=MIN_PIXELS)
    assert len(preds) == 6
    for p in preds:
        if p["segmentation"] is not None:
            assert p["segmentation"]["size"] == [48, 64]
            assert grdkit.masks.decode(p["segmentation"]).sum() >= MIN_PIXELS
    report = grdkit.evaluate(preds, ds, strict=True)
    assert {"gres_miou", "n_acc", "t_acc"} <= set(report.metrics)


def test_cli_train_predict_eval_real_cow_group(tmp_path, capsys):
    need(COCO_IMAGES)
    data = tmp_path / "cow.json"
    grdkit.save_dataset(cow_dataset(), data)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "mabp", "--data", data, "--img-root", SHARED, "--out", run,
                            "--size", "64", "--group-size", "2", "--width", "32",
                            "--vision-weights", "bundled", "--max-steps", "2", "--epochs", "1",
                            "--device", "cpu", "--no-progress"], capsys)
    assert code == 0, err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "mabp" and cfg["model_args"]["width"] == 32
    assert "d_k" not in cfg["model_args"] and "group_size" not in cfg["model_args"]
    preds = tmp_path / "preds.json"
    code, out, err = run_cli(["predict", "--checkpoint", run, "--data", data, "--img-root",
                              SHARED, "--out", preds, "--min-pixels", "50", "--no-progress"],
                             capsys)
    assert code == 0, err
    p = json.loads(preds.read_text())
    assert len(p) == 63
    code, out, _ = run_cli(["eval", preds, "--gt", data, "--strict"], capsys)
    assert code == 0 and "gres_miou" in out


def test_two_cpu_processes_stay_in_sync(tmp_path):
    ds = synthetic_single_images(tmp_path / "img")
    data = tmp_path / "toy.json"
    grdkit.save_dataset(ds, data)
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29547", "-m", "grdkit.cli.main", "train", "mabp", "--data",
           str(data), "--img-root", str(tmp_path / "img"), "--out", str(run), "--size", "64",
           "--group-size", "1", "--width", "32", "--vision-weights", "bundled", "--epochs", "1",
           "--max-steps", "2", "--device", "cpu", "--no-progress",
           "--batch-size", "5", "--accum-steps", "2"]     # uneven: 2, 1 | 1, 1 (issue 19)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr[-2000:]
    done = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert done["event"] == "done" and done["world_size"] == 2 and done["ranks_in_sync"]
    assert done["step"] == 2 and done["items_per_step"] == 5
    assert done["micro_batches"] == [2, 1, 1, 1]


def test_swin_from_a_local_path_at_another_input_size(tmp_path):
    """The paper's visual encoder route: a timm Swin state dict from a local file, with features
    at strides 4, 8, 16, 32 in NCHW (Swin-T 224 here; Swin-B 384 runs at 480 the same way)."""
    import timm

    from grdkit.baselines.encoders import VisionEncoder

    torch.set_num_threads(1)
    name = "swin_tiny_patch4_window7_224"
    src = timm.create_model(name, pretrained=False)
    torch.nn.init.constant_(src.layers[2].blocks[1].mlp.fc1.weight, 0.125)
    p = tmp_path / "swin.pth"
    torch.save(src.state_dict(), p)
    enc = VisionEncoder(name, p, img_size=224, strides=(4, 8, 16, 32))
    assert enc.channels == [96, 192, 384, 768]
    w = dict(enc.body.named_parameters())["layers.2.blocks.1.mlp.fc1.weight"]
    assert float(w.detach().mean()) == 0.125
    with torch.no_grad():
        feats = enc(torch.rand(1, 3, 224, 224))
    assert [tuple(f.shape) for f in feats] == [(1, 96, 56, 56), (1, 192, 28, 28),
                                               (1, 384, 14, 14), (1, 768, 7, 7)]


def test_mabp_on_a_grefcoco_fixture_built_by_grdkit(tmp_path, capsys):
    """gRefCOCO-format fixture (tests/test_grefcoco.py) -> grdkit build grefcoco -> images
    generated for it -> grdkit train mabp -> grdkit predict -> grdkit eval."""
    import json

    import numpy as np
    from PIL import Image as PILImage

    import grdkit

    from .conftest import run_cli
    from .test_grefcoco import IMAGES, write_grefcoco

    root = write_grefcoco(tmp_path / "grefcoco")
    imgs = tmp_path / "images"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i, h, w in IMAGES:
        PILImage.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            imgs / f"COCO_train2014_{i:012d}.jpg")
    out = tmp_path / "built"
    code, _, err = run_cli(["build", "grefcoco", "--refer-root", root, "--out", out,
                            "--no-progress"], capsys)
    assert code == 0, err
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "mabp", "--data", out / "train.json", "--img-root", imgs,
                            "--out", run, "--size", "64", "--group-size", "1", "--width", "32",
                            "--model-arg", "heads=4", "--model-arg", "enc_layers=1",
                            "--model-arg", "layers=1", "--model-arg", "enc_ffn=64",
                            "--model-arg", "dec_ffn=64", "--max-steps", "2", "--workers", "0",
                            "--no-progress"], capsys)
    assert code == 0, err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["threshold"] == 0.5 and cfg["model_args"]["heads"] == 4  # MABP's own defaults
    preds = tmp_path / "preds.json"
    code, _, err = run_cli(["predict", "--checkpoint", run, "--data", out / "train.json",
                            "--img-root", imgs, "--out", preds, "--workers", "0",
                            "--no-progress"], capsys)
    assert code == 0, err
    n_pairs = len(grdkit.load_dataset(out / "train.json").targets)
    recs = json.loads(preds.read_text())
    assert len(recs) == n_pairs
    # the NT head's decision travels as "no_target" beside the mask, which is kept (contract C3)
    assert all(isinstance(r["no_target"], bool) for r in recs)
    from grdkit.baselines.predict import predict

    again = predict(run, out / "train.json", imgs, "cpu", min_pixels=1)
    assert [r["no_target"] for r in again] == [r["no_target"] for r in recs]
    code, out_text, _ = run_cli(["eval", preds, "--gt", out / "train.json", "--strict"], capsys)
    assert code == 0 and "giou" in out_text        # the evaluator accepts the key (issue 20)
    code, _, err = run_cli(["train", "mabp", "--data", out / "train.json", "--img-root", imgs,
                            "--out", tmp_path / "r2", "--model-arg", "d_k=3", "--no-progress"],
                           capsys)
    assert code == 2 and "mabp takes no option d_k" in err



# ------------------------------------------------------------ issue 19: fusion, depths, preset

def test_pwam_fusion_reads_the_expression_and_ignores_padded_words(tiny):
    """§III: the encoder encodes images and expressions (PWAM after each stage, the default)."""
    from grdkit.baselines.fusion import PWAM

    assert tiny.pwam is not None and len(tiny.pwam) == 4
    assert all(isinstance(m, PWAM) for m in tiny.pwam)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g)
    words = torch.randn(2, 4, tiny.text.dim, generator=g)
    mask = torch.tensor([[True, True, False, False], [True] * 4])
    with torch.no_grad():
        plain = tiny.vision(x)
        fused = tiny.encode_images(x, words, mask)
        other = tiny.encode_images(x, words.flip(0), mask.flip(0))
        garbage = words.clone()
        garbage[0, 2:] = 1e3                                      # padded words of image 0
        padded = tiny.encode_images(x, garbage, mask)
    assert [f.shape for f in fused] == [f.shape for f in plain]
    for f, p, o, q in zip(fused, plain, other, padded):
        assert not torch.allclose(f, p)                           # language changes the features
        assert not torch.allclose(f[0], o[0])                     # ... with the expression
        torch.testing.assert_close(q, f)                          # padding ignored
    no_fusion = MABP(**TINY, fusion="none")
    assert no_fusion.pwam is None
    with torch.no_grad():
        for a, b in zip(no_fusion.encode_images(x, words, mask), no_fusion.vision(x)):
            torch.testing.assert_close(a, b)


def test_supervised_heads_follow_table_vi():
    from grdkit.baselines.mabp import supervised_heads

    assert [supervised_heads(d) for d in (0, 1, 2, 3)] == [[], [2, 3], [1, 2, 3], [0, 1, 2, 3]]


@pytest.mark.parametrize(("main", "nt", "qg"), [(1, 3, True), (3, 0, True), (3, 1, True),
                                                 (3, 3, False)])
def test_table_v_and_vi_options_build_and_train_a_step(main, nt, qg):
    torch.manual_seed(0)
    model = MABP(**TINY, main_depth=main, nt_depth=nt, query_generator=qg)
    b = toy_batch()
    model.train()
    out = model(b)
    assert len(out["nt"]) == len(out["nt_heads"]) == {0: 0, 1: 2, 3: 4}[nt]
    loss, parts = model.loss(out, b)
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []                                          # DDP-safe
    assert (model.qg is None) == (not qg)
    # an unsupervised intermediate head adds nothing to the loss
    if main == 1:
        moved = model.loss({**out, "masks": [m * 0 + 7 if k == 0 else m
                                              for k, m in enumerate(out["masks"])]}, b)[0]
        assert float(moved.detach()) == pytest.approx(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        probs, decision = model.probabilities(model(b))
    assert probs.shape == (3, 1, 16, 16)
    if nt == 0:
        assert decision is None and float(parts["nt"]) == 0.0
        assert model.default_min_pixels == MIN_PIXELS and not model.decides_no_target
    else:
        assert decision.dtype == torch.bool and model.decides_no_target


def test_first_versus_any_indicator_on_a_hand_case():
    """The paper's numbers used the first indicator (official README); ``any`` ORs them."""
    nt = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 3.0]]), torch.tensor([[1.0, 0.0]]),
          torch.tensor([[1.0, 0.0]])]                             # only level 2 says no target
    out = {"nt": nt, "masks": [torch.zeros(1, 1, 4, 4)]}
    first = SimpleNamespace(nt_rule="first")
    anyr = SimpleNamespace(nt_rule="any")
    assert MABP.no_target(first, out).tolist() == [False]
    assert MABP.no_target(anyr, out).tolist() == [True]
    assert MABP.no_target(first, {"nt": []}) is None
    import inspect

    assert inspect.signature(MABP).parameters["nt_rule"].default == "first"


def test_mabp_paper_preset_pinned_against_section_iv_a():
    """§IV-A: 480 x 480, AdamW lr 2e-5, 30 epochs, batch 42 (images, in total), Swin-B + BERT
    from local paths; the model options the paper states (§III, Table VI)."""
    from grdkit.baselines.run import TrainConfig, apply_preset
    from grdkit.errors import InputError

    with pytest.raises(InputError, match="vision_weights"):
        apply_preset(TrainConfig(model="mabp", preset="mabp-paper"))
    with pytest.raises(InputError, match="needs text"):
        apply_preset(TrainConfig(model="mabp", preset="mabp-paper"), {"vision_weights"})
    cfg = apply_preset(TrainConfig(model="mabp", preset="mabp-paper",
                                   model_args={"vision_weights": "swin.pth",
                                               "text": "bert-base-uncased"}),
                       {"vision_weights", "text"})
    assert (cfg.size, cfg.lr, cfg.epochs, cfg.batch_size, cfg.group_size) == \
        (480, 2e-5, 30, 42, 1)
    assert (cfg.weight_decay, cfg.clip) == (0.05, 0.01)           # official config
    a = cfg.model_args
    assert a["vision"] == "swin_base_patch4_window12_384" and a["vision_weights"] == "swin.pth"
    assert a["text"] == "bert-base-uncased" and a["train_text"] is True
    assert (a["fusion"], a["nt_rule"], a["nt_sentence"], a["nt_hidden"]) == \
        ("pwam", "first", "words", 2)
    assert (a["main_depth"], a["nt_depth"], a["regions"], a["width"]) == (3, 3, 4, 256)
    assert set(a) - {"vision_weights", "text"} <= set(model_options("mabp", a))
    # the engine builds AdamW (issue 18 may add an optimiser option; it must stay AdamW here)
    assert getattr(cfg, "optimizer", "adamw") == "adamw"
    # explicit options win
    cfg2 = apply_preset(TrainConfig(model="mabp", preset="mabp-paper", batch_size=6),
                        {"vision_weights", "text", "batch_size"})
    assert cfg2.batch_size == 6


def test_decay_exemptions_follow_the_official_optimiser(tiny):
    groups = tiny.param_groups(0.05)
    decay, exempt = ({id(p) for p in g["params"]} for g in groups)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] and not decay & exempt
    assert id(tiny.norms[0].weight) in exempt and id(tiny.query_feat.weight) in exempt
    assert id(tiny.lang_pos.weight) in exempt and id(tiny.mmd[0].norm1.bias) in exempt
    assert id(tiny.mask_embed[0].layers[0].weight) in decay
    trainable = {id(p) for p in tiny.parameters() if p.requires_grad}
    assert decay | exempt == trainable
    off = MABP(**TINY, decay_exempt=False).param_groups(0.05)
    assert off[1]["params"] == []
