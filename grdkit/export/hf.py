"""HuggingFace ``datasets`` export and loading of canonical GRES datasets.

Layout written by :func:`export_hf`: what ``huggingface-cli upload <user>/<name> <out>
--repo-type dataset`` sends as is (no loading script)::

    <out>/README.md                                       card: configs, splits, features, info
    <out>/data/<config>/<split>-00000-of-0000N.parquet    shards (HF features in the metadata)

``datasets.load_dataset(<out>)`` (config ``groups`` by default, ``name="pairs"`` for the other)
and ``datasets.load_dataset("parquet", data_files=...)`` both load it, in every supported
``datasets`` version (the Parquet metadata is written in the form ``datasets`` 2.x reads too:
nested lists as ``[feature]``, never the ``List`` type of ``datasets`` >= 4).

Columns (:data:`COLUMNS`; the card lists every one with its type and meaning):

* ``pairs``: one row per (expression, image) pair: ``group_id``, ``expression_id``,
  ``expression``, ``image_id``, ``file_name``, ``image`` (``datasets.Image``, only with an image
  root), ``mask`` (``datasets.Image``: a lossless 1-bit PNG of the image's size, white = referent,
  all black on a negative image; omitted with ``mask_images=False``), ``mask_rle`` (the exact COCO
  compressed RLE ``{size: [h, w], counts}``), ``positive``, ``ann_ids``, ``grdkit``.
* ``groups``: one row per (group, expression), the same fields as lists over the group's images
  (``image_ids``, ``file_names``, ``images``, ``masks``, ``masks_rle``, ``positive``,
  ``ann_ids``) and ``grdkit``.

``grdkit`` is one JSON string per row holding what only the exact round trip needs (the records'
positions in the canonical file and their extra keys). The canonical ``info`` object of each split
is in the card's YAML (``grdkit_info``), not on the rows; :func:`from_hf` reads it from the card
(``card=``) or from the in-memory ``DatasetInfo`` that :func:`to_hf` fills.

Why 1-bit PNG masks: the Hub's dataset viewer shows ``Image`` columns beside the image, and
``with_format("numpy" / "torch")`` gives arrays; ``mask_rle`` keeps the exact mask for
:func:`from_hf` and for COCO tools. ``benchmarks/bench_hf.py`` measures the cost against the
RLE-only layout (``mask_images=False``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from functools import lru_cache
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
ROWS_PER_GROUP = 256  # Parquet row group size (rows) ...
BYTES_PER_GROUP = 64 * 2**20  # ... or fewer, once a row group's image and mask bytes reach this
INFO_MARK = "grdkit_info="  # prefix of to_hf's DatasetInfo.description (the splits' info, JSON)

_GRDKIT_COLUMN = ("JSON for `grdkit.hf.from_hf`'s exact round trip: positions of the records in "
                  "the canonical file and their extra keys")
# (column, type as the card prints it, meaning); "image"/"images" exist only with an image root,
# "mask"/"masks" only with mask images (the default)
_PAIR_COLUMNS = [
    ("group_id", "int64", "id of the group (the canonical `groups[].id`)"),
    ("expression_id", "int64", "id of the expression (unique within the split)"),
    ("expression", "string", "the referring expression"),
    ("image_id", "int64", "id of the image (COCO image id for COCO-based data)"),
    ("file_name", "string", "image file, relative to the image root (COCO `file_name`)"),
    ("image", "Image", "the image (only in exports made with `--img-root`)"),
    ("mask", "Image", ("the referent's mask: lossless 1-bit PNG of the image's size, white = "
                       "referent; all black on a negative (no-target) image")),
    ("mask_rle", "struct{size: list<int32>, counts: string}",
     "the same mask as exact COCO compressed RLE (`size` = [height, width])"),
    ("positive", "bool", "True when the expression refers to something in this image"),
    ("ann_ids", "list<int64>", "source annotation ids whose union is the mask (empty if none)"),
    ("grdkit", "string", _GRDKIT_COLUMN),
]
_GROUP_COLUMNS = [
    ("group_id", "int64", "id of the group (the canonical `groups[].id`)"),
    ("expression_id", "int64", "id of the expression (unique within the split)"),
    ("expression", "string", "the referring expression"),
    ("image_ids", "list<int64>", "ids of the group's images, in the group's order"),
    ("file_names", "list<string>", "their files, relative to the image root"),
    ("images", "list<Image>", "the images (only in exports made with `--img-root`)"),
    ("masks", "list<Image>", ("one mask per image: lossless 1-bit PNG, white = referent; all "
                              "black on a negative (no-target) image")),
    ("masks_rle", "list<struct{size: list<int32>, counts: string}>",
     "the same masks as exact COCO compressed RLE (`size` = [height, width])"),
    ("positive", "list<bool>", "per image: True when the expression refers to something in it"),
    ("ann_ids", "list<list<int64>>", "per image: source annotation ids whose union is the mask"),
    ("grdkit", "string", _GRDKIT_COLUMN),
]
COLUMNS = {"pairs": _PAIR_COLUMNS, "groups": _GROUP_COLUMNS}
_IMAGE_COLUMNS = {"image", "images"}
_MASK_COLUMNS = {"mask", "masks"}


def columns(config: str, embed: bool, mask_images: bool = True) -> list[tuple[str, str, str]]:
    """The documented columns of a config as exported (``embed``: images embedded)."""
    return [c for c in COLUMNS[config] if (embed or c[0] not in _IMAGE_COLUMNS)
            and (mask_images or c[0] not in _MASK_COLUMNS)]


def features(config: str, embed: bool, mask_images: bool = True):
    """The ``datasets.Features`` of a config (``groups`` or ``pairs``), see :data:`COLUMNS`.

    Lists are written ``[feature]``, which every supported ``datasets`` version reads.
    """
    import datasets as hfd

    V = hfd.Value
    rle = {"size": [V("int32")], "counts": V("string")}
    one = {"int64": V("int64"), "string": V("string"), "bool": V("bool"), "Image": hfd.Image(),
           "struct{size: list<int32>, counts: string}": rle}
    feats = {}
    for name, kind, _ in columns(config, embed, mask_images):
        depth = 0
        while kind.startswith("list<"):
            kind, depth = kind[5:-1], depth + 1
        f = one[kind]
        for _ in range(depth):
            f = [f]
        feats[name] = f
    return hfd.Features(feats)


def _legacy(obj):
    """A ``Features.to_dict()`` with ``datasets`` >= 4's ``List`` written as ``[feature]``,
    the form ``datasets`` 2.x / 3.x read (they fail on ``List``: "Feature type 'List' not
    found") and >= 4 reads as ``List``."""
    if isinstance(obj, dict):
        if obj.get("_type") == "List" and obj.get("length", -1) == -1:
            return [_legacy(obj["feature"])]
        return {k: _legacy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_legacy(v) for v in obj]
    return obj


def arrow_schema(feats):
    """``feats.arrow_schema`` with the ``huggingface`` metadata in the version-neutral form."""
    # key order kept: it is the columns' (and struct fields') order
    meta = json.dumps({"info": {"features": _legacy(feats.to_dict())}})
    return feats.arrow_schema.with_metadata({"huggingface": meta})


def _j(d: Any) -> str:
    return json.dumps(d, ensure_ascii=False, sort_keys=False, separators=(",", ":"))


def _image_value(img: Image, img_root: Path) -> dict:
    # inside the image root, and a complete image of the recorded size (never a text file,
    # a truncated file or a bomb), before a byte is embedded
    data = read_image_file(img_root, img.file_name, (img.height, img.width),
                           f"image id {img.id}")
    return {"bytes": data, "path": img.file_name}


def mask_png(rle: dict) -> bytes:
    """A COCO RLE mask as a lossless 1-bit grayscale PNG (white = referent), the bytes of the
    ``mask`` column. PIL writes no timestamp, so the bytes depend on the mask only.

    The rows are packed to bits with numpy and handed to PIL as mode ``1`` (2-3x faster than
    ``Image.fromarray`` of a bool array, measured in ``benchmarks/bench_hf.py``'s set), and an
    empty mask (every negative image) is encoded once per size.
    """
    from PIL import Image as PILImage
    from pycocotools import mask as mask_utils

    h, w = (int(x) for x in rle["size"])
    counts = rle["counts"]
    c_rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str)
             else counts}
    if float(mask_utils.area(c_rle)) == 0:
        return _empty_png(h, w)
    # C order first: packing the Fortran-ordered decode along rows is twice as slow
    bits = np.packbits(np.ascontiguousarray(mask_utils.decode(c_rle)), axis=1)  # rows padded
    buf = io.BytesIO()
    PILImage.frombytes("1", (w, h), bits.tobytes()).save(buf, format="PNG")
    return buf.getvalue()


@lru_cache(maxsize=64)
def _empty_png(h: int, w: int) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.new("1", (w, h), 0).save(buf, format="PNG")
    return buf.getvalue()


def iter_rows(ds: GresDataset, config: str = "groups", img_root: str | Path | None = None,
              mask_images: bool = True) -> Iterator[dict]:
    """Rows of one split in the given config, in Arrow storage form (``Image`` values as
    ``{"bytes", "path"}``); images are read one group at a time.

    Raises:
        InputError: an image or target outside every group (it could not be exported), a
            missing (expression, image) target, or an unreadable image file.
    """
    root = Path(img_root) if img_root is not None else None
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
        # each image file is read once per group, not once per expression of the group
        values = ({i: _image_value(ds.image(i), root) for i in g.image_ids}
                  if root is not None else {})
        for eid in g.expression_ids:
            e = ds.expression(eid)
            base = {"group_id": g.id, "expression_id": eid, "expression": e.text}
            meta = {"group_index": gk, "expression_index": expr_pos[eid],
                    "group_extra": g.extra, "expression_extra": e.extra}
            tgts = [ds.targets[tgt_pos[(eid, iid)]] for iid in g.image_ids]
            pngs = ([{"bytes": mask_png(t.segmentation), "path": None} for t in tgts]
                    if mask_images else [])
            if config == "groups":
                row = {**base, "image_ids": list(g.image_ids),
                       "file_names": [ds.image(i).file_name for i in g.image_ids]}
                if root is not None:
                    row["images"] = [values[i] for i in g.image_ids]
                if mask_images:
                    row["masks"] = pngs
                meta.update(image_index=[img_pos[i] for i in g.image_ids],
                            image_extra=[ds.image(i).extra for i in g.image_ids],
                            target_index=[tgt_pos[(eid, i)] for i in g.image_ids],
                            target_extra=[t.extra for t in tgts])
                yield {**row, "masks_rle": [t.segmentation for t in tgts],
                       "positive": [t.positive for t in tgts],
                       "ann_ids": [list(t.ann_ids) for t in tgts], "grdkit": _j(meta)}
            else:
                for k, t in enumerate(tgts):
                    im = ds.image(t.image_id)
                    row = {**base, "image_id": im.id, "file_name": im.file_name}
                    if root is not None:
                        row["image"] = values[im.id]
                    if mask_images:
                        row["mask"] = pngs[k]
                    yield {**row, "mask_rle": t.segmentation, "positive": t.positive,
                           "ann_ids": list(t.ann_ids),
                           "grdkit": _j({**meta, "image_index": img_pos[im.id],
                                         "image_extra": im.extra,
                                         "target_index": tgt_pos[(eid, im.id)],
                                         "target_extra": t.extra})}


def _splits(dataset: GresDataset | dict[str, GresDataset]) -> dict[str, GresDataset]:
    return dataset if isinstance(dataset, dict) else {dataset.split or "test": dataset}


def to_hf(dataset: GresDataset | dict[str, GresDataset], img_root: str | Path | None = None,
          config: str = "groups", mask_images: bool = True):
    """In-memory ``datasets.DatasetDict`` (one split per canonical split) of the given config.

    Each split's canonical ``info`` is kept in its ``DatasetInfo.description``
    (``grdkit_info=<JSON>``), so :func:`from_hf` needs no card for it.
    """
    import datasets as hfd
    import pyarrow as pa
    from datasets.table import InMemoryTable

    feats = features(config, img_root is not None, mask_images)
    schema = arrow_schema(feats)
    # rows are built in Arrow storage form, not passed through Dataset.from_list: datasets'
    # Image encoder keeps only the path of a file that exists in the working folder
    return hfd.DatasetDict({s: hfd.Dataset(InMemoryTable(pa.Table.from_pylist(
        list(iter_rows(d, config, img_root, mask_images)), schema=schema)),
        info=hfd.DatasetInfo(features=feats, description=INFO_MARK + _j(d.info)))
        for s, d in _splits(dataset).items()})


def card_info(card) -> dict[str, dict]:
    """``{split: info}`` from an exported card: a folder, its ``README.md``, a Hub repo id
    (``"user/name"``, read with ``DatasetCard.load``: the only case that uses the network), a
    ``huggingface_hub.DatasetCard`` or its data.

    Raises:
        InputError: the card has no ``grdkit_info`` (not written by ``grdkit export hf``).
    """
    from huggingface_hub import DatasetCard

    where = None
    if isinstance(card, (str, Path)):
        where = Path(card)
        if not where.exists() and isinstance(card, str) and card.count("/") == 1:
            card = DatasetCard.load(card, repo_type="dataset")  # a Hub repo id (network)
        else:
            path = where / "README.md" if where.is_dir() else where
            if not path.is_file():
                raise InputError(path, "no such card", hint="pass the export folder, its "
                                 "README.md, or a Hub repo id user/name")
            card = DatasetCard.load(path)
    data = getattr(card, "data", card)
    info = data.to_dict().get("grdkit_info") if hasattr(data, "to_dict") else None
    if not isinstance(info, dict):
        raise InputError(where, "the card has no grdkit_info (the splits' info)",
                         hint="pass the card of a folder written by grdkit export hf")
    return info


def _rows_of(ds, split: str) -> Iterable[dict]:
    """The columns :func:`_from_rows` reads (never the images or PNG masks: nothing decoded)."""
    cols = ds.column_names
    if "image_ids" in cols:
        need = ["group_id", "expression_id", "expression", "image_ids", "file_names",
                "masks_rle", "positive", "ann_ids", "grdkit"]
    else:
        need = ["group_id", "expression_id", "expression", "image_id", "file_name", "mask_rle",
                "positive", "ann_ids", "grdkit"]
    missing = [c for c in need if c not in cols]
    if missing:
        raise InputError(None, f"split {split!r} lacks grdkit columns {missing}",
                         hint="from_hf reads datasets written by grdkit export hf / to_hf")
    return ds.select_columns(need)


def from_hf(dsdict, card=None) -> dict[str, GresDataset]:
    """Canonical datasets (by split) from a ``DatasetDict`` / ``Dataset`` made by grdkit.

    Works on either config, on :func:`to_hf`'s result and on what ``datasets.load_dataset``
    returns for an exported folder (then pass ``card``: the folder, its ``README.md`` or
    ``huggingface_hub.DatasetCard.load("user/name")``, which holds each split's ``info``).

    Raises:
        InputError: rows that are not grdkit's (missing columns), or no ``info`` for a split
            (neither in ``card`` nor in the dataset's ``DatasetInfo``).
    """
    import datasets as hfd

    if isinstance(dsdict, hfd.Dataset):  # one split, e.g. load_dataset(..., split="val")
        dsdict = {str(dsdict.split) if dsdict.split else "test": dsdict}
    infos = card_info(card) if card is not None else {}
    out = {}
    for split, ds in dsdict.items():
        rows = _rows_of(ds, split)
        info = infos.get(split)
        desc = ds.info.description or ""
        if info is None and desc.startswith(INFO_MARK):
            info = json.loads(desc[len(INFO_MARK):])
        if info is None:
            raise InputError(None, f"no info for split {split!r}",
                             hint="pass card= (the export folder, its README.md, or "
                                  "huggingface_hub.DatasetCard.load('user/name'))")
        out[split] = _from_rows(rows, info)
    return out


def _from_rows(rows, info: dict) -> GresDataset:
    images: dict[int, tuple[int, Image]] = {}
    exprs: dict[int, tuple[int, Expression]] = {}
    groups: dict[int, dict] = {}
    targets: dict[int, Target] = {}
    for r in rows:
        meta = json.loads(r["grdkit"])
        gid = r["group_id"]
        g = groups.setdefault(gid, {"index": meta["group_index"], "extra": meta["group_extra"],
                                    "expression_ids": [], "image_ids": []})
        if r["expression_id"] not in g["expression_ids"]:
            g["expression_ids"].append(r["expression_id"])
        exprs[r["expression_id"]] = (meta["expression_index"], Expression(
            r["expression_id"], r["expression"], gid, meta["expression_extra"]))
        if "image_ids" in r:
            items = zip(r["image_ids"], r["file_names"], r["masks_rle"], r["positive"],
                        r["ann_ids"], meta["image_index"], meta["image_extra"],
                        meta["target_index"], meta["target_extra"], strict=True)
        else:
            items = [(r["image_id"], r["file_name"], r["mask_rle"], r["positive"], r["ann_ids"],
                      meta["image_index"], meta["image_extra"], meta["target_index"],
                      meta["target_extra"])]
        for iid, fname, m, pos, anns, ik, ix, tk, tx in items:
            h, w = (int(x) for x in m["size"])
            images[iid] = (ik, Image(iid, fname, h, w, ix))
            if iid not in g["image_ids"]:
                g["image_ids"].append(iid)
            targets[tk] = Target(r["expression_id"], iid, bool(pos),
                                 {"size": [h, w], "counts": m["counts"]}, tuple(anns), tx)
    grp = [Group(gid, tuple(g["expression_ids"]), tuple(g["image_ids"]), g["extra"])
           for gid, g in sorted(groups.items(), key=lambda kv: kv[1]["index"])]
    return GresDataset(info, [im for _, im in sorted(images.values(), key=lambda x: x[0])],
                       [e for _, e in sorted(exprs.values(), key=lambda x: x[0])], grp,
                       [targets[k] for k in sorted(targets)])


def decode_mask(row: dict, i: int | None = None) -> np.ndarray:
    """Exact mask of a row from its RLE column, uint8 ``(h, w)`` 0/1: ``row["masks_rle"][i]``
    (groups) or ``row["mask_rle"]`` (pairs)."""
    m = row["masks_rle"][i] if i is not None else row["mask_rle"]
    return masks.decode({"size": list(m["size"]), "counts": m["counts"]})


def structure_markdown(result: dict, embed: bool, mask_images: bool, repo_id: str) -> str:
    """The card's "Dataset structure" section: files, every column of every config, and five
    lines that load a split and turn a mask into a numpy array."""
    first = next(iter(result))
    split = next(iter(result[first]))
    lines = ["## Dataset structure", "",
             ("Parquet files under `data/<config>/<split>-*.parquet` (no loading script), one "
              "config per layout; the YAML header's `configs` maps them to splits."), ""]
    for config in result:
        what = ("one row per (group, expression): lists over the group's images"
                if config == "groups" else "one row per (expression, image) pair")
        lines += [f"### Config `{config}`{' (default)' if config == first else ''}", "",
                  f"{what.capitalize()}.", "", "| column | type | meaning |", "|---|---|---|"]
        lines += [f"| `{n}` | `{t}` | {m} |" for n, t, m in columns(config, embed, mask_images)]
        lines.append("")
    if mask_images:
        get = ("np.array(row['masks'][0])  # bool (height, width), True = referent"
               if first == "groups" else
               "np.array(row['mask'])  # bool (height, width), True = referent")
    else:
        get = ("mask_utils.decode({'size': m['size'], 'counts': m['counts'].encode()})"
               if first == "groups" else
               "mask_utils.decode({'size': row['mask_rle']['size'], "
               "'counts': row['mask_rle']['counts'].encode()})")
    rle = "row['masks_rle'][0]" if first == "groups" else "row['mask_rle']"
    name = "" if first == "groups" else f", {first!r}"
    lines += ["Load a split and turn a mask into a numpy array:", "", "```python",
              "import numpy as np" if mask_images else "from pycocotools import mask as mask_utils",
              "from datasets import load_dataset",
              f"ds = load_dataset({repo_id!r}{name}, split={split!r})",
              "row = ds[0]", f"mask = {get}", "```", "",
              (f"The exact mask is the COCO RLE `m = {rle}`: "
               "`pycocotools.mask.decode({'size': m['size'], 'counts': m['counts'].encode()})` "
               "gives the same array as uint8 0/1. `ds.with_format('numpy')` / `('torch')` "
               "gives the `Image` columns as arrays. "
               "`grdkit.hf.from_hf(load_dataset(...), card=...)` rebuilds the canonical files "
               "exactly (each split's `info` is the card's `grdkit_info`).")]
    return "\n".join(lines)


def export_hf(splits: GresDataset | dict[str, GresDataset], out: str | Path,
              img_root: str | Path | None = None, configs: Iterable[str] = ("groups",),
              shard_rows: int = 5000, progress: Progress | None = None,
              mask_images: bool = True, repo_id: str | None = None) -> dict:
    """Write Parquet shards and the card (see module header), committed as a whole.

    Rows are streamed: at most one Parquet row group (``ROWS_PER_GROUP`` rows, fewer once their
    image and mask bytes reach ``BYTES_PER_GROUP``) is in memory. Every shard is written as a
    temp file and all are renamed into place together with the card
    (:class:`grdkit.io.Commit`), and shards of an earlier export are removed then: an error or
    an interrupt leaves the earlier export as it was, never a mix. With ``img_root`` every image
    is read through :func:`grdkit.io.images.read_image_file` (inside the root, a complete image
    of the recorded size) and its bytes are always embedded.

    Args:
        mask_images: write the ``mask`` / ``masks`` PNG columns (default); ``False`` keeps
            only the RLE columns (smaller, not shown by the Hub's viewer).
        repo_id: the Hub name the card's example loads (default ``<user>/<dataset name>``).

    Returns:
        ``{config: {split: {"rows": int, "files": [paths], "bytes": int}}}``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    splits = _splits(splits)
    out = Path(out)
    embed = img_root is not None
    configs = list(dict.fromkeys(configs))
    result: dict = {}
    with Commit(lock=out) as commit:  # every shard and the card, or nothing; --out locked
        for config in configs:
            schema = arrow_schema(features(config, embed, mask_images))
            result[config] = {}
            folder = out / "data" / config
            for split, ds in splits.items():
                n_rows = (sum(len(g.expression_ids) for g in ds.groups) if config == "groups"
                          else len(ds.targets))
                n_shards = max(1, -(-n_rows // shard_rows))
                rows = iter(tracked(progress, iter_rows(ds, config, img_root, mask_images),
                                    f"{config} {split}", n_rows))
                files = []
                for k in range(n_shards):
                    path = folder / f"{split}-{k:05d}-of-{n_shards:05d}.parquet"
                    with pq.ParquetWriter(commit.temp_for(path), schema,
                                          compression="zstd") as w:
                        left = min(shard_rows, n_rows - k * shard_rows)
                        while left > 0:
                            batch = _batch(rows, min(ROWS_PER_GROUP, left))
                            w.write_table(pa.Table.from_pylist(batch, schema=schema))
                            left -= len(batch)
                        if n_rows == 0:
                            w.write_table(pa.Table.from_pylist([], schema=schema))
                    files.append(path)
                if next(rows, None) is not None:  # also lets the progress bar reach its total
                    raise AssertionError(f"{config} {split}: more rows than counted")
                for stale in folder.glob(f"{split}-*-of-*.parquet"):
                    if stale not in files:  # shards of an earlier export would be loaded too
                        commit.remove(stale)
                result[config][split] = {"rows": n_rows, "files": files}
        for config in CONFIGS:  # a config this export does not write is no longer described
            if config not in result:
                for stale in (out / "data" / config).glob("*-*-of-*.parquet"):
                    commit.remove(stale)
        first = next(iter(splits.values()))
        repo = repo_id or f"<user>/{first.name or 'dataset'}"
        commit.write_text(out / "README.md", render_card(
            splits, extra=card_metadata(splits, result, embed, mask_images, commit),
            structure=structure_markdown(result, embed, mask_images, repo)))
    for per in result.values():
        for r in per.values():
            r["bytes"] = sum(f.stat().st_size for f in r["files"])
    return result


def _batch(rows: Iterator[dict], limit: int) -> list[dict]:
    """Up to ``limit`` rows, fewer once their embedded bytes reach ``BYTES_PER_GROUP`` (the Hub
    viewer and readers load one row group at a time)."""
    batch, size = [], 0
    for r in islice(rows, limit):
        batch.append(r)
        for col in ("image", "mask", "images", "masks"):
            v = r.get(col)
            for x in (v if isinstance(v, list) else [v] if v else []):
                size += len(x["bytes"])
        if size >= BYTES_PER_GROUP:
            break
    return batch


def card_metadata(splits: dict[str, GresDataset], result: dict, embed: bool,
                  mask_images: bool = True, commit: Commit | None = None) -> dict:
    """The export's card keys: ``configs`` (data files per split, the first config default),
    ``dataset_info`` (features and split sizes, as ``datasets`` writes them) and
    ``grdkit_info`` (each split's canonical ``info``; ``commit``: sizes of files not yet
    committed)."""
    import datasets as hfd

    configs, infos = [], []
    for k, (config, per) in enumerate(result.items()):
        configs.append({"config_name": config, **({"default": True} if k == 0 else {}),
                        "data_files": [{"split": s, "path": f"data/{config}/{s}-*.parquet"}
                                       for s in per]})
        # DatasetInfo's YAML form, as push_to_hub writes it (the same in datasets 2.19 and 5)
        info = hfd.DatasetInfo(features=features(config, embed, mask_images))._to_yaml_dict()
        infos.append({"config_name": config, "features": info["features"],
                      "splits": [{"name": s, "num_examples": v["rows"],
                                  "num_bytes": v.get("bytes", _size(v["files"], commit))}
                                 for s, v in per.items()]})
    # JSON round trip: plain types only (tuples become lists), as the YAML will hold them
    return {"configs": configs, "dataset_info": infos,
            "grdkit_info": json.loads(_j({s: d.info for s, d in splits.items()}))}


def _size(files: list[Path], commit: Commit | None) -> int:
    """Bytes of output files, read from their temp files while a commit is pending."""
    temps = commit.temps if commit is not None else {}
    return sum(Path(temps.get(f, f)).stat().st_size for f in files)
