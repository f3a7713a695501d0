"""Benchmark `GRESMetrics.update` (torchmetrics, CPU) against `grdkit.evaluate` on the same pairs,
in the same run.

Pairs: 480 x 640 images, half negative; ground truth one or two rectangles; predictions are
probability maps (float32, the shape a model's sigmoid gives) near the ground truth, at the
original size. GRESMetrics gets them as tensors with the ground-truth RLEs (decoded per pair,
the exact path); `grdkit.evaluate` gets the same predictions as the RLEs `grdkit predict` would
write (thresholded and encoded here, NOT timed: that is the predictor's cost) and a canonical
dataset. Both compute the metrics at the end (timed). Prints pairs/s of each and their ratio, for
the ``grdkit`` and ``rela`` profiles, and checks that the two agree to 1e-9.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py [--pairs 400] [--batch 8]
       [--device cuda] [--targets rle|tensor]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import grdkit
from grdkit.format import GresDataset, masks
from grdkit.metrics import GRESMetrics

H, W = 480, 640


def make(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images, targets, probs = [], [], []
    for k in range(n):
        gt = np.zeros((H, W), np.uint8)
        if k % 2 == 0:
            y, x = rng.integers(0, H - 100), rng.integers(0, W - 100)
            gt[y:y + int(rng.integers(50, H - y)), x:x + int(rng.integers(50, W - x))] = 1
        p = np.roll(gt, int(rng.integers(-20, 21)), axis=1).astype(np.float32) * 0.7
        p += rng.random((H, W), dtype=np.float32) * 0.25
        if k % 7 == 3:
            p[:5, :5] = 0.9  # a small false alarm
        images.append({"id": k + 1, "file_name": f"{k + 1}.jpg", "height": H, "width": W})
        targets.append({"expression_id": 1, "image_id": k + 1, "positive": bool(gt.any()),
                        "segmentation": masks.encode(gt), "ann_ids": [1] if gt.any() else []})
        probs.append(p)
    info = {"name": "bench", "split": "val", "grdkit_version": "0", "recipe": {}, "sources": {}}
    ds = GresDataset.from_dict({"info": info, "images": images,
                                "expressions": [{"id": 1, "text": "x", "group_id": 1}],
                                "groups": [{"id": 1, "expression_ids": [1],
                                            "image_ids": [im["id"] for im in images]}],
                                "targets": targets})
    return ds, probs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=400, help="pairs (480 x 640), half negative")
    ap.add_argument("--batch", type=int, default=8, help="pairs per update() call")
    ap.add_argument("--device", default="cpu", help="where GRESMetrics counts (cpu, cuda)")
    ap.add_argument("--targets", choices=("rle", "tensor"), default="rle",
                    help="ground truth as RLEs (decoded per pair, exact) or as bool tensors "
                         "already on --device")
    a = ap.parse_args()
    torch.set_num_threads(1)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    ds, probs = make(a.pairs)
    preds = [{"expression_id": 1, "image_id": t.image_id,
              "segmentation": masks.encode((p > 0.5).astype(np.uint8))}
             for t, p in zip(ds.targets, probs)]
    rles = [t.segmentation for t in ds.targets]
    # inputs on the device before the clock starts (a model's outputs are already there)
    p_dev = [torch.from_numpy(np.stack(probs[s:s + a.batch])).to(dev)
             for s in range(0, a.pairs, a.batch)]
    tg = [rles[s:s + a.batch] if a.targets == "rle" else
          torch.from_numpy(np.stack([masks.decode(r).astype(bool)
                                     for r in rles[s:s + a.batch]])).to(dev)
          for s in range(0, a.pairs, a.batch)]
    print(f"{a.pairs} pairs at {H} x {W}, batch {a.batch}, GRESMetrics on {dev} (targets as "
          f"{a.targets}), grdkit.evaluate on the CPU, 1 thread")
    warm = GRESMetrics().to(dev)  # first calls allocate; not timed
    warm.update(p_dev[0], tg[0], expression_ids=[1] * len(p_dev[0]),
                image_ids=list(range(len(p_dev[0]))))
    for profile in ("grdkit", "rela"):
        t0 = time.perf_counter()
        ref = grdkit.evaluate(preds, ds, protocol=profile).metrics
        t_eval = time.perf_counter() - t0
        metric = GRESMetrics(profile=profile).to(dev)
        sync()
        t0 = time.perf_counter()
        for b, s in enumerate(range(0, a.pairs, a.batch)):
            metric.update(p_dev[b], tg[b], expression_ids=[1] * len(p_dev[b]),
                          image_ids=[t.image_id for t in ds.targets[s:s + a.batch]])
        got = metric.compute()
        sync()
        t_metric = time.perf_counter() - t0
        worst = max(abs(got[k] - ref[k]) for k in ref if ref[k] is not None)
        print(f"{profile:7s} GRESMetrics {a.pairs / t_metric:8.0f} pairs/s | grdkit.evaluate "
              f"{a.pairs / t_eval:8.0f} pairs/s | ratio {t_eval / t_metric:.2f}x | max |diff| "
              f"{worst:.1e}")


if __name__ == "__main__":
    main()
