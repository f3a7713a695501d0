"""Dataset cards (HuggingFace card layout) filled from the data they describe.

Templates are the Markdown files of ``data_cards/`` (shipped in the wheel as ``grdkit.cards``):
``g-refcoco.md``, ``g-refcoco+.md``, ``g-refcocog.md``, ``grd.md`` and ``generic.md`` for any
other name. Placeholders: ``{{size_category}}``, ``{{front_matter}}`` (HF configs and features,
filled by ``grdkit export hf``), ``{{recipe}}``, ``{{statistics}}``, ``{{sources}}``,
``{{name}}``, ``{{source}}``, ``{{pretty_name}}`` (from the dataset registry,
:mod:`grdkit.registry`), and ``{{include:FILE}}`` for shared parts.
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
from ..registry import DATASETS


def _template_dir():
    """The packaged templates, or ``data_cards/`` of a source checkout (editable installs)."""
    try:
        d = resources.files("grdkit.cards")
        if d.joinpath("generic.md").is_file():
            return d
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "data_cards"


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
                front_matter: str = "") -> str:
    """A data card for ``datasets`` (one entry per split), from its dataset's template.

    Args:
        datasets: the splits of one dataset.
        notes: ``{split: text}`` added under each split's statistics.
        front_matter: YAML lines for the card's header (HF configs and features); optional.
    """
    if not datasets:
        raise InputError(None, "there is no split to describe (the input produced no data)")
    first = next(iter(datasets.values()))
    name = first.name
    pairs = sum(len(d.targets) for d in datasets.values())
    sources = "\n".join(f"| `{f}` | `{h}` |" for f, h in
                        sorted(first.info.get("sources", {}).items())) or "| (none) | |"
    spec = DATASETS.get(name)
    values = {
        "name": name, "pretty_name": spec.pretty_name if spec else (name or "GRES dataset"),
        "source": spec.source if spec else name, "size_category": size_category(pairs),
        "front_matter": front_matter,
        "recipe": json.dumps(first.info.get("recipe", {}), indent=2, sort_keys=True,
                             ensure_ascii=False),
        "statistics": statistics_markdown(datasets, notes), "sources": sources,
    }
    text = load_template(name)
    if not front_matter:
        text = text.replace("{{front_matter}}\n", "", 1)
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)


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
