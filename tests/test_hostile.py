"""Hostile input (issue 21): our own adversarial corpus, generated here, for every command that
reads it. Each case asserts exit 2 (or the listed problem), one line on stderr and no traceback,
a time bound (the subprocess cases, where a hang or a native crash must be contained), and that
outputs written before stay byte-identical.

Classes: 1 RLE strings pycocotools reads differently; 2 sizes and coordinates past the bounds;
3 image paths leaving --img-root and images that do not decode; 4 partial output and outputs
naming inputs; 5 OS / recursion / overflow / usage errors; 6 silently wrong inputs.

Round 2 (issue 30, at the end of the file): A special files (a FIFO and /dev/zero as every kind
of input, in one contained subprocess), B markup in user text, E recipe values and --set, F
forged step records and reports, G commits that fail part-way and a second writer, H SIGTERM,
I library exceptions, J wrong input accepted, K error lines naming the file, and image roots
built from links (--follow-links).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from pycocotools import mask as mask_utils

from grdkit import save_dataset
from grdkit.errors import InputError
from grdkit.format import load_dataset
from grdkit.format.rlecheck import MAX_TOKEN, check_rles, decode_counts, rle_problem
from grdkit.io import Commit
from grdkit.io.images import image_path, read_image_file
from grdkit.io.limits import MAX_PIXELS

from .conftest import ROOT, dataset_from_dense, run_cli

# -- a faithful transcription of pycocotools' rleFrString -------------------------------------
# cocodataset/cocoapi common/maskApi.c, commit 28dffd92a2f38db538cc1bcccdc2b76f03f8ee99:
#     char c=s[p]-48; x |= (c & 0x1f) << 5*k;  more = c & 0x20; p++; k++;
#     if(!more && (c & 0x10)) x |= -1 << 5*k;
#     if(m>2) x+=(long) cnts[m-2]; cnts[m++]=(uint) x;
# `x` is a long; each shifted term is a C int (32 bits, sign-extended when OR-ed into x); a shift
# of 32 bits or more is undefined in C and wraps modulo 32 on x86-64 (what the wheels run on).


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def rle_fr_string(s: bytes) -> list[int] | None:
    """Counts as pycocotools' C parser computes them (None: it would read past the string)."""
    cnts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                return None  # C reads the terminating NUL and beyond
            c = ((s[p] - 48 + 128) & 0xFF) - 128  # char arithmetic
            x |= _int32((c & 0x1F) << ((5 * k) & 31))
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= _int32(-1 << ((5 * k) & 31))
        if len(cnts) > 2:
            x += cnts[-2]
        cnts.append(x & 0xFFFFFFFF)
    return cnts


def _tokens(s: bytes) -> list[int]:
    lens, run = [], 0
    for b in s:
        run += 1
        if not (b - 48) & 0x20:
            lens.append(run)
            run = 0
    return lens


ALPHABET = bytes(range(48, 112))
# the longest number pycocotools' rleToString writes for masks within MAX_PIXELS (counts and deltas
# of at most 2^28 need 30 signed bits: 6 groups of 5); stated here, independently of the checker
WRITER_MAX_TOKEN = 6
SIZES = st.tuples(st.integers(1, 12), st.integers(1, 12))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rle_checker_agrees_with_pycocotools_on_any_string(data):
    """Ours accepts a string exactly when pycocotools decodes it to the same counts, summing to
    h*w with no negative run, and within MAX_TOKEN characters per number."""
    h, w = data.draw(SIZES)
    kind = data.draw(st.sampled_from(["random", "valid", "padded", "mutated"]))
    if kind == "random":
        s = data.draw(st.binary(max_size=24).map(lambda b: bytes(ALPHABET[x % 64] for x in b)))
    else:
        m = data.draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))
        rle = mask_utils.encode(np.asfortranarray(np.array(m, np.uint8).reshape(h, w,
                                                                                order="F")))
        s = rle["counts"]
        if kind == "padded":  # lengthen one number with zero groups: same value, longer token
            toks, out, p = _tokens(s), b"", 0
            j = data.draw(st.integers(0, len(toks) - 1))
            pad = data.draw(st.integers(1, 8))
            for t, L in enumerate(toks):
                tok = s[p:p + L]
                p += L
                if t == j:
                    last = tok[-1] - 48
                    fill = 0x1F if last & 0x10 else 0  # sign groups of a negative number
                    tok = tok[:-1] + bytes([48 + (last | 0x20)]) + \
                        bytes([48 + 0x20 + fill] * (pad - 1)) + bytes([48 + fill])
                out += tok
            s = out
        elif kind == "mutated" and s:
            i = data.draw(st.integers(0, len(s) - 1))
            s = s[:i] + bytes([data.draw(st.sampled_from(list(ALPHABET)))]) + s[i + 1:]
    ok, _, area = check_rles([s], [(h, w)])
    c = rle_fr_string(s)
    well_formed = c is not None and max(_tokens(s), default=0) <= WRITER_MAX_TOKEN
    c_accepts = well_formed and sum(c) == h * w
    assert bool(ok[0]) == c_accepts, (s, h, w, c)
    if ok[0]:
        ours = decode_counts([s])[0]
        assert ours.tolist() == c
        dense = np.zeros(h * w, np.uint8)  # column-major runs, starting with background
        pos = np.cumsum([0, *c])
        for k in range(1, len(c), 2):
            dense[pos[k]:pos[k + 1]] = 1
        got = mask_utils.decode({"size": [h, w], "counts": s})
        np.testing.assert_array_equal(got.reshape(-1, order="F"), dense)
        assert int(mask_utils.area({"size": [h, w], "counts": s})) == int(area[0])
        assert rle_problem(s, (h, w)) is None
    else:
        assert rle_problem(s, (h, w))


def _number(v: int, length: int) -> bytes:
    """``v`` as one RLE number of exactly ``length`` characters (zero or sign groups added)."""
    groups = []
    x = v
    while True:
        groups.append(x & 0x1F)
        x >>= 5
        if (x == 0 and not groups[-1] & 0x10) or (x == -1 and groups[-1] & 0x10):
            break
    fill = 0x1F if v < 0 else 0
    groups += [fill] * max(0, length - len(groups))
    return bytes(48 + (g | (0x20 if k < len(groups) - 1 else 0)) for k, g in enumerate(groups))


def test_rle_checker_is_sound_for_every_small_delta_and_length():
    """Every delta in [-64, 64) written with 1..10 characters as the fourth count of a 20 x 20
    mask: whatever the checker accepts, pycocotools reads to the same counts."""
    accepted = 0
    for d in range(-64, 64):
        for length in range(1, 11):
            x1 = 64
            counts = [10, x1, 400 - 10 - x1 - (x1 + d), x1 + d]
            if min(counts) < 0:
                continue
            s = b"".join(_number(v, 1) for v in counts[:3]) + _number(d, length)
            if len(_number(d, 1)) > length:
                continue
            ok, _, _ = check_rles([s], [(20, 20)])
            if ok[0]:
                accepted += 1
                assert decode_counts([s])[0].tolist() == rle_fr_string(s) == counts, (d, length)
    assert accepted > 100


# the crafted string of the issue: the old parser read [10, 40, 42, 8] (sums to 100 = 10 x 10);
# pycocotools reads the 8-character delta as -8, not -32, and gets [10, 40, 42, 32]
CRAFTED = ":X1Z1PooooooO"


def test_crafted_rle_is_refused_and_named():
    assert rle_fr_string(CRAFTED.encode()) == [10, 40, 42, 32]
    ok, _, _ = check_rles([CRAFTED], [(10, 10)])
    assert not ok[0]
    assert "8 characters" in rle_problem(CRAFTED, (10, 10))
    # a malformed string whose runs happen to sum right is not "sums to N, not N"
    msg = rle_problem("PPPPPPP0" + "4", (2, 2))  # an over-long zero, then 4
    assert "8 characters" in msg and "not height*width" not in msg


# -- the corpus ------------------------------------------------------------------------------
def _dense(h, w, box):
    m = np.zeros((h, w), bool)
    if box:
        m[box[0]:box[1], box[2]:box[3]] = True
    return m


@pytest.fixture
def corpus(tmp_path):
    """A tiny valid dataset (2 groups x 2 images of 10 x 10), its images, predictions and a
    report, all valid: each test breaks one thing."""
    ds = dataset_from_dense([[_dense(10, 10, (2, 6, 2, 6)), _dense(10, 10, None)],
                             [_dense(10, 10, (1, 9, 3, 5)), _dense(10, 10, (0, 10, 1, 10))]])
    gt = tmp_path / "val.json"
    save_dataset(ds, gt)
    img = tmp_path / "img"
    img.mkdir()
    for im in ds.images:
        PILImage.fromarray(np.full((10, 10, 3), 7 * im.id, np.uint8)).save(img / im.file_name)
    preds = [{"expression_id": t.expression_id, "image_id": t.image_id,
              "segmentation": t.segmentation if t.positive else None, "score": 0.5}
             for t in ds.targets]
    pj = tmp_path / "preds.json"
    pj.write_text(json.dumps(preds))
    return {"dir": tmp_path, "ds": ds, "gt": gt, "img": img, "preds": pj, "records": preds}


SENTINEL = b"earlier output\n"
MAX_LINE = 700  # characters of the one error line (two temp paths of ~120 characters included)


def hostile(argv, capsys, outputs=(), code=2, contains=()):
    """Run the CLI in-process; assert the exit code, one line on stderr, no traceback, the
    pre-existing ``outputs`` untouched and no temp file left beside them."""
    for o in outputs:
        Path(o).parent.mkdir(parents=True, exist_ok=True)
        Path(o).write_bytes(SENTINEL)
    got, out, err = run_cli(argv, capsys)
    assert got == code, (got, out, err)
    assert "Traceback" not in err + out
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("grdkit: error: "), err
        assert len(err) <= MAX_LINE, f"{len(err)} characters: {err[:300]}"
    for c in contains:
        assert c in err + out, err + out
    for o in outputs:
        assert Path(o).read_bytes() == SENTINEL, o
        assert not [p for p in Path(o).parent.iterdir() if p.name.endswith(".tmp")]
    return out, err


def _write_gt(c, mutate):
    d = json.loads(c["gt"].read_text())
    mutate(d)
    p = c["dir"] / "bad.json"
    p.write_text(json.dumps(d))
    return p


# -- class 1: RLE strings pycocotools reads differently -----------------------------------------
def _crafted_gt(d):
    d["images"][0].update(height=10, width=10)
    d["targets"][0]["segmentation"] = {"size": [10, 10], "counts": CRAFTED}


def test_crafted_rle_in_ground_truth(corpus, capsys):
    bad = _write_gt(corpus, _crafted_gt)
    out = corpus["dir"] / "out"
    hostile(["validate", bad], capsys, code=1, contains=["rle_corrupt"])
    hostile(["stats", bad], capsys, contains=["8 characters"])  # eval, show: in a subprocess
    hostile(["export", "hf", bad, "--out", out / "hf", "--no-progress"], capsys,
            [out / "hf" / "README.md"])


def test_crafted_rle_in_predictions(corpus, capsys):
    recs = corpus["records"]
    recs[0]["segmentation"] = {"size": [10, 10], "counts": CRAFTED}
    p = corpus["dir"] / "p.json"
    p.write_text(json.dumps(recs))
    hostile(["eval", p, "--gt", corpus["gt"]], capsys, contains=["predictions[0]",
                                                                  "8 characters"])


# -- class 2: sizes and coordinates past the bounds, before any C code ---------------------------
def _huge(d, side=100000):
    d["images"][0].update(height=side, width=side)
    d["targets"][0]["segmentation"]["size"] = [side, side]


@pytest.mark.parametrize("side, kind", [(100000, "schema"), (20000, "size_bound")])
def test_huge_image_size(corpus, capsys, side, kind):
    bad = _write_gt(corpus, lambda d: _huge(d, side))
    out, _ = hostile(["validate", bad], capsys, code=1)
    assert kind in out
    hostile(["stats", bad], capsys, contains=["exceeds grdkit's bounds"])
    hostile(["show", bad, "--out", corpus["dir"] / "s.png"], capsys, [corpus["dir"] / "s.png"])
    with pytest.raises(InputError, match="exceeds"):
        load_dataset(bad)


def test_polygon_far_outside_in_build(tmp_path, capsys):
    from grdkit.testing.synth import generate_refer, write_refer

    refs, inst = generate_refer(12, seed=3)
    referred = {r["ann_id"] for r in refs["umd"]}
    poly = next(a for a in inst["annotations"] if a["id"] in referred
                and isinstance(a["segmentation"], list))
    poly["segmentation"][0][0] = 1e308
    root = tmp_path / "refer"
    write_refer(root, refs, inst)
    out = tmp_path / "out"
    hostile(["build", "g-refcocog", "--refer-root", root, "--out", out, "--min-images", "1",
             "--no-progress"], capsys, [out / "val.json"], contains=["far outside"])
    hostile(["validate", root], capsys, code=1, contains=["polygon_range"])


# -- class 3: image paths and image files ----------------------------------------------------
def _file_name(name):
    return lambda d: d["images"][0].update(file_name=name)


@pytest.mark.parametrize("name", ["../secret.txt", "/etc/passwd", "a/../../secret.txt",
                                  "link/secret.txt", "C:\\x.png"])
def test_paths_never_leave_the_image_root(corpus, capsys, name):
    (corpus["dir"] / "secret.txt").write_text("password")
    (corpus["img"] / "link").symlink_to(corpus["dir"])  # a folder link out of the root
    bad = _write_gt(corpus, _file_name(name))
    out = corpus["dir"] / "out"
    vout, _ = hostile(["validate", bad, "--img-root", corpus["img"]], capsys, code=1)
    assert "image_path" in vout
    hostile(["show", bad, "--img-root", corpus["img"], "--out", out / "s.png"], capsys,
            [out / "s.png"], contains=["image root"])
    hostile(["export", "hf", bad, "--img-root", corpus["img"], "--out", out / "hf",
             "--no-progress"], capsys, [out / "hf" / "README.md"], contains=["image root"])
    assert not list((out / "hf").rglob("*.parquet"))


def test_validate_names_the_path_problem(corpus, capsys):
    bad = _write_gt(corpus, _file_name("../secret.txt"))
    code, out, _ = run_cli(["validate", bad, "--img-root", corpus["img"]], capsys)
    assert code == 1 and "image_path" in out


def _png_header(w, h):
    """A PNG whose header declares w x h pixels (a few bytes of data: a bomb's header)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _bad_images(img: Path) -> dict[str, bytes]:
    good = io.BytesIO()
    PILImage.fromarray(np.zeros((10, 10, 3), np.uint8)).save(good, format="PNG")
    jpg = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(0).integers(0, 255, (10, 10, 3), np.uint8)).save(
        jpg, format="JPEG")
    return {"zero-byte": b"", "text": b"my secret\n", "truncated png": good.getvalue()[:-30],
            "truncated jpeg": jpg.getvalue()[: len(jpg.getvalue()) // 2],
            "bomb": _png_header(50000, 50000), "corrupt": b"\x89PNG\r\n\x1a\n" + b"\0" * 40}


@pytest.mark.parametrize("kind", ["zero-byte", "text", "truncated png", "truncated jpeg", "bomb",
                                  "corrupt"])
def test_undecodable_images_are_refused(corpus, capsys, kind):
    ds = corpus["ds"]
    (corpus["img"] / ds.images[0].file_name).write_bytes(_bad_images(corpus["img"])[kind])
    out = corpus["dir"] / "out"
    vout, _ = hostile(["validate", corpus["gt"], "--img-root", corpus["img"]], capsys, code=1)
    assert "image_unreadable" in vout or "image_size" in vout
    hostile(["export", "hf", corpus["gt"], "--img-root", corpus["img"], "--out", out / "hf",
             "--no-progress"], capsys, [out / "hf" / "README.md"])
    hostile(["show", corpus["gt"], "--img-root", corpus["img"], "--out", out / "s.png"], capsys,
            [out / "s.png"])
    with pytest.raises(InputError):
        read_image_file(corpus["img"], ds.images[0].file_name, (10, 10))


def test_image_readers_of_train_and_predict_use_the_resolver(corpus):
    torch = pytest.importorskip("torch")  # noqa: F841
    from grdkit.baselines.data import build_store

    d = json.loads(corpus["gt"].read_text())
    d["images"][0]["file_name"] = "../secret.txt"
    from grdkit.format import GresDataset

    ds = GresDataset.from_dict(d)
    with pytest.raises(InputError, match="leaves the image root"):
        build_store(ds, corpus["img"], 32, corpus["dir"] / "cache")
    assert image_path(corpus["img"], "1.png") == corpus["img"] / "1.png"


def test_export_hf_from_inside_the_image_folder_embeds_bytes(corpus, monkeypatch, capsys):
    import pyarrow.parquet as pq

    out = corpus["dir"] / "hf"
    monkeypatch.chdir(corpus["img"])  # datasets would store only the path of an existing file
    code, _, err = run_cli(["export", "hf", corpus["gt"], "--img-root", ".", "--out", out,
                            "--no-progress"], capsys)
    assert code == 0, err
    rows = pq.read_table(next(out.rglob("*.parquet"))).to_pylist()
    assert all(im["bytes"] for r in rows for im in r["images"])


# -- class 4: outputs committed as a whole, never naming an input --------------------------------
def test_failed_export_leaves_the_earlier_export(corpus, capsys):
    out = corpus["dir"] / "hf"
    code, _, err = run_cli(["export", "hf", corpus["gt"], "--img-root", corpus["img"], "--out",
                            out, "--config", "pairs", "--shard-rows", "1", "--no-progress"],
                           capsys)
    assert code == 0, err
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert len(before) == 5  # 4 one-row shards and the card
    (corpus["img"] / corpus["ds"].images[-1].file_name).write_bytes(b"")  # the last image read
    hostile(["export", "hf", corpus["gt"], "--img-root", corpus["img"], "--out", out,
             "--config", "pairs", "--shard-rows", "3", "--no-progress"], capsys)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # no .tmp, no mix of 1-row and 3-row shards


def test_failed_build_leaves_the_earlier_build(tmp_path, capsys):
    from grdkit.testing.synth import demo_root

    out = tmp_path / "out"
    base = ["build", "g-refcocog", "--refer-root", demo_root(), "--out", out, "--min-images",
            "1", "--no-progress"]
    assert run_cli(base, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "README.md").unlink()
    (out / "README.md").mkdir()  # the last file of the commit cannot be renamed into place
    hostile([*base, "--seed", "7"], capsys, contains=["README.md"])
    for name, data in before.items():
        if name != "README.md":
            assert (out / name).read_bytes() == data, name  # no seed-7 split beside seed 0
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_commit_is_all_or_nothing(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    with pytest.raises(RuntimeError), Commit() as c:
        c.write_text(tmp_path / "a.txt", "new a")
        c.write_text(tmp_path / "b.txt", "new b")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "old a"


def test_eval_outputs_all_or_none(corpus, capsys):
    d = corpus["dir"]
    (d / "afile").write_text("x")
    hostile(["eval", corpus["preds"], "--gt", corpus["gt"], "--json", d / "r.json",
             "--save-state", d / "s.npz", "--markdown", d / "afile" / "r.md"], capsys,
            [d / "r.json", d / "s.npz"])


@pytest.mark.parametrize("argv", [
    ["eval", "{preds}", "--gt", "{gt}", "--json", "{preds}"],
    ["eval", "{preds}", "--gt", "{gt}", "--markdown", "{gt}"],
    ["validate", "{gt}", "--json", "{gt}"],
    ["show", "{gt}", "--out", "{gt}"],
    ["export", "hf", "{gt}", "--out", "{dir}"],
    ["leaderboard", "{report}", "--csv", "{report}"],
    ["derive", "res", "{gt}", "--out", "{gt}"],
    ["derive", "union", "{preds}", "{gt}", "--out", "{gt}"],
    ["reproduce", "gres/table5", "--rows", "full", "--data-root", "{dir}", "--out", "{dir}"],
])
def test_an_output_naming_an_input_is_refused(corpus, capsys, argv):
    report = corpus["dir"] / "report.json"
    assert run_cli(["eval", corpus["preds"], "--gt", corpus["gt"], "--json", report],
                   capsys)[0] == 0
    files = {"preds": corpus["preds"], "gt": corpus["gt"], "report": report}
    before = {k: p.read_bytes() for k, p in files.items()}
    fill = {**{k: str(v) for k, v in files.items()}, "dir": str(corpus["dir"])}
    hostile([a.format(**fill) for a in argv], capsys, contains=["an input"])
    assert {k: p.read_bytes() for k, p in files.items()} == before


@pytest.mark.parametrize("line", ["the 0.1 nan 0.3", "the 0.1 inf 0.3", "the 0.1 x 0.3",
                                  "the 0.1 0.2 0.3\nof 0.1 0.2", "\udcff 0.1 0.2 0.3"])
def test_hostile_glove_file_is_refused_before_training(corpus, capsys, line):
    """A GloVe text file (LTS ``--text``) that is not ``word v_1 .. v_d`` of finite numbers on
    every line: exit 2 naming the line, no run folder left behind."""
    pytest.importorskip("torch")
    glove = corpus["dir"] / "glove.6B.3d.txt"
    glove.write_bytes(line.encode("utf-8", "surrogateescape") + b"\n")
    run = corpus["dir"] / "run"
    hostile(["train", "lts", "--data", corpus["gt"], "--img-root", corpus["img"], "--out", run,
             "--text", glove, "--size", "64", "--max-steps", "1", "--no-progress"], capsys,
            contains=["line"])
    assert not (run / "checkpoint.pt").exists()


# -- class 5: one error path -------------------------------------------------------------------
def test_output_under_a_file(corpus, capsys):
    f = corpus["dir"] / "afile"
    f.write_text("x")
    hostile(["eval", corpus["preds"], "--gt", corpus["gt"], "--json", f / "r.json"], capsys)
    hostile(["validate", corpus["gt"], "--json", f / "v.json"], capsys)
    hostile(["export", "hf", corpus["gt"], "--out", f / "hf", "--no-progress"], capsys)
    hostile(["derive", "res", corpus["gt"], "--out", f / "res.json"], capsys)


def test_train_checks_its_output_folder_first(corpus, capsys):
    pytest.importorskip("torch")
    f = corpus["dir"] / "afile"
    f.write_text("x")
    hostile(["train", "lts", "--data", corpus["gt"], "--img-root", corpus["img"], "--out",
             f / "run", "--no-progress"], capsys, contains=["not writable"])


@pytest.mark.parametrize("payload", [
    "[" * 100000 + "]" * 100000,
    '[{"expression_id": 1, "image_id": 1, "segmentation": null, "score": 1' + "0" * 400 + "}]",
    '[{"expression_id": 1, "image_id": 1, "segmentation": null, "score": 1e400}]',
    '[{"expression_id": 1, "image_id": 1, "segmentation": null, "score": NaN}]',
])
def test_numbers_and_nesting_in_json(corpus, capsys, payload):
    p = corpus["dir"] / "p.json"
    p.write_text(payload)
    hostile(["eval", p, "--gt", corpus["gt"]], capsys)


def test_deep_pickle(tmp_path, capsys):
    root = tmp_path / "refer"
    root.mkdir()
    deep = b"\x80\x04" + b"]\x94" * 200000 + b"a" * 199999 + b"."  # lists nested 200k deep
    (root / "refs(umd).p").write_bytes(deep)
    (root / "instances.json").write_text(json.dumps({"images": [], "annotations": [],
                                                     "categories": []}))
    hostile(["build", "g-refcocog", "--refer-root", root, "--out", tmp_path / "o",
             "--no-progress"], capsys)


def test_prediction_png_bombs_are_refused_unread(corpus, capsys):
    folder = corpus["dir"] / "pngs"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "1.png").write_bytes(_png_header(50000, 50000))
    hostile(["eval", folder, "--gt", corpus["gt"]], capsys, contains=["exceeds"])
    (folder / "1" / "1.png").write_bytes(_png_header(12000, 12000))
    hostile(["eval", folder, "--gt", corpus["gt"]], capsys, contains=["12000x12000"])


@pytest.mark.parametrize("argv, text", [
    (["eval", "{preds}"], "--gt"),
    (["build", "nope"], "nope"),
    (["eval", "{preds}", "--gt", "{gt}", "--max-drop", "nan"], "finite"),
    (["leaderboard"], "REPORTS"),
])
def test_usage_errors_on_one_line(corpus, capsys, argv, text):
    fill = {"preds": str(corpus["preds"]), "gt": str(corpus["gt"])}
    hostile([a.format(**fill) for a in argv], capsys, contains=[text, "--help"])


def test_checkpoint_misfit_nan_weights_and_thresholds(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from grdkit.baselines.run import TrainConfig, check_fits, check_run_config

    model = torch.nn.Linear(3, 2)
    with pytest.raises(InputError, match="does not fit"):
        check_fits(model, {"weight": torch.zeros(5, 3), "bias": torch.zeros(2)}, "ck.pt")
    with pytest.raises(InputError, match="NaN or infinite"):
        check_fits(model, {"weight": torch.full((2, 3), float("nan")), "bias": torch.zeros(2)},
                   "ck.pt")
    for t in (float("nan"), 5.0, "0.5"):
        with pytest.raises(InputError, match="threshold"):
            check_run_config(TrainConfig(model="lts", threshold=t), "config.json")
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "val.json").write_text("{}")
    hostile(["predict", "--checkpoint", run, "--data", tmp_path / "val.json", "--img-root",
             tmp_path,
             "--out", tmp_path / "p.json", "--threshold", "nan"], capsys, contains=["finite"])


# -- class 6: silently wrong inputs ---------------------------------------------------------
def _save(path, arr, mode=None, palette=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = PILImage.fromarray(arr, mode) if mode else PILImage.fromarray(arr)
    if palette is not None:
        im.putpalette(palette)
    im.save(path)


def _pred_folder(corpus, write):
    """A PNG folder predicting every pair as the ground truth, written by ``write``."""
    from grdkit.format import masks

    folder = corpus["dir"] / "pngs"
    for t in corpus["ds"].targets:
        write(folder / str(t.expression_id) / f"{t.image_id}.png",
              masks.decode(t.segmentation).astype(bool))
    return folder


def _voc(path, m):
    _save(path, m.astype(np.uint8), "P", [0, 0, 0, 128, 0, 0] + [0] * 762)


def _rgba(path, m):
    a = np.zeros((*m.shape, 4), np.uint8)
    a[..., 3] = m * 255  # black everywhere, the object in alpha
    _save(path, a, "RGBA")


@pytest.mark.parametrize("write", [_voc, _rgba], ids=["palette", "rgba-alpha"])
def test_palette_and_alpha_predictions_read_as_drawn(corpus, capsys, write):
    folder = _pred_folder(corpus, write)
    out, _ = hostile(["eval", folder, "--gt", corpus["gt"], "--fail-under", "gres_miou=100"],
                     capsys, code=0)
    assert "gate passed" in out


def test_ambiguous_palette_is_refused(corpus, capsys):
    def write(path, m):
        arr = m.astype(np.uint8)
        arr[0, 0] = 2  # a second object index
        _save(path, arr, "P", [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    folder = _pred_folder(corpus, write)
    hostile(["eval", folder, "--gt", corpus["gt"]], capsys, contains=["ambiguous"])


def test_symlinked_expression_folder_is_read(corpus, capsys):
    folder = _pred_folder(corpus, lambda p, m: _save(p, m.astype(np.uint8) * 255))
    real = corpus["dir"] / "elsewhere"
    (folder / "2").rename(real)
    (folder / "2").symlink_to(real)
    out, _ = hostile(["eval", folder, "--gt", corpus["gt"], "--strict"], capsys, code=0)
    assert "0 missing" in out


def test_two_files_of_one_pair_are_refused(corpus, capsys):
    folder = _pred_folder(corpus, lambda p, m: _save(p, m.astype(np.uint8) * 255))
    (folder / "1" / "01.png").write_bytes((folder / "1" / "1.png").read_bytes())
    hostile(["eval", folder, "--gt", corpus["gt"]], capsys, contains=["same pair"])


def test_forged_state_is_refused_at_merge(corpus, capsys):
    s = corpus["dir"] / "s.npz"
    assert run_cli(["eval", corpus["preds"], "--gt", corpus["gt"], "--save-state", s],
                   capsys)[0] == 0
    with np.load(s) as z:
        st_ = {k: z[k] for k in z.files}
    st_["inter"] = st_["union"] * 10 + 5  # I > U: gIoU 820%
    forged = corpus["dir"] / "forged.npz"
    np.savez(forged, **st_)
    out = corpus["dir"] / "m.json"
    hostile(["eval", "merge", forged, "--gt", corpus["gt"], "--json", out], capsys, [out],
            contains=["intersection exceeds its union"])


@pytest.mark.parametrize("value", ["Infinity", "1e400", "NaN", '"high"'])
def test_leaderboard_refuses_non_finite_metrics(corpus, capsys, value):
    a = corpus["dir"] / "a.json"
    assert run_cli(["eval", corpus["preds"], "--gt", corpus["gt"], "--json", a], capsys)[0] == 0
    b = corpus["dir"] / "b.json"
    b.write_text(a.read_text().replace('"gres_miou": ', f'"gres_miou": {value}, "x_": ', 1))
    hostile(["leaderboard", a, b, "--markdown", corpus["dir"] / "board.md"], capsys,
            [corpus["dir"] / "board.md"])


def test_nan_bbox_in_d3_json(tmp_path, capsys):
    from grdkit.testing.synth import d3_json, generate_d3

    t = generate_d3(n_groups=2, images_per_group=3, presence_per_group=1, seed=0)
    d = d3_json(t)
    d["annotations"][0]["bbox"] = [float("nan"), 0, 1, 1]
    p = tmp_path / "d3_full_annotations.json"
    p.write_text(json.dumps(d))  # writes the NaN literal
    hostile(["convert", "d3", "--json", p, "--setting", "inter", "--out", tmp_path / "o"], capsys,
            [tmp_path / "o" / "test.json"], contains=["NaN"])


# -- contained: a hang or a native crash would be caught here, not take the suite down -------------
@pytest.mark.parametrize("mutate, command", [(_crafted_gt, "eval"), (_crafted_gt, "show"),
                                             (_huge, "eval")],
                         ids=["crafted-rle-eval", "crafted-rle-show", "huge-size-eval"])
def test_in_a_subprocess_ends_with_exit_2(corpus, mutate, command):
    """Before the fix these hung (pycocotools decoding counts of billions; Ctrl-C ignored) or
    crashed with SIGSEGV; a subprocess with a timeout contains a regression."""
    bad = _write_gt(corpus, mutate)
    out = corpus["dir"] / "out.png"
    out.write_bytes(SENTINEL)
    argv = (["eval", str(corpus["preds"]), "--gt", str(bad), "--json", str(out)]
            if command == "eval" else ["show", str(bad), "--out", str(out)])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "grdkit.cli.main", *argv], capture_output=True,
                       text=True, timeout=120, env=env, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r
    assert out.read_bytes() == SENTINEL


def test_bounds_cover_every_rle_count():
    """At MAX_PIXELS every count and delta fits MAX_TOKEN characters (30 signed bits)."""
    assert MAX_PIXELS <= 1 << (5 * MAX_TOKEN - 1)
    rle = mask_utils.frPyObjects({"size": [16384, 16384], "counts": [MAX_PIXELS - 1, 1]},
                                 16384, 16384)
    assert max(_tokens(rle["counts"])) <= MAX_TOKEN
    assert check_rles([rle["counts"]], [(16384, 16384)])[0][0]



# == round 2 (issue 30): special files, markup, forged records, whole commits ==================
# Classes: A special files (FIFO, /dev/zero) as every input; B user text is never rich markup;
# E recipe values and --set through one schema; F forged step records and reports; G commits
# all-or-nothing and --out locked; H SIGTERM like Ctrl-C; I library exceptions; J wrong input
# accepted; K the error line names the file; and image roots built from links (--follow-links).

RUNNER = r"""
import io, json, resource, signal, sys, time
resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))  # a /dev/zero read ends here
class Hang(BaseException):
    pass
def alarm(signum, frame):
    raise Hang()
signal.signal(signal.SIGALRM, alarm)
from grdkit.cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    err, out = io.StringIO(), io.StringIO()
    sys.stderr, sys.stdout = err, out
    fn = None
    if argv[0] == "__call__":  # ["__call__", "module:function", path]: a reader of the API
        import importlib, pathlib
        mod, name = argv[1].split(":")
        fn = getattr(importlib.import_module(mod), name)  # imported before the alarm starts
    t0 = time.monotonic()
    signal.alarm(20)
    try:
        if fn is not None:
            from grdkit.errors import InputError
            try:
                fn(pathlib.Path(argv[2]))
                code = 0
            except InputError as e:
                print(f"grdkit: error: {e}", file=sys.stderr)
                code = 2
        else:
            main(argv)
            code = 0
    except SystemExit as e:
        code = e.code
    except Hang:
        code = "hang"
    finally:
        signal.alarm(0)
        sys.stderr, sys.stdout = sys.__stderr__, sys.__stdout__
    results.append({"argv": argv, "code": code, "err": err.getvalue(), "out": out.getvalue(),
                    "seconds": time.monotonic() - t0})
print(json.dumps(results))
"""


def run_contained(cases: list[list], timeout: int = 600) -> list[dict]:
    """Run CLI cases in ONE subprocess (one import), each under a 20 s alarm and the process
    under an address-space limit, so a FIFO that blocks or a /dev/zero read until memory runs
    out ends as a failed case, never a hung or killed test run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", RUNNER, json.dumps([[str(a) for a in c]
                                                                   for c in cases])],
                       capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def assert_one_line(res: dict, names: str | None = None, code=2, max_len=400):
    """Exit ``code``, one ``grdkit: error:`` line of at most ``max_len`` characters naming
    ``names``, no traceback."""
    err = res["err"]
    assert res["code"] == code, res
    assert "Traceback" not in err + res["out"], res
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("grdkit: error: "), res
        assert len(err) <= max_len, res
    if names is not None:
        assert names in err, res


def _special(kind: str, where: Path) -> Path:
    """``where`` made a FIFO or a link to /dev/zero."""
    where.parent.mkdir(parents=True, exist_ok=True)
    if where.exists() or where.is_symlink():
        where.unlink()
    if kind == "fifo":
        os.mkfifo(where)
    else:
        where.symlink_to("/dev/zero")
    return where


def _cosod(root: Path, groups=("cat", "dog"), n=2, jpeg=False) -> tuple[Path, Path]:
    imgs, msks = root / "images", root / "masks"
    for g in groups:
        (imgs / g).mkdir(parents=True)
        (msks / g).mkdir(parents=True)
        for k in range(n):
            arr = np.full((8, 8, 3), 40 * k, np.uint8)
            PILImage.fromarray(arr).save(imgs / g / f"{k}.{'jpg' if jpeg else 'png'}")
            m = np.zeros((8, 8), np.uint8)
            m[2:6, 2:6] = 255
            PILImage.fromarray(m).save(msks / g / f"{k}.png")
    return imgs, msks


def _special_cases(c: dict, kind: str) -> list[tuple[str, list, Path]]:
    """(input kind, argv, the special file) for every kind of input grdkit reads."""
    d = c["dir"] / kind
    d.mkdir()
    gt, preds, img = c["gt"], c["preds"], c["img"]
    report = c["dir"] / "report.json"
    cases = []

    def sp(name: str) -> Path:
        return _special(kind, d / name)

    cases.append(("predictions", ["eval", sp("p.json"), "--gt", gt], d / "p.json"))
    cases.append(("--gt", ["eval", preds, "--gt", sp("g.json")], d / "g.json"))
    folder = d / "pngs"
    (folder / "1").mkdir(parents=True)
    PILImage.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "1" / "1.png")
    _special(kind, folder / "no_target.json")
    cases.append(("no_target.json", ["eval", folder, "--gt", gt], folder / "no_target.json"))
    pngs = d / "pngs2"
    (pngs / "1").mkdir(parents=True)
    _special(kind, pngs / "1" / "2.png")
    cases.append(("prediction PNG", ["eval", pngs, "--gt", gt], pngs / "1" / "2.png"))
    cases.append(("--baseline", ["eval", preds, "--gt", gt, "--baseline", sp("b.json")],
                  d / "b.json"))
    cases.append(("state", ["eval", "merge", sp("s.npz"), "--gt", gt], d / "s.npz"))
    cases.append(("report", ["leaderboard", report, sp("r.json")], d / "r.json"))
    cases.append(("per-pair file", ["report", "--per-pair", sp("pp.jsonl"), "--gt", gt,
                                    "--out", d / "html"], d / "pp.jsonl"))
    cases.append(("derive input", ["derive", "res", sp("v.json"), "--out", d / "o.json"],
                  d / "v.json"))
    cases.append(("validate input", ["validate", sp("w.json")], d / "w.json"))
    root = d / "img"
    shutil.copytree(img, root)
    first = root / c["ds"].images[0].file_name
    _special(kind, first)
    for argv in (["show", gt, "--img-root", root, "--out", d / "s.png"],
                 ["export", "hf", gt, "--img-root", root, "--out", d / "hf", "--no-progress"],
                 ["validate", gt, "--img-root", root]):
        cases.append((f"image ({argv[0]})", [*argv, "--follow-links"], first))
    refer = d / "refer"
    refer.mkdir()
    (refer / "instances.json").write_text('{"images": [], "annotations": [], '
                                          '"categories": []}')
    _special(kind, refer / "refs(umd).p")
    cases.append(("refs", ["build", "g-refcocog", "--refer-root", refer, "--out", d / "b",
                           "--no-progress"], refer / "refs(umd).p"))
    cases.append(("refs (fingerprint)", ["__call__", "grdkit.reproduce.execute:_sha_file",
                                         refer / "refs(umd).p"], refer / "refs(umd).p"))
    for what, fn, name in (("checkpoint.pt", "grdkit.baselines.run:read_checkpoint",
                            "checkpoint.pt"),
                           ("GloVe", "grdkit.baselines.encoders:read_glove", "glove.6B.3d.txt"),
                           ("store file", "grdkit.io.files:check_regular", "images.u8")):
        cases.append((what, ["__call__", fn, sp(name)], d / name))
    cases.append(("D³ JSON", ["convert", "d3", "--json", sp("d3.json"), "--setting", "inter",
                              "--out", d / "d3"], d / "d3.json"))
    cases.append(("recipe", ["reproduce", sp("r.yaml"), "--dry-run"], d / "r.yaml"))
    imgs, msks = _cosod(d / "cosod")
    _special(kind, imgs / "cat" / "0.png")
    cases.append(("Co-SOD image", ["convert", "cosod", "--images", imgs, "--masks", msks,
                                   "--out", d / "co", "--follow-links"], imgs / "cat" / "0.png"))
    return cases


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(),
                    reason="needs FIFOs and /dev/zero (POSIX)")
def test_special_files_as_every_input_kind(corpus, capsys):
    """Class A: a FIFO and /dev/zero as each kind of input: exit 2 at once, naming the file and
    its kind (nothing opened for reading, nothing read)."""
    assert run_cli(["eval", corpus["preds"], "--gt", corpus["gt"], "--json",
                    corpus["dir"] / "report.json"], capsys)[0] == 0
    cases = _special_cases(corpus, "fifo") + _special_cases(corpus, "zero")
    results = run_contained([argv for _, argv, _ in cases])
    kinds = set()
    for (what, _, path), res in zip(cases, results):
        assert res["code"] != "hang", (what, res)
        if what == "image (validate)":  # a finding of the report (exit 1), named there
            assert res["code"] == 1 and "Traceback" not in res["err"] + res["out"], res
            text = " ".join(res["out"].split())
            assert "image_unreadable" in text and ("FIFO" in text or "character" in text), res
        else:
            assert_one_line(res, str(path))
            assert "FIFO" in res["err"] or "character device" in res["err"], (what, res)
        assert res["seconds"] < 15, (what, res)
        kinds.add(what)
    assert len(kinds) >= 20


def test_checked_opener_refuses_before_reading(tmp_path):
    from grdkit.io import check_regular, open_regular, read_bytes

    p = tmp_path / "x.json"
    p.write_bytes(b"0123456789")
    assert read_bytes(p, "file") == b"0123456789"
    assert read_bytes(p, what="file", limit=10) == b"0123456789"
    with open_regular(p, "file", mode="r") as f:
        assert f.read() == "0123456789"
    with pytest.raises(InputError, match="above grdkit's bound"):
        read_bytes(p, "file", limit=9)
    with pytest.raises(InputError, match="a folder"):
        open_regular(tmp_path, "predictions file")
    with pytest.raises(InputError, match="predictions file not found"):
        check_regular(tmp_path / "none.json", "predictions file")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "f")
        with pytest.raises(InputError, match="FIFO"):
            read_bytes(tmp_path / "f", "file")  # refused by stat: never opened, never blocks


# -- class B: user text is never rich markup ----------------------------------------------------
MARKUP = ["[/]", "[red]x", "[bold]b[/bold]", "a[/x]b", "[link=https:x]y[/link]"]


@pytest.mark.parametrize("text", MARKUP)
def test_markup_in_user_text_is_printed_as_is(corpus, capsys, text):
    d = corpus["dir"]
    out = d / f"o{text}x" / "s.png"
    code, so, se = run_cli(["show", corpus["gt"], "--out", out], capsys)
    assert code == 0 and out.exists() and "Traceback" not in so + se, se
    bad = _write_gt(corpus, _file_name(f"{text}.png"))
    code, so, se = run_cli(["validate", bad, "--img-root", corpus["img"]], capsys)
    assert code == 1 and "Traceback" not in so + se
    assert text in so.replace("\n", "").replace(" ", "") or "image_" in so
    rep = d / f"r{text}" / "r.json"
    code, so, se = run_cli(["eval", corpus["preds"], "--gt", corpus["gt"], "--json", rep],
                           capsys)
    assert code == 0 and rep.exists(), se
    hostile(["eval", d / f"missing{text}.json", "--gt", corpus["gt"]], capsys,
            contains=[f"missing{text}.json"])
    board = d / f"board{text}.md"
    code, so, se = run_cli(["leaderboard", rep, rep, "--names", f"{text},b{text}",
                            "--markdown", board], capsys)
    assert code == 0 and "Traceback" not in so + se, se
    assert f"b{text}" in board.read_text()


# -- class E: recipe values and --set through one typed, range-checked schema -----------------
@pytest.mark.parametrize("setting, text", [
    ("size=0", "size"), ("size=[320]", "size"), ("size=1e9", "size"), ("epochs=-3", "epochs"),
    ("epochs=true", "epochs"), ("epochs=2.5", "epochs"), ("lr=1e999", "lr"), ("lr=0", "lr"),
    ("lr=NaN", "lr"), ("threshold=NaN", "threshold"), ("threshold=1.5", "threshold"),
    ("threshold=\"0.5\"", "threshold"), ("group_size={}", "group_size"),
    ("optimizer=sgd", "optimizer"), ("milestones=[0]", "milestones"),
    ("milestones=5", "milestones"), ("rank=[1]", "rank"), ("margin=-1", "margin"),
])
def test_set_values_go_through_the_schema(capsys, setting, text):
    hostile(["reproduce", "lts/table6", "--rows", "s320", "--dry-run", "--set", setting],
            capsys, contains=[f"--set {text}"])


def test_schema_is_the_cli_train_options():
    """One schema: grdkit train's options carry the types of RUN_OPTIONS (same bounds)."""
    from grdkit.baselines.options import RUN_OPTIONS
    from grdkit.cli.baselines import cache_cmd, predict_cmd, train_cmd

    seen = 0
    for cmd in (train_cmd, predict_cmd, cache_cmd):
        for p in cmd.params:
            if p.name in RUN_OPTIONS and not getattr(p, "is_flag", False):
                want, got = RUN_OPTIONS[p.name], p.type
                for attr in ("min", "max", "min_open", "max_open", "choices"):
                    assert getattr(got, attr, None) == getattr(want, attr, None), (p.name, attr)
                seen += 1
    assert seen >= 28


def _recipe(tmp_path, mutate=None, text=None) -> Path:
    from importlib import resources

    src = (resources.files("grdkit.reproduce") / "recipes" / "lts" / "table6.yaml").read_text(
        encoding="utf-8")
    p = tmp_path / "r.yaml"
    p.write_bytes(text if text is not None else mutate(src).encode("utf-8"))
    return p


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("case", ["preset-list", "size-list", "size-zero", "two-unknown-keys",
                                  "not-utf8", "alias-bomb", "threshold-nan", "epochs-negative"])
def test_hostile_recipes(tmp_path, capsys, case):
    import time

    sub = {"preset-list": ("preset: lts-paper, train: {size: 320}",
                           "preset: [lts-paper], train: {size: 320}"),
           "size-list": ("train: {size: 320}", "train: {size: [320]}"),
           "size-zero": ("train: {size: 320}", "train: {size: 0}"),
           "threshold-nan": ("train: {size: 320}", "train: {size: 320, threshold: .nan}"),
           "epochs-negative": ("train: {size: 320}", "train: {size: 320, epochs: -3}")}
    if case in sub:
        p = _recipe(tmp_path, lambda s: s.replace(*sub[case], 1))
    elif case == "two-unknown-keys":
        p = _recipe(tmp_path, lambda s: s + "1: x\nzz: y\n")
    elif case == "not-utf8":
        p = _recipe(tmp_path, text=b"recipe: \xff\xfe\n")
    else:
        p = _recipe(tmp_path, text=BOMB.encode())
    t0 = time.monotonic()
    hostile(["reproduce", p, "--rows", "s320", "--dry-run"], capsys, contains=[str(p)])
    assert time.monotonic() - t0 < 30  # a hang bound, not a speed figure (bombs took 27 s)


def test_shipped_recipes_still_load():
    from grdkit.reproduce import load_recipe
    from grdkit.reproduce.recipe import recipe_names

    assert all(load_recipe(n).rows for n in recipe_names())


# -- class F: a resumed reproduce checks its records and reports ------------------------------
def test_forged_step_records_and_reports_rerun_the_step(tmp_path):
    from grdkit.evaluators.report import check_report
    from grdkit.reproduce.execute import Executor, fingerprint
    from grdkit.reproduce.plan import Step

    ex = Executor(tmp_path, tmp_path, "cpu", None, 1)
    step = Step("eval", "abc123", {}, [])
    report = tmp_path / "evals" / "abc123.json"
    report.parent.mkdir()
    good = {"metrics": {"res_miou": 50.0, "e_measure": 0.5}, "config": {}}
    report.write_text(json.dumps(good))
    rec = {"id": step.id, "kind": "eval", "inputs": "i", "outputs": fingerprint([report])}
    ex.record_path(step).parent.mkdir()
    ex.record_path(step).write_text(json.dumps(rec))
    assert ex.record(step) == rec and ex._outputs_now(step) == rec["outputs"]
    for forged in ([], "x", {**rec, "outputs": 5}, {**rec, "kind": "train"},
                   {k: v for k, v in rec.items() if k != "inputs"}):
        ex.record_path(step).write_text(json.dumps(forged))
        assert ex.record(step) is None, forged
    ex.record_path(step).write_text("{not json")
    assert ex.record(step) is None
    report.write_text(json.dumps({**good, "metrics": {"res_miou": 1e9}}))
    assert ex._outputs_now(step) != rec["outputs"]  # the report changed: the step runs again
    assert check_report(good, "r.json") is good
    for metrics in ({"res_miou": 1e9}, {"res_miou": "50"}, {"res_miou": -1}, {"mae": 2.0},
                    {"gres_miou": float("inf")}, {"t_acc": [1]}):
        with pytest.raises(InputError, match="r.json"):
            check_report({"metrics": metrics, "config": {}}, "r.json")
    with pytest.raises(InputError, match="not a grdkit JSON report"):
        check_report([], "r.json")


# -- class G: commits all-or-nothing, --out locked -----------------------------------------------
@pytest.mark.parametrize("fail_at", [0, 1, 2])
def test_commit_rolls_back_a_rename_that_fails_part_way(tmp_path, monkeypatch, fail_at):
    from grdkit.io import atomic

    for n in ("a", "b"):
        (tmp_path / f"{n}.json").write_text(f"old {n}")
    (tmp_path / "stale.json").write_text("old stale")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real, calls = os.replace, []

    def replace(src, dst):
        if str(src).endswith(".tmp"):
            calls.append(dst)
            if len(calls) - 1 == fail_at:
                raise PermissionError(1, "Operation not permitted", str(dst))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(InputError, match="cannot be replaced"), Commit() as c:
        c.write_text(tmp_path / "a.json", "new a")
        c.write_text(tmp_path / "b.json", "new b")
        c.write_text(tmp_path / "c.json", "new c")
        c.remove(tmp_path / "stale.json")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_second_writer_into_one_out_is_refused(corpus, capsys):
    from grdkit.io import lock_folder

    out = corpus["dir"] / "hf"
    with lock_folder(out):
        hostile(["export", "hf", corpus["gt"], "--out", out, "--no-progress"], capsys,
                contains=["another grdkit run", str(out)])
        assert not list(out.rglob("*"))
    code, _, err = run_cli(["export", "hf", corpus["gt"], "--out", out, "--no-progress"], capsys)
    assert code == 0, err


# -- class H: SIGTERM like Ctrl-C ------------------------------------------------------------------
SLOW = r"""
import sys, time
import grdkit.io.atomic as atomic
real = atomic.Commit.temp_for
def slow(self, path):
    tmp = real(self, path)
    open(tmp, "wb").close()
    print("TEMP", flush=True)
    time.sleep(30)
    return tmp
atomic.Commit.temp_for = slow
from grdkit.cli.main import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("command", ["export", "build"])
def test_sigterm_removes_temp_files(corpus, tmp_path, command):
    import signal

    from grdkit.testing.synth import demo_root

    out = tmp_path / "out"
    argv = (["export", "hf", str(corpus["gt"]), "--out", str(out), "--no-progress"]
            if command == "export" else
            ["build", "g-refcocog", "--refer-root", str(demo_root()), "--out", str(out),
             "--min-images", "1", "--no-progress"])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", SLOW, *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "TEMP"  # a temp file exists now
        assert [q for q in out.rglob("*") if q.name.endswith(".tmp")]
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 143 and "Traceback" not in err and "aborted" in err, err
    assert not [q for q in out.rglob("*") if q.name.endswith(".tmp")]


# -- class I: library exceptions never reach the user ------------------------------------------
def test_zero_stride_checkpoint_is_refused_unallocated(tmp_path):
    torch = pytest.importorskip("torch")
    from grdkit.baselines.run import read_checkpoint

    huge = torch.zeros(1).as_strided((200000, 200000), (0, 0))
    p = tmp_path / "checkpoint.pt"
    torch.save({"model": {"w": huge}}, p)
    assert p.stat().st_size < 4096
    with pytest.raises(InputError, match="200000, 200000"):
        read_checkpoint(p)
    torch.save({"model": {"w": torch.zeros(3, 2)}}, p)
    assert read_checkpoint(p)["model"]["w"].shape == (3, 2)


def test_state_without_fingerprint_and_string_baseline(corpus, capsys):
    d = corpus["dir"]
    s, r = d / "s.npz", d / "r.json"
    assert run_cli(["eval", corpus["preds"], "--gt", corpus["gt"], "--save-state", s, "--json",
                    r], capsys)[0] == 0
    with np.load(s) as z:
        st_ = {k: z[k] for k in z.files}
    meta = json.loads(str(st_["meta"]))
    for drop in ("fingerprint", "splits", "protocol"):
        st_["meta"] = np.array(json.dumps({k: v for k, v in meta.items() if k != drop}))
        np.savez(d / "f.npz", **st_)
        hostile(["eval", "merge", d / "f.npz", "--gt", corpus["gt"]], capsys,
                contains=["f.npz", "not a grdkit evaluation state"])
    for value in ('"high"', "[1]", "1e9", "-3"):
        b = d / "b.json"
        b.write_text(r.read_text().replace('"gres_miou": ', f'"gres_miou": {value}, "x_": ', 1))
        hostile(["eval", corpus["preds"], "--gt", corpus["gt"], "--baseline", b], capsys,
                contains=["b.json", "gres_miou"])


def test_show_with_a_huge_expression(corpus, capsys):
    bad = _write_gt(corpus, lambda d: d["expressions"][0].update(text="x" * 2_000_000 + "\u4e2d"))
    out = corpus["dir"] / "s.png"
    code, _, err = run_cli(["show", bad, "--out", out], capsys)
    assert code == 0 and out.exists(), err


def test_group_folder_name_not_utf8(tmp_path, capsys):
    imgs, msks = _cosod(tmp_path)
    for root in (imgs, msks):
        os.rename(root / "cat", os.fsdecode(bytes(root / "cat") + b"\xff"))
    hostile(["convert", "cosod", "--images", imgs, "--masks", msks, "--out", tmp_path / "o",
             "--no-progress"], capsys, [tmp_path / "o" / "test.json"], contains=["not UTF-8"])


# -- class J: wrong input accepted --------------------------------------------------------------
@pytest.mark.parametrize("text, name", [("5 3\nthe 0.1 0.2 0.3\n", "glove.6B.3d.txt"),
                                        ("the 0.1 0.2 0.3\n", "glove.6B.50d.txt")])
def test_word2vec_and_wrong_dimension_glove(corpus, capsys, text, name):
    pytest.importorskip("torch")
    from grdkit.baselines.encoders import read_glove

    p = corpus["dir"] / name
    p.write_text(text)
    with pytest.raises(InputError, match="line 1"):
        read_glove(p)
    ok = corpus["dir"] / "glove.6B.3d.txt"
    ok.write_text("the 0.1 0.2 0.3\nof 1 2 3\n")
    assert read_glove(ok)[1].shape == (2, 3)


@pytest.mark.parametrize("value", ["1e9", "100.5", "-0.1"])
def test_leaderboard_bounds_percent_metrics(corpus, capsys, value):
    a = corpus["dir"] / "a.json"
    assert run_cli(["eval", corpus["preds"], "--gt", corpus["gt"], "--json", a], capsys)[0] == 0
    b = corpus["dir"] / "b.json"
    b.write_text(a.read_text().replace('"gres_miou": ', f'"gres_miou": {value}, "x_": ', 1))
    hostile(["leaderboard", a, b], capsys, contains=["b.json", "outside [0, 100]"])


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_convert_cosod_refuses_a_truncated_jpeg(tmp_path, capsys, cut):
    imgs, msks = _cosod(tmp_path, jpeg=True)
    f = imgs / "dog" / "1.jpg"
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * cut)])
    hostile(["convert", "cosod", "--images", imgs, "--masks", msks, "--out", tmp_path / "o",
             "--no-progress"], capsys, [tmp_path / "o" / "test.json"], contains=["1.jpg"])


# -- class K: the error line names the file ----------------------------------------------------
@pytest.mark.parametrize("field, value", [("peak", [1, 2, 3]), ("peak", [99, 99]),
                                          ("peak", "top"), ("image_id", 999)])
def test_record_errors_name_the_predictions_file(corpus, capsys, field, value):
    recs = [dict(r) for r in corpus["records"]]
    recs[1][field] = value
    p = corpus["dir"] / "named-preds.json"
    p.write_text(json.dumps(recs))
    _, err = hostile(["eval", p, "--gt", corpus["gt"]], capsys)
    assert err.startswith(f"grdkit: error: {p}"), err


def test_naming_adds_the_file_to_record_errors():
    from grdkit.errors import naming

    with pytest.raises(InputError) as e, naming("p.json"):
        raise InputError(None, "bad peak", "predictions[0]", "fix it")
    assert str(e.value) == "p.json: predictions[0]: bad peak (fix: fix it)"
    with pytest.raises(InputError) as e, naming("p.json"):
        raise InputError("other.json", "bad")
    assert str(e.value) == "other.json: bad"


# -- image roots built from links ----------------------------------------------------------------
def test_image_root_of_links_needs_follow_links_everywhere(tmp_path, capsys):
    imgs, msks = _cosod(tmp_path / "real")
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    for g in ("cat", "dog"):
        (root / "images" / g).symlink_to(imgs / g)  # images/coco -> /data/coco/train2014
    out = tmp_path / "o"
    base = ["convert", "cosod", "--images", root / "images", "--masks", msks, "--out", out,
            "--no-progress"]
    hostile(base, capsys, [out / "test.json"], contains=["--follow-links", "leaves the image"])
    out.joinpath("test.json").unlink()
    code, _, err = run_cli([*base, "--follow-links"], capsys)
    assert code == 0, err
    d = json.loads((out / "test.json").read_text())
    assert d["info"]["recipe"]["follow_links"] is True
    vout, _ = hostile(["validate", out / "test.json", "--img-root", root / "images"], capsys,
                      code=1)
    assert "image_path" in vout
    code, vout, _ = run_cli(["validate", out / "test.json", "--img-root", root / "images",
                             "--follow-links"], capsys)
    assert code == 0, vout
    code, _, err = run_cli(["show", out / "test.json", "--img-root", root / "images", "--out",
                            tmp_path / "s.png"], capsys)  # the setting does not leak between runs
    assert code == 2 and "--follow-links" in err


class _Run:
    def __reduce__(self):
        return (os.system, ("touch ran-code",))


def test_text_model_folder_holding_a_pickle(tmp_path, monkeypatch):
    """Class I: transformers refuses a pickled ``pytorch_model.bin`` (weights_only); that is an
    input error naming the folder, and nothing ran."""
    pytest.importorskip("transformers")
    import pickle

    from grdkit.baselines.encoders import TextEncoder, bundled_text_path

    src = bundled_text_path()
    folder = tmp_path / "bert"
    folder.mkdir()
    for f in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json"):
        shutil.copy(src / f, folder / f)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Run()}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="cannot be loaded as a transformers text model"):
        TextEncoder(str(folder))
    assert not (tmp_path / "ran-code").exists()


def test_immutable_split_file_leaves_the_earlier_build(tmp_path, capsys):
    """Class G, the issue's reproducer: ``chattr +i B/val.json`` then a second build with
    another seed: exit 2 naming val.json, every file of the first build as it was, no temp
    file (needs chattr and the right to use it: root on ext4 / overlayfs)."""
    from grdkit.testing.synth import demo_root

    out = tmp_path / "B"
    base = ["build", "g-refcocog", "--refer-root", demo_root(), "--out", out, "--min-images",
            "1", "--no-progress"]
    assert run_cli(base, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(out / "val.json")],
                                        capture_output=True, check=False).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        hostile([*base, "--seed", "7"], capsys, contains=["val.json", "cannot be replaced"])
    finally:
        subprocess.run([chattr, "-i", str(out / "val.json")], check=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("drop", ["optimizer", "scheduler", "step"])
def test_resume_from_a_checkpoint_missing_its_state(corpus, capsys, drop):
    """Class I: ``--resume`` from a checkpoint without ``optimizer`` (or ``scheduler``,
    ``step``): exit 2 naming the checkpoint and the key, the checkpoint untouched."""
    torch = pytest.importorskip("torch")
    run = corpus["dir"] / "run"
    argv = ["train", "lts", "--data", corpus["gt"], "--img-root", corpus["img"], "--out", run,
            "--size", "64", "--max-steps", "0", "--workers", "0", "--no-progress"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    del ck[drop]
    torch.save(ck, run / "checkpoint.pt")
    before = (run / "checkpoint.pt").read_bytes()
    hostile([*argv, "--resume"], capsys, contains=["checkpoint.pt", repr(drop)])
    assert (run / "checkpoint.pt").read_bytes() == before


def test_second_reproduce_into_one_out_is_refused(tmp_path, capsys):
    from grdkit.io import lock_folder

    out = tmp_path / "runs"
    with lock_folder(out):
        hostile(["reproduce", "lts/table6", "--rows", "s320", "--smoke", "--out", out], capsys,
                contains=["another grdkit run", str(out)])
    assert not (out / "toy-data").exists()
