"""Builders of G-RefC, G-RefC+ and G-RefCg: refer datasets regrouped as "one sentence vs. a group".

Recipe (GRES paper: Wu et al., "Advancing Referring Expression Segmentation Beyond Single Image",
ICCV 2023, §5.1): "we reconstruct these datasets to the form of one sentence vs. a group of
referred images ... with randomly sampled negative samples from other groups ... positive to
negative sample ratio of 1:1". The paper does not publish its exact rule; ours, applied to each
split independently, is:

1. Normalise every sentence of every ref (refer ``sent`` field, lower-cased, whitespace collapsed).
   A *group* is one normalised sentence; its *positive images* are every image of the split where
   a ref carries that sentence; on each, the referent is the union of those refs' annotations.
2. Keep groups with at least ``min_images`` distinct positive images (dropped ones are counted).
3. Draw ``floor(neg_ratio * positives + 0.5)`` *negative images* without replacement from the
   images of the other refs of the same split, never an image where the sentence refers to
   something. ``negatives="category-disjoint"`` also excludes every image holding a non-crowd COCO
   instance of a referent's category (COCO labels every instance of its 80 categories, so those
   negatives are certified at category level; ``random`` follows the paper). A group whose pool is
   too small gets fewer negatives, and the shortfall is reported, never hidden.
4. Each group's images are listed in ascending id order (positives and negatives interleaved, so
   order does not leak labels). Group and expression ids are 1-based, in order of sentence text.

Sampling uses ``numpy.random.default_rng([seed, crc32(split), crc32(sentence)])`` per group, so the
negatives of a group do not change when other groups are added or removed, and the same inputs and
seed give byte-identical files.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Container
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..format import GresDataset
from ..progress import Progress, tracked
from ..registry import dataset_spec, split_order
from ..sources.refer import ReferData, read_refer, ref_problems
from .assemble import AnnotationMasks, SplitAssembler
from .grefcoco import build_grefcoco
from .res import build_res

NEGATIVE_MODES = ("random", "category-disjoint")


def normalise_sentence(text: str) -> str:
    """Lower-case and collapse whitespace: the key that groups repeated sentences."""
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class BuildOptions:
    """Options of a build; stored verbatim as ``info.recipe`` in every split file.

    Attributes:
        name: a refer-based dataset of :data:`grdkit.registry.DATASETS`.
        split_by: refer partition (``unc``, ``umd``, ``google``); default per dataset.
        min_images: minimum distinct positive images per group (>= 1).
        neg_ratio: negatives per positive image (>= 0); 1.0 is the paper's 1:1.
        negatives: ``random`` (paper) or ``category-disjoint`` (certified per COCO category).
        seed: sampling seed (int >= 0).
    """

    name: str
    split_by: str
    min_images: int = 2
    neg_ratio: float = 1.0
    negatives: str = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        spec = dataset_spec(self.name)
        if spec.builder != "regroup":
            raise ValueError(f"{self.name} is not built by the G-RefC regrouping recipe")
        spec.check_split_by(self.split_by)
        if self.min_images < 1:
            raise ValueError("min_images must be >= 1")
        if not (self.neg_ratio >= 0 and math.isfinite(self.neg_ratio)):
            raise ValueError("neg_ratio must be a finite number >= 0")
        if self.negatives not in NEGATIVE_MODES:
            raise ValueError(f"negatives must be one of {NEGATIVE_MODES}")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")

    def recipe(self) -> dict:
        d = asdict(self)
        d.pop("name")
        d["source"] = dataset_spec(self.name).source.lower()
        d["rule"] = "GRES ICCV 2023 §5.1, grdkit rule v1 (see grdkit.builders.refer)"
        return d


@dataclass
class BuildReport:
    """What a build did, per split: kept / dropped groups and negative shortfalls."""

    splits: dict[str, dict] = field(default_factory=dict)

    def notes(self) -> dict[str, str]:
        """One sentence per split for the data card: what the build kept, dropped, ignored."""
        return {split: (f"Build: {rp['refs']} refs, {rp['sentences']} distinct sentences, "
                        f"{rp['dropped_groups']} groups dropped (< min_images), "
                        f"{rp['negative_shortfall_groups']} groups short of "
                        f"{rp['negative_shortfall_images']} negatives, "
                        f"{rp['no_target_refs']} no-target refs and {rp['empty_sentences']} "
                        "empty sentences ignored.")
                for split, rp in self.splits.items()}


def _sample_negatives(rng: np.random.Generator, pool: np.ndarray, k: int,
                      *excluded_sets: Container[int]) -> list[int]:
    """Draw up to ``k`` distinct images from ``pool`` (sorted int64) in none of ``excluded_sets``.

    Rejection sampling keeps a draw O(k) on a large pool; when the pool is mostly excluded it
    falls back to an explicit candidate list (both branches deterministic for a given rng state).
    Own code rather than ``rng.choice(pool)``: that permutes the whole pool for every group.
    """
    def excluded(img: int) -> bool:
        return any(img in ex for ex in excluded_sets)

    if k <= 0 or pool.size == 0:
        return []
    chosen: dict[int, None] = {}
    for _ in range(8):
        need = k - len(chosen)
        if need <= 0:
            break
        for j in rng.integers(0, pool.size, size=2 * need + 8):
            img = int(pool[j])
            if img not in chosen and not excluded(img):
                chosen[img] = None
                if len(chosen) == k:
                    break
    if len(chosen) < k:
        cands = [int(x) for x in pool if int(x) not in chosen and not excluded(int(x))]
        extra = rng.choice(len(cands), size=min(k - len(chosen), len(cands)), replace=False) \
            if cands else []
        for j in sorted(int(x) for x in extra):
            chosen[cands[j]] = None
    return list(chosen)


def _check_refs(data: ReferData) -> None:
    """Raise at the first ref whose image or annotation does not resolve."""
    for ref_id, msg in ref_problems(data.refs, data.images, data.annotations):
        raise InputError(data.refs_path, msg, f"ref_id {ref_id}",
                         "use the instances.json of this refer dataset")


def build_from_refer(data: ReferData, options: BuildOptions, progress: Progress | None = None
                     ) -> tuple[dict[str, GresDataset], BuildReport]:
    """Apply the recipe (module header) to loaded refer data.

    Args:
        data: from :func:`grdkit.sources.refer.read_refer`.
        options: the recipe options.
        progress: optional progress callback (:mod:`grdkit.progress`).

    Returns:
        (datasets keyed by split in canonical split order, report).

    Raises:
        InputError: a ref whose image or annotation is missing, or an invalid segmentation.
    """
    _check_refs(data)
    cat_images: dict[int, set[int]] = {}
    if options.negatives == "category-disjoint":
        for a in data.annotations.values():
            if not a.get("iscrowd", 0):
                cat_images.setdefault(a["category_id"], set()).add(a["image_id"])
    by_split: dict[str, list] = {}
    for r in data.refs:
        by_split.setdefault(r.split, []).append(r)
    recipe = options.recipe()
    ann_masks = AnnotationMasks(data.annotations, data.images, data.instances_path)
    out: dict[str, GresDataset] = {}
    report = BuildReport()
    for split in split_order(by_split, dataset_spec(options.name)):
        refs = by_split[split]
        # sentence -> image -> {ann ids}; plus provenance
        sent_images: dict[str, dict[int, set[int]]] = {}
        sent_ids: dict[str, list[int]] = {}
        ref_ids: dict[str, list[int]] = {}
        no_target = empty = 0
        for r in refs:
            if r.no_target:  # gRefCOCO no-target refs refer to nothing: counted, not grouped
                no_target += 1
                continue
            seen = set()
            for s in r.sentences:
                key = normalise_sentence(s.sent)
                if not key:  # whitespace-only sentence: counted in the report, not grouped
                    empty += 1
                    continue
                sent_ids.setdefault(key, []).append(s.sent_id)
                if key in seen:
                    continue
                seen.add(key)
                sent_images.setdefault(key, {}).setdefault(r.image_id, set()).update(r.ann_ids)
                ref_ids.setdefault(key, []).append(r.ref_id)
        keys = sorted(k for k, v in sent_images.items() if len(v) >= options.min_images)
        pool = np.array(sorted({r.image_id for r in refs}), dtype=np.int64)
        split_crc = zlib.crc32(split.encode("utf-8"))
        asm = SplitAssembler(ann_masks)
        shortfall_groups = shortfall_images = 0
        for gid, key in enumerate(tracked(progress, keys, f"{options.name} {split}", len(keys)),
                                  start=1):
            pos = sent_images[key]
            n_neg = math.floor(options.neg_ratio * len(pos) + 0.5)
            blocked = []  # the referents' categories' image sets, not copied into one set
            if cat_images:
                cats = sorted({data.annotations[a]["category_id"] for v in pos.values() for a in v})
                blocked = [cat_images[c] for c in cats if c in cat_images]
            rng = np.random.default_rng([options.seed, split_crc,
                                         zlib.crc32(key.encode("utf-8"))])
            negs = _sample_negatives(rng, pool, n_neg, pos, *blocked)
            if len(negs) < n_neg:
                shortfall_groups += 1
                shortfall_images += n_neg - len(negs)
            image_ids = sorted(set(pos) | set(negs))
            for img in image_ids:
                im = data.images[img]
                asm.add_image(img, im["file_name"], im["height"], im["width"])
            asm.add_group(gid, [(gid, key, {"sent_ids": sorted(set(sent_ids[key])),
                                            "ref_ids": sorted(set(ref_ids[key]))})],
                          image_ids, {"num_positive": len(pos), "num_negative": len(negs)})
            for img in image_ids:
                asm.add_target(gid, img, sorted(pos.get(img, ())))
        out[split] = asm.dataset(options.name, split, recipe, data.sources)
        report.splits[split] = {
            "refs": len(refs), "no_target_refs": no_target, "empty_sentences": empty,
            "sentences": len(sent_images),
            "groups": len(keys), "dropped_groups": len(sent_images) - len(keys),
            "negative_shortfall_groups": shortfall_groups,
            "negative_shortfall_images": shortfall_images,
        }
    return out, report


def build_dataset(name: str, refer_root: str | Path, split_by: str | None = None,
                  min_images: int = 2, neg_ratio: float = 1.0, negatives: str = "random",
                  seed: int = 0, progress: Progress | None = None
                  ) -> tuple[dict[str, GresDataset], BuildReport]:
    """Read a refer folder and build ``name`` (``g-refcoco``, ``g-refcoco+``, ``g-refcocog``,
    ``grefcoco``, or the classic RES benchmarks ``refcoco``, ``refcoco+``, ``refcocog``).

    See the module header for the recipe; ``split_by`` defaults to the registry's (``unc`` for
    RefCOCO and RefCOCO+, ``umd`` for RefCOCOg). ``grefcoco`` is built by
    :func:`grdkit.builders.grefcoco.build_grefcoco` (one group per image, nothing sampled): the
    regrouping options must keep their defaults for it, and for the RES benchmarks
    (:func:`grdkit.builders.res.build_res`, one sample per sentence).

    Raises:
        InputError: bad input files, or a ``split_by`` the dataset does not have.
        ValueError: an unknown dataset, a bad option value, or a regrouping option for grefcoco.
    """
    if dataset_spec(name).builder in ("grefcoco", "res"):
        if (min_images, neg_ratio, negatives, seed) != (2, 1.0, "random", 0):
            raise ValueError(f"{name} has one group per image and no sampled negatives: "
                             "min_images, neg_ratio, negatives and seed do not apply")
        if dataset_spec(name).builder == "res":
            return build_res(name, refer_root, split_by, progress)
        return build_grefcoco(refer_root, split_by, progress)
    options = BuildOptions(name, dataset_spec(name).check_split_by(split_by), min_images,
                           neg_ratio, negatives, seed)
    data = read_refer(refer_root, options.split_by, folder=dataset_spec(name).source.lower())
    return build_from_refer(data, options, progress)
