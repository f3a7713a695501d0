"""Recipes: one declarative YAML file per paper table (``recipes/<paper>/<table>.yaml``).

A recipe holds data, never code. Its parts (every key is checked; an unknown key is an error):

* ``recipe`` (its name, equal to its path: ``gres/table5``), ``title``, ``cite`` (paper, section,
  table), ``notes`` (open choices, e.g. which split a paper tests on), ``unavailable`` (only for
  a table grdkit cannot run at all, e.g. a video benchmark: the reason; such a recipe has no
  ``ours`` row, is listed with its reason and refuses to run);
* ``datasets``: ``{name: {builder, source, images, options, derive, pairs}}``: how a dataset is
  built from the user's ``--data-root`` (``source``: the folder holding the released files,
  ``images``: the image folder, both relative to the data root), ``derive`` (``res-setting``:
  positives only, GRES §5.1) and ``pairs`` (``{split: n}``, image-expression pairs processed per
  epoch / per evaluation, used only for the GPU-hours estimate), counted for groups of
  ``pairs_at_n`` images (default 1; a training at group size N processes N / pairs_at_n times
  the pairs);
* ``benchmarks``: the column groups: ``{id, label, train: [dataset/split, ...], test:
  dataset/split, profile, train_options, predict_options, metrics: [{key, label, unit}]}``;
* ``rows``: ``{id, label, status, run, paper, note}``: ``status`` is ``ours`` (a grdkit run:
  ``run: {model, preset, train: {...}, predict: {...}}``), ``published`` (another method's row,
  the paper's numbers only) or ``not-implemented`` (the paper's variant does not exist in grdkit;
  listed, never dropped; ``note`` says why); ``paper: {benchmark id: [value per metric, null for
  "-" or for a metric the row does not report]}``.

:func:`load_recipe` validates all of it (types, cross references, one value per metric) and
raises :class:`~grdkit.errors.InputError` naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..baselines.options import check_run_option, check_run_options
from ..errors import InputError
from ..io import LIMITS, read_bytes

STATUSES = ("ours", "published", "not-implemented")
DERIVATIONS = ("res-setting",)
UNITS = ("%", "0-1", "words")

_TOP = {"recipe": True, "title": True, "cite": True, "notes": False, "datasets": True,
        "benchmarks": True, "rows": True, "unavailable": False}
_DATASET = {"builder": True, "source": True, "images": True, "options": False, "derive": False,
            "pairs": False, "pairs_at_n": False, "refs": False}
_BENCH = {"id": True, "label": True, "train": False, "test": True, "profile": True,
          "train_options": False, "predict_options": False, "metrics": True}
_METRIC = {"key": True, "label": True, "unit": True}
_ROW = {"id": True, "label": True, "status": True, "run": False, "paper": True, "note": False}
_RUN = {"model": True, "preset": False, "train": False, "predict": False}


@dataclass(frozen=True)
class Metric:
    key: str     # grdkit's metric key in the evaluation report (``gres_miou``, ``e_measure``)
    label: str   # the paper's name for it
    unit: str    # "%" or "0-1"


@dataclass(frozen=True)
class DatasetRecipe:
    name: str
    builder: str
    source: str
    images: str
    options: dict = field(default_factory=dict)
    derive: str | None = None
    pairs: dict = field(default_factory=dict)
    pairs_at_n: int = 1
    # refs per split (a run with epoch_unit "ref" processes one sentence per ref per epoch):
    # only for the GPU-hours estimate
    refs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    id: str
    label: str
    train: tuple[str, ...]
    test: str
    profile: str
    metrics: tuple[Metric, ...]
    train_options: dict = field(default_factory=dict)
    predict_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecipe:
    model: str
    preset: str | None = None
    train: dict = field(default_factory=dict)
    predict: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    status: str
    paper: dict
    run: RunRecipe | None = None
    note: str = ""


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    cite: str
    datasets: dict[str, DatasetRecipe]
    benchmarks: tuple[Benchmark, ...]
    rows: tuple[Row, ...]
    notes: str = ""
    path: str = ""
    unavailable: str = ""   # why the table cannot run at all ("" when it can)

    def row(self, row_id: str) -> Row:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise InputError(None, f"{self.name} has no row {row_id!r}",
                         hint=f"choose from {', '.join(r.id for r in self.rows)}")

    def cells(self) -> list[tuple[Row, Benchmark, Metric, float | None]]:
        """Every paper cell: (row, benchmark, metric, published value or None for "-")."""
        return [(r, b, m, r.paper.get(b.id, [None] * len(b.metrics))[k])
                for r in self.rows for b in self.benchmarks for k, m in enumerate(b.metrics)]


def _keys(where: str, d: Any, spec: dict[str, bool], path: str) -> dict:
    if not isinstance(d, dict):
        raise InputError(path, f"{where} must be a mapping, not {type(d).__name__}")
    unknown = sorted(map(str, set(d) - set(spec)))  # keys of several types: no TypeError
    if unknown:
        raise InputError(path, f"{where}: unknown key {unknown[0]!r}",
                         hint=f"allowed: {', '.join(spec)}")
    missing = [k for k, req in spec.items() if req and k not in d]
    if missing:
        raise InputError(path, f"{where}: missing key {missing[0]!r}")
    return d


def _str(where: str, v: Any, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise InputError(path, f"{where} must be a non-empty string")
    return v


def _map(where: str, v: Any, path: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise InputError(path, f"{where} must be a mapping with string keys")
    return dict(v)


def parse_recipe(raw: Any, path: str = "<recipe>") -> Recipe:
    """A :class:`Recipe` from parsed YAML; see the module header.

    Raises:
        InputError: an unknown or missing key, a wrong type, a dangling reference (a benchmark
            naming an unknown dataset, a row's paper values for an unknown benchmark) or a number
            of paper values that differs from the benchmark's metrics.
    """
    top = _keys("recipe", raw, _TOP, path)
    datasets = {}
    for name, d in _map("datasets", top["datasets"], path).items():
        d = _keys(f"datasets.{name}", d, _DATASET, path)
        derive = d.get("derive")
        if derive is not None and derive not in DERIVATIONS:
            raise InputError(path, f"datasets.{name}.derive {derive!r} is not one of "
                             f"{DERIVATIONS}")
        pairs = _map(f"datasets.{name}.pairs", d.get("pairs"), path)
        if not all(isinstance(v, int) and v >= 0 for v in pairs.values()):
            raise InputError(path, f"datasets.{name}.pairs must map splits to counts")
        refs = _map(f"datasets.{name}.refs", d.get("refs"), path)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in refs.values()):
            raise InputError(path, f"datasets.{name}.refs must map splits to counts")
        at_n = d.get("pairs_at_n", 1)
        if isinstance(at_n, bool) or not isinstance(at_n, int) or at_n < 1:
            raise InputError(path, f"datasets.{name}.pairs_at_n must be an integer >= 1")
        datasets[name] = DatasetRecipe(name, _str(f"datasets.{name}.builder", d["builder"], path),
                                       _str(f"datasets.{name}.source", d["source"], path),
                                       _str(f"datasets.{name}.images", d["images"], path),
                                       _map(f"datasets.{name}.options", d.get("options"), path),
                                       derive, pairs, at_n, refs)

    def ref(where: str, v: Any) -> str:
        v = _str(where, v, path)
        name, sep, split = v.partition("/")
        if not sep or name not in datasets or not split:
            raise InputError(path, f"{where} {v!r} must be <dataset>/<split> with a dataset of "
                             "'datasets'")
        return v

    if not isinstance(top["benchmarks"], list) or not top["benchmarks"]:
        raise InputError(path, "benchmarks must be a non-empty list")
    benches = []
    for k, b in enumerate(top["benchmarks"]):
        where = f"benchmarks[{k}]"
        b = _keys(where, b, _BENCH, path)
        metrics = []
        if not isinstance(b["metrics"], list) or not b["metrics"]:
            raise InputError(path, f"{where}.metrics must be a non-empty list")
        for j, m in enumerate(b["metrics"]):
            m = _keys(f"{where}.metrics[{j}]", m, _METRIC, path)
            if m["unit"] not in UNITS:
                raise InputError(path, f"{where}.metrics[{j}].unit must be one of {UNITS}")
            metrics.append(Metric(_str("key", m["key"], path), _str("label", m["label"], path),
                                  m["unit"]))
        train = b.get("train") or []
        if not isinstance(train, list):
            raise InputError(path, f"{where}.train must be a list of <dataset>/<split>")
        benches.append(Benchmark(_str(f"{where}.id", b["id"], path),
                                 _str(f"{where}.label", b["label"], path),
                                 tuple(ref(f"{where}.train", t) for t in train),
                                 ref(f"{where}.test", b["test"]),
                                 _str(f"{where}.profile", b["profile"], path), tuple(metrics),
                                 check_run_options(
                                     _map(f"{where}.train_options", b.get("train_options"),
                                          path), f"{path}: {where}.train_options"),
                                 check_run_options(
                                     _map(f"{where}.predict_options", b.get("predict_options"),
                                          path), f"{path}: {where}.predict_options")))
    ids = [b.id for b in benches]
    if len(set(ids)) != len(ids):
        raise InputError(path, "benchmark ids must be unique")
    by_id = {b.id: b for b in benches}
    if not isinstance(top["rows"], list) or not top["rows"]:
        raise InputError(path, "rows must be a non-empty list")
    rows = []
    for k, r in enumerate(top["rows"]):
        where = f"rows[{k}]"
        r = _keys(where, r, _ROW, path)
        status = r["status"]
        if status not in STATUSES:
            raise InputError(path, f"{where}.status {status!r} is not one of {STATUSES}")
        run = None
        if r.get("run") is not None:
            ru = _keys(f"{where}.run", r["run"], _RUN, path)
            run = RunRecipe(_str(f"{where}.run.model", ru["model"], path),
                            check_run_option("preset", ru.get("preset"), f"{path}: {where}.run"),
                            check_run_options(_map(f"{where}.run.train", ru.get("train"), path),
                                              f"{path}: {where}.run.train"),
                            check_run_options(_map(f"{where}.run.predict", ru.get("predict"),
                                                   path), f"{path}: {where}.run.predict"))
        if status == "ours" and run is None:
            raise InputError(path, f"{where}: a row with status 'ours' needs 'run'")
        if status == "ours" and any(not b.train for b in benches):
            raise InputError(path, f"{where}: every benchmark needs 'train' for a grdkit row")
        if status == "published" and run is not None:
            raise InputError(path, f"{where}: a published row has no 'run'")
        if status == "ours" and top.get("unavailable"):
            raise InputError(path, f"{where}: a recipe marked 'unavailable' has no grdkit row")
        if status == "not-implemented" and not r.get("note"):
            raise InputError(path, f"{where}: a not-implemented row needs a 'note' saying why")
        paper = _map(f"{where}.paper", r["paper"], path)
        for bid, vals in paper.items():
            if bid not in by_id:
                raise InputError(path, f"{where}.paper names unknown benchmark {bid!r}")
            if not isinstance(vals, list) or len(vals) != len(by_id[bid].metrics) or not all(
                    v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                    for v in vals):
                raise InputError(path, f"{where}.paper.{bid} must list one number (or null) "
                                 f"per metric ({len(by_id[bid].metrics)})")
        rows.append(Row(_str(f"{where}.id", r["id"], path), _str(f"{where}.label", r["label"],
                                                                  path),
                        status, {b: [None if v is None else float(v) for v in vals]
                                 for b, vals in paper.items()}, run, r.get("note") or ""))
    rids = [r.id for r in rows]
    if len(set(rids)) != len(rids):
        raise InputError(path, "row ids must be unique")
    unavailable = top.get("unavailable") or ""
    if unavailable:
        _str("unavailable", unavailable, path)
    return Recipe(_str("recipe", top["recipe"], path), _str("title", top["title"], path),
                  _str("cite", top["cite"], path), datasets, tuple(benches), tuple(rows),
                  top.get("notes") or "", path, unavailable)


MAX_YAML_NODES = 100_000  # a shipped recipe expands to ~2,000 nodes


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader that refuses a document whose aliases expand past
    :data:`MAX_YAML_NODES` nodes (a "billion laughs" alias bomb: a 2 kB file that expands to
    billions of values); anchors and aliases below the bound (the shipped recipes share their
    metric lists with ``&m`` / ``*m``) are read as usual. The expanded size is counted on the
    composed node graph, where an alias is a shared node, before any Python object is built."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            size: dict[int, int] = {}

            def expanded(n) -> int:
                if id(n) in size:
                    return size[id(n)]
                size[id(n)] = 1  # a recursive alias counts once (and then bounds below)
                if isinstance(n, yaml.SequenceNode):
                    total = 1 + sum(expanded(c) for c in n.value)
                elif isinstance(n, yaml.MappingNode):
                    total = 1 + sum(expanded(k) + expanded(v) for k, v in n.value)
                else:
                    total = 1
                size[id(n)] = total = min(total, MAX_YAML_NODES + 1)
                return total

            if expanded(node) > MAX_YAML_NODES:
                raise yaml.YAMLError(f"its aliases expand to more than {MAX_YAML_NODES} values "
                                     "(an alias bomb?)")
        return node


def recipe_names() -> list[str]:
    """Every shipped recipe (``gres/table2``, ...), sorted (table numbers numerically)."""
    root = resources.files("grdkit.reproduce") / "recipes"
    names = []
    for paper in root.iterdir():
        if paper.is_dir() and not paper.name.startswith("_"):
            names += [f"{paper.name}/{f.name[:-5]}" for f in paper.iterdir()
                      if f.name.endswith(".yaml")]

    def order(n: str):
        paper, table = n.split("/")
        digits = "".join(c for c in table if c.isdigit())
        return paper, int(digits or 0), table

    return sorted(names, key=order)


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (``gres/table5``) or a recipe file by path.

    Raises:
        InputError: an unknown name (the choices listed) or an invalid file (see
            :func:`parse_recipe`).
    """
    p = Path(name_or_path)
    if str(name_or_path).endswith((".yaml", ".yml")):
        data, where = read_bytes(p, "recipe file", limit=LIMITS["recipe"]), str(p)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(p, f"is not UTF-8 text (byte {e.start})",
                             hint="save the recipe as UTF-8") from None
    else:
        if name_or_path not in recipe_names():
            raise InputError(None, f"unknown recipe {name_or_path!r}",
                             hint=f"choose from {', '.join(recipe_names())}")
        paper, table = str(name_or_path).split("/")
        f = resources.files("grdkit.reproduce") / "recipes" / paper / f"{table}.yaml"
        text, where = f.read_text(encoding="utf-8"), f"recipes/{name_or_path}.yaml"
    try:
        raw = yaml.load(text, Loader=BoundedLoader)  # a SafeLoader, bounded
    except yaml.YAMLError as e:
        raise InputError(where, f"is not valid YAML: {str(e)[:200]}") from None
    rec = parse_recipe(raw, where)
    if not str(name_or_path).endswith((".yaml", ".yml")) and rec.name != name_or_path:
        raise InputError(where, f"recipe: {rec.name!r} differs from its path {name_or_path!r}")
    return rec
