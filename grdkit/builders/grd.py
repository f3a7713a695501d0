"""GRD from the D³ tables: each group's sentences against the group's images.

Conversion (:func:`convert_d3`; the reader is :mod:`grdkit.sources.d3`):

* ``setting="intra"`` (GRD): each group's ``inner_sent_id`` sentences against every image of that
  group; ``"inter"``: one group, every selected sentence against every image.
* ``expressions="presence"`` (GRD) | ``"absence"`` | ``"all"`` selects sentences by
  ``is_negative``.
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
    if expressions not in EXPRESSION_SETS:
        raise ValueError(f"expressions must be one of {EXPRESSION_SETS}")
    for file, f, blocking in d3_problems(data, integrity=False):
        if blocking:
            raise InputError(data.root / file, f.message, f.record,
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
                                         data.root / "annotations.pkl"))
    n_expr = 0
    for gid, sids, img_ids in plan:
        if not sids or not img_ids:
            continue
        for iid in img_ids:
            im = data.images[iid]
            asm.add_image(iid, im["file_name"], im["height"], im["width"])
        exprs = []
        for sid in sids:
            n_expr += 1
            s = data.sentences[sid]
            exprs.append((n_expr, str(s["raw_sent"]),
                          {"d3_sent_id": sid, "is_negative": bool(s["is_negative"])}))
        extra = {}
        if setting == "intra" and "group_name" in data.groups[gid]:
            extra["name"] = str(data.groups[gid]["group_name"])
        asm.add_group(gid, exprs, img_ids, extra)
        for eid, _, e_extra in exprs:
            for iid in img_ids:
                asm.add_target(eid, iid, by_pair.get((e_extra["d3_sent_id"], iid), ()))
    return asm.dataset("grd", "test",
                       {"source": "D³ pickles", "setting": setting, "expressions": expressions},
                       data.sources)
