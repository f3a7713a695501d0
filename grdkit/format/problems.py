"""Rules of the canonical format, each written once, as generators of findings.

Two generators own every rule of a canonical split:

* :func:`record_problems`: one record's required keys and types (what the JSON Schema
  ``schema/gres_dataset.schema.json`` also says; a test checks that the two agree);
* :func:`reference_problems`: the references between records: unique ids, expressions and groups
  that list each other, images that exist, and completeness: exactly one target per (expression,
  image) pair of each group and no other target.

A reader raises at the first finding (:func:`grdkit.load_dataset`,
:meth:`GresDataset.require_complete`); ``grdkit validate`` collects them all. Findings are
``Finding(kind, severity, record, message)``; ``record`` names the record as the user sees it
(``targets[12] (expression_id 3, image_id 7)``, ``group id 4``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from ..io.limits import size_problem


class Finding(NamedTuple):
    """One problem: its kind (e.g. ``missing_target``), ``error`` or ``warning``, where, what."""

    kind: str
    severity: str
    record: str
    message: str


SECTIONS = ("info", "images", "expressions", "groups", "targets")

# required keys of each record and their JSON types (bool is not an int here)
RECORD_FIELDS: dict[str, tuple[tuple[str, type], ...]] = {
    "images": (("id", int), ("file_name", str), ("height", int), ("width", int)),
    "expressions": (("id", int), ("text", str), ("group_id", int)),
    "groups": (("id", int), ("expression_ids", list), ("image_ids", list)),
    "targets": (("expression_id", int), ("image_id", int), ("positive", bool),
                ("segmentation", dict), ("ann_ids", list)),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def record_name(section: str, i: int, rec: Any) -> str:
    """How a record is named in messages: ``images[3] (id 7)``, ``targets[0] (expression_id
    1, image_id 2)``, or ``section[i]`` when it has no usable id."""
    if isinstance(rec, dict):
        if section == "targets":
            return (f"targets[{i}] (expression_id {rec.get('expression_id')!r}, "
                    f"image_id {rec.get('image_id')!r})")
        if "id" in rec:
            return f"{section}[{i}] (id {rec['id']!r})"
    return f"{section}[{i}]"


def record_problems(section: str, i: int, rec: Any) -> Iterator[Finding]:
    """Schema findings (kind ``schema``) of record ``i`` of ``section``: missing keys, wrong types,
    id lists that are not integers, a segmentation that is not a compressed RLE; and sizes
    beyond grdkit's bounds (kind ``size_bound``, :func:`grdkit.io.limits.size_problem`, at most
    ``MAX_SIDE`` px a side), checked before any C code sees them."""
    if not isinstance(rec, dict):
        yield Finding("schema", "error", record_name(section, i, rec),
                      f"is a {type(rec).__name__}, not an object")
        return
    for key, typ in RECORD_FIELDS[section]:
        if key not in rec:
            yield Finding("schema", "error", record_name(section, i, rec),
                          f"missing key {key!r} (see the canonical format in docs/format.md)")
            continue
        v = rec[key]
        if not (isinstance(v, typ) and not (typ is int and isinstance(v, bool))):
            yield Finding("schema", "error", record_name(section, i, rec),
                          f"key {key!r} is {type(v).__name__}, expected {typ.__name__}")
        elif typ is list and not all(_is_int(x) for x in v):
            yield Finding("schema", "error", record_name(section, i, rec),
                          f"key {key!r} must be a list of integers")
        elif typ is list and section == "groups" and not v:
            yield Finding("schema", "error", record_name(section, i, rec),
                          f"key {key!r} is empty; a group has at least one")
        elif key in ("height", "width") and v < 1:
            yield Finding("schema", "error", record_name(section, i, rec),
                          f"key {key!r} is {v}; must be >= 1 (pixels)")
    if section == "images" and _is_int(rec.get("height")) and _is_int(rec.get("width")) \
            and rec["height"] >= 1 and rec["width"] >= 1:
        problem = size_problem(rec["height"], rec["width"])
        if problem:
            yield Finding("size_bound", "error", record_name(section, i, rec), problem)
    seg = rec.get("segmentation")
    if section == "targets" and isinstance(seg, dict) and not (
            isinstance(seg.get("size"), list) and len(seg["size"]) == 2
            and all(_is_int(x) and x >= 1 for x in seg["size"])
            and isinstance(seg.get("counts"), str)):
        yield Finding("schema", "error", record_name(section, i, rec),
                      "segmentation must be a compressed RLE {'size': [h, w], 'counts': str} "
                      "with h, w integers >= 1")
    elif section == "targets" and isinstance(seg, dict) and size_problem(*seg["size"]):
        yield Finding("size_bound", "error", record_name(section, i, rec),
                      f"segmentation {size_problem(*seg['size'])}")


def reference_problems(images: Iterable[tuple[int, int]],
                       expressions: Iterable[tuple[int, int, int]],
                       groups: Iterable[tuple[int, int, Iterable[int], Iterable[int]]],
                       targets: Iterable[tuple[int, int, int]]) -> Iterator[Finding]:
    """Findings about the references between records of one split.

    Args:
        images: ``(index, id)`` per image record.
        expressions: ``(index, id, group_id)`` per expression record.
        groups: ``(index, id, expression_ids, image_ids)`` per group record.
        targets: ``(index, expression_id, image_id)`` per target record.

    Yields, in this order: duplicate ids (``duplicate_id``); per expression, a group that does
    not exist (``dangling_reference``) or does not list it (``expression_group_mismatch``); per
    group, expressions or images that do not exist, expressions naming another group, images
    listed twice; per target, an image or expression that does not exist, a pair seen before
    (``duplicate_target``), a pair outside its expression's group (``extra_target``); last,
    pairs of a group without a target (``missing_target``). All are errors.
    """
    image_ids: set[int] = set()
    for i, iid in images:
        if iid in image_ids:
            yield Finding("duplicate_id", "error", f"images[{i}] (id {iid})",
                          f"duplicate id: {iid} is already used by an earlier image")
        image_ids.add(iid)
    expr_group: dict[int, int] = {}
    expressions = list(expressions)
    for i, eid, gid in expressions:
        if eid in expr_group:
            yield Finding("duplicate_id", "error", f"expressions[{i}] (id {eid})",
                          f"duplicate id: {eid} is already used by an earlier expression")
        else:
            expr_group[eid] = gid
    groups = list(groups)
    group_exprs: dict[int, set[int]] = {}
    for i, gid, eids, _ in groups:
        if gid in group_exprs:
            yield Finding("duplicate_id", "error", f"groups[{i}] (id {gid})",
                          f"duplicate id: {gid} is already used by an earlier group")
        else:
            group_exprs[gid] = set(eids)
    for _, eid, gid in expressions:
        if gid not in group_exprs:
            yield Finding("dangling_reference", "error", f"expression id {eid}",
                          f"group_id {gid} is not a group")
        elif eid not in group_exprs[gid]:
            yield Finding("expression_group_mismatch", "error", f"expression id {eid}",
                          f"names group {gid}, which does not list it")
    expected: dict[tuple[int, int], int] = {}
    for _, gid, eids, iids in groups:
        where = f"group id {gid}"
        for eid in eids:
            if eid not in expr_group:
                yield Finding("dangling_reference", "error", where,
                              f"lists missing expression {eid}")
            elif expr_group[eid] != gid:
                yield Finding("expression_group_mismatch", "error", where,
                              f"lists expression {eid}, which names group {expr_group[eid]}")
        iids = list(iids)
        for iid in iids:
            if iid not in image_ids:
                yield Finding("dangling_reference", "error", where, f"lists missing image {iid}")
        for dup in [k for k, c in Counter(iids).items() if c > 1]:
            yield Finding("duplicate_id", "error", where, f"lists image {dup} twice")
        for eid in eids:
            for iid in iids:
                expected.setdefault((eid, iid), gid)
    seen: dict[tuple[int, int], int] = {}
    for i, eid, iid in targets:
        key = (eid, iid)
        where = f"targets[{i}] (expression_id {eid}, image_id {iid})"
        if iid not in image_ids:
            yield Finding("dangling_reference", "error", where, f"image {iid} does not exist")
        if eid not in expr_group:
            yield Finding("dangling_reference", "error", where,
                          f"expression {eid} does not exist")
        if key in seen:
            yield Finding("duplicate_target", "error", where,
                          f"duplicate target pair (first at targets[{seen[key]}]); keep "
                          "exactly one target per (expression, image) pair")
            continue
        seen[key] = i
        if key not in expected and eid in expr_group and iid in image_ids:
            yield Finding("extra_target", "error", where,
                          "target outside its expression's group (the image is not in it)")
    for (eid, iid), gid in expected.items():
        if (eid, iid) not in seen and eid in expr_group and iid in image_ids:
            yield Finding("missing_target", "error", f"group id {gid}",
                          f"has no target for (expression_id {eid}, image_id {iid})")


def json_schema() -> dict:
    """The JSON Schema of a canonical split file (``format/schema/gres_dataset.schema.json``)."""
    import json
    from importlib import resources

    return json.loads(resources.files("grdkit.format").joinpath(
        "schema/gres_dataset.schema.json").read_text(encoding="utf-8"))
