"""Deterministic generator of refer-format data (``refs(*).p`` + ``instances.json``).

It makes grdkit's bundled demo sample and the full-scale benchmark input. Everything is synthetic
and drawn from ``numpy.random.default_rng(seed)``: the same arguments give the same files.

What it imitates (RefCOCOg umd: 25,799 images, 49,822 refs, 95,010 sentences, ~200k instances):

* COCO-like image sizes (640 on the long side; 480, 427, 640, 360, ... on the short side);
* ``instances_per_image`` star-shaped (hence valid) polygons per image, 1-3 parts, plus ~1%
  crowd instances stored as uncompressed RLE, as in COCO;
* ``refs_per_image`` refs per image, each referring to one non-crowd instance, with 1-3 sentences;
* a long tail of repeated sentences: with probability ``p_common`` a sentence is drawn from a
  Zipf-weighted pool of ``common_pool`` short phrases ("the man on the left"), so a few thousand
  sentences recur across images, as in the real data; all other sentences are near-unique;
* splits assigned per image for ``umd`` (train/val/test), ``unc`` (train/val/testA/testB) and
  ``google`` (train/val), written to ``refs(umd).p``, ``refs(unc).p`` and ``refs(google).p``.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np

from ..io import atomic_write_bytes, atomic_write_text

CATEGORIES = [
    "person", "bicycle", "car", "motorcycle", "bus", "train", "truck", "boat", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "umbrella",
    "chair", "couch", "bed", "dining table", "laptop", "cup", "bowl", "pizza", "cake", "vase",
]
_WORDS = {
    "color": ["red", "blue", "white", "black", "green", "yellow", "brown", "gray", "pink",
              "orange", "purple", "dark", "light", "striped", "spotted"],
    "size": ["big", "small", "tall", "short", "large", "tiny", "long"],
    "where": ["on the left", "on the right", "in the middle", "in front", "in the back",
              "closest to the camera", "far away", "at the top", "at the bottom", "near the edge"],
    "verb": ["holding", "next to", "behind", "under", "beside", "facing", "near", "on top of",
             "looking at", "touching"],
    "thing": ["a table", "the window", "a tree", "the fence", "a plate", "the wall", "a car",
              "the door", "a bag", "the grass", "a sign", "the road", "a box", "the water"],
}
SPLIT_RATIOS = {
    "umd": (("train", 0.85), ("val", 0.05), ("test", 0.10)),
    "unc": (("train", 0.84), ("val", 0.06), ("testA", 0.05), ("testB", 0.05)),
    "google": (("train", 0.90), ("val", 0.10)),
}
_SHORT_SIDES = np.array([480, 427, 640, 360, 425, 512, 424, 383])
_SHORT_P = np.array([0.42, 0.25, 0.10, 0.07, 0.05, 0.04, 0.04, 0.03])


def _pick(rng: np.random.Generator, seq: list):
    return seq[int(rng.integers(len(seq)))]


def _unique_sentence(rng: np.random.Generator, cat: str) -> str:
    w = _WORDS
    form = int(rng.integers(4))
    if form == 0:
        return f"the {_pick(rng, w['color'])} {cat} {_pick(rng, w['where'])}"
    if form == 1:
        return (f"a {_pick(rng, w['size'])} {_pick(rng, w['color'])} {cat} "
                f"{_pick(rng, w['verb'])} {_pick(rng, w['thing'])} {_pick(rng, w['where'])}")
    if form == 2:
        return (f"{cat} {_pick(rng, w['verb'])} {_pick(rng, w['thing'])} with a "
                f"{_pick(rng, w['color'])} {_pick(rng, w['thing']).split()[-1]}")
    return (f"the {_pick(rng, w['size'])} {cat} {_pick(rng, w['verb'])} the "
            f"{_pick(rng, w['color'])} {_pick(rng, w['thing']).split()[-1]} "
            f"{_pick(rng, w['where'])}")


def _common_phrases(n: int) -> list[tuple[str, int]]:
    """A fixed, ordered pool of short phrases with their category index (no randomness)."""
    out = []
    k = 0
    while len(out) < n:
        cat = k % len(CATEGORIES)
        where = _WORDS["where"][(k // len(CATEGORIES)) % len(_WORDS["where"])]
        color = _WORDS["color"][(k // (len(CATEGORIES) * len(_WORDS["where"])))
                                % len(_WORDS["color"])]
        tier = k // (len(CATEGORIES) * len(_WORDS["where"]))
        text = f"{CATEGORIES[cat]} {where}" if tier == 0 else f"{color} {CATEGORIES[cat]} {where}"
        out.append((text, cat))
        k += 1
    return out


def _polygon(rng: np.random.Generator, cx: float, cy: float, r: float, h: int, w: int) -> list:
    n = int(rng.integers(8, 25))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.5, 1.0, n)
    xs = np.clip(cx + rad * np.cos(ang), 0, w - 1)
    ys = np.clip(cy + rad * np.sin(ang), 0, h - 1)
    return [round(float(v), 2) for xy in zip(xs, ys) for v in xy]


def _crowd_rle(rng: np.random.Generator, h: int, w: int) -> dict:
    """A rectangle as uncompressed column-major RLE (COCO's crowd format)."""
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    rw, rh = int(rng.integers(4, w // 2)), int(rng.integers(4, h // 2))
    counts = [x0 * h + y0]
    for c in range(rw):
        counts.append(rh)
        counts.append(h - rh if c < rw - 1 else 0)
    tail = h * w - sum(counts)
    counts[-1] += tail
    return {"size": [h, w], "counts": counts}


def generate_refer(num_images: int, seed: int = 0, instances_per_image: float = 7.75,
                   refs_per_image: float = 1.93, sentences_per_ref: float = 1.91,
                   p_common: float = 0.08, common_pool: int = 3000,
                   first_image_id: int = 1, split_ratios: dict | None = None
                   ) -> tuple[dict[str, list], dict]:
    """Generate refer-format data in memory.

    Args:
        num_images: number of COCO-like images.
        seed: randomness seed.
        instances_per_image, refs_per_image, sentences_per_ref: mean counts (Poisson-like).
        p_common: probability that a sentence comes from the shared phrase pool.
        common_pool: size of that pool (Zipf-weighted, exponent 1.1).
        first_image_id: id of the first image (ids are consecutive).
        split_ratios: ``{splitBy: ((split, fraction), ...)}``; default :data:`SPLIT_RATIOS`.

    Returns:
        ``(refs_by_split_by, instances)``: ``{"umd": [ref, ...], "unc": [...], "google": [...]}``
        (the same refs with different ``split`` values) and the COCO instances dict.
    """
    rng = np.random.default_rng(seed)
    phrases = _common_phrases(common_pool)
    weights = 1.0 / np.arange(1, common_pool + 1) ** 1.1
    weights /= weights.sum()
    images, anns, refs = [], [], []
    ann_id, ref_id, sent_id = 1, 1, 1
    for k in range(num_images):
        img_id = first_image_id + k
        short = int(rng.choice(_SHORT_SIDES, p=_SHORT_P))
        h, w = (short, 640) if rng.random() < 0.75 else (640, short)
        images.append({"id": img_id, "file_name": f"SYNTH_{img_id:012d}.jpg", "height": h,
                       "width": w, "license": 1})
        n_inst = max(1, int(rng.poisson(instances_per_image)))
        img_anns = []
        for _ in range(n_inst):
            cat = int(rng.integers(len(CATEGORIES)))
            if rng.random() < 0.01:
                seg = _crowd_rle(rng, h, w)
                crowd = 1
            else:
                parts = []
                r0 = float(rng.uniform(8, min(h, w) / 3))
                cx, cy = float(rng.uniform(r0, w - r0)), float(rng.uniform(r0, h - r0))
                for p in range(1 if rng.random() < 0.85 else int(rng.integers(2, 4))):
                    parts.append(_polygon(rng, cx + 1.5 * r0 * p, cy, r0 / (1 + p), h, w))
                seg, crowd = parts, 0
            anns.append({"id": ann_id, "image_id": img_id, "category_id": cat + 1,
                         "iscrowd": crowd, "segmentation": seg, "area": 0.0,
                         "bbox": [0.0, 0.0, 0.0, 0.0]})
            if not crowd:
                img_anns.append((ann_id, cat))
            ann_id += 1
        n_refs = min(len(img_anns), max(1, int(rng.poisson(refs_per_image - 1) + 1)))
        chosen = rng.choice(len(img_anns), size=n_refs, replace=False) if img_anns else []
        for j in sorted(int(x) for x in chosen):
            a_id, cat = img_anns[j]
            n_sent = min(3, max(1, int(rng.poisson(sentences_per_ref - 1) + 1)))
            sents = []
            for _ in range(n_sent):
                if rng.random() < p_common:
                    text, pcat = phrases[int(rng.choice(common_pool, p=weights))]
                    # a repeated phrase names its own category: re-point the ann's category
                    anns[a_id - anns[0]["id"]]["category_id"] = pcat + 1
                    cat = pcat
                else:
                    text = _unique_sentence(rng, CATEGORIES[cat])
                sents.append({"tokens": text.split(), "raw": text.capitalize() + ".",
                              "sent_id": sent_id, "sent": text})
                sent_id += 1
            refs.append({"image_id": img_id, "split": None, "sentences": sents,
                         "file_name": f"SYNTH_{img_id:012d}_{a_id}.jpg", "category_id": cat + 1,
                         "ann_id": a_id, "sent_ids": [s["sent_id"] for s in sents],
                         "ref_id": ref_id})
            ref_id += 1
    split_draw = rng.random(num_images)
    by: dict[str, list] = {}
    for split_by, ratios in (split_ratios or SPLIT_RATIOS).items():
        edges = np.cumsum([r for _, r in ratios])
        names = [n for n, _ in ratios]
        out = []
        for r in refs:
            u = split_draw[r["image_id"] - first_image_id]
            name = names[min(int(np.searchsorted(edges, u, side="right")), len(names) - 1)]
            out.append({**r, "split": name})
        by[split_by] = out
    instances = {
        "info": {"description": "grdkit synthetic refer-format data", "version": "1.0"},
        "licenses": [{"id": 1, "name": "CC0 (synthetic)", "url": ""}],
        "images": images, "annotations": anns,
        "categories": [{"id": i + 1, "name": c, "supercategory": c}
                       for i, c in enumerate(CATEGORIES)],
    }
    return by, instances


def write_refer(folder: str | Path, refs_by_split_by: dict[str, list], instances: dict) -> None:
    """Write ``refs(<splitBy>).p`` (pickle protocol 2, as the refer toolkit's) and instances.json."""
    folder = Path(folder)
    for split_by, refs in refs_by_split_by.items():
        atomic_write_bytes(folder / f"refs({split_by}).p", pickle.dumps(refs, protocol=2))
    atomic_write_text(folder / "instances.json",
                      json.dumps(instances, separators=(",", ":")) + "\n")


DEMO_SPLITS = {
    "umd": (("train", 0.5), ("val", 0.25), ("test", 0.25)),
    "unc": (("train", 0.4), ("val", 0.2), ("testA", 0.2), ("testB", 0.2)),
    "google": (("train", 0.6), ("val", 0.4)),
}
DEMO_ARGS = {"num_images": 60, "seed": 2023, "instances_per_image": 4.0, "refs_per_image": 2.0,
             "sentences_per_ref": 1.5, "p_common": 0.5, "common_pool": 10,
             "split_ratios": DEMO_SPLITS}


def demo_root() -> Path:
    """Folder of the bundled demo sample (package data, generated by :func:`write_demo`)."""
    return Path(__file__).parent / "demo_refer"


def write_demo(folder: str | Path | None = None) -> Path:
    """(Re)generate the bundled demo sample: 60 synthetic images, refs in umd/unc/google."""
    folder = Path(folder) if folder else demo_root()
    refs, inst = generate_refer(**DEMO_ARGS)
    write_refer(folder, refs, inst)
    return folder


def write_demo_files(folder: str | Path) -> dict[str, Path]:
    """The bundled demo sample as a user would have it on disk, with synthetic photos.

    Writes, under ``folder``:

    * ``refer/``: the bundled refer-format files (``refs(umd|unc|google).p``, ``instances.json``),
      copied byte for byte from :func:`demo_root`;
    * ``images/``: one JPEG per image of ``instances.json`` (its ``file_name``, height and width):
      a dim flat background with every annotation filled in a colour of its COCO category
      (``CATEGORIES``), so a baseline has something to learn;
    * ``photos/image/<group>/`` and ``photos/binary/<group>/``: Co-SOD group folders ("your own
      images"), five groups of five photos with 0 / 255 PNG masks (:func:`write_cosod_folders`).

    Same call, same bytes. Returns ``{"refer": ..., "images": ..., "photos": ...}``.
    """
    from PIL import Image as PILImage
    from pycocotools import mask as mask_utils

    folder = Path(folder)
    refer = folder / "refer"
    for f in sorted(demo_root().iterdir()):
        if f.suffix in (".p", ".json"):
            atomic_write_bytes(refer / f.name, f.read_bytes())
    inst = json.loads((demo_root() / "instances.json").read_text(encoding="utf-8"))
    palette = np.random.default_rng(7).integers(60, 256, (len(CATEGORIES) + 1, 3), dtype=np.uint8)
    anns_of: dict[int, list[dict]] = {}
    for a in inst["annotations"]:
        anns_of.setdefault(a["image_id"], []).append(a)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for im in inst["images"]:
        h, w = im["height"], im["width"]
        arr = np.full((h, w, 3), 30 + (im["id"] * 7) % 40, np.uint8)
        for a in anns_of.get(im["id"], []):
            seg = a["segmentation"]
            rles = mask_utils.frPyObjects(seg, h, w)
            m = mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles)
            arr[m.astype(bool)] = palette[a["category_id"] % len(palette)]
        buf = io.BytesIO()
        PILImage.fromarray(arr).save(buf, format="JPEG", quality=90)
        atomic_write_bytes(images / im["file_name"], buf.getvalue())
    photos = write_cosod_folders(folder / "photos",
                                 {g: 5 for g in ("red_car", "dog", "cup", "bird", "sheep")},
                                 size=(96, 128), seed=5)
    return {"refer": refer, "images": images, "photos": photos}


# -- D³ (GRD) format --------------------------------------------------------------------------
def generate_d3(n_groups: int = 106, images_per_group: int = 100, presence_per_group: float = 2.98,
                absence_per_group: int = 1, p_positive: float = 0.52, shared_sentences: int = 3,
                seed: int = 0, first_image_id: int = 1, layout: str = "documented"
                ) -> dict[str, dict]:
    """Generate the four D³ tables (see :mod:`grdkit.sources.d3`) with the released files' quirks.

    ``layout="documented"`` gives the field types of d-cube's ``doc.md``; ``"released"`` the same
    data in the layout the authors' code reads (:func:`released_layout`).

    Quirks reproduced: tables are dicts keyed by id; RLE ``counts`` alternate between bytes and
    str; ``shared_sentences`` presence sentences are listed in two groups (``group_id`` has two
    entries and both groups' ``inner_sent_id`` name them), annotated in both groups' images;
    ``is_negative`` marks absence sentences, which are annotated too. Defaults give GRD's size:
    106 groups, 10,600 images, 316 presence sentences, ~31.5k intra pairs, ~16.5k masks.

    Returns:
        ``{"sentences.pkl": {...}, "annotations.pkl": {...}, "images.pkl": {...},
        "groups.pkl": {...}}``.
    """
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    n_presence = round(presence_per_group * n_groups)
    per_group = np.full(n_groups, n_presence // n_groups)
    per_group[: n_presence - per_group.sum()] += 1
    sentences, annotations, images, groups = {}, {}, {}, {}
    sid = aid = 0
    img_id = first_image_id - 1
    group_sents: dict[int, list[int]] = {}
    group_imgs: dict[int, list[int]] = {}
    for g in range(1, n_groups + 1):
        imgs = []
        for _ in range(images_per_group):
            img_id += 1
            short = int(rng.choice(_SHORT_SIDES, p=_SHORT_P))
            h, w = (short, 640) if rng.random() < 0.75 else (640, short)
            images[img_id] = {"id": img_id, "file_name": f"d3_{img_id:08d}.jpg", "height": h,
                              "width": w, "flickr_url": f"http://farm.example/{img_id}.jpg",
                              "anno_id": [], "group_id": g, "license": 1}
            imgs.append(img_id)
        group_imgs[g] = imgs
        sents = []
        cat = CATEGORIES[(g - 1) % len(CATEGORIES)]
        for k in range(int(per_group[g - 1]) + absence_per_group):
            sid += 1
            neg = bool(k >= per_group[g - 1])
            text = (f"{cat} without {_pick(rng, _WORDS['thing'])}" if neg
                    else _unique_sentence(rng, cat))
            sentences[sid] = {"id": sid, "anno_id": [], "group_id": [g], "is_negative": neg,
                              "raw_sent": text, "raw_sent_zh": f"句子 {sid}"}
            sents.append(sid)
        group_sents[g] = sents
    # a few presence sentences also belong to the next group
    presence_ids = [s for s in sentences if not sentences[s]["is_negative"]]
    for s in rng.choice(presence_ids, size=min(shared_sentences, len(presence_ids)),
                        replace=False):
        s = int(s)
        g0 = sentences[s]["group_id"][0]
        g1 = g0 % n_groups + 1
        if g1 != g0:
            sentences[s]["group_id"].append(g1)
            group_sents[g1].append(s)
    for g in range(1, n_groups + 1):
        for s in group_sents[g]:
            for i in group_imgs[g]:
                if rng.random() >= p_positive:
                    continue
                im = images[i]
                h, w = im["height"], im["width"]
                for _ in range(1 if rng.random() < 0.9 else 2):
                    r = float(rng.uniform(10, min(h, w) / 3))
                    cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
                    rle = mask_utils.frPyObjects([_polygon(rng, cx, cy, r, h, w)], h, w)[0]
                    aid += 1
                    counts = rle["counts"] if aid % 2 else rle["counts"].decode("ascii")
                    annotations[aid] = {
                        "id": aid, "sent_id": [s], "segmentation": {"size": [h, w],
                                                                    "counts": counts},
                        "area": float(mask_utils.area(rle)), "iscrowd": 0, "image_id": i,
                        "bbox": [float(v) for v in mask_utils.toBbox(rle)], "group_id": g}
                    sentences[s]["anno_id"].append(aid)
                    im["anno_id"].append(aid)
    for g in range(1, n_groups + 1):
        sents = group_sents[g]
        others = [s for s in presence_ids if s not in sents][: 2]
        groups[g] = {"id": g, "pos_sent_id": [s for s in sents
                                              if not sentences[s]["is_negative"]],
                     "inner_sent_id": list(sents), "outer_sent_id": others,
                     "img_id": list(group_imgs[g]), "scene": ["outdoor"],
                     "group_name": f"{CATEGORIES[(g - 1) % len(CATEGORIES)]} {g}",
                     "group_name_zh": f"组 {g}"}
    tables = {"sentences.pkl": sentences, "annotations.pkl": annotations, "images.pkl": images,
              "groups.pkl": groups}
    if layout == "released":
        return released_layout(tables)
    if layout != "documented":
        raise ValueError("layout must be 'documented' or 'released'")
    return tables


def _split_rle(rle: dict) -> list[dict]:
    """A mask as two RLEs (left / right of its box's middle column) whose union is the mask."""
    from pycocotools import mask as mask_utils

    c = dict(rle, counts=rle["counts"] if isinstance(rle["counts"], bytes)
             else rle["counts"].encode("ascii"))
    m = mask_utils.decode(c)
    x, _, w, _ = mask_utils.toBbox(c)
    mid = int(x + w / 2)
    left, right = m.copy(), m.copy()
    left[:, mid:] = 0
    right[:, :mid] = 0
    return [mask_utils.encode(np.asfortranarray(p)) for p in (left, right)]


def released_layout(tables: dict[str, dict]) -> dict[str, dict]:
    """The same D³ tables in the layout the released pickles have (documented -> released).

    Each quirk and the file that shows it:

    * ``segmentation`` is a list of RLE dicts with bytes ``counts``: shikras/d-cube
      ``d_cube/d3.py`` ``convert2coco`` reads ``segmentation[0]`` and decodes bytes counts;
      ``get_mask`` and ``d_cube/data_util.py`` ``rle2bmask`` decode a list and sum it, so every
      fifth annotation here is split into two RLEs whose union is the mask;
    * ``area`` a one-element numpy array (``int(area[0])`` in ``convert2coco``);
    * ``bbox`` a (1, 4) numpy array (``bbox[0].tolist()`` in ``convert2coco``);
    * ``iscrowd`` a one-element array (never read by d-cube, hard-coded 0; YZk67/ovd-poc
      ``tools/prepare_d3_metadata.py`` unwraps it with ``_first_scalar``);
    * ``group_id`` a numpy scalar (``convert2coco`` / ``get_group_ids`` use it as a hashable;
      ovd-poc ``int(_first_scalar(annotation["group_id"]))``); ids numpy ints.
    """
    out = {name: {} for name in tables}
    for aid, a in tables["annotations.pkl"].items():
        seg = dict(a["segmentation"])
        if isinstance(seg["counts"], str):
            seg["counts"] = seg["counts"].encode("ascii")
        segs = _split_rle(seg) if aid % 5 == 0 else [seg]
        out["annotations.pkl"][aid] = {
            **a, "id": np.int64(aid), "image_id": np.int64(a["image_id"]),
            "sent_id": [np.int64(s) for s in a["sent_id"]], "segmentation": segs,
            "area": np.array([a["area"]]), "bbox": np.array([a["bbox"]]),
            "iscrowd": np.array([a["iscrowd"]]), "group_id": np.int64(a["group_id"])}
    for iid, im in tables["images.pkl"].items():
        out["images.pkl"][np.int64(iid)] = {
            **im, "id": np.int64(iid), "group_id": np.int64(im["group_id"]),
            "anno_id": [np.int64(x) for x in im["anno_id"]]}
    for sid, s in tables["sentences.pkl"].items():
        out["sentences.pkl"][sid] = {**s, "anno_id": [np.int64(x) for x in s["anno_id"]],
                                     "group_id": [np.int64(x) for x in s["group_id"]]}
    for gid, g in tables["groups.pkl"].items():
        out["groups.pkl"][gid] = {**g, "img_id": [np.int64(x) for x in g["img_id"]]}
    return out


def write_d3(folder: str | Path, tables: dict[str, dict], protocol: int = 4) -> Path:
    """Write D³ tables as the four pickles (d-cube ``save_pkl`` uses ``pickle.dump``)."""
    folder = Path(folder)
    for name, table in tables.items():
        atomic_write_bytes(folder / name, pickle.dumps(table, protocol=protocol))
    return folder


D3_JSON_FILES = {"full": "d3_full_annotations.json", "pres": "d3_pres_annotations.json",
                 "abs": "d3_abs_annotations.json"}


def d3_json(tables: dict[str, dict], which: str = "full") -> dict:
    """D³'s COCO-style JSON of (documented-layout) tables, as d-cube ``convert2coco`` writes it.

    ``images`` ``{id, file_name, height, width}``; ``categories`` ``{id: sent_id, name: raw_sent}``
    (``pres`` / ``abs``: presence / absence sentences only); ``annotations`` one per (annotation,
    sentence), 0-based running ``id``, ``category_id`` = sent_id, RLE with str counts,
    ``int(area)``, int bbox, ``iscrowd`` 0 (shikras/d-cube ``d_cube/d3.py`` ``convert2coco``).
    """
    sents = tables["sentences.pkl"]
    keep = {s for s, r in sents.items()
            if which == "full" or (which == "abs") == bool(r["is_negative"])}
    images = [{"id": i, "file_name": im["file_name"], "height": im["height"],
               "width": im["width"]} for i, im in sorted(tables["images.pkl"].items())]
    cats = [{"id": s, "name": sents[s]["raw_sent"]} for s in sorted(keep)]
    anns = []
    for _, a in sorted(tables["annotations.pkl"].items()):
        seg = dict(a["segmentation"])
        if isinstance(seg["counts"], bytes):
            seg["counts"] = seg["counts"].decode("ascii")
        for s in a["sent_id"]:
            if s in keep:
                anns.append({"id": len(anns), "image_id": a["image_id"], "category_id": s,
                             "segmentation": seg, "area": int(a["area"]),
                             "bbox": [int(v) for v in a["bbox"]], "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": cats}


def write_d3_json(folder: str | Path, tables: dict[str, dict], which: str = "full") -> Path:
    """Write :func:`d3_json` as ``d3_<which>_annotations.json`` in ``folder``; returns the path."""
    path = Path(folder) / D3_JSON_FILES[which]
    atomic_write_text(path, json.dumps(d3_json(tables, which)) + "\n")
    return path


# -- gRefCOCO (ReLA) format ---------------------------------------------------------------------
def grefs_from_refer(refs: list[dict], instances: dict, seed: int = 0,
                     p_no_target: float = 0.15, p_multi: float = 0.25) -> list[dict]:
    """gRefCOCO refs (``grefs(unc).json``) from refer refs of one partition, in the layout of
    ReLA's ``grefer.py``: ``ann_id`` and ``category_id`` lists, ``no_target``; a share
    ``p_multi`` of the refs also names a second non-crowd instance of the image (multi-target),
    and ``p_no_target`` of the images get an extra ref with ``ann_id [-1]`` (no target).
    """
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[dict]] = {}
    for a in instances["annotations"]:
        if not a["iscrowd"]:
            by_image.setdefault(a["image_id"], []).append(a)
    out, next_ref = [], max((r["ref_id"] for r in refs), default=0) + 1
    next_sent = max((s["sent_id"] for r in refs for s in r["sentences"]), default=0) + 1
    seen_images: list[tuple[int, str]] = []
    for r in refs:
        anns = [r["ann_id"]]
        others = [a for a in by_image.get(r["image_id"], []) if a["id"] != r["ann_id"]]
        if others and rng.random() < p_multi:
            anns.append(others[int(rng.integers(len(others)))]["id"])
        cats = [next(a["category_id"] for a in by_image[r["image_id"]] if a["id"] == k)
                for k in anns]
        out.append({"ref_id": r["ref_id"], "image_id": r["image_id"], "ann_id": anns,
                    "category_id": cats, "split": r["split"], "no_target": False,
                    "sentences": r["sentences"], "sent_ids": r["sent_ids"],
                    "file_name": r["file_name"]})
        if (r["image_id"], r["split"]) not in seen_images:
            seen_images.append((r["image_id"], r["split"]))
    for image_id, split in seen_images:
        if rng.random() >= p_no_target:
            continue
        text = f"the {_pick(rng, CATEGORIES)} {_pick(rng, _WORDS['where'])}"
        out.append({"ref_id": next_ref, "image_id": image_id, "ann_id": [-1], "category_id": [],
                    "split": split, "no_target": True,
                    "sentences": [{"tokens": text.split(), "raw": text, "sent_id": next_sent,
                                   "sent": text}], "sent_ids": [next_sent],
                    "file_name": f"SYNTH_{image_id:012d}_-1.jpg"})
        next_ref += 1
        next_sent += 1
    return out


def write_grefcoco(folder: str | Path, grefs: list[dict], instances: dict,
                   split_by: str = "unc") -> Path:
    """Write ``grefs(<splitBy>).json`` and ``instances.json`` (gRefCOCO's released files)."""
    folder = Path(folder)
    atomic_write_text(folder / f"grefs({split_by}).json", json.dumps(grefs) + "\n")
    atomic_write_text(folder / "instances.json",
                      json.dumps(instances, separators=(",", ":")) + "\n")
    return folder


# -- image files and Co-SOD folders ------------------------------------------------------------
def write_images(folder: str | Path, images: list[dict], seed: int = 0) -> Path:
    """One JPEG per image record (``file_name``, ``height``, ``width``): a flat colour with a
    lighter square, so that every decoder and resizer has real files to read."""
    from PIL import Image as PILImage

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for im in images:
        arr = np.empty((im["height"], im["width"], 3), np.uint8)
        arr[:] = rng.integers(0, 160, 3, dtype=np.uint8)
        h, w = im["height"], im["width"]
        arr[h // 4: h // 2, w // 4: w // 2] += 90
        PILImage.fromarray(arr).save(folder / im["file_name"], quality=80)
    return folder


def write_cosod_folders(folder: str | Path, groups: dict[str, int] | None = None,
                        size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    """Co-SOD group folders as CoCA ships them: ``image/<group>/<name>.jpg`` and
    ``binary/<group>/<name>.png`` (0 / 255 masks, one object each)."""
    from PIL import Image as PILImage

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    h, w = size
    for group, n in (groups or {"red_car": 3, "dog": 3}).items():
        (folder / "image" / group).mkdir(parents=True, exist_ok=True)
        (folder / "binary" / group).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            img = np.full((h, w, 3), rng.integers(0, 120, 3, dtype=np.uint8), np.uint8)
            m = np.zeros((h, w), np.uint8)
            y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
            m[y:y + h // 3, x:x + w // 3] = 255
            img[m > 0] = 220
            PILImage.fromarray(img).save(folder / "image" / group / f"{group}_{k}.jpg")
            PILImage.fromarray(m).save(folder / "binary" / group / f"{group}_{k}.png")
    return folder
