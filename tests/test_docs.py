"""The documentation: the README as a front page, every link resolving, every shown output
the real one (the examples of docs/gen_examples.py rerun and compared), the site building with
mkdocs --strict, and the API reference listing every public name."""

import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import grdkit

from .conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gen_examples", ROOT / "docs" / "gen_examples.py")
gen = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("gen_examples", gen)  # dataclasses look their module up
_spec.loader.exec_module(gen)

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
IMAGE = re.compile(r"!\[[^\]\n]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """Python-Markdown's toc slug (the anchor MkDocs gives a heading)."""
    text = re.sub(r"`|\*\*", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[-\s]+", "-", text).strip("-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_slug(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def _outside_code(text: str) -> str:
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


# -- README ---------------------------------------------------------------------------------
def test_readme_is_a_short_front_page_with_the_two_commands_and_the_quickstart():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "make demo" in text and "make test" in text
    shown = [name for name, _ in gen.blocks_of(text)]
    assert shown == ["qs-demo", "qs-build", "qs-stats", "qs-show", "qs-train", "qs-predict",
                     "qs-eval"]


@pytest.mark.parametrize("page", gen.page_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    text = _outside_code(page.read_text(encoding="utf-8"))
    bad = []
    for target in LINK.findall(text) + IMAGE.findall(text):
        if re.match(r"https?://", target):
            continue  # external: not reachable offline; the site build does not check them
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md":
            if dest.name == "api.md" and anchor.startswith("grdkit"):
                ok = importlib.util.find_spec(anchor) is not None or hasattr(
                    importlib.import_module(anchor.rpartition(".")[0]), anchor.rpartition(".")[2])
                if not ok:
                    bad.append(f"{target}: no such object")
            elif anchor not in _anchors(dest):
                bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert bad == []


def test_the_quoted_commands_exist():
    """Every `grdkit <command>` the README and the pages quote is a real command."""
    from grdkit.cli.main import cli

    names = set(cli.commands)
    for page in gen.page_files():
        text = page.read_text(encoding="utf-8")
        fences = re.findall(r"```.*?```", text, re.DOTALL)
        inline = re.findall(r"`[^`\n]+`", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
        code = "\n".join(fences + [c.strip("`") for c in inline])
        for cmd in re.findall(r"(?:^|\$ |&& |; )grdkit ([a-z][a-z-]+)\b", code, re.MULTILINE):
            assert cmd in names, f"{page.name}: grdkit {cmd}"


# -- the shown outputs are the real ones -------------------------------------------------------
@pytest.fixture(scope="module")
def example_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("examples")


@pytest.fixture(scope="module")
def examples(example_dir):
    pytest.importorskip("torch")
    return gen.run_examples(example_dir, SHARED)


def test_every_python_snippet_runs_in_the_examples_folder(examples, example_dir):
    """The ```python blocks of the README and the pages run, after the shown commands."""
    ran = 0
    for page in gen.page_files():
        for code in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL):
            if "refer/data" in code and not (example_dir / "refer" / "data").exists():
                continue  # needs ../shared/data
            res = subprocess.run([sys.executable, "-c", code], cwd=example_dir, text=True,
                                 capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                 check=False)
            assert res.returncode == 0, (page.name, code, res.stderr[-2000:])
            ran += 1
    assert ran >= 3


def test_quickstart_runs_top_to_bottom(examples):
    """From the bundled demo sample alone (the fresh clone): every step succeeds."""
    for name in ("qs-demo", "qs-build", "qs-stats", "qs-show", "qs-train", "qs-predict",
                 "qs-eval"):
        out = examples[name]
        assert "grdkit: error" not in out and "Traceback" not in out, out
    assert "Wrote demo/preds.json: 43 pairs" in examples["qs-predict"]
    assert "gres_miou" in examples["qs-eval"]


def test_every_shown_output_is_what_the_command_prints(examples):
    used, differ = set(), []
    for page in gen.page_files():
        for name, body in gen.blocks_of(page.read_text(encoding="utf-8")):
            assert name in gen.BY_NAME, f"{page.name}: unknown example {name}"
            used.add(name)
            if name not in examples:  # needs ../shared/data, absent here
                continue
            vol = gen.BY_NAME[name].volatile
            if gen.normalise(body, vol) != gen.normalise(examples[name], vol):
                differ.append(f"{page.relative_to(ROOT)}: {name}")
    assert differ == [], "run `make docs-examples` (python docs/gen_examples.py)"
    assert used == set(gen.BY_NAME), "every example is shown on a page"
    for name, out in examples.items():
        assert "Traceback" not in out and "grdkit: error" not in out, (name, out)


def test_normalise_masks_only_what_is_volatile():
    a = "│    16 │    2.0792 │     4.9 │ cpu │"
    b = "│    16 │    2.0811 │    12.3 │ cpu │"
    assert gen.normalise(a, True) == gen.normalise(b, True)
    assert gen.normalise(a, False) != gen.normalise(b, False)
    assert gen.normalise(a.replace("16", "17"), True) != gen.normalise(b, True)


# -- the site ---------------------------------------------------------------------------------
def _public_modules() -> list[str]:
    """Every module of grdkit with an ``__all__``, except the CLI (its reference is cli.md)."""
    pytest.importorskip("torch")
    names = ["grdkit"]
    for info in pkgutil.walk_packages(grdkit.__path__, "grdkit."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts) or parts[1] == "cli":
            continue
        names.append(info.name)
    return [n for n in names if hasattr(importlib.import_module(n), "__all__")]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("mkdocs_click")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_the_site_builds_offline(site):
    html = (site / "index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis" not in html and "fonts.gstatic" not in html
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r'<script[^>]+src="https?://', text), page
    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    from grdkit.cli.main import cli as group

    for name in group.commands:
        assert f"grdkit {name}" in cli, name
    assert "Sentinel" not in cli  # click 8.3's unset default (docs/hooks.py)
    # the fidelity tables are included from the module headers: GRSer's Markdown table as a
    # table, MABP's list, LTS's reStructuredText table preformatted (docs/hooks.py)
    base = (site / "baselines" / "index.html").read_text(encoding="utf-8")
    assert "<th>verdict</th>" in base and "Bring Adaptive Binding" in base
    assert re.search(r"<code>=+ +=+ +=+\npaper +grdkit +verdict", base)
    assert "&lt;no&gt;" in base  # GRSer's anti-expression prefix, escaped, not an HTML tag


def test_api_reference_lists_every_public_name_with_its_docstring(site):
    ids = set(re.findall(r'id="([^"]+)"', (site / "api" / "index.html").read_text("utf-8")))
    modules = {n: importlib.import_module(n) for n in _public_modules()}
    missing, undocumented = [], []
    for name, mod in modules.items():
        for attr in mod.__all__:
            if attr.startswith("__"):
                continue  # __version__: named in the page's text
            obj = getattr(mod, attr)
            # shown under this module, or under a module that exports the same object
            homes = {f"{n}.{attr}" for n, m in [(name, mod), *modules.items()]
                     if getattr(m, attr, None) is obj}
            if inspect.ismodule(obj):
                homes.add(obj.__name__)  # a module exported by name: its own page section
            elif inspect.isclass(obj) or inspect.isfunction(obj):
                homes.add(f"{obj.__module__}.{obj.__qualname__}")
            if not homes & ids:
                missing.append(f"{name}.{attr}")
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
                undocumented.append(f"{name}.{attr}")
    assert missing == [] and undocumented == []
    assert len(modules) >= 10  # the walker sees the package
