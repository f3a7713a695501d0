"""The rela protocol, breakdowns, baseline comparability and the leaderboard."""

import json

import numpy as np
import pytest

import grdkit
from grdkit import masks
from grdkit.errors import InputError
from grdkit.evaluators import leaderboard
from grdkit.evaluators.functional import METRICS, resize_nearest
from grdkit.format.dataset import Expression, GresDataset, Group, Image, Target

from .conftest import dataset_from_dense, run_cli
from .dense_reference import dense_metrics
from .test_eval_metrics import preds_from_dense, random_case


def plain_resize(m, size=480):
    """Centre-sampled nearest neighbour, written from the definition with float arithmetic."""
    h, w = m.shape
    out = np.zeros((size, size), m.dtype)
    rows = [int(np.floor((i + 0.5) * h / size)) for i in range(size)]
    cols = [int(np.floor((j + 0.5) * w / size)) for j in range(size)]
    for i, r in enumerate(rows):
        out[i] = m[r, cols]
    return out


@pytest.mark.parametrize("shape", [(9, 11), (480, 640), (427, 640), (333, 500), (1000, 37),
                                   (480, 480), (1, 1)])
def test_resize_matches_definition(shape):
    m = np.random.default_rng(sum(shape)).random(shape) < 0.4
    np.testing.assert_array_equal(resize_nearest(m), plain_resize(m))


def test_resize_hand_computed():
    m = np.zeros((960, 960), bool)
    m[1, 3] = True  # row floor((0 + .5) * 2) = 1, col floor((1 + .5) * 2) = 3
    r = resize_nearest(m)
    assert r.sum() == 1 and r[0, 1]
    m = np.zeros((240, 240), bool)
    m[0, 0] = True  # upsampling x2: output rows/cols 0 and 1 take input 0
    assert resize_nearest(m)[:2, :2].all() and resize_nearest(m).sum() == 4


def rela_case(seed):
    """Random pairs on images larger and smaller than 480, with tiny predictions that can vanish
    when downsampled."""
    rng = np.random.default_rng(seed)
    groups, preds, pairs = [], {}, []
    img = 0
    for g in range(1, 4):
        gts = []
        h, w = [(37, 51), (600, 900), (700, 500)][g - 1]
        for _ in range(3):
            img += 1
            gt = np.zeros((h, w), bool)
            if rng.random() < 0.6:
                y, x = rng.integers(0, h - 5), rng.integers(0, w - 5)
                gt[y:y + rng.integers(1, h // 2), x:x + rng.integers(1, w // 2)] = True
            u = rng.random()
            if u < 0.2:
                pred = None
            elif u < 0.4:  # a few isolated pixels
                pred = np.zeros((h, w), bool)
                pred[rng.integers(0, h, 3), rng.integers(0, w, 3)] = True
            else:
                pred = np.roll(gt, int(rng.integers(-4, 5)), axis=1) | (rng.random((h, w)) < 0.01)
            gts.append(gt)
            preds[(g, img)] = pred
            pairs.append((gt, pred))
        groups.append(gts)
    return dataset_from_dense(groups), preds, pairs


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_pixels", [1, 3])
def test_rela_protocol_matches_dense_reference(seed, min_pixels):
    ds, preds, pairs = rela_case(seed)
    r = grdkit.evaluate(preds_from_dense(ds, preds), ds, min_pixels=min_pixels, protocol="rela")
    # the decision is taken at the original resolution, I and U at 480 x 480
    decided = [(p is not None and np.count_nonzero(p) >= min_pixels) for _, p in pairs]
    resized = [(plain_resize(g), plain_resize(p) if d else None)
               for (g, p), d in zip(pairs, decided)]
    ref = dense_metrics(resized, pred_pos=decided)
    for k in METRICS:
        if ref[k] is None:
            assert r.metrics[k] is None, k
        else:
            assert r.metrics[k] == pytest.approx(ref[k], abs=1e-9), k
    assert r.config["protocol"] == "rela"


def test_rela_hand_computed():
    gt = np.zeros((960, 960), bool)
    gt[:480, :] = True  # top half -> 240 x 480 at 480
    pred = np.zeros((960, 960), bool)
    pred[:480, :480] = True  # top-left quarter -> 240 x 240
    ds = dataset_from_dense([[gt]])
    p = [{"expression_id": 1, "image_id": 1, "segmentation": masks.encode(pred)}]
    m = grdkit.evaluate(p, ds, protocol="rela").metrics
    assert m["ciou"] == pytest.approx(50.0)
    # a single pixel at an odd row vanishes at 480 but stays "targeted": I 0, U |GT|
    one = np.zeros((960, 960), bool)
    one[0, 0] = True
    p = [{"expression_id": 1, "image_id": 1, "segmentation": masks.encode(one)}]
    r = grdkit.evaluate(p, ds, protocol="rela")
    assert r.counts["tp"] == 1 and r.metrics["ciou"] == 0.0


def test_baseline_refuses_other_protocol_or_ground_truth(tmp_path, capsys):
    ds, preds, _ = random_case(21, n_groups=4)
    gt = tmp_path / "val.json"
    grdkit.save_dataset(ds, gt)
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(preds_from_dense(ds, preds)))
    base = tmp_path / "base.json"
    code, *_ = run_cli(["eval", p, "--gt", gt, "--json", base], capsys)
    assert code == 0 and json.loads(base.read_text())["config"]["protocol"] == "grdkit"
    code, _, err = run_cli(["eval", p, "--gt", gt, "--protocol", "rela", "--baseline", base],
                           capsys)
    assert code == 2 and "protocol 'grdkit'" in err and str(base) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    other_ds, other_preds, _ = random_case(22, n_groups=4)
    other = tmp_path / "other.json"
    grdkit.save_dataset(other_ds, other)
    op = tmp_path / "op.json"
    op.write_text(json.dumps(preds_from_dense(other_ds, other_preds)))
    code, _, err = run_cli(["eval", op, "--gt", other, "--baseline", base], capsys)
    assert code == 2 and "other ground truth" in err
    code, *_ = run_cli(["eval", p, "--gt", gt, "--baseline", base], capsys)
    assert code == 0


def test_rela_shards_merge_and_refuse_other_protocol(tmp_path, capsys):
    ds, preds, _ = rela_case(1)
    gt = tmp_path / "val.json"
    grdkit.save_dataset(ds, gt)
    recs = preds_from_dense(ds, preds)
    a, b, one = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "one.json"
    a.write_text(json.dumps(recs[::2]))
    b.write_text(json.dumps(recs[1::2]))
    (tmp_path / "all.json").write_text(json.dumps(recs))
    code, *_ = run_cli(["eval", tmp_path / "all.json", "--gt", gt, "--protocol", "rela",
                        "--json", one], capsys)
    assert code == 0
    for src in (a, b):
        code, *_ = run_cli(["eval", src, "--gt", gt, "--protocol", "rela", "--save-state",
                            src.with_suffix(".npz")], capsys)
        assert code == 0
    merged = tmp_path / "m.json"
    code, *_ = run_cli(["eval", "merge", a.with_suffix(".npz"), b.with_suffix(".npz"), "--gt",
                        gt, "--json", merged], capsys)
    assert code == 0
    r1, r2 = json.loads(one.read_text()), json.loads(merged.read_text())
    assert r1["metrics"] == r2["metrics"] and r2["config"]["protocol"] == "rela"
    code, *_ = run_cli(["eval", b, "--gt", gt, "--save-state", tmp_path / "g.npz"], capsys)
    code, _, err = run_cli(["eval", "merge", a.with_suffix(".npz"), tmp_path / "g.npz", "--gt",
                            gt], capsys)
    assert code == 2 and "protocol" in err


# -- breakdowns ------------------------------------------------------------------------------
def breakdown_dataset():
    """6 expressions in 2 groups: word counts 1, 5, 8, 13, 3 ('a  b' double space = 3), 4;
    D³ kinds on some; ann_ids 0-3 referred annotations."""
    rng = np.random.default_rng(5)
    texts = ["cow", "the cow on the left", "a dog that is not on a leash",
             "the man in the red shirt who is holding a very large umbrella", "a  b",
             "people without any hats"]
    negs = [False, False, True, None, False, True]
    images, exprs, groups, targets = [], [], [], []
    for g in (1, 2):
        ids = [10 * g + k for k in range(3)]
        for i in ids:
            images.append(Image(i, f"{i}.png", 6, 7))
        eids = [3 * (g - 1) + k + 1 for k in range(3)]
        for e in eids:
            extra = {} if negs[e - 1] is None else {"is_negative": negs[e - 1]}
            exprs.append(Expression(e, texts[e - 1], g, extra))
            for i in ids:
                n_ann = int(rng.integers(0, 4))
                m = rng.random((6, 7)) < 0.4 if n_ann else np.zeros((6, 7), bool)
                targets.append(Target(e, i, bool(n_ann), masks.encode(m),
                                      tuple(range(100, 100 + n_ann))))
        groups.append(Group(g, tuple(eids), tuple(ids)))
    info = {"name": "bd", "split": "val", "grdkit_version": "test", "recipe": {}, "sources": {}}
    return GresDataset(info, images, exprs, groups, targets)


def test_breakdowns_match_reference_on_subsets():
    ds = breakdown_dataset()
    rng = np.random.default_rng(9)
    preds, dense = [], {}
    for t in ds.targets:
        m = rng.random((6, 7)) < 0.3 if rng.random() < 0.6 else None
        dense[(t.expression_id, t.image_id)] = m
        preds.append({"expression_id": t.expression_id, "image_id": t.image_id,
                      "segmentation": None if m is None else masks.encode(m)})
    r = grdkit.evaluate(preds, ds)
    words = {e.id: len(e.text.split(" ")) for e in ds.expressions}
    assert [words[k] for k in range(1, 7)] == [1, 5, 8, 13, 3, 4]

    def bucket_of(b, t):
        if b == "by_target_type":
            return ("no-target" if not t.positive else "single-target" if len(t.ann_ids) == 1
                    else "multi-target")
        if b == "by_length":
            n = words[t.expression_id]
            return "1-3" if n <= 3 else "4-6" if n <= 6 else "7-9" if n <= 9 else "10+"
        neg = ds.expression(t.expression_id).extra.get("is_negative")
        return "unmarked" if neg is None else "absence" if neg else "presence"

    assert set(r.breakdowns) == {"by_target_type", "by_length", "by_expression_kind"}
    for b, buckets in r.breakdowns.items():
        assert sum(e["counts"]["pairs"] for e in buckets.values()) == r.counts["pairs"]
        assert sum(e["counts"]["positives"] for e in buckets.values()) == r.counts["positive"]
        for name, e in buckets.items():
            sel = [t for t in ds.targets if bucket_of(b, t) == name]
            pairs = [(masks.decode(t.segmentation).astype(bool),
                      dense[(t.expression_id, t.image_id)]) for t in sel]
            ref = dense_metrics(pairs)
            assert e["counts"] == {"pairs": len(sel), "positives": sum(t.positive for t in sel),
                                   "negatives": sum(not t.positive for t in sel)}, (b, name)
            for k in ("gres_miou", "ciou", "n_acc", "t_acc", "res_miou", "pr@0.5"):
                if ref[k] is None:
                    assert e["metrics"][k] is None
                else:
                    assert e["metrics"][k] == pytest.approx(ref[k], abs=1e-9), (b, name, k)
    df = r.frames()["breakdowns"]
    assert list(df.columns[:5]) == ["breakdown", "bucket", "pairs", "positives", "negatives"]
    assert df.groupby("breakdown")["pairs"].sum().eq(r.counts["pairs"]).all()
    md = r.to_markdown()
    assert "### by_length" in md and "| 10+ |" in md and "### by_expression_kind" in md


def test_breakdowns_without_d3_kinds_and_hand_counts():
    z = np.zeros((3, 3), bool)
    one = np.ones((3, 3), bool)
    ds = dataset_from_dense([[one, z, z]])  # 'expression 1': 2 words; ann_ids empty
    r = grdkit.evaluate([], ds)
    assert "by_expression_kind" not in r.breakdowns
    tt = r.breakdowns["by_target_type"]
    assert list(tt) == ["no-target", "single-target", "multi-target", "target (no ann_ids)"]
    assert tt["target (no ann_ids)"]["counts"] == {"pairs": 1, "positives": 1, "negatives": 0}
    assert tt["no-target"]["metrics"]["n_acc"] == 100.0
    assert tt["single-target"]["metrics"]["gres_miou"] is None  # empty bucket
    assert r.breakdowns["by_length"]["1-3"]["counts"]["pairs"] == 3


def test_cli_prints_breakdowns(tmp_path, capsys):
    ds = breakdown_dataset()
    gt = tmp_path / "val.json"
    grdkit.save_dataset(ds, gt)
    p = tmp_path / "p.json"
    p.write_text("[]")
    code, out, _ = run_cli(["eval", p, "--gt", gt], capsys)
    assert code == 0
    for word in ("by_target_type", "multi-target", "by_length", "10+", "absence"):
        assert word in out, word


# -- leaderboard -----------------------------------------------------------------------------
@pytest.fixture
def three_reports(tmp_path, capsys):
    ds, preds, _ = random_case(31, n_groups=6)
    gt = tmp_path / "val.json"
    grdkit.save_dataset(ds, gt)
    recs = preds_from_dense(ds, preds)
    perfect = [{"expression_id": t.expression_id, "image_id": t.image_id,
                "segmentation": t.segmentation} for t in ds.targets]
    out = {}
    for name, pr, extra in (("noisy", recs, ["--bootstrap", "50"]), ("perfect", perfect, []),
                            ("empty", [], [])):
        f = tmp_path / f"{name}.preds.json"
        f.write_text(json.dumps(pr))
        out[name] = tmp_path / f"{name}.json"
        code, *_ = run_cli(["eval", f, "--gt", gt, "--json", out[name], *extra], capsys)
        assert code == 0
    return gt, out


def test_leaderboard_api(three_reports):
    _gt, rep = three_reports
    board = leaderboard([rep["noisy"], rep["perfect"], rep["empty"]])
    noisy = json.loads(rep["noisy"].read_text())
    empty = json.loads(rep["empty"].read_text())
    assert empty["metrics"]["gres_miou"] > noisy["metrics"]["gres_miou"]
    assert list(board.table.index) == ["perfect", "empty", "noisy"]  # sorted by gres_miou
    assert board.table.loc["noisy", "ciou"] == pytest.approx(noisy["metrics"]["ciou"])
    assert board.best["gres_miou"] == ["perfect"]
    assert "n_acc" in board.best and "perfect" in board.best["n_acc"]
    md = board.to_markdown()
    assert "**100.00**" in md and "| noisy |" in md
    lo, hi = noisy["ci"]["gres_miou"]
    assert f"[{lo:.2f}, {hi:.2f}]" in md
    df = board.to_frame()
    assert df.loc["perfect", "gres_miou_best"] and not df.loc["noisy", "gres_miou_best"]
    assert df.loc["noisy", "gres_miou_ci_low"] == pytest.approx(lo)
    b2 = leaderboard([rep["noisy"], rep["empty"]], names=["A", "B"], sort="t_acc")
    assert list(b2.table.index) == ["A", "B"]  # t_acc: noisy > 0, empty 0
    with pytest.raises(ValueError, match="unknown sort metric"):
        leaderboard([rep["noisy"]], sort="nope")


def test_leaderboard_cli_and_refusals(three_reports, tmp_path, capsys):
    gt, rep = three_reports
    md, csv = tmp_path / "board.md", tmp_path / "board.csv"
    code, out, err = run_cli(["leaderboard", rep["noisy"], rep["perfect"], "--names", "N,P",
                              "--markdown", md, "--csv", csv], capsys)
    assert code == 0, err
    assert "leaderboard" in out and md.read_text().startswith("| method |")
    assert csv.read_text().splitlines()[0].startswith("method,gres_miou")
    # another protocol: refused, named, exit 2; --force overrides
    rela = tmp_path / "rela.json"
    code, *_ = run_cli(["eval", tmp_path / "perfect.preds.json", "--gt", gt, "--protocol",
                        "rela", "--json", rela], capsys)
    code, _, err = run_cli(["leaderboard", rep["noisy"], rela], capsys)
    assert code == 2 and str(rela) in err and "protocol 'rela'" in err
    code, *_ = run_cli(["leaderboard", rep["noisy"], rela, "--force"], capsys)
    assert code == 0
    with pytest.raises(InputError, match="protocol"):
        leaderboard([rep["noisy"], rela])
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    code, _, err = run_cli(["leaderboard", bad], capsys)
    assert code == 2 and "not a grdkit JSON report" in err
    code, _, err = run_cli(["leaderboard", rep["noisy"], rep["perfect"], "--names", "X"], capsys)
    assert code == 2


def test_rela_on_real_refcocog(refcocog_root):
    """Box predictions on the real sample: rela vs the plain reference; pinned values."""
    from pycocotools.coco import COCO

    from grdkit.builders import build_dataset

    ds, _ = build_dataset("g-refcocog", refcocog_root, min_images=1)
    coco = COCO(str(refcocog_root / "instances.json"))
    preds, pairs = [], []
    for split, d in ds.items():
        for t in d.targets:
            im = d.image(t.image_id)
            box = np.zeros((im.height, im.width), bool)
            for a in t.ann_ids:
                x, y, w, h = coco.anns[a]["bbox"]
                box[int(np.floor(y)):int(np.ceil(y + h)), int(np.floor(x)):int(np.ceil(x + w))] = 1
            preds.append({"split": split, "expression_id": t.expression_id,
                          "image_id": t.image_id,
                          "segmentation": masks.encode(box) if box.any() else None})
            pairs.append((plain_resize(masks.decode(t.segmentation).astype(bool)),
                          plain_resize(box) if box.any() else None))
    r = grdkit.evaluate(preds, ds, protocol="rela")
    ref = dense_metrics(pairs, pred_pos=[p is not None for _, p in pairs])
    for k in ("gres_miou", "res_miou", "ciou", "n_acc", "t_acc", "pr@0.5", "pr@0.7"):
        assert r.metrics[k] == pytest.approx(ref[k], abs=1e-9), k
    # pinned; grdkit protocol: 76.0642 / 52.8275 (tests/test_eval_io.py); ReLA's own GT
    # (polygons rasterised at 480): 76.0677 / 52.8601 (benchmarks/rela_protocol_refcocog.py)
    assert (round(r.metrics["gres_miou"], 4), round(r.metrics["ciou"], 4)) == (76.0753, 52.8676)
