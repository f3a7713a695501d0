"""Co-SOD metrics under both protocols: independent references, hand-computed cases, real data.

``ecs_reference`` below is a plain per-pixel transcription of zzhanghub/eval-co-sod's definitions
(evaluator.py: _eval_pr, _eval_e, _eval_roc, Eval_Smeasure, Eval_AP, Eval_auc), one threshold
at a time; it shares no code with grdkit. The pysodmetrics protocol is compared with the
PySODMetrics classes themselves, stepped over all pairs.
"""

import json

import numpy as np
import py_sod_metrics as sod
import pytest
from PIL import Image as PILImage
from PIL import ImageFilter

import grdkit
from grdkit import masks
from grdkit.evaluators.predictions import Prediction

from .conftest import cow_dataset, dataset_from_dense, run_cli

TH = np.linspace(0, 1 - 1e-10, 255)


# -- independent reference of eval-co-sod ------------------------------------------------------
def _obj(v):
    x = v.mean()
    s = v.std(ddof=1) if v.size > 1 else 0.0
    return 2 * x / (x * x + 1 + s + 1e-20)


def _ssim(p, g):
    n = p.size
    x, y = p.mean(), g.mean()
    vx = ((p - x) ** 2).sum() / (n - 1 + 1e-20)
    vy = ((g - y) ** 2).sum() / (n - 1 + 1e-20)
    cxy = ((p - x) * (g - y)).sum() / (n - 1 + 1e-20)
    a = 4 * x * y * cxy
    b = (x * x + y * y) * (vx + vy)
    return a / (b + 1e-20) if a != 0 else (1.0 if b == 0 else 0.0)


def ecs_s(p, g):
    m = g.mean()
    if m == 0:
        return 1 - p.mean()
    if m == 1:
        return p.mean()
    so = m * _obj(p[g == 1]) + (1 - m) * _obj((1 - p)[g == 0])
    h, w = g.shape
    X = int(np.round(sum(g[:, j].sum() * j for j in range(w)) / g.sum() + 1e-20))
    Y = int(np.round(sum(g[i, :].sum() * i for i in range(h)) / g.sum() + 1e-20))
    w1, w2, w3 = X * Y / (h * w), (w - X) * Y / (h * w), X * (h - Y) / (h * w)
    parts = [(w1, p[:Y, :X], g[:Y, :X]), (w2, p[:Y, X:], g[:Y, X:]),
             (w3, p[Y:, :X], g[Y:, :X]), (1 - w1 - w2 - w3, p[Y:, X:], g[Y:, X:])]
    sr = sum(wt * _ssim(a, b) for wt, a, b in parts if a.size)
    return max(0.5 * so + 0.5 * sr, 0.0)


def ecs_reference(pairs):
    """pairs: [(pred uint8, gt bool) or (None, gt) for a missing prediction]."""
    mae, S, F, P, R, E, TPR, FPR = [], [], [], [], [], [], [], []
    for pred, gt in pairs:
        if pred is None:  # skipped, like files absent from the prediction folder
            continue
        x = pred / 255.0
        y = gt.astype(float)
        mae.append(np.abs(x - y).mean())
        p = (x - x.min()) / (x.max() - x.min() + 1e-20)
        S.append(ecs_s(p, y))
        pr, rc, e, tpr, fpr = [], [], [], [], []
        for t in TH:
            b = (p >= t).astype(float)
            tp = (b * y).sum()
            pr.append(tp / (b.sum() + 1e-20))
            rc.append(tp / (y.sum() + 1e-20))
            fm, gg = b - b.mean(), y - y.mean()
            al = 2 * gg * fm / (gg * gg + fm * fm + 1e-20)
            e.append(((al + 1) ** 2 / 4).sum() / (y.size - 1 + 1e-20))
            fp, tn, fn = (b * (1 - y)).sum(), ((1 - b) * (1 - y)).sum(), ((1 - b) * y).sum()
            tpr.append(tp / (tp + fn + 1e-20))
            fpr.append(fp / (fp + tn + 1e-20))
        pr, rc = np.array(pr), np.array(rc)
        with np.errstate(invalid="ignore"):
            f = 1.3 * pr * rc / (0.3 * pr + rc)
        f[np.isnan(f)] = 0
        F.append(f), P.append(pr), R.append(rc), E.append(e), TPR.append(tpr), FPR.append(fpr)
    F, P, R, E = (np.mean(a, axis=0) for a in (F, P, R, E))
    TPR, FPR = np.mean(TPR, axis=0), np.mean(FPR, axis=0)
    # AP: VOC precision envelope
    r = np.concatenate(([0.0], R, [1.0]))
    pp = np.concatenate(([0.0], P, [0.0]))
    o = np.argsort(r, kind="stable")
    r, pp = r[o], pp[o]
    for i in range(len(pp) - 1, 0, -1):
        pp[i - 1] = max(pp[i - 1], pp[i])
    idx = np.where(r[1:] != r[:-1])[0]
    ap = np.sum((r[idx + 1] - r[idx]) * pp[idx + 1])
    o = np.argsort(FPR, kind="stable")
    auc = sum((FPR[o][k + 1] - FPR[o][k]) * (TPR[o][k + 1] + TPR[o][k]) / 2
              for k in range(len(o) - 1))
    return {"mae": np.mean(mae), "s_measure": np.mean(S), "f_max": F.max(), "f_mean": F.mean(),
            "e_max": E.max(), "e_measure": E.mean(), "ap": ap, "auc": auc,
            "f_adaptive": None, "f_weighted": None, "e_adaptive": None}


def pysod_reference(pairs):
    """pysodmetrics itself, stepped over every pair (a missing prediction = an all-zero map)."""
    mae, sm, em, wfm = sod.MAE(), sod.Smeasure(), sod.Emeasure(), sod.WeightedFmeasure()
    fm = sod.FmeasureV2(metric_handlers={"fm": sod.FmeasureHandler(
        with_dynamic=True, with_adaptive=True, beta=0.3)})
    for pred, gt in pairs:
        pred = np.zeros(gt.shape, np.uint8) if pred is None else pred
        g = np.where(gt, 255, 0).astype(np.uint8)
        for m in (mae, sm, em, wfm, fm):
            m.step(pred=pred, gt=g)
    f = fm.get_results()["fm"]
    e = em.get_results()["em"]
    return {"mae": mae.get_results()["mae"], "s_measure": sm.get_results()["sm"],
            "f_max": f["dynamic"].max(), "f_mean": f["dynamic"].mean(),
            "f_adaptive": f["adaptive"], "f_weighted": wfm.get_results()["wfm"],
            "e_max": e["curve"].max(), "e_measure": e["curve"].mean(), "e_adaptive": e["adp"],
            "ap": None, "auc": None}


def soft_case(seed, n_groups=3, h=12, w=15):
    """Random GT (some empty, some full) and soft maps of every awkward kind; some missing."""
    rng = np.random.default_rng(seed)
    groups, soft = [], {}
    img = 0
    for g in range(1, n_groups + 1):
        gts = []
        for _ in range(int(rng.integers(2, 6))):
            img += 1
            k = rng.random()
            gt = (np.zeros((h, w), bool) if k < 0.3 else np.ones((h, w), bool) if k < 0.35
                  else rng.random((h, w)) < rng.uniform(0.1, 0.6))
            gts.append(gt)
            u = rng.random()
            if u < 0.1:
                pred = None  # missing
            elif u < 0.2:
                pred = np.full((h, w), int(rng.integers(0, 256)), np.uint8)  # constant
            elif u < 0.35:
                pred = (rng.random((h, w)) * 100).astype(np.uint8)  # faint (< 128)
            elif u < 0.5:
                pred = (gt * 255).astype(np.uint8)
            else:
                pred = (rng.random((h, w)) * 256).astype(np.uint8)
            soft[(g, img)] = pred
        groups.append(gts)
    ds = dataset_from_dense(groups)
    pairs = [(soft[(t.expression_id, t.image_id)], masks.decode(t.segmentation).astype(bool))
             for t in ds.targets]
    return ds, soft, pairs


def soft_preds(soft):
    return [Prediction("val", e, i, masks.encode(m >= 128) if (m >= 128).any() else None,
                       None, m) for (e, i), m in soft.items() if m is not None]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("protocol", ["eval-co-sod", "pysodmetrics"])
def test_cosod_matches_independent_reference(seed, protocol):
    ds, soft, pairs = soft_case(seed)
    r = grdkit.evaluate(soft_preds(soft), ds, cosod=True, cosod_protocol=protocol)
    ref = (ecs_reference if protocol == "eval-co-sod" else pysod_reference)(pairs)
    for k, v in ref.items():
        if v is None:
            assert r.metrics[k] is None, k
        else:
            assert r.metrics[k] == pytest.approx(float(v), abs=1e-10), k
    n_missing = sum(m is None for m in soft.values())
    if protocol == "eval-co-sod":
        assert r.counts["cosod_skipped"] == n_missing
    else:
        assert "cosod_skipped" not in r.counts


def test_pysod_curves_equal_the_library_curves():
    ds, soft, pairs = soft_case(3)
    r = grdkit.evaluate(soft_preds(soft), ds, cosod=True)
    em = sod.Emeasure()
    fm = sod.FmeasureV2(metric_handlers={
        "fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=0.3),
        "p": sod.PrecisionHandler(with_dynamic=True, with_adaptive=False),
        "r": sod.RecallHandler(with_dynamic=True, with_adaptive=False)})
    for pred, gt in pairs:
        pred = np.zeros(gt.shape, np.uint8) if pred is None else pred
        em.step(pred=pred, gt=np.where(gt, 255, 0).astype(np.uint8))
        fm.step(pred=pred, gt=np.where(gt, 255, 0).astype(np.uint8))
    res = fm.get_results()
    # the library's curves run from threshold 255 down to 0; grdkit's ascend
    np.testing.assert_allclose(r.curves["f"], np.flip(res["fm"]["dynamic"]), atol=1e-12)
    np.testing.assert_allclose(r.curves["precision"], np.flip(res["p"]["dynamic"]), atol=1e-12)
    np.testing.assert_allclose(r.curves["recall"], np.flip(res["r"]["dynamic"]), atol=1e-12)
    np.testing.assert_allclose(r.curves["e"], np.flip(em.get_results()["em"]["curve"]),
                               atol=1e-12)


def _one_pair(gt, pred, protocol):
    ds = dataset_from_dense([[gt]])
    p = [Prediction("val", 1, 1, masks.encode(pred >= 128) if (pred >= 128).any() else None,
                    None, pred)]
    return grdkit.evaluate(p, ds, cosod=True, cosod_protocol=protocol).metrics


def test_hand_computed_perfect_2x2():
    gt = np.array([[1, 0], [0, 0]], bool)
    pred = np.array([[255, 0], [0, 0]], np.uint8)
    m = _one_pair(gt, pred, "eval-co-sod")
    # threshold 0 selects all 4 pixels: P 1/4, R 1 -> F = 1.3 * 0.25 / (0.075 + 1); others F 1
    f0 = 1.3 * 0.25 / 1.075
    assert m["f_max"] == pytest.approx(1.0)
    assert m["f_mean"] == pytest.approx((f0 + 254) / 255)
    # E: at threshold 0 the binary map is constant -> align 0 -> 4 x 0.25 / 3; else 4 x 1 / 3
    assert m["e_max"] == pytest.approx(4 / 3)
    assert m["e_measure"] == pytest.approx((1 / 3 + 254 * 4 / 3) / 255)
    assert m["mae"] == 0.0 and m["ap"] == pytest.approx(1.0) and m["auc"] == pytest.approx(1.0)
    assert m["f_adaptive"] is None and m["f_weighted"] is None and m["e_adaptive"] is None


def test_hand_computed_empty_gt_protocols_differ():
    gt = np.zeros((2, 2), bool)
    pred = np.zeros((2, 2), np.uint8)  # a perfect empty prediction
    ecs = _one_pair(gt, pred, "eval-co-sod")
    pys = _one_pair(gt, pred, "pysodmetrics")
    # eval-co-sod: no empty-GT case -> every pixel 0.25 -> 1/3 at every threshold
    assert ecs["e_max"] == pytest.approx(1 / 3) and ecs["e_measure"] == pytest.approx(1 / 3)
    # pysodmetrics: correctly labelled pixels / (N - 1): 4/3 except at threshold 0 (all fg: 0)
    assert pys["e_max"] == pytest.approx(4 / 3)
    assert pys["e_measure"] == pytest.approx(255 * (4 / 3) / 256)
    assert ecs["f_max"] == pys["f_max"] == 0.0  # recall undefined -> F 0
    assert ecs["s_measure"] == pys["s_measure"] == 1.0


def test_faint_map_scored_as_submitted():
    """A map with no pixel >= 128 is 'no target' for GRES but scored as is by Co-SOD."""
    gt = np.zeros((4, 5), bool)
    gt[1:3, 1:4] = True
    faint = (gt * 100).astype(np.uint8)  # max 100 < 128
    for protocol in ("eval-co-sod", "pysodmetrics"):
        m = _one_pair(gt, faint, protocol)
        assert m["gres_miou"] == 0.0 and m["t_acc"] == 0.0  # a false negative for GRES
        assert m["f_max"] == pytest.approx(1.0)  # min-max normalised: a perfect map
        assert m["s_measure"] == pytest.approx(1.0)
    # MAE: eval-co-sod compares the raw map (100/255 off on 6 pixels of 20)
    assert _one_pair(gt, faint, "eval-co-sod")["mae"] == pytest.approx(6 * (155 / 255) / 20)
    assert _one_pair(gt, faint, "pysodmetrics")["mae"] == 0.0


def test_rle_below_min_pixels_is_still_scored_by_cosod():
    gt = np.zeros((5, 5), bool)
    gt[0, 0] = True
    ds = dataset_from_dense([[gt]])
    p = [{"expression_id": 1, "image_id": 1, "segmentation": masks.encode(gt)}]
    r = grdkit.evaluate(p, ds, cosod=True, min_pixels=3)
    assert r.counts["fn"] == 1 and r.metrics["mae"] == 0.0 and r.metrics["f_max"] == 1.0


def test_missing_predictions_protocols(tmp_path):
    ds, soft, pairs = soft_case(2)
    preds = soft_preds(soft)
    ecs = grdkit.evaluate(preds, ds, cosod=True, cosod_protocol="eval-co-sod")
    n_missing = sum(m is None for m in soft.values())
    assert n_missing > 0 and ecs.counts["cosod_skipped"] == n_missing
    # skipping == evaluating only the predicted pairs' ground truth
    kept = [(m, g) for m, g in pairs if m is not None]
    assert ecs.metrics["f_max"] == pytest.approx(ecs_reference(kept)["f_max"], abs=1e-12)


def test_shards_merge_exactly_with_cosod(tmp_path, capsys):
    ds, soft, _ = soft_case(4, n_groups=4)
    gt = tmp_path / "val.json"
    grdkit.save_dataset(ds, gt)
    folder = tmp_path / "soft"
    for (e, i), m in soft.items():
        if m is not None:
            (folder / str(e)).mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(m).save(folder / str(e) / f"{i}.png")
    for protocol in ("eval-co-sod", "pysodmetrics"):
        one = tmp_path / f"one-{protocol}.json"
        code, _, err = run_cli(["eval", folder, "--gt", gt, "--cosod", "--cosod-protocol",
                                protocol, "--json", one, "--curves", tmp_path / "c1"], capsys)
        assert code == 0, err
        states = []
        for k, groups in enumerate(([1, 2], [3, 4])):
            part = tmp_path / f"part{k}"
            for g in groups:
                if (folder / str(g)).exists():
                    (part / str(g)).mkdir(parents=True, exist_ok=True)
                    for f in (folder / str(g)).iterdir():
                        (part / str(g) / f.name).write_bytes(f.read_bytes())
            st = tmp_path / f"s{k}-{protocol}.npz"
            code, _, err = run_cli(["eval", part, "--gt", gt, "--cosod", "--cosod-protocol",
                                    protocol, "--save-state", st], capsys)
            assert code == 0, err
            states.append(st)
        merged = tmp_path / f"merged-{protocol}.json"
        code, _, err = run_cli(["eval", "merge", *states, "--gt", gt, "--json", merged,
                                "--curves", tmp_path / "c2"], capsys)
        assert code == 0, err
        a, b = json.loads(one.read_text()), json.loads(merged.read_text())
        for k in ("metrics", "counts", "per_split", "per_group", "breakdowns"):
            assert a[k] == b[k], (protocol, k)
        assert b["config"]["cosod_protocol"] == protocol
        for f in ("pr_curve.csv", "f_curve.csv", "e_curve.csv", "roc_curve.csv"):
            assert (tmp_path / "c1" / f).read_text() == (tmp_path / "c2" / f).read_text()
    # shards of different Co-SOD protocols do not merge
    code, _, err = run_cli(["eval", "merge", tmp_path / "s0-eval-co-sod.npz",
                            tmp_path / "s1-pysodmetrics.npz", "--gt", gt], capsys)
    assert code == 2 and "cosod_protocol" in err


def test_curves_files(tmp_path, capsys):
    ds, soft, _ = soft_case(2)
    r = grdkit.evaluate(soft_preds(soft), ds, cosod=True, cosod_protocol="eval-co-sod")
    written = grdkit.evaluators.write_curves(r, tmp_path / "curves")
    assert sorted(p.name for p in written) == sorted(
        ["pr_curve.csv", "f_curve.csv", "e_curve.csv", "roc_curve.csv", "pr_curve.png",
         "f_curve.png", "e_curve.png"])
    import pandas as pd

    f = pd.read_csv(tmp_path / "curves" / "f_curve.csv")
    assert len(f) == 255 and f["f"].max() == pytest.approx(r.metrics["f_max"], abs=1e-9)
    assert f["threshold"].is_monotonic_increasing
    with PILImage.open(tmp_path / "curves" / "pr_curve.png") as im:
        assert im.size == (480, 360)
        px = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    # matplotlib's tab:blue line is drawn, and the PNG is byte-deterministic
    assert (np.abs(px - [31, 119, 180]).sum(1) < 30).sum() > 100
    again = grdkit.evaluators.write_curves(r, tmp_path / "again")
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(written, again))
    assert set(r.frames()["curves"].columns) >= {"threshold", "precision", "recall", "f", "e"}
    # --curves without --cosod is a usage error
    gt = tmp_path / "val.json"
    grdkit.save_dataset(ds, gt)
    code, _, _ = run_cli(["eval", tmp_path / "none", "--gt", gt, "--curves", tmp_path / "x"],
                         capsys)
    assert code == 2


def test_curves_without_matplotlib_write_the_csvs_and_say_why(tmp_path, capsys, monkeypatch):
    import grdkit.plots

    ds, soft, _ = soft_case(2)
    r = grdkit.evaluate(soft_preds(soft), ds, cosod=True)
    monkeypatch.setattr(grdkit.plots, "pyplot", lambda: None)
    monkeypatch.setattr(grdkit.evaluators.curves, "pyplot", lambda: None)
    written = grdkit.evaluators.write_curves(r, tmp_path / "curves")
    assert sorted(p.suffix for p in written) == [".csv"] * 4
    gt, preds = tmp_path / "val.json", tmp_path / "pngs"
    grdkit.save_dataset(ds, gt)
    for (e, i), m in soft.items():  # the soft maps as a PNG folder
        if m is not None:
            (preds / str(e)).mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(m).save(preds / str(e) / f"{i}.png")
    code, out, err = run_cli(["eval", preds, "--gt", gt, "--cosod", "--curves",
                              tmp_path / "c"], capsys)
    assert code == 0, err
    assert "no PNG: matplotlib is not installed" in " ".join(out.split())


# -- the real MSRC cow group -----------------------------------------------------------------
def cow_soft_maps():
    """Blurred, shifted GT on positives (every 4th one faint: scaled to max 100 < 128); a faint
    false alarm on every 3rd negative, nothing on the others."""
    ds = cow_dataset()
    maps = {}
    for k, t in enumerate(ds.targets):
        im = ds.image(t.image_id)
        gt = masks.decode(t.segmentation).astype(bool)
        if t.positive:
            pil = PILImage.fromarray((np.roll(gt, 6, axis=1) * 255).astype(np.uint8))
            arr = np.asarray(pil.filter(ImageFilter.GaussianBlur(4)), np.uint8)
            if k % 4 == 0:
                arr = (arr.astype(np.float64) * 100 / max(int(arr.max()), 1)).astype(np.uint8)
        else:
            arr = np.zeros((im.height, im.width), np.uint8)
            if k % 3 == 0:
                arr[10:40, 10:60] = 90
        maps[(t.expression_id, t.image_id)] = (arr, gt)
    return ds, maps


def test_eval_co_sod_on_real_cow_group():
    ds, maps = cow_soft_maps()
    split = ds.split
    preds = [Prediction(split, e, i, masks.encode(a >= 128) if (a >= 128).any() else None,
                        None, a) for (e, i), (a, _) in maps.items()]
    got = {}
    for protocol in ("eval-co-sod", "pysodmetrics"):
        r = grdkit.evaluate(preds, ds, cosod=True, cosod_protocol=protocol)
        got[protocol] = {k: round(v, 4) for k, v in r.metrics.items()
                         if k in COW_GOLDEN[protocol]}
    assert got == COW_GOLDEN
    # the independent references agree on a subset (the plain reference is slow)
    sub = list(maps.items())[::5]
    sub_preds = [Prediction(split, e, i, masks.encode(a >= 128) if (a >= 128).any() else None,
                            None, a) for (e, i), (a, _) in sub]
    for protocol, ref_fn in (("eval-co-sod", ecs_reference), ("pysodmetrics", pysod_reference)):
        ev = grdkit.evaluators.GresEvaluator(ds, cosod=True, cosod_protocol=protocol)
        ev.process(sub_preds)
        r = ev.evaluate()
        predicted = {k for k, _ in sub}
        ref = ref_fn([(a, g) for _, (a, g) in sub] + [  # pysod: missing = zeros; e-c-s: skip
            (None, g) for k, (_, g) in maps.items() if k not in predicted])
        for k, v in ref.items():
            if v is not None:
                assert r.metrics[k] == pytest.approx(float(v), abs=1e-9), (protocol, k)


def test_faint_maps_bug_on_real_cow_group():
    """Before the fix a map with no pixel >= 128 was scored as all zeros by Co-SOD."""
    ds, maps = cow_soft_maps()
    split = ds.split
    now = [Prediction(split, e, i, masks.encode(a >= 128) if (a >= 128).any() else None, None,
                      a) for (e, i), (a, _) in maps.items()]
    old = [Prediction(p.split, p.expression_id, p.image_id, p.rle, None,
                      p.soft if p.rle is not None else np.zeros_like(p.soft)) for p in now]
    f_now = grdkit.evaluate(now, ds, cosod=True).metrics["f_max"]
    f_old = grdkit.evaluate(old, ds, cosod=True).metrics["f_max"]
    assert (round(f_old, 4), round(f_now, 4)) == COW_FAINT_FMAX


# pinned on the real MSRC cow group (30 cows + 33 COCO negatives), cow_soft_maps() above
COW_GOLDEN = {
    "eval-co-sod": {"mae": 0.0395, "f_max": 0.4399, "f_mean": 0.4195, "e_max": 0.5883,
                    "e_measure": 0.5736, "s_measure": 0.958, "ap": 0.2216, "auc": 0.4741},
    "pysodmetrics": {"mae": 0.0263, "f_max": 0.4399, "f_mean": 0.4193, "f_adaptive": 0.4227,
                     "f_weighted": 0.4092, "e_max": 0.9802, "e_measure": 0.9633,
                     "e_adaptive": 0.6267, "s_measure": 0.9579},
}
COW_FAINT_FMAX = (0.3235, 0.4399)  # (faint maps zeroed as before the fix, scored as submitted)


def test_soft_map_of_wrong_size_is_named():
    ds = dataset_from_dense([[np.zeros((4, 5), bool)]])
    bad = [Prediction("val", 1, 1, None, None, np.zeros((5, 4), np.uint8))]
    with pytest.raises(grdkit.errors.InputError, match=r"predictions\[0\].*soft map"):
        grdkit.evaluate(bad, ds, cosod=True)
