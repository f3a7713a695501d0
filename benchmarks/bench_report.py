"""Benchmark the HTML report (issue 28) on a GRD-sized set against the plain evaluation, same run.

The set is bench_eval.py's GRD-sized one (106 groups, 316 expressions, ~10.6k images of
480 x 640, ~31.5k pairs, perturbed ground truth as predictions). Every image file is a symlink,
inside the image root, to one real COCO photo resized to 480 x 640 (../shared/data; a grey one
when absent), so thumbnails decode a real JPEG without writing 10k files.

Prints, each step in a fresh subprocess (wall and CPU seconds): the plain ``grdkit.evaluate``
time; the time of the
same evaluation with the per-pair rows, the per-pair JSONL and the HTML report (and the report's
part alone), their ratio to the plain eval, the report's size (MB, files, thumbnails, pages) and
peak memory. With a Chromium (Debian's ``chromium``) it also opens ``pairs.html`` from file://
and times the page load and a sort of all pairs by IoU (in-page JavaScript time).

Usage: python benchmarks/bench_report.py [--max-thumbs 600] [--workdir DIR] [--no-browser]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from _common import run_python
from bench_eval import H, W, generate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

PLAIN = r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
import grdkit
t, c = time.perf_counter(), time.process_time()
r = grdkit.evaluate(sys.argv[1], sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t, "cpu": time.process_time() - c,
                  "peak_mb": peak_mb(),
                  "gres_miou": r.metrics["gres_miou"]}))
"""

REPORT = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from grdkit.evaluators import evaluate, load_ground_truth, write_pairs
from grdkit.html import write_html_report
kw = json.loads(sys.argv[4])
out = Path(kw["out"])
t, c = time.perf_counter(), time.process_time()
r = evaluate(sys.argv[1], sys.argv[2], per_pair=True)
t_eval = time.perf_counter() - t
write_pairs(r.pairs, out / "pairs.jsonl")
t1, c1 = time.perf_counter(), time.process_time()
info = write_html_report(r, r.pairs, load_ground_truth(sys.argv[2]), out / "html",
                         img_root=kw["img_root"], pred_masks=r.pair_masks,
                         max_thumbs=kw["max_thumbs"])
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"seconds": t2 - t, "eval_seconds": t_eval, "html_seconds": t2 - t1,
                  "cpu": c2 - c, "html_cpu": c2 - c1,
                  "pairs_jsonl_mb": (out / "pairs.jsonl").stat().st_size / 1e6,
                  "peak_mb": peak_mb(), "gres_miou": r.metrics["gres_miou"], **info}))
"""


def image_root(work: Path, n_images: int) -> Path:
    """``work/images`` with ``000001.jpg`` ... as symlinks to one 480 x 640 JPEG in the root."""
    from PIL import Image

    root = work / "images"
    root.mkdir(exist_ok=True)
    src = sorted((SHARED / "coco_train2014_images").glob("*.jpg"))
    base = root / "base.jpg"
    if src:
        Image.open(src[0]).convert("RGB").resize((W, H)).save(base, quality=90)
    else:
        Image.new("RGB", (W, H), (120, 120, 120)).save(base, quality=90)
    for i in range(1, n_images + 1):
        link = root / f"{i:06d}.jpg"
        if not link.exists():
            os.symlink("base.jpg", link)
    return root


def browser_times(html: Path) -> dict | None:
    """Load pairs.html and sort every pair by IoU in headless Chromium (ms), or None."""
    exe = "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(exe).exists():
        return None
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=args)
        pg = b.new_page()
        pg.goto((html / "pairs.html").as_uri())
        pg.wait_for_load_state("load")
        load = pg.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
        sort = pg.evaluate("() => { const t = performance.now(); "
                           "document.querySelector('th[data-col=iou]').click(); "
                           "return performance.now() - t; }")
        filt = pg.evaluate("() => { const s = document.getElementById('filter-outcome'); "
                           "const t = performance.now(); s.value = 'FP'; "
                           "s.dispatchEvent(new Event('input')); return performance.now() - t; }")
        rows = pg.locator("#pairs tbody tr").count()
        b.close()
    return {"load_ms": load, "sort_ms": sort, "filter_ms": filt, "rows_in_dom": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-thumbs", type=int, default=600)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--no-browser", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = a.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        gt, pp = generate(work)
        n_images = len(json.loads(gt.read_text())["images"])
        root = image_root(work, n_images)
        plain = run_python(PLAIN, str(pp), str(gt), str(ROOT))
        rep = run_python(REPORT, str(pp), str(gt), str(ROOT),
                         json.dumps({"out": str(work / "out"), "img_root": str(root),
                                     "max_thumbs": a.max_thumbs}))
        assert rep["gres_miou"] == plain["gres_miou"]
        print(f"GRD-sized set: {n_images} images, 480 x 640, {rep['files']} report files")
        print("wall s / CPU s (the CPU time is the steadier figure on a shared machine)")
        print(f"plain eval             {plain['seconds']:7.2f} / {plain['cpu']:6.2f}   peak "
              f"{plain['peak_mb']:.0f} MB")
        print(f"eval + per-pair + HTML {rep['seconds']:7.2f} / {rep['cpu']:6.2f}   peak "
              f"{rep['peak_mb']:.0f} MB ({rep['cpu'] / plain['cpu']:.2f}x the plain eval's CPU)")
        print(f"  of which the HTML report {rep['html_seconds']:.2f} / {rep['html_cpu']:.2f} "
              f"({rep['html_cpu'] / plain['cpu']:.2f}x the plain eval's CPU); eval with rows "
              f"{rep['eval_seconds']:.2f} s wall")
        print(f"report size {rep['bytes'] / 1e6:.1f} MB in {rep['files']} files "
              f"({rep['thumbs']} thumbnails, {rep['pages']} pages); pairs.jsonl "
              f"{rep['pairs_jsonl_mb']:.1f} MB")
        if not a.no_browser:
            t = browser_times(work / "out" / "html")
            if t is None:
                print("browser: no Chromium / playwright, not timed")
            else:
                print(f"browser (headless Chromium): pairs.html loaded in {t['load_ms']:.0f} ms; "
                      f"sorting all pairs by IoU {t['sort_ms']:.0f} ms; outcome filter "
                      f"{t['filter_ms']:.0f} ms; {t['rows_in_dom']} rows in the DOM")


if __name__ == "__main__":
    main()
