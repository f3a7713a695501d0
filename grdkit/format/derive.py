"""Datasets derived from canonical datasets: the union of several training sets and the RES
setting of a GRES dataset (GRES, Wu et al. ICCV 2023, §5.1 and §5.3).

* :func:`union`: GRES trains its GRD and CoCA results on the union of the G-RefC, G-RefC+ and
  G-RefCg training sets (§5.3). Expression and group ids of the k-th source are shifted so every
  id stays distinct; an image (same ``file_name``, height and width) shared by several sources is
  one image record. Each expression and group records where it came from (``union_source``: the
  source's position, ``union_id``: its id there).
* :func:`res_setting`: "regarded as RES setting if the negative samples of the dataset are
  removed" (§5.1), for training and testing. Each expression becomes its own group of the images
  it refers to (its positive targets); negative targets are dropped; an expression without any
  positive image has nothing to segment in the RES setting and is dropped (counted).
* :func:`split_groups`: a train / val split of one dataset by group (``grdkit derive split``),
  so a dataset converted from one's own image folders (``grdkit convert cosod``) can be trained
  and validated on. Whole groups go to one side, so no expression or image of a val group is
  seen in training unless another group shares the image.

Both return new :class:`~.dataset.GresDataset` objects and :class:`DeriveCounts`; nothing is
written here (``grdkit derive res`` writes and prints the counts).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import InputError
from .dataset import Expression, GresDataset, Group, Image, Target


@dataclass
class DeriveCounts:
    """What a derivation kept and dropped (numbers of records)."""

    kept: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


def union(datasets: Sequence[GresDataset], name: str | None = None
          ) -> tuple[GresDataset, DeriveCounts]:
    """The union of several canonical datasets as one dataset (see the module header).

    Args:
        datasets: at least one dataset; the first keeps its ids.
        name: the union's ``info.name`` (default: the sources' names joined by ``+``).

    Returns:
        The union and its counts (``kept``: images, expressions, groups, targets, positive;
        ``dropped``: ``shared_images``, the image records merged because several sources list
        the same file).

    Raises:
        InputError: no dataset, or two sources listing one ``file_name`` with different sizes.
    """
    if not datasets:
        raise InputError(None, "union of no dataset", hint="give at least one --data")
    images: list[Image] = []
    by_file: dict[str, Image] = {}
    used_image_ids: set[int] = set()
    expressions: list[Expression] = []
    groups: list[Group] = []
    targets: list[Target] = []
    e_off = g_off = 0
    shared = 0
    next_image = max((im.id for ds in datasets for im in ds.images), default=-1) + 1
    for k, ds in enumerate(datasets):
        image_map: dict[int, int] = {}
        for im in ds.images:
            old = by_file.get(im.file_name)
            if old is not None:
                if (old.height, old.width) != (im.height, im.width):
                    raise InputError(ds.path, f"image {im.file_name} is {im.width}x{im.height} "
                                     f"here but {old.width}x{old.height} in an earlier source",
                                     f"image id {im.id}", "the sources must share one image "
                                     "root")
                image_map[im.id] = old.id
                shared += 1
                continue
            new_id = im.id
            if new_id in used_image_ids:
                new_id, next_image = next_image, next_image + 1
            used_image_ids.add(new_id)
            rec = replace(im, id=new_id)
            images.append(rec)
            by_file[im.file_name] = rec
            image_map[im.id] = new_id
        tag = {"union_source": k}
        expressions += [Expression(e.id + e_off, e.text, e.group_id + g_off,
                                   {**e.extra, **tag, "union_id": e.id}) for e in ds.expressions]
        groups += [Group(g.id + g_off, tuple(e + e_off for e in g.expression_ids),
                         tuple(image_map[i] for i in g.image_ids),
                         {**g.extra, **tag, "union_id": g.id}) for g in ds.groups]
        targets += [replace(t, expression_id=t.expression_id + e_off,
                            image_id=image_map[t.image_id]) for t in ds.targets]
        e_off = max((e.id for e in expressions), default=-1) + 1
        g_off = max((g.id for g in groups), default=-1) + 1
    sources: dict = {}
    for ds in datasets:
        sources.update(ds.info.get("sources", {}) or {})
    splits = {ds.split for ds in datasets}
    info = {**datasets[0].info, "name": name or "+".join(ds.name for ds in datasets),
            "split": splits.pop() if len(splits) == 1 else "train",
            "recipe": {"union": [{"name": ds.name, "split": ds.split, "path": ds.path,
                                  "recipe": ds.info.get("recipe")} for ds in datasets]},
            "sources": sources}
    out = GresDataset(info, images, expressions, groups, targets)
    out.require_complete()
    counts = DeriveCounts(
        kept={"images": len(images), "expressions": len(expressions), "groups": len(groups),
              "targets": len(targets), "positive": sum(t.positive for t in targets)},
        dropped={"shared_images": shared})
    return out, counts


def res_setting(ds: GresDataset) -> tuple[GresDataset, DeriveCounts]:
    """The RES setting of ``ds`` (GRES §5.1): negatives removed (see the module header).

    Each kept expression is the only expression of a new group with the same id as the
    expression (``res_group_of``: the group it came from); images keep their ids; positive
    targets are unchanged.

    Returns:
        The dataset and its counts (``kept``: images, expressions, groups, positive targets;
        ``dropped``: negative targets, expressions without a positive image, images that no
        kept expression refers to).

    Raises:
        InputError: ``ds`` is incomplete (see :meth:`~.dataset.GresDataset.require_complete`).
    """
    ds.require_complete()
    pos_of: dict[int, list[int]] = {e.id: [] for e in ds.expressions}
    for t in ds.targets:
        if t.positive:
            pos_of[t.expression_id].append(t.image_id)
    expressions, groups = [], []
    for e in ds.expressions:
        order = ds.group(e.group_id).image_ids
        ids = set(pos_of[e.id])
        if not ids:
            continue
        expressions.append(Expression(e.id, e.text, e.id, e.extra))
        groups.append(Group(e.id, (e.id,), tuple(i for i in order if i in ids),
                            {"res_group_of": e.group_id}))
    kept_images = {i for g in groups for i in g.image_ids}
    images = [im for im in ds.images if im.id in kept_images]
    targets = [t for t in ds.targets if t.positive]
    info = {**ds.info, "name": f"{ds.name}-res",
            "recipe": {**(ds.info.get("recipe") or {}), "res_setting": True}}
    out = GresDataset(info, images, expressions, groups, targets)
    out.require_complete()
    counts = DeriveCounts(
        kept={"images": len(images), "expressions": len(expressions), "groups": len(groups),
              "positive": len(targets)},
        dropped={"negative": len(ds.targets) - len(targets),
                 "expressions": len(ds.expressions) - len(expressions),
                 "images": len(ds.images) - len(images)})
    return out, counts


def split_groups(ds: GresDataset, val: float, seed: int = 0
                 ) -> tuple[dict[str, GresDataset], DeriveCounts]:
    """Split ``ds`` into ``train`` and ``val`` by group, deterministically.

    ``round(val x G)`` of the G groups go to ``val`` (at least one, and at least one stays in
    ``train``): the groups are ordered by id, then permuted by ``numpy.random.default_rng`` seeded
    with ``(seed, crc32(name))``, and the first ones of the permutation are the val groups. Each
    side keeps the groups' expressions, targets and images unchanged (ids kept); an image two
    groups share goes to each side that has one of them (counted in ``kept.shared_images``).
    ``info.split`` becomes ``train`` / ``val`` and ``info.recipe.derive_split`` records
    ``val``, ``seed`` and the source split, so the same input, ``val`` and ``seed`` give
    byte-identical files.

    Args:
        ds: a complete canonical dataset with at least two groups.
        val: share of the groups that go to ``val``, in (0, 1).
        seed: seed of the permutation (a non-negative integer).

    Returns:
        ``{"train": ..., "val": ...}`` and the counts (``kept``: groups, expressions, images and
        targets of each side and ``shared_images``).

    Raises:
        InputError: ``val`` outside (0, 1) or not finite, or fewer than two groups (nothing to
            split), or ``ds`` is incomplete.
    """
    if not (isinstance(val, (int, float)) and math.isfinite(val) and 0 < val < 1):
        raise InputError(ds.path, f"--val {val!r} is not a share of the groups in (0, 1)",
                         hint="pass e.g. --val 0.2")
    ds.require_complete()
    ids = sorted(g.id for g in ds.groups)
    if len(ids) < 2:
        raise InputError(ds.path, f"holds {len(ids)} group(s); a split by group needs two or "
                         "more", hint="convert more group folders, or train on this file "
                         "without a val split")
    n_val = min(max(1, round(val * len(ids))), len(ids) - 1)
    rng = np.random.default_rng([seed, zlib.crc32(ds.name.encode("utf-8"))])
    order = rng.permutation(len(ids))
    val_ids = {ids[int(i)] for i in order[:n_val]}
    out: dict[str, GresDataset] = {}
    counts = DeriveCounts()
    used: dict[str, set[int]] = {}
    for side in ("train", "val"):
        keep = {g for g in ids if (g in val_ids) == (side == "val")}
        groups = [g for g in ds.groups if g.id in keep]
        exprs = [e for e in ds.expressions if e.group_id in keep]
        expr_ids = {e.id for e in exprs}
        image_ids = {i for g in groups for i in g.image_ids}
        used[side] = image_ids
        info = {**ds.info, "split": side,
                "recipe": {**(ds.info.get("recipe") or {}),
                           "derive_split": {"val": val, "seed": seed, "source_split": ds.split,
                                            "by": "group"}}}
        part = GresDataset(info, [im for im in ds.images if im.id in image_ids], exprs, groups,
                           [t for t in ds.targets if t.expression_id in expr_ids])
        part.require_complete()
        out[side] = part
        counts.kept.update({f"{side}_groups": len(groups), f"{side}_expressions": len(exprs),
                            f"{side}_images": len(part.images),
                            f"{side}_targets": len(part.targets)})
    counts.kept["shared_images"] = len(used["train"] & used["val"])
    return out, counts
