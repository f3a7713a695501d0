"""Baselines that are right: what training measured is what predict gives, the Swin-B route, DDP
with every ablation, a frozen text encoder, the paper's GRSer eq. 4 space, presets, the store."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the grdkit[baselines] extra")

import grdkit
from grdkit.baselines.data import (
    GroupDataset,
    build_store,
    collate,
    resized_mask,
    valid_rows,
)
from grdkit.baselines.run import PRESETS, TrainConfig, apply_preset, load_run
from grdkit.errors import InputError

from .conftest import COCO_IMAGES, SHARED, cow_dataset, cow_store, need, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _two_expression_cow(path: Path) -> Path:
    """The cow group asked twice: "cow" and a no-target expression (every mask empty)."""
    d = cow_dataset().to_dict()
    d["expressions"].append({"id": 2, "text": "a zebra", "group_id": 1})
    d["groups"][0]["expression_ids"].append(2)
    empty = {t["image_id"]: grdkit.masks.empty_rle(*t["segmentation"]["size"])
             for t in d["targets"]}
    d["targets"] += [dict(t, expression_id=2, positive=False, ann_ids=[],
                          segmentation=empty[t["image_id"]]) for t in d["targets"]]
    path.write_text(json.dumps(d))
    return path


# -- 1. predict restores exactly what training used and measured ---------------------------------
def test_val_metrics_are_what_predict_gives(tmp_path, capsys):
    need(COCO_IMAGES)
    data = tmp_path / "cow.json"
    grdkit.save_dataset(cow_dataset(), data)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "grser", "--data", data, "--img-root", SHARED, "--out", run,
                            "--size", "64", "--group-size", "4", "--width", "16", "--epochs", "2",
                            "--val-data", data, "--no-progress"], capsys)
    assert code == 0, err
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r["val"] for r in recs if r.get("event") == "epoch"]
    assert len(val) == 2 and val[-1]["gres_miou"] is not None
    # the saved run restores the bundled EfficientNet-Lite0's TF-Lite normalisation (a buffer)
    model, _ = load_run(run, torch.device("cpu"))
    assert model.vision.mean.flatten().tolist() == pytest.approx([127 / 255] * 3)
    assert model.vision.std.flatten().tolist() == pytest.approx([128 / 255] * 3)
    preds = tmp_path / "preds.json"
    code, _, err = run_cli(["predict", "--checkpoint", run, "--data", data, "--img-root", SHARED,
                            "--out", preds, "--no-progress"], capsys)
    assert code == 0, err
    assert grdkit.evaluate(preds, data).metrics == val[-1]


# -- 2. the paper's Swin-B route --------------------------------------------------------------
def test_swin_b_from_a_local_file_at_416(tmp_path, capsys):
    import timm

    need(COCO_IMAGES)
    torch.manual_seed(0)
    src = timm.create_model("swin_base_patch4_window12_384", pretrained=False)  # built for 384
    weights = tmp_path / "swin_b.pth"
    torch.save(src.state_dict(), weights)
    del src
    d = cow_dataset().to_dict()  # two images of the group keep the test light
    keep = d["groups"][0]["image_ids"][:1] + d["groups"][0]["image_ids"][-1:]
    d["groups"][0]["image_ids"] = keep
    d["images"] = [im for im in d["images"] if im["id"] in keep]
    d["targets"] = [t for t in d["targets"] if t["image_id"] in keep]
    data = tmp_path / "two.json"
    data.write_text(json.dumps(d))
    run = tmp_path / "swin"
    code, _, err = run_cli(["train", "grser", "--data", data, "--img-root", SHARED, "--out", run,
                            "--vision", "swin_base_patch4_window12_384", "--vision-weights",
                            weights, "--size", "416", "--group-size", "2", "--width", "16",
                            "--max-steps", "1", "--workers", "0", "--no-progress"], capsys)
    assert code == 0, err
    model, cfg = load_run(run, torch.device("cpu"))
    assert cfg.size == 416 and model.vision.channels == [256, 512, 1024]
    preds = tmp_path / "p.json"
    code, _, err = run_cli(["predict", "--checkpoint", run, "--data", data, "--img-root", SHARED,
                            "--out", preds, "--workers", "0", "--no-progress"], capsys)
    assert code == 0, err and len(json.loads(preds.read_text())) == 2


def test_features_are_nchw_at_strides_8_16_32():
    from grdkit.baselines.encoders import VisionEncoder

    enc = VisionEncoder("swin_tiny_patch4_window7_224", None, img_size=224)
    feats = enc(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
    assert [tuple(f.shape) for f in feats] == [(1, 192, 28, 28), (1, 384, 14, 14),
                                               (1, 768, 7, 7)]


def test_model_that_cannot_be_built_is_exit_2(tmp_path, capsys):
    data = tmp_path / "cow.json"
    grdkit.save_dataset(cow_dataset(), data)
    code, _, err = run_cli(["train", "grser", "--data", data, "--img-root", SHARED, "--out",
                            tmp_path / "r", "--vision", "vit_tiny_patch16_224", "--vision-weights",
                            data, "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err
    code, _, err = run_cli(["train", "grser", "--data", data, "--img-root", SHARED, "--out",
                            tmp_path / "r2", "--vision", "resnet18", "--size", "64",
                            "--vision-weights", tmp_path / "absent.pth", "--no-progress"], capsys)
    assert code == 2 and "vision weights not found" in err


# -- 3. DDP: every ablation, and a rank whose batch has no positive image -------------------------
DDP_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch.distributed as dist
    from grdkit.baselines.engine import train
    from grdkit.baselines.run import TrainConfig
    dist.init_process_group("gloo")
    data, root, out = sys.argv[1:4]
    base = dict(vision_weights="bundled", width=16, group_size=2, seed=0)
    for name, extra in [("default", {}), ("no-triplet", {"triplet": False}),
                        ("no-mirror", {"mirror": False}), ("no-tqm", {"tqm": False}),
                        ("no-hierarchizer", {"hierarchizer": False}),
                        ("pwam", {"fusion": "pwam"})]:
        cfg = TrainConfig(model="grser", epochs=2, size=64, group_size=2, device="cpu",
                          workers=0, model_args={**base, **extra})
        res = train(cfg, data, root, f"{out}/{name}")
        if res["rank"] == 0:
            print(json.dumps({"name": name, "in_sync": res["ranks_in_sync"],
                              "steps": res["steps"]}), flush=True)
    dist.destroy_process_group()
""")


def test_ddp_every_ablation_two_gloo_processes(tmp_path):
    need(COCO_IMAGES)
    data = _two_expression_cow(tmp_path / "cow2.json")
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", str(script), str(data), str(SHARED),
                          str(tmp_path / "runs")], capture_output=True, text=True, env=env,
                         timeout=900, check=False, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert [r["name"] for r in rows] == ["default", "no-triplet", "no-mirror", "no-tqm",
                                         "no-hierarchizer", "pwam"]
    assert all(r["in_sync"] and r["steps"] == 2 for r in rows)
    # each rank trained one item per epoch: over two epochs, a rank saw the no-target expression
    first = [json.loads(x) for x in (tmp_path / "runs" / "default" / "metrics.jsonl")
             .read_text().splitlines()]
    assert first[-1]["world_size"] == 2


def test_losses_keep_every_head_in_the_graph():
    """A batch without positive images still gives every trainable parameter a gradient."""
    from grdkit.baselines.grser import GRSer

    ds = cow_dataset()
    item = GroupDataset(ds, cow_store(), group_size=2)[0]
    neg = [k for k, p in enumerate(item["positive"].tolist()) if not p]
    b = collate([{**item, "images": item["images"][neg], "masks": item["masks"][neg],
                  "positive": item["positive"][neg], "sizes": item["sizes"][neg],
                  "image_ids": [item["image_ids"][k] for k in neg]}])
    assert not b["positive"].any()
    for kw in ({}, {"triplet": False}, {"mirror": False}):
        m = GRSer(vision_weights=None, width=16, group_size=2, **kw).train()
        loss, parts = m.loss(m(b), b)
        loss.backward()
        missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == [], (kw, missing[:5])
        assert float(parts["bce"]) == 0.0


# -- 4. a frozen text encoder ------------------------------------------------------------------
def test_frozen_text_encoder_stays_in_eval_mode_and_is_cached():
    from grdkit.baselines.grser import GRSer

    m = GRSer(vision_weights=None, width=16, group_size=2).train()
    assert m.training and not m.text.model.training  # no dropout noise on L vs L_anti
    a = m.text(["a black cow", "a dog"])
    assert set(m.text._cache) == {"a black cow", "a dog"}
    b = m.text(["a dog", "a black cow"])
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])
    words, mask, sent = m.text.encode(["a dog", "a black cow"])
    assert sent.shape == (2, m.text.dim)
    assert words.shape[:2] == mask.shape and mask.sum(1).tolist()[0] < mask.sum(1).tolist()[1]
    t = GRSer(vision_weights=None, width=16, group_size=2, train_text=True).train()
    assert t.text.model.training and not t.text._cache


# -- fidelity ----------------------------------------------------------------------------------
def test_grser_ranks_and_decides_in_omega_l_space_with_the_prototype_anchor():
    from grdkit.baselines.grser import GRSer, cosine_map, hierarchy_order, prototypes

    m = GRSer(vision_weights=None, width=16, group_size=4, mirror=False).eval()
    assert not hasattr(m, "l_proj") and not hasattr(m, "a_proj")
    b = collate([GroupDataset(cow_dataset(), cow_store(), group_size=4)[0]])
    seen = {}
    m.v_merge.register_forward_hook(lambda mod, i, o: seen.setdefault("v", o))
    with torch.no_grad():
        out = m(b)
        l_all = m.w_l(m.text(["cow", "<no> cow"]))
    assert torch.allclose(out["l_pos"][0], l_all[0]) and torch.allclose(out["l_neg"][0], l_all[1])
    v = seen["v"]
    p = prototypes(v, cosine_map(v, l_all[0]))
    # issue 17: the anchor is eq. 2's pooling of z_n's V-part, i.e. the prototype itself
    assert torch.allclose(out["a"], p, atol=1e-6)
    assert out["order"][0].tolist() == hierarchy_order(p, l_all[0], l_all[1]).tolist()
    # the triplet loss trains omega_l, the space eq. 4 ranks in
    tri_only = GRSer(vision_weights=None, width=16, group_size=4, mirror=False).train()
    out = tri_only(b)
    torch.nn.functional.triplet_margin_loss(out["a"], out["l_pos"].expand_as(out["a"]),
                                            out["l_neg"].expand_as(out["a"])).backward()
    assert tri_only.w_l.weight.grad.abs().sum() > 0


def test_vision_heatmaps_batched_equals_per_prototype():
    from grdkit.baselines.grser import cosine_map, vision_heatmaps

    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 5, 4, 6, generator=g)
    p = torch.randn(3, 5, generator=g)
    ref = torch.stack([cosine_map(v, p[i]) for i in range(3)], 1)[:, :, 0]
    assert torch.allclose(vision_heatmaps(v, p), ref, atol=1e-6)


def test_pwam_ignores_padded_words():
    from grdkit.baselines.grser import PWAM

    torch.manual_seed(0)
    mod = PWAM(8, 6)
    x, words = torch.randn(2, 8, 3, 3), torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, False, False]] * 2)
    y = mod(x, words, mask)
    words2 = words.clone()
    words2[:, 2:] = 100.0  # padding content must not matter
    assert y.shape == x.shape and torch.allclose(y, mod(x, words2, mask))


def test_lts_paper_fusion_uses_text_at_the_coarsest_level_only():
    from grdkit.baselines.lts import LTS

    m = LTS(vision_weights=None, width=16, d_k=16)
    assert m.fusion == "paper" and len(m.t_proj) == 1
    assert all(isinstance(x, torch.nn.Conv2d) and x.kernel_size == (1, 1) for x in m.merge)
    old = LTS(vision_weights=None, width=16, d_k=16, fusion="text-every-level")
    assert len(old.t_proj) == 3 and old.merge[0][0].kernel_size == (3, 3)
    with pytest.raises(ValueError):
        LTS(vision_weights=None, width=16, d_k=16, fusion="late")


def test_presets_fill_the_papers_settings_and_explicit_options_win():
    cfg = TrainConfig(model="grser", preset="gres-paper",
                      model_args={"vision_weights": "swin.pth", "text": "bert", "width": 64})
    with pytest.raises(InputError, match="needs vision_weights"):
        apply_preset(cfg)
    got = apply_preset(cfg, {"vision_weights", "text", "width", "epochs"})
    want = PRESETS["gres-paper"]
    assert (got.lr, got.weight_decay, got.batch_size, got.size, got.group_size) == \
        (5e-5, 0.01, 4, 416, 8)
    assert got.epochs == cfg.epochs  # given explicitly: kept
    assert got.model_args["vision"] == want["model_args"]["vision"]
    assert got.model_args["width"] == 64 and got.model_args["vision_weights"] == "swin.pth"
    with pytest.raises(InputError, match="is for grser"):
        apply_preset(TrainConfig(model="lts", preset="gres-paper"))
    with pytest.raises(InputError, match="needs vision_weights"):
        apply_preset(TrainConfig(model="lts", preset="lts-paper"))
    lts = apply_preset(TrainConfig(model="lts", preset="lts-paper"), {"vision_weights", "text"})
    assert lts.model_args["fusion"] == "paper" and lts.threshold == 0.25


# -- the store --------------------------------------------------------------------------------
def test_store_is_built_once_and_holds_the_resized_pixels(tmp_path):
    from PIL import Image as PILImage

    ds = cow_dataset()
    s1 = build_store(ds, SHARED, 48, tmp_path)
    stamp = (s1.folder / "images.u8").stat().st_mtime_ns
    s2 = build_store(ds, SHARED, 48, tmp_path)
    assert s2.folder == s1.folder and (s1.folder / "images.u8").stat().st_mtime_ns == stamp
    assert len(list(tmp_path.iterdir())) == 1  # no temporary folder left behind
    im = ds.images[0]
    with PILImage.open(SHARED / im.file_name) as f:
        ref = np.asarray(f.convert("RGB").resize((48, 48), PILImage.BILINEAR))
    np.testing.assert_array_equal(s1.image(im.id), ref)
    for t in ds.targets[:5] + ds.targets[-5:]:
        np.testing.assert_array_equal(s1.mask(t.expression_id, t.image_id),
                                      resized_mask(t.segmentation, 48) if t.positive
                                      else np.zeros((48, 48), np.uint8))
    item = GroupDataset(ds, s1, group_size=4)[0]
    assert valid_rows(collate([item]), "images").dtype == torch.uint8


def test_cache_command(tmp_path, capsys):
    data = tmp_path / "cow.json"
    grdkit.save_dataset(cow_dataset(), data)
    code, out, err = run_cli(["cache", "--data", data, "--img-root", SHARED, "--size", "32",
                              "--cache-dir", tmp_path / "c", "--no-progress"], capsys)
    assert code == 0, err
    assert "63 images, 30 masks at 32 px" in out
