"""Evaluation profiles against independent transcriptions of their reference code, the optional
``no_target`` decision (JSON key and PNG sidecar), and profile checks in baseline / merge /
leaderboard.

The transcriptions below are written from the reference files, loop by loop, on dense masks:

* ReLA ``gres_model/evaluation/refer_evaluation.py`` (henghuiding/ReLA) after 884ef17 and before
  it (a389648, as buptLwz/MABP ships it @ 5e871fbc): ``rela_reference``;
* MCN ``callbacks/eval.py`` ``cal_seg_iou`` (luogen1996/MCN @ 0ea06876) plus LAVT ``test.py``'s
  cumulative "overall IoU" (yz93/LAVT-RIS @ 066bcf26): ``mcn_reference``;
* the resizers: centre-sampled nearest from its definition (``plain_resize``) and OpenCV
  ``INTER_NEAREST`` through ``cv2.resize`` itself (MABP ``refcoco_mapper.py``).
"""

import json

import numpy as np
import pytest

import grdkit
from grdkit import masks
from grdkit.evaluators import leaderboard
from grdkit.evaluators.profiles import PROFILES

from .conftest import dataset_from_dense, run_cli

SIZE = 480


def plain_resize(m, size=SIZE):
    """Centre-sampled nearest neighbour from its definition (float arithmetic, loops)."""
    h, w = m.shape
    rows = [int(np.floor((i + 0.5) * h / size)) for i in range(size)]
    cols = [int(np.floor((j + 0.5) * w / size)) for j in range(size)]
    return m[rows][:, cols]


def opencv_resize(m, size=SIZE):
    """MABP's mapper: ``cv2.resize(mask, (480, 480), interpolation=cv2.INTER_NEAREST)``."""
    cv2 = pytest.importorskip("cv2")
    return cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0


def rela_reference(samples, old=False):
    """ReLA ``ReferEvaluator.evaluate`` on ``(gt, gt_nt, pred, pred_nt)`` dense samples (after
    884ef17; ``old``: the a389648 accuracies MABP ships). N_acc / T_acc fractions."""
    pr_thres = [.5, .6, .7, .8, .9]
    accum_i = accum_u = accum_iou = 0
    pr_count = dict.fromkeys(pr_thres, 0)
    total = not_empty = empty = 0
    nt = {"TP": 0, "TN": 0, "FP": 0, "FN": 0}
    for gt, gt_nt, pred, pred_nt in samples:
        i = np.sum(np.logical_and(pred, gt))
        u = np.sum(np.logical_or(pred, gt))
        if gt_nt:
            empty += 1
            if pred_nt:
                nt["TP"] += 1
                accum_iou += 1
            else:
                nt["FN"] += 1
                accum_u += int(u)
        else:
            if pred_nt:
                nt["FP"] += 1
                i = 0
            else:
                nt["TN"] += 1
            this_iou = float(0) if u == 0 else float(i) / float(u)
            accum_iou += this_iou
            accum_i += i
            accum_u += u
            not_empty += 1
            for t in pr_thres:
                if this_iou >= t:
                    pr_count[t] += 1
        total += 1
    res = {"gIoU": 100. * (accum_iou / total), "cIoU": accum_i * 100. / accum_u}
    if empty > 0:
        if old:
            res["T_acc"] = nt["TP"] / (nt["TP"] + nt["FP"] + 1)
            res["N_acc"] = nt["TP"] / (nt["TP"] + nt["FN"] + 1)
        else:
            res["T_acc"] = nt["TN"] / (nt["TN"] + nt["FP"])
            res["N_acc"] = nt["TP"] / (nt["TP"] + nt["FN"])
    for t in pr_thres:
        res[f"Pr@{t}"] = pr_count[t] * 100. / not_empty
    return res


def mcn_reference(samples):
    """MCN ``cal_seg_iou`` averaged as ``Evaluate.evaluate`` does, plus LAVT's overall IoU, on
    ``(gt, pred)`` dense samples (pred already binary: MCN thresholds a probability map)."""
    seg_iou_all, seg_prec_all, n = 0., {}, 0
    cum_i = cum_u = 0
    for gt, pred in samples:
        t = np.array(pred > 0.5)
        p = gt > 0.
        intersection = np.logical_and(t, p)
        union = np.logical_or(t, p)
        iou = (np.sum(intersection > 0) + 1e-10) / (np.sum(union > 0) + 1e-10)
        for thresh in np.arange(0.5, 1, 0.05):
            seg_prec_all[thresh] = seg_prec_all.get(thresh, 0) + float(iou > thresh)
        seg_iou_all += iou
        cum_i += np.sum(intersection)
        cum_u += np.sum(union)
        n += 1
    prec = {k: v / n for k, v in seg_prec_all.items()}
    return {"mIoU": seg_iou_all / n, "prec": prec, "oIoU": cum_i * 100. / cum_u}


SHAPES = [(37, 51), (520, 610), (490, 500), (427, 640), (39, 1000)]


def generated_case(seed, negatives=True, with_key=None):
    """3 groups x 3 images of assorted sizes: boxes (some one row tall, which can vanish at 480),
    no-target pairs, predictions that are null, a few isolated pixels, or shifted noisy GT; with
    ``with_key`` (or at random) each prediction carries a random no-target decision."""
    rng = np.random.default_rng(seed)
    key = rng.random() < 0.5 if with_key is None else with_key
    groups, dense = [], {}
    img = 0
    for g in range(1, 4):
        h, w = SHAPES[int(rng.integers(len(SHAPES)))]
        gts = []
        for k in range(3):
            img += 1
            gt = np.zeros((h, w), bool)
            if not negatives or (g == 1 and k == 0) or rng.random() < 0.6:
                y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
                gt[y:y + max(1, int(rng.integers(1, h // 2))),
                   x:x + max(1, int(rng.integers(1, w // 2)))] = True
            u = rng.random()
            if u < 0.15:
                pred = None
            elif u < 0.35:
                pred = np.zeros((h, w), bool)
                pred[rng.integers(0, h, 3), rng.integers(0, w, 3)] = True
            else:
                pred = np.roll(gt, int(rng.integers(-4, 5)), axis=1) | (rng.random((h, w)) < 0.01)
            nt = bool(rng.random() < 0.3) if key else None
            gts.append(gt)
            dense[(g, img)] = (pred, nt)
        groups.append(gts)
    ds = dataset_from_dense(groups)
    recs = []
    for (e, i), (pred, nt) in dense.items():
        r = {"expression_id": e, "image_id": i,
             "segmentation": None if pred is None or not pred.any() else masks.encode(pred)}
        if nt is not None:
            r["no_target"] = nt
        recs.append(r)
    return ds, recs


def samples_of(ds, recs, resize=None):
    """(gt, gt_nt, pred, pred_nt) at the profile's resolution; pred_nt from the key, else an
    empty mask."""
    out = []
    for r in recs:
        t = ds.target(r["expression_id"], r["image_id"])
        gt = masks.decode(t.segmentation).astype(bool)
        pred = (np.zeros_like(gt) if r["segmentation"] is None
                else masks.decode(r["segmentation"]).astype(bool))
        pred_nt = r["no_target"] if "no_target" in r else not pred.any()
        if resize is not None:
            gt, pred = resize(gt), resize(pred)
        out.append((gt, not t.positive, pred, pred_nt))
    return out


def assert_rela_equal(metrics, ref):
    assert metrics["giou"] == pytest.approx(ref["gIoU"], abs=1e-9)
    assert metrics["ciou"] == pytest.approx(ref["cIoU"], abs=1e-9)
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        assert metrics[f"pr@{t}"] == pytest.approx(ref[f"Pr@{t}"], abs=1e-9), t
    if "T_acc" in ref:
        assert metrics["t_acc"] == pytest.approx(100 * ref["T_acc"], abs=1e-9)
        assert metrics["n_acc"] == pytest.approx(100 * ref["N_acc"], abs=1e-9)
    else:  # the references print 0 for both without no-target samples (documented)
        assert metrics["n_acc"] is None


N_SETS = 50


@pytest.mark.parametrize("profile,resize,old", [("grdkit", None, False),
                                                ("rela", plain_resize, False),
                                                ("rela-2023-05", opencv_resize, True)])
def test_rela_family_equals_transcription_on_generated_sets(profile, resize, old):
    keys = 0
    for seed in range(N_SETS):
        ds, recs = generated_case(seed)
        keys += any("no_target" in r for r in recs)
        rep = grdkit.evaluate(recs, ds, protocol=profile)
        assert_rela_equal(rep.metrics, rela_reference(samples_of(ds, recs, resize), old))
        assert rep.config["protocol"] == profile
        assert rep.config["profile"] == PROFILES[profile].record()
    assert 10 < keys < N_SETS  # both kinds of prediction sets were scored


def test_mcn_equals_transcription_on_generated_sets():
    for seed in range(N_SETS):
        ds, recs = generated_case(100 + seed, negatives=False)
        rep = grdkit.evaluate(recs, ds, protocol="mcn")
        ref = mcn_reference([(g, p) for g, _, p, _ in samples_of(ds, recs)])
        m = rep.metrics
        assert m["res_miou"] == pytest.approx(100 * ref["mIoU"], abs=1e-9)
        assert m["ciou"] == pytest.approx(ref["oIoU"], abs=1e-9)
        thresholds = sorted(ref["prec"])
        for x, t in zip((0.5, 0.6, 0.7, 0.8, 0.9), thresholds[0::2]):
            assert m[f"pr@{x}"] == pytest.approx(100 * ref["prec"][t], abs=1e-9), x


def test_profiles_on_the_real_refcocog_sample(refcocog_root):
    """RES RefCOCOg from the real sample, box predictions with a no-target decision on every
    fourth pair; every profile equals its transcription; pinned values."""
    from pycocotools.coco import COCO

    from grdkit.builders import build_dataset

    splits, _ = build_dataset("refcocog", refcocog_root)
    ds = splits["val"]
    coco = COCO(str(refcocog_root / "instances.json"))
    recs = []
    for k, t in enumerate(ds.targets):
        im = ds.image(t.image_id)
        box = np.zeros((im.height, im.width), bool)
        for a in t.ann_ids:
            x, y, w, h = coco.anns[a]["bbox"]
            box[int(np.floor(y)):int(np.ceil(y + h)), int(np.floor(x)):int(np.ceil(x + w))] = 1
        recs.append({"expression_id": t.expression_id, "image_id": t.image_id,
                     "segmentation": masks.encode(box), "no_target": k % 4 == 3})
    pinned = {}
    for profile, resize, old in (("grdkit", None, False), ("rela", plain_resize, False),
                                 ("rela-2023-05", opencv_resize, True)):
        m = grdkit.evaluate(recs, ds, protocol=profile).metrics
        assert_rela_equal(m, rela_reference(samples_of(ds, recs, resize), old))
        pinned[profile] = (round(m["giou"], 4), round(m["ciou"], 4))
    m = grdkit.evaluate(recs, ds, protocol="mcn").metrics
    ref = mcn_reference([(g, p) for g, _, p, _ in samples_of(ds, recs)])
    assert m["res_miou"] == pytest.approx(100 * ref["mIoU"], abs=1e-9)
    assert m["ciou"] == pytest.approx(ref["oIoU"], abs=1e-9)
    pinned["mcn"] = (round(m["res_miou"], 4), round(m["ciou"], 4))
    assert pinned == PINNED_REAL, pinned


# (gIoU, cIoU) for the rela family, (mIoU, oIoU) for mcn; the transcriptions above agree
PINNED_REAL = {"grdkit": (32.0057, 30.0525), "rela": (31.958, 31.7814),
               "rela-2023-05": (31.9945, 31.8202), "mcn": (41.7231, 44.5027)}


def test_opencv_index_map_matches_cv2():
    cv2 = pytest.importorskip("cv2")
    from grdkit.evaluators.functional import resize_index

    for n in [*range(1, 200), 427, 480, 500, 640, 1000, 1234]:
        col = np.arange(n, dtype=np.float32).reshape(n, 1) * np.ones((1, 2), np.float32)
        ref = cv2.resize(col, (2, SIZE), interpolation=cv2.INTER_NEAREST)[:, 0].astype(int)
        np.testing.assert_array_equal(resize_index(n, SIZE, "opencv"), ref)


def test_rela_2023_05_accuracies_hand_computed():
    """2 no-target pairs (1 predicted no-target), 3 target pairs (1 predicted no-target):
    ReLA naming TP 1, FN 1, FP 1, TN 2 -> old T_acc = 1/(1+1+1), N_acc = 1/(1+1+1); corrected
    T_acc = 2/3, N_acc = 1/2."""
    z = np.zeros((8, 8), bool)
    one = np.zeros((8, 8), bool)
    one[:4] = True
    ds = dataset_from_dense([[z, z, one, one, one]])
    recs = [{"expression_id": 1, "image_id": i, "segmentation": masks.encode(one),
             "no_target": nt} for i, nt in zip(range(1, 6), (True, False, True, False, False))]
    old = grdkit.evaluate(recs, ds, protocol="rela-2023-05").metrics
    new = grdkit.evaluate(recs, ds, protocol="grdkit").metrics
    assert old["t_acc"] == pytest.approx(100 / 3) and old["n_acc"] == pytest.approx(100 / 3)
    assert new["t_acc"] == pytest.approx(200 / 3) and new["n_acc"] == pytest.approx(50)
    # the masks stay in U: the targeted pair predicted no-target adds I 0, U 32; the no-target
    # pair predicted targeted adds U 32; the one predicted no-target adds nothing
    assert new["ciou"] == pytest.approx(100 * 64 / (32 * 4))


# -- the no_target key: JSON, PNG sidecar, validation --------------------------------------------
def test_no_target_json_and_png_sidecar_round_trip(tmp_path, capsys):
    from PIL import Image as PILImage

    ds, recs = generated_case(7, with_key=True)
    gt = tmp_path / "val.json"
    grdkit.save_dataset(ds, gt)
    pj = tmp_path / "preds.json"
    pj.write_text(json.dumps(recs))
    folder = tmp_path / "pngs"
    side = []
    for r in recs:
        if r["segmentation"] is not None:
            d = folder / str(r["expression_id"])
            d.mkdir(parents=True, exist_ok=True)
            m = masks.decode(r["segmentation"]).astype(np.uint8) * 255
            PILImage.fromarray(m).save(d / f"{r['image_id']}.png")
        side.append({k: r[k] for k in ("expression_id", "image_id", "no_target")})
    (folder / "no_target.json").write_text(json.dumps(side))
    reports = []
    for src in (pj, folder):
        out = tmp_path / f"{src.stem}.report.json"
        code, _, err = run_cli(["eval", src, "--gt", gt, "--profile", "rela", "--json", out],
                               capsys)
        assert code == 0, err
        reports.append(json.loads(out.read_text()))
    assert reports[0]["metrics"] == reports[1]["metrics"]
    assert reports[0]["counts"] == reports[1]["counts"]
    ref = rela_reference(samples_of(ds, recs, plain_resize))
    assert_rela_equal(reports[0]["metrics"], ref)
    # the key changes the result: without it the decision comes from the masks
    plain = [{k: v for k, v in r.items() if k != "no_target"} for r in recs]
    assert grdkit.evaluate(plain, ds).metrics != grdkit.evaluate(recs, ds).metrics


@pytest.mark.parametrize("bad,message", [(1, "no_target 1 is not true or false"),
                                         ("yes", "no_target 'yes' is not true or false")])
def test_no_target_must_be_boolean(tmp_path, capsys, bad, message):
    ds, recs = generated_case(3, with_key=True)
    gt = tmp_path / "val.json"
    grdkit.save_dataset(ds, gt)
    recs[2]["no_target"] = bad
    p = tmp_path / "p.json"
    p.write_text(json.dumps(recs))
    code, _, err = run_cli(["eval", p, "--gt", gt], capsys)
    assert code == 2 and message in err and "predictions[2]" in err
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "no_target.json").write_text(json.dumps([{"expression_id": 9, "image_id": 1,
                                                        "no_target": True}]))
    code, _, err = run_cli(["eval", folder, "--gt", gt], capsys)
    assert code == 2 and "no_target.json" in err and "unknown pair" in err


# -- profiles in reports, baseline, merge and leaderboard ----------------------------------------
def test_profiles_are_recorded_and_checked(tmp_path, capsys):
    ds, recs = generated_case(11)
    gt = tmp_path / "val.json"
    grdkit.save_dataset(ds, gt)
    p = tmp_path / "p.json"
    p.write_text(json.dumps(recs))
    reps = {}
    for prof in PROFILES:
        reps[prof] = tmp_path / f"{prof}.json"
        code, _, err = run_cli(["eval", p, "--gt", gt, "--profile", prof, "--json", reps[prof]],
                               capsys)
        assert code == 0, err
        cfg = json.loads(reps[prof].read_text())["config"]
        assert cfg["protocol"] == prof and cfg["profile"]["reference"]
    # --protocol is kept as the former name of --profile
    code, *_ = run_cli(["eval", p, "--gt", gt, "--protocol", "rela-2023-05", "--baseline",
                        reps["rela-2023-05"]], capsys)
    assert code == 0
    code, _, err = run_cli(["eval", p, "--gt", gt, "--profile", "rela", "--baseline",
                            reps["rela-2023-05"]], capsys)
    assert code == 2 and "protocol 'rela-2023-05'" in err
    with pytest.raises(grdkit.errors.InputError, match="protocol 'mcn'"):
        leaderboard([reps["grdkit"], reps["mcn"]])
    # another version of the same profile is refused too
    old = json.loads(reps["mcn"].read_text())
    old["config"]["profile"]["version"] = 0
    (tmp_path / "old.json").write_text(json.dumps(old))
    code, _, err = run_cli(["leaderboard", reps["mcn"], tmp_path / "old.json"], capsys)
    assert code == 2 and "version 0 of profile 'mcn'" in err
    # shards of one profile merge into exactly the single-pass report; other profiles refused
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(recs[::2]))
    b.write_text(json.dumps(recs[1::2]))
    for src in (a, b):
        code, *_ = run_cli(["eval", src, "--gt", gt, "--profile", "rela-2023-05",
                            "--save-state", src.with_suffix(".npz")], capsys)
        assert code == 0
    merged = tmp_path / "m.json"
    code, *_ = run_cli(["eval", "merge", a.with_suffix(".npz"), b.with_suffix(".npz"), "--gt",
                        gt, "--json", merged], capsys)
    assert code == 0
    one = json.loads(reps["rela-2023-05"].read_text())
    assert json.loads(merged.read_text())["metrics"] == one["metrics"]
    code, *_ = run_cli(["eval", b, "--gt", gt, "--profile", "mcn", "--save-state",
                        tmp_path / "c.npz"], capsys)
    code, _, err = run_cli(["eval", "merge", a.with_suffix(".npz"), tmp_path / "c.npz", "--gt",
                            gt], capsys)
    assert code == 2 and "protocol" in err


def test_mcn_averages_target_pairs_only():
    """Documented difference: on data with no-target pairs, mcn's mIoU and prec@X are over target
    pairs (MCN averages every sample, the same on RES data, which has no no-target pair)."""
    z = np.zeros((4, 4), bool)
    one = np.ones((4, 4), bool)
    ds = dataset_from_dense([[one, z]])
    recs = [{"expression_id": 1, "image_id": 1, "segmentation": masks.encode(one)},
            {"expression_id": 1, "image_id": 2, "segmentation": masks.encode(one)}]
    m = grdkit.evaluate(recs, ds, protocol="mcn").metrics
    assert m["res_miou"] == pytest.approx(100.0) and m["ciou"] == pytest.approx(50.0)


def test_predictions_schema_accepts_no_target_and_rejects_non_booleans():
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("grdkit.format").joinpath(
        "schema/predictions.schema.json").read_text(encoding="utf-8"))
    _, recs = generated_case(5, with_key=True)
    jsonschema.validate(recs, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{**recs[0], "no_target": "yes"}], schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"expression_id": 1, "image_id": 1}], schema)


# -- paper names -----------------------------------------------------------------------------
@pytest.mark.parametrize("scheme,expected", [
    ("gres", {"gres_miou": "m\u0305I\u0305o\u0305U\u0305", "r_neg": "R_neg",
              "e_measure": "E_ξ", "s_measure": "S_α"}),
    ("rela", {"giou": "gIoU", "ciou": "cIoU", "n_acc": "N-acc", "pr@0.7": "Pr@0.7"}),
    ("mabp", {"n_acc": "N-acc.", "t_acc": "T-acc.", "pr@0.9": "Pr@0.9"}),
    ("lts", {"res_miou": "IoU (mIoU)", "ciou": "oIoU", "pr@0.5": "prec@0.5"}),
    ("cosod", {"mae": "MAE", "f_max": "F_max", "e_measure": "E_ξ"}),
])
def test_reports_under_each_naming(tmp_path, capsys, scheme, expected):
    rng = np.random.default_rng(13)
    gts = [[rng.random((12, 17)) < 0.3 if k else np.zeros((12, 17), bool) for k in range(3)]
           for _ in range(2)]
    ds = dataset_from_dense(gts)
    recs = [{"expression_id": t.expression_id, "image_id": t.image_id,
             "segmentation": masks.encode(rng.random((12, 17)) < 0.4)} for t in ds.targets]
    gt = tmp_path / "val.json"
    grdkit.save_dataset(ds, gt)
    p = tmp_path / "p.json"
    p.write_text(json.dumps(recs))
    plain, named, md = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "b.md"
    cosod = ["--cosod", "--workers", "1"] if scheme in ("gres", "cosod") else []
    code, *_ = run_cli(["eval", p, "--gt", gt, "--json", plain, *cosod], capsys)
    assert code == 0
    code, out, err = run_cli(["eval", p, "--gt", gt, "--json", named, "--markdown", md,
                              "--names", scheme, *cosod], capsys)
    assert code == 0, err
    a, b = json.loads(plain.read_text()), json.loads(named.read_text())
    assert a["metrics"] == b["metrics"] and "names" not in a  # keys stay grdkit's
    assert b["names"]["scheme"] == scheme
    text = md.read_text()
    for key, label in expected.items():
        assert b["names"]["labels"][key] == label
        assert f"| {label} |" in text, label
        assert label in out, label


@pytest.mark.parametrize("prof", sorted(PROFILES))
def test_shards_with_no_target_decisions_merge_under_every_profile(tmp_path, capsys, prof):
    """A no-target decision zeroes I but keeps U (ReLA's rule), so its shard state breaks
    U = |P| + |G| - I: the merge-time consistency check (issue 21) must still accept it, under
    every profile, and the merge must equal the single pass."""
    ds, recs = generated_case(5, with_key=True)
    assert any(r.get("no_target") and r["segmentation"] for r in recs)
    gt = tmp_path / "val.json"
    grdkit.save_dataset(ds, gt)
    whole, a, b = (tmp_path / f"{n}.json" for n in ("whole", "a", "b"))
    whole.write_text(json.dumps(recs))
    a.write_text(json.dumps(recs[::2]))
    b.write_text(json.dumps(recs[1::2]))
    for src in (a, b):
        code, _, err = run_cli(["eval", src, "--gt", gt, "--profile", prof, "--save-state",
                                src.with_suffix(".npz")], capsys)
        assert code == 0, err
    one, merged = tmp_path / "one.json", tmp_path / "merged.json"
    assert run_cli(["eval", whole, "--gt", gt, "--profile", prof, "--json", one], capsys)[0] == 0
    code, _, err = run_cli(["eval", "merge", a.with_suffix(".npz"), b.with_suffix(".npz"),
                            "--gt", gt, "--json", merged], capsys)
    assert code == 0, err
    assert json.loads(merged.read_text())["metrics"] == json.loads(one.read_text())["metrics"]
