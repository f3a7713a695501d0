"""Inference: a trained run -> ``preds.json`` (the evaluator's format).

Each expression is run over every image of its group in chunks of the training group size; the
foreground probability map is resized to the image's original size (bilinear), thresholded
(``threshold``, 0.25 for LTS as in the paper), and encoded as COCO RLE. A mask with fewer than
``min_pixels`` pixels, or an image the model decides is negative (GRSer), is ``null`` (no target).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..format import GresDataset, load_dataset, masks
from ..io import atomic_write_text
from ..progress import Progress, tracked
from .data import ImageCache, collate, inference_items
from .engine import load_run, pick_device


@torch.no_grad()
def predict(run_dir: str | Path, data: str | Path | GresDataset, img_root: str | Path,
            device: str = "auto", min_pixels: int = 1, threshold: float | None = None,
            progress: Progress | None = None) -> list[dict]:
    """Predictions for every (expression, image) pair, sorted by (expression_id, image_id)."""
    dev = pick_device(device)
    model, cfg = load_run(run_dir, dev)
    ds = data if isinstance(data, GresDataset) else load_dataset(data)
    thr = cfg.threshold if threshold is None else threshold
    cache = ImageCache(ds, img_root, cfg.size, cache=False)
    n_items = sum(-(-len(ds.group(e.group_id).image_ids) // cfg.group_size)
                  for e in ds.expressions)
    items = inference_items(ds, cache, cfg.group_size)
    items = tracked(progress, items, "predicting", n_items)
    out = []
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
    for it in items:
        batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in collate([it]).items()}
        if amp is not None:
            with amp:
                res = model(batch)
        else:
            res = model(batch)
        probs, decision = model.probabilities(res)
        for k, iid in enumerate(it["image_ids"]):
            h, w = (int(x) for x in it["sizes"][k])
            p = F.interpolate(probs[k:k + 1].float(), size=(h, w), mode="bilinear",
                              align_corners=False)[0, 0]
            m = (p > thr).cpu().numpy()
            keep = (decision is None or bool(decision[k])) and int(m.sum()) >= min_pixels
            out.append({"expression_id": it["expression_id"], "image_id": iid,
                        "segmentation": masks.encode(m) if keep else None,
                        "score": round(float(p.max()), 6)})
    out.sort(key=lambda r: (r["expression_id"], r["image_id"]))
    return out


def write_predictions(preds: list[dict], path: str | Path) -> None:
    """Write ``preds.json`` atomically."""
    atomic_write_text(path, json.dumps(preds, separators=(",", ":")) + "\n")
