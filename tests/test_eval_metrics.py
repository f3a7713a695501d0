"""Metrics: hand-computed cases, an independent dense reference, properties and golden values."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import grdkit
from grdkit import masks
from grdkit.evaluators import GresEvaluator
from grdkit.evaluators.functional import METRICS

from .conftest import dataset_from_dense
from .dense_reference import dense_metrics


def preds_from_dense(ds, dense_preds):
    """dense_preds: {(expression_id, image_id): bool mask or None}."""
    return [{"expression_id": e, "image_id": i,
             "segmentation": None if m is None else masks.encode(m)}
            for (e, i), m in dense_preds.items()]


def box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_hand_computed_four_cases():
    z = np.zeros((4, 4), bool)
    gt_tp = box(4, 4, 0, 2, 0, 2)      # 4 px
    pr_tp = box(4, 4, 0, 2, 0, 1)      # 2 px inside: I 2, U 4 -> IoU 0.5
    gt_fn = box(4, 4, 0, 1, 0, 4)      # 4 px, predicted empty
    pr_fp = box(4, 4, 3, 4, 0, 3)      # 3 px on a negative
    ds = dataset_from_dense([[gt_tp, z, z, gt_fn]])
    preds = preds_from_dense(ds, {(1, 1): pr_tp, (1, 2): None, (1, 3): pr_fp, (1, 4): None})
    r = grdkit.evaluate(preds, ds)
    m = r.metrics
    assert m["gres_miou"] == pytest.approx((0.5 + 1 + 0 + 0) / 4 * 100)
    assert m["giou"] == m["gres_miou"]
    assert m["res_miou"] == pytest.approx(25.0)
    assert m["ciou"] == pytest.approx(100 * 2 / (4 + 0 + 3 + 4))
    assert m["n_acc"] == m["r_neg"] == 50.0
    assert m["t_acc"] == 50.0
    assert m["pr@0.5"] == 50.0 and m["pr@0.6"] == 0.0
    assert {k: r.counts[k] for k in ("tp", "tn", "fp", "fn")} == {"tp": 1, "tn": 1, "fp": 1,
                                                                  "fn": 1}
    # --min-pixels 3: the 2-pixel TP prediction becomes "no target" -> FN
    r = grdkit.evaluate(preds, ds, min_pixels=3)
    assert r.counts["fn"] == 2 and r.counts["fp"] == 1
    assert r.metrics["gres_miou"] == pytest.approx(25.0)


def random_case(seed, n_groups=4, h=9, w=11):
    rng = np.random.default_rng(seed)
    groups, dense_preds, pairs = [], {}, []
    img = 0
    for g in range(1, n_groups + 1):
        gts = []
        for _ in range(int(rng.integers(1, 5))):
            img += 1
            kind = rng.random()
            gt = (rng.random((h, w)) < 0.35) if kind < 0.55 else np.zeros((h, w), bool)
            gts.append(gt)
            r = rng.random()
            if r < 0.2:
                pred = None
            elif r < 0.35:
                pred = gt.copy()
            elif r < 0.45:
                pred = np.zeros((h, w), bool)
                pred[rng.integers(h), rng.integers(w)] = True  # a single pixel
            else:
                pred = rng.random((h, w)) < rng.uniform(0.05, 0.6)
            dense_preds[(g, img)] = pred
            pairs.append((gt, pred))
        groups.append(gts)
    return dataset_from_dense(groups), dense_preds, pairs


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 5]))
def test_matches_dense_reference_on_random_data(seed, min_pixels):
    ds, dense_preds, pairs = random_case(seed)
    r = grdkit.evaluate(preds_from_dense(ds, dense_preds), ds, min_pixels=min_pixels)
    ref = dense_metrics(pairs, min_pixels=min_pixels)
    for k in METRICS:
        if ref[k] is None:
            assert r.metrics[k] is None, k
        else:
            assert r.metrics[k] == pytest.approx(ref[k], abs=1e-9), k
    assert {k: r.counts[k] for k in ref["counts"]} == ref["counts"]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_property_ground_truth_scores_100(seed):
    ds, _, _ = random_case(seed)
    preds = [{"expression_id": t.expression_id, "image_id": t.image_id,
              "segmentation": t.segmentation} for t in ds.targets]
    m = grdkit.evaluate(preds, ds).metrics
    for k in METRICS:
        assert m[k] is None or m[k] == 100.0, k


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.booleans())
def test_property_empty_predictions_on_all_negative_set_score_100(n_groups, n_img, as_null):
    z = np.zeros((5, 7), bool)
    ds = dataset_from_dense([[z] * n_img for _ in range(n_groups)])
    preds = [{"expression_id": t.expression_id, "image_id": t.image_id,
              "segmentation": None if as_null else t.segmentation} for t in ds.targets]
    m = grdkit.evaluate(preds, ds).metrics
    assert m["gres_miou"] == m["giou"] == m["n_acc"] == m["r_neg"] == 100.0
    # sum(U) = 0: cIoU's denominator is empty, so None like every other (issue 25)
    assert m["ciou"] is None
    assert m["t_acc"] is None and m["res_miou"] is None and m["pr@0.5"] is None
    # and with no predictions at all (every pair missing -> no target)
    assert grdkit.evaluate([], ds).metrics["gres_miou"] == 100.0


# Golden values (PySODMetrics style): pinned per release; a change must be deliberate.
GOLDEN_SEED_7 = {  # agrees with tests/dense_reference.py
    "gres_miou": 46.386946, "res_miou": 52.564103, "giou": 46.386946, "ciou": 33.196721,
    "n_acc": 42.857143, "t_acc": 75.0, "r_neg": 42.857143, "pr@0.5": 50.0, "pr@0.6": 50.0,
    "pr@0.7": 50.0, "pr@0.8": 50.0, "pr@0.9": 50.0,
}


def test_golden_values():
    ds, dense_preds, _ = random_case(7, n_groups=5)
    m = grdkit.evaluate(preds_from_dense(ds, dense_preds), ds).metrics
    assert {k: round(m[k], 6) for k in GOLDEN_SEED_7} == GOLDEN_SEED_7


def test_evaluator_reset_process_evaluate():
    ds, dense_preds, _pairs = random_case(3)
    ev = GresEvaluator(ds)
    from grdkit.evaluators.predictions import GroundTruth, load_predictions

    preds = load_predictions(preds_from_dense(ds, dense_preds), GroundTruth({"val": ds}))
    ev.process(preds)
    first = ev.evaluate().metrics
    ev.reset()
    assert ev.evaluate().counts["missing"] == len(ds.targets)
    ev.process(preds)
    assert ev.evaluate().metrics == first


def test_bootstrap_is_deterministic_and_brackets():
    ds, dense_preds, _ = random_case(11, n_groups=12)
    preds = preds_from_dense(ds, dense_preds)
    a = grdkit.evaluate(preds, ds, bootstrap=200, seed=3)
    b = grdkit.evaluate(preds, ds, bootstrap=200, seed=3)
    c = grdkit.evaluate(preds, ds, bootstrap=200, seed=4)
    assert a.ci == b.ci and a.ci != c.ci
    lo, hi = a.ci["gres_miou"]
    assert lo < a.metrics["gres_miou"] < hi
    # identical groups -> zero-width interval
    z = np.zeros((3, 3), bool)
    one = box(3, 3, 0, 2, 0, 2)
    ds2 = dataset_from_dense([[one, z]] * 5)
    p2 = [{"expression_id": t.expression_id, "image_id": t.image_id,
           "segmentation": t.segmentation} for t in ds2.targets]
    r = grdkit.evaluate(p2, ds2, bootstrap=50)
    assert r.ci["gres_miou"] == [100.0, 100.0]


def test_per_group_and_per_split_breakdown(tmp_path):
    ds, dense_preds, _ = random_case(5, n_groups=3)
    preds = preds_from_dense(ds, dense_preds)
    r = grdkit.evaluate(preds, ds)
    assert [g["group_id"] for g in r.per_group] == [1, 2, 3]
    assert sum(g["pairs"] for g in r.per_group) == r.counts["pairs"]
    assert r.per_split["val"]["metrics"] == r.metrics


def test_functional_doctest_is_pinned():
    """The worked example in gres_metrics' docstring (hand-computed values) holds."""
    import doctest

    from grdkit.evaluators import functional

    res = doctest.testmod(functional)
    assert res.attempted >= 2 and res.failed == 0
