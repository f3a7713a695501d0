"""The documented training loop (docs/examples/train_loop_ddp.py, shown whole in
docs/training-loop.md) runs under torchrun on two gloo processes, and the metrics its
GRESMetrics gives equal `grdkit eval` on the predictions of its saved model, made here in one
process the way `grdkit predict` makes them (bilinear to the original size, > 0.5)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the grdkit[baselines] extra")

import grdkit
from grdkit.format import masks
from grdkit.torch import GRESDataset

from .conftest import COCO_IMAGES, MSRC_COW, SHARED, cow_dataset, need

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "train_loop_ddp.py"
PAGE = ROOT / "docs" / "training-loop.md"


def test_the_page_shows_the_tested_example_whole():
    assert EXAMPLE.read_text() in PAGE.read_text()


def test_the_example_under_two_gloo_processes_equals_grdkit_eval(tmp_path):
    need(COCO_IMAGES), need(MSRC_COW)
    d = cow_dataset().to_dict()  # 5 cows and 4 photos without one: 9 pairs (odd: padding)
    ids = d["groups"][0]["image_ids"]
    keep = ids[:5] + ids[-4:]
    d["groups"][0]["image_ids"] = keep
    d["images"] = [im for im in d["images"] if im["id"] in keep]
    d["targets"] = [t for t in d["targets"] if t["image_id"] in keep]
    data = tmp_path / "cow.json"
    data.write_text(json.dumps(d))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29547", str(EXAMPLE), "--data", str(data),
                          "--img-root", str(SHARED), "--out", str(tmp_path / "m.json"),
                          "--save", str(tmp_path / "model.pt")], capture_output=True, text=True,
                         env=env, timeout=600, check=False, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "giou" in res.stdout
    got = json.loads((tmp_path / "m.json").read_text())
    spec = importlib.util.spec_from_file_location("train_loop_ddp", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model = example.TinyNet()
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    model.eval()
    ds = grdkit.load_dataset(data)
    items = GRESDataset(ds, SHARED, transforms=example.v2.Resize((64, 64)))
    preds = []
    with torch.no_grad():
        for it in items:
            p = torch.sigmoid(model(it["image"][None]))
            p = torch.nn.functional.interpolate(p[:, None], size=it["size"], mode="bilinear",
                                                align_corners=False)[0, 0]
            m = (p > 0.5).numpy().astype("uint8")
            preds.append({"expression_id": it["expression_id"], "image_id": it["image_id"],
                          "segmentation": masks.encode(m) if m.any() else None})
    want = grdkit.evaluate(preds, ds).metrics
    assert want.keys() == got.keys()
    for k, v in want.items():
        assert (v is None and got[k] is None) or abs(v - got[k]) <= 1e-9, k
