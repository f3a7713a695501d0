"""HuggingFace ``datasets`` export and loading of canonical GRES datasets.

Layout written by :func:`export_hf` (ready for ``push_to_hub``; no loading script)::

    <out>/README.md                                 card; YAML declares configs, splits, features
    <out>/<config>/<split>-00000-of-0000N.parquet   shards (HF features in the schema metadata)

so ``datasets.load_dataset(<out>)`` (config ``groups`` by default, ``name="pairs"`` for the other)
and ``datasets.load_dataset("parquet", data_files=...)`` both work.

Configs:

* ``groups`` (default): one row per (group, expression): ``group_id``, ``expression_id``,
  ``expression``, ``image_ids``, ``file_names``, ``images`` (a list of ``datasets.Image`` with the
  bytes embedded when an image root is given, else the file names), ``masks`` (a list of
  ``{size: [h, w], counts: str}`` COCO RLE), ``positive`` (list of bool), ``ann_ids``.
* ``pairs``: one row per (expression, image) pair with ``image_id``, ``file_name``, ``image``,
  ``mask``, ``positive``, ``ann_ids``.

Both carry what an exact round trip needs (``from_hf(to_hf(ds)) == ds``, every field and mask):
the records' extra keys as JSON strings, the records' positions in the canonical file
(``*_index``), and the ``info`` object (``dataset_info``, one JSON string per row; Parquet
dictionary-encodes it, so it costs almost nothing on disk).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..format import Expression, GresDataset, Group, Image, Target, masks
from ..io import Commit
from ..io.images import read_image_file
from ..progress import Progress, tracked
from .card import render_card

CONFIGS = ("groups", "pairs")
ROWS_PER_GROUP = 256  # Parquet row group size (rows)


def features(config: str, embed: bool):
    """The ``datasets.Features`` of a config (``groups`` or ``pairs``); images as
    ``datasets.Image`` when ``embed``, else file-name strings."""
    import datasets as hfd

    L, V = hfd.List, hfd.Value
    rle = {"size": L(V("int32")), "counts": V("string")}
    image = hfd.Image() if embed else V("string")
    common = {"group_id": V("int64"), "expression_id": V("int64"), "expression": V("string")}
    meta = {"dataset_info": V("string"), "group_index": V("int32"),
            "expression_index": V("int32"), "group_extra": V("string"),
            "expression_extra": V("string")}
    if config == "groups":
        return hfd.Features({**common, "image_ids": L(V("int64")), "file_names": L(V("string")),
                             "images": L(image), "masks": L(rle), "positive": L(V("bool")),
                             "ann_ids": L(L(V("int64"))), **meta,
                             "image_index": L(V("int32")), "image_extra": L(V("string")),
                             "target_index": L(V("int32")), "target_extra": L(V("string"))})
    return hfd.Features({**common, "image_id": V("int64"), "file_name": V("string"),
                         "image": image, "mask": rle, "positive": V("bool"),
                         "ann_ids": L(V("int64")), **meta, "image_index": V("int32"),
                         "image_extra": V("string"), "target_index": V("int32"),
                         "target_extra": V("string")})


def _j(d: dict) -> str:
    return json.dumps(d, ensure_ascii=False, sort_keys=False, separators=(",", ":"))


def _image_value(img: Image, img_root: Path | None) -> Any:
    if img_root is None:
        return img.file_name
    # inside the image root, and a complete image of the recorded size (never a text file,
    # a truncated file or a bomb), before a byte is embedded
    data = read_image_file(img_root, img.file_name, (img.height, img.width),
                           f"image id {img.id}")
    return {"bytes": data, "path": img.file_name}


def iter_rows(ds: GresDataset, config: str = "groups", img_root: str | Path | None = None
              ) -> Iterator[dict]:
    """Rows of one split in the given config (images read lazily, one group at a time).

    Raises:
        InputError: an image or target outside every group (it could not be exported), a
            missing (expression, image) target, or an unreadable image file.
    """
    root = Path(img_root) if img_root is not None else None
    info = _j(ds.info)
    img_pos = {im.id: k for k, im in enumerate(ds.images)}
    tgt_pos = {(t.expression_id, t.image_id): k for k, t in enumerate(ds.targets)}
    expr_pos = {e.id: k for k, e in enumerate(ds.expressions)}
    ds.require_complete()
    grouped = {i for g in ds.groups for i in g.image_ids}
    lost = [im.id for im in ds.images if im.id not in grouped]
    if lost:
        raise InputError(ds.path, f"images {lost[:5]} belong to no group and cannot be exported",
                         hint="run grdkit validate and fix the dataset")
    for gk, g in enumerate(ds.groups):
        gx = _j(g.extra)
        # each image file is read once per group, not once per expression of the group
        values = {i: _image_value(ds.image(i), root) for i in g.image_ids}
        image_extra = {i: _j(ds.image(i).extra) for i in g.image_ids}
        for eid in g.expression_ids:
            e = ds.expression(eid)
            base = {"group_id": g.id, "expression_id": eid, "expression": e.text,
                    "dataset_info": info, "group_index": gk, "expression_index": expr_pos[eid],
                    "group_extra": gx, "expression_extra": _j(e.extra)}
            tgts = [ds.targets[tgt_pos[(eid, iid)]] for iid in g.image_ids]
            if config == "groups":
                yield {**base, "image_ids": list(g.image_ids),
                       "file_names": [ds.image(i).file_name for i in g.image_ids],
                       "images": [values[i] for i in g.image_ids],
                       "masks": [t.segmentation for t in tgts],
                       "positive": [t.positive for t in tgts],
                       "ann_ids": [list(t.ann_ids) for t in tgts],
                       "image_index": [img_pos[i] for i in g.image_ids],
                       "image_extra": [image_extra[i] for i in g.image_ids],
                       "target_index": [tgt_pos[(eid, i)] for i in g.image_ids],
                       "target_extra": [_j(t.extra) for t in tgts]}
            else:
                for t in tgts:
                    im = ds.image(t.image_id)
                    yield {**base, "image_id": im.id, "file_name": im.file_name,
                           "image": values[im.id], "mask": t.segmentation,
                           "positive": t.positive, "ann_ids": list(t.ann_ids),
                           "image_index": img_pos[im.id], "image_extra": image_extra[im.id],
                           "target_index": tgt_pos[(eid, im.id)], "target_extra": _j(t.extra)}


def to_hf(dataset: GresDataset | dict[str, GresDataset], img_root: str | Path | None = None,
          config: str = "groups"):
    """In-memory ``datasets.DatasetDict`` (one split per canonical split) of the given config."""
    import datasets as hfd
    import pyarrow as pa
    from datasets.table import InMemoryTable

    splits = dataset if isinstance(dataset, dict) else {dataset.split or "test": dataset}
    embed = img_root is not None
    feats = features(config, embed)
    # encoded here, not by Dataset.from_list: datasets drops the bytes of an image whose path
    # exists in the working folder (see _encode)
    return hfd.DatasetDict({s: hfd.Dataset(InMemoryTable(pa.Table.from_pylist(
        [_encode(feats, r, embed) for r in iter_rows(d, config, img_root)],
        schema=feats.arrow_schema)), info=hfd.DatasetInfo(features=feats))
                            for s, d in splits.items()})


def _encode(feats, row: dict, embed: bool) -> dict:
    """``feats.encode_example(row)`` with the image bytes kept: ``datasets.Image`` stores only
    the path of a file that exists in the working folder, so an export run inside the image folder
    would hold no image bytes."""
    enc = feats.encode_example(row)
    if embed:
        for col in ("images", "image"):
            if col in row:
                enc[col] = row[col]
    return enc


def _rows_of(ds) -> Iterable[dict]:
    """Rows with images left undecoded (paths / bytes), whatever the dataset's decode flag."""
    import datasets as hfd

    feats = ds.features
    cols = {}
    for name in ("images", "image"):
        if name in feats:
            f = feats[name]
            if isinstance(f, hfd.List) and isinstance(f.feature, hfd.Image):
                cols[name] = hfd.List(hfd.Image(decode=False))
            elif isinstance(f, hfd.Image):
                cols[name] = hfd.Image(decode=False)
    for name, f in cols.items():
        ds = ds.cast_column(name, f)
    return ds


def from_hf(dsdict) -> dict[str, GresDataset]:
    """Canonical datasets (by split) from a ``DatasetDict`` / ``Dataset`` made by grdkit.

    Works on either config and on what ``datasets.load_dataset`` returns for an exported folder.

    Raises:
        InputError: rows that are not grdkit's (missing columns).
    """
    import datasets as hfd

    if isinstance(dsdict, hfd.Dataset):
        dsdict = {"test": dsdict}
    out = {}
    for split, ds in dsdict.items():
        need = {"dataset_info", "group_index", "expression_index", "expression_extra"}
        if not need <= set(ds.column_names):
            raise InputError(None, f"split {split!r} lacks grdkit columns "
                             f"{sorted(need - set(ds.column_names))}")
        out[split] = _from_rows(_rows_of(ds), split)
    return out


def _from_rows(rows, split: str) -> GresDataset:
    info = None
    images: dict[int, tuple[int, Image]] = {}
    exprs: dict[int, tuple[int, Expression]] = {}
    groups: dict[int, dict] = {}
    targets: dict[int, Target] = {}
    for r in rows:
        info = info or json.loads(r["dataset_info"])
        gid = r["group_id"]
        g = groups.setdefault(gid, {"index": r["group_index"], "extra": json.loads(
            r["group_extra"]), "expression_ids": [], "image_ids": []})
        if r["expression_id"] not in g["expression_ids"]:
            g["expression_ids"].append(r["expression_id"])
        exprs[r["expression_id"]] = (r["expression_index"], Expression(
            r["expression_id"], r["expression"], gid, json.loads(r["expression_extra"])))
        if "image_ids" in r:
            items = zip(r["image_ids"], r["file_names"], r["masks"], r["positive"],
                        r["ann_ids"], r["image_index"], r["image_extra"], r["target_index"],
                        r["target_extra"], strict=True)
        else:
            items = [(r["image_id"], r["file_name"], r["mask"], r["positive"], r["ann_ids"],
                      r["image_index"], r["image_extra"], r["target_index"], r["target_extra"])]
        for iid, fname, m, pos, anns, ik, ix, tk, tx in items:
            h, w = (int(x) for x in m["size"])
            images[iid] = (ik, Image(iid, fname, h, w, json.loads(ix)))
            if iid not in g["image_ids"]:
                g["image_ids"].append(iid)
            targets[tk] = Target(r["expression_id"], iid, bool(pos),
                                 {"size": [h, w], "counts": m["counts"]}, tuple(anns),
                                 json.loads(tx))
    grp = [Group(gid, tuple(g["expression_ids"]), tuple(g["image_ids"]), g["extra"])
           for gid, g in sorted(groups.items(), key=lambda kv: kv[1]["index"])]
    return GresDataset(info or {"split": split}, [im for _, im in sorted(images.values(),
                                                                       key=lambda x: x[0])],
                       [e for _, e in sorted(exprs.values(), key=lambda x: x[0])], grp,
                       [targets[k] for k in sorted(targets)])


def decode_mask(row: dict, i: int | None = None) -> np.ndarray:
    """Mask of a row as uint8 ``(h, w)`` 0/1: ``row["masks"][i]`` (groups) or ``row["mask"]``."""
    m = row["masks"][i] if i is not None else row["mask"]
    return masks.decode({"size": list(m["size"]), "counts": m["counts"]})


def export_hf(splits: dict[str, GresDataset], out: str | Path, img_root: str | Path | None = None,
              configs: Iterable[str] = ("groups",), shard_rows: int = 5000,
              progress: Progress | None = None) -> dict:
    """Write Parquet shards and the card (see module header), committed as a whole.

    Rows are streamed: at most one Parquet row group (``ROWS_PER_GROUP`` rows) is in memory.
    Every shard is written as a temp file and all are renamed into place together with the card
    (:class:`grdkit.io.Commit`), and shards of an earlier export are removed then: an error or
    an interrupt leaves the earlier export as it was, never a mix. With ``img_root`` every image
    is read through :func:`grdkit.io.images.read_image_file` (inside the root, a complete image
    of the recorded size) and its bytes are always embedded.

    Returns:
        ``{config: {split: {"rows": int, "files": [paths], "bytes": int}}}``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    embed = img_root is not None
    result: dict = {}
    with Commit(lock=out) as commit:  # every shard and the card, or nothing; --out locked
        for config in configs:
            feats = features(config, embed)
            schema = feats.arrow_schema
            result[config] = {}
            for split, ds in splits.items():
                n_rows = (sum(len(g.expression_ids) for g in ds.groups) if config == "groups"
                          else len(ds.targets))
                n_shards = max(1, -(-n_rows // shard_rows))
                rows = iter(tracked(progress, iter_rows(ds, config, img_root),
                                    f"{config} {split}", n_rows))
                files = []
                for k in range(n_shards):
                    path = out / config / f"{split}-{k:05d}-of-{n_shards:05d}.parquet"
                    with pq.ParquetWriter(commit.temp_for(path), schema,
                                          compression="zstd") as w:
                        left = min(shard_rows, n_rows - k * shard_rows)
                        while left > 0:
                            batch = [_encode(feats, r, embed)
                                     for r in islice(rows, min(ROWS_PER_GROUP, left))]
                            w.write_table(pa.Table.from_pylist(batch, schema=schema))
                            left -= len(batch)
                        if n_rows == 0:
                            w.write_table(pa.Table.from_pylist([], schema=schema))
                    files.append(path)
                if next(rows, None) is not None:  # also lets the progress bar reach its total
                    raise AssertionError(f"{config} {split}: more rows than counted")
                for stale in (out / config).glob(f"{split}-*-of-*.parquet"):
                    if stale not in files:  # shards of an earlier export would be loaded too
                        commit.remove(stale)
                result[config][split] = {"rows": n_rows, "files": files}
        commit.write_text(out / "README.md", render_card(
            splits, front_matter=card_front_matter(result, embed, commit)))
    for per in result.values():
        for r in per.values():
            r["bytes"] = sum(f.stat().st_size for f in r["files"])
    return result


def card_front_matter(result: dict, embed: bool, commit: Commit | None = None) -> str:
    """YAML header of an exported folder's card: configs, splits (with files) and features,
    as ``datasets.load_dataset`` reads them (``commit``: sizes of files not yet committed)."""
    import datasets as hfd
    import yaml

    configs, infos = [], []
    for k, (config, splits) in enumerate(result.items()):
        configs.append({"config_name": config, **({"default": True} if k == 0 else {}),
                        "data_files": [{"split": s, "path": f"{config}/{s}-*.parquet"}
                                       for s in splits]})
        info = hfd.DatasetInfo(features=features(config, embed))._to_yaml_dict()
        infos.append({"config_name": config, "features": info["features"],
                      "splits": [{"name": s, "num_examples": v["rows"],
                                  "num_bytes": v.get("bytes", _size(v["files"], commit))}
                                 for s, v in splits.items()]})
    return yaml.safe_dump({"configs": configs, "dataset_info": infos}, sort_keys=False,
                          allow_unicode=True).rstrip("\n")


def _size(files: list[Path], commit: Commit | None) -> int:
    """Bytes of output files, read from their temp files while a commit is pending."""
    temps = commit.temps if commit is not None else {}
    return sum(Path(temps.get(f, f)).stat().st_size for f in files)
