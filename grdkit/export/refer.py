"""Export canonical datasets to the formats the field's codebases read: the refer toolkit's
layout (``refs(<splitBy>).p`` + ``instances.json``; lichengunc/refer ``refer.py``, read by LAVT,
CRIS, MCN) and gRefCOCO's (``grefs(<splitBy>).json`` + ``instances.json``; henghuiding/ReLA
``gres_model/data/datasets/grefer.py`` and ``grefcoco.py``, read by ReLA and MABP).

What the owners' loaders read, and so what is written (sources read at lichengunc/refer @
e3bbaa30 and henghuiding/ReLA @ 3ca95519):

* ``instances.json``: COCO ``images`` (``id``, ``file_name``, ``height``, ``width``),
  ``annotations`` (``id``, ``image_id``, ``category_id``, ``iscrowd`` 0, ``area``, ``bbox``,
  ``segmentation``), ``categories``. The segmentation is written as **one polygon** with
  corners on pixel boundaries that pycocotools rasterises back to exactly the same mask
  (:func:`mask_polygons`, tested). A polygon because every reader takes one: ``REFER.getMask`` and ``G_REFER.getMask`` index
  ``segmentation[0]`` (a dict RLE fails there), ReLA's mapper rasterises polygons only
  (``convert_coco_poly_to_mask``), and pycocotools' ``annToMask`` reads them.
* refs: ``ref_id``, ``image_id``, ``ann_id`` (refer: one int; gRefCOCO: a list, ``[-1]`` for
  no target, with ``no_target``), ``category_id``, ``split``, ``sentences`` (``sent_id``,
  ``sent``, ``raw``, ``tokens``). Sentences of one ref are expressions of one group sharing
  ``extra["ref_id"]`` on one image with the same referent (what the refer and gRefCOCO builders
  keep); any other positive (expression, image) pair is a ref of its own. Ids kept from
  ``extra`` (``ref_id``, ``sent_id``) where they are unique, new ones (after the largest)
  otherwise. The canonical format keeps no category: every ref and annotation has category 1
  (``object``).

Annotations: the canonical format keeps each target's union mask and its ``ann_ids``, not each
annotation's own mask. An annotation id is written with the intersection of the masks of every
target that names it (the largest mask consistent with all of them); when the union of those
masks gives back every target that names them, the original ids are kept (so ``grdkit build`` of
the export gives the same ``ann_ids``); otherwise, and for targets without ``ann_ids``, the
target's mask is a new annotation (id after the largest) and the ref keeps the original list in
``grdkit_ann_ids``. The refer layout has one annotation per ref: a target of several annotations
gets a new union annotation there.

What the refer layout cannot represent is kept in documented extra keys and counted (never
dropped silently): ``instances.json["grdkit"]`` holds ``negatives`` (``[split, expression_id,
image_id]`` of every no-target pair; gRefCOCO writes them as no-target refs instead),
``groups`` (``{split, id, expression_ids, image_ids}``) and ``unreferenced_expressions`` (an
expression without a positive pair, which no refer ref can carry); every sentence has
``grdkit_expression_id``. Both files are committed together (:class:`grdkit.io.Commit`), and the
same dataset always gives the same bytes.
"""

from __future__ import annotations

import itertools
import json
import pickle
from pathlib import Path

from ..errors import InputError
from ..format import GresDataset, masks
from ..io import Commit

CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def mask_rectangles(rle: dict) -> list[tuple[int, int, int, int]]:
    """The mask as rectangles ``(x0, y0, x1, y1)`` (pixel boundaries, x1 / y1 exclusive): one
    per run of foreground pixels in a row, runs of the same columns in consecutive rows
    merged; sorted by (y0, x0)."""
    m = masks.decode(rle)
    out, open_runs = [], {}  # (x0, x1) -> first row of the rectangle still growing
    h = m.shape[0]
    for y in range(h + 1):
        runs = set()
        if y < h:
            row = m[y]
            edges = (row[1:] != row[:-1]).nonzero()[0] + 1
            bounds = [0, *edges.tolist(), row.size]
            runs = {(a, b) for a, b in itertools.pairwise(bounds) if row[a]}
        for run in sorted(set(open_runs) - runs):
            out.append((run[0], open_runs.pop(run), run[1], y))
        for run in runs - set(open_runs):
            open_runs[run] = y
    return sorted(out, key=lambda r: (r[1], r[0]))


def mask_polygons(rle: dict) -> list[list[float]]:
    """A mask as ONE COCO polygon that pycocotools rasterises back to exactly ``rle`` (tested on
    random and blob masks up to 480 x 640). Own code (no library writes exact polygons: contour
    tracers go through pixel centres): from the bounding box's top-left corner ``(ax, ay)``, for
    each rectangle of :func:`mask_rectangles` the path goes down to its top row, right to its
    corner, around it, and back the same way. pycocotools' ``rleFrPoly`` fills by column crossings
    of the non-vertical edges, even-odd: a connector walked there and back crosses every column
    twice and cancels, a vertical edge crosses none, so only the rectangles remain. One polygon,
    not one per rectangle: the refer toolkit's ``getMask`` sums ``mask.area`` over the parts,
    which pycocotools refuses beyond 255 parts under numpy 2; and every point lies in the mask's
    bounding box (detectron2 takes boxes from polygon points). An empty mask gives ``[]``."""
    rects = mask_rectangles(rle)
    if not rects:
        return []
    ax, ay = min(r[0] for r in rects), rects[0][1]
    pts = [ax, ay]
    for x0, y0, x1, y1 in rects:
        pts += [ax, y0, x0, y0, x1, y0, x1, y1, x0, y1, x0, y0, ax, y0, ax, ay]
    return [[float(v) for v in pts]]


def _images(splits: dict[str, GresDataset]) -> list[dict]:
    seen: dict[int, dict] = {}
    for split, ds in splits.items():
        for im in ds.images:
            rec = {**im.extra, "id": im.id, "file_name": im.file_name, "height": im.height,
                   "width": im.width}
            old = seen.setdefault(im.id, rec)
            if (old["file_name"], old["height"], old["width"]) != \
                    (im.file_name, im.height, im.width):
                raise InputError(ds.path, "image id is another image in another split",
                                 f"image id {im.id} (split {split})",
                                 "export splits that agree on their images")
    return [seen[k] for k in sorted(seen)]


class _Annotations:
    """Annotation masks and ids (module header, "Annotations")."""

    def __init__(self, splits: dict[str, GresDataset], one_per_ref: bool):
        self.masks: dict[int, dict] = {}
        self.image: dict[int, int] = {}
        pos = [t for ds in splits.values() for t in ds.targets if t.positive]
        named: dict[int, list] = {}
        for t in pos:
            for a in t.ann_ids:
                named.setdefault(a, []).append(t)
        bad = set()
        for a, ts in named.items():
            if len({t.image_id for t in ts}) > 1:
                bad.add(a)  # one id on several images: not one COCO annotation
                continue
            m = ts[0].segmentation
            for t in ts[1:]:
                m = masks.intersection(m, t.segmentation)
            if masks.area(m) == 0:
                bad.add(a)
            self.masks[a], self.image[a] = m, ts[0].image_id
        for t in pos:  # the kept masks must give back every target that names them
            if t.ann_ids and not bad & set(t.ann_ids):
                u = masks.union([self.masks[a] for a in t.ann_ids])
                if u["counts"] != t.segmentation["counts"]:
                    bad |= set(t.ann_ids)
        for a in bad:
            self.masks.pop(a, None)
            self.image.pop(a, None)
        self.next_id = max([0, *named]) + 1
        self.one_per_ref = one_per_ref
        self.synthetic: dict[tuple[int, str], int] = {}
        self.kept = len(self.masks)

    def of(self, t) -> tuple[list[int], bool]:
        """The annotation ids a ref of target ``t`` names, and whether they are new."""
        ids = list(t.ann_ids)
        if ids and all(a in self.masks for a in ids) and (len(ids) == 1 or not self.one_per_ref):
            return ids, False
        key = (t.image_id, t.segmentation["counts"])
        if key not in self.synthetic:
            self.synthetic[key] = self.next_id
            self.masks[self.next_id], self.image[self.next_id] = t.segmentation, t.image_id
            self.next_id += 1
        return [self.synthetic[key]], True

    def records(self, used: set[int]) -> list[dict]:
        out = []
        for a in sorted(used):
            rle = self.masks[a]
            out.append({"id": a, "image_id": self.image[a], "category_id": CATEGORY["id"],
                        "iscrowd": 0, "area": masks.area(rle),
                        "bbox": [float(v) for v in masks.bbox(rle)],
                        "segmentation": mask_polygons(rle)})
        return out


class _Ids:
    """Ids kept from ``extra`` when unique, new ones after the largest otherwise."""

    def __init__(self, wanted):
        self.used: set[int] = set()
        self.next = max([0, *(w for w in wanted if isinstance(w, int))]) + 1

    def take(self, want) -> int:
        if isinstance(want, int) and not isinstance(want, bool) and want not in self.used:
            self.used.add(want)
            return want
        while self.next in self.used:
            self.next += 1
        self.used.add(self.next)
        return self.next


def _sentence(text: str, sid: int, eid: int) -> dict:
    tokens = text.lower().split()
    return {"tokens": tokens, "raw": text, "sent_id": sid, "sent": " ".join(tokens),
            "grdkit_expression_id": eid}


def build_refs(splits: dict[str, GresDataset], grefs: bool) -> tuple[list, dict, dict]:
    """The refs, ``instances.json`` and the summary of an export (module header).

    Args:
        splits: ``{split: GresDataset}``, in the order refs are written.
        grefs: gRefCOCO's layout (``ann_id`` lists, no-target refs) instead of refer's.

    Returns:
        ``(refs, instances, summary)``; summary counts ``refs``, ``no_target_refs``,
        ``sentences``, ``annotations``, ``annotations_kept`` (original ids),
        ``annotations_new``, ``negatives_in_extra``, ``groups_in_extra``,
        ``unreferenced_expressions``.

    Raises:
        InputError: an incomplete split, or two splits disagreeing on an image.
    """
    for ds in splits.values():
        ds.require_complete()
    anns = _Annotations(splits, one_per_ref=not grefs)
    units: dict[tuple, dict] = {}  # one ref per unit, in (split, image, ref_id, order) order
    negatives, unreferenced, groups = [], [], []
    for split, ds in splits.items():
        for g in ds.groups:
            groups.append({"split": split, "id": g.id, "expression_ids": list(g.expression_ids),
                           "image_ids": list(g.image_ids)})
        for e in ds.expressions:
            ts = [ds.target(e.id, i) for i in ds.group(e.group_id).image_ids]
            if not any(t.positive for t in ts):
                unreferenced.append([split, e.id])
            for t in ts:
                if not t.positive and not grefs:
                    negatives.append([split, e.id, t.image_id])
                    continue
                ref = e.extra.get("ref_id")
                who = ("ref", ref) if ref is not None else ("expression", e.id)
                key = (split, t.image_id, who, t.positive, t.segmentation["counts"],
                       tuple(t.ann_ids))
                u = units.setdefault(key, {"split": split, "t": t, "ref_id": ref,
                                           "exprs": []})
                u["exprs"].append(e)
    ref_ids = _Ids(u["ref_id"] for u in units.values())
    sent_ids = _Ids(e.extra.get("sent_id") for u in units.values() for e in u["exprs"])
    refs, used = [], set()
    for u in units.values():
        t = u["t"]
        rec = {"ref_id": ref_ids.take(u["ref_id"]), "image_id": t.image_id,
               "split": u["split"],
               "sentences": [_sentence(e.text, sent_ids.take(e.extra.get("sent_id")), e.id)
                             for e in u["exprs"]]}
        if t.positive:
            ids, fresh = anns.of(t)
            used |= set(ids)
            if fresh:
                rec["grdkit_ann_ids"] = list(t.ann_ids)
            rec["ann_id"] = ids if grefs else ids[0]
            rec["category_id"] = [CATEGORY["id"]] if grefs else CATEGORY["id"]
        else:
            rec["ann_id"], rec["category_id"] = [-1], []
        if grefs:
            rec["no_target"] = not t.positive
        rec["sent_ids"] = [s["sent_id"] for s in rec["sentences"]]
        refs.append(rec)
    refs.sort(key=lambda r: (list(splits).index(r["split"]), r["image_id"], r["ref_id"]))
    kept = len(used - set(anns.synthetic.values()))
    instances = {"images": _images(splits), "annotations": anns.records(used),
                 "categories": [CATEGORY],
                 "grdkit": {"negatives": negatives, "groups": groups,
                            "unreferenced_expressions": unreferenced}}
    summary = {"refs": len(refs), "no_target_refs": sum(r["ann_id"] == [-1] for r in refs),
               "sentences": sum(len(r["sentences"]) for r in refs),
               "annotations": len(used), "annotations_kept": kept,
               "annotations_new": len(used) - kept, "negatives_in_extra": len(negatives),
               "groups_in_extra": len(groups), "unreferenced_expressions": len(unreferenced)}
    return refs, instances, summary


def export_refer(splits: dict[str, GresDataset], out_dir: str | Path, split_by: str = "umd"
                 ) -> dict:
    """Write ``refs(<split_by>).p`` (pickle protocol 2, as the released files) and
    ``instances.json`` in ``out_dir``; returns the summary of :func:`build_refs`."""
    refs, instances, summary = build_refs(splits, grefs=False)
    out = Path(out_dir)
    with Commit() as c:
        c.write_bytes(out / f"refs({split_by}).p", pickle.dumps(refs, protocol=2))
        c.write_text(out / "instances.json", json.dumps(instances, separators=(",", ":")))
    return summary


def export_grefcoco(splits: dict[str, GresDataset], out_dir: str | Path, split_by: str = "unc"
                    ) -> dict:
    """Write ``grefs(<split_by>).json`` and ``instances.json`` in ``out_dir`` (negatives as
    no-target refs: ``ann_id`` ``[-1]``, ``no_target`` true); summary of :func:`build_refs`."""
    refs, instances, summary = build_refs(splits, grefs=True)
    out = Path(out_dir)
    with Commit() as c:
        c.write_text(out / f"grefs({split_by}).json", json.dumps(refs, separators=(",", ":")))
        c.write_text(out / "instances.json", json.dumps(instances, separators=(",", ":")))
    return summary


__all__ = ["build_refs", "export_grefcoco", "export_refer", "mask_polygons", "mask_rectangles"]
