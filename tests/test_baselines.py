"""Baselines: weight mapping on real photos, sampling, LTS shapes, train -> predict -> eval,
resume, and two CPU processes staying in sync (gloo). Small sizes keep CI fast."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the grdkit[baselines] extra")

import grdkit
from grdkit.baselines.data import GroupDataset, collate, sample_group
from grdkit.baselines.run import TrainConfig, pick_device
from grdkit.errors import InputError

from .conftest import COCO_IMAGES, MSRC_COW, SHARED, cow_dataset, cow_store, need, run_cli

SMALL = {"width": 16, "d_k": 16}
BOVINE = {345, 346, 347}  # ImageNet: ox, water buffalo, bison


def test_bundled_efficientnet_recognises_real_cows():
    """Mapped EfficientNet-Lite0 weights + TF-Lite normalisation: bovine in the top 5 >= 80%."""
    from PIL import Image as PILImage

    from grdkit.baselines.encoders import TF_LITE_NORM, load_timm

    need(MSRC_COW)
    model, (mean, std) = load_timm()
    assert (mean, std) == TF_LITE_NORM
    model.eval()
    paths = sorted((MSRC_COW / "images").glob("*.png"))
    hits = 0
    for p in paths:
        im = PILImage.open(p).convert("RGB").resize((224, 224), PILImage.BILINEAR)
        x = torch.tensor(np.asarray(im), dtype=torch.float32).permute(2, 0, 1) / 255
        x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        with torch.no_grad():
            top5 = set(model(x[None]).topk(5).indices[0].tolist())
        hits += bool(top5 & BOVINE)
    assert hits / len(paths) >= 0.8, f"{hits}/{len(paths)}"


def test_map_lite0_rejects_foreign_names():
    import timm

    from grdkit.baselines.encoders import map_lite0

    m = timm.create_model("efficientnet_lite0", pretrained=False)
    with pytest.raises(ValueError, match="cannot map"):
        map_lite0({"_weird.weight": torch.zeros(1)}, m)


def test_sample_group_is_balanced():
    rng = np.random.default_rng(0)
    pos, neg = list(range(10)), list(range(100, 120))
    ids = sample_group(pos, neg, 8, rng)
    assert sum(i < 100 for i in ids) == 4 and len(ids) == 8
    ids = sample_group(pos[:2], neg, 8, rng)  # too few positives: fill with negatives
    assert sum(i < 100 for i in ids) == 2 and len(ids) == 8
    assert sample_group(pos[:1], neg[:2], 8, rng) == [0, 100, 101]


def test_group_dataset_and_collate():
    ds = cow_dataset()
    gd = GroupDataset(ds, cow_store(), group_size=6, seed=1)
    a, b = gd[0], gd[(0, 0)]
    assert a["image_ids"] == b["image_ids"]  # deterministic within an epoch
    gd.set_epoch(1)
    assert gd[0]["image_ids"] != a["image_ids"] and gd[0]["image_ids"] == gd[(1, 0)]["image_ids"]
    assert a["images"].shape == (6, 3, 64, 64) and a["images"].dtype == torch.uint8
    assert int(a["images"].max()) > 1  # 0-255 pixels, normalised later on the device
    assert int(a["positive"].sum()) == 3
    for k, iid in enumerate(a["image_ids"]):
        assert bool(a["masks"][k].any()) == bool(a["positive"][k])
        im = ds.image(iid)
        assert a["sizes"][k].tolist() == [im.height, im.width]
    short = dict(a, image_ids=a["image_ids"][:2], images=a["images"][:2], masks=a["masks"][:2],
                 positive=a["positive"][:2], sizes=a["sizes"][:2])
    c = collate([a, short])
    assert c["images"].shape == (2, 6, 3, 64, 64)
    assert c["valid"].sum(1).tolist() == [6, 2] and c["counts"] == [6, 2]
    assert c["index"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7] and c["group"].tolist() == [0] * 6 + [1] * 2
    from grdkit.baselines.data import valid_rows

    assert torch.equal(valid_rows(c, "images"), c["images"][c["valid"]])


def test_lts_shapes_and_finite_loss():
    from grdkit.baselines.lts import LTS

    ds = cow_dataset()
    b = collate([GroupDataset(ds, cow_store(), group_size=4)[0]])
    m = LTS(vision_weights=None, **SMALL)
    out = m(b)
    assert out["p"].shape == (4, 1, 16, 16) and out["h"].shape == (4, 1, 8, 8)
    loss, parts = m.loss(out, b)
    assert torch.isfinite(loss) and set(parts) == {"bce_p", "bce_h"}
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())
    assert all(p.grad is None for p in m.text.model.parameters())  # frozen by default


def test_train_predict_eval_and_resume(tmp_path, capsys):
    need(COCO_IMAGES)
    ds = cow_dataset()
    data = tmp_path / "cow.json"
    grdkit.save_dataset(ds, data)
    run = tmp_path / "run"
    base = ["train", "lts", "--data", data, "--img-root", SHARED, "--out", run, "--size", "64",
            "--group-size", "4", "--width", "16", "--d-k", "16", "--no-progress"]
    code, out, err = run_cli([*base, "--epochs", "2", "--max-steps", "2"], capsys)
    assert code == 0, err
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["event"] == "done" and recs[-1]["step"] == 2
    assert all(np.isfinite(r["loss"]) for r in recs if "loss" in r)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "lts" and cfg["model_args"]["d_k"] == 16
    code, _, err = run_cli([*base, "--epochs", "2"], capsys)
    assert code == 2 and "already holds a run" in err
    code, _, err = run_cli([*base, "--epochs", "3", "--resume"], capsys)
    assert code == 0, err
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["step"] == 3  # one more epoch of one step
    preds = tmp_path / "preds.json"
    code, out, err = run_cli(["predict", "--checkpoint", run, "--data", data, "--img-root",
                              SHARED, "--out", preds, "--no-progress"], capsys)
    assert code == 0, err
    p = json.loads(preds.read_text())
    assert len(p) == 63 and {(x["expression_id"], x["image_id"]) for x in p} == \
        {(t.expression_id, t.image_id) for t in ds.targets}
    for x in p:
        if x["segmentation"] is not None:
            im = ds.image(x["image_id"])
            assert x["segmentation"]["size"] == [im.height, im.width]
    code, out, _ = run_cli(["eval", preds, "--gt", data, "--strict"], capsys)
    assert code == 0 and "gres_miou" in out


def test_two_cpu_processes_stay_in_sync(tmp_path):
    need(COCO_IMAGES)
    data = tmp_path / "cow.json"
    ds = cow_dataset()
    # two expressions so each process gets its own group
    d = ds.to_dict()
    d["expressions"].append({"id": 2, "text": "a brown cow", "group_id": 1})
    d["groups"][0]["expression_ids"].append(2)
    d["targets"] += [dict(t, expression_id=2) for t in d["targets"]]
    data.write_text(json.dumps(d))
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29531", "-m", "grdkit.cli.main", "train", "lts", "--data",
           str(data), "--img-root", str(SHARED), "--out", str(run), "--size", "64",
           "--group-size", "2", "--width", "16", "--d-k", "16", "--epochs", "2",
           "--device", "cpu", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr[-2000:]
    done = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert done["event"] == "done" and done["world_size"] == 2 and done["ranks_in_sync"]
    assert done["step"] == 2  # 2 expressions / 2 processes = 1 step per epoch


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            pick_device("cuda")


def test_train_config_defaults_follow_the_paper():
    cfg = TrainConfig()
    assert (cfg.group_size, cfg.size, cfg.lr, cfg.weight_decay) == (8, 416, 5e-5, 0.01)
    assert cfg.poly_power == 0.9 and cfg.threshold is None  # None: the model's own threshold
    from grdkit.baselines.run import resolve_defaults

    assert resolve_defaults(cfg).threshold == 0.25  # LTS's 0.25 threshold


def test_local_vision_weights(tmp_path):
    """A local state dict loads by path (the route for paper-faithful Swin-B); a wrong one fails."""
    import timm

    from grdkit.baselines.encoders import IMAGENET_NORM, VisionEncoder, load_timm

    src = timm.create_model("efficientnet_lite0", pretrained=False)
    torch.nn.init.constant_(src.conv_stem.weight, 0.125)
    p = tmp_path / "lite0.pth"
    torch.save(src.state_dict(), p)
    model, norm = load_timm("efficientnet_lite0", p)
    assert norm == IMAGENET_NORM
    assert float(model.conv_stem.weight.detach().mean()) == 0.125
    enc = VisionEncoder("efficientnet_lite0", p)
    assert float(enc.body.conv_stem.weight.detach().mean()) == 0.125
    torch.save({"nonsense": torch.zeros(2)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="does not fit efficientnet_lite0"):
        load_timm("efficientnet_lite0", tmp_path / "bad.pth")
    with pytest.raises(InputError, match="no bundled weights"):
        load_timm("resnet18", "bundled")
