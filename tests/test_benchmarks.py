"""Each benchmark script runs on a small shape (a smoke test: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.integration


def _bench(script: str, out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``benchmarks/SCRIPT ARGS --json OUT``; it must succeed. Its stdout and its JSON."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args, "--json", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done, json.loads(out.read_text())


def test_score_benchmark_small(tmp_path):
    done, result = _bench("score_bench.py", tmp_path / "s.json", "--rows", "300")
    assert "same numbers: True" in done.stdout
    assert result["rows"] == 300


def test_render_benchmark_small(tmp_path):
    _done, result = _bench("render_bench.py", tmp_path / "r.json", "--repeat", "1")
    assert result["runs"] == 14


def test_train_benchmark_small(tmp_path):
    done, summary = _bench("train_bench.py", tmp_path / "t.json", "--shape", "tiny", "--steps", "3", "--variants",
                           "written", "fast", "fast-micro32", "fast-16gb", "fast-peft-dora")
    results = summary["results"]
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
    _done, result = _bench("predict_bench.py", tmp_path / "p.json", "--rows", "8", "--batch", "4")
    assert result["identical_outputs"] == 8
    # Generation alone is timed after the first batch: batch 1 has 7 timed batches, batch 4 one.
    assert result["batch1"]["generate_rows_per_s"] > 0 and result["batched"]["generate_rows_per_s"] > 0


def test_select_benchmark_small(tmp_path):
    done, result = _bench("select_bench.py", tmp_path / "s.json", "--train", "telecom_train_100", "--epochs", "2",
                          "--work", str(tmp_path / "work"))
    assert result["checkpoints"] == 2 and result["dev_rows"] == 200 and result["select_s"] > 0
    assert "selection / training:" in done.stdout


def test_dora_layer_benchmark_small(tmp_path):
    done, summary = _bench("dora_bench.py", tmp_path / "d.json", "--width", "16", "--rank", "4", "--rows", "128",
                           "--rounds", "2", "--calls", "2")
    results = summary["results"]
    assert set(results) == {f"{f}, dropout {d}" for f in ("peft", "tlf", "off") for d in (0.1, 0.0)}
    # Event counts are exact, unlike the times: tlf's forward adds fewer operations than PEFT's.
    for dropout in (0.1, 0.0):
        assert results[f"off, dropout {dropout}"]["events_added"] == 0
        assert results[f"tlf, dropout {dropout}"]["events_added"] < results[f"peft, dropout {dropout}"]["events_added"]
    assert "events DoRA adds per call: PEFT" in done.stdout


def test_sweep_predict_benchmark_small(tmp_path):
    _done, result = _bench("sweep_predict_bench.py", tmp_path / "s.json", "--runs", "2", "--rows", "4",
                           "--work", str(tmp_path / "work"))
    assert result["predicts"] == 4 and result["identical_outputs"] is True
    reads = {name: r["base_reads"] for name, r in result["results"].items()}
    assert reads == {"one process per predict": 4, "one process, base read per predict": 4,
                     "one process, base read once (shared)": 1}, reads
    assert result["results"]["one process per predict"]["processes"] == 4
