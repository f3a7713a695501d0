"""The house stays standing: one-way imports, no private cross-module imports, no cycles, every
declared core dependency used, and the JSON Schema and the loader agreeing on the format."""

import ast
import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import tomllib

from grdkit.errors import InputError
from grdkit.format import GresDataset, json_schema
from grdkit.format.problems import RECORD_FIELDS

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "grdkit"

# stage -> the grdkit packages / modules it may import (besides itself)
FOUNDATION = {"errors", "progress", "registry", "io", "plots", "__init__"}
ALLOWED = {
    "io": FOUNDATION,
    "format": FOUNDATION,
    "sources": FOUNDATION | {"format"},
    "builders": FOUNDATION | {"format", "sources"},
    "evaluators": FOUNDATION | {"format"},
    "export": FOUNDATION | {"format"},
    # baselines score their per-epoch validation with the evaluators (never the other way)
    "baselines": FOUNDATION | {"format", "evaluators", "metrics", "torch"},
    # the researcher-facing torch layer: torchmetrics metric (evaluator formulas), dataset
    "metrics": FOUNDATION | {"format", "evaluators"},
    "torch": FOUNDATION | {"format"},
    "validate": FOUNDATION | {"format", "sources", "builders"},
    "testing": FOUNDATION | {"format"},
    # the web report draws what the evaluators scored, with export's tile pictures
    "html": FOUNDATION | {"format", "evaluators", "export"},
    # reproduce drives the whole pipeline through the Python API (never the CLI)
    "reproduce": FOUNDATION | {"format", "sources", "builders", "evaluators", "export",
                               "baselines", "testing"},
}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module imported, names imported from it) for each grdkit import of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "grdkit":
                out.append((mod, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.split(".")[0] == "grdkit"]
    return out


MODULES = _modules()


def test_the_walker_sees_the_package():
    assert {"grdkit.format.dataset", "grdkit.evaluators.gres", "grdkit.cli.main",
            "grdkit.sources.refer", "grdkit.builders.assemble"} <= set(MODULES)
    found = dict(_imports("grdkit.builders.assemble", MODULES["grdkit.builders.assemble"]))
    assert found["grdkit.format"] and "grdkit.format.masks" in found


def test_no_private_cross_module_imports():
    bad = []
    for name, path in MODULES.items():
        for mod, names in _imports(name, path):
            for n in names:
                target = f"{mod}.{n}"
                if n.startswith("_") and not n.startswith("__") and target not in MODULES \
                        and mod != name:
                    bad.append(f"{name} imports {mod}.{n}")
            if any(part.startswith("_") and part != "__init__" for part in mod.split(".")):
                bad.append(f"{name} imports private module {mod}")
    assert bad == []


def _stage(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_data_flows_one_way():
    """format/io import no later stage; sources no builder; evaluators/export/baselines read the
    canonical format only (not sources or builders); the CLI may import anything."""
    bad = []
    for name, path in MODULES.items():
        stage = _stage(name)
        if stage not in ALLOWED:
            continue
        for mod, _ in _imports(name, path):
            dep = _stage(mod) if mod != "grdkit" else "__init__"
            if dep != stage and dep not in ALLOWED[stage]:
                bad.append(f"{name} ({stage}) imports {mod} ({dep})")
    assert bad == []


def test_no_import_cycles():
    graph = {n: set() for n in MODULES}
    for name, path in MODULES.items():
        for mod, names in _imports(name, path):
            targets = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in MODULES] or [mod]
            for t in targets:
                while t not in MODULES and "." in t:
                    t = t.rpartition(".")[0]
                # a package's __init__ importing its own submodules is not a cycle
                if t in MODULES and t != name and not t.startswith(name + "."):
                    graph[name].add(t)
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert cycles == []


def test_every_core_dependency_is_imported():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    import_name = {"pycocotools": "pycocotools", "pillow": "PIL", "scikit-image": "skimage",
                   "pysodmetrics": "py_sod_metrics", "jsonschema": "jsonschema",
                   "datasets": "datasets", "pyyaml": "yaml", "pyarrow": "pyarrow"}
    used = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                used |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                used.add(node.module.split(".")[0])
    for dep in deps:
        dist = re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0].lower()
        assert import_name.get(dist, dist) in used, f"{dist} is declared but never imported"


# -- the JSON Schema and the loader say the same thing -------------------------------------------
def _one_record_dataset() -> dict:
    return {"info": {"name": "x", "split": "val", "grdkit_version": "0", "recipe": {},
                     "sources": {}},
            "images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 2}],
            "expressions": [{"id": 1, "text": "cow", "group_id": 1}],
            "groups": [{"id": 1, "expression_ids": [1], "image_ids": [1]}],
            "targets": [{"expression_id": 1, "image_id": 1, "positive": False,
                         "segmentation": {"size": [2, 2], "counts": "4"}, "ann_ids": []}]}


def _wrong_value(typ):
    return {int: "1", str: 1, bool: 1, list: {}, dict: []}[typ]


MUTATIONS = [(s, k, how) for s, fields in RECORD_FIELDS.items() for k, typ in fields
             for how in ("drop", "type")] + [("groups", "image_ids", "items"),
                                             ("targets", "ann_ids", "items"),
                                             ("targets", "segmentation", "counts")]


def test_schema_requires_what_the_loader_requires():
    schema = json_schema()["properties"]
    for section, fields in RECORD_FIELDS.items():
        items = schema[section]["items"]
        assert set(items["required"]) == {k for k, _ in fields}, section


@pytest.mark.parametrize("section, key, how", MUTATIONS)
def test_schema_and_loader_reject_the_same_records(section, key, how):
    d = copy.deepcopy(_one_record_dataset())
    rec = d[section][0]
    typ = dict(RECORD_FIELDS[section])[key]
    if how == "drop":
        rec.pop(key)
    elif how == "type":
        rec[key] = _wrong_value(typ)
    elif how == "items":
        rec[key] = [1, "2"]
    else:
        rec[key] = {"size": [2, 2], "counts": [4]}
    assert not jsonschema.Draft202012Validator(json_schema()).is_valid(d)
    with pytest.raises(InputError, match=re.escape(f"{section}[0]")):
        GresDataset.from_dict(d, "x.json")


def test_schema_and_loader_accept_the_same_record():
    d = _one_record_dataset()
    jsonschema.validate(d, json_schema())
    assert json.loads(json.dumps(GresDataset.from_dict(d).to_dict())) == d
