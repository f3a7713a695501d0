"""Benchmark `grdkit build g-refcocog` and `grdkit build refcocog` (the classic RES benchmark,
one sample per sentence) at full RefCOCOg (umd) scale on generated refer data.

Prints the build time and peak memory next to a reference measured in the same run: merely
loading the inputs (``pickle.load`` of refs(umd).p + ``json.load`` of instances.json). Each side
runs in a fresh subprocess so peak RSS (``VmHWM``) is its own. Targets (issue 2):
build time <= 2x load time, build peak memory <= 3x the load's.

Usage: python benchmarks/bench_build.py [--images 25800] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import run_python as run

LOAD = r"""
import json, pickle, sys, time
root = sys.argv[1]
t = time.perf_counter()
with open(root + "/refs(umd).p", "rb") as f:
    refs = pickle.load(f)
with open(root + "/instances.json") as f:
    inst = json.load(f)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak_mb": peak_mb(),
                  "refs": len(refs), "annotations": len(inst["annotations"])}))
"""

BUILD = r"""
import json, sys, time

from grdkit.builders import build_dataset
from grdkit.export import write_dataset
root, out, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
name = args.pop("name", "g-refcocog")
t = time.perf_counter()
ds, rep = build_dataset(name, root, **args)
write_dataset(ds, out, rep.notes())
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak_mb": peak_mb(),
                  "groups": {s: len(d.groups) for s, d in ds.items()},
                  "pairs": sum(len(d.targets) for d in ds.values())}))
"""

BASE = r"""
import json

import grdkit.builders  # noqa: F401  (interpreter + imports, no data)
print(json.dumps({"peak_mb": peak_mb()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=25800)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs for times")
    a = ap.parse_args()
    from grdkit.testing.synth import generate_refer, write_refer

    work = a.workdir or Path(tempfile.mkdtemp(prefix="grdkit-bench-"))
    root = work / f"refcocog_synth_{a.images}"
    t = time.perf_counter()
    if not (root / "instances.json").exists():
        refs, inst = generate_refer(a.images, seed=0)
        write_refer(root, {"umd": refs["umd"]}, inst)
        n_sent = sum(len(r["sentences"]) for r in refs["umd"])
        texts = {}
        for r in refs["umd"]:
            for s in r["sentences"]:
                texts.setdefault(s["sent"], set()).add(r["image_id"])
        shared = sum(1 for v in texts.values() if len(v) >= 2)
        print(f"generated {a.images} images, {len(refs['umd'])} refs, {n_sent} sentences, "
              f"{len(inst['annotations'])} instances, {shared} sentences shared by >= 2 images "
              f"in {time.perf_counter() - t:.1f} s -> {root}")
        del refs, inst
    size_mb = sum(p.stat().st_size for p in root.iterdir()) / 2**20
    base = run(BASE)
    loads = [run(LOAD, str(root)) for _ in range(a.repeat)]
    rows = []
    for args in ({}, {"min_images": 1}, {"negatives": "category-disjoint"},
                 {"name": "refcocog"}):
        builds = [run(BUILD, str(root), str(work / "out"), json.dumps(args))
                  for _ in range(a.repeat)]
        rows.append((args, builds))
    load_s = min(x["seconds"] for x in loads)
    load_mb = max(x["peak_mb"] for x in loads)
    print(f"\ninputs: {size_mb:.1f} MB on disk; {loads[0]['refs']} refs, "
          f"{loads[0]['annotations']} annotations")
    print(f"interpreter + grdkit imports: peak {base['peak_mb']:.0f} MB")
    print(f"reference load (pickle.load + json.load): {load_s:.2f} s, peak {load_mb:.0f} MB")
    print(f"{'build options':<40} {'time s':>7} {'x load':>7} {'peak MB':>8} {'x load':>7} "
          f"{'groups (train/val/test)':>24} {'pairs':>7}")
    for args, builds in rows:
        bs = min(x["seconds"] for x in builds)
        bm = max(x["peak_mb"] for x in builds)
        g = builds[0]["groups"]
        label = (json.dumps(args) if args else "defaults (min_images 2, random)")
        if args.get("name") == "refcocog":
            label = "refcocog (RES: 1 sample/sentence)"
        print(f"{label:<40} {bs:7.2f} {bs / load_s:7.2f} {bm:8.0f} {bm / load_mb:7.2f} "
              f"{'/'.join(str(g.get(s, 0)) for s in ('train', 'val', 'test')):>24} "
              f"{builds[0]['pairs']:>7}")
    print("targets: time <= 2.00x load, peak memory <= 3.00x load")


if __name__ == "__main__":
    main()
