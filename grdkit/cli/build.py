"""``grdkit build`` and ``grdkit stats``."""

from __future__ import annotations

from pathlib import Path

import click

from ..builders import NEGATIVE_MODES, build_dataset, dataset_spec, refer_datasets
from ..builders.grefcoco import build_grefcoco
from ..builders.res import build_res
from ..export import write_dataset
from ..format import load_dataset, load_splits
from ..format.stats import SUMMARY_COLUMNS, dataset_stats, summary_rows
from ..io import check_outputs
from ..registry import SPLIT_BYS
from ..testing import demo_root
from .ui import Output, err, format_option, no_progress_option, progress_bar


@click.command("build")
@click.argument("dataset", type=click.Choice(refer_datasets()))
@click.option("--refer-root", type=click.Path(file_okay=False, path_type=Path),
              help="Refer-format folder with refs(<splitBy>).p and instances.json. "
                   "Omitted: grdkit's bundled synthetic demo sample is used.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: <split>.json per split and a README.md data card.")
@click.option("--split-by", type=click.Choice(SPLIT_BYS),
              help="refer partition: unc or google for g-refcoco (default unc), unc for "
                   "g-refcoco+, umd or google for g-refcocog (default umd).")
@click.option("--min-images", default=2, show_default=True, type=click.IntRange(min=1),
              help="Keep groups with at least this many distinct positive images.")
@click.option("--neg-ratio", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Negative images per positive image (the paper's 1:1 is 1.0).")
@click.option("--negatives", type=click.Choice(NEGATIVE_MODES), default="random",
              show_default=True,
              help="random: any other image of the split (paper). category-disjoint: also no "
                   "non-crowd instance of a referent's COCO category (certified negatives).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of negative sampling; same inputs + seed = byte-identical output.")
@no_progress_option
@format_option
@click.pass_context
def build_cmd(ctx, dataset, refer_root, out_dir, split_by, min_images, neg_ratio, negatives, seed,
              no_progress, output_format):
    """Regroup a refer dataset into one expression vs. a group of images (GRES §5.1).

    Sentences repeated across images of a split form a group; each group gets negative images
    sampled from the split's other images (see `grdkit.builders.refer` for the exact rule). Writes
    <out>/<split>.json in the canonical format and <out>/README.md (data card).
    Without --refer-root it runs on grdkit's bundled demo sample (synthetic data).

    grefcoco (gRefCOCO, ReLA CVPR 2023) is the generalized-RES benchmark as released: one group
    per image, every sentence an expression, no-target refs as empty targets; the regrouping
    options do not apply to it.

    refcoco, refcoco+, refcocog are the classic single-image RES benchmarks (LTS, MABP Table I):
    one sample per (ref, sentence), its target the ref's mask; the published sample counts are
    printed beside the build's. Splits: unc (train/val/testA/testB) for refcoco and refcoco+,
    umd (train/val/test) or google (train/val) for refcocog.

    \b
    Example on real RefCOCOg (umd):
        grdkit build g-refcocog --refer-root refer/data/refcocog --out out/g-refcocog
        grdkit build grefcoco --refer-root datasets/grefcoco --out out/grefcoco
        grdkit build refcocog --refer-root refer/data/refcocog --out out/refcocog
    """
    check_outputs([refer_root], folders={"--out": out_dir})
    spec = dataset_spec(dataset)
    if spec.builder in ("grefcoco", "res"):
        given = [f"--{p.replace('_', '-')}" for p in ("min_images", "neg_ratio", "negatives",
                                                      "seed")
                 if ctx.get_parameter_source(p) != click.core.ParameterSource.DEFAULT]
        if given:
            verb = "does" if len(given) == 1 else "do"
            raise click.UsageError(f"{', '.join(given)} {verb} not apply to {dataset} (one "
                                   "group per image, no sampled negatives)")
        if spec.builder == "res":
            return _build_res(dataset, refer_root, out_dir, split_by, no_progress, output_format)
        if refer_root is None:
            raise click.UsageError(f"{dataset} needs --refer-root (a folder with "
                                   "grefs(unc).json and instances.json)")
        return _build_grefcoco(dataset, refer_root, out_dir, split_by, no_progress,
                               output_format)
    if refer_root is None:
        refer_root = demo_root()
        err.print(f"No --refer-root given: using grdkit's bundled demo sample "
                  f"({refer_root}), small synthetic refer-format data. Pass --refer-root "
                  "for real RefCOCO / RefCOCO+ / RefCOCOg.")
    split_by = spec.check_split_by(split_by)
    with progress_bar(not no_progress) as track:
        datasets, report = build_dataset(dataset, refer_root, split_by, min_images, neg_ratio,
                                         negatives, seed, progress=track)
    paths = write_dataset(datasets, out_dir, report.notes())
    o = Output(output_format)
    rows = summary_rows(datasets)
    for r in rows:
        rp = report.splits.get(r["split"])
        r["dropped_groups"] = rp["dropped_groups"] if rp else sum(
            v["dropped_groups"] for v in report.splits.values())
    o.table(f"{dataset} (splitBy {split_by}, min_images {min_images}, "
            f"neg_ratio {neg_ratio}, negatives {negatives}, seed {seed})", rows)
    if spec.paper:
        ours = sum(len(d.groups) for d in datasets.values())
        o.text(f"groups: {ours} here, {spec.paper['groups']} in the paper ({spec.citation}; "
               "its grouping rule is unpublished, so counts need not match)")
    short = {s: v for s, v in report.splits.items() if v["negative_shortfall_groups"]}
    for s, v in short.items():
        err.print(f"warning: {s}: {v['negative_shortfall_groups']} groups got "
                  f"{v['negative_shortfall_images']} fewer negatives than requested "
                  "(pool too small).")
    o.text(f"Wrote {', '.join(str(p) for p in paths)}")
    o.emit()


def _build_res(dataset, refer_root, out_dir, split_by, no_progress, output_format):
    spec = dataset_spec(dataset)
    if refer_root is None:
        refer_root = demo_root()
        err.print(f"No --refer-root given: using grdkit's bundled demo sample "
                  f"({refer_root}), small synthetic refer-format data.")
    split_by = spec.check_split_by(split_by)
    with progress_bar(not no_progress) as track:
        datasets, report = build_res(dataset, refer_root, split_by, progress=track)
    paths = write_dataset(datasets, out_dir, report.notes())
    o = Output(output_format)
    published = spec.paper_splits.get(split_by, {})
    rows = [{"split": s, "images": rp["images"], "samples": rp["expressions"],
             "published": published.get(s, "-")} for s, rp in report.splits.items()]
    o.table(f"{dataset} (splitBy {split_by}): samples = (ref, sentence) pairs", rows)
    total = {"images": len({i.id for d in datasets.values() for i in d.images}),
             "expressions": sum(rp["expressions"] for rp in report.splits.values())}
    if spec.paper:
        o.text(f"whole dataset: {total['images']} images, {total['expressions']} samples "
               "here; published (" + spec.citation + "): " + ", ".join(
                   f"{v} {k}" for k, v in spec.paper.items())
               + (" (counts every split, released or not)" if dataset == "refcocog" else ""))
    skipped = sum(rp["empty_sentences"] for rp in report.splits.values())
    if skipped:
        err.print(f"note: {skipped} empty sentences skipped (counted in the card)")
    o.text(f"Wrote {', '.join(str(p) for p in paths)}")
    o.emit()


def _build_grefcoco(dataset, refer_root, out_dir, split_by, no_progress, output_format):
    with progress_bar(not no_progress) as track:
        datasets, report = build_grefcoco(refer_root, split_by, progress=track)
    paths = write_dataset(datasets, out_dir, report.notes())
    o = Output(output_format)
    keys = ("expressions", "no_target_expressions", "multi_target_expressions")
    total = {k: sum(v[k] for v in report.splits.values())
             for k in (*keys, "refs_without_sentences", "crowd_only_refs", "empty_sentences")}
    rows = []
    for r in summary_rows(datasets):
        rp = report.splits.get(r["split"], total)
        rows.append({"split": r["split"], "images": r["images"],
                     **{h: rp[k] for h, k in zip(("expr.", "no-target", "multi-target"), keys)}})
    spec = dataset_spec(dataset)
    o.table(f"{dataset} (splitBy {spec.check_split_by(split_by)})", rows)
    if report.splits:
        o.text(f"skipped (counted in the card): {total['refs_without_sentences']} refs "
               f"without sentences, {total['crowd_only_refs']} refs whose referents are all "
               f"crowd, {total['empty_sentences']} empty sentences")
    if spec.paper:
        o.text(f"paper ({spec.citation}): " + ", ".join(f"{v} {k}"
                                                        for k, v in spec.paper.items()))
    o.text(f"Wrote {', '.join(str(p) for p in paths)}")
    o.emit()


@click.command("stats")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@format_option
def stats_cmd(dataset: Path, output_format: str):
    """Print statistics of a canonical dataset (a split file or a built folder).

    --format json prints {"summary": one row per split, "splits": {split: statistics}}.
    """
    splits = load_splits(dataset) if dataset.is_dir() else {dataset.stem: load_dataset(dataset)}
    o = Output(output_format)
    stats = {}
    o.table(f"{dataset}", summary_rows(splits), ["split", *SUMMARY_COLUMNS])
    for split, ds in splits.items():
        s = stats[split] = dataset_stats(ds)
        el = s["expression_length"]
        hist = s["group_size_histogram"]
        o.table(f"{split}: groups by number of images", [hist], list(hist))
        o.text(f"{split}: expression length (words) min {el['min']}, mean {el['mean']}, "
               f"median {el['median']}, max {el['max']}; positive ratio "
               f"{s['positive_ratio']:.2%}")
    o.emit({"summary": summary_rows(splits), "splits": stats})
