"""One split assembler used by every builder: images, expressions, groups and targets.

A builder decides *which* images and expressions form a group and which annotations an
expression refers to on each image; :class:`SplitAssembler` turns those decisions into a
canonical :class:`~grdkit.format.GresDataset`:

* a target is **positive** with the union of its referred masks (annotation RLEs, cached), or a
  given mask; **negative** (no-target) with the empty RLE of the image's size;
* images are listed once, in ascending id order; expressions and groups in the order added;
* ``info`` carries name, split, grdkit version, recipe and source checksums.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .. import __version__
from ..errors import InputError
from ..format import Expression, GresDataset, Group, Image, Target
from ..format.masks import MaskError, area, empty_rle, to_rle, union


class AnnotationMasks:
    """COCO-style annotations by id turned into compressed RLEs, each converted once.

    Args:
        annotations: ``{ann_id: {"image_id", "segmentation", ...}}``.
        images: ``{image_id: {"height", "width", ...}}``.
        path: the annotation file, named in errors.

    Raises:
        InputError: from :meth:`rle`, naming the file and the annotation, when a segmentation
            cannot be rasterised (see :func:`grdkit.format.masks.to_rle`).
    """

    def __init__(self, annotations: dict[int, dict], images: dict[int, dict], path: str | Path):
        self.annotations, self.images, self.path = annotations, images, path
        self._cache: dict[int, dict] = {}

    def rle(self, ann_id: int) -> dict:
        """The annotation's mask as compressed RLE at its image's size."""
        rle = self._cache.get(ann_id)
        if rle is None:
            ann = self.annotations[ann_id]
            im = self.images[ann["image_id"]]
            try:
                rle = to_rle(ann["segmentation"], int(im["height"]), int(im["width"]))
            except (MaskError, KeyError, TypeError, ValueError) as e:
                msg = str(e) if isinstance(e, MaskError) else f"unreadable segmentation ({e!r})"
                raise InputError(self.path, msg,
                                 f"annotation id {ann_id} (image id {ann['image_id']})",
                                 "fix or remove the segmentation") from None
            self._cache[ann_id] = rle
        return rle


class SplitAssembler:
    """Collects one split's records; :meth:`dataset` returns the canonical split.

    Args:
        masks: resolves referred annotation ids to RLEs (needed when targets name ``ann_ids``).
    """

    def __init__(self, masks: AnnotationMasks | None = None):
        self.masks = masks
        self._images: dict[int, Image] = {}
        self.expressions: list[Expression] = []
        self.groups: list[Group] = []
        self.targets: list[Target] = []

    def add_image(self, image_id: int, file_name: str, height: int, width: int) -> None:
        """Record an image once (later calls with the same id are ignored)."""
        if image_id not in self._images:
            self._images[image_id] = Image(int(image_id), str(file_name), int(height),
                                           int(width))

    def add_group(self, group_id: int, expressions: Iterable[tuple[int, str, dict]],
                  image_ids: Iterable[int], extra: dict | None = None) -> None:
        """A group: its ``(expression id, text, extra)`` expressions and its images (added
        before with :meth:`add_image`), in the order given."""
        eids = []
        for eid, text, e_extra in expressions:
            self.expressions.append(Expression(eid, text, group_id, e_extra or {}))
            eids.append(eid)
        self.groups.append(Group(group_id, tuple(eids), tuple(image_ids), extra or {}))

    def add_image_group(self, image_id: int, image: dict,
                        expressions: list[tuple[int, str, dict]],
                        targets: list[tuple[int, Iterable[int]]]) -> None:
        """One group per image (gRefCOCO, the RES benchmarks): the image (its COCO ``images``
        record: ``file_name``, ``height``, ``width``) as the group's only image, its
        ``(expression id, text, extra)`` expressions and their ``(expression id, annotation ids)``
        targets on it (an empty list: no target)."""
        self.add_image(image_id, image["file_name"], image["height"], image["width"])
        self.add_group(image_id, expressions, [image_id])
        for e, anns in targets:
            self.add_target(e, image_id, anns)

    def add_target(self, expression_id: int, image_id: int, ann_ids: Iterable[int] = (),
                   mask: dict | None = None, extra: dict | None = None) -> None:
        """The target of one pair: positive with the union of ``ann_ids``' masks (or ``mask``,
        a compressed RLE), negative with the empty RLE when neither is given.

        Raises:
            InputError: the referred annotations rasterise to an empty mask (a positive target
                must have pixels), or one cannot be rasterised.
        """
        ann_ids = tuple(ann_ids)
        if ann_ids:
            mask = union([self.masks.rle(a) for a in ann_ids])
            if area(mask) == 0:
                raise InputError(self.masks.path, "the referred annotations rasterise to an empty "
                                 "mask", f"annotation ids {list(ann_ids)} (expression "
                                 f"{expression_id}, image id {image_id})",
                                 "fix or remove the degenerate segmentation")
        if mask is None:
            im = self._images[image_id]
            self.targets.append(Target(expression_id, image_id, False,
                                       empty_rle(im.height, im.width), (), extra or {}))
        else:
            self.targets.append(Target(expression_id, image_id, True, mask, ann_ids,
                                       extra or {}))

    def dataset(self, name: str, split: str, recipe: dict, sources: dict[str, str]
                ) -> GresDataset:
        """The canonical split (images by ascending id)."""
        info = {"name": name, "split": split, "grdkit_version": __version__,
                "recipe": recipe, "sources": sources}
        return GresDataset(info, [self._images[k] for k in sorted(self._images)],
                           self.expressions, self.groups, self.targets)
