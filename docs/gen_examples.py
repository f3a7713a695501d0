"""Run the documentation's examples and write their real output into the pages.

Every command block of ``README.md`` and ``docs/**/*.md`` that shows output sits between two
markers::

    <!-- example: qs-build -->
    ```console
    $ grdkit build g-refcocog --refer-root demo/refer --out demo/g-refcocog
    ...what it printed...
    ```
    <!-- /example -->

The command of each name is defined once, in :data:`EXAMPLES` below; this script runs them all,
in order, in one fresh folder (the bundled demo sample written by ``grdkit demo``, and, for the
examples marked ``shared``, the real RefCOCOg sample of ``../shared/data`` linked in as a user
would have it), then rewrites every marked block with the command and its combined stdout +
stderr. ``tests/test_docs.py`` runs the same examples and compares them with the pages
(:func:`normalise`: spaces and table rules collapsed; for ``volatile`` examples, the ones
downstream of a training run, decimal numbers too), so the pages cannot drift from the code.

Usage (``make docs-examples``)::

    python docs/gen_examples.py            # rewrite the pages in place
    python docs/gen_examples.py --check    # exit 1 and list the blocks that differ

Why our own script and not a doctest plugin: the examples are shell commands that share files
(build -> train -> predict -> eval), and the pages must show the output as a terminal prints it,
which ``pytest --doctest-glob`` (Python only) and mkdocs-exec plugins (run at site build time,
where the site build must stay offline and fast) do not cover.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PAGES = ("README.md", "docs")


@dataclass(frozen=True)
class Example:
    """One documented command: ``cmd`` runs with bash in the examples' folder."""

    name: str
    cmd: str
    shared: bool = False     # needs the real data of ../shared/data (linked as refer/data/...)
    volatile: bool = False   # output holds timings or trained-model numbers (normalised)


TINY = "--size 64 --width 16 --group-size 4 --epochs 2 --no-progress"

EXAMPLES: tuple[Example, ...] = (
    # quickstart (README and docs/quickstart.md)
    Example("qs-demo", "grdkit demo --out demo"),
    Example("qs-build", "grdkit build g-refcocog --refer-root demo/refer --out demo/g-refcocog "
            "--no-progress"),
    Example("qs-stats", "grdkit stats demo/g-refcocog/val.json"),
    Example("qs-show", "grdkit show demo/g-refcocog/val.json --group 1 --img-root demo/images "
            "--out group.png"),
    Example("qs-train", "grdkit train grser --data demo/g-refcocog/train.json "
            f"--img-root demo/images --out demo/run {TINY}", volatile=True),
    Example("qs-predict", "grdkit predict --checkpoint demo/run --data demo/g-refcocog/val.json "
            "--img-root demo/images --out demo/preds.json --no-progress", volatile=True),
    Example("qs-eval", "grdkit eval demo/preds.json --gt demo/g-refcocog/val.json | head -n 18",
            volatile=True),
    # from your own images (docs/own-images.md)
    Example("own-convert", "grdkit convert cosod --img-root demo/photos/image "
            "--masks demo/photos/binary --out demo/mine --negatives 2 --no-progress"),
    Example("own-split", "grdkit derive split demo/mine/test.json --val 0.2 --seed 0 "
            "--out demo/mine-split"),
    Example("own-train", "grdkit train grser --data demo/mine-split/train.json "
            "--val-data demo/mine-split/val.json --img-root demo/photos/image "
            f"--out demo/mine-run {TINY}", volatile=True),
    Example("own-predict", "grdkit predict --checkpoint demo/mine-run "
            "--data demo/mine-split/val.json --img-root demo/photos/image "
            "--out demo/mine-preds.json --no-progress", volatile=True),
    # building (docs/datasets.md), on the real RefCOCOg sample laid out as the refer toolkit
    Example("data-build-real", "grdkit build g-refcocog --refer-root refer/data --min-images 1 "
            "--out out/g-refcocog --no-progress", shared=True),
    Example("data-build-res", "grdkit build refcocog --refer-root refer/data "
            "--out out/refcocog --no-progress", shared=True),
    Example("data-stats-real", "grdkit stats out/g-refcocog/val.json", shared=True),
    # converting (docs/convert.md)
    Example("conv-d3", "grdkit convert d3 --anno-root d3 --out out/grd"),
    # validating (docs/validate.md)
    Example("val-real", "grdkit validate out/g-refcocog", shared=True),
    Example("val-demo", "grdkit validate demo/g-refcocog/val.json --img-root demo/images"),
    Example("val-bad", "grdkit validate broken.json; echo \"exit $?\""),
    # deriving (docs/derive.md)
    Example("derive-res", "grdkit derive res demo/g-refcocog/val.json "
            "--out demo/g-refcocog-res/val.json"),
    # evaluating (docs/evaluate.md) and gating (docs/gating.md)
    Example("eval-gt", "grdkit eval gt_preds.json --gt demo/g-refcocog/val.json "
            "--json gt_report.json --markdown gt_summary.md"),
    Example("eval-names", "grdkit eval demo/preds.json --gt demo/g-refcocog/val.json "
            "--profile rela --names rela --json rela.json | head -n 18", volatile=True),
    Example("eval-board", "grdkit eval demo/preds.json --gt demo/g-refcocog/val.json "
            "--json run.json > /dev/null && grdkit leaderboard gt_report.json run.json "
            "--names ground-truth,tiny-grser --metrics gres_miou,ciou,n_acc,t_acc",
            volatile=True),
    Example("gate-pass", "grdkit eval demo/preds.json --gt demo/g-refcocog/val.json "
            "--fail-under n_acc=50 > /dev/null; echo \"exit $?\"", volatile=True),
    Example("gate-fail", "grdkit eval demo/preds.json --gt demo/g-refcocog/val.json "
            "--baseline gt_report.json --max-drop 0.5 --fail-under gres_miou=60 | tail -n 12; "
            "echo \"exit ${PIPESTATUS[0]}\"", volatile=True),
)
BY_NAME = {e.name: e for e in EXAMPLES}

# Files the examples need beyond `grdkit demo` (written before the first example; not shown):
# a small D³ folder in the released layout, the ground truth of the demo's val split as
# predictions, and a broken split file.
SETUP = r"""
import json, sys
from pathlib import Path
from grdkit.testing import generate_d3, write_d3
import grdkit
write_d3("d3", generate_d3(n_groups=4, images_per_group=6, shared_sentences=1, seed=3,
                           layout="released"))
Path("broken.json").write_text('{"info": {"name": "x", "split": "val"}, "images": [\n'
                               '  {"id": 1, "file_name": "a.jpg", "height": 0}\n]}\n')
"""
AFTER_BUILD = r"""
import json
import grdkit
ds = grdkit.load_dataset("demo/g-refcocog/val.json")
preds = [{"expression_id": t.expression_id, "image_id": t.image_id,
          "segmentation": t.segmentation if t.positive else None} for t in ds.targets]
open("gt_preds.json", "w").write(json.dumps(preds))
"""

BLOCK = re.compile(r"<!-- example: (?P<name>[\w-]+) -->\n```console\n(?P<body>.*?)```\n"
                   r"<!-- /example -->", re.DOTALL)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({"NO_COLOR": "1", "TERM": "dumb", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
    return env


def run_examples(workdir: Path, shared: Path | None = SHARED,
                 names: list[str] | None = None) -> dict[str, str]:
    """Run the examples (all, or ``names`` and what they need first) in ``workdir``.

    Returns ``{name: rendered block body}`` (``$ cmd`` then the output). Examples marked
    ``shared`` are skipped when ``shared`` (the real data folder) is missing.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    env = _env()
    have_shared = shared is not None and (shared / "refcocog_umd_sample").is_dir()
    if have_shared:
        (workdir / "refer" / "data").mkdir(parents=True, exist_ok=True)
        link = workdir / "refer" / "data" / "refcocog"
        if not link.exists():
            link.symlink_to((shared / "refcocog_umd_sample").resolve(), target_is_directory=True)
    subprocess.run([sys.executable, "-c", SETUP], cwd=workdir, env=env, check=True)
    wanted = set(names or BY_NAME)
    last = max(i for i, e in enumerate(EXAMPLES) if e.name in wanted)
    out: dict[str, str] = {}
    for i, ex in enumerate(EXAMPLES[:last + 1]):
        if ex.shared and not have_shared:
            continue
        res = subprocess.run(["bash", "-c", ex.cmd], cwd=workdir, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        text = "\n".join(line.rstrip() for line in res.stdout.splitlines())
        out[ex.name] = f"$ {ex.cmd}\n{text}\n" if text else f"$ {ex.cmd}\n"
        if ex.name == "qs-build":
            subprocess.run([sys.executable, "-c", AFTER_BUILD], cwd=workdir, env=env,
                           check=True)
    return {k: v for k, v in out.items() if k in wanted}


def normalise(text: str, volatile: bool) -> str:
    """What the test compares: runs of spaces and of table rules collapsed, trailing space
    dropped; for volatile examples, every decimal number replaced by ``#``."""
    # log lines: their time stamp, memory and ETA change from run to run
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "#", text)
    text = re.sub(r"mem \d+M|eta [\d:]+|in \d+ s\b", "#", text)
    if volatile:
        text = re.sub(r"\d+\.\d+", "#", text)
    text = re.sub(r"[─━]+", "-", text)
    text = re.sub(r"[ \t]+", " ", text)
    return "\n".join(line.rstrip() for line in text.splitlines())


def page_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    files = [root / "README.md"]
    files += sorted((root / "docs").rglob("*.md"))
    return [f for f in files if f.is_file()]


def blocks_of(text: str) -> list[tuple[str, str]]:
    """(name, body) of every marked example block of a page."""
    return [(m["name"], m["body"]) for m in BLOCK.finditer(text)]


def rewrite(text: str, rendered: dict[str, str]) -> str:
    """The page with every marked block whose example ran replaced by its rendered output."""
    def sub(m: re.Match) -> str:
        body = rendered.get(m["name"], m["body"])
        return f"<!-- example: {m['name']} -->\n```console\n{body}```\n<!-- /example -->"
    return BLOCK.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="compare instead of writing; exit 1 when a block differs")
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a "
                    "temporary folder, removed)")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="grdkit-docs-"))
    try:
        rendered = run_examples(work)
        if not args.check and (work / "group.png").is_file():
            shutil.copyfile(work / "group.png", ROOT / "docs" / "assets" / "quickstart-group.png")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    unknown, differ = [], []
    for page in page_files():
        text = page.read_text(encoding="utf-8")
        for name, body in blocks_of(text):
            if name not in BY_NAME:
                unknown.append(f"{page.relative_to(ROOT)}: {name}")
            elif name in rendered and normalise(body, BY_NAME[name].volatile) != normalise(
                    rendered[name], BY_NAME[name].volatile):
                differ.append(f"{page.relative_to(ROOT)}: {name}")
        if not args.check:
            new = rewrite(text, rendered)
            if new != text:
                page.write_text(new, encoding="utf-8")
    for u in unknown:
        print(f"unknown example {u}", file=sys.stderr)
    if args.check:
        for d in differ:
            print(f"differs: {d}", file=sys.stderr)
        return 1 if differ or unknown else 0
    print(f"{len(rendered)} examples run; {len(differ)} blocks updated")
    return 1 if unknown else 0


if __name__ == "__main__":
    sys.exit(main())
