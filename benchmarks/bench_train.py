"""Training and inference throughput of the baselines, against references measured in the same run.

1. Loader: images/s delivered by the training DataLoader (memory-mapped uint8 store, N = 8) with
   0 workers (one process) and with 2 workers, against plain PIL decode + resize of the same
   images in one process (what every step did in grdkit 0.1); and the decoding loader of
   inference (files decoded and resized per item, no store) with 0 and 2 workers.
2. Training step: steps/s and images/s of a model (default GRSer, N = 8, S = 416 on CUDA,
   S = 256 on CPU to keep the run short), with bf16 autocast on CUDA; optional --compile.
3. Predict: images/s of :func:`grdkit.baselines.predict.predict_with_model`.

On CUDA it also prints the peak GPU memory. The images are the real ones of ../shared/data (the
MSRC cow group and the COCO negatives), repeated to fill the measured batches.

Usage: python benchmarks/bench_train.py [--model grser] [--size S] [--batch 4] [--steps 20]
       [--device auto] [--compile] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

from _common import cow_group


def loader_rate(dataset, workers: int, batches: int, batch_size: int) -> float:
    """Images/s of the training DataLoader over ``batches`` batches (after one warm-up batch)."""
    import torch

    from grdkit.baselines.data import EpochBatches
    from grdkit.baselines.engine import make_loader

    sampler = EpochBatches(len(dataset), batch_size, seed=0)
    loader = make_loader(dataset, sampler, workers, torch.device("cpu"))
    n = t0 = 0
    for epoch in range(1000):
        sampler.set_epoch(epoch)
        for k, b in enumerate(loader):
            if k == 0 and epoch == 0:
                t0 = time.perf_counter()  # workers started, first batch in
                continue
            n += int(b["valid"].sum())
            if n >= batches * batch_size * dataset.n:
                return n / (time.perf_counter() - t0)
    return n / (time.perf_counter() - t0)


def decode_rate(ds, size: int, group_size: int, workers: int, rounds: int = 3) -> float:
    """Images/s of the inference DataLoader (decode + resize per item) over ``rounds`` passes."""
    import torch

    from grdkit.baselines.data import InferenceItems
    from grdkit.baselines.predict import collate_one

    items = InferenceItems(ds, SHARED, size, group_size)
    loader = torch.utils.data.DataLoader(items, batch_size=None, num_workers=workers,
                                         collate_fn=collate_one, persistent_workers=workers > 0)
    n, t0 = 0, None
    for r in range(rounds + 1):
        if r == 1:
            t0 = time.perf_counter()  # after a warm-up pass (workers started)
        for b in loader:
            if r:
                n += len(b["image_ids"][0])
    return n / (time.perf_counter() - t0)


def pil_rate(ds, size: int, images: int) -> float:
    """Images/s of plain PIL decode + bilinear resize, one process."""
    from PIL import Image as PILImage

    ims = ds.images
    t0 = time.perf_counter()
    for k in range(images):
        im = ims[k % len(ims)]
        with PILImage.open(SHARED / im.file_name) as f:
            f.convert("RGB").resize((size, size), PILImage.BILINEAR)
    return images / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="grser", choices=["grser", "lts", "mabp"])
    ap.add_argument("--size", type=int, default=None, help="default: 416 on CUDA, 256 on CPU")
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--batch", type=int, default=None, help="groups per step (4 on CUDA, 1 CPU)")
    ap.add_argument("--steps", type=int, default=None, help="measured steps (50 CUDA, 6 CPU)")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--skip-loader", action="store_true")
    ap.add_argument("--loader-only", action="store_true")
    a = ap.parse_args()
    if not SHARED.exists():
        sys.exit(f"{SHARED} is absent: this benchmark needs the real data of ../shared/data")
    import torch

    from grdkit.baselines.data import GroupDataset, build_store
    from grdkit.baselines.predict import predict_with_model
    from grdkit.baselines.run import TrainConfig, build_model, pick_device, to_device

    dev = pick_device(a.device)
    cuda = dev.type == "cuda"
    size = a.size or (416 if cuda else 256)
    batch = a.batch or (4 if cuda else 1)
    steps = a.steps or (50 if cuda else 6)
    ds = cow_group(SHARED)
    work = Path(tempfile.mkdtemp(prefix="grdkit-bench-train-"))
    print(f"torch {torch.__version__}, device {dev}"
          f"{f' ({torch.cuda.get_device_name(dev)})' if cuda else ''}, CPU threads "
          f"{torch.get_num_threads()}, model {a.model}, S {size}, N {a.group_size}, "
          f"{batch} groups/step")
    t = time.perf_counter()
    store = build_store(ds, SHARED, size, work)
    print(f"store: {len(ds.images)} images + {len(store.mask_row)} masks resized once in "
          f"{time.perf_counter() - t:.1f} s")
    train_set = GroupDataset(ds, store, a.group_size, repeats=64)
    if not a.skip_loader:
        ref = pil_rate(ds, size, 160)
        r0 = loader_rate(train_set, 0, 20, 1)
        r2 = loader_rate(train_set, a.workers, 20, 1)
        print(f"loader: PIL decode+resize {ref:.0f} img/s (reference); store, 1 process "
              f"{r0:.0f} img/s ({r0 / ref:.1f}x PIL); store, {a.workers} workers {r2:.0f} img/s "
              f"({r2 / r0:.2f}x one process, {r2 / ref:.1f}x PIL)")
        d0 = decode_rate(ds, size, a.group_size, 0)
        d2 = decode_rate(ds, size, a.group_size, a.workers)
        print(f"decoding loader (inference, no store): 1 process {d0:.0f} img/s; {a.workers} "
              f"workers {d2:.0f} img/s ({d2 / d0:.2f}x one process)")
    if a.loader_only:
        return
    model_args = {"width": a.width, "vision_weights": "bundled"}
    if a.model == "grser":
        model_args["group_size"] = a.group_size
    if a.model == "mabp":
        model_args["width"] = min(a.width, 256)  # the paper's C
    cfg = TrainConfig(model=a.model, size=size, group_size=a.group_size, batch_size=batch,
                      device=str(dev), model_args=model_args, compile=a.compile)
    model = build_model(cfg).to(dev).train()
    net = torch.compile(model) if a.compile else model
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    from grdkit.baselines.data import EpochBatches
    from grdkit.baselines.engine import make_loader

    sampler = EpochBatches(len(train_set), batch, seed=0)
    loader = make_loader(train_set, sampler, a.workers, dev)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    it = iter(loader)
    times = []
    for k in range(steps + 2):  # 2 warm-up steps
        b = to_device(next(it), dev)
        t = time.perf_counter()
        if amp is not None:
            with amp:
                out = net(b)
        else:
            out = net(b)
        loss, _ = model.loss(out, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(dev)
        if k >= 2:
            times.append(time.perf_counter() - t)
    step_s = sum(times) / len(times)
    print(f"train step: {1 / step_s:.2f} steps/s = {batch * a.group_size / step_s:.1f} images/s "
          f"(mean of {len(times)} steps, loading excluded)"
          + (f"; peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB"
             if cuda else ""))
    if cuda:
        hours = 80 * 2451 / batch / (1 / step_s) / 3600  # 80 epochs of G-RefCg's groups
        print(f"  a paper-scale GRSer run (80 epochs x 2451 groups / {batch} per step) would "
              f"take {hours:.1f} h at this rate")
    t = time.perf_counter()
    preds = predict_with_model(model, cfg, ds, SHARED, dev, workers=a.workers)
    dt = time.perf_counter() - t
    print(f"predict: {len(preds)} pairs in {dt:.1f} s = {len(preds) / dt:.1f} images/s")


if __name__ == "__main__":
    main()
