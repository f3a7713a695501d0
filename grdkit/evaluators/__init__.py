"""Evaluators: GRES / RES / gRefCOCO / Co-SOD metrics on the canonical format, in the RLE domain.

API::

    report = grdkit.evaluate(predictions, dataset, min_pixels=1, strict=False, cosod=False,
                             bootstrap=0, seed=0, protocol="grdkit",
                             cosod_protocol="pysodmetrics")
    report.metrics["gres_miou"], report.counts, report.breakdowns, report.to_json(),
    report.to_markdown(), report.frames(); write_curves(report, "curves/")
    report = grdkit.evaluate(predictions, dataset, per_pair=True)
    report.pairs  # one row per (expression, image) pair: I, U, IoU, outcome (:mod:`.pairs`)
    board = leaderboard(["a.json", "b.json"]); board.to_markdown()

``predictions``: a ``preds.json`` path, a folder of PNG masks, or a list of dicts (see
:mod:`grdkit.evaluators.predictions`). ``dataset``: a split file, a built folder (several
splits), a :class:`~grdkit.format.GresDataset` or ``{split: GresDataset}``. Metric definitions
and sources: :mod:`grdkit.evaluators.functional` (GRES / RES / gRefCOCO); evaluation profiles
(the evaluator a paper's number came from: ``grdkit``, ``rela``, ``rela-2023-05``, ``mcn``):
:mod:`grdkit.evaluators.profiles` and :mod:`grdkit.evaluators.cosod` (Co-SOD, ``pysodmetrics`` / ``eval-co-sod``);
breakdowns: :mod:`grdkit.evaluators.breakdowns`; leaderboards:
:mod:`grdkit.evaluators.leaderboard`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import naming
from ..format import GresDataset, load_dataset, load_splits
from ..io import Commit
from ..progress import Progress, tracked
from . import state
from .curves import write_curves
from .gres import GresEvaluator
from .leaderboard import Leaderboard, leaderboard
from .localisation import peak_accuracy
from .pairs import evaluator_from_pairs, pair_frame, read_pairs, write_pairs
from .predictions import GroundTruth, load_predictions
from .report import Report, check_gate, comparability_problems
from .state import merge_states

CHUNK = 2048  # predictions validated and processed per batch


def load_ground_truth(dataset: Any) -> dict[str, GresDataset]:
    """``{split: GresDataset}`` from a path (file or folder), a dataset, or a dict of them."""
    if isinstance(dataset, GresDataset):
        return {dataset.split or "test": dataset}
    if isinstance(dataset, dict):
        return dataset
    p = Path(dataset)
    if p.is_dir():
        return load_splits(p)
    ds = load_dataset(p)
    return {ds.split or p.stem: ds}


def evaluate(predictions: Any, dataset: Any, *, min_pixels: int = 1, strict: bool = False,
             cosod: bool = False, bootstrap: int = 0, seed: int = 0,
             save_state: str | Path | None = None, progress: Progress | None = None,
             protocol: str = "grdkit", cosod_protocol: str = "pysodmetrics",
             workers: int = 1, commit: Commit | None = None, per_pair: bool = False) -> Report:
    """Score predictions against a canonical dataset; see the module header.

    Args:
        protocol: the evaluation profile (:mod:`.profiles`): ``"grdkit"`` (original
            resolution), ``"rela"`` (ReLA after 884ef17, 480 x 480), ``"rela-2023-05"`` (ReLA's
            first release as MABP ships it) or ``"mcn"`` (classic RES: mIoU, prec@X > X, oIoU).
        cosod_protocol: ``"pysodmetrics"`` or ``"eval-co-sod"`` (with ``cosod``).
        workers: processes scoring Co-SOD statistics (1 = this process); the report is
            byte-identical whatever the number.
        save_state: also write the per-pair statistics (``.npz``) for ``grdkit eval merge``.
        progress: optional progress callback (:mod:`grdkit.progress`), one step per batch.
        commit: write ``save_state`` into this :class:`grdkit.io.Commit` (with the other
            outputs of a run, all or none) instead of at once.
        per_pair: also keep one row per pair as ``report.pairs`` (a DataFrame,
            :func:`.pairs.pair_frame`) and the predicted masks as ``report.pair_masks``.

    Raises:
        InputError: invalid predictions (named record) or, with ``strict``, missing pairs.
    """
    gt = load_ground_truth(dataset)
    ev = GresEvaluator(gt, min_pixels=min_pixels, cosod=cosod, protocol=protocol,
                       cosod_protocol=cosod_protocol, workers=workers)
    with naming(predictions):  # every record error names the predictions file (class K)
        preds = load_predictions(predictions, GroundTruth(gt), keep_soft=cosod)
    batches = [preds[k:k + CHUNK] for k in range(0, len(preds), CHUNK)]
    try:
        with naming(predictions):
            for batch in tracked(progress, batches, f"evaluating ({CHUNK} pairs a step)",
                                 len(batches)):
                ev.process(batch)
    finally:
        ev.close()
    with naming(predictions):
        loc = localisation(preds, gt)
    if save_state is not None:  # the shard's localisation counts travel with it (eval merge)
        state.save_state(ev, save_state, commit, None if loc is None else {
            "hits": loc["loc_hits"], "pairs": loc["loc_pairs"]})
    cfg = {"predictions": str(predictions) if isinstance(predictions, (str, Path)) else "<api>"}
    if isinstance(dataset, (str, Path)):
        cfg["gt"] = str(dataset)
    report = ev.evaluate(strict=strict, bootstrap=bootstrap, seed=seed, config=cfg)
    if per_pair:
        report.pairs = pair_frame(ev)
        report.pair_masks = {(p.split, p.expression_id, p.image_id): p.rle for p in preds}
    add_localisation(report, loc)
    return report


def add_localisation(report: Report, loc: dict | None) -> Report:
    """``report`` with ``metrics["loc_acc"]`` and ``counts["loc_pairs"]`` (LTS §4.3, from the
    optional "peak" keys, :mod:`.localisation`) when ``loc`` is not None; a single pass and
    merged shards (:func:`.state.merged_localisation`) both go through here."""
    if loc is not None:
        report.metrics["loc_acc"] = loc["loc_acc"]
        report.counts["loc_pairs"] = loc["loc_pairs"]
    return report


def localisation(preds: list, gt: dict[str, GresDataset]) -> dict | None:
    """The localisation accuracy (LTS §4.3) of predictions carrying a ``peak`` (JSON
    ``"peak"`` keys, kept by :func:`load_predictions`), over every split of ``gt``
    (:func:`.localisation.peak_accuracy` per split, pooled); None when none carries one.

    Raises:
        InputError: a malformed peak (named record).
    """
    if not any(p.peak is not None for p in preds):
        return None
    hits = pairs = 0
    for split, ds in gt.items():
        recs = [{"expression_id": p.expression_id, "image_id": p.image_id, "peak": p.peak}
                for p in preds if p.peak is not None and p.split == split]
        loc = peak_accuracy(recs, ds)
        if loc and loc["loc_pairs"]:
            pairs += loc["loc_pairs"]
            hits += round(loc["loc_acc"] * loc["loc_pairs"] / 100)
    return {"loc_acc": 100.0 * hits / pairs if pairs else None, "loc_pairs": pairs,
            "loc_hits": hits}


__all__ = ["GresEvaluator", "Leaderboard", "Report", "add_localisation", "check_gate",
           "comparability_problems", "evaluate", "evaluator_from_pairs", "leaderboard",
           "load_ground_truth", "merge_states", "pair_frame", "read_pairs", "write_curves",
           "write_pairs"]
