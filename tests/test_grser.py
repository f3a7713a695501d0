"""GRSer: each equation on small tensors against hand-computed values, and the switches."""

import math

import pytest

torch = pytest.importorskip("torch", reason="needs the grdkit[baselines] extra")

from grdkit.baselines.data import GroupDataset, collate
from grdkit.baselines.grser import (
    MARGIN,
    GRSer,
    cosine_map,
    decide,
    hierarchy_order,
    prototypes,
    ranks,
)

from .conftest import SHARED, cow_dataset, cow_store


def test_eq1_cosine_heatmap():
    v = torch.zeros(1, 2, 1, 3)
    v[0, :, 0, 0] = torch.tensor([1.0, 0.0])   # parallel to q
    v[0, :, 0, 1] = torch.tensor([0.0, 2.0])   # orthogonal
    v[0, :, 0, 2] = torch.tensor([-3.0, 3.0])  # 135 degrees
    q = torch.tensor([2.0, 0.0])
    m = cosine_map(v, q)
    assert m.shape == (1, 1, 1, 3)
    assert m[0, 0, 0].tolist() == pytest.approx([1.0, 0.0, -math.sqrt(0.5)])


def test_eq2_prototypes():
    v = torch.tensor([[[[1.0, 3.0]], [[2.0, 4.0]]]])  # (1, C=2, 1, 2)
    m_l = torch.tensor([[[[1.0, 0.5]]]])              # (1, 1, 1, 2)
    # p = mean over pixels of m * v = ((1*1 + .5*3) / 2, (1*2 + .5*4) / 2)
    assert prototypes(v, m_l)[0].tolist() == pytest.approx([1.25, 2.0])


def test_eq3_vision_heatmaps_via_prototypes():
    v = torch.tensor([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]])  # two 1x1 images
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    m = torch.stack([cosine_map(v, p[i]) for i in range(2)], 1)[:, :, 0]
    assert m[:, :, 0, 0].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_eq4_ranking_hand_computed():
    l_pos, l_neg = torch.tensor([0.0, 0.0]), torch.tensor([10.0, 0.0])
    p = torch.tensor([[3.0, 0.0], [1.0, 0.0], [9.0, 0.0], [0.0, 2.0]])
    # s_pos = [3, 1, 9, 2] -> R_pos (ascending) = [2, 0, 3, 1]
    # s_neg = [7, 9, 1, sqrt(104)=10.2] -> R_neg (descending) = [2, 1, 3, 0]
    assert ranks(torch.tensor([3.0, 1, 9, 2])).tolist() == [2, 0, 3, 1]
    assert ranks(torch.tensor([7.0, 9, 1, 104 ** 0.5]), descending=True).tolist() == [2, 1, 3, 0]
    # R_pos + R_neg = [4, 1, 6, 1] -> order [1, 3, 0, 2] (tie 1 vs 3 kept in group order)
    assert hierarchy_order(p, l_pos, l_neg).tolist() == [1, 3, 0, 2]
    assert hierarchy_order(p, l_pos, l_neg, "pos").tolist() == [1, 3, 0, 2]
    assert hierarchy_order(p, l_pos, l_neg, "neg").tolist() == [3, 1, 0, 2]
    g = torch.Generator().manual_seed(0)
    assert sorted(hierarchy_order(p, l_pos, l_neg, "random", g).tolist()) == [0, 1, 2, 3]


def test_inference_rule():
    l_pos, l_neg = torch.tensor([0.0, 0.0]), torch.tensor([3.0, 0.0])
    a = torch.tensor([[0.0, 0.0], [0.9, 0.0], [1.5, 0.0], [3.0, 0.0]])
    # d_pos + 1 < d_neg: 0+1<3 yes; 0.9+1<2.1 yes; 1.5+1<1.5 no; 3+1<0 no
    assert decide(a, l_pos, l_neg).tolist() == [True, True, False, False]
    assert MARGIN == 1.0


def small_model(**kw):
    return GRSer(vision_weights=None, width=16, group_size=4, **kw)


def batch4():
    return collate([GroupDataset(cow_dataset(), cow_store(), group_size=4)[0]])


def test_triplet_loss_matches_hand_computation():
    m = small_model(mirror=False)
    b = batch4()
    pos = b["positive"][0]
    out = {"p": torch.zeros(4, 1, 16, 16), "a": torch.tensor([[0.0, 0.0]] * 4),
           "l_pos": torch.tensor([[1.0, 0.0]]), "l_neg": torch.tensor([[0.0, 2.0]]),
           "mirror": None}
    loss, parts = m.loss(out, b, epoch=1, epochs=4)
    # anchor at origin: d(a, L') = 1, d(a, L'_anti) = 2. Positive image: max(1 - 2 + 1, 0) = 0;
    # negative image: max(2 - 1 + 1, 0) = 2. Mean over 4 images (2 positive) = 1.
    assert pos.tolist().count(True) == 2
    assert parts["triplet"] == pytest.approx(1.0, abs=1e-4)
    assert parts["triplet_weight"] == 0.5  # t/T = 2/4
    assert parts["bce"] == pytest.approx(math.log(2), abs=1e-6)  # zero logits on positives
    assert float(loss) == pytest.approx(math.log(2) + 0.5 * 1.0, abs=1e-4)


def test_forward_shapes_and_switches():
    b = batch4()
    m = small_model()
    m.train()
    out = m(b)
    assert out["p"].shape == (4, 1, 16, 16) and out["a"].shape == (4, 16)
    assert out["mirror"].shape == (4, 1, 16, 16)
    loss, parts = m.loss(out, b)
    assert torch.isfinite(loss) and {"bce", "mirror", "triplet"} <= set(parts)
    loss.backward()
    m.eval()
    with torch.no_grad():
        out = m(b)
    assert out["mirror"] is None  # mirror branch only when training
    probs, decision = m.probabilities(out)
    assert probs.shape == (4, 1, 16, 16) and decision.dtype == torch.bool
    assert small_model(tqm=False).z_conv[0].in_channels == 16 + 1
    assert m.z_conv[0].in_channels == 16 + 1 + 4
    _, dec = small_model(triplet=False).eval().probabilities(out)
    assert dec is None
    with pytest.raises(ValueError):
        small_model(rank="best")


def test_cli_train_predict_eval(tmp_path, capsys):
    import json

    import grdkit

    from .conftest import COCO_IMAGES, need, run_cli

    need(COCO_IMAGES)
    data = tmp_path / "cow.json"
    grdkit.save_dataset(cow_dataset(), data)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "grser", "--data", data, "--img-root", SHARED, "--out", run,
                            "--size", "64", "--group-size", "4", "--width", "16",
                            "--max-steps", "2", "--epochs", "2", "--rank", "pos",
                            "--no-progress"], capsys)
    assert code == 0, err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model_args"]["rank"] == "pos" and cfg["model_args"]["group_size"] == 4
    done = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert done["event"] == "done" and done["step"] == 2
    preds = tmp_path / "preds.json"
    code, _, err = run_cli(["predict", "--checkpoint", run, "--data", data, "--img-root", SHARED,
                            "--out", preds, "--no-progress"], capsys)
    assert code == 0, err
    assert len(json.loads(preds.read_text())) == 63
    code, out, _ = run_cli(["eval", preds, "--gt", data, "--strict"], capsys)
    assert code == 0 and "gres_miou" in out
