"""Co-SOD group folders (CoCA, CoSal2015, CoSOD3k): listing groups and pairing images with masks.

Input contract (the layout of the released benchmarks and their authors' tools, e.g. CoCA's
``image/<group>/*.jpg`` + ``binary/<group>/*.png``, CoSal2015 / CoSOD3k's ``Image/`` +
``GroundTruth/``; lartpang/CoSaliencyProj ``configs/cosod_path.py``)::

    <images>/<group>/<name>.jpg | <name>.png      one folder per group
    <masks>/<group>/<name>.png                    the image's foreground mask

An image and a mask pair up by group folder and file stem (GCoNet+ ``dataset.py`` derives the
mask path from the image name the same way). The reference loaders silently drop what does not
pair (zzhanghub/eval-co-sod ``dataloader.py`` intersects the file lists); here an image without a
mask, a mask without an image, a group folder on one side only, or two images with one stem is an
error naming the file, so nothing is dropped. Hidden files (``.*``) and ``Thumbs.db`` are
ignored; any other file is an error. Group names are kept as they are (spaces, capitals,
underscores).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io.files import check_regular

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = ".png"
_IGNORED = ("Thumbs.db",)


@dataclass(frozen=True)
class CosodGroup:
    """One group folder: its name and ``(image path, mask path)`` pairs, both relative to their
    roots (``<group>/<name>.jpg``, ``<group>/<name>.png``), sorted by image path."""

    name: str
    pairs: tuple[tuple[str, str], ...]


def _entries(folder: Path) -> list[Path]:
    out = sorted(p for p in folder.iterdir()
                 if not p.name.startswith(".") and p.name not in _IGNORED)
    for p in out:  # a name of bytes that are not UTF-8 cannot be written to JSON (file_name)
        try:
            p.name.encode("utf-8")
        except UnicodeEncodeError:
            shown = p.name.encode("utf-8", "surrogateescape")[:80]
            raise InputError(folder, f"holds a name that is not UTF-8: {shown!r}",
                             hint="rename it (grdkit writes file names to JSON, as UTF-8)"
                             ) from None
    return out


def _files(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in _entries(folder):
        if p.suffix.lower() in suffixes and not p.is_dir():  # a FIFO or device: named as such
            check_regular(p, f"{what.split()[-1]} file", record=f"group {folder.name!r}")
        if not p.is_file() or p.suffix.lower() not in suffixes:
            raise InputError(p, f"is not {what} file ({' / '.join(suffixes)})",
                             f"group {folder.name!r}",
                             "a group folder holds only its images (or masks)")
        if p.stem in out:
            raise InputError(p, f"has the same name as {out[p.stem].name}",
                             f"group {folder.name!r}", "one file per image name")
        out[p.stem] = p
    return out


def _groups(root: Path, what: str) -> dict[str, Path]:
    if not root.is_dir():
        raise InputError(root, f"{what} folder not found",
                         hint=f"point at the folder holding one sub-folder of {what} per group")
    out = {}
    for p in _entries(root):
        if not p.is_dir():
            raise InputError(p, f"is not a group folder (the {what} root holds one folder per "
                             "group)")
        out[p.name] = p
    return out


def read_cosod_folders(images: str | Path, masks: str | Path) -> list[CosodGroup]:
    """List the groups of a Co-SOD dataset and pair every image with its mask.

    Args:
        images: root of ``<group>/<name>.(jpg|png)``.
        masks: root of ``<group>/<name>.png``.

    Returns:
        Groups sorted by folder name, each with its pairs sorted by image name.

    Raises:
        InputError: a missing root; a group folder on one side only; an image without a mask or
            a mask without an image; two images with one name; an empty group; an unexpected
            file (each naming the file and the group).
    """
    images, masks = Path(images), Path(masks)
    img_groups, mask_groups = _groups(images, "images"), _groups(masks, "masks")
    for name in sorted(set(mask_groups) - set(img_groups)):
        raise InputError(mask_groups[name], "mask folder has no image folder",
                         f"group {name!r}", f"expected {images / name}")
    out = []
    for name, folder in sorted(img_groups.items()):
        if name not in mask_groups:
            raise InputError(folder, "image folder has no mask folder", f"group {name!r}",
                             f"expected {masks / name}")
        imgs = _files(folder, IMAGE_SUFFIXES, "an image")
        msks = _files(mask_groups[name], (MASK_SUFFIX,), "a mask")
        for stem, p in imgs.items():
            if stem not in msks:
                raise InputError(p, "image has no mask", f"group {name!r}",
                                 f"expected {mask_groups[name] / (stem + MASK_SUFFIX)}")
        for stem, p in msks.items():
            if stem not in imgs:
                raise InputError(p, "mask has no image", f"group {name!r}",
                                 f"expected {folder / stem}.jpg or .png")
        if not imgs:
            raise InputError(folder, "group folder holds no image", f"group {name!r}")
        pairs = sorted((f"{name}/{imgs[s].name}", f"{name}/{msks[s].name}") for s in imgs)
        out.append(CosodGroup(name, tuple(pairs)))
    if not out:
        raise InputError(images, "holds no group folder",
                         hint="expected <images>/<group>/<name>.jpg")
    return out
