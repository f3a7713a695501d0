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


def _inference(model: torch.nn.Module, cfg: TrainConfig, ds: GresDataset,
               img_root: str | Path, device: torch.device, min_pixels: int | None,
               threshold: float | None, progress: Progress | None, workers: int,
               group_size: int | None, rank: int = 0, world: int = 1):
    """The inference loop shared by :func:`predict_with_model` and :func:`validate_with_model`:
    yields per image ``(expression id, image id, mask, keep, no_target, score, peak)`` with the
    bool mask ``(h, w)`` at the original size on ``device`` (probability > threshold), ``keep``
    whether it is written (>= min_pixels and, for GRSer, its decision), ``no_target`` the head's
    decision (None for models without one) and ``peak`` ``[x, y]`` or None. Items ``k`` with
    ``k % world == rank`` only (a rank's share of the pairs)."""
    was_training = model.training
    model.eval()
    thr = threshold if threshold is not None else (
        cfg.threshold if cfg.threshold is not None
        else model_default(cfg.model, "default_threshold", 0.25))
    if min_pixels is None:
        min_pixels = int(getattr(model, "default_min_pixels", 1))  # the instance's (options)
    head = bool(getattr(model, "decides_no_target", False))
    items = InferenceItems(ds, img_root, cfg.size, group_size or cfg.group_size)
    share = items if world == 1 else torch.utils.data.Subset(
        items, range(rank, len(items), world))
    loader = torch.utils.data.DataLoader(share, batch_size=None, num_workers=workers,
                                         collate_fn=collate_one)
    try:
        for batch in tracked(progress, loader, "predicting", len(share)):
            batch = to_device(batch, device)
            with autocast(device):
                res = model(batch)
            probs, decision = model.probabilities(res)
            peaks, grid = model.peaks(res) if hasattr(model, "peaks") else (None, None)
            for k, iid in enumerate(batch["image_ids"][0]):
                h, w = (int(x) for x in batch["sizes"][0, k])
                p = F.interpolate(probs[k:k + 1].float(), size=(h, w), mode="bilinear",
                                  align_corners=False)[0, 0]
                m = p > thr
                keep = int(m.sum()) >= min_pixels and (
                    head or decision is None or bool(decision[k]))
                peak = None
                if peaks is not None:  # issue 18 (contract C3): the heatmap's maximum
                    col, row = (int(v) for v in peaks[k])
                    peak = [(2 * col + 1) * w // (2 * grid[1]), (2 * row + 1) * h // (2 * grid[0])]
                yield (batch["expression_id"][0], iid, m, keep,
                       (not bool(decision[k])) if head else None, float(p.max()), peak)
    finally:
        model.train(was_training)


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
    out = []
    for eid, iid, m, keep, nt, score, peak in _inference(
            model, cfg, ds, img_root, device, min_pixels, threshold, progress, workers,
            group_size):
        rec = {"expression_id": eid, "image_id": iid,
               "segmentation": masks.encode(m.cpu().numpy()) if keep else None,
               "score": round(score, 6)}
        if nt is not None:
            rec["no_target"] = nt
        if peak is not None:
            rec["peak"] = peak
        out.append(rec)
    out.sort(key=lambda r: (r["expression_id"], r["image_id"]))
    return out


@torch.no_grad()
def validate_with_model(model: torch.nn.Module, cfg: TrainConfig, ds: GresDataset,
                        img_root: str | Path, device: torch.device, rank: int = 0,
                        world: int = 1, progress: Progress | None = None, workers: int = 0,
                        masks_out: dict | None = None, wanted: set | None = None) -> dict:
    """Training's per-epoch validation (issue 26): each of the ``world`` processes runs its share
    of the pairs through :func:`_inference` (the loop :func:`predict_with_model` runs) and feeds
    the masks it would write (and MABP's no-target decisions) to one
    :class:`grdkit.metrics.GRESMetrics` on ``device``, which torchmetrics syncs; every rank
    returns the same ``grdkit eval`` metrics (:meth:`~grdkit.metrics.GRESMetrics.report`):
    those of ``predict`` + ``eval`` on the saved run. Call it on every rank (it syncs).

    ``masks_out`` (optional): filled with (expression id, image id) -> the bool mask (numpy, at
    the original size) of this rank's pairs that are in ``wanted`` (TensorBoard overlays)."""
    import torch.distributed as dist

    from ..evaluators.localisation import peak_accuracy
    from ..metrics import GRESMetrics

    metric = GRESMetrics().to(device)
    peaks = []  # LTS's heatmap maxima: localisation accuracy as grdkit eval scores it
    for eid, iid, m, keep, nt, _, peak in _inference(model, cfg, ds, img_root, device, None,
                                                      None, progress, workers, None, rank,
                                                      world):
        mask = m if keep else torch.zeros_like(m)
        if masks_out is not None and wanted is not None and (eid, iid) in wanted:
            masks_out[(eid, iid)] = mask.cpu().numpy().astype(bool)
        metric.update(mask[None], [ds.target(eid, iid).segmentation], expression_ids=[eid],
                      image_ids=[iid], no_target=None if nt is None else torch.tensor([nt]))
        if peak is not None:
            peaks.append({"expression_id": eid, "image_id": iid, "peak": peak})
    out = metric.report(ds).metrics
    if world > 1:  # a few ints per pair
        every = [None] * world
        dist.all_gather_object(every, peaks)
        peaks = [r for part in every for r in part]
    loc = peak_accuracy(peaks, ds)
    if loc is not None:
        out["loc_acc"] = loc["loc_acc"]
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
