"""Proof that the baselines learn: overfit the real MSRC "cow" group with COCO negatives, on CPU.

Builds a canonical group "cow" from ../shared/data/msrc_cow (30 positive photos with masks) plus
../shared/data/coco_train2014_images (33 photos, none shows a cow: negatives), trains a baseline
for a fixed number of steps, predicts every pair, scores it with grdkit's evaluator, and prints
gres_miou / res_miou / r_neg before training (the initial model) and after, plus training
throughput (groups/s) and inference throughput (images/s). Training and evaluation use the same
63 images: this checks learning capacity, not generalisation. Runs unchanged on CUDA.

Usage: python benchmarks/overfit_cow.py [--model lts] [--steps 240] [--size 320] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

from _common import baseline_args, cow_group


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", default=["lts"], choices=["lts", "grser", "mabp"])
    baseline_args(ap, steps=240, size=320)
    a = ap.parse_args()
    if not SHARED.exists():
        sys.exit(f"{SHARED} is absent: this benchmark needs the real data of ../shared/data")
    import torch

    import grdkit
    from grdkit.baselines.engine import train
    from grdkit.baselines.predict import predict
    from grdkit.baselines.run import TrainConfig

    work = a.workdir or Path(tempfile.mkdtemp(prefix="grdkit-overfit-"))
    ds = cow_group(SHARED)
    gt = work / "cow.json"
    grdkit.save_dataset(ds, gt)
    print(f"group 'cow': {len(ds.images)} images ({sum(t.positive for t in ds.targets)} "
          f"positive), torch {torch.__version__}, threads {torch.get_num_threads()}")
    rows = []
    for name in a.model:
        args = {"width": a.width}
        if name == "lts":
            args["d_k"] = a.d_k
        elif name == "grser":
            args["group_size"] = a.group_size
        results = {}
        for label, steps in (("before", 0), ("after", a.steps)):
            run = work / f"{name}_{label}"
            repeats = 20  # 20 groups per epoch: a checkpoint every 20 steps
            cfg = TrainConfig(model=name, epochs=max(1, -(-steps // repeats)), lr=a.lr,
                              size=a.size, repeats=repeats,
                              group_size=a.group_size, device=a.device, max_steps=steps,
                              log_every=20, model_args=args)
            res = train(cfg, ds, SHARED, run)
            t = time.perf_counter()
            preds = predict(run, ds, SHARED, a.device)
            infer_s = time.perf_counter() - t
            rep = grdkit.evaluate(preds, gt)
            results[label] = (rep.metrics, res, infer_s, rep.counts)
        m0, m1 = results["before"][0], results["after"][0]
        res, infer_s, counts = results["after"][1], results["after"][2], results["after"][3]
        rows.append((name, m0, m1, res, infer_s, counts))
        (work / f"{name}_report.json").write_text(json.dumps({"before": m0, "after": m1}))
    print(f"\n{'model':<6} {'metric':<10} {'before':>8} {'after':>8}")
    for name, m0, m1, res, infer_s, counts in rows:
        for k in ("gres_miou", "res_miou", "r_neg", "t_acc", "ciou"):
            print(f"{name:<6} {k:<10} {m0[k]:8.2f} {m1[k]:8.2f}")
        print(f"{name:<6} train: {res['steps']} steps x {a.group_size} images in "
              f"{res['seconds']:.0f} s = {res['steps'] / res['seconds']:.2f} groups/s "
              f"({res['device']}); inference {len(ds.images) / infer_s:.1f} images/s; after: "
              f"TP {counts['tp']} TN {counts['tn']} FP {counts['fp']} FN {counts['fn']}")


if __name__ == "__main__":
    main()
