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
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "train_bench.py"),
            "--shape",
            "tiny",
            "--steps",
            "3",
            "--variants",
            "written",
            "fast",
            "fast-micro32",
            "fast-16gb",
            "fast-peft-dora",
            "--json",
            str(tmp_path / "t.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "t.json").read_text())["results"]
    assert results["tlf speed: fast"]["micro_batch"] == 64 and results["tlf speed: fast"]["accumulation"] == 1
    assert (
        results["blog flags as written"]["micro_batch"] == 8 and results["blog flags as written"]["accumulation"] == 8
    )
    assert (
        results["fast, micro 32 x GA 2"]["micro_batch"] == 32 and results["fast, micro 32 x GA 2"]["accumulation"] == 2
    )
    # A 16 GB card without liger_kernel installed (this machine): half the rows per micro-batch.
    assert results["fast, 16 GB card"]["micro_batch"] == 32 and results["fast, 16 GB card"]["accumulation"] == 2
    assert results["fast, PEFT's DoRA"]["micro_batch"] == 64   # the same fast profile, PEFT's DoRA forward
    assert "tlf's DoRA forward / PEFT's, fast" in done.stdout
    # Timed over the steps after the first: 2 steps of 64 rows, with non-padding tokens counted.
    assert all(r["measured_steps"] == 2 and r["tokens_per_row"] > 10 for r in results.values())


def test_predict_benchmark_small(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "predict_bench.py"), "--rows", "8",
                           "--batch", "4", "--json", str(tmp_path / "p.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "p.json").read_text())
    assert result["identical_outputs"] == 8
    # Generation alone is timed after the first batch: batch 1 has 7 timed batches, batch 4 one.
    assert result["batch1"]["generate_rows_per_s"] > 0 and result["batched"]["generate_rows_per_s"] > 0


def test_select_benchmark_small(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "select_bench.py"), "--train", "telecom_train_100",
                           "--epochs", "2", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "s.json")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["checkpoints"] == 2 and result["dev_rows"] == 200 and result["select_s"] > 0
    assert "selection / training:" in done.stdout


def test_dora_layer_benchmark_small(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "dora_bench.py"), "--width", "16", "--rank", "4",
                           "--rows", "128", "--rounds", "2", "--calls", "2", "--json", str(tmp_path / "d.json")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "d.json").read_text())["results"]
    assert set(results) == {f"{f}, dropout {d}" for f in ("peft", "tlf", "off") for d in (0.1, 0.0)}
    # Event counts are exact, unlike the times: tlf's forward adds fewer operations than PEFT's.
    for dropout in (0.1, 0.0):
        assert results[f"off, dropout {dropout}"]["events_added"] == 0
        assert results[f"tlf, dropout {dropout}"]["events_added"] < results[f"peft, dropout {dropout}"]["events_added"]
    assert "events DoRA adds per call: PEFT" in done.stdout


def test_sweep_predict_benchmark_small(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "sweep_predict_bench.py"), "--runs", "2",
                           "--rows", "4", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "s.json")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["predicts"] == 4 and result["identical_outputs"] is True
    reads = {name: r["base_reads"] for name, r in result["results"].items()}
    assert reads == {"one process per predict": 4, "one process, base read per predict": 4,
                     "one process, base read once (shared)": 1}, reads
    assert result["results"]["one process per predict"]["processes"] == 4
