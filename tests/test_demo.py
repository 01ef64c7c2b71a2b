"""``tlf demo``, the README's first command, whole and from nothing: its numbers must show the
comparison the blog made, so a change that breaks learning (data, tokenizer, pre-training,
the spec, the chain) fails here."""

from __future__ import annotations

import csv
import re

import pytest
from conftest import run_while_progressing, tlf_bin

pytestmark = pytest.mark.integration


def _rows(report_csv) -> dict[str, dict]:
    with open(report_csv, encoding="utf-8", newline="") as handle:
        return {row["what"]: row for row in csv.DictReader(handle)}


def _table(stdout: str) -> str:
    return stdout[stdout.index("\nrun "):stdout.index("\nreport: ")]


def test_demo_learns_what_the_blog_found_and_a_second_run_prints_the_same_table(tmp_path):
    out = tmp_path / "demo-out"
    first = run_while_progressing([tlf_bin(), "demo", "--out", out])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    rows = _rows(out / "runs" / "demo" / "report" / "report.csv")
    test_acc = {what: float(row["acc % [telecom_test_100]"]) for what, row in rows.items()}
    train_acc = {what: float(row["acc % [telecom_train_100]"]) for what, row in rows.items()}
    # The blog's finding, in the tiny model: its best configuration clearly above its first one,
    # both far above LLaMA-Factory's defaults (lr 5e-5 moves a 64-wide model nowhere).
    assert test_acc["blog best"] >= 20, test_acc
    for acc in (test_acc, train_acc):
        assert acc["blog best"] > acc["blog configuration"] + 10 > acc["LLaMA-Factory defaults"] + 10, acc
    assert "best possible acc on telecom_train_100 and telecom_test_100: 100 %" in first.stdout
    # The pre-training and every run's train and predicts ran in one LLaMA-Factory process (the
    # worker), each step into its own log.
    processes = set()
    logs = [out / "models" / "pretrain" / "pretrain.log"]
    for run in ("r8-a16-qkv-d0.1", "r16-a32-qkvo-d0", "upstream-defaults"):
        logs += [out / "runs" / "demo" / run / "logs" / f"{step}.log"
                 for step in ("train", "predict-telecom_train_100", "predict-telecom_test_100")]
    for log in logs:
        lines = re.findall(r"^tlf-lf serve: (.+) \(process (\d+)\)$", log.read_text(errors="replace"), re.M)
        assert len(lines) == 1 and lines[0][0].endswith(log.stem + ".yaml"), (log, lines)
        processes.add(lines[0][1])
    assert len(processes) == 1, processes

    second = run_while_progressing([tlf_bin(), "demo", "--out", out])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "(exists)" in second.stdout and "done already, skipped" in second.stdout
    assert _table(second.stdout) == _table(first.stdout)
