"""Issue 29: the last mile of the baselines' fidelity to their papers.

* LTS: Darknet's LeakyReLU slope 0.1 (pjreddie/darknet src/activations.h @f6afaab
  ``leaky_activate``), the Darknet weights converter on a generated file in the binary layout
  of pjreddie/darknet src/parser.c @f6afaabcdf85f77e7aff2ec55c020c0e297c77f9
  (``load_weights_upto``: int32 major, minor, revision, then ``seen`` as size_t when
  major * 10 + minor >= 2; ``load_convolutional_weights``: biases, scales, rolling mean,
  rolling variance, then the kernel), the trainable 300-d GloVe table (§3.1), the 15-word cap
  counting words only (§4.1).
* MABP: drop-path 0.3 from buptLwz/MABP configs/gres-MABP.yaml @ec810ea (SWIN.DROP_PATH_RATE).
* GRSer: the mirror pass fused with L_anti (§3.4) and LAVT's weight-decay exemptions
  (yz93/LAVT-RIS train.py @1da0af9, backbone_no_decay).
"""

import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the grdkit[baselines] extra")

from grdkit.errors import InputError

from .conftest import run_cli
from .test_lts_paper import WORDS, write_glove


def darknet53_layers() -> list[tuple[int, int, int]]:
    """(filters, input channels, kernel size) of Darknet53's 52 convolutions in cfg order,
    written from cfg/yolov3.cfg (@f6afaab, layers 0-74), independently of timm: a 3x3 stem of
    32, then per stage a stride-2 3x3 convolution and blocks of 1x1 (f / 2) + 3x3 (f)."""
    layers, c = [(32, 3, 3)], 32
    for f, blocks in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):
        layers.append((f, c, 3))
        c = f
        for _ in range(blocks):
            layers += [(f // 2, f, 1), (f, f // 2, 3)]
    return layers


def write_darknet(path, version=(0, 2, 0), seen=32013312, tail=1000, seed=0, cut=None):
    """A file in Darknet's weights layout: the header, Darknet53's 52 batch-normalised
    convolutions (biases, scales, means, variances, kernel) and ``tail`` floats standing for
    YOLOv3's heads. Returns the arrays written per layer."""
    rng = np.random.default_rng(seed)
    major, minor, revision = version
    head = struct.pack("<3i", major, minor, revision)
    head += struct.pack("<Q", seen) if major * 10 + minor >= 2 else struct.pack("<i", seen)
    parts, layers = [head], []
    for n, c, k in darknet53_layers():
        arrays = {"bias": rng.normal(size=n), "scale": rng.uniform(0.5, 1.5, n),
                  "mean": rng.normal(size=n), "var": rng.uniform(0.1, 2.0, n),
                  "w": rng.normal(scale=0.05, size=(n, c, k, k))}
        layers.append({k_: v.astype(np.float32) for k_, v in arrays.items()})
        parts += [layers[-1][x].astype("<f4").tobytes()
                  for x in ("bias", "scale", "mean", "var", "w")]
    parts.append(rng.normal(size=tail).astype("<f4").tobytes())
    data = b"".join(parts)
    path.write_bytes(data[:cut] if cut else data)
    return layers


def test_darknet53_layers_are_the_52_of_yolov3_cfg():
    layers = darknet53_layers()
    assert len(layers) == 52
    # 40,620,640 Darknet53 floats: 40,549,216 kernel weights + 4 x 17,856 batch-norm values
    assert sum(n * c * k * k for n, c, k in layers) == 40_549_216
    assert sum(4 * n for n, _, _ in layers) == 71_424


def test_convert_yolov3_weights_layout_to_timm_darknet53(tmp_path, capsys):
    from grdkit.baselines.encoders import VisionEncoder

    src, dst = tmp_path / "yolov3.weights", tmp_path / "darknet53.pt"
    layers = write_darknet(src)
    code, out, err = run_cli(["weights", "convert", "darknet53", src, dst], capsys)
    assert code == 0, err
    out = " ".join(out.split())
    assert "Darknet 0.2.0 (seen 32013312), 312 tensors, 40,620,640 values" in out
    assert f"of {src.stat().st_size:,} bytes" in out
    state = torch.load(dst, weights_only=True)  # a plain dict: no code runs to read it
    assert "head.fc.weight" not in state
    assert np.array_equal(state["stem.conv1.conv.weight"].numpy(), layers[0]["w"])
    last = "stages.4.blocks.3.conv2"
    assert np.array_equal(state[f"{last}.bn.bias"].numpy(), layers[-1]["bias"])
    assert np.array_equal(state[f"{last}.bn.weight"].numpy(), layers[-1]["scale"])
    assert np.array_equal(state[f"{last}.bn.running_mean"].numpy(), layers[-1]["mean"])
    assert np.array_equal(state[f"{last}.bn.running_var"].numpy(), layers[-1]["var"])
    assert np.array_equal(state["stages.2.conv_down.conv.weight"].numpy(), layers[9]["w"])
    # the encoder loads it (head absent) and its stem computes Darknet's conv + BN + leaky 0.1
    enc = VisionEncoder("darknet53", dst, norm="unit", leaky_slope=0.1).eval()
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 1, (1, 3, 8, 8)).astype(np.float32))
    with torch.no_grad():
        got = enc.body.stem(enc.normalise(x)).numpy()[0]
    L0 = layers[0]
    xp = np.pad(x.numpy()[0], ((0, 0), (1, 1), (1, 1)))
    conv = np.zeros((32, 8, 8))
    for i in range(3):
        for j in range(3):
            conv += np.einsum("oc,chw->ohw", L0["w"][:, :, i, j], xp[:, i:i + 8, j:j + 8])
    y = (conv - L0["mean"][:, None, None]) / (np.sqrt(L0["var"])[:, None, None] + 1e-6)
    y = y * L0["scale"][:, None, None] + L0["bias"][:, None, None]
    want = np.where(y > 0, y, 0.1 * y)  # src/activations.h leaky_activate
    assert np.allclose(got, want, atol=1e-3, rtol=1e-3)


def test_convert_old_header_and_broken_files(tmp_path, capsys):
    from grdkit.baselines.darknet import convert

    old = tmp_path / "old.weights"
    write_darknet(old, version=(0, 1, 0), seen=7, tail=0)
    assert convert("darknet53", old, tmp_path / "o.pt")["seen"] == 7  # int32 seen
    short = tmp_path / "short.weights"
    write_darknet(short, cut=20 + 4 * 1000)
    dst = tmp_path / "never.pt"
    code, _, err = run_cli(["weights", "convert", "darknet53", short, dst], capsys)
    assert code == 2 and err.startswith("grdkit: error: ") and len(err.strip().splitlines()) == 1
    # the stem takes 992 floats of the 1000; conv 1 needs 18,688: (18,688 - 8) x 4 bytes missing
    assert "ends in convolution 1 of Darknet53 (stages.0.conv_down): 74720 bytes missing" in err
    assert "Traceback" not in err
    assert not dst.exists()
    tiny = tmp_path / "tiny.weights"
    tiny.write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match="shorter than a Darknet weights header"):
        convert("darknet53", tiny, dst)
    code, _, err = run_cli(["weights", "convert", "darknet53", old, old], capsys)
    assert code == 2 and "input" in err  # never overwrites its input


def test_lts_darknet53_leaky_slope_is_darknets_and_restored(tmp_path):
    from grdkit.baselines.lts import LTS

    glove = write_glove(tmp_path / "g.txt")
    kw = {"vision": "darknet53", "vision_weights": None, "text": str(glove), "gru_dim": 4,
          "width": 8, "d_k": 4}
    m = LTS(**kw)
    slopes = {a.negative_slope for a in m.vision.modules() if isinstance(a, torch.nn.LeakyReLU)}
    assert slopes == {0.1}  # timm's darknet53 alone has 0.01
    timm_slope = LTS(**kw, leaky_slope=0.01)
    assert {a.negative_slope for a in timm_slope.vision.modules()
            if isinstance(a, torch.nn.LeakyReLU)} == {0.01}
    # a checkpoint carries its slope: a model built with another restores the saved one
    m.load_state_dict(timm_slope.state_dict(), strict=False)
    assert {a.negative_slope for a in m.vision.modules()
            if isinstance(a, torch.nn.LeakyReLU)} == {0.01}


def test_glove_trainable_300d_and_word_cap(tmp_path):
    from grdkit.baselines.encoders import GloveGRUEncoder

    g8 = write_glove(tmp_path / "g8.txt", dim=8)
    with pytest.raises(InputError, match="8-d vectors, 300-d are needed"):
        GloveGRUEncoder(g8, dim=4, word_dim=300)
    enc = GloveGRUEncoder(write_glove(tmp_path / "g300.txt", dim=300), dim=4, trainable=True,
                          word_dim=300, max_words=3)
    assert enc.model.weight.requires_grad and enc.model.weight.shape == (len(WORDS) + 1, 300)
    enc(["the brown cow"]).sum().backward()
    grad_rows = set(torch.nonzero(enc.model.weight.grad.abs().sum(1)).flatten().tolist())
    assert grad_rows == {enc.index[w] for w in ("the", "brown", "cow")}
    # §4.1 counts words: punctuation is fed but does not count toward the cap
    assert enc.cut(["the", ",", "brown", "-", "cow", "on", "grass"]) == \
        ["the", ",", "brown", "-", "cow"]
    _, mask = enc.ids(["the, brown - cow on grass"])
    assert mask.sum().item() == 5


def test_mabp_drop_path_from_the_official_config():
    from grdkit.baselines.encoders import VisionEncoder
    from grdkit.baselines.run import PRESETS

    assert PRESETS["mabp-paper"]["model_args"]["drop_path"] == 0.3
    enc = VisionEncoder("swin_tiny_patch4_window7_224", None, 224, strides=(4, 8, 16, 32),
                        drop_path=0.3)
    rates = [m.drop_prob for m in enc.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.3)  # timm's linear rule ends at the rate


def test_grser_mirror_pass_sees_the_anti_expression_through_pwam():
    from grdkit.baselines.grser import GRSer

    torch.manual_seed(0)
    batch = {"images": torch.randint(0, 255, (1, 2, 3, 64, 64), dtype=torch.uint8),
             "valid": torch.tensor([[True, True]]), "index": torch.tensor([0, 1]),
             "group": torch.tensor([0, 0]), "counts": [2],
             "expression": ["the brown cow"]}

    def mirror(mode, seed=0):
        torch.manual_seed(seed)
        m = GRSer(vision_weights=None, width=16, group_size=2, fusion="pwam",
                  mirror_fusion=mode).train()
        calls = []
        for mod in m.pwam:
            mod.register_forward_hook(lambda mod, inp, out: calls.append(inp[1].detach()))
        out = m(batch)
        return out, calls

    out_a, calls_a = mirror("anti")
    out_s, calls_s = mirror("shared")
    assert len(calls_a) == 6 and len(calls_s) == 3  # the three PWAMs run again with L_anti
    assert not torch.equal(calls_a[0], calls_a[3])  # the mirror pass's words differ (L_anti)
    assert torch.equal(out_a["p"], out_s["p"])  # the main pass is unchanged
    assert not torch.allclose(out_a["mirror"], out_s["mirror"])


def test_grser_decay_exempt_follows_lavt():
    from grdkit.baselines.grser import GRSer
    from grdkit.baselines.run import PRESETS

    assert PRESETS["gres-paper"]["model_args"]["decay_exempt"] is True
    m = GRSer(vision_weights=None, width=16, group_size=2, fusion="pwam", decay_exempt=True)
    names = {id(p): n for n, p in m.named_parameters()}
    decay, exempt = m.param_groups(0.01)
    free = {names[id(p)] for p in exempt["params"]}
    mods = dict(m.named_modules())
    assert free and all(n.startswith(("vision.", "pwam.")) for n in free)
    assert all(isinstance(mods[n.rsplit(".", 1)[0]], (torch.nn.BatchNorm2d, torch.nn.LayerNorm,
                                                      torch.nn.GroupNorm)) for n in free)
    assert any(".bn" in n for n in free)  # the CNN backbone's BatchNorms (grdkit's PWAM has none)
    assert not any(n.startswith(("w_l", "z_conv", "head")) for n in free)
    assert decay["weight_decay"] == 0.01 and exempt["weight_decay"] == 0.0
    plain = GRSer(vision_weights=None, width=16, group_size=2, decay_exempt=False)
    assert plain.param_groups(0.01)[1]["params"] == []


def test_lts_table2_switches_remove_the_filter_or_the_fusion(tmp_path):
    """LTS Table 2 rows 4 and 5 (§4.4): ``locate="none"`` is Fusion + Seg (P = Seg(F_m3), no
    heatmap, no L_loc); ``fusion="visual"`` is Filter + Seg (F_m3 does not see the text, which
    enters only through the filter's kernel)."""
    from grdkit.baselines.lts import LTS

    glove = write_glove(tmp_path / "g.txt")
    kw = {"vision_weights": None, "text": str(glove), "gru_dim": 4, "width": 8, "d_k": 4}
    batch = {"images": torch.randint(0, 255, (2, 1, 3, 64, 64), dtype=torch.uint8),
             "masks": torch.zeros(2, 1, 1, 64, 64, dtype=torch.uint8),
             "index": torch.tensor([0, 1]), "group": torch.tensor([0, 1]), "counts": [1, 1],
             "expression": ["the brown cow", "a black cow on the left"]}
    torch.manual_seed(0)
    no_filter = LTS(**kw, locate="none").eval()
    assert not hasattr(no_filter, "k_text") and no_filter.aspp.branches[0][0].in_channels == 4
    out = no_filter(batch)
    assert set(out) == {"p"} and out["p"].shape == (2, 1, 16, 16)
    loss, parts = no_filter.loss(out, batch)
    assert set(parts) == {"bce_p"} and torch.equal(loss, parts["bce_p"])
    assert no_filter.peaks(out) == (None, None)
    torch.manual_seed(0)
    visual = LTS(**kw, fusion="visual").eval()
    assert len(visual.t_proj) == 0
    feats = visual.vision(batch["images"][:, 0])
    t = visual.text(batch["expression"])
    with torch.no_grad():
        assert torch.equal(visual.fuse(feats, t), visual.fuse(feats, t.flip(0)))  # no text
        h1, h2 = visual.heatmap(visual.fuse(feats, t), t), visual.heatmap(visual.fuse(feats, t),
                                                                          t.flip(0))
    assert not torch.equal(h1, h2)  # the filter still reads the expression
    with pytest.raises(ValueError, match="never sees the expression"):
        LTS(**kw, fusion="visual", locate="none")
