"""`grdkit validate`: find every problem in a GRES dataset, a D³ folder or a refer folder.

Each problem has a ``kind``, a ``severity`` (``error`` or ``warning``), the ``file`` and the
``record`` it concerns, and a message. Nothing stops at the first problem: all are collected.

Inputs: a canonical split file (``val.json``), a built folder of split files, a D³ annotation
folder (read, then converted on the fly with the GRD setting: intra, presence), or a refer folder
(``instances.json`` + ``refs(*).p``).

Checks (kind -> severity):

* canonical format: ``schema`` (JSON Schema, types) -> error; ``duplicate_id``; references that
  do not resolve (``dangling_reference``); ``expression_group_mismatch``; completeness:
  ``missing_target`` / ``extra_target`` / ``duplicate_target`` (exactly one target per pair of
  the group) -> errors;
* RLE (in the RLE domain, see :mod:`grdkit.rlecheck`): ``rle_corrupt`` (malformed, negative run, or
  runs not summing to h*w), ``rle_size`` (size is not the image's), ``empty_positive``,
  ``nonempty_negative``, ``area_mismatch`` / ``bbox_mismatch`` (where ``area`` / ``bbox`` are
  recorded; tolerance 2% + 2 px for area, 2 px for bbox) -> errors;
* polygons (refer inputs): ``polygon_points`` (< 3 points or odd length), ``polygon_nonfinite``,
  ``polygon_outside`` (beyond the image by more than 1 px), ``polygon_zero_area`` -> errors;
  ``polygon_invalid`` (shapely: self-intersection and its location) -> warning, since
  rasterisation stays well defined;
* images (``--img-root``): ``image_missing``, ``image_unreadable``, ``image_size`` -> errors;
* statistics: ``group_no_positive``, ``group_no_negative``, ``duplicate_expression`` (same text
  twice in a group), ``extreme_ratio`` (a group's positive:negative ratio beyond 10:1 or 1:10)
  -> warnings.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from . import masks
from .errors import InputError
from .jsonfile import read_json
from .rlecheck import check_rles

AREA_TOL_REL, AREA_TOL_PX, BBOX_TOL_PX, POLY_TOL_PX, RATIO_LIMIT = 0.02, 2.0, 2.0, 1.0, 10.0


@dataclass(frozen=True)
class Problem:
    """One finding: what kind, how bad, where (file and record), and what."""

    kind: str
    severity: str
    file: str
    record: str
    message: str


@dataclass
class ValidationReport:
    """All problems found in one input, plus what was checked."""

    path: str
    input_kind: str
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def counts(self) -> dict[tuple[str, str], int]:
        return dict(sorted(Counter((p.severity, p.kind) for p in self.problems).items()))

    def to_dict(self) -> dict:
        return {"path": self.path, "input_kind": self.input_kind, "checked": self.checked,
                "errors": len(self.errors), "warnings": len(self.warnings),
                "problems": [asdict(p) for p in self.problems]}


def _schema() -> dict:
    return json.loads(resources.files("grdkit").joinpath("schema/gres_dataset.schema.json")
                      .read_text())


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _loc(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "top level"


def _bbox_ok(rec_bbox: Any, mask_bbox: np.ndarray) -> bool:
    try:
        return all(abs(float(a) - float(b)) <= BBOX_TOL_PX for a, b in zip(rec_bbox, mask_bbox,
                                                                           strict=True))
    except (TypeError, ValueError):
        return False


def _area_ok(rec_area: Any, area: int) -> bool:
    try:
        return abs(float(rec_area) - area) <= AREA_TOL_PX + AREA_TOL_REL * area
    except (TypeError, ValueError):
        return False


class _Collector:
    def __init__(self, report: ValidationReport, file: str):
        self.report, self.file = report, file

    def __call__(self, kind: str, severity: str, record: str, message: str) -> None:
        self.report.problems.append(Problem(kind, severity, self.file, record, message))


# -- canonical datasets ------------------------------------------------------------------------
def check_canonical(data: Any, file: str, report: ValidationReport,
                    img_root: Path | None = None) -> None:
    """Append every problem of one parsed canonical split to ``report``."""
    import jsonschema

    add = _Collector(report, file)
    validator = jsonschema.Draft202012Validator(_schema())
    schema_bad: set[tuple[str, int]] = set()
    for err in validator.iter_errors(data):
        path = list(err.absolute_path)
        add("schema", "error", _loc(path), err.message[:300])
        if len(path) >= 2 and isinstance(path[1], int):
            schema_bad.add((path[0], path[1]))
    if not isinstance(data, dict) or any(not isinstance(data.get(s), list)
                                         for s in ("images", "expressions", "groups", "targets")):
        return

    def good(section: str) -> list[tuple[int, dict]]:
        return [(i, r) for i, r in enumerate(data[section])
                if (section, i) not in schema_bad and isinstance(r, dict)]

    def index(section: str) -> dict[int, dict]:
        """Records by id (first wins); later duplicates are reported."""
        out: dict[int, dict] = {}
        for i, r in good(section):
            if r["id"] in out:
                add("duplicate_id", "error", f"{section}[{i}] (id {r['id']})",
                    f"id {r['id']} already used by an earlier record")
            else:
                out[r["id"]] = r
        return out

    images, exprs, groups = index("images"), index("expressions"), index("groups")
    for i, e in good("expressions"):
        if e["group_id"] not in groups:
            add("dangling_reference", "error", f"expressions[{i}] (id {e['id']})",
                f"group_id {e['group_id']} is not a group")
    expected: dict[tuple[int, int], int] = {}
    for i, g in good("groups"):
        where = f"groups[{i}] (id {g['id']})"
        for eid in g["expression_ids"]:
            e = exprs.get(eid)
            if e is None:
                add("dangling_reference", "error", where, f"expression {eid} does not exist")
            elif e["group_id"] != g["id"]:
                add("expression_group_mismatch", "error", where,
                    f"expression {eid} names group {e['group_id']}")
        for iid in g["image_ids"]:
            if iid not in images:
                add("dangling_reference", "error", where, f"image {iid} does not exist")
        for dup in [k for k, c in Counter(g["image_ids"]).items() if c > 1]:
            add("duplicate_id", "error", where, f"image {dup} listed twice")
        for eid in g["expression_ids"]:
            for iid in g["image_ids"]:
                expected.setdefault((eid, iid), g["id"])
        texts = Counter(" ".join(str(exprs[e]["text"]).lower().split())
                        for e in g["expression_ids"] if e in exprs)
        for t, c in texts.items():
            if c > 1:
                add("duplicate_expression", "warning", where, f"text {t!r} appears {c} times")
    seen: dict[tuple[int, int], int] = {}
    tlist = good("targets")
    for i, t in tlist:
        key = (t["expression_id"], t["image_id"])
        where = f"targets[{i}] (expression_id {key[0]}, image_id {key[1]})"
        if t["image_id"] not in images:
            add("dangling_reference", "error", where, f"image {t['image_id']} does not exist")
        if t["expression_id"] not in exprs:
            add("dangling_reference", "error", where,
                f"expression {t['expression_id']} does not exist")
        if key in seen:
            add("duplicate_target", "error", where, f"pair already has targets[{seen[key]}]")
        else:
            seen[key] = i
            if key not in expected and t["expression_id"] in exprs and t["image_id"] in images:
                add("extra_target", "error", where,
                    "the image is not in the expression's group")
    for key, gid in expected.items():
        if key not in seen and key[0] in exprs and key[1] in images:
            add("missing_target", "error", f"group id {gid}",
                f"no target for (expression_id {key[0]}, image_id {key[1]})")
    # RLE checks, vectorised
    rle_rows = []
    for i, t in tlist:
        seg = t["segmentation"]
        where = f"targets[{i}] (expression_id {t['expression_id']}, image_id {t['image_id']})"
        im = images.get(t["image_id"])
        if im is not None and list(seg["size"]) != [im["height"], im["width"]]:
            add("rle_size", "error", where, f"size {seg['size']} is not the image's "
                f"[{im['height']}, {im['width']}]")
        rle_rows.append((i, t, where))
    ok, total, area = check_rles([t["segmentation"]["counts"] for _, t, _ in rle_rows],
                                 [tuple(t["segmentation"]["size"]) for _, t, _ in rle_rows])
    pos_neg: dict[int, list[int]] = {}
    for k, (i, t, where) in enumerate(rle_rows):
        h, w = t["segmentation"]["size"]
        if not ok[k]:
            add("rle_corrupt", "error", where, f"RLE runs sum to {int(total[k])}, not h*w = "
                f"{h * w} (or the string is malformed)")
            continue
        a = int(area[k])
        if t["positive"] and a == 0:
            add("empty_positive", "error", where, "positive target with an empty mask")
        if not t["positive"] and a > 0:
            add("nonempty_negative", "error", where, f"negative target with {a} mask pixels")
        if "area" in t and not _area_ok(t["area"], a):
            add("area_mismatch", "error", where, f"area {t['area']} but the mask has {a} px")
        if "bbox" in t:
            box = masks.bbox(t["segmentation"])
            if not _bbox_ok(t["bbox"], box):
                add("bbox_mismatch", "error", where,
                    f"bbox {t['bbox']} but the mask's is {[float(x) for x in box]}")
        gid = expected.get((t["expression_id"], t["image_id"]))
        if gid is not None:
            pn = pos_neg.setdefault(gid, [0, 0])
            pn[0 if t["positive"] else 1] += 1
    for gid, (p, n) in sorted(pos_neg.items()):
        where = f"group id {gid}"
        if p == 0:
            add("group_no_positive", "warning", where, f"no positive image among {n} pairs")
        if n == 0:
            add("group_no_negative", "warning", where, f"no negative image among {p} pairs")
        if p and n and max(p / n, n / p) > RATIO_LIMIT:
            add("extreme_ratio", "warning", where, f"{p} positive vs. {n} negative pairs")
    if img_root is not None:
        check_images(img_root, [r for _, r in good("images")], report, file)
    c = report.checked
    for s in ("images", "expressions", "groups", "targets"):
        c[s] = c.get(s, 0) + len(data[s])


def check_images(img_root: Path, images: list[dict], report: ValidationReport, file: str) -> None:
    """Every image file exists, opens, and has the recorded size (header read only)."""
    from PIL import Image as PILImage

    add = _Collector(report, file)
    for im in images:
        where = f"image id {im['id']} ({im['file_name']})"
        p = Path(img_root) / str(im["file_name"])
        if not p.is_file():
            add("image_missing", "error", where, f"{p} does not exist")
            continue
        try:
            with PILImage.open(p) as f:
                w, h = f.size
                f.verify()
        except (OSError, ValueError, SyntaxError) as e:
            add("image_unreadable", "error", where, f"{p} cannot be opened: {e}")
            continue
        if (h, w) != (im["height"], im["width"]):
            add("image_size", "error", where, f"file is {w}x{h} (w x h), recorded "
                f"{im['width']}x{im['height']}")
    report.checked["image_files"] = report.checked.get("image_files", 0) + len(images)


# -- refer inputs: polygons -------------------------------------------------------------------
def check_polygon(part: Any, h: int, w: int) -> list[tuple[str, str, str]]:
    """Problems of one polygon part: ``[(kind, severity, message)]``."""
    from shapely.geometry import Polygon
    from shapely.validation import explain_validity, make_valid

    if not isinstance(part, list) or len(part) % 2 or len(part) < 6:
        n = len(part) if isinstance(part, list) else 0
        msg = f"{n} coordinates; need an even number >= 6 (3 points)"
        return [("polygon_points", "error", msg)]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in part):
        return [("polygon_nonfinite", "error", "non-finite or non-numeric coordinate")]
    out = []
    xs, ys = part[0::2], part[1::2]
    if (min(xs) < -POLY_TOL_PX or max(xs) > w + POLY_TOL_PX or min(ys) < -POLY_TOL_PX
            or max(ys) > h + POLY_TOL_PX):
        msg = f"x in [{min(xs)}, {max(xs)}], y in [{min(ys)}, {max(ys)}] outside the {w}x{h} image"
        out.append(("polygon_outside", "error", msg))
    poly = Polygon(list(zip(xs, ys)))
    # a bow-tie's signed parts cancel in poly.area: measure the repaired geometry instead
    if make_valid(poly).area == 0:
        out.append(("polygon_zero_area", "error", "polygon has zero area"))
    elif not poly.is_valid:
        out.append(("polygon_invalid", "warning", explain_validity(poly)))
    return out


def check_refer(root: Path, report: ValidationReport) -> None:
    """Polygons and crowd RLEs of ``instances.json``, and every refs file's references."""
    from .refer import load_instances, load_refs, ref_problems

    ipath = root / "instances.json"
    images, anns, _ = load_instances(ipath)
    add = _Collector(report, str(ipath))
    crowd = []
    for aid, a in anns.items():
        where = f"annotation id {aid} (image id {a['image_id']})"
        im = images.get(a["image_id"])
        if im is None:
            add("dangling_reference", "error", where, f"image {a['image_id']} does not exist")
            continue
        seg = a["segmentation"]
        if isinstance(seg, list):
            if not seg:
                add("polygon_points", "error", where, "polygon segmentation has no parts")
            for k, part in enumerate(seg):
                for kind, sev, msg in check_polygon(part, im["height"], im["width"]):
                    add(kind, sev, f"{where} part {k}", msg)
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            cs = seg["counts"]
            if not all(_int(c) and c >= 0 for c in cs) or sum(cs) != im["height"] * im["width"]:
                add("rle_corrupt", "error", where, "uncompressed RLE runs do not sum to h*w")
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes)):
            crowd.append((where, seg, im))
        else:
            add("schema", "error", where, "segmentation is neither polygons nor RLE")
    ok, _, _ = check_rles([s["counts"] for _, s, _ in crowd],
                          [(im["height"], im["width"]) for _, _, im in crowd])
    for k, (where, _, _) in enumerate(crowd):
        if not ok[k]:
            add("rle_corrupt", "error", where, "compressed RLE is malformed or not h*w")
    report.checked["annotations"] = len(anns)
    report.checked["images"] = len(images)
    for rp in sorted([*root.glob("refs(*).p"), *root.glob("grefs(*).json")]):
        refs = load_refs(rp)
        addr = _Collector(report, str(rp))
        for ref_id, msg in ref_problems(refs, images, anns):
            addr("dangling_reference", "error", f"ref_id {ref_id}", msg)
        report.checked[f"refs in {rp.name}"] = len(refs)


# -- D³ ------------------------------------------------------------------------------------------
def check_d3(root: Path, report: ValidationReport, img_root: Path | None = None) -> None:
    """D³ tables (references, annotation RLE / area / bbox), then the converted GRD."""
    from .d3 import _as_list, convert_d3, read_d3

    d = read_d3(root)
    add_a = _Collector(report, str(root / "annotations.pkl"))
    add_g = _Collector(report, str(root / "groups.pkl"))
    add_s = _Collector(report, str(root / "sentences.pkl"))
    fatal = False
    rows = []
    for aid, a in sorted(d.annotations.items()):
        where = f"annotation id {aid}"
        im = d.images.get(a["image_id"])
        if im is None:
            add_a("dangling_reference", "error", where, f"image {a['image_id']} does not exist")
            fatal = True
            continue
        for s in _as_list(a["sent_id"]):
            if s not in d.sentences:
                add_a("dangling_reference", "error", where, f"sentence {s} does not exist")
        seg = a["segmentation"]
        if not (isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes))):
            add_a("schema", "error", where, "segmentation is not a compressed RLE")
            fatal = True
            continue
        if list(seg.get("size", [])) != [im["height"], im["width"]]:
            add_a("rle_size", "error", where, f"size {seg.get('size')} is not the image's "
                  f"[{im['height']}, {im['width']}]")
            fatal = True
            continue
        rows.append((where, a, seg, im))
    ok, _, area = check_rles([s["counts"] for _, _, s, _ in rows],
                             [(im["height"], im["width"]) for *_, im in rows])
    for k, (where, a, seg, im) in enumerate(rows):
        if not ok[k]:
            add_a("rle_corrupt", "error", where, "RLE is malformed or its runs are not h*w")
            fatal = True
            continue
        if "area" in a and not _area_ok(a["area"], int(area[k])):
            add_a("area_mismatch", "error", where, f"area {a['area']} but the mask has "
                  f"{int(area[k])} px")
        if "bbox" in a:
            box = masks.bbox(seg)
            if not _bbox_ok(a["bbox"], box):
                add_a("bbox_mismatch", "error", where, f"bbox {a['bbox']} but the mask's is "
                      f"{[float(x) for x in box]}")
    for gid, g in sorted(d.groups.items()):
        for s in _as_list(g["inner_sent_id"]):
            if s not in d.sentences:
                add_g("dangling_reference", "error", f"group id {gid}",
                      f"inner_sent_id {s} does not exist")
                fatal = True
        for i in _as_list(g["img_id"]):
            if i not in d.images:
                add_g("dangling_reference", "error", f"group id {gid}", f"img_id {i} does not "
                      "exist")
                fatal = True
    for sid, s in sorted(d.sentences.items()):
        for a in _as_list(s["anno_id"]):
            if a not in d.annotations:
                add_s("dangling_reference", "error", f"sentence id {sid}",
                      f"anno_id {a} does not exist")
    report.checked.update({"d3_sentences": len(d.sentences),
                           "d3_annotations": len(d.annotations), "d3_images": len(d.images),
                           "d3_groups": len(d.groups)})
    if fatal:  # the conversion would stop at the first of these; report them instead
        return
    ds = convert_d3(d, "intra", "presence")
    check_canonical(ds.to_dict(), f"{root} (converted: intra, presence)", report, img_root)


# -- entry point ---------------------------------------------------------------------------------
def validate_path(path: str | Path, img_root: str | Path | None = None) -> ValidationReport:
    """Validate a canonical file / folder, a D³ folder or a refer folder; see module header.

    Raises:
        InputError: the input cannot be read at all (missing, not JSON, not a pickle, unknown
            folder layout) - the CLI's exit code 2.
    """
    from .d3 import is_d3_folder

    path = Path(path)
    img_root = Path(img_root) if img_root is not None else None
    if img_root is not None and not img_root.is_dir():
        raise InputError(img_root, "image root folder not found")
    if path.is_file():
        report = ValidationReport(str(path), "canonical")
        check_canonical(read_json(path), str(path), report, img_root)
        return report
    if not path.is_dir():
        raise InputError(path, "not found")
    if is_d3_folder(path):
        report = ValidationReport(str(path), "d3")
        check_d3(path, report, img_root)
        return report
    if (path / "instances.json").exists():
        report = ValidationReport(str(path), "refer")
        check_refer(path, report)
        return report
    files = sorted(p for p in path.glob("*.json") if not p.name.startswith("."))
    if not files:
        raise InputError(path, "is neither a canonical dataset folder (<split>.json), a D³ "
                         "folder (sentences.pkl ...) nor a refer folder (instances.json)")
    report = ValidationReport(str(path), "canonical")
    for p in files:
        check_canonical(read_json(p), str(p), report, img_root)
    return report
