"""Each benchmark script runs on a small shape (a smoke test: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.integration


def test_score_benchmark_small(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "score_bench.py"), "--rows", "300",
                           "--json", str(tmp_path / "s.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "same numbers: True" in done.stdout
    assert json.loads((tmp_path / "s.json").read_text())["rows"] == 300


def test_render_benchmark_small(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "render_bench.py"), "--repeat", "1",
                           "--json", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["runs"] == 14


def test_train_benchmark_small(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_bench.py"), "--shape", "tiny",
                           "--steps", "2", "--json", str(tmp_path / "t.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "t.json").read_text())["results"]
    assert results["tlf speed: fast"]["micro_batch"] == 64 and results["tlf speed: fast"]["accumulation"] == 1
    assert results["blog flags as written"]["micro_batch"] == 8 and results["blog flags as written"]["accumulation"] == 8


def test_predict_benchmark_small(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "predict_bench.py"), "--rows", "8",
                           "--batch", "8", "--json", str(tmp_path / "p.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads((tmp_path / "p.json").read_text())["identical_outputs"] == 8
