"""Training: AdamW with polynomial decay, bf16 autocast on CUDA, optional gradient clipping, a
checkpoint every epoch, ``resume``, a JSON-lines metrics log, per-epoch validation and the run
config in the run folder; several processes through torch.distributed (``torchrun``; NCCL on
CUDA, gloo on CPU).

Run folder: ``config.json`` (everything needed to rebuild the model), ``checkpoint.pt`` (model
including its input normalisation, optimiser, scheduler, epoch, step; written atomically),
``metrics.jsonl`` (one JSON object per logged step, per epoch (with ``"val"``: the report metrics
on ``val_data``, computed by the very code ``grdkit predict`` runs), and a final ``done`` record
with ``ranks_in_sync``).

Data: a :class:`torch.utils.data.DataLoader` over :class:`.data.GroupDataset` (worker processes,
pinned memory on CUDA, persistent workers, prefetching) reading the memory-mapped uint8 store of
:func:`.data.build_store`; images travel as uint8 and are normalised on the device. Rank 0
builds the store, the other ranks wait for it.

Presets (:data:`PRESETS`) fill the settings a paper states; every setting a paper does not state
is an explicit option with its source in :class:`TrainConfig`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..errors import InputError
from ..format import GresDataset, load_dataset
from ..io import atomic_write_bytes, atomic_write_text
from ..progress import Progress, tracked
from . import model_class, model_options
from .data import EpochBatches, GroupDataset, build_store, collate


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "device cuda was asked for but no CUDA device is available",
                         hint="use device auto or cpu")
    return torch.device(name)


@dataclass
class TrainConfig:
    """Options of a training run (saved as ``config.json``).

    Defaults follow GRES §5.2 (group size 8, 416x416, AdamW lr 5e-5, weight decay 0.01,
    polynomial decay, no augmentation). Settings no paper states, with their source:

    * ``poly_power`` 0.9: the usual polynomial-decay power (DeepLab); GRES says "polynomial".
    * ``clip`` 1.0: gradient-norm clipping, grdkit's choice for stable CPU runs (0 disables);
      neither GRES nor LTS mentions clipping.
    * ``threshold`` 0.25: LTS binarises its mask at 0.25 (LTS paper §3.4); GRES publishes no
      threshold for GRSer, so it uses LTS's.
    * ``workers``: DataLoader worker processes (0: load in the main process).
    """

    model: str = "lts"
    epochs: int = 10
    batch_size: int = 1          # groups per step and process
    lr: float = 5e-5
    weight_decay: float = 0.01
    poly_power: float = 0.9
    clip: float = 1.0
    group_size: int = 8
    size: int = 416
    repeats: int = 1             # items per expression per epoch
    seed: int = 0
    device: str = "auto"
    threshold: float = 0.25
    log_every: int = 10
    max_steps: int | None = None  # stop early (smoke tests; 0 saves the initial model)
    workers: int = 2
    channels_last: bool = False
    compile: bool = False
    preset: str | None = None
    model_args: dict = field(default_factory=dict)


# Settings each paper states. ``config``: TrainConfig fields; ``model``: model options;
# ``required``: options the user must give (local weights: nothing is downloaded).
PRESETS: dict[str, dict] = {
    # GRES (ICCV 2023) §5.2: Swin-B (LAVT encoder), BERT-base, N = 8, 416 x 416, AdamW lr 5e-5,
    # weight decay 0.01, polynomial decay, 80 epochs, batch 4 groups (in total), margin m = 1.
    "gres-paper": {"model": "grser",
                   "config": {"group_size": 8, "size": 416, "lr": 5e-5, "weight_decay": 0.01,
                              "epochs": 80, "batch_size": 4},
                   "model_args": {"vision": "swin_base_patch4_window12_384", "fusion": "pwam",
                                  "train_text": True, "width": 512},
                   "required": ("vision_weights", "text")},
    # LTS (CVPR 2021): 416 x 416 input, relevance filter d_k = 1024, threshold 0.25, text only at
    # the coarsest fusion level (eq. 5-7). Its optimiser and schedule could not be read in this
    # workplace (no copy of the paper's text): grdkit's defaults stay, and the preset says so.
    "lts-paper": {"model": "lts",
                  "config": {"size": 416, "threshold": 0.25},
                  "model_args": {"d_k": 1024, "fusion": "paper"},
                  "required": ()},
}


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


def build_model(cfg: TrainConfig, pretrained: bool = True) -> torch.nn.Module:
    """The model of a config. Without ``pretrained`` the checkpoint supplies every weight (and the
    input normalisation, a buffer of the vision encoder).

    Raises:
        InputError: the model cannot be built with these options (e.g. a backbone that does not
            take the image size), named with its options.
    """
    args = dict(cfg.model_args)
    if not pretrained:
        args["vision_weights"] = None
    args.update(model_options(cfg.model, {"image_size": cfg.size}))
    try:
        return model_class(cfg.model)(**args)
    except InputError:
        raise
    except (RuntimeError, ValueError, TypeError, AssertionError) as e:
        raise InputError(None, f"cannot build {cfg.model} with {cfg.model_args}: "
                         f"{str(e)[:300]}") from None


def trainable_state(model: torch.nn.Module) -> dict:
    """State dict without a frozen text encoder (it is rebuilt from its package or folder)."""
    sd = model.state_dict()
    if not getattr(model, "train_text", True):
        sd = {k: v for k, v in sd.items() if not k.startswith("text.model.")}
    return sd


def save_checkpoint(path: Path, model, opt, sched, epoch: int, step: int) -> None:
    """Write model (without a frozen text encoder), optimiser and scheduler state atomically."""
    buf = io.BytesIO()
    torch.save({"model": trainable_state(model), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": epoch, "step": step}, buf)
    atomic_write_bytes(path, buf.getvalue())


def param_checksum(model: torch.nn.Module, buffers: bool = False) -> str:
    """sha256 prefix of the parameters (or of the buffers, e.g. BatchNorm running stats)."""
    h = hashlib.sha256()
    items = model.named_buffers() if buffers else model.named_parameters()
    for k, v in sorted(items, key=lambda kv: kv[0]):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of a batch moved to ``device`` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def make_loader(dataset, sampler, workers: int, device: torch.device):
    """The training DataLoader (see the module header)."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None)


def apply_preset(cfg: TrainConfig, explicit: set[str] = frozenset()) -> TrainConfig:
    """``cfg`` with its preset's settings filled in, except the fields and model options named in
    ``explicit`` (what the user set by hand wins).

    Raises:
        InputError: an unknown preset, another model than the preset's, or a required option
            (local weights) that is missing.
    """
    if cfg.preset is None:
        return cfg
    p = PRESETS.get(cfg.preset)
    if p is None:
        raise InputError(None, f"unknown preset {cfg.preset!r}; choose from {sorted(PRESETS)}")
    if cfg.model != p["model"]:
        raise InputError(None, f"preset {cfg.preset} is for {p['model']}, not {cfg.model}")
    for k in p["required"]:
        if k not in explicit:
            raise InputError(None, f"preset {cfg.preset} needs {k} (a local path; nothing is "
                             "downloaded)")
    values = {k: v for k, v in p["config"].items() if k not in explicit}
    args = dict(cfg.model_args)
    args.update({k: v for k, v in p["model_args"].items() if k not in explicit})
    return TrainConfig(**{**{f.name: getattr(cfg, f.name) for f in fields(cfg)}, **values,
                          "model_args": args})


def train(cfg: TrainConfig, data: str | Path | GresDataset, img_root: str | Path,
          out: str | Path, resume: bool = False, progress: Progress | None = None,
          val_data: str | Path | GresDataset | None = None,
          cache_dir: str | Path | None = None) -> dict:
    """Train a baseline; see the module header. Returns a summary (steps, last loss, seconds,
    the last validation metrics).

    Args:
        val_data: a canonical split evaluated (with ``img_root``) at the end of every epoch by
            :func:`.predict.predict_with_model`, the code ``grdkit predict`` runs.
        cache_dir: where the resized store lives (:func:`.data.default_cache_dir` when None).

    Raises:
        InputError: bad data / image root, a run folder holding another run without
            ``resume``, a resume whose config differs, or a model that cannot be built.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device, own_group = _init_dist(pick_device(cfg.device))
    rank, world = _dist()
    out = Path(out)
    try:
        return _train(cfg, data, img_root, out, resume, progress, val_data, cache_dir, device,
                      rank, world)
    finally:
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg, data, img_root, out, resume, progress, val_data, cache_dir, device, rank,
           world) -> dict:
    ds = data if isinstance(data, GresDataset) else load_dataset(data)
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
    train_set = GroupDataset(ds, store, cfg.group_size, cfg.seed, repeats=cfg.repeats)
    if len(train_set) == 0:
        raise InputError(ds.path, "has no expression to train on")
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.vision.channels_last = True
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = EpochBatches(len(train_set), cfg.batch_size, rank, world, cfg.seed)
    total = cfg.epochs * len(sampler)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: max(0.0, 1 - s / max(1, total)) ** cfg.poly_power)
    start_epoch, step = 0, 0
    cfg_json = json.dumps(asdict(cfg), indent=1, sort_keys=True)
    if resume and ckpt_path.exists():
        saved = json.loads((out / "config.json").read_text())
        for key in ("model", "model_args", "size", "group_size"):
            if saved.get(key) != asdict(cfg)[key]:
                raise InputError(out / "config.json", f"{key} differs from this run's",
                                 hint="resume with the same model options")
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(ck["model"], strict=False)
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
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
    # closed in the finally below; opened in append mode so a resumed run extends its log
    log = open(out / "metrics.jsonl", "a", encoding="utf-8") if rank == 0 else None  # noqa: SIM115
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    t0 = time.perf_counter()
    last, val_metrics = float("nan"), None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if step >= total:
                break
            sampler.set_epoch(epoch)
            model.train()
            losses = []
            for batch in tracked(progress if rank == 0 else None, loader,
                                 f"epoch {epoch + 1}/{cfg.epochs}", len(sampler)):
                if step >= total:
                    break
                batch = to_device(batch, device)
                if amp is not None:
                    with amp:
                        outp = net(batch)
                else:
                    outp = net(batch)
                loss, parts = model.loss(outp, batch, epoch, cfg.epochs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                opt.step()
                sched.step()
                step += 1
                losses.append(loss.detach())
                if step % cfg.log_every == 0 or step == 1:  # the only host syncs of a step
                    last = _mean_over_ranks(loss.detach(), world)
                    if not np.isfinite(last):
                        raise FloatingPointError(f"loss is {last} at step {step}")
                    if log:
                        log.write(json.dumps({
                            "epoch": epoch, "step": step, "loss": last,
                            "lr": sched.get_last_lr()[0],
                            **{k: float(v) for k, v in parts.items()},
                            "seconds": round(time.perf_counter() - t0, 2)}) + "\n")
                        log.flush()
            mean_loss = None
            if losses:
                mean_loss = _mean_over_ranks(torch.stack(losses).mean(), world)
                last = _mean_over_ranks(losses[-1], world)
            if val_ds is not None and rank == 0:
                from ..evaluators import evaluate
                from .predict import predict_with_model

                preds = predict_with_model(model, cfg, val_ds, img_root, device,
                                           workers=cfg.workers)
                val_metrics = evaluate(preds, val_ds).metrics
            if rank == 0:
                save_checkpoint(out / "checkpoint.pt", model, opt, sched, epoch, step)
                if log:
                    log.write(json.dumps({"event": "epoch", "epoch": epoch, "step": step,
                                          "mean_loss": mean_loss,
                                          **({"val": val_metrics} if val_ds is not None
                                             else {})}) + "\n")
                    log.flush()
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
        if log:
            log.write(json.dumps({"event": "done", "step": step, "world_size": world,
                                  "ranks_in_sync": in_sync, "buffers_in_sync": buffers_in_sync,
                                  "param_checksum": checksum,
                                  "seconds": round(time.perf_counter() - t0, 2)}) + "\n")
    finally:
        if log:
            log.close()
    return {"steps": step, "last_loss": last, "seconds": time.perf_counter() - t0,
            "ranks_in_sync": in_sync, "world_size": world, "device": str(device),
            "rank": rank, "val": val_metrics}


def _mean_over_ranks(x: torch.Tensor, world: int) -> float:
    """The mean of a scalar over every rank (a host sync)."""
    x = x.detach().float().clone()
    if world > 1:
        dist.all_reduce(x)
        x /= world
    return float(x)


def load_run(run_dir: str | Path, device: torch.device) -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild the model of a run folder from ``config.json`` and ``checkpoint.pt`` (weights and
    input normalisation exactly as saved).

    Raises:
        InputError: not a run folder, no checkpoint yet, or a checkpoint that does not fit.
    """
    run = Path(run_dir)
    try:
        raw = json.loads((run / "config.json").read_text())
    except FileNotFoundError:
        raise InputError(run, "is not a run folder (no config.json)",
                         hint="pass the run folder that training wrote") from None
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in raw.items() if k in known})
    if not (run / "checkpoint.pt").exists():
        raise InputError(run, "has no checkpoint.pt yet")
    model = build_model(cfg, pretrained=False)
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    missing = [k for k in missing if not k.startswith("text.model.")]
    if missing or unexpected:
        raise InputError(run / "checkpoint.pt", f"does not fit the model: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    return model.to(device).eval(), cfg
