"""Reports keep every metric (issue 25 §6): `eval merge` of shards equals the single pass for
EVERY key the single pass has (loc_acc included); the leaderboard shows every metric some report
has; a metric whose denominator is empty is None (null in JSON) everywhere, breakdown buckets
included."""

import json

import numpy as np

import grdkit
from grdkit.builders import build_dataset
from grdkit.export import write_dataset
from grdkit.format import masks
from grdkit.testing.synth import demo_root

from .conftest import run_cli


def _demo(tmp_path):
    datasets, report = build_dataset("g-refcocog", demo_root(), "umd", 2, 1.0, "random", 0)
    write_dataset(datasets, tmp_path / "demo", report.notes())
    return tmp_path / "demo" / "val.json"


def _preds_with_peaks(ds):
    """Half of the positive pairs predicted right; every pair carries an LTS-style peak: inside
    the ground truth for every third positive pair, at (0, 0) otherwise."""
    out = []
    pos = 0
    for t in ds.targets:
        rec = {"expression_id": t.expression_id, "image_id": t.image_id, "segmentation": None}
        peak = [0, 0]
        if t.positive:
            pos += 1
            if pos % 2:
                rec["segmentation"] = t.segmentation
            if pos % 3 == 0:
                ys, xs = np.nonzero(masks.decode(t.segmentation))
                peak = [int(xs[0]), int(ys[0])]
        rec["peak"] = peak
        out.append(rec)
    return out


def _flatten(d, prefix=""):
    """{"a.b.c": leaf} of a nested report."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_merge_equals_the_single_pass_for_every_key(tmp_path, capsys):
    gt = _demo(tmp_path)
    ds = grdkit.load_dataset(gt)
    preds = _preds_with_peaks(ds)
    whole, a, b = (tmp_path / f"{n}.json" for n in ("whole", "a", "b"))
    whole.write_text(json.dumps(preds))
    a.write_text(json.dumps(preds[::2]))
    b.write_text(json.dumps(preds[1::2]))
    assert run_cli(["eval", whole, "--gt", gt, "--json", tmp_path / "single.json", "-q"],
                   capsys)[0] == 0
    for n in ("a", "b"):
        assert run_cli(["eval", tmp_path / f"{n}.json", "--gt", gt, "--save-state",
                        tmp_path / f"{n}.npz", "-q"], capsys)[0] == 0
    assert run_cli(["eval", "merge", tmp_path / "a.npz", tmp_path / "b.npz", "--gt", gt,
                    "--json", tmp_path / "merged.json", "-q"], capsys)[0] == 0
    single = json.loads((tmp_path / "single.json").read_text())
    merged = json.loads((tmp_path / "merged.json").read_text())
    # loc_acc by hand: every third positive pair's peak is inside its ground truth
    n_pos = sum(t.positive for t in ds.targets)
    assert single["counts"]["loc_pairs"] == n_pos
    assert single["metrics"]["loc_acc"] == 100.0 * (n_pos // 3) / n_pos
    flat_s, flat_m = _flatten(single), _flatten(merged)
    for key, value in flat_s.items():
        if key.startswith("config."):  # the inputs' names differ by construction
            continue
        assert key in flat_m, key
        assert flat_m[key] == value, key


def test_empty_denominators_are_null_in_every_place(tmp_path, capsys):
    gt = _demo(tmp_path)
    ds = grdkit.load_dataset(gt)
    perfect = [{"expression_id": t.expression_id, "image_id": t.image_id,
                "segmentation": t.segmentation if t.positive else None} for t in ds.targets]
    p = tmp_path / "p.json"
    p.write_text(json.dumps(perfect))
    code, out, _ = run_cli(["eval", p, "--gt", gt, "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    no_target = rep["breakdowns"]["by_target_type"]["no-target"]
    # only no-target pairs, all predicted right: nothing to segment, nothing predicted
    assert no_target["counts"]["positives"] == 0 and no_target["counts"]["pairs"] > 0
    assert no_target["metrics"]["ciou"] is None and no_target["metrics"]["t_acc"] is None
    assert no_target["metrics"]["n_acc"] == 100.0
    row = next(x for x in out.splitlines() if x.startswith("│ no-target"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells == ["no-target", str(no_target["counts"]["pairs"]), "0",
                     str(no_target["counts"]["negatives"]), "100.00", "-", "100.00", "-"]


def test_leaderboard_shows_every_metric_some_report_has(tmp_path, capsys):
    gt = _demo(tmp_path)
    ds = grdkit.load_dataset(gt)
    with_peaks = tmp_path / "lts.json"
    with_peaks.write_text(grdkit.evaluate(_preds_with_peaks(ds), gt).to_json())
    plain = tmp_path / "grser.json"
    plain.write_text(grdkit.evaluate([], gt).to_json())
    code, out, _ = run_cli(["leaderboard", with_peaks, plain, "--format", "json"], capsys)
    assert code == 0
    rows = {r["method"]: r for r in json.loads(out)}
    assert rows["lts"]["loc_acc"] == json.loads(with_peaks.read_text())["metrics"]["loc_acc"]
    assert rows["grser"]["loc_acc"] is None
    code, out, _ = run_cli(["leaderboard", with_peaks, plain], capsys)
    assert "loc_acc" in out
