"""Per-pair scores (issue 28 §1): one row per pair, and the rows re-aggregate to the report.

The re-aggregation is checked twice for every profile: exactly, by loading the rows back into an
evaluator (``grdkit report``'s path) and comparing the whole JSON report; and independently, by
recomputing every GRES metric from the rows' I and U with exact fractions, from the profiles'
definitions (GRES §5.1, ReLA §6.1, ReLA a389648's accuracies, MCN's ``cal_seg_iou``), sharing no
code with grdkit.evaluators.
"""

import json
from fractions import Fraction

import numpy as np
import pytest

import grdkit
from grdkit import masks
from grdkit.evaluators import evaluate, evaluator_from_pairs, read_pairs, write_pairs
from grdkit.evaluators.functional import PROTOCOLS
from grdkit.evaluators.pairs import COLUMNS

from .conftest import cow_dataset, run_cli


def _cow_predictions(ds, no_target_keys=False):
    """Real cow masks, shifted (TP with IoU < 1), dropped (FN), a whole-image false alarm and
    small blobs on negatives (FP), nulls (TN), some pairs missing, some with no_target keys."""
    preds = []
    for k, t in enumerate(ds.targets):
        im = ds.image(t.image_id)
        if k % 11 == 5:
            continue  # missing: counts as no target
        gt = masks.decode(t.segmentation).astype(bool)
        if t.positive:
            if k % 7 == 3:
                seg = None  # missed positive
            else:
                seg = masks.encode(np.roll(gt, k % 9, axis=1))
        elif k % 5 == 0:
            seg = masks.encode(np.ones((im.height, im.width), bool))  # whole image
        elif k % 5 == 1:
            m = np.zeros((im.height, im.width), bool)
            m[10:10 + k, 20:40] = True
            seg = masks.encode(m)
        else:
            seg = None
        rec = {"expression_id": t.expression_id, "image_id": t.image_id, "segmentation": seg}
        if no_target_keys and k % 4 == 2:
            rec["no_target"] = not t.positive  # the head is right, the mask as it is
        preds.append(rec)
    return preds


def _independent(df, profile):
    """Every GRES metric from the rows' I and U, exactly, from the profiles' definitions."""
    def iou(i, u):
        if profile == "mcn":
            s = Fraction(1, 10**10)
            return (Fraction(i) + s) / (Fraction(u) + s)
        if u == 0:
            return Fraction(0) if profile.startswith("rela") else Fraction(1)
        return Fraction(i, u)

    pos = df["positive"].tolist()
    targeted = (~df["no_target"]).tolist()
    ious = [iou(i, u) for i, u in zip(df["inter"], df["union"])]
    n = len(pos)
    tp = sum(p and t for p, t in zip(pos, targeted))
    tn = sum(not p and not t for p, t in zip(pos, targeted))
    npos, nneg = sum(pos), n - sum(pos)
    score = sum((x if t else 0) if p else (0 if t else 1) for p, t, x in zip(pos, targeted, ious))
    scored = [x for p, t, x in zip(pos, targeted, ious) if p and (t or profile == "mcn")]
    out = {"gres_miou": 100 * score / n, "giou": 100 * score / n,
           "res_miou": 100 * sum(scored) / npos,
           "ciou": 100 * Fraction(int(df["inter"].sum()), int(df["union"].sum())),
           "t_acc": 100 * Fraction(tp, npos), "n_acc": 100 * Fraction(tn, nneg)}
    if profile == "rela-2023-05":  # ReLA a389648 in grdkit's naming (module profiles)
        out["t_acc"] = 100 * Fraction(tn, tn + npos - tp + 1)
        out["n_acc"] = 100 * Fraction(tn, nneg + 1)
    out["r_neg"] = 100 * Fraction(tn, nneg)
    if profile != "rela-2023-05":
        out["r_neg"] = out["n_acc"]
    xs = [float(x) for x in np.arange(0.5, 1, 0.05)[0::2]] if profile == "mcn" \
        else [0.5, 0.6, 0.7, 0.8, 0.9]
    for key, x in zip((0.5, 0.6, 0.7, 0.8, 0.9), xs):
        hit = sum((v > Fraction(x)) if profile == "mcn" else (v >= Fraction(x)) for v in scored)
        out[f"pr@{key}"] = 100 * Fraction(hit, npos)
    return out


@pytest.mark.parametrize("profile", PROTOCOLS)
def test_rows_reaggregate_to_the_report_exactly(profile, tmp_path):
    ds = cow_dataset()
    preds = _cow_predictions(ds, no_target_keys=profile != "mcn")
    rep = evaluate(preds, ds, protocol=profile, per_pair=True)
    df = rep.pairs
    assert list(df.columns) == list(COLUMNS) and len(df) == len(ds.targets) == 63
    assert set(df["outcome"]) == {"TP", "TN", "FP", "FN"}
    assert (~df["has_prediction"]).sum() == 6 and (df["profile"] == profile).all()
    # the outcome is the (positive, decision) cell, and counts match the report's
    c = rep.counts
    assert [int((df["outcome"] == o).sum()) for o in ("TP", "TN", "FP", "FN")] == \
        [c["tp"], c["tn"], c["fp"], c["fn"]]
    # independent: exact fractions from I and U, every GRES metric
    for k, v in _independent(df, profile).items():
        assert rep.metrics[k] == pytest.approx(float(v), rel=1e-12, abs=1e-12), k
    # exact: the file read back and loaded into an evaluator gives the same report
    path = tmp_path / "pairs.jsonl"
    write_pairs(df, path)
    back = read_pairs(path)
    assert back.equals(df.astype(back.dtypes.to_dict()))
    ev = evaluator_from_pairs(back, {ds.split: ds})
    again = ev.evaluate()
    a, b = rep.to_dict(), again.to_dict()
    a.pop("config"), b.pop("config")
    assert a == b


def test_grdkit_profile_rows_match_dense_masks():
    """I and U of each row against plain numpy on the decoded masks (original resolution)."""
    ds = cow_dataset()
    preds = _cow_predictions(ds)
    df = evaluate(preds, ds, per_pair=True).pairs.set_index(["expression_id", "image_id"])
    by_pair = {(p["expression_id"], p["image_id"]): p["segmentation"] for p in preds}
    for t in ds.targets:
        row = df.loc[(t.expression_id, t.image_id)]
        gt = masks.decode(t.segmentation).astype(bool)
        seg = by_pair.get((t.expression_id, t.image_id))
        pm = np.zeros_like(gt) if seg is None else masks.decode(seg).astype(bool)
        assert row["inter"] == np.count_nonzero(gt & pm)
        assert row["union"] == np.count_nonzero(gt | pm)
        assert row["pred_area"] == np.count_nonzero(pm)
        want = ("TP" if pm.any() else "FN") if t.positive else ("FP" if pm.any() else "TN")
        assert row["outcome"] == want and row["no_target"] == (not pm.any())
        assert row["expression"] == "cow" and row["file_name"] == ds.image(t.image_id).file_name


def test_cli_per_pair_file_and_report_refuses_a_forged_row(tmp_path, capsys):
    ds = cow_dataset()
    gt = tmp_path / "cow.json"
    grdkit.save_dataset(ds, gt)
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps(_cow_predictions(ds)))
    pp = tmp_path / "pairs.jsonl"
    code, _, err = run_cli(["eval", preds, "--gt", gt, "--per-pair", pp,
                              "--json", tmp_path / "r.json"], capsys)
    assert code == 0, err
    lines = pp.read_text().splitlines()
    assert len(lines) == 63 and list(json.loads(lines[0])) == list(COLUMNS)
    # a row claiming I > U (a forged file) is refused with one line naming the file
    rec = [json.loads(x) for x in lines]
    k = next(i for i, r in enumerate(rec) if r["outcome"] == "TP")
    rec[k]["inter"] = rec[k]["union"] + 5
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rec))
    code, _, err = run_cli(["report", "--per-pair", bad, "--gt", gt, "--out", tmp_path / "h"],
                           capsys)
    assert code == 2 and err.startswith("grdkit: error:") and "intersection" in err
    assert len(err.strip().splitlines()) == 1
    # a line that is not a row names its line number
    bad.write_text(lines[0] + "\n" + '{"split": "test"}\n')
    code, _, err = run_cli(["report", "--per-pair", bad, "--gt", gt, "--out", tmp_path / "h"],
                           capsys)
    assert code == 2 and "line 2" in err


def test_merged_shards_write_the_single_pass_rows(tmp_path, capsys):
    ds = cow_dataset()
    gt = tmp_path / "cow.json"
    grdkit.save_dataset(ds, gt)
    preds = _cow_predictions(ds)
    one = tmp_path / "preds.json"
    one.write_text(json.dumps(preds))
    code, _, err = run_cli(["eval", one, "--gt", gt, "--per-pair", tmp_path / "one.jsonl",
                            "--profile", "rela"], capsys)
    assert code == 0, err
    states = []
    for k in range(2):
        part = tmp_path / f"p{k}.json"
        part.write_text(json.dumps(preds[k::2]))
        states.append(tmp_path / f"s{k}.npz")
        code, _, err = run_cli(["eval", part, "--gt", gt, "--profile", "rela", "--save-state",
                                states[-1]], capsys)
        assert code == 0, err
    code, _, err = run_cli(["eval", "merge", *states, "--gt", gt, "--per-pair",
                            tmp_path / "merged.jsonl", "--html", tmp_path / "html"], capsys)
    assert code == 0, err
    assert (tmp_path / "merged.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert "Predictions are not drawn" in (tmp_path / "html" / "gallery-worst.html").read_text()
