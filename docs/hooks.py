"""MkDocs hooks of the grdkit site (``hooks:`` in mkdocs.yml).

mkdocs-click copies a command's docstring into the page as Markdown. grdkit's docstrings use
click's ``\\b`` marker for blocks that must keep their line breaks (usage lines, examples); as
Markdown those lines would run together, and ``[--a] [--b]`` would read as a reference link. This
hook renders each ``\\b`` block as a code block and escapes ``<`` in the running text
(``<out>/<split>.json`` is a placeholder, not an HTML tag), and shows click 8.3's "no default"
sentinel as mkdocs-click shows None. mkdocs-click has no option for it
(0.9: ``remove_ascii_art`` drops the first block instead), so the description function is
replaced here, at config load.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from mkdocs_click import _docs


def _make_description(ctx, remove_ascii_art: bool = False):
    help_string = ctx.command.help or ctx.command.short_help
    if not help_string:
        return
    out: list[str] = []
    fenced = False
    for line in inspect.cleandoc(help_string).splitlines():
        if line.strip() == "\b":
            out += ["", "```text"]
            fenced = True
        elif fenced and not line.strip():
            out += ["```", ""]
            fenced = False
        elif fenced:
            out.append(line)
        else:
            out.append(re.sub(r"\[(?=[-A-Z<])", r"\\[", _escape(line)))
    if fenced:
        out.append("```")
    yield from out
    yield ""


_docs._make_description = _make_description

_format_row = _docs._format_table_option_row


def _format_table_option_row(option) -> str:
    """mkdocs-click 0.9 prints click 8.3's "no default" sentinel as `Sentinel.UNSET`."""
    row = _format_row(option)
    return row.replace("`Sentinel.UNSET`", "*required*" if option.required else "None")


_docs._format_table_option_row = _format_table_option_row


# -- module headers included in pages ---------------------------------------------------------
# `<!-- module-header: grdkit.baselines.lts -->` is replaced by that module's docstring (read with
# ast: nothing is imported, so the baselines' headers render without torch). The fidelity tables
# are Markdown tables, or reStructuredText simple tables (rules of `=`), which Markdown would run
# together: those are shown as preformatted text. `<` outside code is escaped (`<no>` is text).
ROOT = Path(__file__).resolve().parents[1]
HEADER = re.compile(r"<!-- module-header: ([\w.]+) -->")
RST_RULE = re.compile(r"^=+( +=+)+ *$")


def _escape(line: str) -> str:
    parts = line.split("`")
    return "`".join(p.replace("<", "&lt;") if i % 2 == 0 else p for i, p in enumerate(parts))


def module_header(module: str) -> str:
    """The docstring of ``module`` (a dotted name under the repository root) as Markdown."""
    base = ROOT / Path(*module.split("."))
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    out: list[str] = []
    rules = 0
    for line in doc.splitlines():
        if RST_RULE.match(line):
            if rules % 3 == 0:
                out += ["", "```text"]
            out.append(line)
            rules += 1
            if rules % 3 == 0:
                out += ["```", ""]
            continue
        out.append(line if rules % 3 else _escape(line))
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return HEADER.sub(lambda m: module_header(m[1]), markdown)
