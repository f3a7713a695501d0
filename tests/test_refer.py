"""refer readers: Python 2 / 3 pickles, grefs JSON, instances.json and their errors."""

import json
import pickle

import pytest

from grdkit.errors import InputError
from grdkit.sources import refer

from .conftest import load_refs_py3
from .py2pickle import dumps_py2, to_py2_strings


def test_real_py3_pickle(refcocog_root):
    refs = refer.load_refs(refcocog_root / "refs(umd).p")
    assert len(refs) == 15
    r = next(x for x in refs if x.ref_id == 40373)
    assert r.image_id == 122469 and r.ann_ids == (251837,) and r.split == "train"
    assert r.category_id == 1
    assert [s.sent_id for s in r.sentences] == [91981, 91982]
    assert r.sentences[1].sent == "a woman wearing black dress"
    assert {x.split for x in refs} == {"train", "val", "test"}


def test_python2_pickle_with_byte_strings_reads_like_python3(tmp_path, refcocog_root):
    raw = load_refs_py3(refcocog_root / "refs(umd).p")
    py2 = tmp_path / "refs(umd).p"
    py2.write_bytes(dumps_py2(to_py2_strings(raw)))
    # the file really holds byte strings when read naively
    naive = pickle.loads(py2.read_bytes(), encoding="bytes")
    assert isinstance(next(iter(naive[0])), bytes)
    assert refer.load_refs(py2) == refer.load_refs(refcocog_root / "refs(umd).p")


def test_python2_pickle_non_utf8_bytes_is_an_error(tmp_path):
    p = tmp_path / "refs(umd).p"
    p.write_bytes(dumps_py2([{b"ref_id": 1, b"sent": b"caf\xe9"}]))
    with pytest.raises(InputError, match="not UTF-8"):
        refer.load_pickle(p)


def test_pickle_with_globals_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "refs(umd).p"
    p.write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(InputError, match="builtins.print"):
        refer.load_refs(p)


@pytest.mark.parametrize("content, msg", [
    (b"", "truncated"),
    (b"this is not a pickle", "not a readable pickle"),
])
def test_unreadable_pickles(tmp_path, content, msg):
    p = tmp_path / "refs(umd).p"
    p.write_bytes(content)
    with pytest.raises(InputError, match=msg) as e:
        refer.load_refs(p)
    assert str(p) in str(e.value)


def test_truncated_real_pickle(tmp_path, refcocog_root):
    data = (refcocog_root / "refs(umd).p").read_bytes()
    p = tmp_path / "refs(umd).p"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        refer.load_refs(p)


def test_bad_ref_record_is_named(tmp_path):
    p = tmp_path / "refs(umd).p"
    p.write_bytes(pickle.dumps([{"ref_id": 7, "image_id": 1, "ann_id": 2, "split": "val"}]))
    with pytest.raises(InputError, match=r"ref_id 7: missing key 'sentences'"):
        refer.load_refs(p)


def test_grefs_json_lists_and_no_target(tmp_path):
    grefs = [
        {"ref_id": 1, "image_id": 10, "ann_id": [5, 6], "category_id": [1, 2], "split": "val",
         "sentences": [{"sent_id": 100, "sent": "two dogs", "raw": "Two dogs"}]},
        {"ref_id": 2, "image_id": 11, "ann_id": [-1], "category_id": [], "split": "val",
         "sentences": [{"sent_id": 101, "sent": "a giraffe", "raw": "a giraffe"}]},
    ]
    p = tmp_path / "grefs(unc).json"
    p.write_text(json.dumps(grefs))
    refs = refer.load_refs(p)
    assert refs[0].ann_ids == (5, 6) and not refs[0].no_target
    assert refs[1].ann_ids == () and refs[1].no_target
    assert refs[0].category_id is None  # gRefCOCO lists categories; not a single id
    grefs[1]["ann_id"] = [-1, 3]
    p.write_text(json.dumps(grefs))
    with pytest.raises(InputError, match="ref_id 2: .*mixes -1"):
        refer.load_refs(p)


def test_read_refer_finds_grefs(tmp_path, refcocog_root):
    (tmp_path / "instances.json").write_bytes((refcocog_root / "instances.json").read_bytes())
    (tmp_path / "grefs(unc).json").write_text("[]")
    data = refer.read_refer(tmp_path, "unc")
    assert data.refs == [] and len(data.images) == 15 and len(data.annotations) == 108
    assert set(data.sources) == {"grefs(unc).json", "instances.json"}


def test_instances_errors(tmp_path):
    p = tmp_path / "instances.json"
    p.write_text('{"images": [], "annotations": [')
    with pytest.raises(InputError, match="line 1 column 32: invalid JSON"):
        refer.load_instances(p)
    p.write_text(json.dumps({"images": [{"id": 3, "file_name": "a.jpg", "height": 0,
                                         "width": 5}], "annotations": []}))
    with pytest.raises(InputError, match="image id 3: height is 0"):
        refer.load_instances(p)
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match="missing list 'annotations'"):
        refer.load_instances(p)


def test_missing_refs_file_lists_what_is_there(refcocog_root):
    with pytest.raises(InputError, match=r"refs\(unc\)\.p.*refs file not found.*refs\(umd\)\.p"):
        refer.read_refer(refcocog_root, "unc")
