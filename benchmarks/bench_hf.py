"""Benchmark `grdkit export hf` on a G-RefCg-sized dataset built from generated refer data.

The input is `grdkit build g-refcocog` (defaults) on RefCOCOg-scale synthetic refer data (as in
bench_build.py). Prints, per config, rows/s and MB/s of Parquet written, and the Parquet size
against the canonical JSON it came from, measured in the same run. Images are not embedded
(file names only), as for a dataset whose images live elsewhere.

Usage: python benchmarks/bench_hf.py [--images 25800] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=25800)
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args()
    from grdkit.builders import build_dataset
    from grdkit.export import write_dataset
    from grdkit.hf import export_hf
    from grdkit.testing.synth import generate_refer, write_refer

    work = a.workdir or Path(tempfile.mkdtemp(prefix="grdkit-bench-hf-"))
    root = work / f"refcocog_synth_{a.images}"
    if not (root / "instances.json").exists():
        refs, inst = generate_refer(a.images, seed=0)
        write_refer(root, {"umd": refs["umd"]}, inst)
    splits, rep = build_dataset("g-refcocog", root)
    built = work / "g-refcocog"
    write_dataset(splits, built, rep.notes())
    json_mb = sum((built / f"{s}.json").stat().st_size for s in splits) / 2**20
    groups = sum(len(d.groups) for d in splits.values())
    pairs = sum(len(d.targets) for d in splits.values())
    print(f"G-RefCg-sized input: {groups} groups, {pairs} pairs; canonical JSON {json_mb:.1f} MB")
    print(f"{'config':<8} {'rows':>7} {'seconds':>8} {'rows/s':>8} {'MB/s':>6} "
          f"{'Parquet MB':>10} {'vs JSON':>8}")
    for config in ("groups", "pairs"):
        out = work / f"hf_{config}"
        t = time.perf_counter()
        res = export_hf(splits, out, configs=(config,))
        dt = time.perf_counter() - t
        rows = sum(v["rows"] for v in res[config].values())
        mb = sum(v["bytes"] for v in res[config].values()) / 2**20
        print(f"{config:<8} {rows:7d} {dt:8.2f} {rows / dt:8.0f} {mb / dt:6.2f} {mb:10.2f} "
              f"{mb / json_mb:7.2f}x")


if __name__ == "__main__":
    main()
