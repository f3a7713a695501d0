"""``grdkit convert d3``, ``grdkit convert cosod``, ``grdkit validate`` and ``grdkit show``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..builders import (
    DATASETS,
    EXPRESSION_ALIASES,
    EXPRESSION_SETS,
    SETTINGS,
    build_cosod,
    convert_d3,
    default_expressions,
)
from ..errors import InputError
from ..export import write_dataset
from ..io import atomic_write_bytes, atomic_write_text, check_outputs
from ..sources.d3 import read_d3, read_d3_json
from ..validate import ValidationReport, check_images, validate_path
from .ui import (
    AliasOption,
    Output,
    err,
    format_option,
    is_stdout,
    no_progress_option,
    out,
    progress_bar,
    split_file,
    table,
)


@click.group("convert")
def convert_group():
    """Convert released datasets to the canonical GRES format."""


@convert_group.command("d3")
@click.option("--anno-root", type=click.Path(path_type=Path),
              help="D³ annotation folder: sentences.pkl, annotations.pkl, images.pkl, "
                   "groups.pkl. With --json: the folder whose groups.pkl (and sentences.pkl) "
                   "give the groups (and presence / absence).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path),
              help="D³'s COCO-style JSON instead of the pickles (d3_full_annotations.json, "
                   "d3_pres_annotations.json or d3_abs_annotations.json).")
@click.option("--img-root", type=click.Path(file_okay=False, path_type=Path),
              help="D³ image folder; every image is checked to exist with its recorded size.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: test.json (canonical format) and README.md.")
@click.option("--setting", type=click.Choice(SETTINGS), default="intra", show_default=True,
              help="intra: each group's sentences vs. that group's images (GRD); inter: every "
                   "sentence vs. every image.")
@click.option("--expressions", type=click.Choice([*EXPRESSION_SETS, *EXPRESSION_ALIASES]),
              help="presence (= GRD's 316 expressions), absence, or all; D³'s names pres, abs, "
                   "full too. Default: presence for the pickles, the sentences a --json file "
                   "holds.")
def convert_d3_cmd(anno_root, json_file, img_root, out_dir, setting, expressions):
    """Convert GRD as released (the D³ pickles or COCO JSON) to the canonical format.

    With the defaults (intra, presence) the result is GRD: the summary prints its counts next
    to the paper's (316 expressions, 31,524 pairs). A --json file has no groups: the intra
    setting also needs --anno-root with groups.pkl; otherwise use --setting inter.
    """
    if json_file is None and anno_root is None:
        raise click.UsageError("give --anno-root (the D³ pickles) or --json (a D³ COCO JSON)")
    check_outputs([anno_root, json_file, img_root], folders={"--out": out_dir})
    if json_file is not None:
        data = read_d3_json(json_file, anno_root)
    else:
        data = read_d3(anno_root)
    ds = convert_d3(data, setting, expressions or default_expressions(data))
    expressions = ds.info["recipe"]["expressions"]
    if img_root is not None:
        rep = ValidationReport(str(img_root), "images")
        check_images(img_root, [{"id": im.id, "file_name": im.file_name, "height": im.height,
                                 "width": im.width} for im in ds.images], rep, str(img_root))
        if rep.errors:
            p = rep.errors[0]
            raise InputError(img_root, p.message, p.record,
                             f"{len(rep.errors)} image problems; run grdkit validate "
                             "--img-root for all")
    paths = write_dataset({"test": ds}, out_dir)
    pos = sum(t.positive for t in ds.targets)
    paper = setting == "intra" and expressions == "presence"
    rows = [{"": "grdkit", "groups": len(ds.groups), "images": len(ds.images),
             "expressions": len(ds.expressions), "pairs": len(ds.targets), "positive": pos,
             "negative": len(ds.targets) - pos}]
    if paper:
        rows.append({"": "GRES paper (GRD)", **{k: DATASETS["grd"].paper[k] for k in
                                                 ("groups", "images", "expressions", "pairs")},
                     "positive": "-", "negative": "-"})
    out.print(table(f"D³ -> canonical ({setting}, {expressions})", rows))
    objects = sum(len(t.ann_ids) for t in ds.targets if t.positive)
    grd = DATASETS["grd"].paper
    out.print(f"positive object-expression pairs (annotated objects of positive targets): "
              f"{objects}" + (f"; GRES §1: {grd['positive_objects']}, and {grd['negative_pairs']} "
                              "negative image-expression pairs (see the GRD card)"
                              if paper else ""))
    shared = len(ds.expressions) - len({e.extra["d3_sent_id"] for e in ds.expressions})
    if shared:
        err.print(f"note: {shared} sentences are listed in several groups and became one "
                  "expression per group")
    out.print(f"Wrote {', '.join(str(p) for p in paths)}")


@convert_group.command("cosod")
@click.option("--img-root", "--images", "images", cls=AliasOption, aliases=("--images",),
              required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Image root: <group>/<name>.jpg (or .png), one folder per group.")
@click.option("--masks", "masks_root", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Mask root: <group>/<name>.png (foreground where grey >= 128).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: test.json (canonical format) and README.md.")
@click.option("--negatives", default=0, show_default=True, type=click.IntRange(min=0),
              help="Negative images per group, drawn from other groups (not certified).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the negative draw; same inputs + seed = byte-identical output.")
@no_progress_option
def convert_cosod_cmd(images, masks_root, out_dir, negatives, seed, no_progress):
    """Convert Co-SOD group folders (CoCA, CoSal2015, CoSOD3k) to the canonical format.

    One group per folder; its expression is the folder name with _ as a space (the GRES
    paper's Table 3 setting); an image whose mask has foreground is positive, one whose mask is
    all zero is a certified negative of its group (SOC's and D³'s data2coca convention). An
    image without a mask or a mask without an image stops the conversion (nothing is dropped).

    \b
    Example on CoCA:
        grdkit convert cosod --img-root CoCA/image --masks CoCA/binary --out out/coca
    """
    check_outputs([images, masks_root], folders={"--out": out_dir})  # --img-root
    with progress_bar(not no_progress) as track:
        ds, report = build_cosod(images, masks_root, negatives, seed, progress=track)
    paths = write_dataset({"test": ds}, out_dir, report.notes())
    pos = sum(t.positive for t in ds.targets)
    out.print(table(f"Co-SOD folders -> canonical (negatives {negatives}, seed {seed})", [
        {"groups": len(ds.groups), "images": len(ds.images), "pairs": len(ds.targets),
         "positive": pos, "negative": len(ds.targets) - pos,
         "certified negative": report.certified_negatives}]))
    if negatives:
        err.print("note: negatives drawn from other groups are not certified (an image may "
                  "show another group's object)")
    if report.shortfall_groups:
        err.print(f"warning: {report.shortfall_groups} groups got "
                  f"{report.shortfall_images} fewer negatives than requested (pool too small).")
    out.print(f"Wrote {', '.join(str(p) for p in paths)}")


@click.command("validate")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--img-root", type=click.Path(path_type=Path),
              help="Also check every image file: exists, opens, has the recorded size.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every problem as JSON; '-' writes it to stdout (instead of the "
                   "tables).")
@click.option("--show", type=click.IntRange(min=0), default=20, show_default=True,
              help="Problems listed in the tables (count; all are in --json).")
@format_option
def validate_cmd(path, img_root, json_out, show, output_format):
    """Check a GRES dataset (split file or folder), a D³ folder or a refer folder.

    Exit 1 when any error is found, 0 otherwise (warnings allowed), 2 when the input cannot be
    read at all. See grdkit.validate for the list of checks.
    """
    check_outputs([path, img_root], {"--json": None if is_stdout(json_out) else json_out})
    report = validate_path(path, img_root)
    doc = json.dumps(report.to_dict(), indent=1) + "\n"
    if json_out and not is_stdout(json_out):
        atomic_write_text(json_out, doc)  # written before anything is printed
    n_err, n_warn = len(report.errors), len(report.warnings)
    if is_stdout(json_out):
        click.echo(doc, nl=False)
        return 1 if n_err else 0
    o = Output(output_format)
    counts = report.counts()
    checked = ", ".join(f"{v} {k}" for k, v in report.checked.items())
    o.text(f"{path} ({report.input_kind}): checked {checked}")
    if counts:
        o.table("problems by kind", [{"severity": s, "kind": k, "count": c}
                                     for (s, k), c in counts.items()])
        shown = sorted(report.problems, key=lambda p: p.severity != "error")[:show]
        if shown:
            o.table(f"first {len(shown)} of {len(report.problems)}", [
                {"severity": p.severity, "kind": p.kind, "record": p.record,
                 "message": p.message} for p in shown])
    style = "red" if n_err else "green"
    o.text(f"{n_err} errors, {n_warn} warnings", style=style)
    o.emit(report.to_dict())
    return 1 if n_err else 0


@click.command("show")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--split", help="With a built folder: the split to show (default: the only one).")
@click.option("--expression", "expression_id", type=int,
              help="Expression id (default: the first expression of --group, or of the file).")
@click.option("--group", "group_id", type=int,
              help="Group id (default: the group of --expression, or the first).")
@click.option("--img-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Image folder; without it masks are drawn on grey canvases.")
@click.option("--preds", type=click.Path(exists=True, path_type=Path),
              help="preds.json or PNG folder: outline the predictions in red; each tile shows "
                   "its outcome and IoU (profile grdkit, original resolution).")
@click.option("--worst", type=click.IntRange(min=1),
              help="With --preds: draw every expression of the N lowest-scoring groups (by "
                   "GRES mIoU, ties by split and group id); --out is then a folder of PNGs.")
@click.option("--columns", type=click.IntRange(min=1), default=4, show_default=True,
              help="Tiles per row.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              help="Output PNG (a folder with --worst).")
def show_cmd(dataset, split, expression_id, group_id, img_root, preds, worst, columns, out_path):
    """Render a group with its masks (and predictions) as a PNG contact sheet.

    DATASET is a split file or a built folder (--split picks the split). Green is the ground
    truth, red the prediction; a prediction covering at least 95% of the image is tinted
    orange and captioned WHOLE IMAGE.
    """
    import io

    from ..evaluators import evaluate
    from ..format import load_dataset, load_splits
    from ..io import Commit

    if worst is not None and preds is None:
        raise click.UsageError("--worst needs --preds (groups are ranked by their scores)")
    if worst is not None and (group_id is not None or expression_id is not None):
        raise click.UsageError("--worst picks the groups; drop --group / --expression")
    check_outputs([dataset, img_root, preds], *(({}, {"--out": out_path}) if worst
                                                else ({"--out": out_path}, {})))
    if dataset.is_dir() and (worst is None or split is not None):
        f = split_file(dataset, split)  # one split: named, or the folder's only one
        splits = {f.stem: load_dataset(f)}
    elif dataset.is_dir():  # --worst ranks the groups of every split
        splits = load_splits(dataset)
    else:
        ds = load_dataset(dataset)
        splits = {ds.split or "test": ds}
    rows = None
    if preds is not None:
        rows = evaluate(preds, splits, per_pair=True)
    if worst is not None:
        order = rows.worst_groups(worst)
        with Commit() as commit:
            written = []
            for s, gid in zip(order["split"], order["group_id"]):
                ds = splits[s]
                for eid in ds.group(int(gid)).expression_ids:
                    img = _sheet(ds, s, eid, img_root, rows, columns)
                    name = out_path / f"{s}-group{int(gid)}-expression{eid}.png"
                    buf = io.BytesIO()
                    img.save(buf, format="PNG")
                    commit.write_bytes(name, buf.getvalue())
                    written.append(name)
        out.print(f"Wrote {len(written)} sheets of the {len(order)} lowest-scoring groups "
                  f"into {out_path}")
        return
    split, ds = next(iter(splits.items()))
    if expression_id is None:
        if group_id is not None:
            try:
                expression_id = ds.group(group_id).expression_ids[0]
            except KeyError:
                raise InputError(dataset, f"no group {group_id}") from None
        elif ds.expressions:
            expression_id = ds.expressions[0].id
        else:
            raise InputError(dataset, "has no expression to show")
    try:
        ds.expression(expression_id)
    except KeyError:
        raise InputError(dataset, f"no expression {expression_id}") from None
    img = _sheet(ds, split, expression_id, img_root, rows, columns)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(out_path, buf.getvalue())
    out.print(f"Wrote {out_path} ({img.width}x{img.height})")


def _sheet(ds, split: str, expression_id: int, img_root, report, columns: int):
    """One expression's contact sheet; with a report (evaluate(per_pair=True)) its masks,
    outcomes and IoUs."""
    from ..export.show import render_group

    if report is None:
        return render_group(ds, expression_id, img_root, None, columns)
    df = report.pairs
    sel = df[(df["split"] == split) & (df["expression_id"] == expression_id)]
    pred_map = {int(i): report.pair_masks.get((split, expression_id, int(i)))
                for i in sel["image_id"]}
    scores = {int(i): (o, float(u)) for i, o, u in zip(sel["image_id"], sel["outcome"],
                                                       sel["iou"])}
    return render_group(ds, expression_id, img_root, pred_map, columns, scores)
