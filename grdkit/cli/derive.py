"""``grdkit derive res|union|split``: canonical datasets derived from canonical datasets
(:mod:`grdkit.format.derive`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..io import check_outputs
from .ui import out, split_file, table


@click.group("derive")
def derive_group() -> None:
    """Derive a canonical dataset from canonical datasets (GRES §5.1 RES setting, §5.3 union,
    a train / val split by group)."""


def _print_counts(title: str, before: dict, counts) -> None:
    keys = list(dict.fromkeys([*before, *counts.kept, *counts.dropped]))
    out.print(table(title, [{"records": k, "source": before.get(k, "-"),
                             "kept": counts.kept.get(k, "-"),
                             "dropped": counts.dropped.get(k, "-")} for k in keys]))


@derive_group.command("res")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--split", help="With a built folder: the split to derive (needed when it has "
                              "several).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The RES-setting split file to write.")
def derive_res_cmd(dataset: Path, split: str | None, out_path: Path):
    """The RES setting of a GRES split (GRES §5.1): negatives removed.

    Each expression becomes a group of the images it refers to; negative targets, expressions
    without a positive image and images no kept expression refers to are dropped, and the counts
    printed. Train and test on such files for GRES Table 2's RES columns: there, mIoU is
    grdkit eval's res_miou; res_miou of a GRES run (with negatives in the groups) is another
    quantity, the mean IoU over the positive pairs of a model that also saw negatives.
    """
    from ..format import load_dataset, save_dataset
    from ..format.derive import res_setting

    check_outputs([dataset], {"--out": out_path})
    dataset = split_file(dataset, split)
    ds = load_dataset(dataset)
    res, counts = res_setting(ds)
    save_dataset(res, out_path)
    before = {"images": len(ds.images), "expressions": len(ds.expressions),
              "groups": len(ds.groups), "positive": sum(t.positive for t in ds.targets),
              "negative": sum(not t.positive for t in ds.targets)}
    _print_counts(f"RES setting of {dataset} -> {out_path}", before, counts)


@derive_group.command("union")
@click.argument("datasets", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The union split file to write.")
@click.option("--name", help="info.name of the union (default: the sources' names joined by +).")
def derive_union_cmd(datasets: tuple[Path, ...], out_path: Path, name: str | None):
    """The union of several splits, ids kept distinct (GRES §5.3 trains on G-RefC + G-RefC+ +
    G-RefCg). grdkit train --data A --data B builds the same union in memory."""
    from ..format import load_dataset, save_dataset
    from ..format.derive import union

    check_outputs(list(datasets), {"--out": out_path})
    sets = [load_dataset(p) for p in datasets]
    res, counts = union(sets, name)
    save_dataset(res, out_path)
    before = {"images": sum(len(d.images) for d in sets),
              "expressions": sum(len(d.expressions) for d in sets),
              "groups": sum(len(d.groups) for d in sets),
              "targets": sum(len(d.targets) for d in sets)}
    _print_counts(f"union of {len(sets)} splits -> {out_path}", before, counts)


@derive_group.command("split")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: train.json, val.json and a README.md data card.")
@click.option("--val", "val_share", default=0.2, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of the groups that go to val (a fraction in (0, 1); rounded to whole "
                   "groups, at least one on each side).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the group permutation; same input + seed = byte-identical files.")
def derive_split_cmd(dataset: Path, out_dir: Path, val_share: float, seed: int):
    """Split one canonical split file into train / val by group, deterministically.

    Whole groups go to one side (see grdkit.format.derive.split_groups): the path from your own
    image folders to a baseline is `grdkit convert cosod` -> `grdkit derive split` ->
    `grdkit train --data <out>/train.json --val-data <out>/val.json`.

    \b
    Example:
        grdkit derive split out/mine/test.json --val 0.2 --seed 0 --out out/mine-split
    """
    from ..export import write_dataset
    from ..format import load_dataset
    from ..format.derive import split_groups

    check_outputs([dataset], folders={"--out": out_dir})
    ds = load_dataset(dataset)
    parts, counts = split_groups(ds, val_share, seed)
    note = f"Split by group from `{dataset.name}` (val {val_share}, seed {seed})."
    paths = write_dataset(parts, out_dir, {s: note for s in parts})
    k = counts.kept
    out.print(table(f"split of {dataset} by group (val {val_share}, seed {seed})",
                    [{"split": s, "groups": k[f"{s}_groups"],
                      "expressions": k[f"{s}_expressions"], "images": k[f"{s}_images"],
                      "pairs": k[f"{s}_targets"]} for s in ("train", "val")]))
    if k["shared_images"]:
        out.print(f"{k['shared_images']} images belong to groups on both sides")
    out.print(f"Wrote {', '.join(str(p) for p in paths)}")
