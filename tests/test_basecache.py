"""#31: `predict_mode: shared` reads the base model once per process and predicts every run from
in-memory copies; the predictions are the same bytes as when every predict reads the base itself.

Through the real LLaMA-Factory on the tiny random Gemma (greedy: any change of a weight changes
its text), on a sweep of LoRA, rsLoRA, DoRA and a full fine-tune."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from click.testing import CliRunner
from conftest import spec_file, tlf_bin

from telecom_lf import basecache, rundir
from telecom_lf.cli import main

SWEEP = "decoding: greedy\nsweep:\n  vary: {use_rslora: [true], use_dora: [true], finetuning_type: [full]}\n"
SETS = ("telecom_test_100", "telecom_train_100")


def _run(spec, out):
    done = subprocess.run([tlf_bin(), "run", spec, "--out", out], capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def _loads(log_text: str) -> list[str]:
    return re.findall(r"^tlf: base model .*?: (read from disk|an in-memory copy)", log_text, re.M)


@pytest.mark.integration
def test_shared_predicts_equal_per_run_byte_for_byte_and_read_the_base_once(tiny_gemma, telecom_dir, tmp_path):
    results = {}
    for mode in ("shared", "per-run"):
        (tmp_path / mode).mkdir()
        spec = spec_file(tmp_path / mode / "sweep.yaml", tiny_gemma, telecom_dir,
                         extra=f"predict_mode: {mode}\n" + SWEEP, sets=SETS)
        _run(spec, tmp_path / mode / "runs")
        root = tmp_path / mode / "runs" / "sweep"
        runs = sorted(p.name for p in root.iterdir() if (p / rundir.MANIFEST).is_file())
        assert len(runs) == 4, runs
        results[mode] = {(run, s): (root / run / f"predict-{s}" / rundir.PREDICTIONS).read_bytes()
                         for run in runs for s in SETS}
        results[mode + "-logs"] = {run: "".join((root / run / "logs" / f"predict-{s}.log").read_text(errors="replace")
                                                for s in SETS) for run in runs}
    assert results["shared"] == results["per-run"]
    shared = results["shared-logs"]
    loads = [load for run in sorted(shared) for load in _loads(shared[run])]
    assert loads.count("read from disk") == 1, loads                     # one base read for 3 adapter runs x 2 sets
    assert loads.count("an in-memory copy") == 5, loads
    full = next(run for run in shared if "full" in run)
    assert _loads(shared[full]) == []                                     # a full fine-tune reads its own weights
    assert all(_loads(text) == [] for text in results["per-run-logs"].values())


@pytest.mark.unit
def test_predict_mode_is_checked_and_off_leaves_the_loader_alone(tiny_gemma, telecom_dir, tmp_path, monkeypatch):
    spec = spec_file(tmp_path / "bad.yaml", tiny_gemma, telecom_dir, extra="predict_mode: sometimes\n")
    refused = CliRunner().invoke(main, ["render", str(spec), "--out", str(tmp_path / "runs")])
    assert refused.exit_code == 2 and "predict_mode" in refused.output and "'shared', 'per-run'" in refused.output

    from llamafactory.model import loader

    config = tmp_path / "predict.yaml"
    config.write_text("do_predict: true\nadapter_name_or_path: /a\n")
    original = loader.AutoModelForCausalLM
    monkeypatch.delenv(rundir.SHARE_BASE_ENV, raising=False)
    basecache.install_for(str(config))
    assert loader.AutoModelForCausalLM is original
    monkeypatch.setenv(rundir.SHARE_BASE_ENV, "1")
    basecache.install_for(str(config))
    assert loader.AutoModelForCausalLM is not original and issubclass(loader.AutoModelForCausalLM, original)
    config.write_text("do_train: true\nadapter_name_or_path: /a\n")       # training never shares
    basecache.install_for(str(config))
    assert loader.AutoModelForCausalLM is original


@pytest.mark.integration
def test_with_checkpoint_selection_the_predicts_after_it_share_one_process_and_one_base(tiny_gemma, telecom_dir,
                                                                                       tmp_path):
    """Selection runs in its own process between a run's train and its predicts; the predicts
    after it still go to the one worker, and read the base once across the sweep."""
    outputs = {}
    for mode in ("shared", "per-run"):
        (tmp_path / mode).mkdir()
        spec = spec_file(tmp_path / mode / "sel.yaml", tiny_gemma, telecom_dir, sets=SETS,
                         extra=f"predict_mode: {mode}\ndecoding: greedy\nselect: {{on: telecom_dev_200, every: 5}}\n"
                               "sweep: {grid: {lora_rank: [2, 4]}}\n")
        _run(spec, tmp_path / mode / "runs")
        root = tmp_path / mode / "runs" / "sel"
        logs = {(run, s): (root / run / "logs" / f"predict-{s}.log").read_text(errors="replace")
                for run in ("r2", "r4") for s in SETS}
        assert all("tlf-lf serve: " in text for text in logs.values())     # in the worker, not a process each
        loads = [load for key in sorted(logs) for load in _loads(logs[key])]
        assert loads == (["read from disk"] + ["an in-memory copy"] * 3 if mode == "shared" else []), loads
        outputs[mode] = {key: (root / key[0] / f"predict-{key[1]}" / rundir.PREDICTIONS).read_bytes() for key in logs}
        for run in ("r2", "r4"):                                             # the select step: one read too
            checkpoints = len(json.loads((root / run / rundir.SELECTION).read_text())["checkpoints"])
            selected = _loads((root / run / "logs" / "select.log").read_text(errors="replace"))
            assert checkpoints >= 2 and selected == (
                ["read from disk"] + ["an in-memory copy"] * (checkpoints - 1) if mode == "shared" else []), selected
    assert outputs["shared"] == outputs["per-run"]


@pytest.mark.integration
def test_predict_shared_fails_a_run_with_a_corrupt_adapter_and_predicts_the_others(tiny_gemma, telecom_dir, tmp_path):
    """The Slurm predict job's command, here: each run trained first (`tlf step RUN training`, what
    the array tasks do), one adapter then damaged; its predict fails with its own record and log,
    the other runs are predicted and scored, an untrained run is skipped and said, and the exit
    status says a run failed."""
    spec = spec_file(tmp_path / "bad.yaml", tiny_gemma, telecom_dir, sets=SETS,
                     extra="decoding: greedy\nsweep: {grid: {lora_rank: [1, 2, 3, 4]}}\n")
    render = subprocess.run([tlf_bin(), "render", spec, "--out", tmp_path / "runs"], capture_output=True, text=True)
    assert render.returncode == 0, render.stderr
    root = tmp_path / "runs" / "bad"
    for run in ("r1", "r2", "r3"):
        done = subprocess.run([tlf_bin(), "step", root / run, "training"], capture_output=True, text=True)
        assert done.returncode == 0 and f"{run}: train: trained" in done.stdout, done.stdout + done.stderr
    adapter = root / "r2" / "train" / rundir.ADAPTER_WEIGHTS
    adapter.write_bytes(adapter.read_bytes()[:100])
    done = subprocess.run([tlf_bin(), "predict-shared", root], capture_output=True, text=True)
    assert done.returncode == 1 and "1 run(s) failed to predict or score: r2" in done.stderr, done.stdout + done.stderr
    assert "r4: skipped: train not done" in done.stdout
    for run in ("r1", "r3"):
        assert json.loads((root / run / rundir.SCORES).read_text())["sets"].keys() == set(SETS)
    failed = json.loads((root / "r2" / "steps" / f"predict-{SETS[0]}.json").read_text())
    assert failed["state"] == "failed" and failed["log"].endswith(f"predict-{SETS[0]}.log")
    assert "safetensors" in failed["cause"].lower() or "header" in failed["cause"].lower(), failed["cause"]
    assert not (root / "r2" / rundir.SCORES).exists()
    assert not (root / "r4" / "steps" / f"predict-{SETS[0]}.json").exists()
