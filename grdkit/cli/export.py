"""``grdkit export hf``."""

from __future__ import annotations

from pathlib import Path

import click

from ..export.hf import CONFIGS, export_hf
from ..format import load_dataset, load_splits
from ..io import check_outputs
from .ui import no_progress_option, out, progress_bar, table


@click.group("export")
def export_group():
    """Export canonical datasets to other ecosystems."""


@export_group.command("hf")
@click.argument("dataset_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: README.md (the card) and data/<config>/<split>-*.parquet, what "
                   "huggingface-cli upload sends as is.")
@click.option("--img-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Embed the image files (image / images, datasets.Image); without it the "
                   "dataset names them (file_name / file_names) and holds no image.")
@click.option("--config", "configs", type=click.Choice(CONFIGS), multiple=True,
              help="groups (one row per group and expression; default) and/or pairs (one row "
                   "per expression-image pair). Repeat for both.")
@click.option("--shard-rows", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows per Parquet shard (rows).")
@click.option("--mask-images/--no-mask-images", default=True, show_default=True,
              help="Also store each mask as a 1-bit PNG Image column (mask / masks), which the "
                   "Hub's viewer shows and with_format('numpy') decodes; the exact COCO RLE "
                   "column (mask_rle / masks_rle) is always written.")
@click.option("--repo-id", default=None,
              help="Hub name (user/name) used in the card's load_dataset example and the "
                   "upload command printed; default: <user>/<dataset name>. Nothing is "
                   "uploaded.")
@no_progress_option
def export_hf_cmd(dataset_dir, out_dir, img_root, configs, shard_rows, mask_images, repo_id,
                  no_progress):
    """Write DATASET_DIR (a built folder or one split file) as a HuggingFace dataset folder.

    The result loads with datasets.load_dataset(OUT) (no loading script) and is what
    `huggingface-cli upload USER/NAME OUT --repo-type dataset` sends as is;
    grdkit.hf.from_hf(..., card=OUT) turns it back into the canonical format exactly.
    """
    check_outputs([dataset_dir, img_root], folders={"--out": out_dir})
    splits = (load_splits(dataset_dir) if dataset_dir.is_dir()
              else {dataset_dir.stem: load_dataset(dataset_dir)})
    with progress_bar(not no_progress) as track:
        result = export_hf(splits, out_dir, img_root, configs or ("groups",), shard_rows,
                           progress=track, mask_images=mask_images, repo_id=repo_id)
    rows = []
    for config, per in result.items():
        for split, r in per.items():
            rows.append({"config": config, "split": split, "rows": r["rows"],
                         "files": len(r["files"]), "MB": round(r["bytes"] / 2**20, 2)})
    out.print(table(f"{dataset_dir} -> {out_dir}", rows))
    repo = repo_id or f"<user>/{next(iter(splits.values())).name or 'dataset'}"
    out.print(f"Load with: datasets.load_dataset({str(out_dir)!r})")
    out.print(f"Upload with: huggingface-cli upload {repo} {out_dir} --repo-type dataset")


def _load_export_input(dataset: Path) -> dict:
    if dataset.is_dir():
        return load_splits(dataset)
    ds = load_dataset(dataset)
    return {ds.split or dataset.stem: ds}


def _split_by_default(splits: dict, fallback: str) -> str:
    for ds in splits.values():
        sb = (ds.info.get("recipe") or {}).get("split_by")
        if isinstance(sb, str) and sb:
            return sb
    return fallback


def _summary_rows(summary: dict) -> list[dict]:
    return [{"what": k.replace("_", " "), "count": v} for k, v in summary.items()]


@export_group.command("refer")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: refs(<splitBy>).p and instances.json (the refer toolkit's "
                   "layout, lichengunc/refer).")
@click.option("--split-by", default=None,
              help="The <splitBy> of refs(<splitBy>).p. Default: the dataset recipe's split_by, "
                   "else umd.")
def export_refer_cmd(dataset, out_dir, split_by):
    """Write DATASET (a built folder or one split file) in the refer toolkit's layout.

    One ref per positive (expression, image) target, sentences of one source ref together;
    masks as exact polygons. Negatives and groups, which the layout cannot hold, are kept in
    instances.json["grdkit"] and counted below.
    """
    from ..export.refer import export_refer

    _export_layout(dataset, out_dir, split_by, "umd", export_refer, "refer", "refs({}).p")


def _export_layout(dataset, out_dir, split_by, default_split_by, write, name, refs_name):
    """The body of ``export refer`` / ``export grefcoco``: check, read, write, summarise."""
    check_outputs([dataset], folders={"--out": out_dir})
    splits = _load_export_input(dataset)
    split_by = split_by or _split_by_default(splits, default_split_by)
    summary = write(splits, out_dir, split_by)
    out.print(table(f"export {name}", _summary_rows(summary)))
    out.print(f"Wrote {out_dir / refs_name.format(split_by)} and {out_dir / 'instances.json'}")


@export_group.command("grefcoco")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: grefs(<splitBy>).json and instances.json (gRefCOCO's layout, "
                   "read by ReLA and MABP).")
@click.option("--split-by", default=None,
              help="The <splitBy> of grefs(<splitBy>).json. Default: the dataset recipe's "
                   "split_by, else unc (ReLA's configs read grefs(unc)).")
def export_grefcoco_cmd(dataset, out_dir, split_by):
    """Write DATASET (a built folder or one split file) in gRefCOCO's layout.

    Positive pairs become refs with their annotation ids, negative pairs no-target refs
    (ann_id [-1], no_target true), so ReLA and MABP train and evaluate on it unchanged.
    Groups are kept in instances.json["grdkit"].
    """
    from ..export.refer import export_grefcoco

    _export_layout(dataset, out_dir, split_by, "unc", export_grefcoco, "grefcoco",
                   "grefs({}).json")
