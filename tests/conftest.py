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
