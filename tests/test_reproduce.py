"""``grdkit reproduce``: recipes, pinned plans, missing data, resume, and the smoke run of every
recipe on toy data in each source's released layout.

Golden files (``tests/golden/reproduce/``) pin ``grdkit reproduce list`` and every recipe's
``--dry-run`` plan: a change to a preset, a recipe or a step key shows up as a diff. After an
intended change, regenerate them with ``GRDKIT_UPDATE_GOLDEN=1 pytest tests/test_reproduce.py``
and review the diff.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from grdkit.errors import InputError
from grdkit.reproduce import list_text, load_recipe, parse_recipe, recipe_names
from grdkit.reproduce.recipe import STATUSES

from .conftest import run_cli

GOLDEN = Path(__file__).parent / "golden" / "reproduce"
UPDATE = os.environ.get("GRDKIT_UPDATE_GOLDEN") == "1"

# The cells that wait for an option this installation lacks (grdkit.reproduce.api.PENDING):
# none, since every option the shipped recipes name exists. Format: recipe -> {what it waits
# for -> {row: benchmarks or "*"}}; test_smoke_fills_every_implemented_cell checks it.
NEEDS_OTHER_BRANCHES: dict = {}  # every option the recipes use has landed


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with GRDKIT_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file (see module doc)"


def _waiting_cells(plan) -> dict:
    out: dict = {}
    for (row, b), eval_id in plan.cells.items():
        wait = plan.waiting(eval_id)
        if wait:
            out.setdefault(", ".join(wait), {}).setdefault(row, []).append(b)
    n = len(plan.recipe.benchmarks)
    return {k: {r: "*" if len(bs) == n else bs for r, bs in v.items()} for k, v in out.items()}


# ----------------------------------------------------------------------------- recipes
def test_every_recipe_loads_with_the_papers_rows():
    names = recipe_names()
    # every table of the three papers (issue 29): GRES 1-6, LTS 1-7, MABP I-VII
    assert names == ["gres/table1", "gres/table2", "gres/table3", "gres/table4", "gres/table5",
                     "gres/table6", "lts/table1", "lts/table2", "lts/table3", "lts/table4",
                     "lts/table5", "lts/table6", "lts/table7", "mabp/table1", "mabp/table2",
                     "mabp/table3", "mabp/table4", "mabp/table5", "mabp/table6", "mabp/table7"]
    for name in names:
        r = load_recipe(name)
        assert r.name == name and all(x.status in STATUSES for x in r.rows)
        for row in r.rows:  # every row carries the paper's numbers for every benchmark
            assert set(row.paper) == {b.id for b in r.benchmarks}, (name, row.id)
    # spot checks against the papers' tables
    t5 = load_recipe("gres/table5")
    assert t5.row("full").paper == {"g-refcg": [75.32, 0.572, 95.25], "grd": [57.12, 0.515, 81.09]}
    assert load_recipe("mabp/table2").row("mabp").paper["testB"] == [62.75, 64.01]
    assert load_recipe("lts/table6").row("s480").paper == {"val": [65.9], "testA": [68.16],
                                                           "testB": [63.45]}
    assert load_recipe("gres/table3").row("deepacg").paper["coca"][3] is None  # "-" in the paper
    # rows grdkit cannot run are listed, not dropped, each with its reason
    lts2 = load_recipe("lts/table2")
    assert [x.status for x in lts2.rows] == ["not-implemented"] * 3 + ["ours"] * 4
    assert all(x.note for x in lts2.rows if x.status == "not-implemented")
    # the two tables that cannot run at all say why
    assert "MeViS" in load_recipe("mabp/table7").unavailable
    assert "dataset properties" in load_recipe("gres/table1").unavailable
    assert [r for r in recipe_names() if load_recipe(r).unavailable] == ["gres/table1",
                                                                           "mabp/table7"]


def test_lts_table2_rows_follow_section_4_4():
    """LTS §4.4 fixes the rows whose check marks the extraction garbled: "drops 2.4%
    (Fusion+Filter vs Filter)", "1.4% (Fusion+Filter+Seg vs Filter+Seg)", removing the filter
    from Fusion+Filter and Fusion+Filter+Seg "drops 1.9% and 1.5%", and L_loc improves the full
    model; each stated difference is recomputed from the recipe's val IoU by label."""
    r = load_recipe("lts/table2")
    iou = {x.label.split(" (")[0].split(", ")[0]: x.paper["val"][0] for x in r.rows}
    assert round(iou["Fusion + Filter"] - iou["Filter"], 1) == 2.4
    assert round(iou["Fusion + Filter + Seg"] - iou["Filter + Seg"], 1) == 1.4
    assert round(iou["Fusion + Filter"] - iou["Fusion"], 1) == 1.9
    assert round(iou["Fusion + Filter + Seg"] - iou["Fusion + Seg"], 1) == 1.5
    assert iou["Fusion + Filter + Seg + L_loc"] > iou["Fusion + Filter + Seg"]
    row6 = r.row("fusion-filter-seg")
    assert row6.status == "ours" and row6.run.train == {"loc_weight": 0.0}
    assert r.row("filter-seg").run.train == {"fusion": "visual", "loc_weight": 0.0}
    assert r.row("fusion-seg").run.train == {"locate": "none"}
    assert r.row("full").run.train == {}
    assert "§4.4" in r.notes and "row 6" not in [x.id for x in r.rows]


def test_mabp_table1_keys_each_row_under_its_metric():
    """MCN's numbers are a mean IoU (MCN callbacks/eval.py; lts/table1 keys them res_miou):
    one metric, one key across recipes."""
    t1 = load_recipe("mabp/table1")
    assert [m.key for m in t1.benchmarks[0].metrics] == ["ciou", "res_miou"]
    assert t1.row("mcn").paper["refcoco-val"] == [None, 62.44]
    lts_mcn = load_recipe("lts/table1").row("mcn-asnls")
    assert lts_mcn.paper["refcoco-val"] == [62.44]
    assert load_recipe("lts/table1").benchmarks[0].metrics[0].key == "res_miou"
    assert t1.row("mabp").paper["refcoco-val"] == [74.48, None]
    assert all(t1.row(r).paper["refcoco-val"][1] is None for r in ("lavt", "rela", "cgformer"))


PAPERS = Path(__file__).resolve().parents[2] / "shared" / "papers"
PAPER_TEXT = {"gres": "000_723f79a373982d50.txt", "mabp": "001_d5c5cf3cd6c2172b.txt",
              "lts": "003_0772be7b5f980f2c.txt"}


@pytest.mark.parametrize("name", recipe_names())
def test_published_values_occur_in_the_papers_text(name):
    """Every transcribed number is printed, in the paper's own format, in the paper's text
    (../shared/papers; skipped where that folder is absent)."""
    path = PAPERS / PAPER_TEXT[name.split("/")[0]]
    if not path.exists():
        pytest.skip(f"{path} is absent")
    text = path.read_text(encoding="utf-8")
    r = load_recipe(name)
    missing = []
    def fmt(v, m) -> str:
        # as the paper prints it: 2 decimals (3 for 0-1 metrics); one for the tables that
        # print one (MABP Table VII, GRES Table 1)
        if v == 0:
            return "0"
        if name in ("mabp/table7", "gres/table1"):
            return f"{v:.1f}"
        return f"{v:.3f}" if m.unit == "0-1" else f"{v:.2f}"

    for row, b, m, v in r.cells():
        if v is None:
            continue
        shown = fmt(v, m)
        if shown not in text:
            missing.append((row.id, b.id, m.key, shown))
    assert missing == []
    # stronger: a row's numbers stand in one line of the table, in the recipe's order (per
    # benchmark where the paper prints one block per split, LTS Table 2; GRES Table 3 is
    # printed transposed, one line per metric)
    if name == "gres/table3":
        return
    lines = text.splitlines()

    def in_one_line(values: list[str]) -> bool:
        for line in lines:
            pos = 0
            for v in values:
                k = line.find(v, pos)
                if k < 0:
                    break
                pos = k + len(v)
            else:
                return True
        return False

    def shown_all(row, benches):
        return [fmt(v, m) for b in benches for m, v in zip(b.metrics, row.paper.get(b.id, []))
                if v is not None]

    for row in r.rows:
        per_split = name in ("lts/table2", "mabp/table7")  # one block of lines per split
        groups = [[b] for b in r.benchmarks] if per_split else [list(r.benchmarks)]
        for g in groups:
            assert in_one_line(shown_all(row, g)), (row.id, [b.id for b in g])


def _minimal() -> dict:
    return {"recipe": "x/t1", "title": "t", "cite": "c",
            "datasets": {"d": {"builder": "g-refcocog", "source": "refcocog",
                               "images": "images/train2014"}},
            "benchmarks": [{"id": "b", "label": "B", "train": ["d/train"], "test": "d/val",
                            "profile": "grdkit",
                            "metrics": [{"key": "gres_miou", "label": "m", "unit": "%"}]}],
            "rows": [{"id": "r", "label": "R", "status": "ours", "run": {"model": "grser"},
                      "paper": {"b": [1.0]}}]}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(extra=1), "unknown key 'extra'"),
    (lambda d: d["rows"][0].update(seed=1), "rows[0]: unknown key 'seed'"),
    (lambda d: d["rows"][0]["run"].update(epochs=1), "rows[0].run: unknown key 'epochs'"),
    (lambda d: d["benchmarks"][0].update(test="nope/val"), "dataset of 'datasets'"),
    (lambda d: d["rows"][0].update(paper={"b": [1.0, 2.0]}), "one number (or null) per metric"),
    (lambda d: d["rows"][0].update(paper={"zz": [1.0]}), "unknown benchmark 'zz'"),
    (lambda d: d["rows"][0].update(status="maybe"), "status 'maybe'"),
    (lambda d: d["rows"][0].pop("run"), "needs 'run'"),
    (lambda d: d["benchmarks"][0]["metrics"][0].update(unit="pts"), "unit must be one of"),
])
def test_strict_loader_refuses_bad_recipes(mutate, message):
    d = _minimal()
    parse_recipe(d, "x.yaml")  # the minimal recipe is valid
    mutate(d)
    with pytest.raises(InputError) as e:
        parse_recipe(d, "x.yaml")
    assert message in str(e.value) and "x.yaml" in str(e.value)


def test_recipe_file_by_path(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(_minimal()))
    assert load_recipe(p).name == "x/t1"
    with pytest.raises(InputError, match="unknown recipe 'gres/table9'"):
        load_recipe("gres/table9")


# ----------------------------------------------------------------------------- pinned output
def test_list_is_pinned(capsys):
    code, out, _ = run_cli(["reproduce", "list"], capsys)
    assert code == 0 and out == list_text()
    _golden("list.txt", out)
    page = (Path(__file__).parents[1] / "docs" / "reproduce.md").read_text()
    assert out in page, "docs/reproduce.md shows an outdated `grdkit reproduce list`"


@pytest.mark.parametrize("name", recipe_names())
def test_dry_run_plan_is_pinned(name):
    from grdkit.reproduce.plan import build_plan, render_plan

    text = render_plan(build_plan(load_recipe(name)))
    _golden(name.replace("/", "_") + ".txt", text)


def test_dry_run_cli_rows_and_shared_steps(capsys):
    code, out, _ = run_cli(["reproduce", "gres/table5", "--dry-run", "--rows", "full,no-tqm"],
                           capsys)
    assert code == 0
    assert "# rows: full, no-tqm" in out and out.count("] train:") == 4
    # Table 4's default row and Table 5's full model are one training (same config key)
    from grdkit.reproduce.plan import build_plan

    p4 = build_plan(load_recipe("gres/table4"), ["posneg-posneg"])
    p5 = build_plan(load_recipe("gres/table5"), ["full"])
    assert p4.cells[("posneg-posneg", "g-refcg")] == p5.cells[("full", "g-refcg")]
    # the torchrun launcher prefixes the training commands
    code, out, _ = run_cli(["reproduce", "gres/table5", "--dry-run", "--rows", "full",
                            "--launcher", "torchrun", "--nproc", "4"], capsys)
    assert "torchrun --nproc_per_node 4 -m grdkit.cli.main train grser" in out


def test_set_fills_the_presets_weights_and_refuses_unknown_options(capsys):
    code, out, _ = run_cli(["reproduce", "gres/table5", "--dry-run", "--rows", "full",
                            "--set", "vision_weights=/w/swin.pth", "--set", "text=/w/bert",
                            "--set", "epochs=2"], capsys)
    assert code == 0 and "<vision_weights" not in out and 'vision_weights="/w/swin.pth"' in out
    assert "epochs=2 " in out and "epochs=80" not in out
    code, _, err = run_cli(["reproduce", "gres/table5", "--dry-run", "--set", "epoch=2"], capsys)
    assert code == 2 and "'epoch' is no run option of grser" in err


def test_unknown_row_and_missing_data_exit_2(tmp_path, capsys):
    code, _, err = run_cli(["reproduce", "gres/table5", "--rows", "nope", "--dry-run"], capsys)
    assert code == 2 and "no row 'nope'" in err
    (tmp_path / "data" / "refcocog").mkdir(parents=True)
    (tmp_path / "data" / "refcocog" / "instances.json").write_text("{}")
    code, _, err = run_cli(["reproduce", "gres/table5", "--data-root", tmp_path / "data",
                            "--out", tmp_path / "out", "--rows", "full"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("grdkit: error: ")
    assert "2 pretrained weight(s) and 6 data folder(s) that are missing" in lines[-1]
    assert not any(x.startswith("grdkit: error") for x in lines[:-1])
    # every weight and every folder, one per line, before any step ran
    assert [x.split(":")[0].strip() for x in lines[:2]] == ["vision_weights (gres-paper)",
                                                            "text (gres-paper)"]
    assert "not given" in lines[0] and "Swin-B, ImageNet-22K" in lines[0]
    assert "bert-base-uncased" in lines[1]
    folders = lines[2:-1]
    assert len(folders) == 6
    assert any("refcocog/ needs refs(umd).p" in x and "github.com/lichengunc/refer" in x
               for x in folders)
    assert any("images/train2014/" in x for x in folders)
    assert any("d3/ needs sentences.pkl" in x for x in folders)
    assert not (tmp_path / "out").exists()
    # a table that cannot run at all says why
    code, _, err = run_cli(["reproduce", "mabp/table7", "--data-root", tmp_path / "data",
                            "--out", tmp_path / "out"], capsys)
    assert code == 2 and "mabp/table7 cannot run: a video benchmark: MeViS" in err
    code, out, _ = run_cli(["reproduce", "mabp/table7", "--dry-run"], capsys)
    assert code == 0 and "# not runnable: a video benchmark" in out and "total: 0 steps" in out


def test_gpu_hours_scale_with_the_group_size():
    """GRES Table 6: a training at N processes N images per group, so N = 1 costs 1/8 of
    N = 8 (the recipe's pairs are counted at N = 8)."""
    from grdkit.reproduce.plan import build_plan

    plan = build_plan(load_recipe("gres/table6"))
    hours = {}
    for s in plan.steps.values():
        if s.kind == "train":
            hours.setdefault(s.config["run"]["group_size"], []).append(s.gpu_hours)
    assert sorted(hours) == [1, 3, 5, 8]
    for n in (1, 3, 5):
        assert [h * 8 / n for h in hours[n]] == pytest.approx(hours[8])
    # 2 trainings per N (G-RefCg; the G-RefC union for GRD), 80 epochs at 40 img/s:
    # (16,700 + 130,200) pairs x 80 / 40 / 3600 = 81.6 h at N = 8
    assert sum(hours[8]) == pytest.approx(146900 * 80 / 40 / 3600)
    assert plan.gpu_hours() == pytest.approx(sum(sum(v) for v in hours.values())
                                             + sum(s.gpu_hours for s in plan.steps.values()
                                                   if s.kind == "predict"))


def test_weights_are_keyed_by_content_not_path(tmp_path, monkeypatch):
    """Moving a weights file keeps every step key (the runs are reused); replacing its content
    changes them (stale runs are never reused); the digest is cached by size and mtime."""
    from grdkit.reproduce import api
    from grdkit.reproduce.plan import build_plan

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "a").mkdir()
    swin, bert = tmp_path / "a" / "swin.pth", tmp_path / "a" / "bert"
    swin.write_bytes(b"weights v1")
    bert.mkdir()
    (bert / "config.json").write_text("{}")

    def trains(vw, text):
        plan = build_plan(load_recipe("gres/table5"), ["full"],
                          sets={"vision_weights": str(vw), "text": str(text)})
        assert all(w[3] is None for w in plan.weights())
        return sorted(s for s in plan.steps if s.startswith("train-"))

    first = trains(swin, bert)
    moved = tmp_path / "b"
    (tmp_path / "a").rename(moved)
    assert trains(moved / "swin.pth", moved / "bert") == first
    (moved / "swin.pth").write_bytes(b"weights v2")
    assert set(trains(moved / "swin.pth", moved / "bert")).isdisjoint(first)
    cache = json.loads((tmp_path / "cache" / "grdkit" / api.DIGEST_CACHE).read_text())
    import hashlib

    assert hashlib.sha256(b"weights v2").hexdigest() in cache.values()
    # a missing file keeps its path in the key and is reported, not hashed
    plan = build_plan(load_recipe("gres/table5"), ["full"],
                      sets={"vision_weights": str(tmp_path / "nope.pth"),
                            "text": str(moved / "bert")})
    assert [w[3] for w in plan.weights()] == [f"{tmp_path / 'nope.pth'} does not exist", None]


# ----------------------------------------------------------------------------- smoke / resume
@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory):
    """Every recipe in --smoke mode into ONE --out (steps shared across recipes); the time is
    printed (pytest -s) and saved in smoke-seconds.txt."""
    from grdkit.reproduce.execute import Executor
    from grdkit.reproduce.plan import build_plan
    from grdkit.reproduce.smoke import write_toy_data

    out = tmp_path_factory.mktemp("smoke")
    t0 = time.perf_counter()
    data = write_toy_data(out / "toy-data")
    ex = Executor(out, data, "cpu")
    plans, ran = {}, []
    for name in recipe_names():
        plans[name] = build_plan(load_recipe(name), smoke=True)
        ran += ex.run(plans[name]).done
    seconds = time.perf_counter() - t0
    (out / "smoke-seconds.txt").write_text(f"{seconds:.1f}\n")
    print(f"\nsmoke of {len(plans)} recipes: {seconds:.1f} s, {len(ran)} steps run "
          f"({sum(s.startswith('train-') for s in ran)} trainings)")
    return out, plans, ran


def test_smoke_fills_every_implemented_cell(smoke_out):
    from grdkit.reproduce import results

    out, plans, ran = smoke_out
    assert len(ran) == len(set(ran))  # no step ran twice, though recipes share steps
    for name, plan in plans.items():
        assert _waiting_cells(plan) == NEEDS_OTHER_BRANCHES.get(name, {}), name
        cells = results.collect(plan, out)
        for c in cells:
            row = plan.recipe.row(c["row"])
            if row.status == "ours" and not c["status"].startswith("waits for"):
                assert c["status"] == "ok" and c["ours"] is not None, (name, c)
                if c["paper"] is not None:
                    assert c["delta"] == pytest.approx(c["ours"] - c["paper"], abs=1e-3)
            elif row.status == "published":
                assert c["status"] == "published" and c["ours"] is None
            elif row.status == "not-implemented":
                assert c["status"] == "not implemented"
        # every training that ran is a real run folder with its config and checkpoint
    for step in ran:
        if step.startswith("train-"):
            run = out / "runs" / step.split("-", 1)[1]
            assert (run / "checkpoint.pt").exists()
            assert json.loads((run / "config.json").read_text())["max_steps"] == 1


def test_results_renderings(smoke_out):
    from grdkit.reproduce import results

    out, plans, _ = smoke_out
    cells = results.collect(plans["lts/table2"], out)
    md = results.to_markdown(cells, "t")
    assert md.count("\n| ") == 1 + 7 and "n/i" in md and "waits" not in md
    csv_rows = results.to_csv(cells).strip().splitlines()
    assert len(csv_rows) == 1 + len(cells) == 1 + 7 * 3 * 6
    cells = results.collect(plans["gres/table5"], out)
    full = [c for c in cells if c["row"] == "full" and c["benchmark"] == "g-refcg"]
    assert [c["paper"] for c in full] == [75.32, 0.572, 95.25]
    assert all(c["status"] == "ok" for c in full)
    doc = json.loads(results.to_json(cells, plans["gres/table5"]))
    assert doc["recipe"] == "gres/table5" and len(doc["cells"]) == 30
    # the plot of ours against the paper (matplotlib, the plots extra), byte-deterministic
    from PIL import Image

    assert results.plot(cells, out / "p1.png", "t") is None
    assert results.plot(cells, out / "p2.png", "t") is None
    assert (out / "p1.png").read_bytes() == (out / "p2.png").read_bytes()
    with Image.open(out / "p1.png") as im:
        assert im.size == (1200, 540)


def test_cli_smoke_rerun_finds_every_step_complete(smoke_out, capsys):
    """The CLI on the smoke fixture's --out: nothing left to run; the result files are written."""
    out, _, _ = smoke_out
    code, stdout, _ = run_cli(["reproduce", "gres/table5", "--smoke", "--out", out], capsys)
    assert code == 0 and "steps: 0 run," in stdout and "0 waiting" in stdout
    res = out / "results" / "gres" / "table5"
    assert (res / "table.md").read_text().startswith("### GRSer ablations")
    assert len((res / "table.csv").read_text().splitlines()) == 1 + 30
    board = (res / "leaderboard.md").read_text()
    assert "### G-RefCg" in board and "| full |" in board and "| no-tqm |" in board


def test_resume_after_a_kill_redoes_nothing_finished(tmp_path, monkeypatch):
    """Kill a smoke reproduction at its second training; rerunning completes it and runs only
    the steps that had not finished."""
    from grdkit.reproduce import api, results
    from grdkit.reproduce.execute import Executor
    from grdkit.reproduce.plan import build_plan
    from grdkit.reproduce.smoke import write_toy_data

    plan = build_plan(load_recipe("gres/table6"), ["n1", "n3"], smoke=True)
    data = write_toy_data(tmp_path / "toy-data")
    real_train, calls = api.train, []

    def killed_at_second(cfg, *a, **k):
        calls.append(cfg["group_size"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(cfg, *a, **k)

    monkeypatch.setattr(api, "train", killed_at_second)
    with pytest.raises(KeyboardInterrupt):
        Executor(tmp_path, data, "cpu").run(plan)
    first = sorted(p.name for p in (tmp_path / "steps").glob("*.json"))
    assert [n.split("-")[0] for n in first].count("train") == 1
    killed = calls[1]
    n_train = sum(s.startswith("train-") for s in plan.steps)
    assert n_train >= 3  # G-RefCg and the GRD union per row
    calls.clear()
    monkeypatch.setattr(api, "train", lambda cfg, *a, **k: (calls.append(cfg["group_size"]),
                                                           real_train(cfg, *a, **k))[1])
    summary = Executor(tmp_path, data, "cpu").run(plan)
    # the interrupted training runs again first, then the ones never started; not the finished one
    assert len(calls) == n_train - 1 and calls[0] == killed
    assert sorted(f"{s}.json" for s in summary.skipped) == first
    cells = results.collect(plan, tmp_path)
    assert all(c["status"] == "ok" for c in cells if c["benchmark"] == "g-refcg")
    # a third run finds everything complete
    assert Executor(tmp_path, data, "cpu").run(plan).done == []


def test_torchrun_launcher_runs_the_training_from_a_request(tmp_path, monkeypatch):
    """--launcher torchrun: each training becomes `torchrun ... -m grdkit.reproduce.execute
    REQUEST.json`; the request holds everything the training needs (run here in-process)."""
    import subprocess

    from grdkit.reproduce import execute
    from grdkit.reproduce.plan import build_plan
    from grdkit.reproduce.smoke import write_toy_data

    commands = []

    def fake_run(cmd, check=False):
        commands.append(cmd)
        execute._torchrun_main(cmd[-1])
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(execute.subprocess, "run", fake_run)
    plan = build_plan(load_recipe("gres/table6"), ["n1"], smoke=True)
    data = write_toy_data(tmp_path / "toy-data")
    execute.Executor(tmp_path, data, "cpu", launcher="torchrun", nproc=2).run(plan)
    assert len(commands) == sum(s.startswith("train-") for s in plan.steps)
    assert commands[0][:4] == ["torchrun", "--nproc_per_node=2", "-m",
                               "grdkit.reproduce.execute"]
    train_id = next(s for s in plan.steps if s.startswith("train-") and not plan.waiting(s))
    assert (tmp_path / "runs" / train_id.split("-", 1)[1] / "checkpoint.pt").exists()
    assert (tmp_path / "steps" / f"{train_id}.json").exists()


def test_executor_checks_every_weight_before_any_step(tmp_path):
    from grdkit.reproduce.execute import Executor
    from grdkit.reproduce.plan import build_plan

    plan = build_plan(load_recipe("lts/table2"), ["full"],
                      sets={"text": str(tmp_path / "glove.840B.300d.txt")})
    with pytest.raises(InputError) as e:
        Executor(tmp_path / "out", tmp_path).run(plan)
    msg = str(e.value)
    assert "vision_weights (lts-paper): not given" in msg
    assert f"text (lts-paper): {tmp_path / 'glove.840B.300d.txt'} does not exist" in msg
    assert not (tmp_path / "out").exists()  # nothing built before the check
