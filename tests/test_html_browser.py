"""The HTML report in a real browser (issue 28 §5): headless Chromium opens it from file://.

The report comes from a real run: LTS trained for a few steps (tiny size, CPU) on the real MSRC
cow group with the real COCO images as negatives, predicted, and evaluated with ``--html``. The
browser is Debian's ``chromium`` driven by Playwright's Python API with ``executable_path`` (no
browser build is ever downloaded). Without a Chromium the tests skip, except in CI (``CI`` set),
where they fail: ``.ci/run`` installs it.

Screenshots of every page go to ``$GRDKIT_SCREENSHOT_DIR`` or the test's temporary folder.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

import grdkit

from .conftest import COCO_IMAGES, SHARED, cow_dataset, need

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGES = ["index.html", "pairs.html", "gallery-worst.html", "gallery-false-alarms.html",
         "gallery-missed.html", "groups.html", "groups/0.html"]


def chromium() -> str:
    """Debian's Chromium, or skip (fail in CI: .ci/run installs it)."""
    found = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"),
                              shutil.which("chromium-browser")) if p and Path(p).exists()), None)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        found = None
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: install Debian's chromium and the "
                        "browser extra (.ci/run does)")
        pytest.skip("no Chromium (Debian's chromium package) or no playwright")
    return found


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    """LTS trained briefly on the cow group, predicted and evaluated with --html."""
    need(COCO_IMAGES)
    tmp = tmp_path_factory.mktemp("report")
    ds = cow_dataset()
    data = tmp / "cow.json"
    grdkit.save_dataset(ds, data)
    run = tmp / "run"
    from grdkit.cli.main import main

    def cli(*argv):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in argv])
        assert e.value.code == 0, argv

    cli("train", "lts", "--data", data, "--img-root", SHARED, "--out", run, "--size", "64",
        "--group-size", "4", "--width", "16", "--d-k", "16", "--epochs", "1", "--max-steps",
        "3", "--workers", "0", "--no-progress")
    preds = tmp / "preds.json"
    cli("predict", "--checkpoint", run, "--data", data, "--img-root", SHARED, "--out", preds,
        "--no-progress")
    html = tmp / "html"
    cli("eval", preds, "--gt", data, "--html", html, "--img-root", SHARED, "--per-pair",
        tmp / "pairs.jsonl", "--names", "gres", "--json", tmp / "report.json")
    rows = [json.loads(x) for x in (tmp / "pairs.jsonl").read_text().splitlines()]
    return {"html": html, "rows": rows, "ds": ds, "tmp": tmp}


@pytest.fixture(scope="module")
def browser():
    exe = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1200, "height": 900})
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("requestfailed", lambda r: pg.errors.append(f"failed {r.url}"))
    yield pg
    pg.close()


def _open(page, html: Path, name: str):
    page.goto((html / name).as_uri())
    page.wait_for_load_state("load")


def _shot_dir(tmp: Path) -> Path:
    d = Path(os.environ.get("GRDKIT_SCREENSHOT_DIR") or tmp / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _not_blank(png: Path, page) -> None:
    """A page with real content: text on it, and a screenshot that is not one flat colour."""
    from PIL import Image

    assert len(page.inner_text("main").strip()) > 40, "blank page: no text"
    colours = Image.open(png).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 20, "blank page: the screenshot is flat"


def test_every_page_loads_without_errors_and_every_image_shows(real_report, page):
    html = real_report["html"]
    shots = _shot_dir(real_report["tmp"])
    for name in PAGES:
        _open(page, html, name)
        # lazy images below the fold load too, then every one must have decoded pixels
        page.evaluate("Array.from(document.images).forEach(i => { i.loading = 'eager'; })")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        broken = page.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0))"
                               ".map(i => i.getAttribute('src'))")
        assert broken == [], (name, broken)
        png = shots / f"{name.replace('/', '_')}.png"
        page.screenshot(path=str(png), full_page=True)
        _not_blank(png, page)
        # nothing fetched from the network: every link and source is relative
        assert not page.evaluate("Array.from(document.querySelectorAll('[src],[href]'))"
                                 ".some(e => /^(https?:)?\\/\\//.test(e.getAttribute('src') || "
                                 "e.getAttribute('href')))"), name
    assert page.errors == []
    assert len(list((html / "thumbs").glob("*.jpg"))) == 63  # every pair drawn


def test_sorting_by_iou_puts_the_worst_pair_first(real_report, page):
    _open(page, real_report["html"], "pairs.html")
    page.click("th[data-col=iou]")
    first = page.locator("#pairs tbody tr").first
    worst = min(r["iou"] for r in real_report["rows"])
    assert float(first.get_attribute("data-iou")) == pytest.approx(worst, abs=1e-6)
    page.click("th[data-col=iou]")  # again: descending
    best = max(r["iou"] for r in real_report["rows"])
    assert float(page.locator("#pairs tbody tr").first.get_attribute("data-iou")) == \
        pytest.approx(best, abs=1e-6)
    assert page.errors == []


def test_the_outcome_filter_shows_only_false_alarms(real_report, page):
    _open(page, real_report["html"], "pairs.html")
    n_fp = sum(r["outcome"] == "FP" for r in real_report["rows"])
    assert n_fp > 0  # the briefly trained model predicts the cow on COCO negatives too
    page.select_option("#filter-outcome", "FP")
    outcomes = page.eval_on_selector_all("#pairs tbody tr",
                                         "rs => rs.map(r => r.getAttribute('data-outcome'))")
    assert outcomes and set(outcomes) == {"FP"} and len(outcomes) == min(n_fp, 100)
    assert f"({n_fp} of 63 pairs)" in page.inner_text("#page-info")
    # a text no expression holds: no row; the IoU range keeps what it says
    page.fill("#filter-text", "zebra")
    assert page.locator("#pairs tbody tr").count() == 0
    page.fill("#filter-text", "")
    page.select_option("#filter-outcome", "")
    page.fill("#filter-iou-max", "0.2")
    ious = [float(x) for x in page.eval_on_selector_all(
        "#pairs tbody tr", "rs => rs.map(r => r.getAttribute('data-iou'))")]
    assert len(ious) == sum(r["iou"] <= 0.2 for r in real_report["rows"]) and max(ious) <= 0.2
    # the summary's FP count links to the table already filtered
    _open(page, real_report["html"], "index.html")
    page.click(f"text=FP {n_fp}")
    page.wait_for_load_state("load")
    assert set(page.eval_on_selector_all(
        "#pairs tbody tr", "rs => rs.map(r => r.getAttribute('data-outcome'))")) == {"FP"}
    assert page.errors == []


def test_pages_of_a_larger_table(browser, tmp_path):
    """250 pairs: 100 rows a page, the pager moves, sorting spans every page."""
    import numpy as np

    from grdkit import masks
    from grdkit.evaluators import evaluate
    from grdkit.html import write_html_report

    from .conftest import dataset_from_dense

    rng = np.random.default_rng(0)
    groups = []
    for _ in range(25):
        g = []
        for k in range(10):
            m = np.zeros((24, 32), bool)
            if k % 2 == 0:
                y, x = rng.integers(0, 12), rng.integers(0, 16)
                m[y:y + 10, x:x + 14] = True
            g.append(m)
        groups.append(g)
    ds = dataset_from_dense(groups)
    preds = []
    for t in ds.targets:
        m = masks.decode(t.segmentation).astype(bool)
        preds.append({"expression_id": t.expression_id, "image_id": t.image_id,
                      "segmentation": masks.encode(np.roll(m, t.image_id % 5, 1))
                      if m.any() else None})
    rep = evaluate(preds, ds, per_pair=True)
    write_html_report(rep, rep.pairs, {ds.split: ds}, tmp_path / "html",
                      pred_masks=rep.pair_masks, max_thumbs=10)
    pg = browser.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto((tmp_path / "html" / "pairs.html").as_uri())
    assert pg.locator("#pairs tbody tr").count() == 100
    assert "page 1 of 3 (250 of 250 pairs)" in pg.inner_text("#page-info")
    pg.click("th[data-col=iou]")
    pg.click("#next")
    pg.click("#next")
    assert pg.locator("#pairs tbody tr").count() == 50
    assert "page 3 of 3" in pg.inner_text("#page-info") and pg.is_disabled("#next")
    last = [float(x) for x in pg.eval_on_selector_all(
        "#pairs tbody tr", "rs => rs.map(r => r.getAttribute('data-iou'))")]
    assert last[-1] == pytest.approx(rep.pairs["iou"].max(), abs=1e-6)
    assert last == sorted(last)
    assert errors == []
    pg.close()


def test_a_group_page_shows_every_image_of_the_group(real_report, page):
    ds = real_report["ds"]
    _open(page, real_report["html"], "groups/0.html")
    page.evaluate("Array.from(document.images).forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    n_images = len(ds.groups[0].image_ids)
    assert page.locator(".tile").count() == n_images == 63
    assert page.evaluate("Array.from(document.images).filter(i => i.naturalWidth > 0)"
                         ".length") == n_images
    assert "cow" in page.inner_text("h2")
    assert page.errors == []
