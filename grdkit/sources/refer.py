"""Readers for the refer toolkit format (RefCOCO, RefCOCO+, RefCOCOg) and gRefCOCO.

Input contract (a refer folder, as the refer toolkit lays out one dataset)::

    instances.json       COCO: {"images": [{id, file_name, height, width}],
                                "annotations": [{id, image_id, category_id, iscrowd,
                                                 segmentation: polygons | RLE}],
                                "categories": [{id, name}]}
    refs(unc).p | refs(umd).p | refs(google).p
                         pickle of a list of refs {ref_id, image_id, ann_id: int, category_id,
                                                   split, sentences: [{sent_id, sent, raw}]}
    grefs(unc).json      gRefCOCO (ReLA, CVPR 2023): the same refs as JSON (or ``grefs(unc).p``,
                         which ReLA's ``grefer.py`` tries first); ``ann_id`` an int or a list,
                         ``[-1]`` (or -1) means no target, and an optional ref-level ``no_target``
                         flag must agree with it; ``sentences`` may be empty

The original pickles were written by Python 2, whose ``str`` objects are byte strings; they are
decoded as strict UTF-8 while unpickling (an undecodable one is an error, not a guess). Pickles are
read with :mod:`grdkit.io.pickles`, whose unpickler refuses every global, so a pickle can only build
plain lists, dicts, strings and numbers and cannot run code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import loads_json, loads_pickle, read_bytes


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence of a ref: refer's ``sent_id``, tokenised lower-case ``sent`` and ``raw`` text."""

    sent_id: int
    sent: str
    raw: str


@dataclass(frozen=True, slots=True)
class Ref:
    """A referring-expression record. ``ann_ids`` is empty for a gRefCOCO no-target ref, and
    ``sentences`` may be empty in gRefCOCO (refs files reject that)."""

    ref_id: int
    image_id: int
    ann_ids: tuple[int, ...]
    category_id: int | None
    split: str
    sentences: tuple[Sentence, ...]

    @property
    def no_target(self) -> bool:
        return not self.ann_ids


@dataclass
class ReferData:
    """A loaded refer dataset: refs, COCO images and annotations by id, and source checksums."""

    refs: list[Ref]
    images: dict[int, dict]
    annotations: dict[int, dict]
    categories: dict[int, str]
    refs_path: Path
    instances_path: Path
    sources: dict[str, str]  # file name -> sha256 hex digest


_REFER_HINT = "point at a refer-format folder (refs(<splitBy>).p and instances.json)"
_PICKLE_HINT = "pass the refer toolkit's refs(*).p file"


def load_pickle(path: str | Path) -> Any:
    """Load a Python 2 or Python 3 pickle of plain data safely; Python 2 byte strings become str.

    Raises:
        InputError: missing file, not a pickle, truncated, or holding anything but plain data.
    """
    return loads_pickle(path, read_bytes(path, "pickle", _REFER_HINT), _PICKLE_HINT)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_ref(path: Path, i: int, r: Any, grefs: bool) -> Ref:
    rec = f"refs[{i}]"
    if not isinstance(r, dict):
        raise InputError(path, f"is a {type(r).__name__}, not a dict", rec)
    if _int(r.get("ref_id")):
        rec = f"ref_id {r['ref_id']}"
    for key in ("ref_id", "image_id", "ann_id", "split", "sentences"):
        if key not in r:
            raise InputError(path, f"missing key {key!r}", rec)
    if not _int(r["ref_id"]) or not _int(r["image_id"]):
        raise InputError(path, "ref_id and image_id must be integers", rec)
    ann = r["ann_id"]
    if grefs and _int(ann):  # ReLA grefer.py: ann_id = self._toList(ann_id)
        ann = [ann]
    if grefs or isinstance(ann, list):
        if not isinstance(ann, list) or not ann or not all(_int(a) for a in ann):
            raise InputError(path, f"ann_id {ann!r} must be a non-empty list of integers", rec)
        if ann == [-1]:
            ann_ids: tuple[int, ...] = ()
        elif -1 in ann:
            raise InputError(path, f"ann_id {ann!r} mixes -1 (no target) with annotations", rec)
        else:
            ann_ids = tuple(dict.fromkeys(ann))
    elif _int(ann):
        ann_ids = (ann,)
    else:
        raise InputError(path, f"ann_id {ann!r} is not an integer", rec)
    if grefs and "no_target" in r:
        flag = r["no_target"]
        if not isinstance(flag, bool):
            raise InputError(path, f"no_target {flag!r} is not a boolean", rec)
        if flag != (not ann_ids):
            raise InputError(path, f"no_target is {str(flag).lower()} but ann_id is "
                             f"{r['ann_id']!r}",
                             rec, "no_target must be true exactly when ann_id is [-1]")
    if not isinstance(r["split"], str):
        raise InputError(path, "split must be a string", rec)
    sents = r["sentences"]
    if not isinstance(sents, list) or (not sents and not grefs):
        raise InputError(path, "sentences must be a non-empty list", rec)
    out = []
    for k, s in enumerate(sents):
        if not isinstance(s, dict) or not isinstance(s.get("sent", s.get("raw")), str):
            raise InputError(path, f"sentences[{k}] has no text ('sent' or 'raw')", rec)
        text = s.get("sent", s.get("raw"))
        raw = s.get("raw", text)
        sid = s.get("sent_id")
        if not _int(sid):
            raise InputError(path, f"sentences[{k}] has no integer sent_id", rec)
        out.append(Sentence(sid, text, raw if isinstance(raw, str) else text))
    cat = r.get("category_id")
    return Ref(r["ref_id"], r["image_id"], ann_ids, cat if _int(cat) else None, r["split"],
               tuple(out))


def parse_refs(path: str | Path, refs: Any, grefs: bool = False) -> list[Ref]:
    """Turn the loaded list of refs into :class:`Ref` records, checking every field.

    Raises:
        InputError: naming the file and the ``ref_id`` (or index) of the first bad record.
    """
    path = Path(path)
    if not isinstance(refs, list):
        raise InputError(path, f"holds a {type(refs).__name__}, expected a list of refs")
    return [_parse_ref(path, i, r, grefs) for i, r in enumerate(refs)]


def load_refs(path: str | Path) -> list[Ref]:
    """Read ``refs(*).p`` (Python 2 or 3 pickle) or gRefCOCO ``grefs(*).json``."""
    path = Path(path)
    data = read_bytes(path, "refs file", _REFER_HINT)
    return _parse_loaded_refs(path, data)


def _parse_loaded_refs(path: Path, data: bytes) -> list[Ref]:
    if path.suffix == ".json":
        return parse_refs(path, loads_json(path, data), grefs=True)
    return parse_refs(path, loads_pickle(path, data, _PICKLE_HINT),
                      grefs=path.name.startswith("grefs("))


def _parse_instances(path: Path, data: bytes) -> tuple[dict, dict, dict]:
    coco = loads_json(path, data, "pass the COCO instances.json of the refer dataset")
    if not isinstance(coco, dict):
        raise InputError(path, "top level is not a JSON object")
    for key in ("images", "annotations"):
        if not isinstance(coco.get(key), list):
            raise InputError(path, f"missing list {key!r}", hint="is this a COCO instances file?")
    images: dict[int, dict] = {}
    for i, im in enumerate(coco["images"]):
        if not isinstance(im, dict) or not _int(im.get("id")):
            raise InputError(path, "image without an integer id", f"images[{i}]")
        for key in ("height", "width"):
            if not _int(im.get(key)) or im[key] <= 0:
                raise InputError(path, f"{key} is {im.get(key)!r}; must be a positive integer",
                                 f"image id {im['id']}")
        if not isinstance(im.get("file_name"), str):
            raise InputError(path, "file_name missing", f"image id {im['id']}")
        if im["id"] in images:
            raise InputError(path, "duplicate image id", f"image id {im['id']}")
        images[im["id"]] = im
    anns: dict[int, dict] = {}
    for i, a in enumerate(coco["annotations"]):
        if not isinstance(a, dict) or not _int(a.get("id")):
            raise InputError(path, "annotation without an integer id", f"annotations[{i}]")
        for key in ("image_id", "category_id"):
            if not _int(a.get(key)):
                raise InputError(path, f"{key} missing or not an integer", f"annotation id {a['id']}")
        if "segmentation" not in a:
            raise InputError(path, "segmentation missing", f"annotation id {a['id']}")
        if a["id"] in anns:
            raise InputError(path, "duplicate annotation id", f"annotation id {a['id']}")
        anns[a["id"]] = a
    cats = {c["id"]: c.get("name", str(c["id"])) for c in coco.get("categories", [])
            if isinstance(c, dict) and _int(c.get("id"))}
    return images, anns, cats


def load_instances(path: str | Path) -> tuple[dict, dict, dict]:
    """Read a COCO ``instances.json``: (images by id, annotations by id, category names by id)."""
    path = Path(path)
    return _parse_instances(path, read_bytes(path, "instances.json", _REFER_HINT))


def ref_problems(refs: list[Ref], images: dict, annotations: dict
                 ) -> Iterator[tuple[int, str]]:
    """``(ref_id, message)`` for every ref whose image or annotations do not resolve.

    An annotation must exist and lie on the ref's image.
    """
    for r in refs:
        if r.image_id not in images:
            yield r.ref_id, f"image_id {r.image_id} is not in instances.json"
        for a in r.ann_ids:
            ann = annotations.get(a)
            if ann is None:
                yield r.ref_id, f"ann_id {a} is not in instances.json"
            elif ann["image_id"] != r.image_id:
                yield r.ref_id, (f"ann_id {a} lies on image {ann['image_id']}, not on the "
                                 f"ref's image {r.image_id}")


_DOWNLOAD_HINT = (
    "RefCOCO / RefCOCO+ / RefCOCOg: the refer toolkit's data (github.com/lichengunc/refer, "
    "folder data/<dataset>/ with refs(<splitBy>).p and instances.json); gRefCOCO: ReLA's "
    "(github.com/henghuiding/ReLA, datasets/grefcoco/ with grefs(unc).json and instances.json)")


def _refs_names(split_by: str, grefs: bool) -> tuple[str, ...]:
    return ((f"grefs({split_by}).p", f"grefs({split_by}).json") if grefs
            else (f"refs({split_by}).p", f"grefs({split_by}).json"))


def resolve_refer_root(refer_root: str | Path, split_by: str, grefs: bool = False,
                       folder: str | None = None) -> Path:
    """The refer-format folder that holds the refs file, from what a user points at.

    Accepted, in this order: the folder itself (``refer/data/refcocog``); a parent holding it
    as ``<folder>/`` or ``data/<folder>/`` (the refer toolkit's ``refer/data`` or ``refer``,
    ReLA's ``datasets``), ``folder`` being the dataset's folder name (``refcocog``,
    ``grefcoco``); a parent with exactly one subfolder that holds the refs file. Relative paths
    are relative to the current folder, never to grdkit's checkout.

    Raises:
        InputError: the path is not a folder (the message gives the absolute path and what the
            folder must contain), no candidate holds the refs file (the files present are
            listed), or several subfolders hold one (they are named; point at one).
    """
    root = Path(refer_root)
    names = _refs_names(split_by, grefs)
    if not root.is_dir():
        raise InputError(root, f"refer root folder not found (absolute: {root.absolute()})",
                         hint=f"{_REFER_HINT}; download: {_DOWNLOAD_HINT}")

    def holds(d: Path) -> bool:  # exists, not is_file: a FIFO is named as such by the reader
        return any((d / n).exists() for n in names)

    if holds(root):
        return root
    if folder:
        for cand in (root / folder, root / "data" / folder):
            if holds(cand):
                return cand
    subs = sorted(d for d in root.iterdir() if d.is_dir() and holds(d))
    if len(subs) == 1:
        return subs[0]
    if len(subs) > 1:
        raise InputError(root, f"several subfolders hold {names[0]}: "
                         f"{', '.join(d.name for d in subs)}",
                         hint="point --refer-root at the dataset's own folder")
    present = sorted(p.name for p in root.glob("*refs(*)*"))
    raise InputError(root / names[-1 if grefs else 0], "refs file not found",
                     hint=f"choose the splitBy of a file present: {present}" if present else
                     f"{_REFER_HINT}; download: {_DOWNLOAD_HINT}")


def refs_file(refer_root: str | Path, split_by: str, grefs: bool = False,
              folder: str | None = None) -> Path:
    """Locate ``refs(<split_by>).p`` (or gRefCOCO's ``grefs(<split_by>).json``) in a refer folder
    (or under a parent of it, see :func:`resolve_refer_root`).

    With ``grefs`` only gRefCOCO's files are taken: ``grefs(<split_by>).p`` then ``.json``, the
    order of ReLA's ``grefer.py``.
    """
    root = resolve_refer_root(refer_root, split_by, grefs, folder)
    for name in _refs_names(split_by, grefs):
        if (root / name).exists():  # the checked opener refuses a FIFO or device by name
            return root / name
    raise InputError(root, "refs file not found")  # unreachable: resolve_refer_root checked


def read_refer(refer_root: str | Path, split_by: str, grefs: bool = False,
               folder: str | None = None) -> ReferData:
    """Read a refer-format folder: refs for ``split_by`` plus ``instances.json``, with checksums.

    ``grefs``: read gRefCOCO's ``grefs(<split_by>)`` file only (see :func:`refs_file`).
    ``folder``: the dataset's folder name, to find it under a parent (:func:`resolve_refer_root`).

    Raises:
        InputError: a missing, truncated or malformed file, naming file and record.
    """
    rpath = refs_file(refer_root, split_by, grefs, folder)
    ipath = rpath.parent / "instances.json"
    rdata = read_bytes(rpath, "refs file", _REFER_HINT)
    idata = read_bytes(ipath, "instances.json", _REFER_HINT)
    sources = {rpath.name: hashlib.sha256(rdata).hexdigest(),
               ipath.name: hashlib.sha256(idata).hexdigest()}
    refs = _parse_loaded_refs(rpath, rdata)
    del rdata
    images, anns, cats = _parse_instances(ipath, idata)
    return ReferData(refs, images, anns, cats, rpath, ipath, dict(sorted(sources.items())))
