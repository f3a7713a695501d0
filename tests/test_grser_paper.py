"""GRSer as the GRES paper specifies (issue 17): the hierarchizer's training signal (eq. 2, 4, 5),
its diagnostics, Table 4 / Table 6 through the CLI, union training (§5.3) and the RES setting
(§5.1)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the grdkit[baselines] extra")

from grdkit.baselines.data import GroupDataset, collate
from grdkit.baselines.grser import GRSer, cosine_map, prototypes, roc_auc

from .conftest import COCO_IMAGES, MSRC_COW, SHARED, cow_dataset, cow_store, need, run_cli


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is fastest on a shared CPU (and avoids oversubscription)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# -- eq. 2 / eq. 5: the anchor lives where the prototypes live ----------------------------------
def test_triplet_gradient_reaches_the_v_features_the_prototypes_pool():
    m = GRSer(vision_weights=None, width=16, group_size=4, mirror=False).train()
    b = collate([GroupDataset(cow_dataset(), cow_store(), group_size=4)[0]])
    seen = {}

    def keep(mod, args, out):
        out.retain_grad()
        seen["v"] = out

    m.v_merge.register_forward_hook(keep)
    out = m(b)
    v = seen["v"]
    # the anchor is eq. 2's prototype of z_n's V-part: no layer between V_n and a_n
    p = prototypes(v, cosine_map(v, out["l_pos"][0]))
    assert torch.allclose(out["a"], p, atol=1e-6)
    pos = b["positive"][0]
    anchor_pos = torch.where(pos[:, None], out["l_pos"], out["l_neg"])
    anchor_neg = torch.where(pos[:, None], out["l_neg"], out["l_pos"])
    tri = torch.nn.functional.triplet_margin_loss(out["a"], anchor_pos, anchor_neg, margin=1.0)
    assert float(tri.detach()) > 0
    tri.backward()
    assert v.grad is not None and v.grad.abs().sum() > 0         # reaches V_n
    assert m.w_l.weight.grad.abs().sum() > 0                      # and omega_l (eq. 1, 4, 5)
    assert all(q.grad is None for q in m.z_conv.parameters())    # not through the decoder
    # the old anchor (pooled conv over z_n) is still there as a named option
    z = GRSer(vision_weights=None, width=16, group_size=4, mirror=False, anchor="z").eval()
    with torch.no_grad():
        assert not torch.allclose(z(b)["a"], out["a"].detach())


def test_eq2_mask_pooling_option():
    v = torch.tensor([[[[1.0, 3.0]], [[2.0, 4.0]]]])  # (1, C=2, 1, 2)
    m_l = torch.tensor([[[[1.0, -0.5]]]])
    # mean: sum(m * v) / (H*W) = ((1 - 1.5) / 2, (2 - 2) / 2); mask: / sum|m| = 1.5
    assert prototypes(v, m_l)[0].tolist() == pytest.approx([-0.25, 0.0])
    assert prototypes(v, m_l, "mask")[0].tolist() == pytest.approx([-0.5 / 1.5, 0.0], abs=1e-5)
    with pytest.raises(ValueError):
        prototypes(v, m_l, "max")


def test_roc_auc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    s = torch.tensor(rng.integers(0, 5, 40).astype(float))     # many ties
    y = torch.tensor(rng.random(40) < 0.4)
    pos, neg = s[y], s[~y]
    pairwise = ((pos[:, None] > neg[None]).float() + 0.5 * (pos[:, None] == neg[None]).float())
    assert roc_auc(s, y) == pytest.approx(float(pairwise.mean()))
    assert roc_auc(torch.tensor([0.0, 1.0]), torch.tensor([False, True])) == 1.0
    assert roc_auc(torch.tensor([1.0]), torch.tensor([True])) is None


# -- a toy two-class problem: training makes eq. 4 put positives first ----------------------------
class StubVision(torch.nn.Module):
    """Three strided convolutions with EfficientNet-Lite0's channels (8 / 16 / 32 strides)."""

    channels = (40, 112, 320)

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 40, 8, stride=8)
        self.b = torch.nn.Conv2d(40, 112, 2, stride=2)
        self.c = torch.nn.Conv2d(112, 320, 2, stride=2)

    def forward(self, x):
        f8 = torch.relu(self.a(x.float() / 255))
        f16 = torch.relu(self.b(f8))
        return [f8, f16, torch.relu(self.c(f16))]


def toy_item(rng, n=4, s=32):
    """n noisy images, half with a red square (positive, its mask) and half with a blue one."""
    imgs = rng.integers(0, 60, (n, 3, s, s), dtype=np.uint8)
    masks = np.zeros((n, 1, s, s), np.uint8)
    pos = np.array([True, False] * (n // 2))
    rng.shuffle(pos)
    for j in range(n):
        y, x = rng.integers(0, s - 12, 2)
        imgs[j, 0 if pos[j] else 2, y:y + 12, x:x + 12] = 230
        masks[j, 0, y:y + 12, x:x + 12] = pos[j]
    return {"expression_id": 1, "expression": "a red square", "image_ids": list(range(n)),
            "images": torch.from_numpy(imgs), "masks": torch.from_numpy(masks),
            "positive": torch.from_numpy(pos), "sizes": torch.full((n, 2), s)}


def ranking_quality(m, seed=99, groups=10):
    """(prototype AUC, share of positives among the first half of the eq. 4 order)."""
    rng = np.random.default_rng(seed)
    m.eval()
    steps, share = [], []
    with torch.no_grad():
        for _ in range(groups):
            b = collate([toy_item(rng)])
            out = m(b)
            steps.append(m.diagnose(out, b))
            order, pos = out["order"][0].tolist(), b["positive"][0].tolist()
            share.append(sum(pos[i] for i in order[:2]) / 2)
    m.train()
    return m.summarize_diagnostics(steps)["proto_auc"], float(np.mean(share))


@pytest.mark.parametrize("anchor", [
    "prototype",
    # grdkit's old anchor (pooled conv over z_n): nothing trains the ranking (issue 17)
    pytest.param("z", marks=pytest.mark.xfail(strict=True, reason="the old code's anchor")),
])
def test_toy_ranking_puts_positives_first_after_training(anchor):
    torch.manual_seed(0)
    m = GRSer(vision_weights=None, width=16, group_size=4, mirror=False, anchor=anchor, seed=0)
    m.vision = StubVision()
    m.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        b = collate([toy_item(rng), toy_item(rng)])
        loss, _ = m.loss(m(b), b, epoch=9, epochs=10)
        opt.zero_grad()
        loss.backward()
        opt.step()
    auc, share = ranking_quality(m)
    assert auc > 0.95 and share > 0.9, (auc, share)


# -- Table 4 / Table 6 through the CLI ----------------------------------------------------------
def small_cow(tmp_path, name="cow.json", k=5):
    import grdkit
    from grdkit.builders.imagegroup import group_from_files

    need(MSRC_COW)
    need(COCO_IMAGES)
    pos = [(f"msrc_cow/images/{p.name}", f"msrc_cow/masks/{p.name}")
           for p in sorted((MSRC_COW / "images").glob("*.png"))[:k]]
    neg = [f"coco_train2014_images/{p.name}" for p in sorted(COCO_IMAGES.glob("*.jpg"))[:k]]
    path = tmp_path / name
    grdkit.save_dataset(group_from_files(SHARED, "cow", pos, neg, name=name), path)
    return path


def test_table4_rankings_and_table6_group_sizes_train_and_predict(tmp_path, capsys, monkeypatch):
    from grdkit.baselines import grser

    modes = []
    real = grser.hierarchy_order
    monkeypatch.setattr(grser, "hierarchy_order",
                        lambda p, lp, ln, mode="pos+neg", generator=None:
                        modes.append((p.shape[0], mode)) or real(p, lp, ln, mode, generator))
    data = small_cow(tmp_path)
    # (N, training flags, predict flags, trained rank, rank seen at test, chunk at test)
    cases = [(1, ["--no-hierarchizer"], [], "random", "random", 1),
             (3, [], ["--rank", "random", "--group-size", "5"], "pos+neg", "random", 5),
             (5, ["--rank", "pos"], [], "pos", "pos", 5),
             (8, ["--rank", "random"], ["--rank", "pos+neg"], "random", "pos+neg", 8)]
    for n, train_flags, pred_flags, trained, tested, chunk in cases:
        run = tmp_path / f"run{n}"
        code, _, err = run_cli(["train", "grser", "--data", data, "--img-root", SHARED,
                                "--out", run, "--size", "64", "--group-size", str(n),
                                "--width", "16", "--max-steps", "1", "--epochs", "1",
                                "--workers", "0", "--no-progress", *train_flags], capsys)
        assert code == 0, err
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["model_args"]["rank"] == trained and cfg["group_size"] == n
        epoch = next(json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
                     if '"event": "epoch"' in x)
        assert set(epoch["diagnostics"]) == {"proto_auc", "pos_auc", "neg_auc",
                                             "identity_share", "l_gap"}
        modes.clear()
        preds = tmp_path / f"preds{n}.json"
        code, _, err = run_cli(["predict", "--checkpoint", run, "--data", data, "--img-root",
                                SHARED, "--out", preds, "--workers", "0", "--no-progress",
                                *pred_flags], capsys)
        assert code == 0, err
        assert len(json.loads(preds.read_text())) == 10
        assert {mode for _, mode in modes} == {tested}
        assert max(size for size, _ in modes) == chunk
    code, _, err = run_cli(["train", "grser", "--data", data, "--img-root", SHARED, "--out",
                            tmp_path / "bad", "--no-hierarchizer", "--rank", "pos"], capsys)
    assert code == 2 and "--no-hierarchizer is --rank random" in err


def test_rank_at_predict_is_refused_for_a_model_without_ranking(tmp_path, capsys):
    data = small_cow(tmp_path, k=2)
    run = tmp_path / "lts"
    code, _, err = run_cli(["train", "lts", "--data", data, "--img-root", SHARED, "--out", run,
                            "--size", "32", "--group-size", "2", "--width", "16", "--d-k", "16",
                            "--max-steps", "0", "--workers", "0", "--no-progress"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["predict", "--checkpoint", run, "--data", data, "--img-root", SHARED,
                            "--out", tmp_path / "p.json", "--rank", "pos", "--no-progress"],
                           capsys)
    assert code == 2 and "no heatmap ranking" in err


# -- §5.3: union training; §5.1: the RES setting -------------------------------------------------
def test_union_training_over_two_files(tmp_path, capsys):
    from grdkit.format import load_dataset
    from grdkit.format.derive import union

    a, b = small_cow(tmp_path, "a.json", k=3), small_cow(tmp_path, "b.json", k=2)
    da, db = load_dataset(a), load_dataset(b)
    assert {e.id for e in da.expressions} == {e.id for e in db.expressions}  # ids collide
    u, counts = union([da, db])
    assert len(u.expressions) == 2 and len({e.id for e in u.expressions}) == 2
    assert len(u.groups) == 2 and len(u.targets) == len(da.targets) + len(db.targets)
    assert len(u.images) == 6 and counts.dropped["shared_images"] == 4  # same files: one record
    for e, src in zip(u.expressions, (da, db)):
        assert e.extra["union_source"] == (0 if src is da else 1)
        old = src.expressions[0].id
        assert [(u.image(t.image_id).file_name, t.positive, t.segmentation)
                for t in u.targets_of_expression(e.id)] == \
            [(src.image(t.image_id).file_name, t.positive, t.segmentation)
             for t in src.targets_of_expression(old)]
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "grser", "--data", a, "--data", b, "--img-root", SHARED,
                            "--out", run, "--size", "32", "--group-size", "2", "--width", "16",
                            "--max-steps", "2", "--epochs", "1", "--workers", "0",
                            "--no-progress"], capsys)
    assert code == 0, err
    cfg = json.loads((run / "config.json").read_text())
    assert [(s["path"], s["expressions"], s["images"]) for s in cfg["data_sources"]] == \
        [(str(a), 1, 6), (str(b), 1, 4)]
    done = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert done["step"] == 2  # one item per expression of the union, batch 1: 2 steps/epoch


def test_res_setting_has_no_negative_and_the_same_positives(tmp_path, capsys, refcocog_root):
    from grdkit.builders.refer import build_dataset
    from grdkit.format import load_dataset
    from grdkit.format.derive import res_setting

    splits, _ = build_dataset("g-refcocog", refcocog_root, min_images=1)
    ds = next(iter(splits.values()))
    assert any(not t.positive for t in ds.targets)
    res, counts = res_setting(ds)
    assert not any(not t.positive for t in res.targets)
    assert [(t.expression_id, t.image_id, t.segmentation) for t in res.targets] == \
        [(t.expression_id, t.image_id, t.segmentation) for t in ds.targets if t.positive]
    for g in res.groups:  # each expression's group is exactly the images it refers to
        (e,) = g.expression_ids
        assert set(g.image_ids) == {t.image_id for t in ds.targets_of_expression(e) if t.positive}
    assert counts.dropped["negative"] == sum(not t.positive for t in ds.targets)
    path = tmp_path / "gres.json"
    from grdkit import save_dataset

    save_dataset(ds, path)
    code, out, err = run_cli(["derive", "res", path, "--out", tmp_path / "res.json"], capsys)
    assert code == 0, err
    assert load_dataset(tmp_path / "res.json").targets == res.targets
    assert "negative" in out and str(counts.dropped["negative"]) in out


def test_margin_rank_hand_computed():
    from grdkit.baselines.grser import hierarchy_order

    l_pos, l_neg = torch.tensor([0.0, 0.0]), torch.tensor([10.0, 0.0])
    p = torch.tensor([[3.0, 0.0], [1.0, 0.0], [9.0, 0.0], [0.0, 2.0]])
    # s_pos - s_neg = [3 - 7, 1 - 9, 9 - 1, 2 - sqrt(104)] = [-4, -8, 8, -8.2] -> [3, 1, 0, 2]
    assert hierarchy_order(p, l_pos, l_neg, "margin").tolist() == [3, 1, 0, 2]
