"""MkDocs hooks of the grdkit site (``hooks:`` in mkdocs.yml).

mkdocs-click copies a command's docstring into the page as Markdown. grdkit's docstrings use
click's ``\\b`` marker for blocks that must keep their line breaks (usage lines, examples); as
Markdown those lines would run together, and ``[--a] [--b]`` would read as a reference link. This
hook renders each ``\\b`` block as a code block and escapes ``<`` / ``>`` in the running text
(``<out>/<split>.json`` is a placeholder, not an HTML tag). mkdocs-click has no option for it
(0.9: ``remove_ascii_art`` drops the first block instead), so the description function is
replaced here, at config load.
"""

from __future__ import annotations

import inspect
import re

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
            line = line.replace("<", "&lt;").replace(">", "&gt;")
            out.append(re.sub(r"\[(?=[-A-Z<])", r"\\[", line))
    if fenced:
        out.append("```")
    yield from out
    yield ""


_docs._make_description = _make_description
