"""HuggingFace export / loading: Image masks equal to the canonical masks through both loading
paths, exact round trips, real data (the RefCOCOg sample; the cow group with its images
embedded), documented columns, cards that round-trip through ``DatasetCardData``.

``make test`` runs this file twice: in the main environment (newest ``datasets``) and in
``.venv-hf-min`` (the lowest supported ``datasets`` and its pyarrow, see the Makefile), so every
load here is checked in both.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network (set before
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the imports; make test sets both as well)

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import DatasetCard, DatasetCardData
from PIL import Image as PILImage

from grdkit import load_splits, masks
from grdkit.builders import build_dataset
from grdkit.errors import InputError
from grdkit.export.card import load_template, render_card
from grdkit.hf import COLUMNS, decode_mask, export_hf, from_hf, to_hf
from grdkit.registry import BIBTEX, DATASETS
from grdkit.testing.synth import demo_root

from .conftest import ROOT, SHARED, cow_dataset, run_cli


def assert_same(a: dict, b: dict):
    assert list(a) == list(b)
    for s, ds in a.items():
        assert ds.to_dict() == b[s].to_dict()
        for x, y in zip(ds.targets, b[s].targets):
            np.testing.assert_array_equal(masks.decode(x.segmentation),
                                          masks.decode(y.segmentation))


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def demo():
    return build_dataset("g-refcocog", demo_root())[0]


@pytest.mark.parametrize("mask_images", [True, False])
@pytest.mark.parametrize("config", ["groups", "pairs"])
def test_in_memory_round_trip(demo, config, mask_images):
    dd = to_hf(demo, config=config, mask_images=mask_images)
    assert list(dd) == list(demo)
    n = {s: (sum(len(g.expression_ids) for g in d.groups) if config == "groups"
             else len(d.targets)) for s, d in demo.items()}
    assert {s: dd[s].num_rows for s in dd} == n
    assert ("masks" in dd["val"].column_names or "mask" in dd["val"].column_names) == mask_images
    assert_same(from_hf(dd), demo)


def check_rows(dd, canonical, config: str, embed_root: Path | None = None):
    """Every row's Image mask and RLE mask equal the canonical mask; images equal the files."""
    n = 0
    for split, d in dd.items():
        ds = canonical[split]
        for row in d:
            if config == "groups":
                items = list(enumerate(row["image_ids"]))
            else:
                items = [(None, row["image_id"])]
            for k, iid in items:
                t = ds.target(row["expression_id"], iid)
                ref = masks.decode(t.segmentation)
                png = row["masks"][k] if k is not None else row["mask"]
                assert png.mode == "1" and png.size == (ref.shape[1], ref.shape[0])
                np.testing.assert_array_equal(np.asarray(png), ref.astype(bool))
                np.testing.assert_array_equal(decode_mask(row, k), ref)
                assert (row["positive"][k] if k is not None else row["positive"]) == t.positive
                if embed_root is not None:
                    im = row["images"][k] if k is not None else row["image"]
                    file = PILImage.open(embed_root / ds.image(iid).file_name)
                    np.testing.assert_array_equal(np.asarray(im), np.asarray(file))
                n += 1
    assert n == sum(len(d.targets) for d in canonical.values())


def load_both_ways(out: Path, config: str) -> list:
    """The export loaded as a folder (the card's configs) and as plain Parquet files."""
    folder = datasets.load_dataset(str(out), config)
    files = {s: sorted(str(p) for p in (out / "data" / config).glob(f"{s}-*.parquet"))
             for s in folder}
    plain = datasets.load_dataset("parquet", data_files=files)
    assert list(plain) == list(folder)
    for s in folder:  # the files' own metadata gives the same features as the card's YAML
        # (as Arrow types: datasets 2.x reads a YAML list as Sequence, a metadata one as [..])
        assert plain[s].features.type == folder[s].features.type
        for col in ("image", "images", "mask", "masks"):
            if col in folder[s].features:
                assert str(plain[s].features[col]) == str(folder[s].features[col])
        assert plain[s].num_rows == folder[s].num_rows
    return [folder, plain]


def export_and_check(canonical: dict, out: Path, img_root: Path | None = None):
    export_hf(canonical, out, img_root=img_root, configs=("groups", "pairs"))
    assert not list(out.rglob(".*.tmp"))
    for config in ("groups", "pairs"):
        for dd in load_both_ways(out, config):
            check_rows(dd, canonical, config, img_root)
            assert_same(from_hf(dd, card=out), canonical)
            split = next(iter(dd))
            arr = dd[split].with_format("numpy")[0]
            mask = arr["masks"][0] if config == "groups" else arr["mask"]
            assert isinstance(mask, np.ndarray) and mask.ndim == 2


def test_demo_set_loads_in_this_datasets_version(tmp_path, demo):
    export_and_check(demo, tmp_path / "hf")


def test_real_refcocog_sample(tmp_path, refcocog_root, capsys):
    built = tmp_path / "g"
    code, *_ = run_cli(["build", "g-refcocog", "--refer-root", refcocog_root, "--min-images", "1",
                        "--out", built, "--no-progress"], capsys)
    assert code == 0
    out = tmp_path / "hf"
    code, stdout, _ = run_cli(["export", "hf", built, "--out", out, "--config", "groups",
                               "--config", "pairs", "--repo-id", "someone/g-refcocog",
                               "--no-progress"], capsys)
    assert code == 0 and "load_dataset" in stdout
    assert (f"huggingface-cli upload someone/g-refcocog {out} --repo-type dataset"
            in " ".join(stdout.split()))  # the console may wrap a long line
    orig = load_splits(built)
    dd = datasets.load_dataset(str(out))  # default config: groups, no loading script
    assert {s: dd[s].num_rows for s in dd} == {"train": 9, "val": 10, "test": 9}
    export_and_check(orig, tmp_path / "hf2")
    card = (out / "README.md").read_text()
    assert "| total | 28 | 28 | 15 | 56 | 28 | 28 |" in card  # statistics filled in
    assert re.search(r"load_dataset\('someone/g-refcocog', split='(train|val|test)'\)", card)


def test_cow_group_with_embedded_images(tmp_path):
    ds = cow_dataset()
    export_and_check({"test": ds}, tmp_path / "hf", img_root=SHARED)
    dd = datasets.load_dataset(str(tmp_path / "hf"))
    row = dd["test"][0]
    assert len(row["images"]) == 63 and sum(row["positive"]) == 30
    assert row["images"][0].size == (320, 213)
    pairs = datasets.load_dataset(str(tmp_path / "hf"), "pairs")
    assert pairs["test"].features["image"] == datasets.Image()
    assert pairs["test"].features["mask"] == datasets.Image()


def test_parquet_metadata_is_version_neutral(tmp_path, demo):
    """datasets 2.x / 3.x fail on the ``List`` type of datasets >= 4 ("Feature type 'List'
    not found"); the files carry lists as ``[feature]``, which every version reads."""
    export_hf(demo, tmp_path / "hf", configs=("groups", "pairs"))
    for p in (tmp_path / "hf" / "data").rglob("*.parquet"):
        meta = pq.read_schema(p).metadata[b"huggingface"].decode()
        assert '"List"' not in meta and '"Sequence"' not in meta
        feats = json.loads(meta)["info"]["features"]
        assert list(feats) == pq.read_schema(p).names  # the columns' order
        if "masks" in feats:
            assert feats["masks"] == [{"_type": "Image"}]
            assert feats["ann_ids"] == [[{"dtype": "int64", "_type": "Value"}]]


def run_card_example(code: list[str], out: Path, rle: dict):
    """Run the card's five lines on the local folder (for the Hub name) and check the mask."""
    text = re.sub(r"load_dataset\('[^']+'", f"load_dataset({str(out)!r}", "\n".join(code))
    scope: dict = {}
    exec(text, scope)  # noqa: S102 - the card's own example, on the test's own export
    np.testing.assert_array_equal(np.asarray(scope["mask"]).astype(bool),
                                  masks.decode(rle).astype(bool))


def test_every_column_is_described_and_the_card_round_trips(tmp_path):
    ds = cow_dataset()
    out = tmp_path / "hf"
    export_hf({"test": ds}, out, img_root=SHARED, configs=("groups", "pairs"))
    card = (out / "README.md").read_text()
    structure = card.split("## Dataset structure")[1].split("\n## ")[0]
    for config in ("groups", "pairs"):
        section = structure.split(f"### Config `{config}`")[1].split("###")[0]
        loaded = datasets.load_dataset(str(out), config)["test"]
        described = dict(re.findall(r"^\| `(\w+)` \| `([^`]+)` \| \S", section, re.MULTILINE))
        assert set(described) == set(loaded.column_names), config
        kinds = {n: k for n, k, _ in COLUMNS[config]}
        assert all(described[c] == kinds[c] for c in described)
    # five lines that load a split and turn a mask into an array
    code = structure.split("```python\n")[1].split("```")[0].strip().splitlines()
    assert len(code) == 5 and code[-1].startswith("mask = np.array(")
    run_card_example(code, out, ds.targets[0].segmentation)
    # the YAML header is DatasetCardData's, and reads back into it unchanged
    front = front_matter(card)
    assert DatasetCardData(**front).to_dict() == front
    assert DatasetCard.load(out / "README.md").data.to_dict() == front
    assert front["license"] == "other" and front["license_name"] and front["license_link"]
    assert front["task_categories"] == ["image-segmentation"] and front["task_ids"]
    assert {"referring-expression-segmentation", "gres"} <= set(front["tags"])
    assert front["size_categories"] == ["n<1K"] and front["pretty_name"]
    assert [c["config_name"] for c in front["configs"]] == ["groups", "pairs"]
    assert front["configs"][0]["default"] is True
    assert front["configs"][1]["data_files"] == [{"split": "test",
                                                  "path": "data/pairs/test-*.parquet"}]
    assert {i["config_name"] for i in front["dataset_info"]} == {"groups", "pairs"}
    assert front["grdkit_info"] == {"test": json.loads(json.dumps(ds.info))}
    # what huggingface-cli upload sends: the card and the files its configs name, nothing else
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["README.md", "data/groups/test-00000-of-00001.parquet",
                     "data/pairs/test-00000-of-00001.parquet"]


def test_export_is_deterministic_and_sharded(tmp_path, demo):
    for d in ("a", "b"):
        export_hf(demo, tmp_path / d, configs=("pairs",), shard_rows=10)
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
               if p.is_file())
    assert len(a) == 7 + 5 + 3 + 1  # 68, 43 and 24 rows in shards of 10, and the card
    for p in a:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
    dd = datasets.load_dataset(str(tmp_path / "a"))
    assert dd["train"].num_rows == 68
    assert_same(from_hf(dd, card=tmp_path / "a"), demo)
    val = datasets.load_dataset(str(tmp_path / "a"), split="val")  # one split: its own info
    assert_same(from_hf(val, card=tmp_path / "a" / "README.md"), {"val": demo["val"]})


def test_missing_image_is_an_error(tmp_path, demo):
    with pytest.raises(InputError, match="image file not found"):
        export_hf(demo, tmp_path / "hf", img_root=tmp_path)
    assert not list((tmp_path / "hf").rglob("*.parquet"))


def test_from_hf_rejects_foreign_rows_and_missing_info(tmp_path, demo):
    with pytest.raises(InputError, match="lacks grdkit columns"):
        from_hf(datasets.DatasetDict({"val": datasets.Dataset.from_dict({"x": [1]})}))
    export_hf(demo, tmp_path / "hf")
    dd = datasets.load_dataset(str(tmp_path / "hf"))
    with pytest.raises(InputError, match="no info for split"):
        from_hf(dd)  # the info is in the card, not on the rows
    (tmp_path / "card.md").write_text("---\nlicense: mit\n---\n")
    with pytest.raises(InputError, match="no grdkit_info"):
        from_hf(dd, card=tmp_path / "card.md")
    with pytest.raises(InputError, match="no such card"):
        from_hf(dd, card=tmp_path / "nothing")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_registry_card(name, demo):
    text = load_template(name)
    assert "{{include:" not in text and "{{structure}}" in text
    assert not text.startswith("---")  # the header is DatasetCardData's, not the template's
    d = next(iter(demo.values()))
    ds = type(d)({**d.info, "name": name}, d.images, d.expressions, d.groups, d.targets)
    card = render_card({"val": ds})
    front = front_matter(card)
    assert DatasetCardData(**front).to_dict() == front
    spec = DATASETS[name]
    assert front["pretty_name"] == spec.pretty_name and front["license"] == spec.license
    if spec.license == "other":
        assert front["license_name"] and front["license_link"].startswith("http")
    assert front["tags"] == list(spec.tags) and front["source_datasets"]
    citation = card.split("## Citation")[1]
    for key in spec.cites:  # every dataset and source it is built from, from the registry
        assert BIBTEX[key] in citation
    assert not re.search(r"\{\{\w+\}\}", card)
    if spec.builder in ("regroup", "grefcoco", "res"):
        assert "lin2014coco" in spec.cites
    for section in ("## How it is built", "## Dataset structure", "## Statistics",
                    "## Sources and licences", "## Citation"):
        assert section in card, section


def test_cosod_card_describes_certified_negatives():
    text = load_template("cosod")
    assert "every image with a mask is a positive" not in text
    assert "certified negative" in text and "These drawn negatives are not certified" in text


def test_lowest_datasets_is_the_tested_one():
    """The lower bounds in pyproject.toml of datasets, its pyarrow and huggingface_hub are the
    versions the Makefile's second environment installs (and runs this file in)."""
    from importlib.metadata import version

    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    make = (ROOT / "Makefile").read_text()
    for pkg in ("datasets", "pyarrow", "huggingface_hub"):
        low = next(d for d in deps if d.startswith(f"{pkg}>="))[len(pkg) + 2:]
        assert f'"{pkg}=={low}"' in make, pkg
        if os.environ.get("GRDKIT_HF_MIN"):  # inside that environment
            assert version(pkg) == low, pkg


@pytest.mark.parametrize("shape", [(1, 1), (5, 9), (17, 3), (8, 8), (213, 320)])
def test_mask_png_is_lossless(shape):
    """The PNG decodes (PIL) to exactly the RLE's mask, odd widths included (bit rows padded)."""
    import io

    from grdkit.export.hf import mask_png

    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    for p in (0.0, 0.3, 1.0):
        m = (rng.random(shape) < p).astype(np.uint8)
        im = PILImage.open(io.BytesIO(mask_png(masks.encode(m))))
        assert im.mode == "1" and im.size == (shape[1], shape[0]) and im.format == "PNG"
        np.testing.assert_array_equal(np.asarray(im), m.astype(bool))
        np.testing.assert_array_equal(np.asarray(im.convert("L")), m * 255)  # foreground 255


def test_row_groups_are_bounded_by_bytes(tmp_path, demo, monkeypatch):
    """A row group ends once its PNG / image bytes reach BYTES_PER_GROUP (readers and the Hub
    viewer load one row group at a time), and the rows are all there, in order."""
    import grdkit.export.hf as hfmod

    export_hf(demo, tmp_path / "a", configs=("pairs",))
    monkeypatch.setattr(hfmod, "BYTES_PER_GROUP", 1)  # every row's mask PNG exceeds 1 byte
    export_hf(demo, tmp_path / "b", configs=("pairs",))
    for split, d in demo.items():
        a = pq.ParquetFile(next((tmp_path / "a" / "data" / "pairs").glob(f"{split}-*")))
        b = pq.ParquetFile(next((tmp_path / "b" / "data" / "pairs").glob(f"{split}-*")))
        assert a.metadata.num_row_groups == 1
        assert b.metadata.num_row_groups == len(d.targets)
        assert a.read().equals(b.read())


def test_rle_only_layout(tmp_path, demo, capsys):
    """--no-mask-images: no PNG columns, none described in the card, the same exact round trip."""
    from grdkit import save_dataset

    save_dataset(demo["val"], tmp_path / "val.json")
    out = tmp_path / "hf"
    code, _, err = run_cli(["export", "hf", tmp_path / "val.json", "--out", out, "--config",
                            "pairs", "--no-mask-images", "--no-progress"], capsys)
    assert code == 0, err
    dd = datasets.load_dataset(str(out))
    assert dd["val"].column_names == [n for n, _, _ in COLUMNS["pairs"]
                                      if n not in ("image", "mask")]
    card = (out / "README.md").read_text()
    assert "| `mask` |" not in card and "| `mask_rle` |" in card
    code = card.split("```python\n")[1].split("```")[0].strip().splitlines()
    assert len(code) == 5 and code[0] == "from pycocotools import mask as mask_utils"
    assert code[-1].startswith("mask = mask_utils.decode(")  # the example decodes the RLE
    row = datasets.load_dataset(str(out), split="val")[0]
    run_card_example(code, out, demo["val"].target(row["expression_id"],
                                                   row["image_id"]).segmentation)
    assert_same(from_hf(dd, card=out), {"val": demo["val"]})
