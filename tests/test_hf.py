"""HuggingFace export / loading: exact round trips, real data, embedded images, cards."""

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image as PILImage

from grdkit import masks
from grdkit.builders import build_dataset
from grdkit.errors import InputError
from grdkit.export.card import load_template
from grdkit.hf import decode_mask, export_hf, from_hf, to_hf
from grdkit.testing.synth import demo_root

from .conftest import SHARED, cow_dataset, run_cli


def assert_same(a: dict, b: dict):
    assert list(a) == list(b)
    for s, ds in a.items():
        assert ds.to_dict() == b[s].to_dict()
        for x, y in zip(ds.targets, b[s].targets):
            np.testing.assert_array_equal(masks.decode(x.segmentation),
                                          masks.decode(y.segmentation))


@pytest.fixture(scope="module")
def demo():
    return build_dataset("g-refcocog", demo_root())[0]


@pytest.mark.parametrize("config", ["groups", "pairs"])
def test_in_memory_round_trip(demo, config):
    dd = to_hf(demo, config=config)
    assert list(dd) == list(demo)
    n = {s: (sum(len(g.expression_ids) for g in d.groups) if config == "groups"
             else len(d.targets)) for s, d in demo.items()}
    assert {s: dd[s].num_rows for s in dd} == n
    assert_same(from_hf(dd), demo)


def test_real_refcocog_export_without_images(tmp_path, refcocog_root, capsys):
    built = tmp_path / "g"
    code, *_ = run_cli(["build", "g-refcocog", "--refer-root", refcocog_root, "--min-images", "1",
                        "--out", built, "--no-progress"], capsys)
    assert code == 0
    out = tmp_path / "hf"
    code, stdout, _ = run_cli(["export", "hf", built, "--out", out, "--config", "groups",
                               "--config", "pairs", "--no-progress"], capsys)
    assert code == 0 and "load_dataset" in stdout
    assert not list(out.rglob(".*.tmp"))
    from grdkit import load_splits

    orig = load_splits(built)
    dd = datasets.load_dataset(str(out))  # default config: groups, no loading script
    assert {s: dd[s].num_rows for s in dd} == {"train": 9, "val": 10, "test": 9}
    feats = dd["val"].features
    assert feats["images"] == datasets.List(datasets.Value("string"))
    assert feats["masks"] == datasets.List({"size": datasets.List(datasets.Value("int32")),
                                            "counts": datasets.Value("string")})
    row = dd["val"][0]
    ds = orig["val"]
    g = ds.group(row["group_id"])
    assert row["images"] == [ds.image(i).file_name for i in g.image_ids]
    for k, iid in enumerate(row["image_ids"]):
        t = ds.target(row["expression_id"], iid)
        np.testing.assert_array_equal(decode_mask(row, k), masks.decode(t.segmentation))
        assert row["positive"][k] == t.positive
    assert_same(from_hf(dd), orig)
    pairs = datasets.load_dataset(str(out), "pairs")
    assert {s: pairs[s].num_rows for s in pairs} == {"train": 18, "val": 20, "test": 18}
    assert_same(from_hf(pairs), orig)
    files = sorted(str(p) for p in (out / "pairs").glob("val-*.parquet"))
    plain = datasets.load_dataset("parquet", data_files={"val": files})
    assert plain["val"].num_rows == 20
    np.testing.assert_array_equal(decode_mask(plain["val"][0]),
                                  masks.decode(ds.target(plain["val"][0]["expression_id"],
                                                         plain["val"][0]["image_id"])
                                               .segmentation))
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in front["configs"]] == ["groups", "pairs"]
    assert front["configs"][0]["default"] is True
    assert front["task_categories"] == ["image-segmentation"] and front["language"] == ["en"]
    assert {i["config_name"] for i in front["dataset_info"]} == {"groups", "pairs"}
    assert "| total | 28 | 28 | 15 | 56 | 28 | 28 |" in card  # statistics filled in


def test_cow_group_with_embedded_images(tmp_path):
    ds = cow_dataset()
    export_hf({"test": ds}, tmp_path / "hf", img_root=SHARED, configs=("groups", "pairs"))
    dd = datasets.load_dataset(str(tmp_path / "hf"))
    assert dd["test"].num_rows == 1
    row = dd["test"][0]
    assert len(row["images"]) == 63
    first = PILImage.open(SHARED / ds.images[0].file_name)
    assert row["images"][0].size == first.size == (320, 213)
    np.testing.assert_array_equal(np.asarray(row["images"][0]), np.asarray(first))
    assert sum(row["positive"]) == 30
    np.testing.assert_array_equal(decode_mask(row, 0), masks.decode(ds.targets[0].segmentation))
    assert_same(from_hf(dd), {"test": ds})
    pairs = datasets.load_dataset(str(tmp_path / "hf"), "pairs")
    assert pairs["test"].num_rows == 63
    assert pairs["test"].features["image"] == datasets.Image()
    assert_same(from_hf(pairs), {"test": ds})


def test_export_is_deterministic_and_sharded(tmp_path, demo):
    for d in ("a", "b"):
        export_hf(demo, tmp_path / d, configs=("pairs",), shard_rows=10)
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    assert len(a) == 7 + 5 + 3  # 68, 43 and 24 rows in shards of 10
    for p in a:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
    dd = datasets.load_dataset(str(tmp_path / "a"))
    assert dd["train"].num_rows == 68
    assert_same(from_hf(dd), demo)


def test_missing_image_is_an_error(tmp_path, demo, capsys):
    with pytest.raises(InputError, match="image file not found"):
        export_hf(demo, tmp_path / "hf", img_root=tmp_path)
    assert not list((tmp_path / "hf").rglob("*.parquet"))


def test_from_hf_rejects_foreign_rows():
    with pytest.raises(InputError, match="lacks grdkit columns"):
        from_hf(datasets.DatasetDict({"val": datasets.Dataset.from_dict({"x": [1]})}))


@pytest.mark.parametrize("name", ["g-refcoco", "g-refcoco+", "g-refcocog", "grd"])
def test_card_templates(name):
    text = load_template(name)
    assert "{{include:" not in text
    front = text.split("---")[1]
    for key in ("pretty_name:", "license:", "task_categories:", "image-segmentation",
                "language:", "size_categories:", "{{front_matter}}"):
        assert key in front
    for section in ("## How it is built", "## Structure and fields", "## Statistics",
                    "## Sources and licences", "## Known limitations", "@inproceedings{wu2023gres"):
        assert section in text
    if name == "grd":
        assert "cc-by-nc-4.0" in front and "xie2023d3" in text
    else:
        assert "CC BY 4.0" in text and "lin2014coco" in text and "not certified" in text
