"""CLI conventions (issue 25): every option has help text naming its default, the global
-q / -v / --log-format on every command, bare `grdkit` prints the help, `eval --help` shows the
scoring options, hidden aliases of former spellings, --format on every table, None as '-'."""

import json

import click
import pytest

from grdkit.cli.main import cli

from .conftest import run_cli

UNSET = getattr(click.core, "UNSET", object())  # click >= 8.3: "no default" sentinel


def _commands(cmd=cli, path=("grdkit",)):
    """(path, command) for every command and group under ``cmd``."""
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _options():
    for path, cmd in _commands():
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                yield " ".join(path), p


def test_the_walk_sees_every_command():
    names = {" ".join(p) for p, _ in _commands()}
    assert {"grdkit eval run", "grdkit eval merge", "grdkit train", "grdkit reproduce list",
            "grdkit convert cosod", "grdkit leaderboard"} <= names
    assert sum(1 for _ in _options()) > 150


def test_every_option_has_help_text_with_its_default():
    """Help text on every option; an option with a default (other than a flag's False or an
    empty multiple) shows it ([default: ...]) or states it in words."""
    missing, no_default = [], []
    for where, p in _options():
        if p.name == "help" or p.name == "version":
            continue
        if not (p.help or "").strip():
            missing.append(f"{where} {p.opts[0]}")
            continue
        has_default = p.default is not None and p.default is not UNSET and not p.is_flag \
            and p.default != () and not callable(p.default)
        if has_default and not p.show_default and "default" not in p.help.lower():
            no_default.append(f"{where} {p.opts[0]}")
    assert missing == []
    assert no_default == []


def test_every_command_takes_the_global_options():
    for path, cmd in _commands():
        if isinstance(cmd, click.Group) and len(path) > 1:
            continue
        names = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert {"-q", "--quiet", "-v", "--verbose", "--log-format"} <= names, path


def test_bare_grdkit_prints_the_help_and_exits_0(capsys):
    code, out, err = run_cli([], capsys)
    assert code == 0 and out.startswith("Usage: grdkit") and "Commands:" in out and err == ""


def test_eval_help_shows_the_scoring_options(capsys):
    code, out, _ = run_cli(["eval", "--help"], capsys)
    assert code == 0
    assert "Usage: grdkit eval [OPTIONS] PREDS" in out
    for opt in ("--gt", "--json", "--fail-under", "--profile", "--format", "-q, --quiet"):
        assert opt in out
    assert "eval merge" in out  # the other subcommand is listed
    assert "--protocol" not in out  # a hidden alias


@pytest.mark.parametrize("argv, alias", [
    (["convert", "cosod", "--help"], "--images"),
    (["leaderboard", "--help"], "--names"),
    (["eval", "--help"], "--protocol"),
])
def test_former_spellings_are_hidden_aliases(argv, alias, capsys):
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and alias not in out
    cmd = cli
    for a in argv[:-1]:
        cmd = cmd.commands[a] if a in getattr(cmd, "commands", {}) else cmd.commands["run"]
    if "run" in getattr(cmd, "commands", {}):
        cmd = cmd.commands["run"]
    assert any(alias in p.opts for p in cmd.params)


def test_reproduce_list_help_names_no_option_it_lacks(capsys):
    code, out, _ = run_cli(["reproduce", "list", "--help"], capsys)
    assert code == 0
    takes = {o for p in cli.commands["reproduce"].commands["list"].params for o in p.opts}
    assert "--data-root" not in takes and "under the --data-root of" in " ".join(out.split())


def test_stats_formats(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert run_cli(["build", "g-refcocog", "--out", out_dir, "-q"], capsys)[0] == 0
    code, out, err = run_cli(["stats", out_dir, "--format", "json"], capsys)
    doc = json.loads(out)
    assert code == 0 and [r["split"] for r in doc["summary"]] == ["test", "train", "val",
                                                                   "total"]
    assert doc["summary"][-1]["pairs"] == 135 and "expression length" in err
    code, out, _ = run_cli(["stats", out_dir / "val.json", "--format", "csv"], capsys)
    assert out.splitlines()[:3] == [
        "# " + str(out_dir / "val.json"),
        "split,groups,expressions,images,pairs,positive_pairs,negative_pairs",
        "val,6,6,15,43,22,21"]
    code, out, _ = run_cli(["stats", out_dir / "val.json", "--format", "markdown"], capsys)
    assert "| val | 6 | 6 | 15 | 43 | 22 | 21 |" in out


def test_quiet_hides_notes_verbose_keeps_them(tmp_path, capsys):
    code, _, err = run_cli(["build", "g-refcocog", "--out", tmp_path / "a"], capsys)
    assert code == 0 and "bundled demo sample" in err and "INFO" in err
    code, _, err = run_cli(["-q", "build", "g-refcocog", "--out", tmp_path / "b"], capsys)
    assert code == 0 and "bundled demo sample" not in err and "INFO" not in err
    assert "WARNING" in err  # the negative shortfall is a warning: -q keeps it
    code, _, err = run_cli(["build", "g-refcocog", "--out", tmp_path / "c", "--quiet"], capsys)
    assert code == 0 and "INFO" not in err  # after the command's name too


def test_show_takes_a_built_folder_with_split(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    run_cli(["build", "g-refcocog", "--out", out_dir, "-q"], capsys)
    code, _, _ = run_cli(["show", out_dir, "--split", "val", "--out", tmp_path / "g.png"],
                         capsys)
    assert code == 0 and (tmp_path / "g.png").stat().st_size > 0
    code, _, err = run_cli(["show", out_dir, "--out", tmp_path / "h.png"], capsys)
    assert code == 2 and "splits test, train, val" in err and "--split" in err


def test_none_prints_as_a_dash():
    from grdkit.cli.ui import csv_table, markdown_table
    from grdkit.evaluators.report import fmt

    assert fmt("ciou", None) == "-" and fmt("ciou", 12.345) == "12.35"
    assert "| a | - |" in markdown_table("t", [{"k": "a", "v": None}])
    assert csv_table([{"k": "a", "v": None}]) == "k,v\na,\n"


def test_pipe_safe_survives_a_closed_reader():
    """A reader that closed (`| head`) ends writing quietly: no exception, later writes
    dropped, the descriptor pointed at /dev/null so the interpreter's last flush is quiet."""
    import os

    from grdkit.cli.ui import PipeSafe

    r, w = os.pipe()
    os.close(r)
    stream = PipeSafe(os.fdopen(w, "w"))
    stream.write("x" * 200_000)
    stream.flush()
    assert stream.broken
    stream.write("more\n")
    stream.flush()
    stream.close()


def test_docs_ci_page_names_only_real_options():
    """Every option docs/ci.md names is an option of some grdkit command (the page and --help
    agree), and the conventions it documents are all there."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "ci.md").read_text(encoding="utf-8")
    known = {o for _, cmd in _commands() for p in cmd.params for o in getattr(p, "opts", [])}
    known |= {"--help"}
    text = text.replace("tensorboard --logdir", "tensorboard")  # TensorBoard's own option
    text = "\n".join(x for x in text.splitlines() if "benchmarks/" not in x)  # a script's
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[qv])(?![\w-])", text))
    assert named - known == set()
    assert {"--format", "--log-format", "--log-every", "--log-dir", "--labels", "--split",
            "-q", "-v", "--img-root", "--json"} <= named
    for env in ("NO_COLOR", "GRDKIT_NO_PROGRESS", "GRDKIT_LOG_INTERVAL"):
        assert env in text


def test_line_progress_lines():
    """Without a terminal: a line per interval while a stage runs (count, percent, rate, ETA)
    and one when it ends; the items pass through unchanged."""
    import logging
    import re

    from grdkit.cli.ui import LineProgress

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.INFO)
            self.msgs = []

        def emit(self, record):
            self.msgs.append(record.getMessage())

    logger = logging.getLogger("grdkit.test-progress")
    keep, level = Keep(), logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        items = list(LineProgress(interval=0.0, logger=logger)(iter(range(4)), "eval pairs", 4))
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    assert items == [0, 1, 2, 3]
    msgs = keep.msgs
    assert len(msgs) == 4
    for n, m in zip((1, 2, 3), msgs):
        assert re.fullmatch(rf"eval pairs: {n}/4 \({25 * n}%\), [\d.]+k?/s, eta \d+ s", m), m
    assert re.fullmatch(r"eval pairs: 4/4 done in \d+ s \([\d.]+k?/s\)", msgs[-1])


def test_bare_groups_print_their_help_and_usage_errors_point_at_eval(capsys):
    for group in ("convert", "export", "derive", "reproduce"):
        code, out, _ = run_cli([group], capsys)
        assert code == 0 and out.startswith(f"Usage: grdkit {group}"), group
    code, _, err = run_cli(["eval"], capsys)
    assert code == 2 and err == "grdkit: error: Missing argument 'PREDS'. (see grdkit eval " \
                                "--help)\n"
