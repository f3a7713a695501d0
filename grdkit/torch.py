"""A PyTorch dataset over a canonical GRES split (:class:`GRESDataset`), for researchers' own loops.

``GRESDataset(data, img_root, mode="pair" | "group")`` reads a split file, a built folder (with
``split=``) or a :class:`~grdkit.format.GresDataset`, and the image files under ``img_root``.

* ``mode="pair"``: one item per (expression, image) pair, in the split's target order (what
  evaluation iterates): ``image`` a ``torchvision.tv_tensors.Image`` uint8 ``(3, H, W)`` RGB,
  ``mask`` a ``tv_tensors.Mask`` uint8 ``(H, W)`` in {0, 1} (empty for a negative pair),
  ``expression`` (str), ``expression_id``, ``image_id`` (int), ``positive`` (bool), ``size``
  (original ``(H, W)`` in pixels, before transforms) and ``target_rle`` (the ground truth as
  COCO RLE at the original size: what :class:`grdkit.metrics.GRESMetrics` scores exactly).
* ``mode="group"``: GRES training (GRES §3.4): one item per *unit* per epoch (times
  ``repeats``), an expression with ``group_size`` images of its group, positives and negatives
  1:1 where the group has enough of both, else filled with the other kind
  (:func:`sample_group`); ``images`` / ``masks`` lists of ``tv_tensors``, ``image_ids``,
  ``positive`` bool ``(n,)``, ``sizes`` int64 ``(n, 2)`` original (H, W).
  ``epoch_unit="sentence"`` (default): the unit is an expression (LTS §4.1 and GRES count
  samples per sentence). ``epoch_unit="ref"``: the unit is a *ref* (expressions of one group
  sharing ``extra["ref_id"]``, as the refer / gRefCOCO builders record it; an expression
  without one is its own ref), and each epoch draws one of its sentences: the official MABP
  loader's epoch (buptLwz/MABP ``gres_model/data/dataset_mappers/refcoco_mapper.py`` @ ec810ea,
  lines 173-174, one random sentence per ref).

Randomness: item ``k`` of epoch ``e`` uses ``numpy.random.default_rng([seed, e, k])`` (the ref's
sentence first, then the images), so items are the same whatever the worker, the number of
workers, or the order they are asked in (safe with ``DataLoader(num_workers > 0)``: nothing
open is shared, every worker reads its files). Index with ``(epoch, k)`` tuples, or with ``k``
after :meth:`GRESDataset.set_epoch` (persistent workers keep their own copy: give them tuples).

``transforms``: torchvision v2 transforms called as ``transforms(image, mask)`` on each image
with its mask (an ``Image`` and a ``Mask``, so geometric transforms move both and photometric
ones touch only the image); in group mode each image of the group gets its own call.
:func:`collate` batches pair items, :func:`collate_groups` group items (padding to the largest
group; ``valid`` marks real images).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors

from .errors import InputError
from .format import GresDataset, load_dataset, load_splits, masks
from .io.images import image_path, open_image

MODES = ("pair", "group")
EPOCH_UNITS = ("sentence", "ref")


def sample_group(pos: list[int], neg: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """N image ids, positives and negatives 1:1 where available (sorted for determinism).

    ``ceil(n / 2)`` positives and the rest negatives, each kind topped up from the other when
    short (GRES §3.4 balances a group's positives and negatives). For N = 1 (single-image models
    such as MABP) a positive or a negative is drawn with equal probability when the expression
    has both, so both are seen 1:1 in expectation.
    """
    if n == 1 and pos and neg:
        pool = pos if rng.random() < 0.5 else neg
        return [pool[int(rng.integers(len(pool)))]]
    k_pos = min(len(pos), math.ceil(n / 2))
    k_neg = min(len(neg), n - k_pos)
    k_pos = min(len(pos), n - k_neg)
    out = [pos[j] for j in rng.choice(len(pos), k_pos, replace=False)] if k_pos else []
    out += [neg[j] for j in rng.choice(len(neg), k_neg, replace=False)] if k_neg else []
    return sorted(out)


class FileReader:
    """Images from the files under ``img_root`` (checked: path inside the root, size as
    recorded) and masks decoded from the split's RLEs, at the original size."""

    def __init__(self, ds: GresDataset, img_root: str | Path):
        self.ds, self.root = ds, Path(img_root)

    def image(self, image_id: int) -> np.ndarray:
        """uint8 ``(H, W, 3)`` RGB. Raises InputError: missing, unreadable or wrongly sized."""
        im = self.ds.image(image_id)
        with open_image(image_path(self.root, im.file_name, f"image id {image_id}"),
                        (im.height, im.width), f"image id {image_id}") as f:
            return np.asarray(f.convert("RGB"))

    def mask(self, expression_id: int, image_id: int) -> np.ndarray:
        """uint8 ``(H, W)`` in {0, 1}."""
        return masks.decode(self.ds.target(expression_id, image_id).segmentation)


def _load(data: Any, split: str | None) -> GresDataset:
    if isinstance(data, GresDataset):
        return data
    p = Path(data)
    if not p.is_dir():
        return load_dataset(p)
    splits = load_splits(p)
    if split is None and len(splits) == 1:
        return next(iter(splits.values()))
    if split not in splits:
        raise InputError(p, f"has splits {sorted(splits)}; split {split!r} is not one of them",
                         hint="pass split= one of them")
    return splits[split]


class GRESDataset(torch.utils.data.Dataset):
    """Items of a canonical GRES split for PyTorch (see the module header).

    Args:
        data: a split file, a built folder (then ``split`` names the split unless there is
            one), or a :class:`~grdkit.format.GresDataset`.
        img_root: the image folder (``--img-root``); not needed with ``reader``.
        split: the split of a built folder.
        mode: ``"pair"`` or ``"group"``.
        group_size: N, images per group item (group mode).
        seed: sampling seed (group mode).
        epoch_unit: ``"sentence"`` or ``"ref"`` (group mode; module header).
        repeats: items per unit per epoch (>= 1; group mode).
        transforms: torchvision v2 transforms, called ``transforms(image, mask)``.
        reader: anything with ``image(image_id) -> uint8 (H, W, 3)`` and ``mask(expression_id,
            image_id) -> uint8 (H, W)`` (default :class:`FileReader`; the baselines pass their
            memory-mapped store of resized pixels).

    Raises:
        InputError: an unreadable or incomplete split, an unknown split of a folder.
        ValueError: an unknown mode or epoch unit, ``group_size`` or ``repeats`` < 1, or
            neither ``img_root`` nor ``reader``.
    """

    def __init__(self, data: Any, img_root: str | Path | None = None, *,
                 split: str | None = None, mode: str = "pair", group_size: int = 8,
                 seed: int = 0, epoch_unit: str = "sentence", repeats: int = 1,
                 transforms: Callable | None = None, reader: Any = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if epoch_unit not in EPOCH_UNITS:
            raise ValueError(f"epoch_unit must be one of {EPOCH_UNITS}, not {epoch_unit!r}")
        if int(group_size) < 1 or int(repeats) < 1:
            raise ValueError("group_size and repeats must be >= 1")
        if img_root is None and reader is None:
            raise ValueError("pass img_root (the image folder) or a reader")
        self.ds = _load(data, split)
        self.ds.require_complete()
        self.mode, self.n, self.seed = mode, int(group_size), int(seed)
        self.epoch_unit, self.repeats, self.epoch = epoch_unit, int(repeats), 0
        self.transforms = transforms
        self.reader = reader if reader is not None else FileReader(self.ds, img_root)
        ds = self.ds
        self.candidates: dict[int, tuple[list[int], list[int]]] = {}
        for e in ds.expressions:
            ids = ds.group(e.group_id).image_ids
            self.candidates[e.id] = ([i for i in ids if ds.target(e.id, i).positive],
                                     [i for i in ids if not ds.target(e.id, i).positive])
        units: dict[tuple, list[int]] = {}
        for e in ds.expressions:
            ref = e.extra.get("ref_id") if epoch_unit == "ref" else None
            key = (e.group_id, ref) if ref is not None else ("expression", e.id)
            units.setdefault(key, []).append(e.id)
        self.units: list[tuple[int, ...]] = [tuple(v) for v in units.values()]

    def set_epoch(self, epoch: int) -> None:
        """The epoch integer keys refer to."""
        self.epoch = int(epoch)

    def units_per_epoch(self) -> int:
        """Expressions (``sentence``) or refs (``ref``) per epoch, before ``repeats``."""
        return len(self.units)

    def __len__(self) -> int:
        if self.mode == "pair":
            return len(self.ds.targets)
        return len(self.units) * self.repeats

    def sample(self, epoch: int, k: int) -> tuple[int, list[int]]:
        """Group item ``k`` of ``epoch``: ``(expression id, image ids)`` (module header)."""
        unit = self.units[k % len(self.units)]
        rng = np.random.default_rng([self.seed, int(epoch), int(k)])
        eid = unit[int(rng.integers(len(unit)))] if len(unit) > 1 else unit[0]
        pos, neg = self.candidates[eid]
        return eid, sample_group(pos, neg, self.n, rng)

    def _pixels(self, expression_id: int, image_id: int):
        # copies: a reader may hand out read-only arrays (PIL buffers, memory maps)
        img = tv_tensors.Image(torch.from_numpy(
            np.array(self.reader.image(image_id), np.uint8)).permute(2, 0, 1))
        msk = tv_tensors.Mask(torch.from_numpy(
            np.array(self.reader.mask(expression_id, image_id), np.uint8)))
        if self.transforms is not None:
            img, msk = self.transforms(img, msk)
        return img, msk

    def __getitem__(self, key) -> dict:
        epoch, k = key if isinstance(key, tuple) else (self.epoch, key)
        ds = self.ds
        if self.mode == "pair":
            t = ds.targets[k]
            img, msk = self._pixels(t.expression_id, t.image_id)
            im = ds.image(t.image_id)
            return {"image": img, "mask": msk, "expression": ds.expression(t.expression_id).text,
                    "expression_id": t.expression_id, "image_id": t.image_id,
                    "positive": t.positive, "size": (im.height, im.width),
                    "target_rle": t.segmentation}
        eid, ids = self.sample(epoch, k)
        pix = [self._pixels(eid, i) for i in ids]
        return {"expression_id": eid, "expression": ds.expression(eid).text, "image_ids": ids,
                "images": [p[0] for p in pix], "masks": [p[1] for p in pix],
                "positive": torch.tensor([ds.target(eid, i).positive for i in ids]),
                "sizes": torch.tensor([[ds.image(i).height, ds.image(i).width] for i in ids],
                                      dtype=torch.long).reshape(-1, 2)}


def collate(items: list[dict]) -> dict:
    """Pair items -> a batch: ``image`` uint8 ``(B, 3, H, W)`` and ``mask`` ``(B, H, W)``
    stacked (every item must have the same size: resize in ``transforms``), ``positive`` bool
    ``(B,)``, ``expression_id`` / ``image_id`` int64 ``(B,)``, ``size`` int64 ``(B, 2)``, and
    lists ``expression`` and ``target_rle``.

    Raises:
        ValueError: images of different sizes (with the sizes named).
    """
    shapes = {tuple(it["image"].shape) for it in items}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)} cannot be stacked: add a "
                         "resize to transforms")
    return {"image": torch.stack([it["image"] for it in items]),
            "mask": torch.stack([it["mask"] for it in items]),
            "positive": torch.tensor([it["positive"] for it in items]),
            "expression_id": torch.tensor([it["expression_id"] for it in items]),
            "image_id": torch.tensor([it["image_id"] for it in items]),
            "size": torch.tensor([list(it["size"]) for it in items], dtype=torch.long),
            "expression": [it["expression"] for it in items],
            "target_rle": [it["target_rle"] for it in items]}


def collate_groups(items: list[dict]) -> dict:
    """Group items -> ``images`` uint8 ``(B, n_max, 3, H, W)``, ``masks`` ``(B, n_max, H, W)``,
    ``positive`` / ``valid`` bool ``(B, n_max)``, ``sizes`` int64 ``(B, n_max, 2)``, zero
    padded past each group's ``counts[b]`` images; lists ``expression``, ``expression_id``,
    ``image_ids``. Every image must have the same size (resize in ``transforms``).

    Raises:
        ValueError: images of different sizes.
    """
    shapes = {tuple(im.shape) for it in items for im in it["images"]}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)} cannot be stacked: add a "
                         "resize to transforms")
    b, n = len(items), max(len(it["image_ids"]) for it in items)
    c, h, w = shapes.pop()
    ref = items[0]["masks"][0]
    out = {"images": torch.zeros(b, n, c, h, w, dtype=items[0]["images"][0].dtype),
           "masks": torch.zeros(b, n, *ref.shape, dtype=ref.dtype),
           "positive": torch.zeros(b, n, dtype=torch.bool),
           "valid": torch.zeros(b, n, dtype=torch.bool),
           "sizes": torch.zeros(b, n, 2, dtype=torch.long),
           "counts": [len(it["image_ids"]) for it in items],
           "expression": [it["expression"] for it in items],
           "expression_id": [it["expression_id"] for it in items],
           "image_ids": [it["image_ids"] for it in items]}
    for j, it in enumerate(items):
        m = len(it["image_ids"])
        out["images"][j, :m] = torch.stack(it["images"])
        out["masks"][j, :m] = torch.stack(it["masks"])
        out["positive"][j, :m] = it["positive"]
        out["sizes"][j, :m] = it["sizes"]
        out["valid"][j, :m] = True
    return out


__all__ = ["EPOCH_UNITS", "MODES", "FileReader", "GRESDataset", "collate", "collate_groups",
           "sample_group"]
