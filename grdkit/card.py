"""Dataset cards (HuggingFace card layout) filled from the data they describe.

Templates are the Markdown files of ``data_cards/`` (shipped in the wheel as ``grdkit.cards``):
``g-refcoco.md``, ``g-refcoco+.md``, ``g-refcocog.md``, ``grd.md`` and ``generic.md`` for any
other name. Placeholders: ``{{size_category}}``, ``{{front_matter}}`` (HF configs and features,
filled by ``grdkit export hf``), ``{{recipe}}``, ``{{statistics}}``, ``{{sources}}``,
``{{name}}``, ``{{source}}``, ``{{pretty_name}}``, and ``{{include:FILE}}`` for shared parts.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from .dataset import GresDataset
from .stats import dataset_stats, summary_rows

PRETTY = {"g-refcoco": "G-RefC", "g-refcoco+": "G-RefC+", "g-refcocog": "G-RefCg", "grd": "GRD"}
SOURCE = {"g-refcoco": "RefCOCO", "g-refcoco+": "RefCOCO+", "g-refcocog": "RefCOCOg"}


def _template_dir():
    """The packaged templates, or ``data_cards/`` of a source checkout (editable installs)."""
    try:
        d = resources.files("grdkit.cards")
        if d.joinpath("generic.md").is_file():
            return d
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[1] / "data_cards"


def load_template(name: str) -> str:
    """Template text for a dataset name, with ``{{include:...}}`` resolved."""
    d = _template_dir()
    fname = f"{name}.md" if d.joinpath(f"{name}.md").is_file() else "generic.md"
    text = d.joinpath(fname).read_text(encoding="utf-8")
    return re.sub(r"\{\{include:([\w.+-]+)\}\}",
                  lambda m: d.joinpath(m.group(1)).read_text(encoding="utf-8").rstrip("\n"), text)


def size_category(n: int) -> str:
    for lim, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                       (1_000_000, "100K<n<1M")):
        if n < lim:
            return label
    return "1M<n<10M"


def statistics_markdown(datasets: dict[str, GresDataset], report=None) -> str:
    """Counts per split, images-per-group histograms, expression lengths, build notes."""
    lines = ["| split | groups | expressions | images | pairs | positive | negative |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary_rows(datasets):
        lines.append(f"| {r['split']} | {r['groups']} | {r['expressions']} | {r['images']} | "
                     f"{r['pairs']} | {r['positive_pairs']} | {r['negative_pairs']} |")
    for split, ds in datasets.items():
        s = dataset_stats(ds)
        el = s["expression_length"]
        hist = s["group_size_histogram"]
        length = (f"Expression length (words): min {el['min']}, mean {el['mean']}, "
                  f"median {el['median']}, max {el['max']}.")
        lines += ["", f"**{split}**. {length} Groups by number of images:", "",
                  "| " + " | ".join(hist) + " |", "|" + "---:|" * len(hist),
                  "| " + " | ".join(str(v) for v in hist.values()) + " |"]
        if report is not None and split in report.splits:
            rp = report.splits[split]
            note = (f"Build: {rp['refs']} refs, {rp['sentences']} distinct sentences, "
                    f"{rp['dropped_groups']} groups dropped (< min_images), "
                    f"{rp['negative_shortfall_groups']} groups short of "
                    f"{rp['negative_shortfall_images']} negatives, "
                    f"{rp['no_target_refs']} no-target refs and {rp['empty_sentences']} empty "
                    "sentences ignored.")
            lines += ["", note]
    return "\n".join(lines)


def _fill(datasets: dict[str, GresDataset], front_matter: str, report=None) -> str:
    first = next(iter(datasets.values()))
    name = first.name
    pairs = sum(len(d.targets) for d in datasets.values())
    sources = "\n".join(f"| `{f}` | `{h}` |" for f, h in
                        sorted(first.info.get("sources", {}).items())) or "| (none) | |"
    values = {
        "name": name, "pretty_name": PRETTY.get(name, name or "GRES dataset"),
        "source": SOURCE.get(name, name), "size_category": size_category(pairs),
        "front_matter": front_matter,
        "recipe": json.dumps(first.info.get("recipe", {}), indent=2, sort_keys=True,
                             ensure_ascii=False),
        "statistics": statistics_markdown(datasets, report), "sources": sources,
    }
    text = load_template(name)
    if not front_matter:
        text = text.replace("{{front_matter}}\n", "", 1)
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)


def render_card(datasets: dict[str, GresDataset], report=None) -> str:
    """Card of a built canonical dataset folder (written as ``<out>/README.md``)."""
    return _fill(datasets, "", report)


def render_hf_card(datasets: dict[str, GresDataset], result: dict, embed: bool) -> str:
    """Card of an exported HF folder: YAML declares configs, splits (with files) and features."""
    import datasets as hfd
    import yaml

    from .hf import _features

    configs, infos = [], []
    for k, (config, splits) in enumerate(result.items()):
        configs.append({"config_name": config, **({"default": True} if k == 0 else {}),
                        "data_files": [{"split": s, "path": f"{config}/{s}-*.parquet"}
                                       for s in splits]})
        info = hfd.DatasetInfo(features=_features(config, embed))._to_yaml_dict()
        infos.append({"config_name": config, "features": info["features"],
                      "splits": [{"name": s, "num_examples": v["rows"], "num_bytes": v["bytes"]}
                                 for s, v in splits.items()]})
    fm = yaml.safe_dump({"configs": configs, "dataset_info": infos}, sort_keys=False,
                        allow_unicode=True).rstrip("\n")
    return _fill(datasets, fm)
