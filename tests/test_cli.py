"""CLI: help, the demo build, stats, and every bad input -> exit 2, one named message, no output."""

import json
import pickle

import pytest

from .conftest import run_cli


def test_help_explains(capsys):
    code, out, _ = run_cli(["build", "--help"], capsys)
    assert code == 0
    for word in ("--refer-root", "--min-images", "--neg-ratio", "category-disjoint", "--seed",
                 "bundled demo"):
        assert word in out


def test_build_prints_the_paper_counts(tmp_path, capsys):
    code, out, _ = run_cli(["build", "g-refcocog", "--out", tmp_path / "o", "--no-progress"],
                           capsys)
    assert code == 0 and "2451 in the paper" in out


def test_demo_build_and_stats(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli(["build", "g-refcocog", "--out", out, "--no-progress"], capsys)
    assert code == 0
    assert "bundled demo sample" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "test.json", "train.json",
                                                     "val.json"]
    code, stdout, _ = run_cli(["stats", out], capsys)
    assert code == 0 and "total" in stdout and "135" in stdout  # 68 + 43 + 24 pairs


def _bad(refer_copy, what):
    """Corrupt the copy of the real sample in one way."""
    refs_p = refer_copy / "refs(umd).p"
    inst_p = refer_copy / "instances.json"
    refs = pickle.loads(refs_p.read_bytes())
    inst = json.loads(inst_p.read_text())
    if what == "missing refs":
        refs_p.unlink()
        return r"refs\(umd\)\.p: refs file not found"
    if what == "missing instances":
        inst_p.unlink()
        return r"instances\.json: instances\.json not found"
    if what == "truncated refs":
        refs_p.write_bytes(refs_p.read_bytes()[:300])
        return r"refs\(umd\)\.p: pickle is truncated"
    if what == "not a pickle":
        refs_p.write_text("ref_id,image_id\n1,2\n")
        return r"refs\(umd\)\.p: is not a readable pickle"
    if what == "malformed instances":
        inst_p.write_text(inst_p.read_text()[:1000])
        return r"instances\.json: line \d+ column \d+: invalid JSON"
    if what == "missing annotation":
        inst["annotations"] = [a for a in inst["annotations"] if a["id"] != 117337]
        inst_p.write_text(json.dumps(inst))
        return r"refs\(umd\)\.p: ref_id 6835: ann_id 117337 is not in instances\.json"
    if what == "missing image":
        inst["images"] = [i for i in inst["images"] if i["id"] != 18473]
        inst_p.write_text(json.dumps(inst))
        return r"refs\(umd\)\.p: ref_id 6835: image_id 18473 is not in instances\.json"
    if what == "short polygon":
        a = next(a for a in inst["annotations"] if a["id"] == 117337)
        a["segmentation"] = [[1.0, 2.0, 30.0, 40.0]]
        inst_p.write_text(json.dumps(inst))
        return (r"instances\.json: annotation id 117337 \(image id 18473\): polygon part 0 "
                r"has 2 points; at least 3")
    if what == "zero image size":
        i = next(i for i in inst["images"] if i["id"] == 18473)
        i["height"] = 0
        inst_p.write_text(json.dumps(inst))
        return r"instances\.json: image id 18473: height is 0"
    if what == "bad ref":
        del refs[2]["sentences"]
        refs_p.write_bytes(pickle.dumps(refs))
        return r"refs\(umd\)\.p: ref_id \d+: missing key 'sentences'"
    raise AssertionError(what)


CASES = ["missing refs", "missing instances", "truncated refs", "not a pickle",
         "malformed instances", "missing annotation", "missing image", "short polygon",
         "zero image size", "bad ref"]


@pytest.mark.parametrize("what", CASES)
def test_bad_input_exit_2(refer_copy, tmp_path, capsys, what):
    pattern = _bad(refer_copy, what)
    out = tmp_path / "out"
    code, _, stderr = run_cli(["build", "g-refcocog", "--refer-root", refer_copy,
                                    "--min-images", "1", "--out", out, "--no-progress"], capsys)
    assert code == 2
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("grdkit: error: "), stderr
    import re
    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists()  # no partial output


def test_usage_errors_exit_2(tmp_path, capsys):
    code, _, err = run_cli(["build", "g-refcocog", "--out", tmp_path, "--min-images", "0"],
                           capsys)
    assert code == 2 and "min-images" in err
    code, _, err = run_cli(["build", "g-nope", "--out", tmp_path], capsys)
    assert code == 2
    code, _, err = run_cli(["stats", tmp_path / "absent"], capsys)
    assert code == 2
    # a splitBy the dataset does not have: one line naming the dataset and the choices
    code, _, err = run_cli(["build", "g-refcoco+", "--split-by", "umd", "--out", tmp_path],
                           capsys)
    assert code == 2 and "RefCOCO+ has no splitBy 'umd'" in err and "choose one of unc" in err


def test_existing_output_replaced_atomically(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "val.json").write_text("old")
    code, _, _ = run_cli(["build", "g-refcocog", "--out", out, "--no-progress"], capsys)
    assert code == 0
    assert json.loads((out / "val.json").read_text())["info"]["split"] == "val"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert oct((out / "val.json").stat().st_mode & 0o777) != oct(0o600)
