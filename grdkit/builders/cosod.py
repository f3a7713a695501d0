"""GRES data from Co-SOD group folders (CoCA, CoSal2015, CoSOD3k): the GRES paper's Table 3
setting, where each group's category name is its expression.

Rules (the reader is :mod:`grdkit.sources.cosod`):

* one group per folder, in folder-name order; its expression is the folder name with ``_`` read
  as a space (group and expression ids 1..G);
* images are numbered 1..N in (group, file name) order; ``file_name`` is relative to the image
  root (``<group>/<name>.jpg``); masks are foreground where grey >= ``threshold`` (128)
  (:func:`grdkit.sources.images.read_mask`);
* an image whose mask has foreground is a positive image of its group; an all-zero mask is how
  SOC and D³'s own ``data2coca`` export mark an image without the object, so it becomes a
  **certified** negative pair of its group (an annotator looked), counted in the report and the
  card;
* ``negatives=K`` adds K images per group drawn without replacement from the other groups
  (``numpy.random.default_rng([seed, crc32(group name)])``, so a group's draw does not depend on
  the others), with empty targets. They are **not certified**: a Co-SOD image may show another
  group's object too. A group gets fewer when the pool is smaller (counted in the report).
* each group's images are listed in ascending id order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..format import GresDataset, masks
from ..io.images import follow_links, read_image_file
from ..progress import Progress, tracked
from ..sources.cosod import read_cosod_folders
from ..sources.images import any_mask, image_size
from .assemble import SplitAssembler

NAME = "cosod"


@dataclass
class CosodReport:
    """What a conversion did: groups, positives, negatives requested and drawn."""

    groups: int = 0
    positives: int = 0
    certified_negatives: int = 0
    negatives_per_group: int = 0
    negatives: int = 0
    shortfall_groups: int = 0
    shortfall_images: int = 0
    per_group: dict[str, dict] = field(default_factory=dict)

    def notes(self) -> dict[str, str]:
        """The data card's note on the ``test`` split."""
        text = (f"Build: {self.groups} groups, {self.positives} positive images (every image "
                "whose mask has foreground)")
        if self.certified_negatives:
            text += (f"; {self.certified_negatives} certified negative pairs (images of a group "
                     "whose mask is all zero: annotated as not showing the object)")
        if self.negatives_per_group:
            text += (f"; {self.negatives} negative pairs, {self.negatives_per_group} per group "
                     "drawn from other groups. These negatives are NOT certified: an image of "
                     "another group may show this group's object too")
            if self.shortfall_groups:
                text += (f"; {self.shortfall_groups} groups got {self.shortfall_images} fewer "
                         "(pool too small)")
        return {"test": text + "."}


def build_cosod(images: str | Path, masks_root: str | Path, negatives: int = 0, seed: int = 0,
                threshold: int = 128, progress: Progress | None = None
                ) -> tuple[GresDataset, CosodReport]:
    """Convert Co-SOD group folders to one canonical split (``test``); see the module header.

    Args:
        images: image root (``<group>/<name>.jpg|png``).
        masks_root: mask root (``<group>/<name>.png``).
        negatives: K negative images per group drawn from other groups (>= 0).
        seed: seed of that draw (>= 0).
        threshold: mask binarisation, grey value 0-255.
        progress: optional progress callback, one step per group.

    Raises:
        InputError: from :func:`grdkit.sources.cosod.read_cosod_folders` (unpaired files), an
            unreadable image or mask, or a mask whose size is not its image's.
        ValueError: ``negatives`` or ``seed`` below 0.
    """
    if negatives < 0 or seed < 0:
        raise ValueError("negatives and seed must be >= 0")
    images, masks_root = Path(images), Path(masks_root)
    groups = read_cosod_folders(images, masks_root)
    asm = SplitAssembler()
    ids: list[list[int]] = []
    pos_masks: dict[int, dict] = {}
    certified: set[int] = set()
    k = 0
    for g in tracked(progress, groups, "reading groups", len(groups)):
        gids = []
        for img, msk in g.pairs:
            k += 1
            h, w = image_size(images / img)
            # the whole file decoded, the path kept inside the root: as validate reads it
            read_image_file(images, img, (h, w), f"group {g.name!r}")
            m = any_mask(masks_root / msk, h, w, threshold, f"group {g.name!r}")
            asm.add_image(k, img, h, w)
            if m.any():
                pos_masks[k] = masks.encode(m)
            else:
                certified.add(k)
            gids.append(k)
        ids.append(gids)
    report = CosodReport(groups=len(groups), positives=len(pos_masks),
                         certified_negatives=len(certified), negatives_per_group=negatives)
    every = np.arange(1, k + 1, dtype=np.int64)
    for gid, (g, own) in enumerate(zip(groups, ids), start=1):
        pos = [i for i in own if i in pos_masks]
        negs: list[int] = []
        if negatives:
            pool = every[(every < own[0]) | (every > own[-1])]
            rng = np.random.default_rng([seed, zlib.crc32(g.name.encode("utf-8"))])
            take = min(negatives, pool.size)
            negs = sorted(int(x) for x in rng.choice(pool, size=take, replace=False))
            if take < negatives:
                report.shortfall_groups += 1
                report.shortfall_images += negatives - take
        report.negatives += len(negs)
        n_cert = len(own) - len(pos)
        image_ids = sorted([*own, *negs])
        text = " ".join(g.name.replace("_", " ").split())
        asm.add_group(gid, [(gid, text, {})], image_ids,
                      {"name": g.name, "num_positive": len(pos), "num_negative": len(negs),
                       **({"num_certified_negative": n_cert} if n_cert else {})})
        for iid in image_ids:
            asm.add_target(gid, iid, mask=pos_masks.get(iid) if iid in pos else None)
        report.per_group[g.name] = {"positive": len(pos), "negative": len(negs),
                                    **({"certified_negative": n_cert} if n_cert else {})}
    recipe = {"source": "Co-SOD group folders", "expression": "folder name, _ as space",
              "threshold": threshold, "negatives": negatives, "seed": seed,
              "negatives_certified": False,
              "empty_masks": "certified negative pairs of their own group",
              **({"follow_links": True} if follow_links() else {})}
    return asm.dataset(NAME, "test", recipe, {}), report
