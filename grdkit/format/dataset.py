"""The canonical GRES dataset format: one JSON file per split, typed records, fast lookups.

File layout (``<out>/<split>.json``; JSON Schema shipped as ``grdkit/format/schema/gres_dataset.schema.json``)::

    {"info":        {"name": str, "split": str, "grdkit_version": str, "recipe": {...},
                     "sources": {"<file name>": "<sha256>"}},
     "images":      [{"id": int, "file_name": str, "height": int, "width": int, ...}],
     "expressions": [{"id": int, "text": str, "group_id": int, ...}],
     "groups":      [{"id": int, "expression_ids": [int], "image_ids": [int], ...}],
     "targets":     [{"expression_id": int, "image_id": int, "positive": bool,
                      "segmentation": {"size": [h, w], "counts": str},
                      "ann_ids": [int], ...}]}

Semantics: a *group* is a set of images plus the expressions asked about them. There is exactly one
*target* per (expression of the group, image of the group) pair: a *positive* target holds the union
of every referred object's mask (COCO compressed RLE, pixels of the image), a *negative* one the
empty RLE. Negatives are explicit, never implied. Extra keys on any record are kept on a round trip.

API: :func:`load_dataset`, :func:`save_dataset`, :class:`GresDataset` (lookups ``image``,
``expression``, ``group``, ``target``, ``targets_of_group`` / ``_expression`` / ``_image``).
Output is deterministic: the same dataset always serialises to the same bytes (one record per line,
so files diff well and errors can name a line).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np

from ..errors import InputError
from ..io import atomic_write_text, loads_json, read_bytes
from ..io.limits import MAX_JSON_INT, MAX_PIXELS, MAX_SIDE
from .problems import RECORD_FIELDS, SECTIONS, record_problems, reference_problems


@dataclass(frozen=True, slots=True)
class Image:
    """An image: COCO-style ``id``, ``file_name`` relative to an image root, size in pixels."""

    id: int
    file_name: str
    height: int
    width: int
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Expression:
    """A referring expression (``text``) asked about every image of group ``group_id``."""

    id: int
    text: str
    group_id: int
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Group:
    """A group: the expressions asked and the images they are asked about (ids, in file order)."""

    id: int
    expression_ids: tuple[int, ...]
    image_ids: tuple[int, ...]
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Target:
    """Ground truth of one (expression, image) pair.

    ``segmentation`` is a COCO compressed RLE ``{"size": [h, w], "counts": str}``; empty for a
    negative (no-target) pair. ``ann_ids`` lists the source annotations whose union it is.
    """

    expression_id: int
    image_id: int
    positive: bool
    segmentation: dict
    ann_ids: tuple[int, ...]
    extra: dict = field(default_factory=dict, compare=False)


# The record rules of :func:`.problems.record_problems` as msgspec types, checked in C over a
# whole section at once (~10x the per-record generator on a GRD-sized split); only a section
# that fails goes through ``record_problems``, which names the first bad record. Extra keys are
# allowed here as there; sizes are bounded as :func:`grdkit.io.limits.size_problem` bounds them.
_Id = Annotated[int, msgspec.Meta(ge=-(MAX_JSON_INT - 1), le=MAX_JSON_INT - 1)]
_Side = Annotated[int, msgspec.Meta(ge=1, le=MAX_SIDE)]


class _ImageRec(msgspec.Struct):
    id: _Id
    file_name: str
    height: _Side
    width: _Side


class _ExpressionRec(msgspec.Struct):
    id: _Id
    text: str
    group_id: _Id


class _GroupRec(msgspec.Struct):
    id: _Id
    expression_ids: Annotated[list[_Id], msgspec.Meta(min_length=1)]
    image_ids: Annotated[list[_Id], msgspec.Meta(min_length=1)]


class _SegRec(msgspec.Struct):
    size: Annotated[list[_Side], msgspec.Meta(min_length=2, max_length=2)]
    counts: str


class _TargetRec(msgspec.Struct):
    expression_id: _Id
    image_id: _Id
    positive: bool
    segmentation: _SegRec
    ann_ids: list[_Id]


_SCHEMA = {"images": list[_ImageRec], "expressions": list[_ExpressionRec],
           "groups": list[_GroupRec], "targets": list[_TargetRec]}


def _schema_ok(section: str, records: list) -> bool:
    """All records of a section pass :func:`.problems.record_problems` (checked by msgspec)."""
    try:
        recs = msgspec.convert(records, _SCHEMA[section])
    except msgspec.ValidationError:
        return False
    if section in ("images", "targets"):  # the area bound
        hw = [(r.height, r.width) for r in recs] if section == "images" else \
            [tuple(r.segmentation.size) for r in recs]
        if hw and (np.prod(np.array(hw, np.int64), axis=1) > MAX_PIXELS).any():
            return False
    return True


# A whole file with no extra key anywhere (what grdkit's builders mostly write) is decoded
# straight into these structs: types and bounds checked in C while parsing, no dicts built.
# Any extra key, wrong type or bad JSON sends the file to the general path (dicts, the schema
# per section above, record_problems naming the record), so messages stay the same.
class _ImageStrict(_ImageRec, forbid_unknown_fields=True):
    pass


class _ExpressionStrict(_ExpressionRec, forbid_unknown_fields=True):
    pass


class _GroupStrict(_GroupRec, forbid_unknown_fields=True):
    pass


class _SegStrict(_SegRec, forbid_unknown_fields=True):
    pass


class _TargetStrict(msgspec.Struct, forbid_unknown_fields=True):
    expression_id: _Id
    image_id: _Id
    positive: bool
    segmentation: _SegStrict
    ann_ids: list[_Id]


class _FileStrict(msgspec.Struct, forbid_unknown_fields=True):
    info: dict[str, Any]
    images: list[_ImageStrict]
    expressions: list[_ExpressionStrict]
    groups: list[_GroupStrict]
    targets: list[_TargetStrict]


_STRICT = msgspec.json.Decoder(_FileStrict)


def _small_ints(obj: Any, depth: int = 0) -> bool:
    """Every integer in ``info`` (decoded without a type) is below 2^63 in magnitude, the bound
    :func:`grdkit.io.loads_json` applies; False also for nesting deeper than 32 levels."""
    if depth > 32:
        return False
    if isinstance(obj, int):
        return abs(obj) < MAX_JSON_INT
    if isinstance(obj, dict):
        return all(_small_ints(v, depth + 1) for v in obj.values())
    if isinstance(obj, list):
        return all(_small_ints(v, depth + 1) for v in obj)
    return True


def _decode_strict(data: bytes, path: Path) -> GresDataset | None:
    """The dataset of a file without extra keys, or None (the general path then reads it)."""
    try:
        f = _STRICT.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    if not _small_ints(f.info):
        return None
    hw = [(r.height, r.width) for r in f.images] + [tuple(r.segmentation.size)
                                                    for r in f.targets]
    if hw and (np.prod(np.array(hw, np.int64), axis=1) > MAX_PIXELS).any():
        return None
    images = [Image(r.id, r.file_name, r.height, r.width) for r in f.images]
    expressions = [Expression(r.id, r.text, r.group_id) for r in f.expressions]
    groups = [Group(r.id, tuple(r.expression_ids), tuple(r.image_ids)) for r in f.groups]
    targets = [Target(r.expression_id, r.image_id, r.positive,
                      {"size": r.segmentation.size, "counts": r.segmentation.counts},
                      tuple(r.ann_ids)) for r in f.targets]
    ds = GresDataset(f.info, images, expressions, groups, targets, path=path)
    ds.require_sound_masks()
    return ds


_KNOWN = {s: frozenset(k for k, _ in f) for s, f in RECORD_FIELDS.items()}
_NFIELDS = {s: len(f) for s, f in RECORD_FIELDS.items()}


class GresDataset:
    """One split of a canonical GRES dataset, with O(1) lookups.

    Args:
        info: the ``info`` object (name, split, grdkit_version, recipe, sources).
        images, expressions, groups, targets: typed records, in file order.
        path: where it was read from, used in error messages; optional.

    Raises:
        InputError: duplicate image / expression / group ids or duplicate (expression, image)
            target pairs (lookups would be ambiguous).
    """

    def __init__(self, info: dict, images: list[Image], expressions: list[Expression],
                 groups: list[Group], targets: list[Target], path: str | Path | None = None):
        self.info = info
        self.images = images
        self.expressions = expressions
        self.groups = groups
        self.targets = targets
        self.path = None if path is None else str(path)
        self._images = {r.id: r for r in images}
        self._expressions = {r.id: r for r in expressions}
        self._groups = {r.id: r for r in groups}
        self._targets: dict[tuple[int, int], Target] = {
            (t.expression_id, t.image_id): t for t in targets}
        if (len(self._images), len(self._expressions), len(self._groups), len(self._targets)) \
                != (len(images), len(expressions), len(groups), len(targets)):
            # lookups would be ambiguous: name the first duplicate
            self._raise_first({"duplicate_id", "duplicate_target"},
                              "ids must be unique within a section")
        self._by_expr: dict[int, list[Target]] | None = None
        self._by_image: dict[int, list[Target]] | None = None
        self._areas: np.ndarray | None = None
        self._runs: list[np.ndarray] | None = None

    def target_areas(self) -> np.ndarray:
        """Foreground pixels of every target's mask, int64 ``(len(targets),)`` in file order
        (kept from the load-time check, :meth:`require_sound_masks`, which computes them from
        the runs anyway; computed by it on first use otherwise).

        Raises:
            InputError: a target's RLE is corrupt (see :meth:`require_sound_masks`).
        """
        if self._areas is None or len(self._areas) != len(self.targets):
            self.require_sound_masks()
        return self._areas

    def target_runs(self) -> list[np.ndarray]:
        """Run lengths of every target's RLE (int64 arrays, in file order), kept from the
        load-time check like :meth:`target_areas`; for evaluators working on runs."""
        if self._runs is None or len(self._runs) != len(self.targets):
            self.require_sound_masks()
        return self._runs

    def _reference_problems(self):
        return reference_problems(
            ((i, r.id) for i, r in enumerate(self.images)),
            ((i, r.id, r.group_id) for i, r in enumerate(self.expressions)),
            ((i, r.id, r.expression_ids, r.image_ids) for i, r in enumerate(self.groups)),
            ((i, t.expression_id, t.image_id) for i, t in enumerate(self.targets)))

    def _raise_first(self, kinds: set[str] | None, hint: str) -> None:
        for f in self._reference_problems():
            if kinds is None or f.kind in kinds:
                raise InputError(self.path, f.message, f.record, hint)

    @property
    def name(self) -> str:
        return str(self.info.get("name", ""))

    @property
    def split(self) -> str:
        return str(self.info.get("split", ""))

    def image(self, image_id: int) -> Image:
        """The image with this id; ``KeyError`` if absent."""
        return self._images[image_id]

    def expression(self, expression_id: int) -> Expression:
        """The expression with this id; ``KeyError`` if absent."""
        return self._expressions[expression_id]

    def group(self, group_id: int) -> Group:
        """The group with this id; ``KeyError`` if absent."""
        return self._groups[group_id]

    def target(self, expression_id: int, image_id: int) -> Target:
        """The target of one (expression, image) pair; ``KeyError`` if absent."""
        return self._targets[(expression_id, image_id)]

    def has_target(self, expression_id: int, image_id: int) -> bool:
        return (expression_id, image_id) in self._targets

    def _build_secondary(self) -> None:
        by_expr: dict[int, list[Target]] = {}
        by_image: dict[int, list[Target]] = {}
        for t in self.targets:
            by_expr.setdefault(t.expression_id, []).append(t)
            by_image.setdefault(t.image_id, []).append(t)
        self._by_expr, self._by_image = by_expr, by_image

    def targets_of_expression(self, expression_id: int) -> list[Target]:
        """Targets of one expression, in file order (empty list if none)."""
        if self._by_expr is None:
            self._build_secondary()
        return list(self._by_expr.get(expression_id, []))

    def targets_of_image(self, image_id: int) -> list[Target]:
        """Targets on one image, in file order (empty list if none)."""
        if self._by_image is None:
            self._build_secondary()
        return list(self._by_image.get(image_id, []))

    def targets_of_group(self, group_id: int) -> list[Target]:
        """Targets of every (expression, image) pair of the group that exist, expression-major."""
        g = self._groups[group_id]
        return [self._targets[(e, i)] for e in g.expression_ids for i in g.image_ids
                if (e, i) in self._targets]

    def require_complete(self) -> None:
        """Check the references the rest of grdkit relies on; raise at the first problem.

        Every expression names an existing group that lists it, every group lists existing
        expressions and images, and there is exactly one target per (expression, image) pair of
        each group and no other target. (``grdkit validate`` reports every problem instead.)

        Raises:
            InputError: naming the record and pointing at ``grdkit validate``.
        """
        self._raise_first(None, "run `grdkit validate` on it to list every problem")

    def pairs(self) -> Iterator[tuple[int, int]]:
        """Every (expression_id, image_id) pair that has a target, in file order."""
        return iter(self._targets.keys())

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        return (f"GresDataset(name={self.name!r}, split={self.split!r}, groups={len(self.groups)}, "
                f"expressions={len(self.expressions)}, images={len(self.images)}, "
                f"targets={len(self.targets)})")

    # -- (de)serialisation ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, path: str | Path | None = None) -> GresDataset:
        """Build from the parsed JSON object; raises :class:`InputError` on a malformed record."""
        if not isinstance(data, dict):
            raise InputError(path, "top level is not a JSON object", hint="see the canonical format in docs/format.md")
        for s in SECTIONS:
            if s not in data:
                raise InputError(path, f"missing top-level key {s!r}")
        if not isinstance(data["info"], dict):
            raise InputError(path, "'info' is not an object")
        for s in SECTIONS[1:]:
            if not isinstance(data[s], list):
                raise InputError(path, f"{s!r} is not a list")
            if _schema_ok(s, data[s]):
                continue  # every record has its keys and types: nothing to name
            for i, rec in enumerate(data[s]):
                for f in record_problems(s, i, rec):
                    raise InputError(path, f.message, f.record)

        def extra(rec: dict, section: str) -> dict:
            if len(rec) == _NFIELDS[section]:  # only the required keys (checked above)
                return {}
            known = _KNOWN[section]
            return {k: v for k, v in rec.items() if k not in known}

        images = [Image(r["id"], r["file_name"], r["height"], r["width"], extra(r, "images"))
                  for r in data["images"]]
        expressions = [Expression(r["id"], r["text"], r["group_id"], extra(r, "expressions"))
                       for r in data["expressions"]]
        groups = [Group(r["id"], tuple(r["expression_ids"]), tuple(r["image_ids"]),
                        extra(r, "groups")) for r in data["groups"]]
        def seg(s: dict) -> dict:  # checked above: {"size": [int, int], "counts": str}, extras
            return s if len(s) == 2 else {"size": s["size"], "counts": s["counts"]}

        n_req = _NFIELDS["targets"]
        targets = [Target(r["expression_id"], r["image_id"], r["positive"],
                          seg(r["segmentation"]), tuple(r["ann_ids"]),
                          {} if len(r) == n_req else extra(r, "targets"))
                   for r in data["targets"]]
        ds = cls(data["info"], images, expressions, groups, targets, path=path)
        ds.require_sound_masks()
        return ds

    def require_sound_masks(self) -> None:
        """Every target's RLE has its image's size and decodes, as pycocotools reads it, to
        exactly h*w pixels (:mod:`grdkit.format.rlecheck`, vectorised): checked when a file is
        loaded, so no corrupt string reaches pycocotools' C code (which does not check).

        Raises:
            InputError: naming the first bad target and why.
        """
        from .rlecheck import check_rles_runs, rle_problem

        for k, t in enumerate(self.targets):
            im = self._images.get(t.image_id)
            if im is not None and t.segmentation["size"] != [im.height, im.width]:
                raise InputError(self.path, f"segmentation size {t.segmentation['size']} is not "
                                 f"the image's [{im.height}, {im.width}]",
                                 f"targets[{k}] (expression_id {t.expression_id}, image_id "
                                 f"{t.image_id})", "run `grdkit validate` on it")
        ok, _, area, runs = check_rles_runs([t.segmentation["counts"] for t in self.targets],
                                            [tuple(t.segmentation["size"]) for t in self.targets])
        if not ok.all():
            k = int(np.flatnonzero(~ok)[0])
            t = self.targets[k]
            raise InputError(self.path, f"segmentation is corrupt: "
                             f"{rle_problem(t.segmentation['counts'], t.segmentation['size'])}",
                             f"targets[{k}] (expression_id {t.expression_id}, image_id "
                             f"{t.image_id})", f"{int((~ok).sum())} corrupt RLEs in all; run "
                             "`grdkit validate` on it")
        self._areas, self._runs = area, runs

    def to_dict(self) -> dict:
        """The JSON-ready object (required keys first, then extra keys in their stored order)."""
        return {
            "info": self.info,
            "images": [{"id": r.id, "file_name": r.file_name, "height": r.height,
                        "width": r.width, **r.extra} for r in self.images],
            "expressions": [{"id": r.id, "text": r.text, "group_id": r.group_id, **r.extra}
                            for r in self.expressions],
            "groups": [{"id": r.id, "expression_ids": list(r.expression_ids),
                        "image_ids": list(r.image_ids), **r.extra} for r in self.groups],
            "targets": [{"expression_id": r.expression_id, "image_id": r.image_id,
                         "positive": r.positive, "segmentation": r.segmentation,
                         "ann_ids": list(r.ann_ids), **r.extra} for r in self.targets],
        }


def dumps(ds: GresDataset) -> str:
    """Serialise deterministically: one record per line, compact separators, UTF-8 text."""
    d = ds.to_dict()

    def enc(obj: Any) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    lines = ["{", f'"info":{enc(d["info"])},']
    for k, s in enumerate(SECTIONS[1:]):
        recs = d[s]
        lines.append(f'"{s}":[')
        lines.extend(enc(r) + ("," if j < len(recs) - 1 else "") for j, r in enumerate(recs))
        lines.append("]" + ("," if k < 3 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_dataset(ds: GresDataset, path: str | Path) -> None:
    """Write one split to ``path`` atomically (temp file + rename), byte-deterministic."""
    atomic_write_text(path, dumps(ds))


def load_dataset(path: str | Path) -> GresDataset:
    """Read one split file of the canonical format.

    Raises:
        InputError: the file is missing, is not JSON (the message gives line and column), a
            record misses a key or has a wrong type (the message names the record), a size is
            beyond grdkit's bounds, or a target's RLE is not its image's size or is corrupt
            (:meth:`GresDataset.require_sound_masks`).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder; pass one split file such as val.json",
                         hint=f"choose one of {sorted(p.name for p in path.glob('*.json'))}")
    raw = read_bytes(path, "file")
    ds = _decode_strict(raw, path)
    if ds is not None:
        return ds
    return GresDataset.from_dict(loads_json(path, raw), path=path)


def load_splits(folder: str | Path) -> dict[str, GresDataset]:
    """Read every ``<split>.json`` of a built dataset folder, keyed by split name (sorted)."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    if not files:
        raise InputError(folder, "holds no <split>.json file", hint="run `grdkit build` first")
    return {p.stem: load_dataset(p) for p in files}
