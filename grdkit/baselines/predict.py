"""Inference: a trained model -> ``preds.json`` (the evaluator's format).

Each expression is run over every image of its group in chunks of the training group size (a
DataLoader decodes and resizes the images in worker processes); the foreground probability map
is resized to the image's original size (bilinear), thresholded (the run's ``threshold``, 0.25 by
default, see :class:`~.run.TrainConfig`), and encoded as COCO RLE. A mask with fewer than
``min_pixels`` pixels, or an image the model decides is negative (GRSer's triplet rule), is
``null`` (no target). A model that decides no-target with a head while still predicting a mask
(``decides_no_target = True``: MABP, like ReLA) keeps its mask, and its decision is the
record's optional ``"no_target"`` key (true | false), which the evaluator scores. Models with a
localisation heatmap (LTS: ``peaks``) add ``"peak": [x, y]``, the pixel (original image) where it
peaks (LTS §4.3). :func:`predict_with_model` is also what training's per-epoch validation runs,
so a saved run predicts exactly what training measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..format import GresDataset, load_dataset, masks
from ..io import atomic_write_text
from ..progress import Progress, tracked
from . import model_default
from .data import InferenceItems, collate
from .run import TrainConfig, autocast, load_run, pick_device, to_device


def collate_one(item: dict) -> dict:
    """A batch of one item (module-level, so DataLoader workers can use it)."""
    return collate([item])


@torch.no_grad()
def predict_with_model(model: torch.nn.Module, cfg: TrainConfig, ds: GresDataset,
                       img_root: str | Path, device: torch.device, min_pixels: int | None = None,
                       threshold: float | None = None, progress: Progress | None = None,
                       workers: int = 0, group_size: int | None = None) -> list[dict]:
    """Predictions of an in-memory model for every (expression, image) pair of ``ds``, sorted by
    (expression_id, image_id): ``{"expression_id", "image_id", "segmentation": RLE | None,
    "score": max probability (0-1)}`` plus ``"no_target": bool`` for models with
    ``decides_no_target`` (their mask is then kept whatever the decision) and ``"peak": [x, y]``
    for models with ``peaks`` (LTS). ``min_pixels`` / ``threshold`` None: the run's threshold
    and the model's ``default_min_pixels`` (1; MABP without its no-target branch 50).
    ``group_size`` None: the run's N (the images of a group are run in chunks of it). The model
    is left in the mode it was in."""
    was_training = model.training
    model.eval()
    thr = threshold if threshold is not None else (
        cfg.threshold if cfg.threshold is not None
        else model_default(cfg.model, "default_threshold", 0.25))
    if min_pixels is None:
        min_pixels = int(getattr(model, "default_min_pixels", 1))  # the instance's (options)
    head = bool(getattr(model, "decides_no_target", False))
    items = InferenceItems(ds, img_root, cfg.size, group_size or cfg.group_size)
    loader = torch.utils.data.DataLoader(items, batch_size=None, num_workers=workers,
                                         collate_fn=collate_one)
    out = []
    try:
        for batch in tracked(progress, loader, "predicting", len(items)):
            batch = to_device(batch, device)
            with autocast(device):
                res = model(batch)
            probs, decision = model.probabilities(res)
            peaks, grid = model.peaks(res) if hasattr(model, "peaks") else (None, None)
            for k, iid in enumerate(batch["image_ids"][0]):
                h, w = (int(x) for x in batch["sizes"][0, k])
                p = F.interpolate(probs[k:k + 1].float(), size=(h, w), mode="bilinear",
                                  align_corners=False)[0, 0]
                m = (p > thr).cpu().numpy()
                keep = int(m.sum()) >= min_pixels and (
                    head or decision is None or bool(decision[k]))
                rec = {"expression_id": batch["expression_id"][0], "image_id": iid,
                       "segmentation": masks.encode(m) if keep else None,
                       "score": round(float(p.max()), 6)}
                if head:
                    rec["no_target"] = not bool(decision[k])
                if peaks is not None:  # issue 18 (contract C3): the heatmap's maximum
                    col, row = (int(v) for v in peaks[k])
                    rec["peak"] = [(2 * col + 1) * w // (2 * grid[1]),
                                   (2 * row + 1) * h // (2 * grid[0])]
                out.append(rec)
    finally:
        model.train(was_training)
    out.sort(key=lambda r: (r["expression_id"], r["image_id"]))
    return out


def predict(run_dir: str | Path, data: str | Path | GresDataset, img_root: str | Path,
            device: str = "auto", min_pixels: int | None = None, threshold: float | None = None,
            progress: Progress | None = None, workers: int = 0, rank: str | None = None,
            group_size: int | None = None) -> list[dict]:
    """Predictions of a saved run (:func:`~.run.load_run`); see :func:`predict_with_model`.
    ``rank``: GRSer's ranking criterion at test (GRES Table 4), None: the trained one.

    Raises:
        InputError: not a run folder, a checkpoint that does not fit, unreadable images, or a
            ``rank`` for a model without a heatmap ranking.
    """
    if threshold is not None and not 0 <= threshold <= 1:  # issue 21: NaN fails this too
        raise InputError(None, f"threshold {threshold!r} is not a number in [0, 1]")
    dev = pick_device(device)
    model, cfg = load_run(run_dir, dev)
    if rank is not None:
        if not hasattr(model, "set_inference"):
            raise InputError(run_dir, f"{cfg.model} has no heatmap ranking to choose",
                             hint="--rank is GRSer's (GRES Table 4)")
        model.set_inference(rank=rank)
    ds = data if isinstance(data, GresDataset) else load_dataset(data)
    return predict_with_model(model, cfg, ds, img_root, dev, min_pixels, threshold, progress,
                              workers, group_size)


def write_predictions(preds: list[dict], path: str | Path) -> None:
    """Write ``preds.json`` atomically."""
    atomic_write_text(path, json.dumps(preds, separators=(",", ":")) + "\n")
