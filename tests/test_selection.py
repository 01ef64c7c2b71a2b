"""Checkpoint selection (select: in a spec): the choice, the chain, and real runs through the real
LLaMA-Factory on the tiny model, locally (the Slurm suite submits one too)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import patience, tlf_bin

from telecom_lf import rundir, selection


def tlf(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([tlf_bin(), *map(str, args)], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"tlf {' '.join(map(str, args))} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result



def test_the_best_score_wins_and_a_tie_goes_to_the_earlier_step():
    scored = [{"step": 10, "acc": 20.0}, {"step": 20, "acc": 35.0}, {"step": 30, "acc": 35.0}, {"step": 40, "acc": 5.0}]
    assert selection.choose(scored, "acc")["step"] == 20
    assert (
        selection.choose([{"step": 1, "long_recall": None}, {"step": 2, "long_recall": 0.0}], "long_recall")["step"]
        == 2
    )
    with pytest.raises(Exception, match="no checkpoint has a long_recall score"):
        selection.choose([{"step": 1, "long_recall": None}], "long_recall")



def test_the_chain_puts_select_between_train_and_the_predicts():
    links = rundir.chain(True, ["a", "b"], selects=True)
    assert [(x.name, x.after) for x in links] == [("train", ()), ("select", ("train",)), ("predict-a", ("select",)),
                                                  ("predict-b", ("select",)), ("score", ("predict-a", "predict-b"))]
    assert [x.name for x in rundir.chain(True, ["a"])] == ["train", "predict-a", "score"]



def test_pruning_keeps_weights_and_the_last_checkpoints_resume_state(tmp_path):
    found = []
    for step in (10, 20, 30):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        for name in (
            "adapter_model.safetensors",
            "trainer_state.json",
            "optimizer.pt",
            "scheduler.pt",
            "rng_state.pth",
        ):
            (path / name).write_bytes(b"x" * 100)
        found.append((step, path))
    assert selection.checkpoints(tmp_path) == found
    assert selection.prune(found) == 2 * 300
    assert sorted(p.name for p in found[0][1].iterdir()) == ["adapter_model.safetensors", "trainer_state.json"]
    assert len(list(found[2][1].iterdir())) == 5


# ---------------------------------------------------------------- real runs

def _spec(path: Path, model: Path, data: Path, extra: str = "") -> Path:
    path.write_text(f"""name: {path.stem}
model: {model}
data: {{dir: {data}, train: telecom_train_400, predict: [telecom_test_100]}}
template: default
train: {{num_train_epochs: 3.0, learning_rate: 5.0e-3, cutoff_len: 128, per_device_train_batch_size: 16}}
select: {{on: telecom_dev_200, metric: rouge-1}}
sweep:
  grid: {{lora_rank: [4, 8]}}
predict: {{max_samples: 8, max_new_tokens: 12, per_device_eval_batch_size: 8}}
{extra}""", encoding="utf-8")
    return path


def _neutralise(checkpoint: Path) -> None:
    """Make a checkpoint worse on purpose: zero its LoRA B matrices, so it answers as the base model."""
    from safetensors.torch import load_file, save_file

    weights = checkpoint / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: v * 0 if "lora_B" in k else v for k, v in tensors.items()}, str(weights), metadata={"format": "pt"})


@pytest.mark.integration
def test_a_sweep_with_select_scores_every_checkpoint_predicts_from_the_choice_and_reports_it(
        tiny_gemma, telecom_dir, tmp_path):
    spec = _spec(tmp_path / "sel.yaml", tiny_gemma, telecom_dir)
    out = tmp_path / "runs"
    tlf("render", spec, "--out", out)
    root = out / "sel"
    # r4: trained, then its last checkpoint made worse on purpose; an earlier one must be chosen
    tlf("step", root / "r4", "train")
    found = selection.checkpoints(root / "r4" / "train")
    assert [step for step, _ in found] == [25, 50, 75]                        # every epoch kept (no save_total_limit)
    _neutralise(found[-1][1])
    ran = tlf("run", spec, "--out", out)
    assert "r4: select: checkpoint-" in ran.stdout and "r8: select: checkpoint-" in ran.stdout
    for name in ("r4", "r8"):
        record = json.loads((root / name / rundir.SELECTION).read_text())
        assert [c["step"] for c in record["checkpoints"]] == [25, 50, 75]     # one score per checkpoint
        assert all(c["rows"] == 200 for c in record["checkpoints"])          # the whole dev set, not max_samples
        assert os.readlink(root / name / rundir.SELECTED) == f"train/checkpoint-{record['chosen']['step']}"
        # the test set predicted once, from the chosen checkpoint (through the selected link)
        log = (root / name / "logs" / "predict-telecom_test_100.log").read_text(errors="replace")
        assert log.count("Running Prediction") == 1 and f"Loaded adapter(s): {root / name / rundir.SELECTED}" in log
        assert (root / name / "select" / "checkpoint-75" / "generated_predictions.jsonl").exists()
    r4 = json.loads((root / "r4" / rundir.SELECTION).read_text())
    last = r4["checkpoints"][-1]["rouge-1"]
    assert r4["chosen"]["step"] < 75 and r4["chosen"]["rouge-1"] > last, r4
    assert r4["pruned_bytes"] > 0
    assert not (found[0][1] / "optimizer.pt").exists() and (found[-1][1] / "optimizer.pt").exists()
    page = (root / "report" / "report.md").read_text(encoding="utf-8")
    assert "selected step" in page and "dev rouge-1 % [telecom_dev_200]" in page
    # the best run is judged on the dev set by select:'s metric, and named only when distinguishable
    assert ("Best run on the dev set telecom_dev_200 by rouge-1: " in page
            or "No best run on the dev set telecom_dev_200 by rouge-1: " in page), page
    assert (root / "report" / "selection.png").read_bytes()[:4] == b"\x89PNG"
    chat = tlf("chat", spec, "--out", out, "--run", "r4", "--checkpoint", "best", input="exit\n")
    assert f"r4@checkpoint-{r4['chosen']['step']} (selected)" in chat.stdout + chat.stderr


@pytest.mark.integration
def test_an_interrupted_selection_resumes_without_predicting_a_checkpoint_twice(tiny_gemma, telecom_dir, tmp_path):
    spec = _spec(tmp_path / "again.yaml", tiny_gemma, telecom_dir, "labels: {r4: resumed}\n")
    out = tmp_path / "runs"
    tlf("render", spec, "--out", out)
    run = out / "again" / "r4"
    tlf("step", run, "train")
    select = subprocess.Popen([tlf_bin(), "step", run, "select"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    first = run / "select" / "checkpoint-25" / "predict_results.json"
    end = time.monotonic() + patience(300)
    # LLaMA-Factory writes predict_results.json before generated_predictions.jsonl: wait for the
    # checkpoint to be predicted as rundir defines it (both), or a Ctrl-C between the two is a
    # legitimate redo and the test would fail on a loaded machine.
    while not rundir.predictions_done(first.parent):
        assert time.monotonic() < end and select.poll() is None, "no first checkpoint predicted"
        time.sleep(0.2)
    select.send_signal(signal.SIGINT)
    select.communicate(timeout=patience(120))
    assert select.returncode != 0 and not (run / rundir.SELECTION).exists()
    stamp = first.stat().st_mtime_ns
    again = tlf("step", run, "select")
    done_before = 3 - int(again.stdout.split(" of 3 predicted now")[0].rsplit("; ", 1)[1])
    assert done_before >= 1, again.stdout                         # the first checkpoint was not predicted again
    assert first.stat().st_mtime_ns == stamp
    record = json.loads((run / rundir.SELECTION).read_text())
    assert [c["step"] for c in record["checkpoints"]] == [25, 50, 75]
    assert "done already, skipped" in tlf("step", run, "select").stdout
