"""Hostile input, issue 30 classes C and D, and the fast paths of "hardening at full speed".

C: every JSON type in every field of a prediction and of the ``no_target.json`` sidecar is checked
by one schema per input (msgspec structs, :mod:`grdkit.evaluators.predictions`) before any value
is used: exit 2, one line naming the file and the record, no traceback.
D: a value quoted in a message is cut (:func:`grdkit.errors.quote`): a million-item list in any
field gives a line of at most a few hundred characters that still names the record.
The fast paths (RLE runs, nearest-resized counts) are compared with pycocotools and with the
dense resize (independent implementations) on generated masks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from grdkit.errors import quote
from grdkit.evaluators.functional import (
    pair_stats_resized,
    resized_area,
    rle_areas,
    rle_intersections,
)
from grdkit.format import masks

from .conftest import ROOT
from .test_hostile import corpus, hostile  # noqa: F401  (corpus is a fixture)

WRONG = {"list": ["test"], "object": {"a": 1}, "string": "7", "bool": True, "float": 1.5,
         "null": None}
PRED_FIELDS = {  # field -> the JSON types the schema accepts there
    "expression_id": {"int"}, "image_id": {"int"}, "split": {"string", "null"},
    "score": {"float", "int", "null"}, "no_target": {"bool", "null"},
    "segmentation": {"null", "object"},
}
MAX_LINE = 400  # "one line of at most a few hundred characters"


def _cases(fields):
    for f, ok in fields.items():
        for kind, v in WRONG.items():
            if kind not in ok and not (f == "segmentation" and kind == "object"):
                yield f, kind, v


@pytest.mark.parametrize("field, kind, value", list(_cases(PRED_FIELDS)))
def test_prediction_field_of_wrong_type(corpus, capsys, field, kind, value):  # noqa: F811
    recs = json.loads(json.dumps(corpus["records"]))
    recs[1][field] = value
    corpus["preds"].write_text(json.dumps(recs))
    out = corpus["dir"] / "r.json"
    _, err = hostile(["eval", corpus["preds"], "--gt", corpus["gt"], "--json", out], capsys,
                     outputs=[out])
    assert str(corpus["preds"]) in err and "predictions[1]" in err and len(err) < MAX_LINE


@pytest.mark.parametrize("key, value", [("size", ["480", 640]), ("size", [10]),
                                        ("size", {"h": 10}), ("counts", 5),
                                        ("counts", {"c": "x"}), ("counts", [1.5, 2])])
def test_prediction_rle_of_wrong_type(corpus, capsys, key, value):  # noqa: F811
    recs = json.loads(json.dumps(corpus["records"]))
    k = next(j for j, r in enumerate(recs) if r["segmentation"] is not None)
    recs[k]["segmentation"][key] = value
    corpus["preds"].write_text(json.dumps(recs))
    _, err = hostile(["eval", corpus["preds"], "--gt", corpus["gt"]], capsys)
    assert f"predictions[{k}]" in err and str(corpus["preds"]) in err and len(err) < MAX_LINE


SIDECAR_FIELDS = {"expression_id": {"int"}, "image_id": {"int"}, "no_target": {"bool"},
                  "split": {"string", "null"}}


@pytest.mark.parametrize("field, kind, value", list(_cases(SIDECAR_FIELDS)))
def test_sidecar_field_of_wrong_type(corpus, capsys, field, kind, value):  # noqa: F811
    folder = corpus["dir"] / "pngs"
    folder.mkdir()
    t = corpus["ds"].targets[0]
    rec = {"expression_id": t.expression_id, "image_id": t.image_id, "no_target": True}
    rec[field] = value
    (folder / "no_target.json").write_text(json.dumps([rec]))
    _, err = hostile(["eval", folder, "--gt", corpus["gt"]], capsys)
    assert "no_target.json" in err and "records[0]" in err and len(err) < MAX_LINE


BIG = list(range(1_000_000))


@pytest.mark.parametrize("field", ["expression_id", "image_id", "score", "split", "peak",
                                   "no_target"])
def test_million_item_value_gives_a_short_line(corpus, capsys, field):  # noqa: F811
    recs = json.loads(json.dumps(corpus["records"]))
    recs[2][field] = BIG
    corpus["preds"].write_text(json.dumps(recs))
    _, err = hostile(["eval", corpus["preds"], "--gt", corpus["gt"]], capsys)
    assert len(err) < MAX_LINE and "predictions[" in err, err[:500]
    if field != "peak":  # the peak's message is named by record index among the peaks and
        # without the file (issue 30 class K, fixed in another branch)
        assert "predictions[2]" in err and str(corpus["preds"]) in err


def test_million_item_sidecar_id_gives_a_short_line(corpus, capsys):  # noqa: F811
    folder = corpus["dir"] / "pngs"
    folder.mkdir()
    (folder / "no_target.json").write_text(json.dumps(
        [{"expression_id": BIG, "image_id": 1, "no_target": True}]))
    _, err = hostile(["eval", folder, "--gt", corpus["gt"]], capsys)
    assert len(err) < MAX_LINE and "records[0]" in err and "no_target.json" in err


def test_huge_value_bounded_in_a_subprocess(corpus):  # noqa: F811
    """The same through the real CLI, with a time bound: a 6 MB stderr line would fail here."""
    recs = json.loads(json.dumps(corpus["records"]))
    recs[0]["split"] = ["x" * 100] * 200_000
    corpus["preds"].write_text(json.dumps(recs))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "grdkit.cli.main", "eval", str(corpus["preds"]),
                        "--gt", str(corpus["gt"])], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.count("\n") == 1 and len(r.stderr) < MAX_LINE, r.stderr[:500]
    assert time.perf_counter() - t < 120


@pytest.mark.parametrize("value", [2**63, -(2**63), 10**30])
def test_integer_bounds_on_the_fast_path(corpus, capsys, value):  # noqa: F811
    text = json.dumps(corpus["records"]).replace('"image_id": 1,', f'"image_id": {value},', 1)
    corpus["preds"].write_text(text)
    _, err = hostile(["eval", corpus["preds"], "--gt", corpus["gt"]], capsys)
    assert "out of range" in err and len(err) < MAX_LINE


def test_quote_is_bounded():
    assert quote("abc") == "'abc'" and quote(7) == "7"
    for v in (list(range(10**6)), "x" * 10**6, [[0] * 10**6], {"k": "v" * 10**6}, 10**5000):
        q = quote(v)
        assert len(q) < 130 and ("..." in q or "bits" in q), q


def test_shipped_schema_agrees_with_the_decoder():
    """The JSON Schema shipped for predictions and the msgspec struct the reader decodes with
    name the same fields, the same required ones, and the same JSON types."""
    import msgspec

    from grdkit.evaluators.predictions import PredictionRecord

    shipped = json.loads((ROOT / "grdkit/format/schema/predictions.schema.json").read_text())
    ours = msgspec.json.schema(list[PredictionRecord])
    item = ours["$defs"]["PredictionRecord"]
    assert set(item["required"]) == set(shipped["items"]["required"])
    assert set(item["properties"]) == set(shipped["items"]["properties"])
    assert item["properties"]["expression_id"]["type"] == "integer"
    assert {t.get("type") for t in item["properties"]["split"]["anyOf"]} == {"string", "null"}


def _generated(seed, n=400):
    rng = np.random.default_rng(seed)
    p, g, hs, ws = [], [], [], []
    for k in range(n):
        h, w = (int(x) for x in rng.integers(1, 60, 2))
        if k % 9 == 0:
            h, w = (int(x) for x in rng.integers(300, 700, 2))
        a = rng.random((h, w)) < rng.random()
        b = rng.random((h, w)) < rng.random()
        a[:] = True if k % 5 == 0 else a
        b[:] = False if k % 11 == 0 else b
        p.append(masks.encode(a))
        g.append(masks.encode(b))
        hs.append(h)
        ws.append(w)
    return p, g, np.array(hs), np.array(ws)


@pytest.mark.parametrize("mode, size", [(None, 480), ("centre", 480), ("opencv", 480),
                                        ("centre", 7), ("opencv", 33)])
def test_run_statistics_equal_pycocotools_and_dense_resize(mode, size):
    """I and areas from runs equal pycocotools' ``merge`` / ``area``; the resized counts equal
    decoding, resizing with the index map and counting (``pair_stats_resized``)."""
    p, g, hs, ws = _generated(1)
    a, ar = rle_areas([x["counts"] for x in p], hs, ws, size, mode)
    assert a.tolist() == [masks.area(x) for x in p]
    i, ir = rle_intersections([x["counts"] for x in p], [x["counts"] for x in g], hs, ws, size,
                              mode)
    assert i.tolist() == [masks.area(masks.intersection(x, y)) for x, y in zip(p, g)]
    if mode:
        assert ar.tolist() == [resized_area(x, size, mode) for x in p]
        assert ir.tolist() == [pair_stats_resized(x, True, y, masks.area(y), size, mode)[0]
                               for x, y in zip(p, g)]


@pytest.mark.parametrize("seed", range(6))
def test_json_bound_prefilter_misses_no_long_integer(seed):
    """The fast decoder (msgspec) keeps big integers exact; the byte scan that sends a file to
    the bounded parser must see every integer of 2^63 or more wherever JSON allows it (after
    ``[``, ``,`` or ``:``, with blanks and a minus), and digits inside strings must not change
    a result. Reference: the standard library with the bounded hook (the slow path itself)."""
    from grdkit.errors import InputError
    from grdkit.io import loads_json

    rng = np.random.default_rng(seed)
    big = [2**63, -(2**63), 10**19, 10**40, 2**64]
    for _ in range(40):
        v = big[int(rng.integers(len(big)))] * (1 if rng.random() < 0.5 else -1)
        gap = " " * int(rng.integers(0, 3)) + "\n" * int(rng.integers(0, 2))
        digits = "0" * int(rng.integers(15, 30))
        doc = rng.choice([f"[{gap}{v}{gap}]", f'{{"a":{gap}{v}}}', f'[1,{gap}{v},"{digits}"]',
                          f'{{"c": "x:{digits}]", "k": [{v}]}}', f"{gap}{v}{gap}"])
        with pytest.raises(InputError, match="out of range"):
            loads_json("x.json", doc.encode())
        ok = doc.replace(str(v), "1")
        assert loads_json("x.json", ok.encode()) == json.loads(ok)
    # digits in strings that look like numbers: the same value by both paths
    s = json.dumps({"counts": ["a:" + "1" * 25 + "]", ",7" + "0" * 30, "x" * 3]})
    assert loads_json("x.json", s.encode()) == json.loads(s)


def test_pysod_scalars_equal_the_library_steps():
    """The Co-SOD scalars computed on a crop (weighted F) and without the E curve equal
    PySODMetrics' own five ``step`` calls, for soft and binary maps, objects touching the
    image border, empty and full ground truths."""
    import py_sod_metrics as sod

    from grdkit.evaluators.cosod import pysod_scalars

    rng = np.random.default_rng(3)
    for k in range(40):
        h, w = (int(x) for x in rng.integers(8, 90, 2))
        g = np.zeros((h, w), bool)
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        g[y0:y0 + int(rng.integers(1, h)), x0:x0 + int(rng.integers(1, w))] = True
        if k % 10 == 0:
            g[:] = k % 20 == 0  # full, then empty
        p = np.zeros((h, w), np.uint8)
        p[max(y0 - 3, 0):y0 + 5, max(x0 - 4, 0):x0 + 9] = 255
        if k % 2:
            p = (p // 2 + rng.integers(0, 40, (h, w))).astype(np.uint8)
        if k % 7 == 0:
            p[:] = 0
        g255 = np.where(g, 255, 0).astype(np.uint8)
        ms = [sod.MAE(), sod.Smeasure(alpha=0.5), sod.WeightedFmeasure(beta=1),
              sod.FmeasureV2(metric_handlers={"fm": sod.FmeasureHandler(
                  with_dynamic=False, with_adaptive=True, beta=0.3)}), sod.Emeasure()]
        for m in ms:
            m.step(pred=p, gt=g255)
        ref = [ms[0].get_results()["mae"], ms[1].get_results()["sm"],
               ms[2].get_results()["wfm"], ms[3].get_results()["fm"]["adaptive"],
               ms[4].get_results()["em"]["adp"]]
        np.testing.assert_allclose(pysod_scalars(p, g), ref, rtol=0, atol=1e-13)
