"""gRefCOCO (ReLA, Liu et al., "GRES: Generalized Referring Expression Segmentation", CVPR 2023)
as a GRES benchmark: one group per image, every sentence of every ref on it an expression.

This is the data generalized-RES papers report gIoU / cIoU / N-acc / T-acc on. Rules, following
ReLA's own loader (henghuiding/ReLA ``gres_model/data/datasets/grefcoco.py`` and ``grefer.py``):

* one group per (split, image); group id = COCO image id; its expressions are the sentences of
  the split's refs on that image, numbered 1..N per split in (image id, ref_id, sentence) order,
  text = the sentence's ``raw``; ``sent_id``, ``ref_id`` and ``no_target`` are kept on each;
* one target per (expression, image): a ref is no-target when ``ann_id`` is ``[-1]`` (checked
  against the ref's ``no_target`` flag by :mod:`grdkit.sources.refer`) -> negative, empty RLE;
  otherwise positive with the union of the referred **non-crowd** annotations (ReLA's loader
  skips ``iscrowd`` ones: ``if anno_dict['iscrowd']: continue``); ``ann_id`` may be an int or a
  list;
* skipped and counted (report and data card), never silently: refs without sentences, and refs
  whose referred annotations are all crowd (ReLA would keep such a ref as "targeted" with an
  empty mask, which no GRES target can be), and whitespace-only sentences.

There is no sampling: the output depends on the input only.
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

NAME = "grefcoco"


@dataclass
class GrefcocoReport:
    """What the build did, per split: refs read, expressions by kind, refs skipped."""

    splits: dict[str, dict] = field(default_factory=dict)

    def notes(self) -> dict[str, str]:
        """One sentence per split for the data card."""
        return {split: (f"Build: {rp['refs']} refs on {rp['groups']} images; "
                        f"{rp['expressions']} expressions ({rp['no_target_expressions']} "
                        f"no-target, {rp['multi_target_expressions']} multi-target); skipped: "
                        f"{rp['refs_without_sentences']} refs without sentences, "
                        f"{rp['crowd_only_refs']} refs whose referents are all crowd, "
                        f"{rp['empty_sentences']} empty sentences.")
                for split, rp in self.splits.items()}


def build_from_grefs(data: ReferData, progress: Progress | None = None
                     ) -> tuple[dict[str, GresDataset], GrefcocoReport]:
    """Apply the rules of the module header to loaded gRefCOCO data.

    Returns:
        (datasets keyed by split in the registry's split order, report).

    Raises:
        InputError: a ref whose image or annotation does not resolve, or an invalid segmentation
            (file and record named).
    """
    for ref_id, msg in ref_problems(data.refs, data.images, data.annotations):
        raise InputError(data.refs_path, msg, f"ref_id {ref_id}",
                         "use the instances.json of gRefCOCO")
    by_split: dict[str, list] = {}
    for r in data.refs:
        by_split.setdefault(r.split, []).append(r)
    masks = AnnotationMasks(data.annotations, data.images, data.instances_path)
    recipe = {"source": "grefcoco", "split_by": data.refs_path.stem.split("(")[-1].rstrip(")"),
              "rule": "one group per image; every sentence an expression; union of non-crowd "
                      "referents; ReLA gres_model/data/datasets/grefcoco.py"}
    out: dict[str, GresDataset] = {}
    report = GrefcocoReport()
    for split in split_order(by_split, dataset_spec(NAME)):
        refs = sorted(by_split[split], key=lambda r: (r.image_id, r.ref_id))
        rp = {"refs": len(refs), "groups": 0, "expressions": 0, "no_target_expressions": 0,
              "multi_target_expressions": 0, "refs_without_sentences": 0, "crowd_only_refs": 0,
              "empty_sentences": 0}
        per_image: dict[int, list] = {}
        for r in refs:
            if not r.sentences:
                rp["refs_without_sentences"] += 1
                continue
            anns = [a for a in r.ann_ids if not data.annotations[a].get("iscrowd", 0)]
            if r.ann_ids and not anns:
                rp["crowd_only_refs"] += 1
                continue
            per_image.setdefault(r.image_id, []).append((r, tuple(anns)))
        asm = SplitAssembler(masks)
        eid = 0
        for img, items in tracked(progress, list(per_image.items()), f"{NAME} {split}",
                                  len(per_image)):
            exprs, targets = [], []
            for r, anns in items:
                for s in r.sentences:
                    text = " ".join(s.raw.split())
                    if not text:
                        rp["empty_sentences"] += 1
                        continue
                    eid += 1
                    exprs.append((eid, text, {"sent_id": s.sent_id, "ref_id": r.ref_id,
                                              "no_target": r.no_target}))
                    targets.append((eid, anns))
                    rp["no_target_expressions"] += r.no_target
                    rp["multi_target_expressions"] += len(anns) > 1
            if not exprs:
                continue
            asm.add_image_group(img, data.images[img], exprs, targets)
        rp["groups"] = len(asm.groups)
        rp["expressions"] = eid
        out[split] = asm.dataset(NAME, split, recipe, data.sources)
        report.splits[split] = rp
    return out, report


def build_grefcoco(refer_root: str | Path, split_by: str | None = None,
                   progress: Progress | None = None
                   ) -> tuple[dict[str, GresDataset], GrefcocoReport]:
    """Read a gRefCOCO folder (``grefs(unc).json`` or ``grefs(unc).p``, ``instances.json``) and
    build the benchmark (module header).

    Raises:
        InputError: bad input files (named file and record) or an unknown ``split_by``.
    """
    split_by = dataset_spec(NAME).check_split_by(split_by)
    return build_from_grefs(read_refer(refer_root, split_by, grefs=True, folder="grefcoco"), progress)
