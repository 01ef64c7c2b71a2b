"""#29: what a user owns is never destroyed, what people open is inert, debris of a kill is removed.

The refusals themselves (each with an unchanged tree) are cases of test_hostile.py; these tests
cover what succeeds: a report written beside a user's files deletes none of them, a link planted
in a tlf directory is replaced and its target left alone, tlf's own directories are replaced with
--force, stale temporary files go and a live writer's stay, and data reaching a terminal, a
spreadsheet or a Markdown viewer is shown, never acted on."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from telecom_lf import chat, fsutil, guard, inputs, paths, rundir
from telecom_lf.cli import main
from telecom_lf.errors import TlfError
from telecom_lf.report.tables import inert_csv, markdown_text
from tests.test_hostile import snapshot, spec_text

pytestmark = pytest.mark.unit


@pytest.fixture
def experiment(tiny_gemma, telecom_dir, tmp_path) -> Path:
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text({"model": str(tiny_gemma), "data": {"dir": str(telecom_dir)}}))
    result = CliRunner().invoke(main, ["render", str(spec), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "h"


def _report(*args: str):
    return CliRunner().invoke(main, ["report", *args])


# ---------------------------------------------------------------- ownership

def test_a_report_into_a_users_directory_needs_force_and_deletes_none_of_their_files(experiment, tmp_path):
    mine = tmp_path / "mypics"
    mine.mkdir()
    (mine / "loss.png").write_bytes(b"my own plot")
    (mine / "holiday.png").write_bytes(b"a photo")
    refused = _report("--root", str(experiment), "--report-dir", str(mine))
    assert refused.exit_code == 2 and "holds no report tlf wrote" in refused.output, refused.output
    assert (mine / "loss.png").read_bytes() == b"my own plot"
    written = _report("--root", str(experiment), "--report-dir", str(mine), "--force")
    assert written.exit_code == 0, written.output
    assert (mine / "holiday.png").read_bytes() == b"a photo"               # never deleted
    marker = json.loads((mine / paths.MARKER).read_text())
    assert marker["kind"] == "report" and "report.csv" in marker["files"] and "holiday.png" not in marker["files"]
    again = _report("--root", str(experiment), "--report-dir", str(mine))   # now the directory holds tlf's report
    assert again.exit_code == 0, again.output
    assert (mine / "holiday.png").exists()


def test_a_report_removes_only_files_it_wrote_before(experiment):
    assert _report("--root", str(experiment)).exit_code == 0
    report = experiment / rundir.REPORT_DIR
    marker = json.loads((report / paths.MARKER).read_text())
    marker["files"].append("old-plot.png")               # as if an earlier report had written it
    (report / paths.MARKER).write_text(json.dumps(marker))
    (report / "old-plot.png").write_bytes(b"stale")
    (report / "notes.txt").write_text("the user's")
    assert _report("--root", str(experiment)).exit_code == 0
    assert not (report / "old-plot.png").exists() and (report / "notes.txt").read_text() == "the user's"


def test_a_link_planted_in_the_report_is_replaced_and_its_target_left_alone(experiment, tmp_path):
    assert _report("--root", str(experiment)).exit_code == 0
    bashrc = tmp_path / "bashrc"
    bashrc.write_text("export PS1=mine\n")
    csv = experiment / rundir.REPORT_DIR / "report.csv"
    csv.unlink()
    csv.symlink_to(bashrc)
    assert _report("--root", str(experiment)).exit_code == 0
    assert bashrc.read_text() == "export PS1=mine\n"
    assert not csv.is_symlink() and csv.read_text().startswith("run,")


def test_force_replaces_tlfs_own_model_directory_and_nothing_else(tmp_path):
    out = tmp_path / "tiny"
    assert CliRunner().invoke(main, ["model", "tiny", "--out", str(out)]).exit_code == 0
    assert json.loads((out / paths.MARKER).read_text())["kind"] == "model"
    again = CliRunner().invoke(main, ["model", "tiny", "--out", str(out), "--force"])
    assert again.exit_code == 0, again.output
    export = tmp_path / "export"
    export.mkdir()
    (export / paths.MARKER).write_bytes(paths.marker("export"))
    (export / "x").write_text("x")
    before = snapshot(export)
    refused = CliRunner().invoke(main, ["model", "tiny", "--out", str(export), "--force"])
    assert refused.exit_code == 2 and "is an export directory" in refused.output, refused.output
    assert snapshot(export) == before


@pytest.mark.parametrize("where", ["/", "~"])
def test_the_root_and_home_are_never_replaced(where, tmp_path, monkeypatch):
    """Refused before anything is looked at, let alone deleted (HOME points at a scratch copy)."""
    home = tmp_path / "home"
    (home / "keep").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    target = Path(os.path.expanduser(where))
    with pytest.raises(TlfError, match="the root directory|your home directory"):
        paths.claim_directory(target, "model", True, "--out")
    assert (home / "keep").is_dir()


def test_an_old_tiny_model_without_a_marker_is_still_tlfs(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "tlf_tiny.json").write_text("{}")
    assert paths.owner(old) == "model"
    paths.claim_directory(old, "model", True, "--out")


# ---------------------------------------------------------------- inputs

def test_an_input_swapped_for_a_fifo_is_refused_on_the_open_descriptor(tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    with pytest.raises(TlfError, match="is a FIFO"):
        inputs.read_input(fifo, "spec")


def test_an_input_at_the_limit_is_read_and_one_byte_more_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(inputs.LIMITS, "spec", 10)
    (tmp_path / "ok").write_bytes(b"x" * 10)
    (tmp_path / "big").write_bytes(b"x" * 11)
    assert inputs.read_input(tmp_path / "ok", "spec") == b"x" * 10
    with pytest.raises(TlfError, match="a spec file may have at most 10 bytes"):
        inputs.read_input(tmp_path / "big", "spec")


# ---------------------------------------------------------------- debris of a killed write

def test_a_write_removes_stale_temporary_files_of_its_directory_and_keeps_a_live_writers(tmp_path):
    target = tmp_path / "train.yaml"
    stale = tmp_path / ".train.yaml.tlf-tmp-abcd1234"
    other = tmp_path / ".predict.yaml.tlf-tmp-k1ll3d00"      # another file's, killed: any write here removes it
    legacy = tmp_path / ".train.yaml.abcd1234"                # an older release's name, for this target
    live = tmp_path / ".train.yaml.tlf-tmp-zzzz9999"
    users = [tmp_path / ".bashrc.abcdefgh", tmp_path / ".notes.tlf-tmp-short"]   # not tlf's names
    for path in (stale, other, legacy, live, *users):
        path.write_text("half")
        os.utime(path, (fsutil.STARTED - 3600, fsutil.STARTED - 3600))
    # a writer still at work holds its temporary file locked: flock refuses only another process's lock
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
                               "time.sleep(60)", str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        fsutil.atomic_write(target, "new\n")
        assert target.read_text() == "new\n"
        assert not stale.exists() and not other.exists() and not legacy.exists()
        assert live.exists() and all(path.exists() for path in users)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [live.name, "train.yaml", *(path.name for path in users)])   # and no temporary file of its own
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_render_leaves_debris_that_the_next_render_removes(tiny_gemma, telecom_dir, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text({"model": str(tiny_gemma), "data": {"dir": str(telecom_dir)}}))
    assert CliRunner().invoke(main, ["render", str(spec), "--out", str(tmp_path / "runs")]).exit_code == 0
    run = tmp_path / "runs" / "h" / "h"
    debris = run / ".train.yaml.tlf-tmp-k1ll3d00"  # what SIGKILL between mkstemp and rename leaves
    debris.write_text("half a config")
    os.utime(debris, (fsutil.STARTED - 60, fsutil.STARTED - 60))   # left by a process before this one
    (run / "train.yaml").write_text((run / "train.yaml").read_text() + "# edited\n")
    rerun = CliRunner().invoke(main, ["render", str(spec), "--out", str(tmp_path / "runs"), "--force"])
    assert rerun.exit_code == 0, rerun.output
    assert not debris.exists()


# ---------------------------------------------------------------- what people open is inert

def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised():
    table = pd.DataFrame({"run": ["=HYPERLINK(\"http://x\",\"a\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "r8"],
                          "Δ": ["-3.0", "1.5", "-0.5", "+2", "0", "2"], "acc": [1.0, 2.0, -3.0, 4, 5, 7]})
    text = inert_csv(table).decode()
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    assert list(frame["run"][:5]) == ["'=HYPERLINK(\"http://x\",\"a\")", "'+1+1", "'-2+3", "'@SUM(A1)", "'\tx"]
    assert frame["run"][5] == "r8" and list(frame["Δ"][:2]) == ["-3.0", "1.5"]   # plain numbers stay numbers
    assert frame["acc"][2] == "-3.0"
    assert inert_csv(pd.DataFrame({"=cmd": ["\rx"]})).decode().startswith("'=cmd\n'\rx")   # headers and CR too


def test_markdown_cells_are_text_not_html_or_links():
    shown = markdown_text('<img src=x onerror=alert(1)> [a](javascript:b) ![t](http://track) a|b `c`')
    assert "<img" not in shown and "&lt;img" in shown
    assert "](" not in shown and "\\|" in shown and "\\`" in shown
    assert markdown_text("r8\u202e 12.5") == "r8\\\\u202e 12.5"   # shown as \u202e: it cannot reverse the row


def test_terminal_text_shows_control_and_bidi_characters_as_escapes():
    shown = guard.printable("r8\x1b[2J\x1b]0;x\x07 failed\u202e 12.5 \u2066x\x85")
    assert "\x1b" not in shown and "\u202e" not in shown and "\u2066" not in shown and "\x85" not in shown
    assert "\\x1b[2J" in shown and "\\u202e" in shown and "failed" in shown


def test_status_shows_a_hostile_failure_cause_as_text(experiment):
    steps = experiment / "h" / rundir.STEPS
    steps.mkdir(exist_ok=True)
    record = {"step": "train", "state": "failed", "cause": "boom\x1b[2J\x1b[Hall good \u202e99"}
    (steps / "train.json").write_text(json.dumps(record))
    result = CliRunner().invoke(main, ["status", str(experiment.parent.parent / "s.yaml"), "--out",
                                       str(experiment.parent)])
    assert "\x1b" not in result.output and "\u202e" not in result.output, result.output
    assert "boom\\x1b[2J" in result.output and "failed" in result.output, result.output


def test_chat_refuses_a_line_that_is_not_utf8_or_too_long_and_goes_on():
    lines = iter(["caf\udce9", "x" * 20_001, "exit"])
    said: list[str] = []

    class Engine:
        def chat(self, turn):
            raise AssertionError("nothing may be asked")

    model = type("M", (), {"wrapper": None})()
    chat._turns(model, Engine(), raw=True, history=False, read=lambda _prompt: next(lines), write=said.append)
    assert "not UTF-8" in said[0] and "20001 characters" in said[1]


def test_a_crash_where_the_cache_cannot_be_written_saves_its_traceback_in_the_temporary_directory(tmp_path):
    """A read-only HOME (here: a cache path that is a file, which fails the same way and also as
    root): the traceback goes under the temporary directory, never onto the terminal."""
    script = ("import sys; from telecom_lf import data\n"
              "def broken(*a, **k): raise ZeroDivisionError('simulated')\n"
              "data.read_raw = broken\n"
              "from telecom_lf.cli import main\n"
              "sys.argv = ['tlf', 'data', 'import', sys.argv[1], '--out', sys.argv[2]]\n"
              "main()\n")
    (tmp_path / "raw.csv").write_text("用户问题,答案\n你好,取消方式_1\n")
    (tmp_path / "cache-is-a-file").write_text("")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache-is-a-file"), "TMPDIR": str(tmp_path / "tmp")}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "raw.csv"), str(tmp_path / "o")],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    saved = list((tmp_path / "tmp").rglob("*.txt"))
    assert len(saved) == 1 and str(saved[0]) in done.stderr and "ZeroDivisionError" in saved[0].read_text()
