"""Benchmark `grdkit export hf`: masks as 1-bit PNG `Image` columns (default) against the RLE-only
layout (`--no-mask-images`: the exact COCO RLE column alone, today's mask representation), same
run, on the bundled demo set and on a GRD-sized generated set.

Sets: the demo set (`grdkit build g-refcocog` on the bundled demo sample, all splits) and a
GRD-sized one (GRES §4.3 scale: 106 groups, ~10.6k images, ~31.5k expression-image pairs;
`grdkit.testing.synth.generate_d3` converted as `grdkit convert d3` does). Images are not
embedded (they are the same bytes in both layouts).

Prints, per set and layout: the Parquet size on disk, export seconds, `datasets.load_dataset`
seconds (folder, fresh cache: Parquet -> Arrow), and the seconds to turn every mask of the loaded
split into a numpy array (PNG column: `np.asarray(row["masks"][k])`; RLE layout:
`grdkit.hf.decode_mask`), with the ratios PNG / RLE.

Usage: python benchmarks/bench_hf.py [--config groups|pairs] [--groups 106] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _datasets(work: Path, n_groups: int) -> dict:
    from grdkit.builders import build_dataset, convert_d3
    from grdkit.sources.d3 import read_d3
    from grdkit.testing.synth import demo_root, generate_d3, write_d3

    demo = build_dataset("g-refcocog", demo_root())[0]
    root = write_d3(work / f"d3_{n_groups}", generate_d3(n_groups=n_groups, seed=0))
    return {"demo": demo, f"GRD-sized ({n_groups} groups)": {"test": convert_d3(read_d3(root))}}


def _measure(splits: dict, out: Path, config: str, mask_images: bool) -> dict:
    import datasets
    import numpy as np

    from grdkit.hf import decode_mask, export_hf

    t = time.perf_counter()
    res = export_hf(splits, out, configs=(config,), mask_images=mask_images)
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    dd = datasets.load_dataset(str(out), config, cache_dir=str(out.parent / f"{out.name}-cache"))
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    n = 0
    for d in dd.values():
        for row in d:
            if config == "groups":
                k_list = range(len(row["image_ids"]))
                arrays = ([np.asarray(m) for m in row["masks"]] if mask_images
                          else [decode_mask(row, k) for k in k_list])
            else:
                arrays = [np.asarray(row["mask"]) if mask_images else decode_mask(row)]
            n += len(arrays)
    decode_s = time.perf_counter() - t
    mb = sum(v["bytes"] for v in res[config].values()) / 2**20
    return {"MB": mb, "export": export_s, "load": load_s, "decode": decode_s, "masks": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=("groups", "pairs"), default="groups")
    ap.add_argument("--groups", type=int, default=106, help="groups of the GRD-sized set")
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args()
    import datasets

    work = a.workdir or Path(tempfile.mkdtemp(prefix="grdkit-bench-hf-"))
    print(f"datasets {datasets.__version__}; config {a.config}; images not embedded")
    print(f"{'set':<26} {'layout':<10} {'pairs':>6} {'MB':>8} {'export s':>9} {'load s':>7} "
          f"{'decode s':>9}")
    for name, splits in _datasets(work, a.groups).items():
        pairs = sum(len(d.targets) for d in splits.values())
        r = {}
        for layout, png in (("png+rle", True), ("rle", False)):
            r[layout] = _measure(splits, work / f"{name.split()[0]}-{layout}", a.config, png)
            assert r[layout]["masks"] == pairs
            m = r[layout]
            print(f"{name:<26} {layout:<10} {pairs:6d} {m['MB']:8.2f} {m['export']:9.2f} "
                  f"{m['load']:7.2f} {m['decode']:9.2f}")
        p, q = r["png+rle"], r["rle"]
        print(f"{name:<26} {'ratio':<10} {'':>6} {p['MB'] / q['MB']:7.2f}x "
              f"{p['export'] / q['export']:8.2f}x {p['load'] / q['load']:6.2f}x "
              f"{p['decode'] / q['decode']:8.2f}x")


if __name__ == "__main__":
    main()
