"""GRD from the D³ tables: each group's sentences against the group's images.

Conversion (:func:`convert_d3`; the reader is :mod:`grdkit.sources.d3`):

* ``setting="intra"`` (GRD): each group's ``inner_sent_id`` sentences against every image of that
  group; ``"inter"``: one group, every selected sentence against every image.
* ``expressions="presence"`` (GRD) | ``"absence"`` | ``"all"`` selects sentences by
  ``is_negative``; D³'s own names ``pres`` | ``abs`` | ``full`` are accepted too
  (:data:`EXPRESSION_ALIASES`; shikras/d-cube ``eval_sota`` modes and JSON file names).
* Tables read from D³'s COCO JSON (:func:`grdkit.sources.d3.read_d3_json`) have groups only when
  ``groups.pkl`` was given with it, and may not know ``is_negative``: a setting that the input
  cannot honour (intra without groups, presence / absence without ``is_negative``) is an error,
  never a silent fallback.
* Canonical ids: images keep D³ ids; groups keep D³ group ids (``inter``: one group, id 1);
  expressions are numbered 1..N in (group, sentence id) order, because one D³ sentence listed in
  several groups becomes one expression per group; ``d3_sent_id`` keeps the D³ id.
* A target is positive with the union of that sentence's annotations on the image; D³ annotates
  every sentence on every image, so every other pair is a certified negative.
"""

from __future__ import annotations

from ..errors import InputError
from ..format import GresDataset
from ..sources.d3 import D3Data, as_list, d3_problems
from .assemble import AnnotationMasks, SplitAssembler

SETTINGS = ("intra", "inter")
EXPRESSION_SETS = ("presence", "absence", "all")
EXPRESSION_ALIASES = {"pres": "presence", "abs": "absence", "full": "all"}


def expression_set(name: str) -> str:
    """``presence`` | ``absence`` | ``all`` for one of those or D³'s ``pres`` | ``abs`` |
    ``full``; ``ValueError`` otherwise."""
    name = EXPRESSION_ALIASES.get(name, name)
    if name not in EXPRESSION_SETS:
        raise ValueError(f"expressions must be one of {EXPRESSION_SETS} or "
                         f"{tuple(EXPRESSION_ALIASES)}")
    return name


def default_expressions(data: D3Data) -> str:
    """GRD's ``presence`` for the pickles; for a COCO JSON the sentences the file holds
    (``presence`` / ``absence`` when all are of one kind, else ``all``)."""
    if not data.files:
        return "presence"
    kinds = {r["is_negative"] for r in data.sentences.values()}
    return {frozenset({False}): "presence", frozenset({True}): "absence"}.get(
        frozenset(kinds), "all")


def _selected(s: dict, expressions: str) -> bool:
    neg = bool(s["is_negative"])
    return expressions == "all" or (expressions == "absence") == neg


def convert_d3(data: D3Data, setting: str = "intra", expressions: str = "presence"
               ) -> GresDataset:
    """Convert D³ tables to one canonical split (``test``); see the module header.

    Raises:
        InputError: the first blocking problem of :func:`grdkit.sources.d3.d3_problems` (a
            reference that does not resolve, a segmentation that is not an RLE of its image's
            size), named by file and id.
        ValueError: unknown ``setting`` or ``expressions``.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}")
    expressions = expression_set(expressions)
    if setting == "intra" and not data.groups:
        raise InputError(data.path("groups.pkl"), "no D³ groups: the intra-group setting needs "
                         "groups.pkl (the COCO JSON does not record groups)",
                         hint="read the JSON together with the folder holding groups.pkl, or "
                              "build the inter-group setting")
    if expressions != "all":
        unknown = sorted(s for s, r in data.sentences.items() if r["is_negative"] is None)
        if unknown:
            raise InputError(data.path("sentences.pkl"), f"cannot select {expressions} "
                             "sentences: presence / absence is unknown for "
                             f"{len(unknown)} sentences", f"sentence id {unknown[0]}",
                             "select all sentences, or give the folder holding sentences.pkl "
                             "(is_negative)")
    for file, f, blocking in d3_problems(data):
        if blocking:
            raise InputError(data.path(file), f.message, f.record,
                             "run `grdkit validate` on the D³ folder to list every problem")
    by_pair: dict[tuple[int, int], list[int]] = {}
    for aid in sorted(data.annotations):
        a = data.annotations[aid]
        for sid in as_list(a["sent_id"]):
            by_pair.setdefault((int(sid), int(a["image_id"])), []).append(aid)
    if setting == "intra":
        plan = []
        for gid in sorted(data.groups):
            g = data.groups[gid]
            sids = sorted({int(s) for s in as_list(g["inner_sent_id"])
                           if _selected(data.sentences[s], expressions)})
            plan.append((gid, sids, sorted({int(i) for i in as_list(g["img_id"])})))
    else:
        sids = sorted(s for s, rec in data.sentences.items() if _selected(rec, expressions))
        plan = [(1, sids, sorted(data.images))]
    asm = SplitAssembler(AnnotationMasks(data.annotations, data.images,
                                         data.path("annotations.pkl")))
    n_expr = 0
    empty_groups = []  # groups with no selected sentence or no image: counted in the recipe
    for gid, sids, img_ids in plan:
        if not sids or not img_ids:
            empty_groups.append(gid)
            continue
        for iid in img_ids:
            im = data.images[iid]
            asm.add_image(iid, im["file_name"], im["height"], im["width"])
        exprs = []
        for sid in sids:
            n_expr += 1
            s = data.sentences[sid]
            exprs.append((n_expr, str(s["raw_sent"]),
                          {"d3_sent_id": sid, "is_negative": None if s["is_negative"] is None
                           else bool(s["is_negative"])}))
        extra = {}
        if setting == "intra" and "group_name" in data.groups[gid]:
            extra["name"] = str(data.groups[gid]["group_name"])
        asm.add_group(gid, exprs, img_ids, extra)
        for eid, _, e_extra in exprs:
            for iid in img_ids:
                asm.add_target(eid, iid, by_pair.get((e_extra["d3_sent_id"], iid), ()))
    source = "D³ COCO JSON" if data.files else "D³ pickles"
    return asm.dataset("grd", "test",
                       {"source": source, "setting": setting, "expressions": expressions,
                        "groups_without_expressions": len(empty_groups)},
                       data.sources)
