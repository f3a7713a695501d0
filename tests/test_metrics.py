"""GRESMetrics (torchmetrics) equals `grdkit eval` on the same predictions, under every profile:
on 32 generated prediction sets (sizes not multiples of 480, empty / full masks, other
resolutions, logits, no-target decisions) and on the real RefCOCOg sample, in one process and
split over two gloo processes. `grdkit eval` reads the predictions from a written preds.json (its
CLI path), GRESMetrics gets them once as tensors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the grdkit[baselines] extra")
pytest.importorskip("torchmetrics", reason="needs the grdkit[baselines] extra")

import grdkit
from grdkit.evaluators.functional import PROTOCOLS
from grdkit.format import GresDataset, masks
from grdkit.metrics import GRESMetrics

from .conftest import REFCOCOG, need, run_cli

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(37, 53), (61, 47), (45, 45), (29, 71), (50, 33)]  # none a multiple of 480


def blob(rng, h, w, p=0.5):
    """A random mask: one or two rectangles, sometimes empty."""
    m = np.zeros((h, w), np.uint8)
    if rng.random() < p:
        for _ in range(int(rng.integers(1, 3))):
            y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
            m[y:y + int(rng.integers(2, h - y)), x:x + int(rng.integers(2, w - x))] = 1
    return m


def generated_gt(seed: int = 0) -> GresDataset:
    """Three groups of 3-4 images of odd sizes, two expressions each, ~half the pairs negative."""
    rng = np.random.default_rng(seed)
    images, exprs, groups, targets = [], [], [], []
    iid = eid = 0
    for g in range(1, 4):
        ids = []
        for _ in range(int(rng.integers(3, 5))):
            iid += 1
            h, w = SIZES[iid % len(SIZES)]
            images.append({"id": iid, "file_name": f"{iid}.jpg", "height": h, "width": w})
            ids.append(iid)
        eids = []
        for _ in range(2):
            eid += 1
            eids.append(eid)
            exprs.append({"id": eid, "text": f"thing {eid}", "group_id": g})
            for i in ids:
                h, w = SIZES[i % len(SIZES)]
                m = blob(rng, h, w, 0.6)
                targets.append({"expression_id": eid, "image_id": i, "positive": bool(m.any()),
                                "segmentation": masks.encode(m), "ann_ids": [1] if m.any() else []})
        groups.append({"id": g, "expression_ids": eids, "image_ids": ids})
    info = {"name": "gen", "split": "val", "grdkit_version": "0", "recipe": {}, "sources": {}}
    return GresDataset.from_dict({"info": info, "images": images, "expressions": exprs,
                                  "groups": groups, "targets": targets})


def centre(n_in, n_out):
    """Centre-sampled nearest index, written out here (independent of grdkit's)."""
    return [((2 * i + 1) * n_in) // (2 * n_out) for i in range(n_out)]


def prediction_set(ds: GresDataset, k: int):
    """Set ``k``: per pair a tensor fed to GRESMetrics, the mask grdkit predict would write for
    it (original size), and maybe a no-target decision. Kinds cycle over float maps at the
    original size, float maps at 24 x 40, logits, bool masks at 31 x 29, empty and full masks;
    sets with k % 3 == 2 carry no-target decisions."""
    rng = np.random.default_rng(100 + k)
    kind = ["prob", "prob_low", "logit", "bool_low", "bool", "mixed"][k % 6]
    decide = k % 3 == 2
    out = []
    for t in ds.targets:
        h, w = t.segmentation["size"]
        gt = masks.decode(t.segmentation).astype(np.float32)
        r = rng.random()
        this = kind if kind != "mixed" else ["empty", "full", "prob"][int(rng.integers(3))]
        if this in ("prob", "logit", "empty", "full"):
            p = np.clip(0.6 * gt + 0.5 * rng.random((h, w)), 0, 1).astype(np.float32)
            if this == "empty" or (r < 0.15 and kind != "mixed"):
                p[:] = 0.0
            if this == "full" or (r > 0.9 and kind != "mixed"):
                p[:] = 1.0
            x = torch.from_numpy(p)
            m = p > 0.5
            if this == "logit":
                x = torch.logit(x.clamp(1e-4, 1 - 1e-4))
                m = torch.sigmoid(x).numpy() > 0.5
        elif this == "prob_low":
            x = torch.rand(24, 40, generator=torch.Generator().manual_seed(k * 1000 + len(out)))
            m = (torch.nn.functional.interpolate(x[None, None], size=(h, w), mode="bilinear",
                                                 align_corners=False)[0, 0] > 0.5).numpy()
        else:
            lo = (rng.random((31, 29)) < 0.4) if this == "bool_low" else \
                (gt > 0) ^ (rng.random((h, w)) < 0.1)
            x = torch.from_numpy(lo)
            m = lo[centre(lo.shape[0], h)][:, centre(lo.shape[1], w)] if this == "bool_low" \
                else lo
        nt = bool(rng.random() < 0.4) if decide else None
        out.append((t, x, np.asarray(m, np.uint8), nt, kind == "logit"))
    return out


def preds_json(items, path: Path, min_pixels: int = 1) -> Path:
    recs = []
    for t, _, m, nt, _ in items:
        rec = {"expression_id": t.expression_id, "image_id": t.image_id,
               "segmentation": masks.encode(m) if m.sum() >= min_pixels or nt is not None
               else None}
        if nt is not None:
            rec["no_target"] = nt
        recs.append(rec)
    path.write_text(json.dumps(recs))
    return path


def feed(metric: GRESMetrics, items, batch: int = 3) -> None:
    """Batches of pairs of one prediction kind (tensors of one shape stack)."""
    by_shape = {}
    for it in items:
        by_shape.setdefault((tuple(it[1].shape), it[1].dtype), []).append(it)
    for group in by_shape.values():
        for s in range(0, len(group), batch):
            chunk = group[s:s + batch]
            nts = [c[3] for c in chunk]
            metric.update(torch.stack([c[1] for c in chunk]),
                          [c[0].segmentation for c in chunk],
                          expression_ids=[c[0].expression_id for c in chunk],
                          image_ids=torch.tensor([c[0].image_id for c in chunk]),
                          no_target=None if nts[0] is None else torch.tensor(nts))


def close(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k, v in a.items():
        if v is None or b[k] is None:
            assert v is None and b[k] is None, k
        else:
            assert abs(v - b[k]) <= 1e-9, (k, v, b[k])


@pytest.mark.parametrize("profile", PROTOCOLS)
def test_equal_to_grdkit_eval_on_32_generated_sets(tmp_path, profile, capsys):
    ds = generated_gt()
    gt = tmp_path / "gt.json"
    grdkit.save_dataset(ds, gt)
    seen = set()
    for k in range(32):
        items = prediction_set(ds, k)
        path = preds_json(items, tmp_path / f"p{k}.json")
        code, _, err = run_cli(["eval", path, "--gt", gt, "--profile", profile, "--json",
                                  tmp_path / "r.json"], capsys)
        assert code == 0, err
        ref = json.loads((tmp_path / "r.json").read_text())["metrics"]
        logits = items[0][4]
        metric = GRESMetrics(profile=profile, from_logits=logits)
        feed(metric, items)
        got = metric.compute()
        close(got, ref)
        assert metric.report(ds).metrics == ref  # the evaluator's own report: bit for bit
        seen.add(json.dumps(got, sort_keys=True))
    assert len(seen) == 32  # every set scores differently: the sets are not degenerate


def test_min_pixels_threshold_and_duplicates(tmp_path):
    ds = generated_gt(1)
    items = prediction_set(ds, 0)
    ref = grdkit.evaluate(json.loads(preds_json(items, tmp_path / "p.json", 30).read_text()),
                          ds, min_pixels=30).metrics
    metric = GRESMetrics(min_pixels=30)
    feed(metric, items)
    feed(metric, items[:4])  # DistributedSampler padding repeats pairs: counted once
    close(metric.compute(), ref)
    assert len(metric.pairs()) == len(ds.targets)
    t, x, _, _, _ = items[0]
    bad = GRESMetrics()
    bad.update(torch.zeros(1, *x.shape), [t.segmentation], expression_ids=[t.expression_id],
               image_ids=[t.image_id])
    bad.update(torch.ones(1, *x.shape), [t.segmentation], expression_ids=[t.expression_id],
               image_ids=[t.image_id])
    with pytest.raises(ValueError, match="updated twice with different results"):
        bad.compute()


def test_bool_targets_and_checks():
    g = torch.zeros(2, 9, 11, dtype=torch.bool)
    g[0, 2:5, 3:7] = True
    p = g.clone()
    p[0, 2, 3] = False  # I = 11, U = 12
    m = GRESMetrics()
    m.update(p, g, expression_ids=[1, 1], image_ids=[1, 2])
    r = m.compute()
    assert r["gres_miou"] == pytest.approx(100 * (11 / 12 + 1) / 2)
    assert r["n_acc"] == 100.0 and r["t_acc"] == 100.0 and r["ciou"] == pytest.approx(100 * 11 / 12)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        m.update(p[0], g, expression_ids=[1], image_ids=[1])
    with pytest.raises(TypeError, match="bool or floating"):
        m.update(p.int(), g, expression_ids=[1, 1], image_ids=[1, 2])
    with pytest.raises(ValueError, match="expression_ids must be 2 integers"):
        m.update(p, g, expression_ids=[1], image_ids=[1, 2])
    with pytest.raises(ValueError, match="original sizes"):
        m.update(p, g, expression_ids=[1, 1], image_ids=[1, 2], sizes=[[10, 11], [9, 11]])
    with pytest.raises(ValueError, match="targets must be a bool"):
        m.update(p, g.float(), expression_ids=[1, 1], image_ids=[1, 2])
    with pytest.raises(ValueError, match="profile"):
        GRESMetrics(profile="nope")
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert GRESMetrics().compute()["gres_miou"] is None  # nothing updated: undefined


def real_sample(tmp_path):
    """The real RefCOCOg sample built as G-RefCg val+test (positives and negatives), with
    predictions derived from the ground truth (shifted, eroded, emptied)."""
    need(REFCOCOG)
    splits, _ = grdkit.build_dataset("g-refcocog", REFCOCOG, min_images=1)
    ds = splits["val"]
    rng = np.random.default_rng(5)
    items = []
    for t in ds.targets:
        gt = masks.decode(t.segmentation)
        m = np.roll(gt, int(rng.integers(-9, 10)), axis=int(rng.integers(2)))
        if not gt.any():
            m = (rng.random(gt.shape) < 0.002).astype(np.uint8) if rng.random() < 0.5 else m
        p = np.clip(m * 0.8 + 0.3 * rng.random(gt.shape), 0, 1).astype(np.float32)
        items.append((t, torch.from_numpy(p), (p > 0.5).astype(np.uint8), None, False))
    return ds, items


@pytest.mark.parametrize("profile", PROTOCOLS)
def test_equal_to_grdkit_eval_on_the_real_refcocog_sample(tmp_path, profile):
    ds, items = real_sample(tmp_path)
    ref = grdkit.evaluate(json.loads(preds_json(items, tmp_path / "p.json").read_text()), ds,
                          protocol=profile).metrics
    metric = GRESMetrics(profile=profile)
    feed(metric, items, batch=1)  # COCO images of different sizes: one pair per update
    got = metric.compute()
    close(got, ref)
    assert 0 < got["gres_miou"] < 100


GLOO = r"""
import json, sys
import torch, torch.distributed as dist
sys.path.insert(0, sys.argv[1])
from tests.test_metrics import feed, generated_gt, prediction_set
from grdkit.evaluators.functional import PROTOCOLS
from grdkit.metrics import GRESMetrics
dist.init_process_group("gloo")
rank = dist.get_rank()
ds = generated_gt()
out = {}
for k in (0, 1, 2, 3, 5):
    items = prediction_set(ds, k)
    half = items[:len(items) * 2 // 5] if rank == 0 else items[len(items) * 2 // 5 - 2:]
    for profile in PROTOCOLS:
        m = GRESMetrics(profile=profile, from_logits=items[0][4])
        if not (k == 5 and rank == 1):  # set 5: rank 1 sees no pair at all
            feed(m, half if k != 5 else items)
        out[f"{k}/{profile}"] = m.compute()
dist.destroy_process_group()
# one file per rank: two ranks printing ~5 kB lines to one pipe can interleave them
with open(f"{sys.argv[2]}/result-{rank}.json", "w") as f:
    json.dump(out, f)
"""


def test_two_gloo_processes_give_the_single_process_result(tmp_path):
    """Rank 0 holds 40% of the pairs, rank 1 the rest plus 2 of rank 0's (padding); in set 5
    rank 1 has nothing. compute() on each rank gives the one-process result."""
    script = tmp_path / "gloo.py"
    script.write_text(GLOO)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29541", str(script), str(ROOT), str(tmp_path)],
                         capture_output=True,
                         text=True, env=env, timeout=300, check=False, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    results = [json.loads((tmp_path / f"result-{r}.json").read_text()) for r in (0, 1)]
    ds = generated_gt()
    for k in (0, 1, 2, 3, 5):
        items = prediction_set(ds, k)
        for profile in PROTOCOLS:
            one = GRESMetrics(profile=profile, from_logits=items[0][4])
            feed(one, items)
            want = one.compute()
            for r in results:
                close(r[f"{k}/{profile}"], want)
