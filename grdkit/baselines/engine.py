"""Training: AdamW or Adam with polynomial or step decay (:func:`make_optimizer`,
:func:`make_schedule`), bf16 autocast on CUDA, optional gradient clipping, a checkpoint every
epoch, ``resume``, a JSON-lines metrics log, per-epoch validation and the run config in the run
folder; several processes through torch.distributed (``torchrun``; NCCL on
CUDA, gloo on CPU).

Run folder: ``config.json`` (everything needed to rebuild the model), ``checkpoint.pt`` (model
including its input normalisation, optimiser, scheduler, epoch, step; written atomically),
``metrics.jsonl`` (one JSON object per logged step, per epoch (with ``"val"``: the report metrics
on ``val_data``, computed by the very code ``grdkit predict`` runs, each process scoring its share
of the pairs into a :class:`grdkit.metrics.GRESMetrics` synced across processes), and a final
``done`` record with ``ranks_in_sync``).

Data: a :class:`torch.utils.data.DataLoader` over :class:`.data.GroupDataset` (worker processes,
pinned memory on CUDA, persistent workers, prefetching) reading the memory-mapped uint8 store of
:func:`.data.build_store`; images travel as uint8 and are normalised on the device. Rank 0
builds the store, the other ranks wait for it.

Batch (issue 19): ``batch_size`` is the number of items (groups) per OPTIMISER STEP in total,
over every process and every gradient-accumulation micro-step (``accum_steps``); None means one
item per process and micro-step. :class:`.data.EpochBatches` splits a step's items into
``processes x accum_steps`` micro-batches, as evenly as possible (sizes differ by at most one
when ``batch_size`` is not a multiple: e.g. 42 on 4 processes -> 11, 11, 10, 10), and
:func:`micro_step` weights each micro-batch's loss by ``items x processes / batch_size``, so the
accumulated, rank-averaged gradient is that of the mean loss over the step's items (exact for a
loss that is a mean over items, e.g. MABP at group size 1, whose loss averages over images).
Gradient synchronisation runs once per step (``no_sync`` on the other micro-steps).

Presets (:data:`.run.PRESETS`) fill the settings a paper states; every setting a paper does not state
is an explicit option with its source in :class:`TrainConfig`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..errors import InputError
from ..format import GresDataset, load_dataset
from ..io import atomic_write_bytes, atomic_write_text, read_json
from ..io.images import follow_links
from ..progress import Progress, tracked
from .data import EpochBatches, GroupDataset, build_store, collate, load_training_sets
from .predict import validate_with_model
from .run import (
    TrainConfig,
    autocast,
    build_model,
    check_fits,
    describe_recipe,
    pick_device,
    read_checkpoint,
    resolve_defaults,
    to_device,
    trainable_state,
)
from .trainlog import OVERLAYS, TrainLog, overlay


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _init_dist(device: torch.device) -> tuple[torch.device, bool]:
    """Join the process group torchrun describes (the device is set first). Returns the device
    and whether this call created the group (then :func:`train` destroys it at the end)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        if dist.is_initialized() and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device, False
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, True


def save_checkpoint(path: Path, model, opt, sched, epoch: int, step: int) -> None:
    """Write model (without a frozen text encoder), optimiser and scheduler state atomically."""
    buf = io.BytesIO()
    torch.save({"model": trainable_state(model), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": epoch, "step": step}, buf)
    atomic_write_bytes(path, buf.getvalue())


def resolve_batch(cfg: TrainConfig, world: int) -> TrainConfig:
    """``cfg`` with ``batch_size`` resolved for ``world`` processes (None: ``world x
    accum_steps``, one item per process and micro-step); see the module header.

    Raises:
        InputError: ``accum_steps < 1`` or fewer items per step than ``world x accum_steps``.
    """
    accum = int(cfg.accum_steps)
    if accum < 1:
        raise InputError(None, f"accum_steps must be >= 1, not {accum}")
    bs = world * accum if cfg.batch_size is None else int(cfg.batch_size)
    if bs < world * accum:
        raise InputError(None, f"batch_size {bs} (items per optimiser step in total) is smaller "
                         f"than processes x accum_steps = {world} x {accum}: some micro-batch "
                         "would be empty", hint="raise batch_size, or lower accum_steps or the "
                         "number of processes")
    return replace(cfg, batch_size=bs)


def micro_step(net, model, batch: dict, weight: float, device: torch.device, epoch: int = 0,
               epochs: int = 1, sync: bool = True, diagnostics: list | None = None
               ) -> tuple[torch.Tensor, dict]:
    """Forward and backward of one micro-batch (already on ``device``), its loss scaled by
    ``weight`` (``items x processes / batch_size``: the accumulated gradient is then the gradient
    of the mean loss over the step's items). ``sync`` False: DDP's gradient all-reduce is
    skipped (``no_sync``; the step's last micro-batch synchronises). Returns the unweighted
    loss (detached 0-d tensor) and the model's loss parts. ``diagnostics``: a list that gets
    ``model.diagnose(out, batch)`` when the model has that hook (GRSer's hierarchizer, issue 17)."""
    ctx = net.no_sync() if not sync and hasattr(net, "no_sync") else contextlib.nullcontext()
    with ctx:
        with autocast(device):
            outp = net(batch)
        loss, parts = model.loss(outp, batch, epoch, epochs)
        if diagnostics is not None and hasattr(model, "diagnose"):
            diagnostics.append(model.diagnose(outp, batch))
        (loss * weight).backward()
    return loss.detach(), parts


def param_checksum(model: torch.nn.Module, buffers: bool = False) -> str:
    """sha256 prefix of the parameters (or of the buffers, e.g. BatchNorm running stats)."""
    h = hashlib.sha256()
    items = model.named_buffers() if buffers else model.named_parameters()
    for k, v in sorted(items, key=lambda kv: kv[0]):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("poly", "step")


def make_optimizer(cfg: TrainConfig, params: list) -> torch.optim.Optimizer:
    """The run's optimiser: ``adamw`` (decoupled weight decay, GRES §5.2) or ``adam`` (LTS §4.1;
    ``weight_decay`` is then PyTorch Adam's L2 penalty), learning rate ``cfg.lr``. ``params``:
    parameters or parameter groups (a model's ``param_groups``, e.g. MABP's weight-decay
    exemptions).

    Raises:
        InputError: an unknown ``cfg.optimizer``.
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise InputError(None, f"optimizer {cfg.optimizer!r} is unknown; choose from "
                         f"{', '.join(OPTIMIZERS)}")
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int, total: int) -> float:
    """Learning-rate multiplier after ``step`` optimiser steps.

    ``poly``: ``(1 - step / total) ** poly_power`` (DeepLab's polynomial decay). ``step``:
    ``gamma ** k`` with k the number of milestones (epochs) already reached, a milestone ``e``
    being reached after ``e * steps_per_epoch`` steps (LTS §4.1: 0.1 from epoch 30 on).
    """
    if cfg.schedule == "step":
        return cfg.gamma ** sum(step >= m * steps_per_epoch for m in cfg.milestones)
    return max(0.0, 1 - step / max(1, total)) ** cfg.poly_power


def make_schedule(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int,
                  total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler applying :func:`lr_factor` (saved and restored with the checkpoint).

    Raises:
        InputError: an unknown ``cfg.schedule``, or milestones that are not positive epochs.
    """
    if cfg.schedule not in SCHEDULES:
        raise InputError(None, f"schedule {cfg.schedule!r} is unknown; choose from "
                         f"{', '.join(SCHEDULES)}")
    if any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in cfg.milestones):
        raise InputError(None, f"milestones {cfg.milestones!r} must be epochs >= 1")
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(cfg, s, max(1, steps_per_epoch), total))


def make_loader(dataset, sampler, workers: int, device: torch.device):
    """The training DataLoader (see the module header)."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None)


def train(cfg: TrainConfig, data: str | Path | GresDataset | list, img_root: str | Path,
          out: str | Path, resume: bool = False, progress: Progress | None = None,
          val_data: str | Path | GresDataset | None = None,
          cache_dir: str | Path | None = None, log_dir: str | Path | None = None) -> dict:
    """Train a baseline; see the module header. Returns a summary (steps, last loss, the last
    epoch's mean loss ``epoch_loss``, seconds, the last validation metrics). Logs through the
    ``grdkit.train`` logger and ``metrics.jsonl`` (:mod:`.trainlog`).

    Args:
        data: the training split, or a list of splits trained on as their union
            (:func:`.data.load_training_sets`); ``config.json`` records them (``data_sources``).
        val_data: a canonical split evaluated (with ``img_root``) at the end of every epoch by
            :func:`.predict.validate_with_model` on every rank (the inference loop ``grdkit
            predict`` runs, scored by a synced :class:`grdkit.metrics.GRESMetrics`).
        cache_dir: where the resized store lives (:func:`.data.default_cache_dir` when None).
        log_dir: folder for TensorBoard event files (None: none written; ``grdkit train``
            passes the run folder unless told otherwise).

    Raises:
        InputError: bad data / image root, a run folder holding another run without
            ``resume``, a resume whose config differs, or a model that cannot be built.
    """
    cfg = resolve_defaults(cfg)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device, own_group = _init_dist(pick_device(cfg.device))
    rank, world = _dist()
    cfg = resolve_batch(cfg, world)
    out = Path(out)
    try:
        return _train(cfg, data, img_root, out, resume, progress, val_data, cache_dir, device,
                      rank, world, log_dir)
    finally:
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg, data, img_root, out, resume, progress, val_data, cache_dir, device, rank,
           world, log_dir=None) -> dict:
    ds, sources = load_training_sets(data)  # one split or the union of several (issue 17)
    if follow_links():  # --follow-links: the image root's links were trusted (issue 30)
        sources = [{**s, "follow_links": True} for s in sources]
    cfg = replace(cfg, data_sources=sources)
    val_ds = None if val_data is None else (
        val_data if isinstance(val_data, GresDataset) else load_dataset(val_data))
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists() and not resume:
        raise InputError(out, "already holds a run", hint="resume it or choose a new run folder")
    if rank == 0:  # rank 0 builds the store; the others then open it
        store = build_store(ds, img_root, cfg.size, cache_dir, progress)
    if world > 1:
        dist.barrier()
    if rank != 0:
        store = build_store(ds, img_root, cfg.size, cache_dir)
    train_set = GroupDataset(ds, store, cfg.group_size, cfg.seed, repeats=cfg.repeats,
                             epoch_unit=cfg.epoch_unit)
    if len(train_set) == 0:
        raise InputError(ds.path, "has no expression to train on")
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.vision.channels_last = True
    params = [p for p in model.parameters() if p.requires_grad]
    groups = model.param_groups(cfg.weight_decay) if hasattr(model, "param_groups") else params
    opt = make_optimizer(cfg, groups)
    sampler = EpochBatches(len(train_set), cfg.batch_size, rank, world, cfg.seed,
                           cfg.accum_steps)
    total = cfg.epochs * sampler.steps()
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    sched = make_schedule(cfg, opt, sampler.steps(), total)  # optimiser steps per epoch
    start_epoch, step = 0, 0
    cfg_json = json.dumps(asdict(cfg), indent=1, sort_keys=True)
    if resume and ckpt_path.exists():
        saved = read_json(out / "config.json", "run config")
        for key in ("model", "model_args", "size", "group_size", "optimizer", "schedule",
                    "milestones", "gamma", "epoch_unit"):
            # a run folder older than a field holds that field's default (issue 18's fields)
            if saved.get(key, asdict(TrainConfig()).get(key)) != asdict(cfg)[key]:
                raise InputError(out / "config.json", f"{key} differs from this run's",
                                 hint="resume with the same model options")
        ck = read_checkpoint(ckpt_path)
        for key, kind in (("optimizer", dict), ("scheduler", dict), ("epoch", int),
                          ("step", int)):  # what a resume needs, checked before use
            if not isinstance(ck.get(key), kind) or isinstance(ck.get(key), bool):
                raise InputError(ckpt_path, f"cannot be resumed: {key!r} is missing or not "
                                 f"{'an object' if kind is dict else 'an integer'}",
                                 hint="resume from a checkpoint written by grdkit train, or "
                                      "train afresh without --resume")
        check_fits(model, ck["model"], ckpt_path)
        try:
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
            raise InputError(ckpt_path, f"cannot be resumed: its optimizer or scheduler state "
                             f"does not fit ({' '.join(str(e).split())[:160]})",
                             hint="resume with the same options, or train afresh") from None
        start_epoch, step = ck["epoch"] + 1, ck["step"]
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", cfg_json + "\n")
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False)
    if cfg.compile:
        net = torch.compile(net)
    loader = make_loader(train_set, sampler, cfg.workers, device)
    tlog = TrainLog(out, rank, world, cfg.epochs, total, sampler.steps(), cfg.log_every,
                    log_dir, device)
    n_expr = len(train_set) // max(1, cfg.repeats)
    tlog.info(describe_recipe(cfg))
    tlog.info(f"train: {cfg.model} on {device}, {world} process(es); 1 epoch = "
              f"{sampler.steps()} optimiser steps = {n_expr} expressions x {cfg.repeats} "
              f"repeats = {len(train_set)} groups / {cfg.batch_size} groups per step "
              f"({world} process(es) x {cfg.accum_steps} micro-steps), rounded up; "
              f"{cfg.epochs - start_epoch} epoch(s) to run, {total - step} steps"
              + (f" (stopping at max_steps {cfg.max_steps})" if cfg.max_steps is not None
                 and cfg.max_steps < cfg.epochs * sampler.steps() else ""))
    t0 = time.perf_counter()
    last, val_metrics, epoch_loss = float("nan"), None, None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if step >= total:
                break
            t_epoch = time.perf_counter()
            sampler.set_epoch(epoch)
            model.train()
            losses = []
            micro, step_loss = 0, None
            opt.zero_grad(set_to_none=True)
            diag = []  # optional per-epoch training diagnostics (model.diagnose, issue 17)
            images, data_time, t_ready = 0, 0.0, time.perf_counter()
            for batch in tracked(progress if rank == 0 else None, loader,
                                 f"epoch {epoch + 1}/{cfg.epochs}", len(sampler)):
                if step >= total:
                    break
                data_time += time.perf_counter() - t_ready  # waiting for the loader
                images += sum(len(ids) for ids in batch["image_ids"])
                batch = to_device(batch, device)
                weight = len(batch["counts"]) * world / cfg.batch_size
                loss, parts = micro_step(net, model, batch, weight, device, epoch, cfg.epochs,
                                         sync=micro == cfg.accum_steps - 1,
                                         diagnostics=diag if rank == 0 else None)
                step_loss = loss * weight if step_loss is None else step_loss + loss * weight
                micro += 1
                if micro < cfg.accum_steps:
                    t_ready = time.perf_counter()
                    continue
                if cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                # this rank's share of the step's mean loss; the mean over ranks is the mean
                loss, micro, step_loss = step_loss, 0, None
                losses.append(loss)
                window = tlog.step(epoch, step, loss, parts, sched.get_last_lr()[0], images,
                                   data_time)  # the only host syncs of a step, when a line is due
                images, data_time = 0, 0.0
                if window is not None:
                    last = window
                    if not np.isfinite(last):
                        raise FloatingPointError(f"loss is {last} at step {step}")
                t_ready = time.perf_counter()
            mean_loss = None
            if losses:
                mean_loss = _mean_over_ranks(torch.stack(losses).mean(), world)
                last = _mean_over_ranks(losses[-1], world)
                epoch_loss = mean_loss
            pics = None
            if val_ds is not None:  # every rank scores its share; GRESMetrics syncs (issue 26)
                if world > 1:  # BatchNorm statistics are per process: validate with rank 0's,
                    for b in model.buffers():  # the ones saved (DDP broadcasts them anyway)
                        dist.broadcast(b.data, 0)
                shown = {} if (rank == 0 and tlog.writer is not None) else None
                val_metrics = validate_with_model(model, cfg, val_ds, img_root, device, rank,
                                                  world, workers=cfg.workers,
                                                  masks_out=shown, wanted=_overlay_pairs(val_ds))
                if shown is not None:
                    pics = _overlays(val_ds, shown, img_root)
            if rank == 0:
                save_checkpoint(out / "checkpoint.pt", model, opt, sched, epoch, step)
            tlog.epoch(epoch, step, mean_loss, len(losses), time.perf_counter() - t_epoch,
                       {"event": "epoch", "epoch": epoch, "step": step, "mean_loss": mean_loss,
                        **({"diagnostics": model.summarize_diagnostics(diag)} if diag else {}),
                        **({"val": val_metrics} if val_ds is not None else {})},
                       val_metrics if val_ds is not None else None, pics)
        if rank == 0 and not ckpt_path.exists():  # max_steps == 0: save the initial model
            save_checkpoint(ckpt_path, model, opt, sched, -1, step)
        # DDP keeps parameters identical; BatchNorm running statistics are per process (DDP
        # broadcasts rank 0's at the start of each forward, so they differ after the last step;
        # rank 0's are the ones saved).
        checksum = param_checksum(model)
        in_sync = buffers_in_sync = True
        if world > 1:
            sums = [None] * world
            dist.all_gather_object(sums, (checksum, param_checksum(model, buffers=True)))
            in_sync = len({s[0] for s in sums}) == 1
            buffers_in_sync = len({s[1] for s in sums}) == 1
        tlog.write({"event": "done", "step": step, "world_size": world,
                    "items_per_step": cfg.batch_size, "micro_batches": sampler.sizes,
                    "ranks_in_sync": in_sync, "buffers_in_sync": buffers_in_sync,
                    "param_checksum": checksum, "seconds": round(time.perf_counter() - t0, 2)})
    finally:
        tlog.close()
    return {"steps": step, "last_loss": last, "epoch_loss": epoch_loss,
            "seconds": time.perf_counter() - t0, "ranks_in_sync": in_sync, "world_size": world,
            "device": str(device), "rank": rank, "val": val_metrics}


def _overlay_pairs(ds: GresDataset, k: int = OVERLAYS) -> set:
    """The first ``k`` positive pairs of ``ds`` by (expression, image): those drawn for
    TensorBoard (:func:`_overlays`)."""
    pos = sorted((t.expression_id, t.image_id) for t in ds.targets if t.positive)
    return set(pos[:k])


def _overlays(ds: GresDataset, masks: dict, img_root, k: int = OVERLAYS) -> list:
    """The first ``k`` positive pairs of ``ds`` (by expression, image) drawn with their
    predicted masks (``masks``: (expression id, image id) -> bool array at the original size,
    as validation predicted them; :func:`.trainlog.overlay`), for TensorBoard; images that
    cannot be read are skipped (a logging aid, never a reason to stop training). Under DDP
    rank 0 draws the pairs of its own share."""
    from PIL import Image, UnidentifiedImageError

    pics = []
    for pair in sorted(_overlay_pairs(ds, k)):
        if pair not in masks:
            continue
        try:
            with Image.open(Path(img_root) / ds.image(pair[1]).file_name) as im:
                arr = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError):
            continue
        mask = masks[pair]
        if mask is not None and mask.shape != arr.shape[:2]:
            mask = None
        pics.append(overlay(arr, mask))
    return pics


def _mean_over_ranks(x: torch.Tensor, world: int) -> float:
    """The mean of a scalar over every rank (a host sync)."""
    x = x.detach().float().clone()
    if world > 1:
        dist.all_reduce(x)
        x /= world
    return float(x)
