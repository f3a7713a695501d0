"""``grdkit reproduce --smoke``: every row end to end at toy scale on a CPU, with no data.

:func:`write_toy_data` writes, under one folder laid out as ``--data-root`` expects
(:data:`grdkit.reproduce.api.SOURCES`), synthetic data in each source's released layout: refer
pickles + ``instances.json`` for RefCOCO / RefCOCO+ / RefCOCOg, gRefCOCO's ``grefs(unc).json``,
the four D³ pickles, CoCA's ``image`` / ``binary`` group folders, and a JPEG for every image
(:mod:`grdkit.testing.synth`). The builders then read them exactly as they read the real files.

:func:`smoke_options` shrinks a run: one optimiser step, batch 1, CPU, no DataLoader workers,
the bundled EfficientNet-Lite0 and MiniLM encoders (both frozen) in place of a preset's local
Swin-B / BERT / Darknet53 weights, narrow heads, and the input size scaled down from the run's
(:func:`smoke_size`: 320 -> 64 px, +8 px per 32 px, so rows that differ by size stay distinct).
Everything else (the preset's other settings, the row's ablation switches, N, ranking) is kept,
so the plan's sharing of steps is the real plan's.
"""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_write_text

# part of every smoke build step's config: bump it when the toy data changes
SMOKE_BUILD = {"toy_data": 2}

COMMON = {"epochs": 1, "max_steps": 1, "batch_size": 1, "workers": 0, "device": "cpu",
          "vision": "efficientnet_lite0", "vision_weights": "bundled",
          "text": "all-MiniLM-L6-v2", "train_text": False, "freeze_vision": True}
PER_MODEL = {"grser": {"width": 16},
             "lts": {"width": 16, "d_k": 32, "vision_norm": "auto"},
             "mabp": {"width": 32, "heads": 2, "layers": 1, "enc_layers": 1, "enc_ffn": 64,
                      "dec_ffn": 64}}

_TOY_SPLITS = {"umd": (("train", 0.5), ("val", 0.25), ("test", 0.25)),
               "unc": (("train", 0.4), ("val", 0.2), ("testA", 0.2), ("testB", 0.2)),
               "google": (("train", 0.5), ("val", 0.5))}


def smoke_size(size: int) -> int:
    """The toy input size of a run trained at ``size``: 320 -> 64, +8 px per 32 px (at least 64,
    so a single-image batch (LTS, MABP: group size 1) still has 2 x 2 cells at stride 32, which
    BatchNorm needs in training)."""
    return max(64, 64 + (size - 320) // 32 * 8)


def smoke_options(model: str, options: dict) -> dict:
    """``options`` with the toy settings of the module header (size: see :func:`smoke_size`,
    applied by the planner once the preset's size is known)."""
    return {**options, **COMMON, **PER_MODEL.get(model, {})}


def _shrink_rle(rle: dict, f: int) -> dict:
    """A COCO RLE (compressed or uncompressed) at 1/f of its size, nearest sampling, written back
    in the same form (uncompressed column-major runs for crowd annotations, as COCO has them)."""
    import numpy as np
    from pycocotools import mask as mask_utils

    h, w = rle["size"]
    if isinstance(rle["counts"], list):
        m = mask_utils.decode(mask_utils.frPyObjects(rle, h, w))
    else:
        c = rle["counts"]
        m = mask_utils.decode({"size": [h, w], "counts": c if isinstance(c, bytes) else c.encode()})
    m = np.asfortranarray(m[::f, ::f].astype(np.uint8))
    if isinstance(rle["counts"], list):
        flat = m.flatten(order="F")
        edges = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
        return {"size": list(m.shape), "counts": ([0] if flat[0] else []) + runs}
    out = mask_utils.encode(m)
    if isinstance(rle["counts"], str):
        out["counts"] = out["counts"].decode("ascii")
    return {"size": list(m.shape), "counts": out["counts"]}


def shrink_instances(instances: dict, f: int) -> dict:
    """COCO instances at 1/f of their image size (polygons scaled, RLEs resampled): toy data
    keeps the layout of the real files but costs f^2 less to decode, resize and score."""
    for im in instances["images"]:
        im["height"], im["width"] = -(-im["height"] // f), -(-im["width"] // f)
    for a in instances["annotations"]:
        seg = a["segmentation"]
        if isinstance(seg, dict):
            a["segmentation"] = _shrink_rle(seg, f)
        else:
            a["segmentation"] = [[round(v / f, 2) for v in poly] for poly in seg]
    return instances


def shrink_d3(tables: dict, f: int) -> dict:
    """D³ tables at 1/f of their image size (see :func:`shrink_instances`)."""
    from pycocotools import mask as mask_utils

    for im in tables["images.pkl"].values():
        im["height"], im["width"] = -(-im["height"] // f), -(-im["width"] // f)
    for a in tables["annotations.pkl"].values():
        a["segmentation"] = _shrink_rle(a["segmentation"], f)
        c = a["segmentation"]["counts"]
        rle = {"size": a["segmentation"]["size"], "counts": c if isinstance(c, bytes)
               else c.encode()}
        a["area"] = float(mask_utils.area(rle))
        a["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
    return tables


SHRINK = 8  # toy images are 1/8 of COCO's sizes (80 x 60 for 640 x 480)


def write_toy_data(root: str | Path) -> Path:
    """Write the toy ``--data-root`` (module header) once; deterministic. Returns ``root``."""
    from ..testing import synth

    root = Path(root)
    done = root / ".grdkit-toy-data.json"
    if done.exists():
        return root
    images = []
    refer = {"refcoco": 1, "refcoco+": 1001, "refcocog": 2001}
    for k, (name, first) in enumerate(refer.items()):
        refs, inst = synth.generate_refer(24, seed=10 + k, instances_per_image=3.0,
                                          refs_per_image=2.0, sentences_per_ref=1.5,
                                          p_common=0.9, common_pool=4, first_image_id=first,
                                          split_ratios=_TOY_SPLITS)
        inst = shrink_instances(inst, SHRINK)
        synth.write_refer(root / name, refs, inst)
        images += inst["images"]
    # 12 images: every split has targets, train and val have a no-target expression
    refs, inst = synth.generate_refer(12, seed=22, instances_per_image=3.0, refs_per_image=2.0,
                                      sentences_per_ref=1.2, p_common=0.3, common_pool=4,
                                      first_image_id=3001, split_ratios=_TOY_SPLITS)
    inst = shrink_instances(inst, SHRINK)
    grefs = synth.grefs_from_refer(refs["unc"], inst, p_no_target=0.4)
    synth.write_grefcoco(root / "grefcoco", grefs, inst)
    images += inst["images"]
    synth.write_images(root / "images" / "train2014", images)
    d3 = synth.generate_d3(n_groups=2, images_per_group=4, presence_per_group=2.0,
                           shared_sentences=0, seed=30, first_image_id=5001)
    d3 = shrink_d3(d3, SHRINK)
    synth.write_d3(root / "d3", d3)
    synth.write_images(root / "d3" / "images", list(d3["images.pkl"].values()), seed=31)
    synth.write_cosod_folders(root / "coca", seed=32)
    atomic_write_text(done, '{"grdkit_toy_data": 1}\n')
    return root
