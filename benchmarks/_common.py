"""Helpers shared by the benchmark scripts: run code in a fresh interpreter, read its peak RSS.

Each measured step runs in its own subprocess so its peak resident memory is its own. VmHWM
(from /proc/self/status) is per address space, so unlike ru_maxrss it is not inherited from the
(large) parent across fork + exec.
"""

from __future__ import annotations

import json
import subprocess
import sys

PEAK = r"""
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""


def run_python(code: str, *args: str) -> dict:
    """Run ``PEAK + code`` with ``args``; return the JSON object printed on its last line."""
    res = subprocess.run([sys.executable, "-c", PEAK + code, *args], capture_output=True,
                         text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"benchmark step failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def cow_files(shared):
    """The real MSRC cow photos with their masks, and the COCO photos (no cow), as paths
    relative to ``shared`` (../shared/data): ``([(image, mask)], [image])``, sorted."""
    pos = [(f"msrc_cow/images/{p.name}", f"msrc_cow/masks/{p.name}")
           for p in sorted((shared / "msrc_cow" / "images").glob("*.png"))]
    neg = [f"coco_train2014_images/{p.name}"
           for p in sorted((shared / "coco_train2014_images").glob("*.jpg"))]
    return pos, neg


def cow_group(shared):
    """The cow group: 30 positives and the 33 COCO negatives (a canonical dataset)."""
    from grdkit.builders.imagegroup import group_from_files

    pos, neg = cow_files(shared)
    return group_from_files(shared, "cow", pos, neg, name="msrc-cow")


def baseline_args(ap, steps: int, size: int) -> None:
    """The options the baseline benchmarks share (steps, size, N, width, d_k, lr, device)."""
    from pathlib import Path

    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--size", type=int, default=size)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--d-k", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workdir", type=Path, default=None)
