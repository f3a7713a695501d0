"""Benchmark the cost of issue 25's logging: the training log (:class:`TrainLog`) and the plain
progress lines (:class:`LineProgress`), as ratios to a reference in the same run.

* training: ``--steps`` calls of ``TrainLog.step`` (``--log-every`` 20, a loss and three terms
  per step, as 0-d tensors) against the reference a training loop already pays: appending each
  step's loss tensor to the epoch's list (the old engine);
* progress: iterating ``--items`` items through ``LineProgress`` (30 s interval) against a plain
  ``for`` loop over them.

Both are per-step overheads; a real training step (a forward and backward) takes milliseconds
to seconds, so the absolute microseconds printed are what matters there.

Usage: python benchmarks/bench_logs.py [--steps 20000] [--items 200000]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--items", type=int, default=200000)
    args = ap.parse_args()
    import torch

    from grdkit.baselines.trainlog import TrainLog
    from grdkit.cli.ui import LineProgress

    logging.getLogger("grdkit").setLevel(logging.WARNING)  # time the work, not the terminal
    losses = [torch.tensor(float(k % 7)) for k in range(args.steps)]
    parts = {"bce_h": torch.tensor(1.0), "bce_p": torch.tensor(2.0), "dice": torch.tensor(3.0)}
    t = time.perf_counter()
    ref = []
    for x in losses:
        ref.append(x)  # noqa: PERF402 - the engine's per-step append, as it is written
    t_ref = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        tl = TrainLog(Path(tmp), 0, 1, 1, args.steps, args.steps, 20, None,
                      torch.device("cpu"))
        t = time.perf_counter()
        for k, x in enumerate(losses, 1):
            tl.step(0, k, x, parts, 1e-3, 8, 0.0)
        t_log = time.perf_counter() - t
        tl.close()
    print(f"training log: {args.steps} steps, {1e6 * t_log / args.steps:.1f} us/step "
          f"(reference list append {1e6 * t_ref / args.steps:.2f} us/step, ratio "
          f"{t_log / max(t_ref, 1e-12):.0f}x)")
    items = range(args.items)
    t = time.perf_counter()
    for _ in items:
        pass
    t_plain = time.perf_counter() - t
    t = time.perf_counter()
    for _ in LineProgress(interval=30.0)(items, "bench", args.items):
        pass
    t_lines = time.perf_counter() - t
    print(f"progress lines: {args.items} items, {1e9 * t_lines / args.items:.0f} ns/item "
          f"(plain loop {1e9 * t_plain / args.items:.0f} ns/item, ratio "
          f"{t_lines / max(t_plain, 1e-12):.1f}x)")


if __name__ == "__main__":
    main()
