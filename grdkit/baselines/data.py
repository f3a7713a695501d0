"""Groups of images for training and inference, over a canonical dataset and an image root.

Training (:class:`GroupSampler` + :class:`GroupDataset`): one item per expression per epoch: N
images of the expression's group (default 8), positives and negatives 1:1 where the group has
enough of both (GRES §3.4), else filled with the other kind; drawn with
``numpy.random.default_rng([seed, epoch, item])``. Inference (:func:`inference_items`): every
image of every expression's group, in chunks of N.

Images are resized to ``size x size`` (bilinear; masks nearest) without keeping the aspect ratio,
so predictions map back to the original pixels by a plain resize; each item keeps the original
sizes. Tensors: ``images`` float32 ``(n, 3, S, S)`` in 0-1, ``masks`` float32 ``(n, 1, S, S)`` in
{0, 1}, ``positive`` bool ``(n,)``, ``sizes`` int64 ``(n, 2)`` as (height, width) in pixels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from ..errors import InputError
from ..format import GresDataset
from ..format import masks as rle


class ImageCache:
    """Loads, checks and resizes images (uint8, kept in memory when ``cache``)."""

    def __init__(self, ds: GresDataset, img_root: str | Path, size: int, cache: bool = True):
        self.ds, self.root, self.size, self.cache = ds, Path(img_root), int(size), cache
        self._store: dict[int, np.ndarray] = {}
        self._masks: dict[tuple[int, int], np.ndarray] = {}

    def image(self, image_id: int) -> np.ndarray:
        """uint8 ``(S, S, 3)``."""
        if image_id in self._store:
            return self._store[image_id]
        im = self.ds.image(image_id)
        p = self.root / im.file_name
        try:
            with PILImage.open(p) as f:
                rgb = f.convert("RGB")
                if (rgb.height, rgb.width) != (im.height, im.width):
                    raise InputError(p, f"image is {rgb.width}x{rgb.height}, recorded "
                                     f"{im.width}x{im.height}", f"image id {image_id}")
                arr = np.asarray(rgb.resize((self.size, self.size), PILImage.BILINEAR))
        except OSError as e:
            raise InputError(p, f"cannot open image: {e}", f"image id {image_id}",
                             "check --img-root") from None
        if self.cache:
            self._store[image_id] = arr
        return arr

    def mask(self, expression_id: int, image_id: int) -> np.ndarray:
        """uint8 ``(S, S)`` 0/1 ground truth, nearest-resized (kept in memory when ``cache``)."""
        key = (expression_id, image_id)
        if key in self._masks:
            return self._masks[key]
        m = rle.decode(self.ds.target(expression_id, image_id).segmentation)
        out = np.asarray(PILImage.fromarray(m * 255).resize((self.size, self.size),
                                                            PILImage.NEAREST)) // 255
        if self.cache:
            self._masks[key] = out
        return out


def make_item(cache: ImageCache, expression_id: int, image_ids: list[int]) -> dict:
    ds = cache.ds
    imgs = np.stack([cache.image(i) for i in image_ids])
    msk = np.stack([cache.mask(expression_id, i) for i in image_ids])
    return {
        "expression_id": expression_id,
        "expression": ds.expression(expression_id).text,
        "image_ids": list(image_ids),
        "images": torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255),
        "masks": torch.from_numpy(msk).unsqueeze(1).float(),
        "positive": torch.tensor([ds.target(expression_id, i).positive for i in image_ids]),
        "sizes": torch.tensor([[ds.image(i).height, ds.image(i).width] for i in image_ids]),
    }


def sample_group(pos: list[int], neg: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """N image ids, positives and negatives 1:1 where available (sorted for determinism)."""
    k_pos = min(len(pos), math.ceil(n / 2))
    k_neg = min(len(neg), n - k_pos)
    k_pos = min(len(pos), n - k_neg)
    out = [pos[j] for j in rng.choice(len(pos), k_pos, replace=False)] if k_pos else []
    out += [neg[j] for j in rng.choice(len(neg), k_neg, replace=False)] if k_neg else []
    return sorted(out)


class GroupDataset(torch.utils.data.Dataset):
    """Training items: one per expression; see the module header.

    Args:
        ds: canonical dataset; img_root: image folder; group_size: N; size: S (pixels);
        seed: sampling seed; repeats: items per expression per epoch (>= 1, useful when a
        dataset has few expressions). Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, ds: GresDataset, img_root: str | Path, group_size: int = 8,
                 size: int = 416, seed: int = 0, cache: bool = True, repeats: int = 1):
        ds.require_complete()
        self.cache = ImageCache(ds, img_root, size, cache)
        self.ds, self.n, self.seed, self.epoch = ds, int(group_size), int(seed), 0
        self.repeats = max(1, int(repeats))
        self.items = []
        for e in ds.expressions:
            g = ds.group(e.group_id)
            pos = [i for i in g.image_ids if ds.target(e.id, i).positive]
            neg = [i for i in g.image_ids if not ds.target(e.id, i).positive]
            self.items.append((e.id, pos, neg))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items) * self.repeats

    def __getitem__(self, k: int) -> dict:
        eid, pos, neg = self.items[k % len(self.items)]
        rng = np.random.default_rng([self.seed, self.epoch, k])
        return make_item(self.cache, eid, sample_group(pos, neg, self.n, rng))


def inference_items(ds: GresDataset, cache: ImageCache, group_size: int = 8):
    """Every (expression, image) pair of the dataset, as items of up to N images of a group."""
    ds.require_complete()
    for e in ds.expressions:
        ids = list(ds.group(e.group_id).image_ids)
        for k in range(0, len(ids), group_size):
            yield make_item(cache, e.id, ids[k:k + group_size])


def collate(items: list[dict]) -> dict:
    """Pad groups to the largest n: tensors ``(B, n_max, ...)`` plus ``valid`` ``(B, n_max)``."""
    b = len(items)
    n = max(len(it["image_ids"]) for it in items)
    s = items[0]["images"].shape[-1]
    out = {"expression_id": [it["expression_id"] for it in items],
           "expression": [it["expression"] for it in items],
           "image_ids": [it["image_ids"] for it in items],
           "images": torch.zeros(b, n, 3, s, s), "masks": torch.zeros(b, n, 1, s, s),
           "positive": torch.zeros(b, n, dtype=torch.bool),
           "sizes": torch.zeros(b, n, 2, dtype=torch.long),
           "valid": torch.zeros(b, n, dtype=torch.bool)}
    for j, it in enumerate(items):
        m = len(it["image_ids"])
        for k in ("images", "masks", "positive", "sizes"):
            out[k][j, :m] = it[k]
        out["valid"][j, :m] = True
    return out
