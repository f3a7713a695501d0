"""``grdkit eval --workers N``: Co-SOD statistics scored in worker processes give a report
byte-identical to one worker's (soft PNG maps and RLE masks, both Co-SOD protocols)."""

import json

import numpy as np
import pytest
from PIL import Image as PILImage

import grdkit
from grdkit import masks

from .conftest import dataset_from_dense, run_cli


def soft_case(tmp_path):
    rng = np.random.default_rng(4)
    groups = []
    for g in range(3):
        gts = []
        for k in range(4):
            m = np.zeros((30 + g, 41), bool)
            if k % 3:
                m[5:15 + k, 3:20 + g] = True
            gts.append(m)
        groups.append(gts)
    ds = dataset_from_dense(groups)
    gt = tmp_path / "val.json"
    grdkit.save_dataset(ds, gt)
    folder = tmp_path / "maps"
    for t in ds.targets:
        if rng.random() < 0.15:
            continue  # missing: scored as an all-zero map or skipped, per protocol
        m = masks.decode(t.segmentation).astype(float)
        soft = np.clip(m * 200 + rng.normal(0, 40, m.shape), 0, 255).astype(np.uint8)
        d = folder / str(t.expression_id)
        d.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(soft).save(d / f"{t.image_id}.png")
    return ds, gt, folder


@pytest.mark.parametrize("protocol", ["pysodmetrics", "eval-co-sod"])
def test_workers_give_byte_identical_reports(tmp_path, capsys, protocol):
    _, gt, folder = soft_case(tmp_path)
    outs = []
    for n in (1, 2):
        out = tmp_path / f"r{n}.json"
        code, _, err = run_cli(["eval", folder, "--gt", gt, "--cosod", "--cosod-protocol",
                                protocol, "--workers", n, "--json", out], capsys)
        assert code == 0, err
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert json.loads(outs[0])["metrics"]["mae"] is not None


def test_workers_api_and_rle_predictions(tmp_path):
    ds, _, _ = soft_case(tmp_path)
    preds = [{"expression_id": t.expression_id, "image_id": t.image_id,
              "segmentation": t.segmentation if k % 2 else None}
             for k, t in enumerate(ds.targets)]
    a = grdkit.evaluate(preds, ds, cosod=True, workers=1)
    b = grdkit.evaluate(preds, ds, cosod=True, workers=3)
    assert a.to_json() == b.to_json()
    with pytest.raises(ValueError, match="workers"):
        grdkit.evaluate(preds, ds, cosod=True, workers=0)
