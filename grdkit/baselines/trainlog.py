"""Training logs (issue 25): a line per ``log_every`` optimiser steps, a line per epoch, the same
records in ``metrics.jsonl``, and TensorBoard event files.

The line format follows the field's trainers: detectron2's ``CommonMetricPrinter``
(``eta: ... iter: ... total_loss: ... loss_x: ... time: ... data_time: ... lr: ... max_mem:
...``; facebookresearch/detectron2 detectron2/utils/events.py) and mmengine's ``LoggerHook``
(``Epoch(train) [1][ 20/500]  lr: ...  eta: ...  time: ...  data_time: ...  memory: ...
loss: ...``; open-mmlab/mmengine mmengine/hooks/logger_hook.py). grdkit prints, through the
standard :mod:`logging` logger ``grdkit.train`` (the CLI shows INFO; ``-q`` hides it)::

    train: epoch 1/2 [4/6] step 4/12  loss 1.2345 (loss_bce 0.9000, loss_dice 0.3345)
      lr 1.00e-03  12.3 img/s  data 0.012 s  mem 512M  eta 0:00:12

(one line), the loss being the MEAN over the steps since the previous line (mmengine's
window mean; detectron2 prints a window median), averaged over the processes, and each loss
term likewise on rank 0. A line is written
every ``log_every`` steps, at step 1, and, in a single process, at least every
``max_interval`` seconds (60; several processes log on step counts only, so that every rank
joins the same all-reduce). At the end of an epoch::

    train: epoch 1/2 done: mean loss 1.1000 over 6 steps in 12.3 s; val gres_miou 45.20 ...

TensorBoard (:class:`torch.utils.tensorboard.SummaryWriter`, the logger LAVT and detectron2 /
ReLA / MABP use): ``train/loss``, ``train/<term>``, ``train/lr`` per line, ``train/epoch_loss``
and ``val/<metric>`` per epoch, and ``val/overlays``: a few validation images with the
predicted mask in red (:func:`overlay`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger("grdkit.train")

MAX_INTERVAL = 60.0  # seconds: at least one line per minute in a single process
OVERLAYS = 4         # validation images drawn per epoch in TensorBoard


def _duration(s: float) -> str:
    s = max(0, round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory of this process in MiB: CUDA's ``max_memory_allocated``; on CPU the peak
    resident set size (``getrusage``; KiB on Linux); None where neither is known."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class TrainLog:
    """The logs of one training run (every rank builds one; rank 0 writes).

    Args:
        out: run folder (``metrics.jsonl`` is appended to).
        rank, world: this process and the number of processes.
        epochs, total: epochs and optimiser steps of the run; ``steps_per_epoch``.
        log_every: steps between lines; ``tensorboard``: folder of the event files, or None.
        device: for the peak memory.
    """

    def __init__(self, out: Path, rank: int, world: int, epochs: int, total: int,
                 steps_per_epoch: int, log_every: int, tensorboard: str | Path | None,
                 device: torch.device, max_interval: float = MAX_INTERVAL):
        self.rank, self.world, self.epochs, self.total = rank, world, epochs, total
        self.steps_per_epoch, self.log_every = steps_per_epoch, max(1, int(log_every))
        self.device, self.max_interval = device, max_interval
        self.file = open(out / "metrics.jsonl", "a", encoding="utf-8") if rank == 0 else None  # noqa: SIM115
        self.writer = None
        if tensorboard is not None and rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("train: tensorboard is not installed (pip install 'grdkit[baselines]')"
                            ": no event files written")
            else:
                Path(tensorboard).mkdir(parents=True, exist_ok=True)
                self.writer = SummaryWriter(str(tensorboard))
        self.t0 = self.t_line = time.perf_counter()
        self.first_step: int | None = None
        self._reset()

    def _reset(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.parts: dict[str, list] = {}
        self.images = 0
        self.data_time = 0.0

    def write(self, record: dict) -> None:
        """One JSON line in ``metrics.jsonl`` (rank 0), flushed."""
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def info(self, msg: str) -> None:
        if self.rank == 0:
            log.info(msg)

    def step(self, epoch: int, step: int, loss: torch.Tensor, parts: dict, lr: float,
             images: int, data_time: float) -> float | None:
        """Record an optimiser step (``loss``: this rank's share of the step's mean loss, a
        detached tensor: no host sync here). When a line is due, average the window over the
        ranks (one all-reduce), log, write the record and return the window's mean loss."""
        if self.first_step is None:
            self.first_step, self.t_first = step - 1, time.perf_counter()
        self.losses.append(loss.detach().float())
        for k, v in parts.items():  # kept as given (tensors stay on the device: no sync)
            self.parts.setdefault(k, []).append(v.detach() if torch.is_tensor(v) else v)
        self.images += images
        self.data_time += data_time
        now = time.perf_counter()
        due = step % self.log_every == 0 or step == 1 or step == self.total or (
            self.world == 1 and now - self.t_line >= self.max_interval)
        if not due:
            return None
        # the loss is averaged over the ranks (one all-reduce, every rank at the same step); the
        # terms are this rank's (a model's terms may differ between ranks, e.g. a group
        # without positives)
        mean = torch.stack(self.losses).mean()
        if self.world > 1:
            dist.all_reduce(mean)
            mean /= self.world
        keys = sorted(self.parts)
        vals = [float(mean), *(float(np.mean([float(x) for x in self.parts[k]]))
                               for k in keys)]
        n = len(self.losses)
        span = now - self.t_line
        ips = self.images * self.world / max(span, 1e-9)
        done = step - self.first_step
        eta = (now - self.t_first) / max(done, 1) * (self.total - step)
        mem = peak_memory_mb(self.device)
        rec = {"epoch": epoch, "step": step, "loss": vals[0], "lr": lr,
               **dict(zip(keys, vals[1:])), "steps": n, "images_per_s": round(ips, 2),
               "data_time": round(self.data_time / n, 4), "max_mem_mb": None if mem is None
               else round(mem, 1), "eta_s": round(eta, 1),
               "seconds": round(now - self.t0, 2)}
        if self.rank == 0:
            in_epoch = (step - 1) % self.steps_per_epoch + 1
            terms = ", ".join(f"{k} {v:.4f}" for k, v in zip(keys, vals[1:]))
            log.info(f"train: epoch {epoch + 1}/{self.epochs} [{in_epoch}/{self.steps_per_epoch}]"
                     f" step {step}/{self.total}  loss {vals[0]:.4f}"
                     + (f" ({terms})" if terms else "")
                     + f"  lr {lr:.2e}  {ips:.1f} img/s  data {rec['data_time']:.3f} s"
                     + ("" if mem is None else f"  mem {mem:.0f}M") + f"  eta {_duration(eta)}")
            self.write(rec)
            if self.writer is not None:
                self.writer.add_scalar("train/loss", vals[0], step)
                for k, v in zip(keys, vals[1:]):
                    self.writer.add_scalar(f"train/{k}", v, step)
                self.writer.add_scalar("train/lr", lr, step)
        self.t_line = now
        self._reset()
        return vals[0]

    def epoch(self, epoch: int, step: int, mean_loss: float | None, steps: int, seconds: float,
              record: dict, val: dict | None = None, overlays: list | None = None) -> None:
        """The end of an epoch: one line, the ``epoch`` record (``record`` holds its other
        fields), ``train/epoch_loss``, ``val/<metric>`` and ``val/overlays`` in TensorBoard."""
        self.t_line = time.perf_counter()  # the next line's rates leave validation out
        if self.rank != 0:
            return
        msg = (f"train: epoch {epoch + 1}/{self.epochs} done: mean loss "
               f"{'-' if mean_loss is None else f'{mean_loss:.4f}'} over {steps} steps in "
               f"{seconds:.1f} s")
        if val:
            shown = [k for k in ("gres_miou", "ciou", "n_acc", "t_acc") if k in val]
            msg += "; val " + ", ".join(
                f"{k} {'-' if val[k] is None else f'{val[k]:.2f}'}" for k in shown)
        log.info(msg)
        self.write(record)
        if self.writer is not None:
            if mean_loss is not None:
                self.writer.add_scalar("train/epoch_loss", mean_loss, step)
            for k, v in (val or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
                    self.writer.add_scalar(f"val/{k}", v, step)
            if overlays:
                self.writer.add_images("val/overlays", np.stack(overlays), step,
                                       dataformats="NHWC")
            self.writer.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


def overlay(image: np.ndarray, mask: np.ndarray | None, size: int = 128) -> np.ndarray:
    """``image`` (uint8 ``(H, W, 3)``) with ``mask`` (bool ``(H, W)`` or None: no target)
    blended in red at half opacity, resized to ``size`` x ``size`` (PIL bilinear for the
    image, nearest for the mask); uint8 ``(size, size, 3)``."""
    from PIL import Image

    img = np.asarray(Image.fromarray(image).convert("RGB").resize((size, size),
                                                                  Image.BILINEAR), np.float32)
    if mask is not None:
        m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (size, size), Image.NEAREST)) > 127
        img[m] = 0.5 * img[m] + 0.5 * np.array([255.0, 0.0, 0.0])
    return img.round().astype(np.uint8)
