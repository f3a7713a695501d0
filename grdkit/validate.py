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
* RLE (in the RLE domain, see :mod:`grdkit.format.rlecheck`): ``rle_corrupt`` (malformed, negative run, or
  runs not summing to h*w), ``rle_size`` (size is not the image's), ``empty_positive``,
  ``nonempty_negative``, ``area_mismatch`` / ``bbox_mismatch`` (where ``area`` / ``bbox`` are
  recorded; tolerance 2% + 2 px for area, 2 px for bbox) -> errors;
* polygons (refer inputs): ``polygon_points`` (< 3 points or odd length), ``polygon_nonfinite``,
  ``polygon_range`` (more than one image size beyond the border, a bound checked before
  pycocotools sees it), ``polygon_outside`` (beyond the image by more than 1 px),
  ``polygon_zero_area`` -> errors;
* sizes: ``size_bound`` (an image or mask beyond :mod:`grdkit.io.limits`) -> error;
  ``polygon_invalid`` (shapely: self-intersection and its location) -> warning, since
  rasterisation stays well defined;
* images (``--img-root``): ``image_path`` (a ``file_name`` leaving the image root: absolute,
  ``..``, or a symlink out), ``image_missing``, ``image_unreadable`` (zero-byte, not an image,
  corrupt, truncated, a decompression bomb: decoded completely, :mod:`grdkit.io.images`),
  ``image_size`` -> errors;
* statistics: ``group_no_positive``, ``group_no_negative``, ``duplicate_expression`` (same text
  twice in a group), ``extreme_ratio`` (a group's positive:negative ratio beyond 10:1 or 1:10)
  -> warnings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .format import Finding, json_schema, masks, reference_problems
from .format.masks import area_agrees, bbox_agrees, polygon_problems
from .format.rlecheck import check_rles, rle_problem
from .io import read_json
from .io.images import image_path, image_size, read_image_file
from .io.limits import size_problem
from .sources.d3 import d3_problems, is_d3_folder, read_d3
from .sources.refer import load_instances, load_refs, ref_problems

RATIO_LIMIT = 10.0


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


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _loc(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "top level"


class _Collector:
    def __init__(self, report: ValidationReport, file: str):
        self.report, self.file = report, file

    def __call__(self, kind: str, severity: str, record: str, message: str) -> None:
        self.report.problems.append(Problem(kind, severity, self.file, record, message))

    def finding(self, f: Finding) -> None:
        self(f.kind, f.severity, f.record, f.message)


# -- canonical datasets ------------------------------------------------------------------------
def check_canonical(data: Any, file: str, report: ValidationReport,
                    img_root: Path | None = None) -> None:
    """Append every problem of one parsed canonical split to ``report``."""
    import jsonschema

    add = _Collector(report, file)
    validator = jsonschema.Draft202012Validator(json_schema())
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

    for f in reference_problems(
            ((i, r["id"]) for i, r in good("images")),
            ((i, r["id"], r["group_id"]) for i, r in good("expressions")),
            ((i, r["id"], r["expression_ids"], r["image_ids"]) for i, r in good("groups")),
            ((i, r["expression_id"], r["image_id"]) for i, r in good("targets"))):
        add.finding(f)
    images = {r["id"]: r for _, r in reversed(good("images"))}  # first record wins
    exprs = {r["id"]: r for _, r in reversed(good("expressions"))}
    group_of: dict[tuple[int, int], int] = {}
    for _, g in good("groups"):
        for eid in g["expression_ids"]:
            for iid in g["image_ids"]:
                group_of.setdefault((eid, iid), g["id"])
        texts = Counter(" ".join(str(exprs[e]["text"]).lower().split())
                        for e in g["expression_ids"] if e in exprs)
        for t, c in texts.items():
            if c > 1:
                add("duplicate_expression", "warning", f"group id {g['id']}",
                    f"text {t!r} appears {c} times")
    tlist = good("targets")
    # RLE checks, vectorised
    rle_rows = []
    for i, t in tlist:
        seg = t["segmentation"]
        where = f"targets[{i}] (expression_id {t['expression_id']}, image_id {t['image_id']})"
        im = images.get(t["image_id"])
        if im is not None and list(seg["size"]) != [im["height"], im["width"]]:
            add("rle_size", "error", where, f"size {seg['size']} is not the image's "
                f"[{im['height']}, {im['width']}]")
        problem = size_problem(*seg["size"])
        if problem:  # beyond the bounds: not handed to pycocotools
            add("size_bound", "error", where, f"segmentation {problem}")
            continue
        rle_rows.append((i, t, where))
    for _, im in good("images"):
        problem = size_problem(im["height"], im["width"])
        if problem:
            add("size_bound", "error", f"image id {im['id']}", problem)
    ok, _, area = check_rles([t["segmentation"]["counts"] for _, t, _ in rle_rows],
                             [tuple(t["segmentation"]["size"]) for _, t, _ in rle_rows])
    pos_neg: dict[int, list[int]] = {}
    for k, (i, t, where) in enumerate(rle_rows):
        h, w = t["segmentation"]["size"]
        if not ok[k]:
            add("rle_corrupt", "error", where,
                f"RLE {rle_problem(t['segmentation']['counts'], (h, w))}")
            continue
        a = int(area[k])
        if t["positive"] and a == 0:
            add("empty_positive", "error", where, "positive target with an empty mask")
        if not t["positive"] and a > 0:
            add("nonempty_negative", "error", where, f"negative target with {a} mask pixels")
        if "area" in t and not area_agrees(t["area"], a):
            add("area_mismatch", "error", where, f"area {t['area']} but the mask has {a} px")
        if "bbox" in t:
            box = masks.bbox(t["segmentation"])
            if not bbox_agrees(t["bbox"], box):
                add("bbox_mismatch", "error", where,
                    f"bbox {t['bbox']} but the mask's is {[float(x) for x in box]}")
        gid = group_of.get((t["expression_id"], t["image_id"]))
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
    """Every image file stays inside the image root (:func:`grdkit.io.images.image_path`),
    exists, decodes completely (zero-byte, corrupt, truncated and oversized files are refused,
    :func:`grdkit.io.images.read_image_file`) and has the recorded size."""
    add = _Collector(report, file)
    for im in images:
        where = f"image id {im['id']} ({im['file_name']})"
        try:
            p = image_path(img_root, im["file_name"], where)
        except InputError as e:
            add("image_path", "error", where, e.reason)
            continue
        if not p.exists():  # a FIFO or a device: refused as unreadable by the checked opener
            add("image_missing", "error", where, f"{p} does not exist")
            continue
        try:
            h, w = image_size(p, where)
            if (h, w) == (im["height"], im["width"]):
                read_image_file(img_root, im["file_name"], (h, w), where)
        except InputError as e:
            add("image_unreadable", "error", where, f"{p}: {e.reason}")
            continue
        if (h, w) != (im["height"], im["width"]):
            add("image_size", "error", where, f"file is {w}x{h} (w x h), recorded "
                f"{im['width']}x{im['height']}")
    report.checked["image_files"] = report.checked.get("image_files", 0) + len(images)


# -- refer inputs: polygons -------------------------------------------------------------------
def check_refer(root: Path, report: ValidationReport) -> None:
    """Polygons and crowd RLEs of ``instances.json``, and every refs file's references."""
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
            for k, kind, sev, msg in polygon_problems(seg, im["height"], im["width"]):
                add(kind, sev, where if k is None else f"{where} part {k}", msg)
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
    """D³ tables (:func:`grdkit.sources.d3.d3_problems`), then the converted GRD."""
    from .builders.grd import convert_d3

    d = read_d3(root)
    blocked = False
    for file, f, blocking in d3_problems(d):
        _Collector(report, str(d.path(file))).finding(f)
        blocked |= blocking
    report.checked.update({"d3_sentences": len(d.sentences),
                           "d3_annotations": len(d.annotations), "d3_images": len(d.images),
                           "d3_groups": len(d.groups)})
    if blocked:  # the conversion would stop at the first of these; they are reported instead
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
    path = Path(path)
    img_root = Path(img_root) if img_root is not None else None
    if img_root is not None and not img_root.is_dir():
        raise InputError(img_root, "image root folder not found")
    if path.exists() and not path.is_dir():  # a file, or a FIFO / device: the opener says
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
