"""``tlf run``: a real chain of LLaMA-Factory processes, interrupted and resumed."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import patience, spec_file, tlf_bin

pytestmark = pytest.mark.integration


def _spec(path: Path, model: Path, data_dir: Path) -> Path:
    path.write_text(f"""name: resume
model: {model}
data: {{dir: {data_dir}, train: telecom_train_400, predict: [telecom_test_100]}}
template: default
train:
  lora_target: all
  per_device_train_batch_size: 4
  num_train_epochs: 6.0
  learning_rate: 1.0e-3
  save_steps: 20
  cutoff_len: 128
sweep:
  grid: {{lora_rank: [2, 4]}}
predict: {{max_samples: 6, max_new_tokens: 8, per_device_eval_batch_size: 6}}
""", encoding="utf-8")
    return path


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + patience(timeout)
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_interrupted_run_resumes_without_redoing_finished_steps(tiny_gemma, telecom_dir, tmp_path):
    spec = _spec(tmp_path / "resume.yaml", tiny_gemma, telecom_dir)
    out = tmp_path / "runs"
    first = subprocess.run([tlf_bin(), "run", spec, "--out", out, "--only", "r2"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    finished = out / "resume" / "r2"
    stamps = {p: p.stat().st_mtime_ns for p in [finished / "train" / "adapter_model.safetensors",
                                                 finished / "predict-telecom_test_100" / "generated_predictions.jsonl",
                                                 finished / "scores.json"]}

    # Ctrl-C in the middle of r4's training, once a checkpoint exists. tlf starts the way a
    # shell's background job does (`tlf run ... &`): with SIGINT ignored, which its children
    # must not inherit.
    running = subprocess.Popen([tlf_bin(), "run", spec, "--out", out], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    train_dir = out / "resume" / "r4" / "train"
    _wait_for(lambda: any(train_dir.glob("checkpoint-*/trainer_state.json")), 300, "r4's first checkpoint")
    time.sleep(1)
    running.send_signal(signal.SIGINT)
    stdout, stderr = running.communicate(timeout=patience(120))
    assert running.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not (train_dir / "train_results.json").exists(), "training was meant to be interrupted"
    assert not (out / "resume" / "r4" / "scores.json").exists()
    # atomic_write's temporary files are named .<name>.<random>: none may be left behind (the
    # report's .tlf-owned marker is a file tlf keeps there on purpose)
    hidden = [p for p in [*(out / "resume").glob("report/.*"), *(out / "resume").glob("*/.*")]
              if not p.name.startswith(".tlf-lock") and p.name != ".tlf-owned"]
    assert not hidden

    again = subprocess.run([tlf_bin(), "run", spec, "--out", out], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "r2: train: done already, skipped" in again.stdout
    assert "r2: predict telecom_test_100: done already, skipped" in again.stdout
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    log = (out / "resume" / "r4" / "logs" / "train.log").read_text(encoding="utf-8", errors="replace")
    assert "Resuming training from" in log and "checkpoint-" in log
    assert json.loads((train_dir / "train_results.json").read_text())["epoch"] == pytest.approx(6.0)
    report = (out / "resume" / "report" / "report.md").read_text(encoding="utf-8")
    assert "| r2 | done |" in report and "| r4 | done |" in report
    # said in the terminal, and counted whole in the report: both segments, each step once
    assert "r4: resuming from checkpoint-" in again.stderr and "trained (resumed from checkpoint-" in again.stdout
    from telecom_lf import report as report_mod

    r4 = next(r for r in report_mod.gather(out / "resume").records if r.name == "r4")
    steps = [step for _, step, _ in r4.losses]
    assert r4.segments == 2 and steps == sorted(set(steps))
    last = json.loads((train_dir / "train_results.json").read_text())
    assert r4.row["train_runtime_s"] > last["train_runtime"]
    assert r4.row["samples_per_s"] < last["train_samples_per_second"]


def test_two_launchers_on_one_run_exactly_one_trains(tiny_gemma, telecom_dir, tmp_path):
    """A second `tlf run` of the same spec while the first trains: refused at once, naming the
    holder; the first finishes and its trainer log holds each step once."""
    spec = _spec(tmp_path / "twice.yaml", tiny_gemma, telecom_dir)
    out = tmp_path / "runs"
    first = subprocess.Popen([tlf_bin(), "run", spec, "--out", out, "--only", "r2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    train_dir = out / "resume" / "r2" / "train"   # _spec names the experiment "resume"
    _wait_for(lambda: (train_dir / "trainer_log.jsonl").exists(), 300, "r2's training to start")
    started = time.monotonic()
    second = subprocess.run([tlf_bin(), "run", spec, "--out", out, "--only", "r2"], capture_output=True, text=True)
    assert second.returncode == 2, second.stderr
    assert "is working on it" in second.stderr and f"pid {first.pid}" in second.stderr, second.stderr
    assert time.monotonic() - started < 60             # refused at once, not after training
    assert first.wait(timeout=patience(600)) == 0, first.communicate()[1]
    logged = [json.loads(line) for line in (train_dir / "trainer_log.jsonl").read_text().splitlines()]
    steps = [entry["current_steps"] for entry in logged if "loss" in entry]    # the last line repeats the step, no loss
    assert len(steps) == len(set(steps)) and len(logged) <= len(steps) + 1

    # --wait queues behind the holder instead: here nothing is left to do
    waited = subprocess.run([tlf_bin(), "run", spec, "--out", out, "--only", "r2", "--wait"],
                            capture_output=True, text=True)
    assert waited.returncode == 0 and "done already, skipped" in waited.stdout


def test_one_process_per_run_keeps_each_steps_log_and_record_and_stops_at_a_failure(tiny_gemma, telecom_dir,
                                                                                     tmp_path):
    """`tlf run` gives a run's train and predicts to one LLaMA-Factory process (`tlf-lf serve`).
    A predict that fails there is recorded failed with its own log's cause; the steps after it
    did not run and say so; the train is done and is not redone once the data is mended."""
    data_dir = tmp_path / "data"
    shutil.copytree(telecom_dir, data_dir)
    spec = spec_file(tmp_path / "chain.yaml", tiny_gemma, data_dir, sets=("telecom_test_100", "telecom_train_100"))
    out = tmp_path / "runs"
    good = (data_dir / "telecom_test_100.json").read_bytes()
    (data_dir / "telecom_test_100.json").write_text("[{", encoding="utf-8")
    failed = subprocess.run([tlf_bin(), "run", spec, "--out", out], capture_output=True, text=True)
    assert failed.returncode != 0
    run_dir = out / "chain" / "chain"
    states = {p.stem: json.loads(p.read_text()) for p in (run_dir / "steps").glob("*.json")}
    assert states["train"]["state"] == "done"
    assert states["predict-telecom_test_100"]["state"] == "failed"
    assert states["predict-telecom_test_100"]["log"] == str(run_dir / "logs" / "predict-telecom_test_100.log")
    cause = states["predict-telecom_test_100"]["cause"]
    assert cause and "not run" not in cause and cause in failed.stderr
    assert states["predict-telecom_train_100"]["cause"] == "not run: predict-telecom_test_100 failed before it"
    for step in ("train", "predict-telecom_test_100"):
        log = (run_dir / "logs" / f"{step}.log").read_text(encoding="utf-8", errors="replace")
        assert f"tlf-lf serve: {run_dir / (step + '.yaml')} (process " in log
    assert "Running training" not in (run_dir / "logs" / "predict-telecom_test_100.log").read_text(errors="replace")
    adapter = run_dir / "train" / "adapter_model.safetensors"
    trained = adapter.stat().st_mtime_ns

    (data_dir / "telecom_test_100.json").write_bytes(good)
    mended = subprocess.run([tlf_bin(), "run", spec, "--out", out], capture_output=True, text=True)
    assert mended.returncode == 0, mended.stderr[-3000:]
    assert "chain: train: done already, skipped" in mended.stdout
    assert "chain: predict telecom_test_100: predicted" in mended.stdout
    assert "chain: predict telecom_train_100: predicted" in mended.stdout
    assert adapter.stat().st_mtime_ns == trained
    states = {p.stem: json.loads(p.read_text())["state"] for p in (run_dir / "steps").glob("*.json")}
    assert states == dict.fromkeys(["train", "predict-telecom_test_100", "predict-telecom_train_100", "score"], "done")


def test_a_local_sweep_over_two_seeds_runs_every_replica_and_reports_mean_and_sd(tiny_gemma, telecom_dir, tmp_path):
    """seeds: [42, 7] on a two-point grid: four runs rendered and run, each with its own seed; the
    report's table by configuration shows mean ± sd over the two replicas of each configuration."""
    spec = spec_file(tmp_path / "seeded.yaml", tiny_gemma, telecom_dir,
                     extra="seeds: [42, 7]\nsweep:\n  grid: {lora_rank: [2, 4]}\n")
    out = tmp_path / "runs"
    done = subprocess.run([tlf_bin(), "run", spec, "--out", out], capture_output=True, text=True,
                          timeout=patience(1200))
    assert done.returncode == 0, done.stderr[-3000:]
    root = out / "seeded"
    names = sorted(p.name for p in root.iterdir() if (p / "manifest.json").exists())
    assert names == ["r2-s42", "r2-s7", "r4-s42", "r4-s7"]
    for name in names:
        assert json.loads((root / name / "manifest.json").read_text())["seed"] == int(name.rsplit("-s", 1)[1])
        assert (root / name / "scores.json").exists()
    by_config = (root / "report" / "report_by_config.csv").read_text(encoding="utf-8").splitlines()
    assert by_config[0].startswith("configuration,what,replicas,seeds,acc % mean ± sd [telecom_test_100]")
    assert [line.split(",")[:4] for line in by_config[1:]] == [["r2", "", "2", "42 7"], ["r4", "", "2", "42 7"]]
    assert all("±" in line for line in by_config[1:])
    assert "by configuration (mean ± sd over seeds)" in done.stdout
