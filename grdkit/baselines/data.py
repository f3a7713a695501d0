"""Groups of images for training and inference, fed from a memory-mapped store of resized pixels.

Store (:class:`ResizedStore`, written once by :func:`build_store`, ``grdkit cache``): every image
resized to ``S x S`` (bilinear, aspect ratio not kept, so predictions map back by a plain resize)
as uint8 RGB, and every positive target's mask resized (nearest) as packed bits, in two
memory-mapped files shared read-only by every DataLoader worker and every rank. A negative
target's mask is all zero and is not stored. Memory stays bounded: workers read pages on demand.
The store is keyed by the dataset's content, the image root and ``S``, and written atomically
(temp folder, then rename), so two runs never see a half-written one.

Training (:class:`GroupDataset`): the group sampling of the public
:class:`grdkit.torch.GRESDataset` (one implementation): one item per expression (or per ref,
``epoch_unit="ref"``) per epoch: N images of the expression's group (default 8), positives and
negatives 1:1 where the group has enough of both (GRES §3.4), else filled with the other kind;
drawn with ``numpy.random.default_rng([seed, epoch, item])``. Items are indexed by ``(epoch, item)`` pairs (see :class:`EpochBatches`), so persistent
workers need no epoch broadcast. Inference (:class:`InferenceItems`): every image of every
expression's group, in chunks of N, decoded on the fly (no store, no ground truth needed).

Tensors of an item: ``images`` uint8 ``(n, 3, S, S)`` (normalised on the device by the model's
:class:`~.encoders.VisionEncoder`), ``masks`` uint8 ``(n, 1, S, S)`` in {0, 1}, ``positive`` bool
``(n,)``, ``sizes`` int64 ``(n, 2)`` as (height, width) in pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from ..errors import InputError
from ..format import GresDataset, dumps, load_dataset
from ..format import masks as rle
from ..format.derive import union
from ..io import check_regular, read_json
from ..io.images import image_path, open_image
from ..progress import Progress, tracked
from ..torch import GRESDataset, sample_group  # noqa: F401  (sample_group: re-exported)

STORE_FORMAT = "grdkit-resized-store/1"


def read_resized(path: Path, image_id: int, height: int, width: int, size: int) -> np.ndarray:
    """One image file as uint8 ``(S, S, 3)`` RGB, bilinear resize.

    Raises:
        InputError: unreadable file, or a size other than the recorded one.
    """
    with open_image(path, (height, width), f"image id {image_id}") as f:  # checked, bounded
        rgb = f.convert("RGB")
    return np.asarray(rgb.resize((size, size), PILImage.BILINEAR))


def resized_mask(segmentation: dict, size: int) -> np.ndarray:
    """A target's RLE as uint8 ``(S, S)`` in {0, 1}, nearest resize."""
    m = rle.decode(segmentation)
    return np.asarray(PILImage.fromarray(m * 255).resize((size, size), PILImage.NEAREST)) // 255


def store_key(ds: GresDataset, img_root: str | Path, size: int) -> str:
    """Content key of a store: the dataset's canonical bytes, the image root and S."""
    h = hashlib.sha256(dumps(ds).encode("utf-8"))
    h.update(f"\0{Path(img_root).resolve()}\0{int(size)}".encode())
    return h.hexdigest()[:20]


def default_cache_dir() -> Path:
    """``$GRDKIT_CACHE``, else ``~/.cache/grdkit``."""
    return Path(os.environ.get("GRDKIT_CACHE", Path.home() / ".cache" / "grdkit"))


class ResizedStore:
    """Read-only view of a store folder (see the module header).

    Attributes:
        size: S. image_row: image id -> row. mask_row: (expression id, image id) -> row.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta = read_json(self.folder / "index.json", "store index")
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            raise InputError(self.folder, "is not a grdkit resized store")
        self.size = int(meta["size"])
        self.image_row = {int(k): v for k, v in meta["images"].items()}
        self.mask_row = {(e, i): r for e, i, r in meta["masks"]}
        s = self.size
        self._images = None
        self._masks = None
        self._shapes = ((len(self.image_row), s, s, 3), (len(self.mask_row), math.ceil(s * s / 8)))

    def _open(self) -> None:  # lazily, in each worker process (memmaps are not pickled)
        for name, shape in (("images.u8", self._shapes[0]), ("masks.bits", self._shapes[1])):
            st = check_regular(self.folder / name, "store file")  # never a FIFO or a device
            if st.st_size < math.prod(shape):
                raise InputError(self.folder / name, f"store file holds {st.st_size} bytes, "
                                 f"its index needs {math.prod(shape)}",
                                 hint="delete the store folder; it is rebuilt on first use")
        self._images = np.memmap(self.folder / "images.u8", np.uint8, "r", shape=self._shapes[0])
        self._masks = np.memmap(self.folder / "masks.bits", np.uint8, "r", shape=self._shapes[1])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_images"] = state["_masks"] = None
        return state

    def image(self, image_id: int) -> np.ndarray:
        """uint8 ``(S, S, 3)``."""
        if self._images is None:
            self._open()
        return np.asarray(self._images[self.image_row[image_id]])

    def mask(self, expression_id: int, image_id: int) -> np.ndarray:
        """uint8 ``(S, S)`` in {0, 1} (zeros for a negative target)."""
        row = self.mask_row.get((expression_id, image_id))
        if row is None:
            return np.zeros((self.size, self.size), np.uint8)
        if self._masks is None:
            self._open()
        bits = np.unpackbits(self._masks[row], count=self.size * self.size)
        return bits.reshape(self.size, self.size)


def build_store(ds: GresDataset, img_root: str | Path, size: int,
                cache_dir: str | Path | None = None, progress: Progress | None = None
                ) -> ResizedStore:
    """The store of ``ds`` at ``size``, built once (reused when its key exists).

    Args:
        ds: the dataset (its positive targets' masks are stored).
        img_root: image folder. size: S (pixels). cache_dir: parent folder
            (:func:`default_cache_dir` when None).
        progress: optional progress callback.

    Raises:
        InputError: an unreadable or wrongly sized image.
    """
    parent = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = parent / f"store-{store_key(ds, img_root, size)}"
    if (folder / "index.json").exists():
        return ResizedStore(folder)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".store-", dir=parent))
    try:
        root = Path(img_root)
        images = np.memmap(tmp / "images.u8", np.uint8, "w+", shape=(max(1, len(ds.images)),
                                                                    size, size, 3))
        for k, im in enumerate(tracked(progress, ds.images, f"resizing images to {size}",
                                       len(ds.images))):
            images[k] = read_resized(image_path(root, im.file_name, f"image id {im.id}"), im.id,
                                     im.height, im.width, size)
        images.flush()
        pos = [t for t in ds.targets if t.positive]
        nbytes = math.ceil(size * size / 8)
        bits = np.memmap(tmp / "masks.bits", np.uint8, "w+", shape=(max(1, len(pos)), nbytes))
        for k, t in enumerate(tracked(progress, pos, "resizing masks", len(pos))):
            bits[k] = np.packbits(resized_mask(t.segmentation, size).reshape(-1))
        bits.flush()
        del images, bits
        meta = {"format": STORE_FORMAT, "size": size,
                "images": {str(im.id): k for k, im in enumerate(ds.images)},
                "masks": [[t.expression_id, t.image_id, k] for k, t in enumerate(pos)]}
        (tmp / "index.json").write_text(json.dumps(meta))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same store first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ResizedStore(folder)


def load_training_sets(data) -> tuple[GresDataset, list[dict]]:
    """The training set of a run: one canonical split, or the union of several (GRES §5.3 trains
    on G-RefC + G-RefC+ + G-RefCg; :func:`grdkit.format.derive.union` keeps every id distinct).

    Args:
        data: a path or :class:`GresDataset`, or a list / tuple of them.

    Returns:
        The dataset and its sources as ``config.json`` records them: one ``{"path", "name",
        "split", "expressions", "images", "targets"}`` per source, in order.

    Raises:
        InputError: an unreadable source, or sources that disagree on an image's size.
    """
    items = list(data) if isinstance(data, (list, tuple)) else [data]
    sets = [d if isinstance(d, GresDataset) else load_dataset(d) for d in items]
    sources = [{"path": None if d.path is None else str(d.path), "name": d.name,
                "split": d.split, "expressions": len(d.expressions), "images": len(d.images),
                "targets": len(d.targets)} for d in sets]
    return (sets[0] if len(sets) == 1 else union(sets)[0]), sources


def make_item(ds: GresDataset, store, expression_id: int, image_ids: list[int]) -> dict:
    """One item (see the module header) from a store or anything with ``image`` / ``mask``."""
    imgs = np.stack([store.image(i) for i in image_ids])
    msk = np.stack([store.mask(expression_id, i) for i in image_ids])
    return {
        "expression_id": expression_id,
        "expression": ds.expression(expression_id).text,
        "image_ids": list(image_ids),
        "images": torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(),
        "masks": torch.from_numpy(msk).unsqueeze(1),
        "positive": torch.tensor([ds.target(expression_id, i).positive for i in image_ids]),
        "sizes": torch.tensor([[ds.image(i).height, ds.image(i).width] for i in image_ids]),
    }


class GroupDataset(GRESDataset):
    """Training items: one per unit (expression, or ref with ``epoch_unit="ref"``) times
    ``repeats`` per epoch, read from the store; the sampling is :class:`grdkit.torch.GRESDataset`'s
    (group mode: one implementation), the item layout :func:`make_item`'s (module header).

    Args:
        ds: canonical dataset; store: a :class:`ResizedStore` of it (see :func:`build_store`);
        group_size: N; seed: sampling seed; repeats: items per unit per epoch (>= 1);
        epoch_unit: ``sentence`` or ``ref`` (:mod:`grdkit.torch`).

    Index with ``(epoch, k)`` (what :class:`EpochBatches` yields) or with ``k`` (epoch set by
    :meth:`set_epoch`).
    """

    def __init__(self, ds: GresDataset, store: ResizedStore, group_size: int = 8, seed: int = 0,
                 repeats: int = 1, epoch_unit: str = "sentence"):
        super().__init__(ds, mode="group", group_size=group_size, seed=seed,
                         repeats=max(1, int(repeats)), epoch_unit=epoch_unit, reader=store)
        self.store, self.size = store, store.size

    def __getitem__(self, key) -> dict:
        epoch, k = key if isinstance(key, tuple) else (self.epoch, key)
        eid, ids = self.sample(epoch, k)
        return make_item(self.ds, self.store, eid, ids)


def split_sizes(total: int, parts: int) -> list[int]:
    """``total`` items split into ``parts`` contiguous parts as evenly as possible: the first
    ``total % parts`` parts hold one item more (:func:`numpy.array_split`'s rule).

    Raises:
        ValueError: ``parts < 1`` or ``total < parts`` (a part would be empty).
    """
    if parts < 1 or total < parts:
        raise ValueError(f"cannot split {total} items into {parts} non-empty parts")
    base, extra = divmod(int(total), int(parts))
    return [base + (k < extra) for k in range(parts)]


class EpochBatches(torch.utils.data.Sampler):
    """Micro-batches of ``(epoch, item)`` keys for one rank.

    ``batch_size`` is the number of items (groups) per OPTIMISER STEP in total, over the ``world``
    processes and ``accum`` accumulation micro-steps. The epoch order (seeded by ``[seed, epoch,
    7]``) is padded by wrapping to a whole number of steps; each step's ``batch_size`` consecutive
    items are split by :func:`split_sizes` into ``world * accum`` parts (sizes differ by at most
    one when ``batch_size`` is not a multiple), and part ``m * world + rank`` is this rank's
    ``m``-th micro-batch of the step. Every rank yields ``accum`` micro-batches per step. The
    engine weights each micro-batch's loss by its item count (see
    :func:`.engine.micro_step`), so an uneven split still averages exactly over the step's items.
    Call :meth:`set_epoch` before iterating an epoch.

    Raises:
        ValueError: ``batch_size < world * accum`` (some micro-batch would be empty).
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0,
                 accum: int = 1):
        self.n, self.bs, self.rank, self.world, self.seed, self.epoch = \
            n, int(batch_size), rank, world, seed, 0
        self.accum = int(accum)
        self.sizes = split_sizes(self.bs, world * self.accum)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def steps(self) -> int:
        """Optimiser steps per epoch."""
        return max(1, math.ceil(self.n / self.bs))

    def order(self, epoch: int) -> np.ndarray:
        idx = np.random.default_rng([self.seed, epoch, 7]).permutation(self.n)
        return np.resize(idx, self.steps() * self.bs)

    def __len__(self) -> int:
        return self.steps() * self.accum

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order(self.epoch)
        starts = np.concatenate([[0], np.cumsum(self.sizes)])
        for s in range(self.steps()):
            chunk = order[s * self.bs:(s + 1) * self.bs]
            for m in range(self.accum):
                j = m * self.world + self.rank
                yield [(self.epoch, int(i)) for i in chunk[starts[j]:starts[j + 1]]]


class _DecodeOnTheFly:
    """``image`` read from the files; ``mask`` all zero (inference needs no ground truth, so none
    is decoded)."""

    def __init__(self, ds: GresDataset, img_root: str | Path, size: int):
        self.ds, self.root, self.size = ds, Path(img_root), int(size)

    def image(self, image_id: int) -> np.ndarray:
        im = self.ds.image(image_id)
        return read_resized(image_path(self.root, im.file_name, f"image id {image_id}"),
                            image_id, im.height, im.width, self.size)

    def mask(self, expression_id: int, image_id: int) -> np.ndarray:
        return np.zeros((self.size, self.size), np.uint8)


class InferenceItems(torch.utils.data.Dataset):
    """Every (expression, image) pair, as items of up to N images of a group (decoded by the
    DataLoader's workers)."""

    def __init__(self, ds: GresDataset, img_root: str | Path, size: int, group_size: int = 8):
        ds.require_complete()
        self.ds, self.source = ds, _DecodeOnTheFly(ds, img_root, size)
        self.chunks = []
        for e in ds.expressions:
            ids = list(ds.group(e.group_id).image_ids)
            self.chunks += [(e.id, ids[k:k + group_size]) for k in range(0, len(ids), group_size)]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> dict:
        eid, ids = self.chunks[k]
        return make_item(self.ds, self.source, eid, ids)


def collate(items: list[dict]) -> dict:
    """Pad groups to the largest n: ``(B, n_max, ...)`` tensors plus ``valid`` ``(B, n_max)``,
    ``counts`` (B ints), ``index`` (int64 ``(M,)`` flat positions ``b * n_max + k`` of the M
    valid images) and ``group`` (int64 ``(M,)``: b of each valid image), so models gather valid
    images and per-group features without a host sync."""
    b = len(items)
    n = max(len(it["image_ids"]) for it in items)
    s = items[0]["images"].shape[-1]
    out = {"expression_id": [it["expression_id"] for it in items],
           "expression": [it["expression"] for it in items],
           "image_ids": [it["image_ids"] for it in items],
           "images": torch.zeros(b, n, 3, s, s, dtype=items[0]["images"].dtype),
           "masks": torch.zeros(b, n, 1, s, s, dtype=items[0]["masks"].dtype),
           "positive": torch.zeros(b, n, dtype=torch.bool),
           "sizes": torch.zeros(b, n, 2, dtype=torch.long),
           "valid": torch.zeros(b, n, dtype=torch.bool),
           "counts": [len(it["image_ids"]) for it in items]}
    for j, it in enumerate(items):
        m = len(it["image_ids"])
        for k in ("images", "masks", "positive", "sizes"):
            out[k][j, :m] = it[k]
        out["valid"][j, :m] = True
    out["index"] = torch.tensor([j * n + k for j, c in enumerate(out["counts"])
                                 for k in range(c)], dtype=torch.long)
    out["group"] = torch.tensor([j for j, c in enumerate(out["counts"]) for _ in range(c)],
                                dtype=torch.long)
    return out


def valid_rows(batch: dict, key: str) -> torch.Tensor:
    """``batch[key]`` ``(B, n, ...)`` -> its valid rows ``(M, ...)`` in (group, image) order,
    gathered with ``batch["index"]`` (no host sync)."""
    x = batch[key]
    return x.flatten(0, 1).index_select(0, batch["index"])
