"""LTS as the LTS paper (Jing et al., CVPR 2021) specifies: eq. 5-8 and 11-13 against small
hand-computed cases or a separate NumPy implementation, the GloVe + packed bi-GRU text encoder,
the Adam / step-schedule recipe of §4.1 and its preset, the heatmap peak of §4.3, and the
lts-paper preset end to end (generated Darknet53 weights, a generated tiny GloVe file, the real
cow group)."""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the grdkit[baselines] extra")

import grdkit
from grdkit.baselines.run import PRESETS, TrainConfig, apply_preset
from grdkit.errors import InputError

from .conftest import COCO_IMAGES, SHARED, cow_dataset, need, run_cli

WORDS = ["the", "a", "cow", "brown", "on", "left", "grass", "standing", "black", "white"]


def write_glove(path, dim: int = 8, seed: int = 0):
    """A tiny GloVe file in the released text format (``word v_1 ... v_d`` per line)."""
    rng = np.random.default_rng(seed)
    lines = [w + " " + " ".join(f"{v:.5f}" for v in rng.uniform(-1, 1, dim)) for w in WORDS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def glove(tmp_path_factory):
    return write_glove(tmp_path_factory.mktemp("glove") / "glove.tiny.8d.txt")


@pytest.fixture(scope="module")
def darknet(tmp_path_factory):
    """timm's randomly initialised darknet53 state dict, saved as a local weights file."""
    import timm

    path = tmp_path_factory.mktemp("darknet") / "darknet53.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("darknet53", pretrained=False).state_dict(), path)
    return path


def small_lts(glove, **kw):
    from grdkit.baselines.lts import LTS

    torch.manual_seed(0)
    return LTS(vision_weights=None, text=str(glove), gru_dim=4, **{"width": 8, "d_k": 4, **kw})


def lrelu(x):
    return np.where(x > 0, x, 0.1 * x)


def up2(x):
    """Bilinear x2 (align_corners False) of a (C, 2, 2) map, by hand: each output row / column
    mixes the two inputs with weights 1, 3/4 + 1/4, 1/4 + 3/4, 1."""
    u = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    return np.einsum("ij,cjk,lk->cil", u, x, u)


def test_eq5_to_7_fusion_is_literal(glove):
    """F_m1 = g(F_v1 W_v1) * g(f_t W_t); F_mi = concat(g(up(F_m(i-1)) W_m), g(F_vi W_vi)) with
    g = LeakyReLU(0.1) on both branches; F_m3 has d_k channels (eq. 8)."""
    m = small_lts(glove)
    c8, c16, c32 = m.vision.channels
    g = torch.Generator().manual_seed(1)
    f8, f16, f32 = (torch.randn(1, c, s, s, generator=g) for c, s in ((c8, 4), (c16, 2),
                                                                      (c32, 1)))
    t = torch.randn(1, 4, generator=g)
    with torch.no_grad():
        got = m.fuse([f8, f16, f32], t)[0].numpy()
    w = [x.weight[:, :, 0, 0].detach().numpy() for x in m.v_proj]
    wm = [x.weight[:, :, 0, 0].detach().numpy() for x in m.merge]
    wt = m.t_proj[0].weight.detach().numpy()
    assert all(x.bias is None for x in [*m.v_proj, *m.merge, *m.t_proj])  # matrices W
    fm1 = lrelu(np.einsum("oc,chw->ohw", w[0], f32[0].numpy())) * lrelu(wt @ t[0].numpy())[
        :, None, None]
    fm2 = np.concatenate([lrelu(np.einsum("oc,chw->ohw", wm[0], np.repeat(np.repeat(
        fm1, 2, 1), 2, 2))), lrelu(np.einsum("oc,chw->ohw", w[1], f16[0].numpy()))])
    fm3 = np.concatenate([lrelu(np.einsum("oc,chw->ohw", wm[1], up2(fm2))),
                          lrelu(np.einsum("oc,chw->ohw", w[2], f8[0].numpy()))])
    assert got.shape == (4, 4, 4) == fm3.shape  # d_k channels at 1/8
    np.testing.assert_allclose(got, fm3, rtol=1e-5, atol=1e-6)


def test_eq5_leaky_relu_on_both_factors_by_hand(glove):
    """One pixel, one channel by hand: g(-2) * g(3) = -0.2 * 3 = -0.6."""
    m = small_lts(glove)
    c8, c16, c32 = m.vision.channels
    with torch.no_grad():
        for x in (*m.v_proj, m.t_proj[0], *m.merge):
            x.weight.zero_()
        m.v_proj[0].weight[0, 0] = -2.0  # F_v1 W_v1 = -2 on channel 0
        m.t_proj[0].weight[0, 0] = 3.0   # f_t W_t = 3 on channel 0
        m.merge[0].weight[0, 0] = 1.0    # W_m1: identity on channel 0
        m.merge[1].weight[0, 0] = 1.0
        fm = m.fuse([torch.zeros(1, c8, 4, 4), torch.zeros(1, c16, 2, 2),
                     torch.ones(1, c32, 1, 1)], torch.tensor([[1.0, 0, 0, 0]]))
    # F_m1 = g(-2) * g(3) = -0.6; through W_m1 and g: -0.06; through W_m2 and g: -0.006
    assert fm[0, 0].flatten().tolist() == pytest.approx([-0.006] * 16)
    assert float(fm[0, 1:].abs().sum()) == 0.0


def test_eq8_relevance_filter_by_hand(glove):
    """H = conv(K, F_m3), K = f_text W_k: a d_k x 1 x 1 filter, no projection, scale or bias."""
    m = small_lts(glove)
    assert not hasattr(m, "k_vis") and m.k_text.bias is None
    with torch.no_grad():
        m.k_text.weight.copy_(torch.tensor([[3.0, 0, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 0],
                                            [2, 0, 0, 0]]))  # K = [3, -1, 0, 2] for t = e_1
        fm = torch.tensor([[1.0, -1.0], [2.0, 0.5], [5.0, 7.0], [0.5, -2.0]]).view(1, 4, 1, 2)
        h = m.heatmap(fm, torch.tensor([[1.0, 0, 0, 0]]))
    assert h.shape == (1, 1, 1, 2)
    assert h.flatten().tolist() == pytest.approx([3 - 2 + 0 + 1, -3 - 0.5 + 0 - 4])
    scaled = small_lts(glove, relevance="scaled")  # grdkit 0.1's filter, a named option
    assert scaled.k_vis.out_channels == 4 and scaled.k_text.bias is not None
    with pytest.raises(ValueError, match="relevance='literal'"):
        small_lts(glove, fusion="text-every-level", width=8, d_k=4)


def test_eq11_to_13_losses_sum_over_pixels_by_hand(glove):
    """L = L_seg + 0.1 L_loc, each BCE summed over the pixels of an image (mean over images);
    ``mean`` (grdkit 0.1) averages pixels instead, weighting L_loc 4x more against L_seg."""
    batch = {"masks": torch.stack([torch.ones(1, 8, 8), torch.zeros(1, 8, 8)])[None].byte(),
             "index": torch.tensor([0, 1])}
    out = {"p": torch.full((2, 1, 4, 4), 2.0), "h": torch.zeros(2, 1, 2, 2)}
    pos, neg = math.log1p(math.exp(-2)), math.log1p(math.exp(2))  # BCE at logit 2, y = 1 / 0
    loss, parts = small_lts(glove).loss(out, batch)
    assert float(parts["bce_p"]) == pytest.approx((16 * pos + 16 * neg) / 2)
    assert float(parts["bce_h"]) == pytest.approx(4 * math.log(2))
    assert float(loss) == pytest.approx((16 * pos + 16 * neg) / 2 + 0.1 * 4 * math.log(2))
    loss, _ = small_lts(glove, loss_reduction="mean").loss(out, batch)
    assert float(loss) == pytest.approx((pos + neg) / 2 + 0.1 * math.log(2))


def test_glove_bigru_is_packed_and_averages_the_words(glove):
    """A sentence's feature is the same alone and in a padded batch (packed sequences), and
    equals the mean of a plain bi-GRU run over its own words (eq. 1-4)."""
    from grdkit.baselines.encoders import GloveGRUEncoder

    torch.manual_seed(0)
    enc = GloveGRUEncoder(glove, dim=6, max_words=15)
    short, long_ = "the brown cow", "a black cow standing on the grass on the left"
    with torch.no_grad():
        alone = enc([short])[0]
        batched = enc([long_, short])[1]
        ids, _ = enc.ids([short])
        ref = enc.gru(enc.model(ids))[0][0].mean(0)  # no padding at all
        ids2, _ = enc.ids([long_, short])
        unpacked = enc.gru(enc.model(ids2))[0][1, :3].mean(0)  # padding fed to the GRU
    assert alone.shape == (6,)
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone, ref, rtol=0, atol=1e-6)
    assert not torch.allclose(unpacked, alone, atol=1e-4)  # what packing prevents
    assert enc.ids(["The brown COW zebra"])[0].tolist() == [[1, 4, 3, 0]]  # unknown -> 0
    short_enc = GloveGRUEncoder(glove, dim=6, max_words=2)  # the word limit cuts
    assert short_enc.ids([short])[0].tolist() == [[1, 4]]
    assert not enc.model.weight.requires_grad  # frozen table: rebuilt from the file


def test_glove_file_read_as_the_owners_loader_reads_it(tmp_path):
    """stanfordnlp/GloVe eval/python/evaluate.py @0ade0c4 reads ``line.rstrip().split(' ')``
    into a dict (a repeated word keeps its last vector); glove.840B.300d has tokens with spaces
    (more fields than d + 1): the last d fields are the vector, the rest the word."""
    from grdkit.baselines.encoders import read_glove

    p = tmp_path / "glove.quirks.3d.txt"
    p.write_text("the 1 2 3\n. . . 4 5 6\nthe 7 8 9\r\n\nat 0.5 -0.5 1e-3 \n", encoding="utf-8")
    words, vec, digest = read_glove(p)
    assert words == ["the", ". . .", "at"]
    assert vec.tolist() == [[7, 8, 9], [4, 5, 6], [0.5, -0.5, pytest.approx(1e-3)]]
    assert len(digest) == 64


def test_a_run_refuses_another_glove_file(glove, tmp_path):
    """The GloVe file's sha256 is saved with the weights; another file does not load."""
    import hashlib

    from grdkit.baselines.encoders import GloveGRUEncoder, read_glove

    words, vectors, sha = read_glove(glove)
    assert words == WORDS and vectors.shape == (10, 8)
    assert sha == hashlib.sha256(glove.read_bytes()).hexdigest()
    assert vectors[2].tolist() == pytest.approx(
        [float(x) for x in glove.read_text().splitlines()[2].split()[1:]])
    state = GloveGRUEncoder(glove, dim=6).state_dict()
    assert state["glove_sha256"].dtype == torch.uint8 and len(state["glove_sha256"]) == 32
    other = GloveGRUEncoder(write_glove(tmp_path / "glove.other.txt", seed=1), dim=6)
    with pytest.raises(InputError, match="not the GloVe file"):
        other.load_state_dict(state)
    GloveGRUEncoder(glove, dim=6).load_state_dict(state)  # the same file loads


def test_transformer_text_encoder_gru_is_packed_too():
    from grdkit.baselines.encoders import TextEncoder

    torch.manual_seed(0)
    enc = TextEncoder(gru=True)
    with torch.no_grad():
        alone = enc(["cow"])[0]
        batched = enc(["a brown cow standing on the green grass", "cow"])[1]
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)


def test_glove_file_errors_name_the_line(tmp_path):
    from grdkit.baselines.encoders import read_glove

    bad = tmp_path / "glove.bad.txt"
    bad.write_text("cow 0.1 0.2 0.3\nthe 0.1 0.2\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        read_glove(bad)
    bad.write_text("cow 0.1 x 0.3\n", encoding="utf-8")
    with pytest.raises(InputError, match="non-number"):
        read_glove(bad)
    with pytest.raises(InputError, match="not found"):
        read_glove(tmp_path / "glove.none.txt")


def test_eq9_transformer_locate_and_sine_positions(glove):
    from grdkit.baselines.lts import sine_positions

    pe = sine_positions(2, 3, 8)
    assert pe.shape == (6, 8)
    assert pe[0].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]  # sin 0, cos 0 for row and column
    assert torch.equal(pe[1, :4], pe[0, :4]) and not torch.equal(pe[1, 4:], pe[0, 4:])
    assert torch.equal(pe[3, 4:], pe[0, 4:]) and not torch.equal(pe[3, :4], pe[0, :4])
    m = small_lts(glove, locate="transformer", d_k=8)
    assert m.decoder.layer.self_attn.num_heads == 4
    assert m.decoder.layer.linear1.out_features == 1024  # §4.1: 1024 hidden units
    h = m.heatmap(torch.randn(2, 8, 3, 3), torch.randn(2, 4))
    assert h.shape == (2, 1, 3, 3) and torch.isfinite(h).all()


def test_step_schedule_at_the_milestone_and_adam():
    from grdkit.baselines.engine import make_optimizer, make_schedule

    cfg = TrainConfig(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="step",
                      milestones=[30], gamma=0.1)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer(cfg, [p])
    assert type(opt) is torch.optim.Adam
    sched = make_schedule(cfg, opt, steps_per_epoch=4, total=180)
    lrs = []
    for _ in range(125):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == lrs[119] == 1e-3  # epochs 0-29
    assert lrs[120] == pytest.approx(1e-4) and lrs[124] == pytest.approx(1e-4)  # epoch 30 on
    assert type(make_optimizer(TrainConfig(), [p])) is torch.optim.AdamW
    with pytest.raises(InputError, match="schedule"):
        make_schedule(TrainConfig(schedule="cosine"), opt, 4, 180)


def test_lts_paper_preset_is_section_4_1_field_by_field():
    cfg = apply_preset(TrainConfig(model="lts", preset="lts-paper",
                                   model_args={"vision_weights": "d.pth", "text": "glove.txt"}),
                       {"vision_weights", "text"})
    assert cfg.size == 416
    assert cfg.optimizer == "adam" and cfg.lr == 1e-3 and cfg.weight_decay == 0.0
    assert cfg.schedule == "step" and cfg.milestones == [30] and cfg.gamma == 0.1
    assert cfg.epochs == 45 and cfg.batch_size == 18
    assert cfg.threshold == 0.25 and cfg.clip == 0.0 and cfg.group_size == 1
    a = cfg.model_args
    assert a["d_k"] == 1024 and a["vision"] == "darknet53" and a["max_words"] == 15
    assert (a["fusion"], a["relevance"], a["locate"], a["loss_reduction"]) == \
        ("paper", "literal", "filter", "sum")
    assert a["vision_weights"] == "d.pth" and a["text"] == "glove.txt"
    assert PRESETS["lts-paper"]["required"] == ("vision_weights", "text")
    refcocog = apply_preset(TrainConfig(model="lts", preset="lts-paper",
                                        model_args={"max_words": 20}),
                            {"vision_weights", "text", "max_words"})
    assert refcocog.model_args["max_words"] == 20  # RefCOCOg: given explicitly, kept


def test_peaks_and_localisation_accuracy():
    from grdkit.baselines.lts import LTS
    from grdkit.evaluators.localisation import peak_accuracy
    from grdkit.format import masks

    h = torch.zeros(1, 1, 2, 3)
    h[0, 0, 1, 2] = 5.0
    cells, grid = LTS.peaks({"h": h})
    assert cells.tolist() == [[2, 1]] and grid == (2, 3)
    ds = cow_dataset()
    pos = [t for t in ds.targets if t.positive][:2]
    neg = next(t for t in ds.targets if not t.positive)
    m0, m1 = (masks.decode(t.segmentation) for t in pos)
    y_in, x_in = np.argwhere(m0)[0]
    y_out, x_out = np.argwhere(~m1.astype(bool))[0]
    recs = [{"expression_id": pos[0].expression_id, "image_id": pos[0].image_id,
             "segmentation": None, "peak": [int(x_in), int(y_in)]},
            {"expression_id": pos[1].expression_id, "image_id": pos[1].image_id,
             "segmentation": None, "peak": [int(x_out), int(y_out)]},
            {"expression_id": neg.expression_id, "image_id": neg.image_id,
             "segmentation": None, "peak": [0, 0]}]
    assert peak_accuracy(recs, ds) == {"loc_acc": 50.0, "loc_pairs": 2}
    assert peak_accuracy([{k: v for k, v in r.items() if k != "peak"} for r in recs], ds) is None
    with pytest.raises(InputError, match="peak"):
        peak_accuracy([dict(recs[0], peak=[10_000, 0])], ds)
    # the eval report carries it (partial predictions: evaluate scores the pairs it gets)
    import grdkit

    rep = grdkit.evaluate(recs, ds)
    assert rep.metrics["loc_acc"] == 50.0 and rep.counts["loc_pairs"] == 2
    assert "loc_acc" not in grdkit.evaluate([{k: v for k, v in r.items() if k != "peak"}
                                             for r in recs], ds).metrics


def test_lts_paper_preset_trains_predicts_and_is_scored(tmp_path, capsys, darknet):
    """grdkit train lts --preset lts-paper with a local Darknet53 state dict and a 300-d GloVe
    file (the preset checks the width and trains the table, §3.1),
    on real cow photos (the first 6 of the MSRC cow group and 3 COCO negatives; size 64, batch
    2 and 2 steps for CI time), then predict (peaks and the localisation accuracy) and eval."""
    from grdkit.builders.imagegroup import group_from_files

    from .conftest import MSRC_COW

    need(COCO_IMAGES)
    glove = write_glove(tmp_path / "glove.tiny.300d.txt", dim=300)
    pos = [(f"msrc_cow/images/{p.name}", f"msrc_cow/masks/{p.name}")
           for p in sorted((MSRC_COW / "images").glob("*.png"))[:6]]
    neg = [f"coco_train2014_images/{p.name}" for p in sorted(COCO_IMAGES.glob("*.jpg"))[:3]]
    data = tmp_path / "cow.json"
    grdkit.save_dataset(group_from_files(SHARED, "cow", pos, neg, name="cow-6"), data)
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "lts", "--preset", "lts-paper", "--vision-weights",
                              str(darknet), "--text", str(glove), "--data", data, "--img-root",
                              SHARED, "--out", run, "--size", "64", "--batch-size", "2",
                              "--max-steps", "2", "--workers", "0", "--no-progress"], capsys)
    assert code == 0, err
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["optimizer"], cfg["lr"], cfg["schedule"], cfg["milestones"], cfg["gamma"],
            cfg["epochs"], cfg["group_size"], cfg["threshold"], cfg["clip"]) == \
        ("adam", 1e-3, "step", [30], 0.1, 45, 1, 0.25, 0.0)
    assert cfg["model_args"]["vision"] == "darknet53" and cfg["model_args"]["text"] == str(glove)
    assert cfg["model_args"]["max_words"] == 15 and cfg["model_args"]["d_k"] == 1024
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["lr"] == 1e-3 and recs[-1]["step"] == 2
    state = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    # Darknet's input (0-1 RGB, no mean / std) for the converted YOLOv3 weights, saved
    assert cfg["model_args"]["vision_norm"] == "unit"
    assert state["vision.mean"].flatten().tolist() == [0.0, 0.0, 0.0]
    assert state["vision.std"].flatten().tolist() == [1.0, 1.0, 1.0]
    # the GloVe table trains (§3.1 "initialized by GloVe") and is saved with the run
    assert cfg["model_args"]["train_text"] is True and cfg["model_args"]["word_dim"] == 300
    assert state["text.model.weight"].shape == (len(WORDS) + 1, 300)
    assert float(state["vision.leaky_slope"]) == pytest.approx(0.1)  # Darknet's, not timm's
    preds = tmp_path / "preds.json"
    code, out, err = run_cli(["predict", "--checkpoint", run, "--data", data, "--img-root",
                              SHARED, "--out", preds, "--workers", "0", "--no-progress"], capsys)
    assert code == 0, err
    out = " ".join(out.split())  # the console wraps long lines
    assert "Localisation accuracy" in out and "of 6 targeted pairs" in out
    rows = json.loads(preds.read_text())
    assert len(rows) == 9 and all(len(r["peak"]) == 2 for r in rows)
    code, out, err = run_cli(["eval", preds, "--gt", data], capsys)
    assert code == 0, err


def test_resume_with_another_optimiser_or_schedule_is_refused(tmp_path, capsys, glove):
    need(COCO_IMAGES)
    data = tmp_path / "cow.json"
    grdkit.save_dataset(cow_dataset(), data)
    run = tmp_path / "run"
    base = ["train", "lts", "--text", str(glove), "--data", data, "--img-root", SHARED, "--out",
            run, "--size", "64", "--width", "8", "--d-k", "8", "--model-arg", "gru_dim=4",
            "--workers", "0", "--no-progress", "--max-steps", "0", "--optimizer", "adam",
            "--schedule", "step", "--milestone", "3"]
    code, _, err = run_cli(base, capsys)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["milestones"] == [3]
    code, _, err = run_cli([*base, "--resume", "--optimizer", "adamw"], capsys)
    assert code == 2 and "optimizer differs" in err
    code, _, err = run_cli([*base, "--resume", "--milestone", "4"], capsys)
    assert code == 2 and "milestones differs" in err
    old = json.loads((run / "config.json").read_text())  # a run folder from before these fields
    for key in ("optimizer", "schedule", "milestones", "gamma"):
        del old[key]
    (run / "config.json").write_text(json.dumps(old))
    # such a run trained with the old defaults (adamw, poly); without flags LTS now takes its own
    # recipe (adam + step), which the resume refuses, so the old defaults are given explicitly
    code, _, err = run_cli([*base[:-6], "--resume"], capsys)
    assert code == 2 and "optimizer differs" in err
    code, _, err = run_cli([*base[:-6], "--resume", "--optimizer", "adamw", "--schedule", "poly"],
                           capsys)
    assert code == 0, err


def test_vision_normalisation_is_an_option_saved_as_buffers():
    from grdkit.baselines.encoders import IMAGENET_NORM, VisionEncoder

    unit = VisionEncoder("efficientnet_lite0", None, norm="unit")
    assert unit.mean.flatten().tolist() == [0, 0, 0] and unit.std.flatten().tolist() == [1, 1, 1]
    x = torch.full((1, 3, 32, 32), 51, dtype=torch.uint8)
    assert torch.allclose(unit.normalise(x), torch.full((1, 3, 32, 32), 0.2))  # x / 255 only
    auto = VisionEncoder("efficientnet_lite0", None)
    assert tuple(auto.mean.flatten().tolist()) == pytest.approx(IMAGENET_NORM[0])
    assert {"mean", "std"} <= set(unit.state_dict())  # buffers: saved in checkpoints
    with pytest.raises(InputError, match="normalisation"):
        VisionEncoder("efficientnet_lite0", None, norm="yolo")
