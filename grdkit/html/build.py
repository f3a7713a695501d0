"""Builds the static report folder described in :mod:`grdkit.html`.

Pages are assembled as strings with :func:`html.escape` on every value from the data (expression
texts, split names, file names): a template engine (jinja2) would be one more dependency for a
handful of fixed pages. Charts are inline SVG drawn here (a few rectangles; a plotting library
would add megabytes of JS or one PNG per chart).
"""

from __future__ import annotations

import io
import json
from html import escape
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from .. import __version__
from ..evaluators.names import labels as metric_labels
from ..evaluators.report import fmt
from ..export.show import FULL_COVER, caption, load_base, pair_picture
from ..format import GresDataset, masks
from ..io import Commit

ASSETS = ("report.css", "report.js")
GRES4 = ("gres_miou", "ciou", "n_acc", "t_acc")
BAR_COLOURS = ("#3b7dd8", "#45a06a", "#d8963b", "#9b59b6")
NAV = (("index.html", "Summary"), ("pairs.html", "Pairs"), ("gallery-worst.html", "Worst"),
       ("gallery-false-alarms.html", "False alarms"), ("gallery-missed.html", "Missed"),
       ("groups.html", "Groups"))


def _asset(name: str) -> bytes:
    return resources.files("grdkit.html").joinpath("assets", name).read_bytes()


def _page(title: str, here: str, body: str, depth: int = 0, sub: str = "",
          scripts: tuple[str, ...] = ()) -> str:
    up = "../" * depth
    nav = "".join(f'<a href="{up}{href}"{" class=here" if href == here else ""}>{escape(t)}</a>'
                  for href, t in NAV)
    js = "".join(f'<script src="{up}{s}"></script>' for s in scripts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title>"
            f'<link rel="stylesheet" href="{up}assets/report.css"></head>\n<body><header>'
            f"<h1>{escape(title)}</h1><div class=sub>{sub}</div><nav>{nav}</nav></header>\n"
            f"<main>\n{body}\n</main>{js}</body></html>\n")


def _table(head: list[str] | None, rows: list[list], num: set[int] | None = None) -> str:
    num = num or set()
    if head is None:
        b = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>\n" for r in rows)
        return f"<table><tbody>\n{b}</tbody></table>"
    h = "".join(f'<th{" class=num" if i in num else ""}>{escape(str(c))}</th>'
                for i, c in enumerate(head))
    b = "".join("<tr>" + "".join(f'<td{" class=num" if i in num else ""}>{c}</td>'
                                 for i, c in enumerate(r)) + "</tr>\n" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>\n{b}</tbody></table>"


def _bars(title: str, buckets: dict, lab: dict) -> str:
    """Grouped bar chart (SVG) of the four GRES metrics per bucket (0-100 %)."""
    names = list(buckets)
    gw, bw, h, left, top = 4 * 16 + 56, 16, 160, 36, 30
    w = left + gw * len(names) + 10
    parts = [(f'<svg class=chart width="{w}" height="{h + top + 58}" role="img" '
             f'aria-label="{escape(title)}"><text x="4" y="14" font-size="13" '
             f'font-weight="600">{escape(title)}</text>')]
    for y in (0, 25, 50, 75, 100):
        yy = top + h - h * y / 100
        parts.append(f'<line x1="{left}" x2="{w - 6}" y1="{yy:.1f}" y2="{yy:.1f}" '
                     f'stroke="#e3e6e9"/><text x="{left - 4}" y="{yy + 4:.1f}" font-size="10" '
                     f'text-anchor="end">{y}</text>')
    for k, name in enumerate(names):
        m = buckets[name]["metrics"]
        x0 = left + k * gw + 28
        for j, key in enumerate(GRES4):
            v = m.get(key)
            if v is None:
                continue
            bh = h * max(0.0, min(100.0, v)) / 100
            parts.append(f'<rect x="{x0 + j * bw}" y="{top + h - bh:.1f}" width="{bw - 2}" '
                         f'height="{bh:.1f}" fill="{BAR_COLOURS[j]}"><title>{escape(name)} '
                         f"{escape(lab[key])}: {v:.2f}</title></rect>")
        n = buckets[name]["counts"]["pairs"]
        parts.append(f'<text x="{x0 + 2 * bw}" y="{top + h + 14}" font-size="11" '
                     f'text-anchor="middle">{escape(str(name))}</text><text x="{x0 + 2 * bw}" '
                     f'y="{top + h + 27}" font-size="10" text-anchor="middle" fill="#5b6670">'
                     f"{n} pairs</text>")
    legend = "".join(f'<rect x="{left + j * 70}" y="{top + h + 38}" width="10" height="10" '
                     f'fill="{BAR_COLOURS[j]}"/><text x="{left + j * 70 + 14}" '
                     f'y="{top + h + 47}" font-size="10">{escape(lab[k])}</text>'
                     for j, k in enumerate(GRES4))
    return "".join(parts) + legend + "</svg>"


def _thumb_jpeg(ds: GresDataset, eid: int, iid: int, img_root: Path | None,
                pred: dict | None, width: int) -> tuple[bytes, bool]:
    """One pair drawn at thumbnail size: image and masks shrunk first (bilinear / nearest),
    then :func:`grdkit.export.show.pair_picture` (prediction filled, GT outlined)."""
    im = ds.image(iid)
    h = max(1, round(im.height * width / im.width))
    base = load_base(ds, iid, img_root)
    small = np.asarray(PILImage.fromarray(base.astype(np.uint8)).resize((width, h),
                                                                       PILImage.BILINEAR),
                       np.float32)

    def shrink(rle: dict) -> np.ndarray:
        m = PILImage.fromarray(masks.decode(rle) * np.uint8(255))
        return np.asarray(m.resize((width, h), PILImage.NEAREST)) > 127

    gt = shrink(ds.target(eid, iid).segmentation)
    pm = shrink(pred) if pred is not None else None
    whole = pred is not None and masks.area(pred) >= FULL_COVER * im.height * im.width
    pic, _ = pair_picture(small, gt, pm, fill_pred=True, whole=whole)
    buf = io.BytesIO()
    pic.save(buf, format="JPEG", quality=82)
    return buf.getvalue(), bool(whole)


def write_html_report(report, pairs, gt: dict[str, GresDataset], out_dir: str | Path, *,
                      img_root: str | Path | None = None, pred_masks: dict | None = None,
                      gate: dict | None = None, gallery: int = 60, max_thumbs: int = 600,
                      thumb_width: int = 180, progress=None, commit: Commit | None = None
                      ) -> dict:
    """Write the report folder (module :mod:`grdkit.html`).

    Args:
        report: the :class:`grdkit.evaluators.Report` (its ``names`` set the labels).
        pairs: its per-pair rows (:func:`grdkit.evaluators.pair_frame`), in the evaluator's
            pair order.
        gt: ``{split: GresDataset}`` the report was scored on.
        out_dir: the folder (created; files of earlier reports in ``thumbs/`` and ``groups/``
            that this one does not write are removed).
        img_root: image folder; None draws grey canvases.
        pred_masks: ``{(split, expression id, image id): RLE or None}``, the predictions drawn
            on the tiles; None draws the ground truth only (and says so).
        gate: ``{"gated": bool, "failures": [...]}`` (:func:`grdkit.evaluators.check_gate`) or
            None when no gate was set.
        gallery: tiles listed per gallery (>= 1). max_thumbs: thumbnails drawn at most (>= 0).
        thumb_width: thumbnail width in pixels (>= 16).
        progress: optional ``track(iterable, description, total)`` (:mod:`grdkit.progress`).
        commit: write into this :class:`grdkit.io.Commit` (with a run's other outputs).

    Returns:
        ``{"files": int, "bytes": int, "thumbs": int, "pages": int}``.

    Raises:
        ValueError: an out-of-range bound. InputError: an unreadable or wrongly sized image.
    """
    if gallery < 1 or max_thumbs < 0 or thumb_width < 16:
        raise ValueError("gallery >= 1, max_thumbs >= 0 and thumb_width >= 16")
    if commit is None:
        with Commit() as c:
            return write_html_report(report, pairs, gt, out_dir, img_root=img_root,
                                     pred_masks=pred_masks, gate=gate, gallery=gallery,
                                     max_thumbs=max_thumbs, thumb_width=thumb_width,
                                     progress=progress, commit=c)
    out = Path(out_dir)
    root = Path(img_root) if img_root is not None else None
    files: dict[Path, bytes] = {}
    lab = metric_labels(report.names, (*report.metrics, *GRES4))
    cfg = report.config
    prof = cfg.get("profile") or {"name": cfg.get("protocol", "grdkit"), "version": 1}
    sub = (f"profile {escape(str(prof.get('name')))} v{escape(str(prof.get('version')))} · "
           f"{len(pairs)} pairs · grdkit {escape(str(cfg.get('grdkit_version', __version__)))}")

    # pair indices, group pages
    groups = [(g["split"], g["group_id"]) for g in report.per_group]
    gpage = {key: k for k, key in enumerate(groups)}
    split = pairs["split"].tolist()
    gid = pairs["group_id"].tolist()
    eid = pairs["expression_id"].tolist()
    iid = pairs["image_id"].tolist()
    outcome = pairs["outcome"].to_numpy()
    iou = pairs["iou"].to_numpy(np.float64)
    n = len(pairs)
    col = {k: pairs[k].tolist() for k in ("expression", "positive", "pred_area", "inter",
                                           "union", "no_target")}  # no per-row pandas access
    page_of = [gpage[(s, g)] for s, g in zip(split, gid)]
    pixels = np.array([gt[s].image(i).height * gt[s].image(i).width
                       for s, i in zip(split, iid)], np.float64)
    # the prediction covers the whole image (every tile, drawn or not; area at full resolution)
    whole_all = pairs["pred_area"].to_numpy(np.float64) >= FULL_COVER * pixels

    # thumbnails: galleries first, then whole groups (worst first), within max_thumbs
    order = np.arange(n)
    tp = order[outcome == "TP"]
    worst = tp[np.lexsort((tp, iou[tp]))][:gallery]
    fp = order[outcome == "FP"]
    fp = fp[np.lexsort((fp, -pairs["pred_area"].to_numpy()[fp]))]
    fn = order[outcome == "FN"]
    fn = fn[np.lexsort((fn, -pairs["gt_area"].to_numpy()[fn]))]
    wanted = list(dict.fromkeys([*worst, *fp[:gallery], *fn[:gallery]]))
    by_group: dict[int, list[int]] = {}
    for r in range(n):
        by_group.setdefault(page_of[r], []).append(r)
    gscore = [g["gres_miou"] if g["gres_miou"] is not None else 101.0 for g in report.per_group]
    for k in sorted(range(len(groups)), key=lambda k: (gscore[k], k)):
        rows = by_group.get(k, [])
        if len(set(wanted) | set(rows)) > max_thumbs:
            break
        wanted = list(dict.fromkeys([*wanted, *rows]))
    wanted = [int(r) for r in wanted[:max_thumbs]]
    thumb: dict[int, str] = {}
    it = progress(wanted, "drawing thumbnails", len(wanted)) if progress and wanted else wanted
    for r in it:
        ds = gt[split[r]]
        pred = None if pred_masks is None else pred_masks.get((split[r], eid[r], iid[r]))
        data, _ = _thumb_jpeg(ds, eid[r], iid[r], root, pred, thumb_width)
        thumb[r] = f"{r}.jpg"
        files[out / "thumbs" / thumb[r]] = data
    drawn_note = ("" if pred_masks is not None else
                  "<p class=note>Predictions are not drawn (no masks were given: "
                  "<code>grdkit report --preds</code>); tiles show the ground truth.</p>")

    def tile(r: int, depth: int = 0) -> str:
        up = "../" * depth
        cap = escape(caption(str(outcome[r]), float(iou[r]), bool(col["positive"][r])))
        text = (f"<div class=cap><b>{escape(split[r])}</b> expr {eid[r]} · image {iid[r]}<br>"
                f"<span class=o-{outcome[r]}>{cap}</span>"
                f"{'<br><b>prediction covers the whole image</b>' if whole_all[r] else ''}"
                f"<br><a href=\"{up}groups/{page_of[r]}.html\">group {gid[r]}</a></div>")
        if r in thumb:
            return (f'<div class="tile{" whole" if whole_all[r] else ""}"><img '
                    f'src="{up}thumbs/{thumb[r]}" alt="pair {r}" loading="lazy">{text}</div>')
        return f'<div class="tile nodraw"><i>not drawn (thumbnail budget)</i>{text}</div>'

    # summary
    ci = report.ci or {}
    mrows = [[escape(lab[k]), escape(k), fmt(k, v),
              *([escape(f"{fmt(k, ci[k][0])} - {fmt(k, ci[k][1])}") if k in ci else ""]
                if ci else [])]
             for k, v in report.metrics.items()]
    if gate is None or not gate.get("gated"):
        gate_html = "<span class='gate none'>no gate set</span>"
    elif gate.get("failures"):
        gate_html = "<span class='gate fail'>gate FAILED</span>" + _table(
            ["metric", "value", "limit", "reason"],
            [[escape(f["metric"]), fmt(f["metric"], f["value"]), fmt(f["metric"], f["limit"]),
              escape(f["reason"])] for f in gate["failures"]])
    else:
        gate_html = "<span class='gate pass'>gate passed</span>"
    c = report.counts
    counts = (f"<p>{c['pairs']} pairs ({c['positive']} positive, {c['negative']} negative) in "
              f"{c['groups']} groups; <a href='pairs.html#outcome=TP'>TP {c['tp']}</a> · "
              f"<a href='pairs.html#outcome=TN'>TN {c['tn']}</a> · "
              f"<a href='pairs.html#outcome=FP'>FP {c['fp']}</a> (false alarms on negatives) · "
              f"<a href='pairs.html#outcome=FN'>FN {c['fn']}</a> (missed positives); "
              f"{c['missing']} missing predictions counted as no target.</p>")
    per_split = ""
    if len(report.per_split) > 1:
        per_split = "<h2>Per split</h2>" + _table(
            ["split", "pairs", *(lab[k] for k in GRES4)],
            [[escape(s), r["counts"]["pairs"], *(fmt(k, r["metrics"][k]) for k in GRES4)]
             for s, r in report.per_split.items()], {1, 2, 3, 4, 5})
    charts = "".join(_bars(b, buckets, lab) for b, buckets in report.breakdowns.items())
    prof_rows = [["profile", escape(f"{prof.get('name')} (version {prof.get('version')})")],
                 ["reference", escape(str(prof.get("reference", "")))],
                 ["labels", escape(report.names or "grdkit keys")],
                 *([["bootstrap", escape(f"{cfg.get('bootstrap')} resamples of groups, seed "
                                         f"{cfg.get('seed')} (95% percentile intervals)")]]
                   if report.ci else []),
                 *([[escape(k), escape(str(cfg[k]))] for k in ("gt", "predictions",
                                                                "gt_fingerprint") if k in cfg])]
    body = (f"<h2>CI gate</h2>{gate_html}<h2>Metrics</h2>"
            + _table(["metric", "key", "value", *(["95% CI"] if ci else [])], mrows, {2})
            + "<p class=note>IoU-family metrics and accuracies in %, Co-SOD metrics in 0-1."
            + "</p>" + counts + per_split
            + (f"<h2>Breakdowns</h2><div>{charts}</div>" if charts else "")
            + "<h2>Run</h2>" + _table(None, prof_rows))
    files[out / "index.html"] = _page("grdkit evaluation report", "index.html", body,
                                      sub=sub).encode()

    # pairs table
    cols = ["split", "group_id", "group_page", "expression_id", "expression", "image_id",
            "positive", "outcome", "iou", "pred_area", "inter", "union", "no_target", "thumb"]
    data = {"columns": cols, "rows": [
        [split[r], gid[r], page_of[r], eid[r], str(col["expression"][r]), iid[r],
         bool(col["positive"][r]), str(outcome[r]), round(float(iou[r]), 6),
         int(col["pred_area"][r]), int(col["inter"][r]), int(col["union"][r]),
         bool(col["no_target"][r]), thumb.get(r, "")]
        for r in range(n)]}
    # "</" cannot end the script early: escaped as "<\/" (valid JSON, valid JS)
    js = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    files[out / "pairs.js"] = f"window.GRDKIT_PAIRS = {js};\n".encode()
    opts = "".join(f"<option>{escape(s)}</option>" for s in dict.fromkeys(split))
    head = [("split", "split"), ("group", "group_id"), ("expr.", "expression_id"),
            ("expression", "expression"), ("image", "image_id"), ("pair", "positive"),
            ("outcome", "outcome"), ("IoU", "iou"), ("pred. px", "pred_area"), ("I", "inter"),
            ("U", "union"), ("no target", "no_target"), ("thumbnail", "")]
    ths = "".join(f'<th data-col="{k}">{t}</th>' if k else f"<th>{t}</th>" for t, k in head)
    body = (f"{drawn_note}<div class=filters><label>split <select id=filter-split><option "
            f"value=''>all</option>{opts}</select></label><label>outcome <select "
            f"id=filter-outcome><option value=''>all</option><option>TP</option><option>TN"
            f"</option><option value=FP>FP (false alarm)</option><option value=FN>FN (missed)"
            f"</option></select></label><label>IoU from <input id=filter-iou-min type=number "
            f"min=0 max=1 step=0.05></label><label>to <input id=filter-iou-max type=number "
            f"min=0 max=1 step=0.05></label><label>expression <input id=filter-text "
            f"type=search placeholder='text contains'></label></div>"
            f"<div class=pager><button id=prev>previous</button><button id=next>next</button>"
            f"<span id=page-info></span></div><table id=pairs><thead><tr>{ths}</tr></thead>"
            f"<tbody></tbody></table><p class=note>Click a column to sort (again to reverse). "
            f"IoU under profile {escape(str(prof.get('name')))}.</p>")
    files[out / "pairs.html"] = _page("Pairs", "pairs.html", body, sub=sub,
                                      scripts=("pairs.js", "assets/report.js")).encode()

    # galleries
    for name, key, rows, title, what, total in (
            ("gallery-worst.html", "TP", worst, "Worst positives",
             ("positives the model segmented (TP), lowest IoU first; missed positives are under "
             "Missed"), len(tp)),
            ("gallery-false-alarms.html", "FP", fp[:gallery], "False alarms on negatives",
             "FP: a mask predicted on an image without the referent, largest first", len(fp)),
            ("gallery-missed.html", "FN", fn[:gallery], "Missed positives",
             "FN: no target predicted on an image with the referent, largest referent first",
             len(fn))):
        more = (f" <a href='pairs.html#outcome={key}'>"
                f"All {total} in the pairs table</a>." if total > len(rows) else "")
        body = (f"{drawn_note}<p>{escape(what)}: {len(rows)} of {total} shown.{more}</p>"
                f"<p class=note>Green outline: ground truth; red fill: prediction; orange "
                f"frame: a prediction covering at least {FULL_COVER:.0%} of the image.</p>"
                f"<div class=tiles>{''.join(tile(int(r)) for r in rows)}</div>")
        if not len(rows):
            body += "<p><i>None.</i></p>"
        files[out / name] = _page(title, name, body, sub=sub).encode()

    # groups
    g_rows = []
    for k in sorted(range(len(groups)), key=lambda k: (gscore[k], k)):
        g = report.per_group[k]
        g_rows.append([(f"<a href='groups/{k}.html'>{escape(str(g['split']))} / "
                       f"{g['group_id']}</a>"), g["pairs"], g["positive"],
                       *(fmt(m, g[m]) for m in GRES4)])
    body = ("<p>Lowest GRES mIoU first.</p>"
            + _table(["group", "pairs", "positive", *(lab[m] for m in GRES4)], g_rows,
                     {1, 2, 3, 4, 5, 6}))
    files[out / "groups.html"] = _page("Groups", "groups.html", body, sub=sub).encode()
    for k, (s, g_id) in enumerate(groups):
        ds = gt[s]
        grp = ds.group(g_id)
        rows = by_group.get(k, [])
        by_expr: dict[int, list[int]] = {}
        score = pairs["score"].to_numpy()
        for r in rows:
            by_expr.setdefault(eid[r], []).append(r)
        g = report.per_group[k]
        parts = [f"<p>{g['pairs']} pairs, {len(grp.image_ids)} images; "
                 + ", ".join(f"{escape(lab[m])} {fmt(m, g[m])}" for m in GRES4) + "</p>",
                 drawn_note]
        for e in grp.expression_ids:
            er = by_expr.get(e, [])
            sc = score[er]
            parts.append(f"<h2>“{escape(ds.expression(e).text)}” <span class=note>(expression "
                         f"{e}; GRES mIoU {100 * sc.mean() if len(er) else 0:.2f} over "
                         f"{len(er)} images)</span></h2><div class=tiles>"
                         + "".join(tile(r, 1) for r in er) + "</div>")
        files[out / "groups" / f"{k}.html"] = _page(
            f"Group {g_id} ({s})", "", "".join(parts), depth=1, sub=sub).encode()

    for a in ASSETS:
        files[out / "assets" / a] = _asset(a)
    for folder in ("thumbs", "groups"):  # files of an earlier report this one does not write
        d = out / folder
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.is_file() and p not in files:
                    commit.remove(p)
    for p, data in files.items():
        commit.write_bytes(p, data)
    return {"files": len(files), "bytes": sum(len(d) for d in files.values()),
            "thumbs": len(thumb), "pages": sum(p.suffix == ".html" for p in files)}


__all__ = ["ASSETS", "write_html_report"]
