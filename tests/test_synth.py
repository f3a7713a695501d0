"""The generator: determinism, and the bundled demo sample is exactly its output."""

import json
import pickle

from grdkit.sources.refer import load_refs
from grdkit.testing.synth import DEMO_ARGS, demo_root, generate_refer, write_refer


def test_bundled_demo_is_the_generator_output(tmp_path):
    write_refer(tmp_path, *generate_refer(**DEMO_ARGS))
    for name in ("refs(umd).p", "refs(unc).p", "refs(google).p"):
        assert pickle.loads((tmp_path / name).read_bytes()) == \
            pickle.loads((demo_root() / name).read_bytes())
    assert json.loads((tmp_path / "instances.json").read_text()) == \
        json.loads((demo_root() / "instances.json").read_text())


def test_generator_shape_and_determinism():
    a = generate_refer(300, seed=5)
    b = generate_refer(300, seed=5)
    assert a == b
    refs, inst = a
    assert len(inst["images"]) == 300
    assert {r["split"] for r in refs["umd"]} == {"train", "val", "test"}
    assert {r["split"] for r in refs["unc"]} == {"train", "val", "testA", "testB"}
    n_inst = len(inst["annotations"])
    assert 6 * 300 < n_inst < 10 * 300  # mean 7.75 per image
    assert any(a["iscrowd"] for a in inst["annotations"])
    texts = [s["sent"] for r in refs["umd"] for s in r["sentences"]]
    assert len(set(texts)) < len(texts)  # repeated sentences exist (the long tail)


def test_generated_refs_parse(tmp_path):
    write_refer(tmp_path, *generate_refer(50, seed=1))
    assert len(load_refs(tmp_path / "refs(umd).p")) > 50
