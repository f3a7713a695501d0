import json
import pickle
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
REFCOCOG = SHARED / "refcocog_umd_sample"
MSRC_COW = SHARED / "msrc_cow"
COCO_IMAGES = SHARED / "coco_train2014_images"


@pytest.fixture(autouse=True, scope="session")
def _resized_store_cache(tmp_path_factory):
    """Baseline training builds resized stores: keep them in a temporary folder, never in ~."""
    import os

    old = os.environ.get("GRDKIT_CACHE")
    os.environ["GRDKIT_CACHE"] = str(tmp_path_factory.mktemp("grdkit-cache"))
    yield
    if old is None:
        os.environ.pop("GRDKIT_CACHE", None)
    else:
        os.environ["GRDKIT_CACHE"] = old


def cow_store(size: int = 64):
    """The resized store of :func:`cow_dataset` (built once per session)."""
    from grdkit.baselines.data import build_store

    return build_store(cow_dataset(), SHARED, size)


def need(path: Path) -> Path:
    """Skip (with the reason) when a ../shared/data folder is absent, as in a user's clone."""
    if not path.exists():
        pytest.skip(f"real data folder {path} is absent (CI always has ../shared/data)")
    return path


@pytest.fixture
def refcocog_root() -> Path:
    return need(REFCOCOG)


@pytest.fixture
def refer_copy(tmp_path, refcocog_root) -> Path:
    """A writable copy of the real RefCOCOg sample, for corrupting."""
    dst = tmp_path / "refer"
    shutil.copytree(refcocog_root, dst)
    return dst


def run_cli(argv, capsys):
    """Run grdkit in-process; return (exit code, stdout, stderr)."""
    from grdkit.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def load_refs_py3(path: Path):
    with open(path, "rb") as f:
        return pickle.load(f)


def write_refer(folder: Path, refs, instances, split_by="umd") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"refs({split_by}).p").write_bytes(pickle.dumps(refs, protocol=2))
    (folder / "instances.json").write_text(json.dumps(instances))
    return folder


def cow_dataset(with_negatives: bool = True):
    """The real MSRC "cow" group (30 positives) plus the 33 COCO images as negatives."""
    from grdkit.builders.imagegroup import group_from_files

    need(MSRC_COW)
    pos = [(f"msrc_cow/images/{p.name}", f"msrc_cow/masks/{p.name}")
           for p in sorted((MSRC_COW / "images").glob("*.png"))]
    neg = []
    if with_negatives:
        need(COCO_IMAGES)
        neg = [f"coco_train2014_images/{p.name}" for p in sorted(COCO_IMAGES.glob("*.jpg"))]
    return group_from_files(SHARED, "cow", pos, neg, name="msrc-cow")


def dataset_from_dense(groups, name="dense", split="val"):
    """Canonical dataset from dense masks: groups = [[gt bool HxW, ...], ...] (empty = negative)."""
    from grdkit import masks
    from grdkit.format.dataset import Expression, GresDataset, Group, Image, Target

    images, exprs, grps, targets = [], [], [], []
    img_id = 0
    for g, gts in enumerate(groups, start=1):
        ids = []
        for m in gts:
            img_id += 1
            ids.append(img_id)
            h, w = m.shape
            images.append(Image(img_id, f"{img_id}.png", h, w))
            targets.append(Target(g, img_id, bool(m.any()), masks.encode(m), ()))
        exprs.append(Expression(g, f"expression {g}", g))
        grps.append(Group(g, (g,), tuple(ids)))
    info = {"name": name, "split": split, "grdkit_version": "test", "recipe": {}, "sources": {}}
    return GresDataset(info, images, exprs, grps, targets)
