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
              help="Output folder: Parquet shards per config and split, plus README.md card.")
@click.option("--img-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Embed the image files (datasets.Image); without it images are file names.")
@click.option("--config", "configs", type=click.Choice(CONFIGS), multiple=True,
              help="groups (one row per group and expression; default) and/or pairs (one row "
                   "per expression-image pair). Repeat for both.")
@click.option("--shard-rows", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows per Parquet shard.")
@no_progress_option
def export_hf_cmd(dataset_dir, out_dir, img_root, configs, shard_rows, no_progress):
    """Write DATASET_DIR (a built folder or one split file) as a HuggingFace dataset folder.

    The result loads with datasets.load_dataset(OUT) (no loading script) and is ready for
    push_to_hub; grdkit.hf.from_hf turns it back into the canonical format exactly.
    """
    check_outputs([dataset_dir, img_root], folders={"--out": out_dir})
    splits = (load_splits(dataset_dir) if dataset_dir.is_dir()
              else {dataset_dir.stem: load_dataset(dataset_dir)})
    with progress_bar(not no_progress) as track:
        result = export_hf(splits, out_dir, img_root, configs or ("groups",), shard_rows,
                           progress=track)
    rows = []
    for config, per in result.items():
        for split, r in per.items():
            rows.append({"config": config, "split": split, "rows": r["rows"],
                         "files": len(r["files"]), "MB": round(r["bytes"] / 2**20, 2)})
    out.print(table(f"{dataset_dir} -> {out_dir}", rows))
    out.print(f"Load with: datasets.load_dataset({str(out_dir)!r})")
