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
