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

Two layouts are read and normalised here into one (plain Python, as documented), so builders and
``grdkit validate`` see a single layout:

* *documented* (d-cube ``doc.md``): ``segmentation`` an RLE dict, ``area`` / ``iscrowd`` /
  ``group_id`` ints, ``bbox`` a list;
* *released* (what the D³ authors' own code reads, shikras/d-cube ``d_cube/d3.py``
  ``convert2coco``: ``segmentation[0]`` with bytes ``counts``, ``int(area[0])``,
  ``bbox[0].tolist()``; ``get_mask`` / ``data_util.rle2bmask`` decode a *list* of RLEs and sum
  them): ``segmentation`` a list of RLE dicts (their union), ``area`` / ``bbox`` / ``iscrowd`` /
  ``group_id`` numpy arrays, numpy scalars or one-element lists, ids numpy ints.

After :func:`normalise_annotation`: ``segmentation`` is one compressed RLE with ``str`` counts
(uncompressed RLE compressed; a list of RLEs replaced by their union), ``area`` a number,
``bbox`` ``[x, y, w, h]``, ``iscrowd`` / ``group_id`` / ids ints. A segmentation that cannot be
normalised (e.g. runs not summing to h*w) is left as it is, for :func:`d3_problems` to report.
Pickles are read with :class:`grdkit.io.NumpyUnpickler`: numpy arrays, scalars and dtypes, no
other global.

D³ also ships COCO-style JSON (``d3_full_annotations.json``, ``d3_pres_annotations.json``,
``d3_abs_annotations.json``; d-cube ``scripts/eval_and_analysis_json.py``), written by
``convert2coco``: ``images`` ``{id, file_name, height, width}``, ``categories`` ``{id = sent_id,
name = raw_sent}``, ``annotations`` ``{id, image_id, category_id, segmentation (str counts), area,
bbox, iscrowd}``, one annotation per (instance, sentence). Groups are not in the JSON; they come
from ``groups.pkl`` when its folder is given (:func:`read_d3_json`).

A sentence may be listed in several groups. Every sentence is
annotated on every image (complete annotation), so an image without an annotation of a sentence
is a certified negative for it. The conversion to the canonical format is
:mod:`grdkit.builders.grd`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..format import Finding
from ..format.masks import MaskError, area_agrees, bbox, bbox_agrees, to_rle, union
from ..format.rlecheck import check_rles
from ..io import NumpyUnpickler, loads_json, loads_pickle, read_bytes

D3_FILES = ("sentences.pkl", "annotations.pkl", "images.pkl", "groups.pkl")

_REQUIRED = {
    "sentences.pkl": ("id", "anno_id", "group_id", "is_negative", "raw_sent"),
    "annotations.pkl": ("id", "sent_id", "segmentation", "image_id"),
    "images.pkl": ("id", "file_name", "height", "width"),
    "groups.pkl": ("id", "inner_sent_id", "img_id"),
}


@dataclass
class D3Data:
    """The four D³ tables keyed by id, the folder, and the files' sha256.

    ``files`` maps a table's pickle name (``annotations.pkl``, ...) to the file it was read from
    when that is not ``root / name`` (the COCO JSON); see :meth:`path`.
    """

    sentences: dict[int, dict]
    annotations: dict[int, dict]
    images: dict[int, dict]
    groups: dict[int, dict]
    root: Path
    sources: dict[str, str]
    files: dict[str, Path] = field(default_factory=dict)

    def path(self, table: str) -> Path:
        """The file a table (``"annotations.pkl"``, ...) was read from, for messages."""
        return self.files.get(table, self.root / table)


def is_d3_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and all((p / f).exists() for f in D3_FILES)


def as_list(v: Any) -> list:
    """A D³ id field as a list: lists and tuples as they are, a single value wrapped."""
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def plain(v: Any) -> Any:
    """``v`` with numpy arrays as (nested) lists and numpy scalars as Python scalars, recursively
    through lists, tuples and dicts; everything else unchanged."""
    if isinstance(v, dict):
        return {plain(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if type(v).__module__ == "numpy":
        return v.tolist() if hasattr(v, "tolist") else v
    return v


def _unwrap(v: Any) -> Any:
    """A one-element list as its element (``area[0]``, ``bbox[0]`` in d-cube's code)."""
    return v[0] if isinstance(v, list) and len(v) == 1 else v


def _as_int(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _rle(seg: Any) -> Any:
    """One RLE dict as a compressed RLE with str counts, or ``seg`` unchanged if it is not one."""
    if not (isinstance(seg, dict) and "counts" in seg and isinstance(seg.get("size"), list)
            and len(seg["size"]) == 2):
        return seg
    counts = seg["counts"]
    if isinstance(counts, bytes):
        try:
            return {**seg, "counts": counts.decode("ascii")}
        except UnicodeDecodeError:
            return seg
    if isinstance(counts, list):  # uncompressed: compress when well formed
        try:
            h, w = (int(x) for x in seg["size"])
            return to_rle(seg, h, w)
        except (MaskError, TypeError, ValueError):
            return seg
    return seg


def normalise_segmentation(seg: Any) -> Any:
    """A D³ segmentation (an RLE dict or a list of them; bytes or str counts; compressed or not)
    as one compressed RLE with str counts; ``seg`` unchanged when it cannot be normalised."""
    seg = _unwrap(seg)
    if isinstance(seg, list) and seg and all(isinstance(p, dict) for p in seg):
        parts = [_rle(p) for p in seg]
        if all(isinstance(p.get("counts"), str) for p in parts) and \
                len({tuple(p["size"]) for p in parts}) == 1:
            ok, _, _ = check_rles([p["counts"] for p in parts],
                                  [tuple(int(x) for x in p["size"]) for p in parts])
            if ok.all():
                return union(parts)
        return seg
    return _rle(seg)


def normalise_annotation(rec: dict) -> dict:
    """One annotation of either layout (module header) in the documented one, plain Python."""
    rec = plain(rec)
    if "segmentation" in rec:
        rec["segmentation"] = normalise_segmentation(rec["segmentation"])
    for k in ("area", "iscrowd", "group_id"):
        if k in rec:
            rec[k] = _as_int(_unwrap(rec[k])) if k != "area" else _unwrap(rec[k])
    if "bbox" in rec and isinstance(rec["bbox"], list) and len(rec["bbox"]) == 1 \
            and isinstance(rec["bbox"][0], list):
        rec["bbox"] = rec["bbox"][0]
    return rec


def _normalise(name: str, rec: dict) -> dict:
    if name == "annotations.pkl":
        return normalise_annotation(rec)
    rec = plain(rec)
    if name == "images.pkl" and "group_id" in rec:
        rec["group_id"] = _unwrap(rec["group_id"])
    return rec


def _table(path: Path, obj: Any) -> dict[int, dict]:
    if not isinstance(obj, dict):
        raise InputError(path, f"holds a {type(obj).__name__}, expected a dict keyed by id")
    out = {}
    for key, rec in obj.items():
        key = plain(key)
        where = f"key {key!r}"
        if not isinstance(rec, dict):
            raise InputError(path, f"record is a {type(rec).__name__}, not a dict", where)
        rec = _normalise(path.name, rec)
        for f in _REQUIRED[path.name]:
            if f not in rec:
                raise InputError(path, f"missing field {f!r}", where,
                                 "expected the d-cube pickle fields")
        if rec["id"] != key:
            raise InputError(path, f"record id {rec['id']!r} differs from its key", where)
        out[int(key)] = rec
    return out


def read_d3(anno_root: str | Path) -> D3Data:
    """Read the four D³ pickles of either layout (module header), normalised to plain Python.

    Pickles may hold numpy arrays, scalars and dtypes (:class:`grdkit.io.NumpyUnpickler`); any
    other global is refused and nothing in the file runs.

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
                                                        "pass the D³ annotation pickles",
                                                        unpickler=NumpyUnpickler))
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
                                             "segmentation is not an RLE, a list of RLEs of one "
                                             "size, or an uncompressed RLE whose runs sum to "
                                             "h*w"), True
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


def _json_is_negative(path: Path) -> bool | None:
    """D³'s JSON file names say which sentences they hold: pres (presence), abs (absence)."""
    if path.name.startswith("d3_pres_"):
        return False
    if path.name.startswith("d3_abs_"):
        return True
    return None


def _json_records(path: Path, coco: Any, key: str, fields: tuple[str, ...]) -> list[dict]:
    recs = coco.get(key) if isinstance(coco, dict) else None
    if not isinstance(recs, list):
        raise InputError(path, f"missing list {key!r}",
                         hint="expected D³'s COCO-style JSON (images, annotations, categories)")
    for i, r in enumerate(recs):
        if not isinstance(r, dict):
            raise InputError(path, f"is a {type(r).__name__}, not an object", f"{key}[{i}]")
        for f in fields:
            if f not in r:
                raise InputError(path, f"missing field {f!r}", f"{key}[{i}]")
        if not isinstance(r["id"], int) or isinstance(r["id"], bool):
            raise InputError(path, f"id {r['id']!r} is not an integer", f"{key}[{i}]")
    return recs


def read_d3_json(json_path: str | Path, anno_root: str | Path | None = None) -> D3Data:
    """Read one of D³'s COCO-style JSON files as D³ tables (see the module header).

    Categories become sentences (``id`` = sent_id, ``raw_sent`` = name); each JSON annotation is
    an annotation of its one sentence. ``is_negative`` comes from ``sentences.pkl`` in
    ``anno_root`` when present, else from the file name (``d3_pres_*``: presence, ``d3_abs_*``:
    absence), else it is ``None`` (unknown; the builder then only takes every sentence).
    Groups come from ``anno_root/groups.pkl`` when ``anno_root`` is given, restricted to the
    sentences the JSON holds (``pres`` and ``abs`` hold a subset); otherwise there are none and
    only the inter-group setting can be built.

    Raises:
        InputError: a missing or malformed file, or a record missing a field (file and record
            named).
    """
    path = Path(json_path)
    data = read_bytes(path, "D³ JSON", "pass d3_full_annotations.json, d3_pres_annotations.json "
                                       "or d3_abs_annotations.json")
    coco = loads_json(path, data)
    sources = {path.name: hashlib.sha256(data).hexdigest()}
    images = {}
    for r in _json_records(path, coco, "images", ("id", "file_name", "height", "width")):
        if r["id"] in images:
            raise InputError(path, "duplicate image id", f"image id {r['id']}")
        images[r["id"]] = dict(r)
    cats = _json_records(path, coco, "categories", ("id", "name"))
    neg = _json_is_negative(path)
    sent_pkl: dict[int, dict] = {}
    groups: dict[int, dict] = {}
    root = path.parent
    if anno_root is not None:
        root = Path(anno_root)
        gbytes = read_bytes(root / "groups.pkl", "D³ pickle",
                            "the folder given with the JSON must hold D³'s groups.pkl")
        sources["groups.pkl"] = hashlib.sha256(gbytes).hexdigest()
        groups = _table(root / "groups.pkl", loads_pickle(root / "groups.pkl", gbytes,
                                                          "pass D³'s groups.pkl",
                                                          unpickler=NumpyUnpickler))
        if (root / "sentences.pkl").exists():
            sbytes = read_bytes(root / "sentences.pkl", "D³ pickle")
            sources["sentences.pkl"] = hashlib.sha256(sbytes).hexdigest()
            sent_pkl = _table(root / "sentences.pkl",
                              loads_pickle(root / "sentences.pkl", sbytes,
                                           "pass D³'s sentences.pkl", unpickler=NumpyUnpickler))
    sentences: dict[int, dict] = {}
    for c in cats:
        sid = c["id"]
        if sid in sentences:
            raise InputError(path, "duplicate category (sentence) id", f"category id {sid}")
        is_neg = sent_pkl[sid]["is_negative"] if sid in sent_pkl else neg
        sentences[sid] = {"id": sid, "anno_id": [], "group_id": [],
                          "is_negative": None if is_neg is None else bool(is_neg),
                          "raw_sent": str(c["name"])}
    annotations: dict[int, dict] = {}
    for r in _json_records(path, coco, "annotations",
                           ("id", "image_id", "category_id", "segmentation")):
        if r["id"] in annotations:
            raise InputError(path, "duplicate annotation id", f"annotation id {r['id']}")
        a = normalise_annotation(r)
        a["sent_id"] = [r["category_id"]]
        annotations[r["id"]] = a
        if r["category_id"] in sentences:
            sentences[r["category_id"]]["anno_id"].append(r["id"])
    for g in groups.values():  # the JSON's sentences only (pres / abs hold a subset)
        g["inner_sent_id"] = [s for s in as_list(g["inner_sent_id"]) if s in sentences]
        for s in g["inner_sent_id"]:
            sentences[s]["group_id"].append(g["id"])
    files = {n: path for n in ("sentences.pkl", "annotations.pkl", "images.pkl")}
    if anno_root is None:  # no groups: errors about them name the JSON
        files["groups.pkl"] = path
    return D3Data(sentences, annotations, images, groups, root, dict(sorted(sources.items())),
                  files)
