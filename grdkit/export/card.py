"""Dataset cards (HuggingFace card layout) filled from the data they describe.

One card per dataset, made the same way for ``grdkit build`` / ``convert`` folders and for
``grdkit export hf``: the YAML header is a ``huggingface_hub.DatasetCardData`` filled from the
dataset registry (:mod:`grdkit.registry`: ``pretty_name``, ``license`` with ``license_name`` /
``license_link`` where it is ``other``, ``task_categories``, ``task_ids``, ``tags``,
``size_categories``, ``source_datasets``) plus what the caller adds (the HF export's ``configs``,
``dataset_info`` and ``grdkit_info``), never hand-built YAML. The body is the dataset's Markdown
template from ``data_cards/`` (shipped in the wheel as ``grdkit.cards``; ``generic.md`` for any
other name) followed by a "Citation" section made from the registry's BibTeX
(:data:`grdkit.registry.BIBTEX`), the one source of every card's citations.

Template placeholders: ``{{recipe}}``, ``{{statistics}}``, ``{{sources}}``, ``{{name}}``,
``{{source}}``, ``{{pretty_name}}``, ``{{structure}}`` (the "Dataset structure" section: the
canonical files, or the Parquet columns of an HF export) and ``{{include:FILE}}`` for shared parts.
"""

from __future__ import annotations

import io
import json
import re
from importlib import resources
from pathlib import Path

from ..errors import InputError
from ..format import GresDataset, dumps
from ..format.stats import dataset_stats, summary_rows
from ..io import Commit, open_regular
from ..registry import BIBTEX, DATASETS

CANONICAL_STRUCTURE = """## Dataset structure

One file per split in grdkit's canonical format (`<split>.json`: `info`, `images`,
`expressions`, `groups`, `targets`; exactly one target per (expression, image) pair of a group,
COCO compressed RLE masks, empty for no-target images; records keep the source's extra keys).
`grdkit export hf <this folder> --out <dir>` writes it as a HuggingFace dataset (Parquet, masks as
`Image` columns, configs `groups` and `pairs`) whose card lists every column."""


def _template_dir():
    """The templates: ``data_cards/`` beside the imported package when it exists (a source
    checkout or any editable install of one, so a worktree reads its own templates), else the
    packaged ``grdkit.cards`` (a wheel)."""
    local = Path(__file__).resolve().parents[2] / "data_cards"
    if (local / "generic.md").is_file():
        return local
    return resources.files("grdkit.cards")


def load_template(name: str) -> str:
    """Template body for a dataset name, with ``{{include:...}}`` resolved."""
    d = _template_dir()
    fname = f"{name}.md" if d.joinpath(f"{name}.md").is_file() else "generic.md"
    text = d.joinpath(fname).read_text(encoding="utf-8")
    return re.sub(r"\{\{include:([\w.+-]+)\}\}",
                  lambda m: d.joinpath(m.group(1)).read_text(encoding="utf-8").rstrip("\n"), text)


def citations(name: str | None) -> list[str]:
    """BibTeX entries a dataset's card cites (registry ``cites``; the GRES paper for a dataset
    the registry does not know)."""
    spec = DATASETS.get(name or "")
    return [BIBTEX[k] for k in (spec.cites if spec else ("wu2023gres",))]


def card_data(datasets: dict[str, GresDataset], extra: dict | None = None):
    """The card's ``huggingface_hub.DatasetCardData`` (registry fields, size category, plus
    ``extra`` keys such as ``configs``)."""
    from huggingface_hub import DatasetCardData

    first = next(iter(datasets.values()))
    spec = DATASETS.get(first.name or "")
    pairs = sum(len(d.targets) for d in datasets.values())
    fields: dict = {"license": spec.license if spec else "other"}
    if fields["license"] == "other":
        fields["license_name"] = (spec.license_name if spec and spec.license_name
                                  else "see-sources-and-licences")
        fields["license_link"] = (spec.license_link if spec and spec.license_link
                                  else "README.md")
    return DatasetCardData(
        pretty_name=spec.pretty_name if spec else (first.name or "GRES dataset"),
        language=["en"], task_categories=["image-segmentation"],
        task_ids=["instance-segmentation"], size_categories=[size_category(pairs)],
        source_datasets=list(spec.source_datasets) if spec and spec.source_datasets else None,
        **fields, tags=list(spec.tags) if spec else ["referring-expression-segmentation",
                                                      "gres"],
        **(extra or {}))


def size_category(n: int) -> str:
    for lim, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                       (1_000_000, "100K<n<1M")):
        if n < lim:
            return label
    return "1M<n<10M"


def statistics_markdown(datasets: dict[str, GresDataset], notes: dict[str, str] | None = None
                        ) -> str:
    """Counts per split, images-per-group histograms, expression lengths, and ``notes``
    (``{split: text}``, e.g. :meth:`grdkit.builders.BuildReport.notes`)."""
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
        if notes and split in notes:
            lines += ["", notes[split]]
    return "\n".join(lines)


def render_card(datasets: dict[str, GresDataset], notes: dict[str, str] | None = None,
                extra: dict | None = None, structure: str | None = None) -> str:
    """A data card for ``datasets`` (one entry per split): ``DatasetCardData`` header, the
    dataset's template, and the registry's citations (see the module header).

    Args:
        datasets: the splits of one dataset.
        notes: ``{split: text}`` added under each split's statistics.
        extra: more header keys (the HF export's ``configs``, ``dataset_info``, ...).
        structure: the "Dataset structure" section (default: the canonical files').

    Raises:
        InputError: ``datasets`` is empty.
    """
    from huggingface_hub import DatasetCard

    if not datasets:
        raise InputError(None, "there is no split to describe (the input produced no data)")
    first = next(iter(datasets.values()))
    name = first.name
    sources = "\n".join(f"| `{f}` | `{h}` |" for f, h in
                        sorted(first.info.get("sources", {}).items())) or "| (none) | |"
    spec = DATASETS.get(name)
    values = {
        "name": name, "pretty_name": spec.pretty_name if spec else (name or "GRES dataset"),
        "source": spec.source if spec else name,
        "recipe": json.dumps(first.info.get("recipe", {}), indent=2, sort_keys=True,
                             ensure_ascii=False),
        "statistics": statistics_markdown(datasets, notes), "sources": sources,
        "structure": structure or CANONICAL_STRUCTURE,
    }
    body = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], load_template(name))
    body = (body.rstrip("\n") + "\n\n## Citation\n\n```bibtex\n" + "\n".join(citations(name))
            + "\n```\n")
    header = card_data(datasets, extra).to_yaml()
    return str(DatasetCard(f"---\n{header}\n---\n\n{body}"))


def write_dataset(datasets: dict[str, GresDataset], out: str | Path,
                  notes: dict[str, str] | None = None) -> list[Path]:
    """Write ``<out>/<split>.json`` for every split plus the data card ``<out>/README.md``.

    All content is serialised first, then every file is committed as a whole
    (:class:`grdkit.io.Commit`: all written as temp files, then renamed together), so an error
    never leaves a half-written file nor a mix of this build and an earlier one. Split files of an earlier build
    into the same folder that this one does not write (e.g. ``testA.json`` from another splitBy)
    are removed, so the folder holds exactly this build. Returns the paths written.

    Raises:
        InputError: ``datasets`` is empty (nothing was built).
    """
    out = Path(out)
    if not datasets:
        raise InputError(out, "nothing to write: the input produced no split",
                         hint="check that the input holds records")
    texts = {out / f"{split}.json": dumps(ds) for split, ds in datasets.items()}
    texts[out / "README.md"] = render_card(datasets, notes)
    with Commit(lock=out) as c:  # every file or none, --out locked: never a mix of two builds
        for path, text in texts.items():
            c.write_text(path, text)
        for stale in sorted(out.glob("*.json")):
            if stale not in texts and not stale.name.startswith(".") and _is_split_file(stale):
                c.remove(stale)
    return list(texts)


def _is_split_file(path: Path) -> bool:
    """A canonical split file written by grdkit (its first record is ``"info"``)."""
    try:
        with open_regular(path, "split file") as b, io.TextIOWrapper(b, encoding="utf-8") as f:
            return f.readline(16).strip() == "{" and f.readline(16).startswith('"info":')
    except (OSError, UnicodeDecodeError, InputError):
        return False
