"""The HTML report's files (issue 28 §2), read without a browser: what each page lists, the
thumbnail budget, byte-identical rebuilds, escaping, and ``grdkit report`` from a per-pair file.
The browser tests are in test_html_browser.py."""

import json
import re

import numpy as np
import pytest
from PIL import Image as PILImage

import grdkit
from grdkit import masks
from grdkit.evaluators import evaluate
from grdkit.format.dataset import Expression, GresDataset
from grdkit.html import write_html_report

from .conftest import SHARED, cow_dataset, dataset_from_dense, run_cli
from .test_pairs import _cow_predictions


@pytest.fixture(scope="module")
def cow_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cow")
    ds = cow_dataset()
    gt = tmp / "cow.json"
    grdkit.save_dataset(ds, gt)
    preds = tmp / "preds.json"
    preds.write_text(json.dumps(_cow_predictions(ds)))
    return {"ds": ds, "gt": gt, "preds": preds, "tmp": tmp}


def _tiles(html: str) -> list[int]:
    """Image ids of a page's tiles, in order."""
    return [int(x) for x in re.findall(r"expr \d+ · image (\d+)", html)]


def test_galleries_list_what_they_say_in_order(cow_run, tmp_path):
    ds = cow_run["ds"]
    rep = evaluate(str(cow_run["preds"]), ds, per_pair=True)
    out = tmp_path / "html"
    info = write_html_report(rep, rep.pairs, {ds.split: ds}, out, img_root=SHARED,
                             pred_masks=rep.pair_masks, gallery=5, max_thumbs=12)
    df = rep.pairs
    # false alarms: every FP, largest predicted area first (ties: pair order); 5 shown
    fp = df[df["outcome"] == "FP"].sort_values("pred_area", ascending=False, kind="stable")
    page = (out / "gallery-false-alarms.html").read_text()
    assert _tiles(page) == fp["image_id"].tolist()[:5]
    assert f"All {len(fp)} in the pairs table" in page and "pairs.html#outcome=FP" in page
    # worst positives: TP by IoU, lowest first
    tp = df[df["outcome"] == "TP"].sort_values("iou", kind="stable")
    assert _tiles((out / "gallery-worst.html").read_text()) == tp["image_id"].tolist()[:5]
    fn = df[df["outcome"] == "FN"].sort_values("gt_area", ascending=False, kind="stable")
    assert _tiles((out / "gallery-missed.html").read_text()) == fn["image_id"].tolist()[:5]
    # the budget: 12 thumbnails at most, galleries first; the group page lists all 63 pairs,
    # the others as text tiles
    thumbs = sorted((out / "thumbs").glob("*.jpg"))
    assert len(thumbs) == info["thumbs"] == 12
    group = (out / "groups" / "0.html").read_text()
    assert len(_tiles(group)) == 63 and group.count("not drawn (thumbnail budget)") == 63 - 12
    w, h = PILImage.open(thumbs[0]).size
    assert w == 180 and h == round(213 * 180 / 320)
    # the table's data: one row per pair, the IoU of each
    js = (out / "pairs.js").read_text()
    data = json.loads(js[len("window.GRDKIT_PAIRS = "):-2])
    assert len(data["rows"]) == 63
    k = data["columns"].index("iou")
    assert [r[k] for r in data["rows"]] == pytest.approx(df["iou"].tolist(), abs=1e-6)
    # the summary names the profile, its version and every metric
    index = (out / "index.html").read_text()
    assert "profile grdkit v1" in index and "no gate set" in index
    for key in rep.metrics:
        assert f"<td>{key}</td>" in index


def test_whole_image_prediction_is_tinted_and_framed(cow_run, tmp_path):
    ds = cow_run["ds"]
    rep = evaluate(str(cow_run["preds"]), ds, per_pair=True)
    out = tmp_path / "html"
    write_html_report(rep, rep.pairs, {ds.split: ds}, out, img_root=SHARED,
                      pred_masks=rep.pair_masks, gallery=40, max_thumbs=63)
    df = rep.pairs
    pixels = df["image_id"].map(lambda i: ds.image(i).height * ds.image(i).width)
    full = df[df["pred_area"] == pixels].index
    part = df[(df["outcome"] == "FP") & (df["pred_area"] < 1000)].index
    assert len(full) and len(part)
    page = (out / "gallery-false-alarms.html").read_text()
    assert page.count('class="tile whole"') == len(full)

    def orange_border(r):
        a = np.asarray(PILImage.open(out / "thumbs" / f"{r}.jpg").convert("RGB")).astype(int)
        edge = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
        return np.mean((edge[:, 0] > 200) & (edge[:, 1] > 110) & (edge[:, 1] < 190)
                       & (edge[:, 2] < 80))

    assert all(orange_border(r) > 0.9 for r in full)
    assert all(orange_border(r) < 0.1 for r in part)


def test_rebuild_is_byte_identical_and_removes_stale_files(cow_run, tmp_path):
    ds = cow_run["ds"]
    rep = evaluate(str(cow_run["preds"]), ds, per_pair=True)
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        write_html_report(rep, rep.pairs, {ds.split: ds}, d, img_root=SHARED,
                          pred_masks=rep.pair_masks, max_thumbs=20)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    write_html_report(rep, rep.pairs, {ds.split: ds}, a, max_thumbs=3)
    assert len(list((a / "thumbs").glob("*.jpg"))) == 3


def test_hostile_expression_text_is_escaped(tmp_path):
    gt = np.zeros((20, 30), bool)
    gt[2:9, 3:12] = True
    ds = dataset_from_dense([[gt, np.zeros_like(gt)]])
    evil = '</script><script>alert(1)</script><img src=x onerror="alert(2)">'
    ds = GresDataset(ds.info, ds.images, [Expression(1, evil, 1)], ds.groups, ds.targets)
    preds = [{"expression_id": 1, "image_id": 2, "segmentation": masks.encode(gt)}]
    rep = evaluate(preds, ds, per_pair=True)
    out = tmp_path / "html"
    write_html_report(rep, rep.pairs, {ds.split: ds}, out, pred_masks=rep.pair_masks)
    js = (out / "pairs.js").read_text()
    assert "</script>" not in js and "<\\/script>" in js
    group = (out / "groups" / "0.html").read_text()
    assert "<script>alert" not in group and "&lt;/script&gt;" in group
    assert 'onerror="alert' not in group


def test_report_command_rebuilds_the_eval_page_from_the_per_pair_file(cow_run, tmp_path,
                                                                      capsys):
    g, p = cow_run["gt"], cow_run["preds"]
    code, _, err = run_cli(["eval", p, "--gt", g, "--html", tmp_path / "a", "--img-root",
                               SHARED, "--per-pair", tmp_path / "pairs.jsonl",
                               "--fail-under", "gres_miou=99"], capsys)
    assert code == 1, err  # the gate fails, and the page says so
    assert "gate FAILED" in (tmp_path / "a" / "index.html").read_text()
    code, _, err = run_cli(["report", "--per-pair", tmp_path / "pairs.jsonl", "--gt", g,
                               "--out", tmp_path / "b", "--img-root", SHARED, "--preds", p],
                              capsys)
    assert code == 0, err
    a, b = tmp_path / "a", tmp_path / "b"
    for name in ("pairs.js", "gallery-worst.html", "gallery-false-alarms.html",
                 "gallery-missed.html", "groups.html", "groups/0.html"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    rows = re.compile(r"<tr><td>[^<]*</td><td>[^<]*</td><td class=num>[^<]*</td>")
    ia, ib = ((x / "index.html").read_text() for x in (a, b))
    assert rows.findall(ia) == rows.findall(ib) and len(rows.findall(ia)) >= 12
    assert "no gate set" in ib
    # without --preds the tiles show the ground truth and the pages say so
    code, _, err = run_cli(["report", "--per-pair", tmp_path / "pairs.jsonl", "--gt", g,
                            "--out", tmp_path / "c"], capsys)
    assert code == 0, err
    assert "Predictions are not drawn" in (tmp_path / "c" / "gallery-worst.html").read_text()
    # the output folder may not hold an input
    code, _, err = run_cli(["report", "--per-pair", tmp_path / "pairs.jsonl", "--gt", g,
                            "--out", tmp_path], capsys)
    assert code == 2 and "--out holds an input" in err
