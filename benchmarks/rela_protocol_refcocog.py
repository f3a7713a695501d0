"""How far the rela protocol's GT resize moves the metrics on real RefCOCOg polygons.

grdkit's ``--protocol rela`` resizes the *rasterised* ground-truth mask to 480 x 480 (centre-sampled
nearest neighbour). ReLA itself scales the GT *polygons* to 480 x 480 and rasterises them there
(``refcoco_mapper.py``: ``T.Resize((480, 480))``, ``transform_instance_annotations``,
``convert_coco_poly_to_mask``); crowd RLEs go through ``apply_segmentation`` (nearest). This script
builds G-RefCg from the real RefCOCOg (umd) sample (``--min-images 1``), predicts every positive
pair with the union of its GT polygons' boxes (as ``tests/test_real_refcocog.py`` does) and prints:

* ``grdkit``: metrics at the original resolution;
* ``rela (grdkit)``: grdkit's rela protocol (GT mask resized);
* ``rela (polygons at 480)``: the same predictions resized the same way, against GT polygons
  scaled to 480 x 480 and rasterised with pycocotools: the "true ReLA" ground truth;

plus how many GT pixels differ between the two 480 x 480 ground truths.

Usage: python benchmarks/rela_protocol_refcocog.py [--refer-root ../shared/data/refcocog_umd_sample]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's grdkit, not an installed one
SIZE = 480


def box_mask(coco: COCO, ann_ids, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    for a in ann_ids:
        x, y, bw, bh = coco.anns[a]["bbox"]
        m[int(np.floor(y)):int(np.ceil(y + bh)), int(np.floor(x)):int(np.ceil(x + bw))] = True
    return m


def gt_at_480(coco: COCO, ann_ids, h: int, w: int) -> np.ndarray:
    """ReLA's GT: polygons scaled by (480 / w, 480 / h), rasterised at 480 x 480 and merged."""
    from grdkit.evaluators.functional import resize_nearest

    out = np.zeros((SIZE, SIZE), bool)
    for a in ann_ids:
        seg = coco.anns[a]["segmentation"]
        if isinstance(seg, list):
            polys = [np.asarray(p, np.float64) for p in seg if len(p) % 2 == 0 and len(p) >= 6]
            scaled = []
            for p in polys:
                q = p.copy()
                q[0::2] *= SIZE / w
                q[1::2] *= SIZE / h
                scaled.append(q.tolist())
            if scaled:
                rles = mask_utils.frPyObjects(scaled, SIZE, SIZE)
                out |= mask_utils.decode(mask_utils.merge(rles)).astype(bool)
        else:  # crowd RLE: detectron2 apply_segmentation, nearest neighbour
            rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
            out |= resize_nearest(mask_utils.decode(rle).astype(bool))
    return out


def main() -> None:
    import grdkit
    from grdkit.builders import build_dataset
    from grdkit.evaluators.functional import gres_metrics, resize_nearest
    from grdkit.format import masks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refer-root", type=Path,
                    default=ROOT.parent / "shared" / "data" / "refcocog_umd_sample")
    a = ap.parse_args()
    ds, _ = build_dataset("g-refcocog", a.refer_root, min_images=1)
    coco = COCO(str(a.refer_root / "instances.json"))
    preds, inter, union, gt_pos, pred_pos = [], [], [], [], []
    gi, gu = [], []  # the GT masks themselves as predictions, against ReLA's 480 GT
    diff_px = gt_px = 0
    for split, d in ds.items():
        for t in d.targets:
            im = d.image(t.image_id)
            box = box_mask(coco, t.ann_ids, im.height, im.width)
            preds.append({"split": split, "expression_id": t.expression_id,
                          "image_id": t.image_id,
                          "segmentation": masks.encode(box) if box.any() else None})
            p480 = resize_nearest(box) if box.any() else np.zeros((SIZE, SIZE), bool)
            g480 = gt_at_480(coco, t.ann_ids, im.height, im.width)
            g480_mask = resize_nearest(masks.decode(t.segmentation).astype(bool))
            diff_px += int(np.count_nonzero(g480 ^ g480_mask))
            gt_px += int(np.count_nonzero(g480))
            gi.append(int(np.count_nonzero(g480_mask & g480)))
            gu.append(int(np.count_nonzero(g480_mask | g480)))
            inter.append(int(np.count_nonzero(p480 & g480)))
            union.append(int(np.count_nonzero(p480 | g480)))
            gt_pos.append(t.positive)
            pred_pos.append(bool(box.any()))
    rows = {"grdkit": grdkit.evaluate(preds, ds).metrics,
            "rela (grdkit)": grdkit.evaluate(preds, ds, protocol="rela").metrics,
            "rela (polygons at 480)": gres_metrics(inter, union, gt_pos, pred_pos)}
    keys = ("gres_miou", "res_miou", "ciou", "pr@0.5", "pr@0.7", "pr@0.9")
    n = sum(len(d.targets) for d in ds.values())
    print(f"real RefCOCOg (umd) sample: {n} pairs ({sum(gt_pos)} target) in "
          f"{sum(len(d.groups) for d in ds.values())} groups; predictions = GT polygon boxes")
    print(f"{'protocol':<24}" + "".join(f"{k:>11}" for k in keys))
    for name, m in rows.items():
        print(f"{name:<24}" + "".join(f"{m[k]:11.4f}" for k in keys))
    d = {k: rows["rela (grdkit)"][k] - rows["rela (polygons at 480)"][k] for k in keys}
    print(f"{'approximation error':<24}" + "".join(f"{d[k]:+11.4f}" for k in keys))
    m = gres_metrics(gi, gu, gt_pos, gt_pos)
    print(f"GT masks submitted as predictions (100 under grdkit and rela): against polygons at "
          f"480, gres_miou {m['gres_miou']:.4f}, res_miou {m['res_miou']:.4f}, "
          f"ciou {m['ciou']:.4f}")
    print(f"GT pixels at 480x480 that differ (resized mask vs polygons rasterised at 480): "
          f"{diff_px} of {gt_px} ({100 * diff_px / max(gt_px, 1):.2f}%)")


if __name__ == "__main__":
    main()
