"""GRD as released: the D³ annotation pickles, read and converted to the canonical format.

GRD (GRES paper, ICCV 2023, §4.3: 10,578 images, 106 groups, 316 expressions, 31,524
image-expression pairs) was released as the D³ dataset (Xie et al., "Described Object Detection",
NeurIPS 2023): the same images and groups; D³'s 316 *presence* sentences are GRD's expressions,
plus 106 *absence* sentences ("dog without leash"; ``is_negative`` marks those, not no-targets).

Input contract (``--anno-root``; d-cube toolkit documentation), four pickles of dicts keyed by id::

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
is a certified negative for it.

Conversion (``convert_d3``):

* ``setting="intra"`` (GRD): each group's ``inner_sent_id`` sentences against every image of that
  group; ``"inter"``: one group, every selected sentence against every image.
* ``expressions="presence"`` (GRD) | ``"absence"`` | ``"all"`` selects sentences by
  ``is_negative``.
* Canonical ids: images keep D³ ids; groups keep D³ group ids (``inter``: one group, id 1);
  expressions are numbered 1..N in (group, sentence id) order, because one D³ sentence listed in
  several groups becomes one expression per group; ``d3_sent_id`` keeps the D³ id.
* A target is positive with the union of that sentence's annotations on the image.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .dataset import Expression, GresDataset, Group, Image, Target
from .errors import InputError
from .masks import MaskError, empty_rle, to_rle, union
from .refer import _loads_pickle, _read_bytes

D3_FILES = ("sentences.pkl", "annotations.pkl", "images.pkl", "groups.pkl")
PAPER_GRD = {"groups": 106, "images": 10578, "expressions": 316, "pairs": 31524}
SETTINGS = ("intra", "inter")
EXPRESSION_SETS = ("presence", "absence", "all")

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


def _as_list(v: Any) -> list:
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
        raise InputError(root, "D³ annotation folder not found", hint="pass --anno-root")
    tables, sources = {}, {}
    for name in D3_FILES:
        data = _read_bytes(root / name, "D³ pickle")
        sources[name] = hashlib.sha256(data).hexdigest()
        tables[name] = _table(root / name, _loads_pickle(root / name, data,
                                                         "pass the D³ annotation pickles"))
    return D3Data(tables["sentences.pkl"], tables["annotations.pkl"], tables["images.pkl"],
                  tables["groups.pkl"], root, dict(sorted(sources.items())))


def _selected(s: dict, expressions: str) -> bool:
    neg = bool(s["is_negative"])
    return expressions == "all" or (expressions == "absence") == neg


def convert_d3(data: D3Data, setting: str = "intra", expressions: str = "presence"
               ) -> GresDataset:
    """Convert D³ tables to one canonical split (``test``); see the module header.

    Raises:
        InputError: a group naming an unknown image or sentence, or an annotation whose RLE
            does not fit its image (named by file and id).
        ValueError: unknown ``setting`` or ``expressions``.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}")
    if expressions not in EXPRESSION_SETS:
        raise ValueError(f"expressions must be one of {EXPRESSION_SETS}")
    root = data.root
    by_pair: dict[tuple[int, int], list[int]] = {}
    for aid in sorted(data.annotations):
        a = data.annotations[aid]
        if a["image_id"] not in data.images:
            raise InputError(root / "annotations.pkl", f"image_id {a['image_id']} is not in "
                             "images.pkl", f"annotation id {aid}")
        for sid in _as_list(a["sent_id"]):
            by_pair.setdefault((int(sid), int(a["image_id"])), []).append(aid)
    if setting == "intra":
        plan = []
        for gid in sorted(data.groups):
            g = data.groups[gid]
            for sid in _as_list(g["inner_sent_id"]):
                if sid not in data.sentences:
                    raise InputError(root / "groups.pkl", f"inner_sent_id {sid} is not in "
                                     "sentences.pkl", f"group id {gid}")
            for iid in _as_list(g["img_id"]):
                if iid not in data.images:
                    raise InputError(root / "groups.pkl", f"img_id {iid} is not in images.pkl",
                                     f"group id {gid}")
            sids = sorted({int(s) for s in _as_list(g["inner_sent_id"])
                           if _selected(data.sentences[s], expressions)})
            plan.append((gid, sids, sorted({int(i) for i in _as_list(g["img_id"])})))
    else:
        sids = sorted(s for s, rec in data.sentences.items() if _selected(rec, expressions))
        plan = [(1, sids, sorted(data.images))]
    rle_cache: dict[int, dict] = {}

    def ann_rle(aid: int) -> dict:
        if aid not in rle_cache:
            a = data.annotations[aid]
            im = data.images[a["image_id"]]
            try:
                rle_cache[aid] = to_rle(a["segmentation"], int(im["height"]), int(im["width"]))
            except (MaskError, KeyError, TypeError) as e:
                raise InputError(root / "annotations.pkl", f"segmentation: {e}",
                                 f"annotation id {aid} (image id {a['image_id']})") from None
        return rle_cache[aid]

    images: dict[int, Image] = {}
    expressions_out, groups, targets = [], [], []
    for gid, sids, img_ids in plan:
        if not sids or not img_ids:
            continue
        e_ids = []
        for sid in sids:
            eid = len(expressions_out) + 1
            e_ids.append(eid)
            s = data.sentences[sid]
            expressions_out.append(Expression(eid, str(s["raw_sent"]), gid, {
                "d3_sent_id": sid, "is_negative": bool(s["is_negative"])}))
            for iid in img_ids:
                im = data.images[iid]
                h, w = int(im["height"]), int(im["width"])
                anns = by_pair.get((sid, iid), [])
                if anns:
                    targets.append(Target(eid, iid, True, union([ann_rle(a) for a in anns]),
                                          tuple(anns)))
                else:
                    targets.append(Target(eid, iid, False, empty_rle(h, w), ()))
        for iid in img_ids:
            if iid not in images:
                im = data.images[iid]
                images[iid] = Image(iid, str(im["file_name"]), int(im["height"]),
                                    int(im["width"]))
        extra = {}
        if setting == "intra" and "group_name" in data.groups[gid]:
            extra["name"] = str(data.groups[gid]["group_name"])
        groups.append(Group(gid, tuple(e_ids), tuple(img_ids), extra))
    info = {"name": "grd", "split": "test", "grdkit_version": __version__,
            "recipe": {"source": "D³ pickles", "setting": setting, "expressions": expressions},
            "sources": data.sources}
    return GresDataset(info, [images[k] for k in sorted(images)], expressions_out, groups,
                       targets)
