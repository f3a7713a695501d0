"""GRD as released: the D³ annotation pickles (reading and the rules of their tables).

GRD (GRES paper, ICCV 2023, §4.3: 10,578 images, 106 groups, 316 expressions, 31,524
image-expression pairs) was released as the D³ dataset (Xie et al., "Described Object Detection",
NeurIPS 2023): the same images and groups; D³'s 316 *presence* sentences are GRD's expressions,
plus 106 *absence* sentences ("dog without leash"; ``is_negative`` marks those, not no-targets).

Input contract (an annotation folder; d-cube toolkit documentation), four pickles of dicts keyed
by id::

    sentences.pkl    {id: {id, anno_id: [int], group_id: [int], is_negative: bool, raw_sent,
                           raw_sent_zh}}
    annotations.pkl  {id: {id, sent_id: [int], segmentation: RLE, area, iscrowd, image_id,
                           bbox: [x, y, w, h], group_id}}
    images.pkl       {id: {id, file_name, height, width, flickr_url, anno_id: [int], group_id,
                           license}}
    groups.pkl       {id: {id, pos_sent_id, inner_sent_id, outer_sent_id, img_id: [int],
                           scene: [str], group_name, group_name_zh}}

RLE ``counts`` may be bytes or str. A sentence may be listed in several groups. Every sentence is
annotated on every image (complete annotation), so an image without an annotation of a sentence
is a certified negative for it. The conversion to the canonical format is
:mod:`grdkit.builders.grd`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..format import Finding
from ..format.masks import area_agrees, bbox, bbox_agrees
from ..format.rlecheck import check_rles
from ..io import loads_pickle, read_bytes

D3_FILES = ("sentences.pkl", "annotations.pkl", "images.pkl", "groups.pkl")

_REQUIRED = {
    "sentences.pkl": ("id", "anno_id", "group_id", "is_negative", "raw_sent"),
    "annotations.pkl": ("id", "sent_id", "segmentation", "image_id"),
    "images.pkl": ("id", "file_name", "height", "width"),
    "groups.pkl": ("id", "inner_sent_id", "img_id"),
}


@dataclass
class D3Data:
    """The four D³ tables keyed by id, the folder, and the files' sha256."""

    sentences: dict[int, dict]
    annotations: dict[int, dict]
    images: dict[int, dict]
    groups: dict[int, dict]
    root: Path
    sources: dict[str, str]


def is_d3_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and all((p / f).exists() for f in D3_FILES)


def as_list(v: Any) -> list:
    """A D³ id field as a list: lists and tuples as they are, a single value wrapped."""
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def _table(path: Path, obj: Any) -> dict[int, dict]:
    if not isinstance(obj, dict):
        raise InputError(path, f"holds a {type(obj).__name__}, expected a dict keyed by id")
    out = {}
    for key, rec in obj.items():
        where = f"key {key!r}"
        if not isinstance(rec, dict):
            raise InputError(path, f"record is a {type(rec).__name__}, not a dict", where)
        for f in _REQUIRED[path.name]:
            if f not in rec:
                raise InputError(path, f"missing field {f!r}", where,
                                 "expected the d-cube pickle fields")
        if rec["id"] != key:
            raise InputError(path, f"record id {rec['id']!r} differs from its key", where)
        out[int(key)] = rec
    return out


def read_d3(anno_root: str | Path) -> D3Data:
    """Read the four D³ pickles (safe unpickler: plain data only).

    Raises:
        InputError: a missing file, an unreadable pickle, or a record missing a field (named by
            file and key).
    """
    root = Path(anno_root)
    if not root.is_dir():
        raise InputError(root, "D³ annotation folder not found",
                         hint="point at the folder holding sentences.pkl, annotations.pkl, ...")
    tables, sources = {}, {}
    for name in D3_FILES:
        data = read_bytes(root / name, "D³ pickle", "the D³ folder holds " + ", ".join(D3_FILES))
        sources[name] = hashlib.sha256(data).hexdigest()
        tables[name] = _table(root / name, loads_pickle(root / name, data,
                                                        "pass the D³ annotation pickles"))
    return D3Data(tables["sentences.pkl"], tables["annotations.pkl"], tables["images.pkl"],
                  tables["groups.pkl"], root, dict(sorted(sources.items())))


def d3_problems(data: D3Data, integrity: bool = True) -> Iterator[tuple[str, Finding, bool]]:
    """Every problem of the D³ tables, as ``(file name, finding, blocking)``.

    ``blocking`` problems stop a conversion (:func:`grdkit.builders.grd.convert_d3` raises the
    first); ``grdkit validate`` lists them all. Checked:

    * references: an annotation's ``image_id``, a group's ``inner_sent_id`` and ``img_id``
      (blocking); an annotation's ``sent_id`` and a sentence's ``anno_id`` must exist;
    * segmentation (blocking): a compressed RLE (``schema``) of its image's size (``rle_size``);
    * with ``integrity``: runs summing to h*w (``rle_corrupt``, blocking) and the recorded ``area``
      / ``bbox`` agreeing with the mask (``area_mismatch`` / ``bbox_mismatch``, see
      :func:`grdkit.format.masks.area_agrees`).
    """
    rows = []
    for aid, a in sorted(data.annotations.items()):
        where = f"annotation id {aid}"
        im = data.images.get(a["image_id"])
        if im is None:
            yield "annotations.pkl", Finding("dangling_reference", "error", where,
                                             f"image_id {a['image_id']} is not in images.pkl"), True
            continue
        for s in as_list(a["sent_id"]):
            if s not in data.sentences:
                yield "annotations.pkl", Finding("dangling_reference", "error", where,
                                                 f"sentence {s} does not exist"), False
        seg = a["segmentation"]
        if not (isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes))):
            yield "annotations.pkl", Finding("schema", "error", where,
                                             "segmentation is not a compressed RLE"), True
            continue
        if list(seg.get("size", [])) != [im["height"], im["width"]]:
            yield "annotations.pkl", Finding(
                "rle_size", "error", where,
                f"size {seg.get('size')} is not the image's [{im['height']}, {im['width']}]"), True
            continue
        rows.append((where, a, seg, im))
    for gid, g in sorted(data.groups.items()):
        for s in as_list(g["inner_sent_id"]):
            if s not in data.sentences:
                yield "groups.pkl", Finding("dangling_reference", "error", f"group id {gid}",
                                            f"inner_sent_id {s} is not in sentences.pkl"), True
        for i in as_list(g["img_id"]):
            if i not in data.images:
                yield "groups.pkl", Finding("dangling_reference", "error", f"group id {gid}",
                                            f"img_id {i} is not in images.pkl"), True
    for sid, s in sorted(data.sentences.items()):
        for a in as_list(s["anno_id"]):
            if a not in data.annotations:
                yield "sentences.pkl", Finding("dangling_reference", "error",
                                               f"sentence id {sid}",
                                               f"anno_id {a} does not exist"), False
    if not integrity:
        return
    ok, _, area = check_rles([s["counts"] for _, _, s, _ in rows],
                             [(im["height"], im["width"]) for *_, im in rows])
    for k, (where, a, seg, _) in enumerate(rows):
        if not ok[k]:
            yield "annotations.pkl", Finding("rle_corrupt", "error", where,
                                             "RLE is malformed or its runs are not h*w"), True
            continue
        if "area" in a and not area_agrees(a["area"], int(area[k])):
            yield "annotations.pkl", Finding("area_mismatch", "error", where,
                                             f"area {a['area']} but the mask has "
                                             f"{int(area[k])} px"), False
        if "bbox" in a:
            box = bbox(seg)
            if not bbox_agrees(a["bbox"], box):
                yield "annotations.pkl", Finding(
                    "bbox_mismatch", "error", where,
                    f"bbox {a['bbox']} but the mask's is {[float(x) for x in box]}"), False
