"""grdkit in your own training loop: GRESDataset -> DataLoader -> model -> GRESMetrics, under DDP.

    torchrun --nproc_per_node 2 docs/examples/train_loop_ddp.py \
        --data val.json --img-root IMAGES --out metrics.json --save model.pt

Every process trains on its share (DistributedSampler), validates its share, and
GRESMetrics.compute() gives every process the metrics of the whole split: the numbers
`grdkit eval` prints for the same predictions (tests/test_training_loop_docs.py checks it).
"""

import argparse
import json
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.transforms import v2

from grdkit.metrics import GRESMetrics
from grdkit.torch import GRESDataset, collate

SIZE = 64  # the model's input side, pixels


class TinyNet(torch.nn.Module):
    """Stands in for your model: uint8 images (B, 3, S, S) -> mask logits (B, S, S)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.Conv2d(8, 1, 1))

    def forward(self, images):
        return self.net(images.float() / 255)[:, 0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="a grdkit split file (or built folder)")
    ap.add_argument("--img-root", required=True, help="the image folder")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", help="write the metrics (JSON) here (rank 0)")
    ap.add_argument("--save", help="write the model's state dict here (rank 0)")
    args = ap.parse_args()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")  # "nccl" on GPUs
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(0)

    # 1. the dataset: one item per (expression, image) pair, image and mask resized together
    resize = v2.Resize((SIZE, SIZE))
    train_set = GRESDataset(args.data, args.img_root, mode="pair", transforms=resize)
    sampler = DistributedSampler(train_set, shuffle=True, seed=0) if distributed else None
    loader = DataLoader(train_set, batch_size=4, sampler=sampler, shuffle=sampler is None,
                        collate_fn=collate, num_workers=2)

    # 2. the model and a plain training loop
    model = TinyNet()
    net = DistributedDataParallel(model) if distributed else model
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in loader:
            logits = net(batch["image"])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, batch["mask"].float())
            opt.zero_grad()
            loss.backward()
            opt.step()

    # 3. validation with GRESMetrics: each process scores its share, compute() syncs them
    val_set = GRESDataset(args.data, args.img_root, mode="pair", transforms=resize)
    val_sampler = DistributedSampler(val_set, shuffle=False) if distributed else None
    metric = GRESMetrics(profile="grdkit", from_logits=True)
    model.eval()
    with torch.no_grad():
        for batch in DataLoader(val_set, batch_size=4, sampler=val_sampler,
                                collate_fn=collate):
            # logits at 64 x 64; the ground truth RLEs at each image's own size: exact scores
            metric.update(model(batch["image"]), batch["target_rle"],
                          expression_ids=batch["expression_id"], image_ids=batch["image_id"])
    result = metric.compute()  # the same dict on every process
    if rank == 0:
        print("  ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}"  # None: undefined
                        for k, v in result.items() if k in ("giou", "ciou", "n_acc", "t_acc")))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f)
        if args.save:
            torch.save(model.state_dict(), args.save)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
