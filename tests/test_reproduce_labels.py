"""`reproduce`'s renderings say what they show (issue 28 §4): each metric has its own marker in
plot.png, and a --smoke run is labelled in the plot, table.md and table.json."""

import json
from types import SimpleNamespace

import pytest

from grdkit.reproduce import results


def _cells():
    out = []
    for b in ("G-RefC", "GRD"):
        for m, unit, paper, ours in (("mIoU-bar", "%", 60.0, 58.0), ("R_neg", "%", 80.0, 83.0),
                                     ("F_max", "0-1", 0.5, 0.45)):
            out.append({"recipe": "gres/t", "row": "full", "row_label": "GRSer", "status": "ok",
                        "benchmark": b.lower(), "benchmark_label": b, "metric": m.lower(),
                        "metric_label": m, "unit": unit, "paper": paper, "ours": ours,
                        "delta": ours - paper, "note": ""})
    return out


def test_plot_marks_each_metric_and_labels_smoke_runs():
    pytest.importorskip("matplotlib")
    fig = results.plot_figure(_cells(), "gres/t", smoke=True)
    ax = fig.axes[0]
    labels = [c.get_label() for c in ax.collections]
    assert labels == ["G-RefC · mIoU-bar", "G-RefC · R_neg", "GRD · mIoU-bar", "GRD · R_neg"]
    shape = {lab: c.get_paths()[0].vertices.round(3).tolist()
             for lab, c in zip(labels, ax.collections)}
    colour = {lab: tuple(c.get_facecolor()[0]) for lab, c in zip(labels, ax.collections)}
    # same metric: same marker, other colour; same benchmark: same colour, other marker
    assert shape["G-RefC · mIoU-bar"] == shape["GRD · mIoU-bar"] != shape["G-RefC · R_neg"]
    assert colour["G-RefC · mIoU-bar"] == colour["G-RefC · R_neg"] != colour["GRD · R_neg"]
    texts = [fig._suptitle.get_text(), *(t.get_text() for a in fig.axes for t in a.texts)]
    assert any(results.SMOKE_NOTE in t for t in texts) and "SMOKE RUN" in texts
    plain = results.plot_figure(_cells(), "gres/t")
    assert not any("smoke" in t.get_text().lower() for a in plain.axes for t in a.texts)
    assert results.SMOKE_NOTE not in plain._suptitle.get_text()


def test_tables_label_smoke_runs():
    cells = _cells()
    assert results.SMOKE_NOTE in results.to_markdown(cells, "t", smoke=True)
    assert results.SMOKE_NOTE not in results.to_markdown(cells, "t")
    recipe = SimpleNamespace(name="gres/t", title="T", cite="c", notes="")
    for smoke in (True, False):
        doc = json.loads(results.to_json(cells, SimpleNamespace(recipe=recipe, rows=["full"],
                                                                 smoke=smoke)))
        assert doc["smoke"] is smoke and (doc.get("smoke_note") == results.SMOKE_NOTE) is smoke
