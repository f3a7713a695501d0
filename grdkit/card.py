"""Data card (HuggingFace dataset-card layout) written next to a built dataset as README.md.

The card states the recipe and options, the sources with their checksums, and the statistics of
the files it sits beside, so a dataset folder documents itself.
"""

from __future__ import annotations

import json

from .dataset import GresDataset
from .stats import dataset_stats, summary_rows

PRETTY = {"g-refcoco": "G-RefC", "g-refcoco+": "G-RefC+", "g-refcocog": "G-RefCg"}


def _size_category(n: int) -> str:
    for lim, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                       (1_000_000, "100K<n<1M")):
        if n < lim:
            return label
    return "1M<n<10M"


def render_card(datasets: dict[str, GresDataset], report=None) -> str:
    """Markdown card with YAML front matter for the splits of one built dataset."""
    first = next(iter(datasets.values()))
    name = first.name
    pairs = sum(len(d.targets) for d in datasets.values())
    lines = [
        "---",
        f"pretty_name: {PRETTY.get(name, name)}",
        "license: other",
        "task_categories:",
        "- image-segmentation",
        "language:",
        "- en",
        "size_categories:",
        f"- {_size_category(pairs)}",
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for split in datasets:
        lines += [f"  - split: {split}", f"    path: {split}.json"]
    intro = ("Group-wise referring expression segmentation data built by grdkit "
             f"{first.info.get('grdkit_version')}: one expression vs. a group of images, with "
             "one target per (expression, image) pair; negative (no-target) images carry an "
             "empty mask.")
    recipe = ("GRES (ICCV 2023) §5.1, grdkit rule v1: group refs of a split by normalised "
              "sentence, keep groups with at least `min_images` positive images, add "
              "`floor(neg_ratio x positives + 0.5)` negative images from the split's other "
              "images. Options:")
    lines += ["---", "", f"# {PRETTY.get(name, name)} ({name})", "", intro, "", "## Recipe", "",
              recipe, "", "```json",
              json.dumps(first.info.get("recipe", {}), indent=2, sort_keys=True), "```", "",
              "## Sources", "", "| file | sha256 |", "|---|---|"]
    for fname, digest in sorted(first.info.get("sources", {}).items()):
        lines.append(f"| `{fname}` | `{digest}` |")
    lines += ["", "## Statistics", "",
              "| split | groups | expressions | images | pairs | positive | negative |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary_rows(datasets):
        lines.append(f"| {r['split']} | {r['groups']} | {r['expressions']} | {r['images']} | "
                     f"{r['pairs']} | {r['positive_pairs']} | {r['negative_pairs']} |")
    for split, ds in datasets.items():
        s = dataset_stats(ds)
        el = s["expression_length"]
        length = (f"Expression length (words): min {el['min']}, mean {el['mean']}, "
                  f"median {el['median']}, max {el['max']}.")
        lines += ["", f"### {split}", "", length, "",
                  "| images per group | groups |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in s["group_size_histogram"].items()]
        if report is not None and split in report.splits:
            rp = report.splits[split]
            note = (f"Build: {rp['refs']} refs, {rp['sentences']} distinct sentences, "
                    f"{rp['dropped_groups']} groups dropped (< min_images), "
                    f"{rp['negative_shortfall_groups']} groups short of "
                    f"{rp['negative_shortfall_images']} negatives, "
                    f"{rp['no_target_refs']} no-target refs ignored.")
            lines += ["", note]
    limits = ("RefCOCO-family annotations are not exhaustive: a `random` negative image may "
              "still show an object the sentence could describe. `category-disjoint` negatives "
              "hold no instance of a referent's COCO category.")
    lines += ["", "## Known limitations", "", limits, ""]
    return "\n".join(lines)
