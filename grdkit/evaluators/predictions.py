"""Predictions: reading and fail-closed validation against the ground truth.

Accepted forms:

* ``preds.json``: a list of ``{"expression_id": int, "image_id": int, "segmentation": RLE | null,
  "score": float (optional), "split": str (optional)}``. ``segmentation`` is a COCO compressed RLE
  ``{"size": [h, w], "counts": str}`` (uncompressed ``counts: [int]`` is accepted too) whose size
  must equal the image's. ``null`` or an empty mask means "no target". ``split`` is required only
  when the ground truth has several splits (ids restart in each split). Optional
  ``"no_target": true | false``: the model's own no-target decision (a classifier head, as in
  ReLA and MABP); when present it is the decision and the mask, null, empty or not, is scored as
  submitted and stays in U as the reference evaluators keep it (see :mod:`.gres`); when absent a
  null or empty mask (below ``min_pixels``) means "no target".
* a folder of PNG masks ``<expression_id>/<image_id>.png`` (``<split>/<expression_id>/...`` for
  several splits): 8-bit grey (RGB, palette and alpha masks as :mod:`.pngmasks` reads them),
  0/255 binary or soft 0-255 maps. For the
  IoU family a pixel is foreground when its value is >= 128; the soft map is kept for Co-SOD,
  which scores it as submitted (even when no pixel reaches 128). The no-target decisions go in an
  optional sidecar ``<folder>/no_target.json``: a list of ``{"expression_id", "image_id",
  "no_target": bool, "split" (as in preds.json)}``; a pair it names without a PNG is a
  prediction with an empty mask.

Anything that could silently change a score is an error that names the record: malformed JSON,
unknown (expression, image) pairs, duplicate pairs, a mask size that differs from the image's,
NaN or infinite scores, unknown keys' wrong types. Missing pairs are not an error: they count as
"no target" and are reported (``strict=True`` makes them an error).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np

from ..errors import InputError, quote
from ..format import GresDataset, masks
from ..format.rlecheck import check_rles, check_rles_runs, rle_problem
from ..io import loads_json, read_bytes
from ..io.limits import MAX_JSON_INT
from .pngmasks import list_mask_pngs, read_mask_png

_RLE_CHARS = re.compile(r"^[0-o]*$")  # pycocotools' compressed alphabet: chr(48) .. chr(111)

# -- the schema of each JSON input, one per input, applied by msgspec while decoding ------------
# (the shipped ``format/schema/predictions.schema.json`` says the same; a test compares them).
# Types are checked before any value is used (a list as ``split`` never reaches a dict lookup),
# integers are bounded like every JSON integer grdkit reads (:mod:`grdkit.io.limits`), and a
# JSON float is finite by construction (msgspec refuses NaN, Infinity and overflowing numbers).
JsonInt = Annotated[int, msgspec.Meta(ge=-(MAX_JSON_INT - 1), le=MAX_JSON_INT - 1)]


class RLERecord(msgspec.Struct):
    """A COCO RLE as submitted: ``size`` [h, w], ``counts`` compressed string or run list."""

    size: list[JsonInt]
    counts: str | list[JsonInt]


class PredictionRecord(msgspec.Struct):
    """One ``preds.json`` record (module header); unknown keys are ignored."""

    expression_id: JsonInt
    image_id: JsonInt
    segmentation: RLERecord | None  # required; null = no target
    split: str | None = None
    score: float | None = None
    no_target: bool | None = None
    peak: Any = None  # checked by :mod:`.localisation`


class NoTargetRecord(msgspec.Struct):
    """One record of the PNG folder's ``no_target.json`` sidecar."""

    expression_id: JsonInt
    image_id: JsonInt
    no_target: bool
    split: str | None = None


_PREDICTIONS = msgspec.json.Decoder(list[PredictionRecord])
_SIDECAR = msgspec.json.Decoder(list[NoTargetRecord])
_PREDICTIONS_HINT = "write a JSON list of predictions"


@dataclass(frozen=True, slots=True)
class Prediction:
    """One prediction.

    ``rle`` is a COCO compressed RLE or None ("no target"); ``soft`` an optional uint8
    ``(h, w)`` map in 0-255 (from soft PNGs, for Co-SOD); ``score`` optional confidence.
    ``checked`` is set by this module's readers, which validated the record against the ground
    truth already; :func:`check_predictions` validates every other Prediction. ``no_target``:
    the model's own no-target decision, or None (the mask decides). ``peak``: the record's
    optional ``"peak"`` as given (LTS §4.3; checked and scored by :mod:`.localisation`).
    ``area``, ``runs``: the RLE's foreground pixels and run lengths (int64) when a reader's
    check found them (else None); the evaluator uses them instead of parsing again.
    """

    split: str
    expression_id: int
    image_id: int
    rle: dict | None
    score: float | None = None
    soft: np.ndarray | None = None
    checked: bool = dataclasses.field(default=False, compare=False, repr=False)
    no_target: bool | None = None
    peak: Any = dataclasses.field(default=None, compare=False, repr=False)
    area: int | None = dataclasses.field(default=None, compare=False, repr=False)
    runs: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)


class GroundTruth:
    """Ground truth of one or more splits: sizes and pair membership for validation."""

    def __init__(self, splits: dict[str, GresDataset]):
        if not splits:
            raise ValueError("no ground-truth split")
        self.splits = splits

    @property
    def multi(self) -> bool:
        return len(self.splits) > 1

    def resolve_split(self, split: Any, where: str, path: Any) -> str:
        if split is not None and not isinstance(split, str):
            raise InputError(path, f"split {quote(split)} is not a string", where,
                             "write the split's name, e.g. \"val\"")
        if split is None:
            if self.multi:
                raise InputError(path, "has no 'split' but the ground truth has splits "
                                 f"{sorted(self.splits)}", where, "add \"split\" to each record")
            return next(iter(self.splits))
        if split not in self.splits:
            raise InputError(path, f"split {quote(split)} is not in the ground truth "
                             f"{sorted(self.splits)}", where)
        return split


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_rle(seg: Any, h: int, w: int, where: str, path: Any) -> dict | None:
    if seg is None:
        return None
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise InputError(path, "segmentation must be a COCO RLE {'size': [h, w], 'counts': ...} "
                         "or null", where)
    size = seg["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_int(x) for x in size)):
        raise InputError(path, f"segmentation size {quote(size)} is not [height, width]", where)
    if size != [h, w]:
        raise InputError(path, f"segmentation size {size} differs from the image size [{h}, {w}]",
                         where, "encode the mask at the image's original resolution")
    counts = seg["counts"]
    if isinstance(counts, list):
        if not all(_int(c) and c >= 0 for c in counts) or sum(counts) != h * w:
            raise InputError(path, "uncompressed RLE counts must be non-negative integers "
                             f"summing to height*width = {h * w}", where)
        return masks.to_rle(seg, h, w)
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", "replace")
    if not isinstance(counts, str) or not _RLE_CHARS.match(counts):
        raise InputError(path, "segmentation counts is not a COCO compressed RLE string", where)
    return {"size": [h, w], "counts": counts}


def parse_prediction_records(records: Any, gt: GroundTruth, path: Any = None) -> list[Prediction]:
    """Validate a list of prediction dicts (see module header) against the ground truth.

    Raises:
        InputError: naming ``predictions[i] (expression_id e, image_id i)`` and the problem.
    """
    if not isinstance(records, list):
        raise InputError(path, f"top level is a {type(records).__name__}, expected a list of "
                         "predictions")
    out: list[Prediction] = []
    seen: dict[tuple, int] = {}  # (split, expression, image) -> record index
    for k, r in enumerate(records):
        where = f"predictions[{k}]"
        if not isinstance(r, dict):
            raise InputError(path, f"is a {type(r).__name__}, not an object", where)
        e, i = r.get("expression_id"), r.get("image_id")
        where = f"predictions[{k}] (expression_id {quote(e)}, image_id {quote(i)})"
        if not _int(e) or not _int(i):
            raise InputError(path, "expression_id and image_id must be integers", where)
        if "segmentation" not in r:
            raise InputError(path, "missing key 'segmentation' (use null for no target)", where)
        split = gt.resolve_split(r.get("split"), where, path)
        ds = gt.splits[split]
        if not ds.has_target(e, i):
            raise InputError(path, f"unknown pair: no target (expression_id {e}, image_id {i}) "
                             f"in split {split!r}", where, "predict only pairs of the dataset")
        key = (split, e, i)
        if key in seen:
            raise InputError(path, f"duplicate pair (first at predictions[{seen[key]}])", where)
        seen[key] = k
        score = r.get("score")
        if score is not None:
            if not isinstance(score, (int, float)) or isinstance(score, bool) \
                    or not math.isfinite(score):
                raise InputError(path, f"score {quote(score)} is not a finite number", where)
            score = float(score)
        nt = r.get("no_target")
        if nt is not None and not isinstance(nt, bool):
            raise InputError(path, f"no_target {quote(nt)} is not true or false", where,
                             "write the model's no-target decision as a JSON boolean, or omit it")
        im = ds.image(i)
        out.append(Prediction(split, e, i, _check_rle(r["segmentation"], im.height, im.width,
                                                       where, path), score,
                              checked=True,  # the list is discarded if a later check fails
                              no_target=nt, peak=r.get("peak")))
    _check_integrity(out, path, lambda p: seen[(p.split, p.expression_id, p.image_id)])
    return out


def _check_integrity(preds: list[Prediction], path: Any, index_of) -> None:
    """Every compressed RLE decodes to exactly h*w pixels (vectorised, in the RLE domain)."""
    with_rle = [p for p in preds if p.rle is not None]
    ok, _, _ = check_rles([p.rle["counts"] for p in with_rle],
                          [tuple(p.rle["size"]) for p in with_rle])
    bad = np.flatnonzero(~ok)
    if bad.size:
        p = with_rle[int(bad[0])]
        h, w = p.rle["size"]
        raise InputError(path, f"segmentation counts are corrupt: "
                         f"{rle_problem(p.rle['counts'], (h, w))}",
                         f"predictions[{index_of(p)}] (expression_id {p.expression_id}, "
                         f"image_id {p.image_id})", f"{bad.size} corrupt RLEs in all")


def check_predictions(predictions: Iterable[Prediction | dict], gt: GroundTruth
                      ) -> list[Prediction]:
    """Validate a batch against the ground truth: what :class:`GresEvaluator.process` calls.

    Dicts are parsed as ``preds.json`` records (:func:`parse_prediction_records`);
    :class:`Prediction` objects are checked for a known split and pair, an RLE of the image's
    size, and RLE integrity, so no caller can skip the checks the CLI makes.

    Raises:
        InputError: naming ``predictions[i]`` of the batch and the problem.
    """
    batch = list(predictions)
    if not all(isinstance(p, Prediction) for p in batch):
        return parse_prediction_records(batch, gt, "<predictions>")
    todo = [k for k, p in enumerate(batch) if not p.checked]
    for k in todo:
        p = batch[k]
        where = f"predictions[{k}] (expression_id {p.expression_id}, image_id {p.image_id})"
        ds = gt.splits.get(p.split)
        if ds is None or not ds.has_target(p.expression_id, p.image_id):
            raise InputError(None, f"unknown pair in split {quote(p.split)}", where,
                             "predict only pairs of the dataset")
        im = ds.image(p.image_id)
        if p.rle is not None:
            rle = _check_rle(p.rle, im.height, im.width, where, None)  # normalised: str counts
            if rle is not p.rle:
                batch[k] = p = dataclasses.replace(p, rle=rle)
        if p.no_target is not None and not isinstance(p.no_target, bool):
            raise InputError(None, f"no_target {quote(p.no_target)} is not a bool or None",
                             where)
        if p.soft is not None and (not isinstance(p.soft, np.ndarray) or p.soft.dtype != np.uint8
                                   or p.soft.shape != (im.height, im.width)):
            raise InputError(None, "soft map must be a uint8 array of the image's size "
                             f"({im.height}, {im.width})", where)
    unchecked = [batch[k] for k in todo]
    _check_integrity(unchecked, None, lambda p: next(i for i, q in enumerate(batch) if q is p))
    return batch


def read_prediction_json(path: str | Path, gt: GroundTruth) -> list[Prediction]:
    """Read and validate ``preds.json``; :class:`InputError` on any bad record."""
    data = read_bytes(path, "predictions file", _PREDICTIONS_HINT)
    return decode_predictions(data, Path(path), gt)


def decode_predictions(data: bytes, path: Path, gt: GroundTruth) -> list[Prediction]:
    """Decode and validate the bytes of ``preds.json`` (read from ``path``, named in errors).

    The fast path: msgspec decodes straight into :class:`PredictionRecord` (the schema: types
    and integer bounds checked in C, no intermediate dicts), then one pass checks pairs, sizes
    and duplicates and one vectorised pass checks every RLE (:func:`check_rles`). Any problem
    hands the file to :func:`parse_prediction_records`, which names the first bad record in
    the words every grdkit reader uses; so the slow, explaining path runs only on a bad file.

    Raises:
        InputError: malformed JSON (line and column), or the first bad record (its index,
            ids, what is wrong; values quoted are cut to ~80 characters).
    """
    try:
        recs = _PREDICTIONS.decode(data)
    except msgspec.ValidationError as e:
        return _explain(data, path, gt, str(e))
    except (msgspec.DecodeError, RecursionError):
        # malformed JSON (named with line and column by the standard parser), or JSON msgspec
        # refuses and the standard parser accepts (a lone UTF-16 surrogate in a string)
        return parse_prediction_records(loads_json(path, data, _PREDICTIONS_HINT), gt, path)
    out = _fast_records(recs, gt)
    if out is None:
        return _explain(data, path, gt, "a record fails a check")
    return out


def _explain(data: bytes, path: Path, gt: GroundTruth, schema_error: str) -> list[Prediction]:
    """Name the first bad record of a file the fast path refused (raises InputError)."""
    records = loads_json(path, data, _PREDICTIONS_HINT)
    parse_prediction_records(records, gt, path)  # raises, naming the record
    where = None  # the record checks accept what the schema refuses: say what the schema says
    m = re.search(r"\$\[(\d+)\]", schema_error)
    if m:
        where = f"predictions[{m.group(1)}]"
    raise InputError(path, f"does not match the predictions schema: {quote(schema_error, 200)}",
                     where, "see grdkit/format/schema/predictions.schema.json")


def _fast_records(recs: list[PredictionRecord], gt: GroundTruth) -> list[Prediction] | None:
    """Prediction objects of schema-valid records, or None at the first problem (pair, size,
    duplicate, RLE integrity), which :func:`parse_prediction_records` then names."""
    default = None if gt.multi else next(iter(gt.splits))
    splits = gt.splits
    seen: set[tuple] = set()
    out: list[tuple] = []
    counts: list[str] = []
    sizes: list[tuple[int, int]] = []
    append, add = out.append, seen.add
    for r in recs:
        split = default if r.split is None else r.split
        ds = splits.get(split) if split is not None else None
        e, i = r.expression_id, r.image_id
        if ds is None or not ds.has_target(e, i):
            return None
        key = (split, e, i)
        if key in seen:
            return None
        add(key)
        seg = r.segmentation
        j = -1
        if seg is None:
            rle = None
        else:
            im = ds.image(i)
            size = seg.size
            if len(size) != 2 or size[0] != im.height or size[1] != im.width:
                return None
            c = seg.counts
            if type(c) is str:
                rle = {"size": size, "counts": c}
                j = len(counts)
                counts.append(c)
                sizes.append((im.height, im.width))
            else:  # uncompressed runs: checked and compressed one by one (rare)
                try:
                    rle = masks.to_rle({"size": size, "counts": c}, im.height, im.width)
                except masks.MaskError:
                    return None
        append((split, e, i, rle, r.score, r.no_target, r.peak, j))
    ok, _, area, runs = check_rles_runs(counts, sizes)
    if not ok.all():
        return None
    area = area.tolist()
    return [Prediction(s_, e, i, rle, score, checked=True, no_target=nt, peak=peak,
                       area=area[j] if j >= 0 else None, runs=runs[j] if j >= 0 else None)
            for s_, e, i, rle, score, nt, peak, j in out]


def read_png_mask(path: Path, h: int, w: int, where: str) -> np.ndarray:
    """Read a mask PNG as uint8 ``(h, w)``: :func:`grdkit.evaluators.pngmasks.read_mask_png`
    (grey, RGB, palette and alpha masks; size checked before decoding)."""
    return read_mask_png(path, h, w, where)


def read_prediction_folder(folder: str | Path, gt: GroundTruth, keep_soft: bool = False
                           ) -> list[Prediction]:
    """Read ``<expression_id>/<image_id>.png`` masks (``<split>/...`` first for several splits).

    Every PNG must name a known pair; other files are errors (nothing is ignored silently),
    except the no-target sidecar ``no_target.json`` at the top (module header).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "predictions folder not found")
    decisions = read_no_target_sidecar(folder / NO_TARGET_SIDECAR, gt)
    out: list[Prediction] = []
    split_dirs = ([(s, folder / s) for s in gt.splits] if gt.multi
                  else [(next(iter(gt.splits)), folder)])
    for split, root in split_dirs:
        ds = gt.splits[split]
        if not root.is_dir():
            continue
        # symlinked folders followed, duplicates refused; the sidecar is not a mask
        for e, i, p in list_mask_pngs(root, skip=(folder / NO_TARGET_SIDECAR,)):
            where = f"file {p.relative_to(root)}"
            if not ds.has_target(e, i):
                raise InputError(p, f"unknown pair (expression_id {e}, image_id {i}) in split "
                                 f"{split!r}", where)
            im = ds.image(i)
            arr = read_png_mask(p, im.height, im.width, where)
            binary = arr >= 128
            rle = masks.encode(binary) if binary.any() else None
            out.append(Prediction(split, e, i, rle, None, arr if keep_soft else None,
                                  checked=True, no_target=decisions.pop((split, e, i), None)))
    for (split, e, i), nt in decisions.items():  # a decision without a PNG: an empty mask
        out.append(Prediction(split, e, i, None, None, None, checked=True, no_target=nt))
    return out


NO_TARGET_SIDECAR = "no_target.json"


def read_no_target_sidecar(path: Path, gt: GroundTruth) -> dict[tuple[str, int, int], bool]:
    """The no-target decisions of a PNG folder (``no_target.json``), ``{(split, expression_id,
    image_id): bool}``; empty when the file does not exist.

    Raises:
        InputError: not a list of records, an unknown or duplicate pair, a non-boolean
            ``no_target`` (file and record named).
    """
    if not path.exists():
        return {}
    hint = "write a JSON list of {expression_id, image_id, no_target}"
    data = read_bytes(path, "no-target sidecar", hint)
    try:
        _SIDECAR.decode(data)  # the schema: types checked before any value is used
        schema_error = None
    except msgspec.ValidationError as e:
        schema_error = str(e)
    except (msgspec.DecodeError, RecursionError):
        schema_error = None  # malformed JSON: named by the standard parser below
    records = loads_json(path, data, hint)
    out = _sidecar_records(path, records, gt)
    if schema_error is not None:  # the checks below accept what the schema refuses
        raise InputError(path, f"does not match the sidecar schema: {quote(schema_error, 200)}",
                         hint=hint)
    return out


def _sidecar_records(path: Path, records: Any, gt: GroundTruth
                     ) -> dict[tuple[str, int, int], bool]:
    if not isinstance(records, list):
        raise InputError(path, f"top level is a {type(records).__name__}, expected a list")
    out: dict[tuple[str, int, int], bool] = {}
    for k, r in enumerate(records):
        where = f"records[{k}]"
        if not isinstance(r, dict):
            raise InputError(path, f"is a {type(r).__name__}, not an object", where)
        e, i, nt = r.get("expression_id"), r.get("image_id"), r.get("no_target")
        where = f"records[{k}] (expression_id {quote(e)}, image_id {quote(i)})"
        if not _int(e) or not _int(i):
            raise InputError(path, "expression_id and image_id must be integers", where)
        if not isinstance(nt, bool):
            raise InputError(path, f"no_target {quote(nt)} is not true or false", where)
        split = gt.resolve_split(r.get("split"), where, path)
        if not gt.splits[split].has_target(e, i):
            raise InputError(path, f"unknown pair (expression_id {e}, image_id {i}) in split "
                             f"{split!r}", where)
        if (split, e, i) in out:
            raise InputError(path, "duplicate pair", where)
        out[(split, e, i)] = nt
    return out


def load_predictions(source: Any, gt: GroundTruth, keep_soft: bool = False) -> list[Prediction]:
    """Predictions from a JSON path, a PNG folder, a list of dicts, or Prediction objects."""
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            return read_prediction_folder(p, gt, keep_soft)
        return read_prediction_json(p, gt)
    source = list(source) if isinstance(source, Iterable) else source
    if source and all(isinstance(x, Prediction) for x in source):
        return source
    return parse_prediction_records(source, gt, "<predictions>")
