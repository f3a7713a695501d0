"""``grdkit reproduce``: the tables of the seed papers (GRES, MABP, LTS), ours beside theirs.

* :mod:`.recipe`: one declarative YAML file per paper table (``recipes/<paper>/<table>.yaml``)
  and its strict loader;
* :mod:`.api`: the one place where recipe fields become calls of grdkit's Python API (builders,
  :func:`grdkit.baselines.engine.train`, :func:`grdkit.baselines.predict.predict`,
  :func:`grdkit.evaluators.evaluate`), and which of them exist in this installation;
* :mod:`.plan`: a recipe -> the steps (build / train / predict / eval), each keyed by its exact
  config, with a GPU-hours estimate;
* :mod:`.execute`: runs a plan, skipping completed steps (resumable);
* :mod:`.results`: the paper / ours / delta table (terminal, Markdown, CSV, JSON) and a plot;
* :mod:`.smoke`: toy data in each source's released layout and tiny model settings, so every
  recipe runs end to end on a CPU in minutes.
"""

from .recipe import Recipe, load_recipe, parse_recipe, recipe_names

__all__ = ["Recipe", "list_text", "load_recipe", "parse_recipe", "recipe_names"]


def list_text() -> str:
    """``grdkit reproduce list``: every recipe with its rows by status (each not-implemented row
    with its reason), whether the table can run at all, its cells by status, the pretrained
    weights and the data it needs (plain text, pinned by tests)."""
    from .api import WEIGHTS

    lines = []
    for name in recipe_names():
        r = load_recipe(name)

        def ids(status: str, rows=r.rows) -> str:
            return ", ".join(x.id for x in rows if x.status == status) or "-"

        data = sorted({f"{d.source}/" for d in r.datasets.values()}
                      | {f"{d.images}/" for d in r.datasets.values()})
        lines += [f"{name}: {r.title}", f"    source: {r.cite}"]
        if r.unavailable:
            lines.append(f"    runnable: no: {' '.join(r.unavailable.split())}")
        lines += [f"    grdkit rows: {ids('ours')}", f"    not implemented: {ids('not-implemented')}"]
        lines += [f"      {x.id}: {' '.join(x.note.split())}" for x in r.rows
                  if x.status == "not-implemented"]
        lines.append(f"    published only: {ids('published')}")
        counts = {s: 0 for s in ("ours", "published", "not-implemented")}
        for row, *_ in r.cells():
            counts[row.status] += 1
        lines.append(f"    cells: {len(r.cells())} (runnable {counts['ours']}, published "
                     f"{counts['published']}, not implemented {counts['not-implemented']}); "
                     f"data: {', '.join(data)}")
        presets = sorted({x.run.preset for x in r.rows if x.run is not None and x.run.preset})
        for p in presets:
            lines.append(f"    weights ({p}): " + "; ".join(
                f"{k}: {w['what']}" for k, w in WEIGHTS.get(p, {}).items()))
    return "\n".join(lines) + "\n"
