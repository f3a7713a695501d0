"""The baselines validate with GRESMetrics on every rank: two gloo processes training with
--val-data log the metrics that a single-process `grdkit predict` + `grdkit eval` give on the
saved run (MABP with its no-target head, so the "no_target" decisions are synced too)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the grdkit[baselines] extra")

import grdkit

from .conftest import COCO_IMAGES, MSRC_COW, SHARED, cow_dataset, need, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _small_cow(path: Path) -> Path:
    """Five cow photos and four COCO photos, asked "cow" and (all negative) "a zebra"."""
    d = cow_dataset().to_dict()
    ids = d["groups"][0]["image_ids"]
    keep = ids[:5] + ids[-4:]
    d["groups"][0]["image_ids"] = keep
    d["images"] = [im for im in d["images"] if im["id"] in keep]
    d["targets"] = [t for t in d["targets"] if t["image_id"] in keep]
    d["expressions"].append({"id": 2, "text": "a zebra", "group_id": 1})
    d["groups"][0]["expression_ids"].append(2)
    d["targets"] += [dict(t, expression_id=2, positive=False, ann_ids=[],
                          segmentation=grdkit.masks.empty_rle(*t["segmentation"]["size"]))
                     for t in d["targets"]]
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("model, extra", [
    ("mabp", ["--model-arg", "width=16", "--model-arg", "heads=2", "--model-arg",
              "enc_layers=1", "--model-arg", "enc_ffn=16", "--model-arg", "dec_ffn=16",
              "--group-size", "1"]),
    ("lts", ["--width", "16", "--d-k", "16", "--group-size", "3"]),
])
def test_two_gloo_processes_validate_like_predict_and_eval(tmp_path, capsys, model, extra):
    need(COCO_IMAGES), need(MSRC_COW)
    data = _small_cow(tmp_path / "cow.json")
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29543" if model == "mabp" else "29544", "-m", "grdkit.cli.main",
           "train", model, "--data", str(data), "--img-root", str(SHARED), "--out", str(run),
           "--size", "64", "--epochs", "1", "--max-steps", "1", "--device", "cpu",
           "--workers", "0", "--val-data", str(data), "--no-progress", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                         check=False, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r["val"] for r in recs if r.get("event") == "epoch"]
    assert recs[-1]["world_size"] == 2 and len(val) == 1
    preds = tmp_path / "preds.json"
    code, _, err = run_cli(["predict", "--checkpoint", run, "--data", data, "--img-root",
                            SHARED, "--out", preds, "--workers", "0", "--no-progress"], capsys)
    assert code == 0, err
    p = json.loads(preds.read_text())
    assert len(p) == 18 and (model != "mabp" or all("no_target" in r for r in p))
    assert grdkit.evaluate(preds, data).metrics == val[0]
