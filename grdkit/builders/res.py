"""The classic single-image RES benchmarks RefCOCO, RefCOCO+ and RefCOCOg, in the canonical format.

The unit these benchmarks count is one *sample* per (ref, sentence): LTS §4.1 gives RefCOCO
120,624 / 10,834 / 5,657 / 5,095 and RefCOCO+ 120,191 / 10,758 / 5,726 / 4,889 samples for
train / val / testA / testB (``unc``), the number of sentences of each split's refs. Rules:

* one group per (split, image): group id = COCO image id, its only image that image;
* one expression per sentence of every ref on the image, numbered 1..N per split in
  (image id, ref_id, sentence) order; text = the sentence's ``raw`` with whitespace collapsed
  (``sent`` when a record has no ``raw``); ``sent_id`` and ``ref_id`` are kept on each;
* one positive target per expression: the union of the ref's referred annotations on that image,
  **crowd included**, as the refer toolkit's ``REFER.getMask`` (lichengunc/refer ``refer.py``) and
  the loaders built on it (MCN ``data/data_process.py``, LAVT) rasterise the ref's annotation;
* no negatives, nothing sampled: the output depends on the input only (byte-deterministic).

Fail-closed: a refs file of gRefCOCO (``grefs``), a no-target ref, a ref whose image or
annotation does not resolve, a split the partition does not have (:mod:`grdkit.registry`), or an
annotation that rasterises to nothing is an :class:`~grdkit.errors.InputError` naming file and
record. Whitespace-only sentences are skipped and counted (report and data card).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..format import GresDataset
from ..progress import Progress, tracked
from ..registry import dataset_spec, split_order
from ..sources.refer import ReferData, read_refer, ref_problems
from .assemble import AnnotationMasks, SplitAssembler

RULE = ("classic RES: one sample per (ref, sentence), one group per image, target = union of the "
        "ref's annotations (crowd included, refer getMask); grdkit.builders.res")


@dataclass
class ResReport:
    """What the build did, per split: refs, images, samples, multi-annotation refs, skipped."""

    splits: dict[str, dict] = field(default_factory=dict)

    def notes(self) -> dict[str, str]:
        """One sentence per split for the data card."""
        return {split: (f"Build: {rp['refs']} refs on {rp['images']} images; {rp['expressions']} "
                        f"samples (one per sentence); {rp['crowd_targets']} targets with a crowd "
                        f"annotation; skipped: {rp['empty_sentences']} empty sentences.")
                for split, rp in self.splits.items()}


def build_res_from_refer(name: str, data: ReferData, split_by: str,
                         progress: Progress | None = None
                         ) -> tuple[dict[str, GresDataset], ResReport]:
    """Apply the rules of the module header to loaded refer data.

    Args:
        name: ``refcoco``, ``refcoco+`` or ``refcocog`` (:data:`grdkit.registry.DATASETS`).
        data: from :func:`grdkit.sources.refer.read_refer`.
        split_by: the partition ``data`` was read from (recorded in the recipe).

    Returns:
        (datasets keyed by split in the registry's split order, report).

    Raises:
        InputError: see the module header.
    """
    spec = dataset_spec(name)
    if data.refs_path.name.startswith("grefs("):
        raise InputError(data.refs_path, f"is a gRefCOCO file, not the {spec.source} refs",
                         hint="build it with `grdkit build grefcoco`, or point at the folder "
                              f"with refs({split_by}).p")
    for ref_id, msg in ref_problems(data.refs, data.images, data.annotations):
        raise InputError(data.refs_path, msg, f"ref_id {ref_id}",
                         f"use the instances.json of {spec.source}")
    allowed = spec.splits_of(split_by)
    by_split: dict[str, list] = {}
    for r in data.refs:
        if r.no_target:
            raise InputError(data.refs_path, "refers to no annotation", f"ref_id {r.ref_id}",
                             "classic RES refs refer to one object each")
        if r.split not in allowed:
            raise InputError(data.refs_path, f"split {r.split!r} is not a split of "
                             f"{spec.source} ({split_by}): {', '.join(allowed)}",
                             f"ref_id {r.ref_id}", f"pass the refs file of {spec.source}")
        by_split.setdefault(r.split, []).append(r)
    masks = AnnotationMasks(data.annotations, data.images, data.instances_path)
    recipe = {"source": spec.source.lower(), "split_by": split_by, "rule": RULE}
    out: dict[str, GresDataset] = {}
    report = ResReport()
    for split in split_order(by_split, spec):
        refs = sorted(by_split[split], key=lambda r: (r.image_id, r.ref_id))
        rp = {"refs": len(refs), "images": 0, "expressions": 0, "crowd_targets": 0,
              "empty_sentences": 0}
        per_image: dict[int, list] = {}
        for r in refs:
            per_image.setdefault(r.image_id, []).append(r)
        asm = SplitAssembler(masks)
        eid = 0
        for img, items in tracked(progress, list(per_image.items()), f"{name} {split}",
                                  len(per_image)):
            exprs, targets = [], []
            for r in items:
                crowd = any(data.annotations[a].get("iscrowd", 0) for a in r.ann_ids)
                for s in r.sentences:
                    text = " ".join((s.raw or s.sent).split())
                    if not text:
                        rp["empty_sentences"] += 1
                        continue
                    eid += 1
                    exprs.append((eid, text, {"sent_id": s.sent_id, "ref_id": r.ref_id}))
                    targets.append((eid, r.ann_ids))
                    rp["crowd_targets"] += crowd
            if not exprs:
                continue
            asm.add_image_group(img, data.images[img], exprs, targets)
        rp["images"] = len(asm.groups)
        rp["expressions"] = eid
        out[split] = asm.dataset(name, split, recipe, data.sources)
        report.splits[split] = rp
    return out, report


def build_res(name: str, refer_root: str | Path, split_by: str | None = None,
              progress: Progress | None = None) -> tuple[dict[str, GresDataset], ResReport]:
    """Read a refer folder (``refs(<splitBy>).p`` and ``instances.json``) and build the RES
    benchmark ``name`` (module header); ``split_by`` defaults to the registry's (``unc`` for
    RefCOCO / RefCOCO+, ``umd`` for RefCOCOg).

    Raises:
        InputError: bad input files (named file and record) or a ``split_by`` the dataset
            does not have.
        ValueError: ``name`` is not a RES benchmark of the registry.
    """
    spec = dataset_spec(name)
    if spec.builder != "res":
        raise ValueError(f"{name} is not a classic RES benchmark")
    split_by = spec.check_split_by(split_by)
    return build_res_from_refer(name, read_refer(refer_root, split_by, folder=spec.source.lower()), split_by, progress)
