"""Training: AdamW with polynomial decay, bf16 autocast on CUDA, gradient clipping, a checkpoint
every epoch, ``resume``, a JSON-lines metrics log and the run config in the run folder; several
processes through torch.distributed (``torchrun``; NCCL on CUDA, gloo on CPU).

Run folder: ``config.json`` (everything needed to rebuild the model), ``checkpoint.pt`` (model,
optimiser, scheduler, epoch, step; written atomically), ``metrics.jsonl`` (one JSON object per
logged step, per epoch, and a final ``done`` record with ``ranks_in_sync``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..errors import InputError
from ..format import GresDataset, load_dataset
from ..io import atomic_write_bytes, atomic_write_text
from ..progress import Progress, tracked
from . import model_class
from .data import GroupDataset, collate


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

    Defaults follow GRES §5.2: group size 8, 416x416, AdamW lr 5e-5, weight decay 0.01,
    polynomial decay (power 0.9), no augmentation.
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
    model_args: dict = field(default_factory=dict)


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _init_dist(device: torch.device) -> torch.device:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
    return device


def build_model(cfg: TrainConfig, pretrained: bool = True) -> torch.nn.Module:
    args = dict(cfg.model_args)
    if not pretrained:
        args["vision_weights"] = None  # the checkpoint supplies every trained weight
    return model_class(cfg.model)(**args)


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


def _order(n: int, world: int, bs: int, seed: int, epoch: int) -> np.ndarray:
    """Epoch order of item indices, padded (wrapping) so every rank gets equal full steps."""
    idx = np.random.default_rng([seed, epoch, 7]).permutation(n)
    per = world * bs
    total = max(per, math.ceil(n / per) * per)
    return np.resize(idx, total)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def train(cfg: TrainConfig, data: str | Path | GresDataset, img_root: str | Path,
          out: str | Path, resume: bool = False,
          progress: Progress | None = None) -> dict:
    """Train a baseline; see the module header. Returns a summary (steps, last loss, seconds).

    Raises:
        InputError: bad data / image root, a run folder holding another run without
            ``resume``, or a resume whose config differs.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = _init_dist(pick_device(cfg.device))
    rank, world = _dist()
    out = Path(out)
    ds = data if isinstance(data, GresDataset) else load_dataset(data)
    train_set = GroupDataset(ds, img_root, cfg.group_size, cfg.size, cfg.seed,
                             repeats=cfg.repeats)
    if len(train_set) == 0:
        raise InputError(ds.path, "has no expression to train on")
    model = build_model(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(_order(len(train_set), world, cfg.batch_size, cfg.seed, 0)) // (
        world * cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: max(0.0, 1 - s / max(1, total)) ** cfg.poly_power)
    start_epoch, step = 0, 0
    ckpt_path = out / "checkpoint.pt"
    cfg_json = json.dumps(asdict(cfg), indent=1, sort_keys=True)
    if ckpt_path.exists() and not resume:
        raise InputError(out, "already holds a run", hint="resume it or choose a new run folder")
    if resume and ckpt_path.exists():
        saved = json.loads((out / "config.json").read_text())
        for key in ("model", "model_args", "size", "group_size"):
            if saved.get(key) != asdict(cfg)[key]:
                raise InputError(out / "config.json", f"{key} differs from this run's",
                                 hint="resume with the same model options")
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
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
    # closed in the finally below; opened in append mode so a resumed run extends its log
    log = open(out / "metrics.jsonl", "a", encoding="utf-8") if rank == 0 else None  # noqa: SIM115
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    t0 = time.perf_counter()
    last = float("nan")
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if step >= total:
                break
            train_set.set_epoch(epoch)
            model.train()
            order = _order(len(train_set), world, cfg.batch_size, cfg.seed, epoch)
            mine = order[rank::world]
            batches = [mine[k:k + cfg.batch_size] for k in range(0, len(mine), cfg.batch_size)]
            losses = []
            for idx in tracked(progress, batches, f"epoch {epoch + 1}/{cfg.epochs}",
                               len(batches)):
                if step >= total:
                    break
                batch = _to(collate([train_set[int(i)] for i in idx]), device)
                if amp is not None:
                    with amp:
                        outp = net(batch)
                else:
                    outp = net(batch)
                loss, parts = model.loss(outp, batch, epoch, cfg.epochs)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {float(loss)} at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                opt.step()
                sched.step()
                step += 1
                last = float(loss.detach())
                losses.append(last)
                if log and (step % cfg.log_every == 0 or step == 1):
                    log.write(json.dumps({"epoch": epoch, "step": step, "loss": last,
                                          "lr": sched.get_last_lr()[0], **parts,
                                          "seconds": round(time.perf_counter() - t0, 2)}) + "\n")
                    log.flush()
            if rank == 0:
                save_checkpoint(ckpt_path, model, opt, sched, epoch, step)
                if log:
                    log.write(json.dumps({"event": "epoch", "epoch": epoch, "step": step,
                                          "mean_loss": float(np.mean(losses)) if losses
                                          else None}) + "\n")
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
            "ranks_in_sync": in_sync, "world_size": world, "device": str(device)}


def load_run(run_dir: str | Path, device: torch.device) -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild the model of a run folder from ``config.json`` and ``checkpoint.pt``."""
    run = Path(run_dir)
    try:
        raw = json.loads((run / "config.json").read_text())
    except FileNotFoundError:
        raise InputError(run, "is not a run folder (no config.json)",
                         hint="pass the run folder that training wrote") from None
    cfg = TrainConfig(**raw)
    if not (run / "checkpoint.pt").exists():
        raise InputError(run, "has no checkpoint.pt yet")
    model = build_model(cfg, pretrained=False)
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    missing = [k for k in missing if not k.startswith("text.model.")]
    if missing or unexpected:
        raise InputError(run / "checkpoint.pt", f"does not fit the model: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    return model.to(device).eval(), cfg
