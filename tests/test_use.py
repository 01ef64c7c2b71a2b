"""Using what a study found: ``tlf chat`` in a real pseudo-terminal, ``tlf probe``, ``tlf export``
with its merge check, on runs the real LLaMA-Factory trained on the tiny model."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import Terminal, patience, tlf_bin

pytestmark = pytest.mark.integration
WRAPPER = ("回答中国电信手机用户的问题,", ",应该怎么做？")


def tlf(*args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([tlf_bin(), *map(str, args)], capture_output=True, text=True, timeout=patience(900))
    if check and result.returncode != 0:
        raise AssertionError(f"tlf {' '.join(map(str, args))} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def study(tiny_gemma, telecom_dir, tmp_path_factory):
    """Two trained runs (blog prompt mode, greedy), predicted on 6 test rows."""
    root = tmp_path_factory.mktemp("study")
    spec = root / "study.yaml"
    spec.write_text(f"""name: study
model: {tiny_gemma}
data: {{dir: {telecom_dir}, train: telecom_train_100, predict: [telecom_test_100]}}
prompt: blog
template: default
decoding: greedy
train: {{per_device_train_batch_size: 4, num_train_epochs: 4.0, learning_rate: 2.0e-2, cutoff_len: 128, save_steps: 50,
        lora_target: all}}
sweep:
  grid: {{lora_rank: [2, 4]}}
predict: {{max_samples: 6, max_new_tokens: 12, per_device_eval_batch_size: 6}}
""", encoding="utf-8")
    tlf("run", spec, "--out", root / "runs")
    log = root / "runs" / "study" / "r2" / "logs" / "predict-telecom_test_100.log"
    assert "predictions decoded as LLaMA-Factory 0.6 did" in log.read_text(encoding="utf-8")   # prompt: blog
    return spec, root / "runs", root / "runs" / "study"


def _predictions(run_dir: Path) -> list[dict]:
    path = run_dir / "predict-telecom_test_100" / "generated_predictions.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _questions(telecom_dir: Path, rows: int) -> list[str]:
    records = json.loads((telecom_dir / "telecom_test_100.json").read_text(encoding="utf-8"))
    return [r["instruction"].removeprefix(WRAPPER[0]).removesuffix(WRAPPER[1]) for r in records[:rows]]


def _answer(terminal: Terminal, question: str) -> str:
    """Type a question at the prompt; the model's answer, up to the next prompt."""
    terminal.type(question + "\n")
    terminal.read_until("Model: ")
    return terminal.read_until("You: ").removesuffix("You: ").replace("\r\n", "\n").strip()


def test_chat_answers_as_the_run_predicted_and_exits_cleanly(study, telecom_dir):
    spec, runs_root, experiment = study
    run_dir = experiment / "r2"
    expected = _predictions(run_dir)
    assert expected[0]["predict"].strip(), "the study's r2 must answer something for this test to mean anything"
    questions = _questions(telecom_dir, 2)
    terminal = Terminal([tlf_bin(), "chat", str(spec), "--out", str(runs_root), "--run", "r2"])
    banner = terminal.read_until("Type a question")
    assert "tlf_blog_default" in banner and "greedy" in banner and WRAPPER[0] in banner
    terminal.read_until("You: ")
    for index, question in enumerate(questions):
        assert _answer(terminal, question) == expected[index]["predict"].strip()
    terminal.type("exit\n")
    assert terminal.exit_code() == 0


@pytest.mark.parametrize("how, code", [("eof", 0), ("ctrl-c", 130), ("exit", 0)])
def test_chat_with_the_base_model_ends_on_eof_ctrl_c_and_exit(study, how, code):
    _, _, experiment = study
    terminal = Terminal([tlf_bin(), "chat", str(experiment / "r4"), "--base"])
    assert "none (the base model)" in terminal.read_until("Type a question")
    terminal.prompt_then_type("You: ", {"eof": "\x04", "ctrl-c": "\x03", "exit": "exit\n"}[how])
    assert terminal.exit_code() == code      # never 134 (abort at interpreter shutdown)


def test_chat_refuses_unknown_runs_and_checkpoints_listing_the_valid_ones(study):
    spec, runs_root, experiment = study
    result = tlf("chat", spec, "--out", runs_root, "--run", "r9", check=False)
    assert result.returncode == 2 and "r2, r4" in result.stderr
    result = tlf("chat", spec, "--out", runs_root, "--run", "../study/r2", check=False)
    assert result.returncode == 2 and "no such run" in result.stderr
    result = tlf("chat", experiment / "r2", "--checkpoint", "999", check=False)
    assert result.returncode == 2 and "kept steps: 50" in result.stderr, result.stderr
    result = tlf("chat", spec, "--out", runs_root, check=False)
    assert result.returncode == 2 and "give --run NAME" in result.stderr


def test_chat_at_a_kept_checkpoint_uses_that_adapter(study):
    _, _, experiment = study
    terminal = Terminal([tlf_bin(), "chat", str(experiment / "r2"), "--checkpoint", "50"])
    assert "train/checkpoint-50" in terminal.read_until("Type a question")
    terminal.read_until("You: ")
    terminal.type("\x04")
    assert terminal.exit_code() == 0


def test_probe_lays_base_and_runs_side_by_side_and_reuses_answers(study):
    spec, runs_root, experiment = study
    first = tlf("probe", spec, "--out", runs_root, "--from", "telecom_test_100", "--rows", "3")
    assert first.stdout.count("predicting 3 question(s)") == 3        # base, r2, r4
    probe_dirs = list((experiment / "report" / "probe").iterdir())
    assert len(probe_dirs) == 1
    record = json.loads((probe_dirs[0] / "probe.json").read_text(encoding="utf-8"))
    assert len(record) == 3 and set(record[0]["answers"]) == {"base", "r2", "r4"}
    for run in ("r2", "r4"):   # greedy, same predict path and template: the run's own predictions
        assert [r["answers"][run] for r in record] == [p["predict"] for p in _predictions(experiment / run)[:3]]
    assert record[0]["expected"] == _predictions(experiment / "r2")[0]["label"]
    assert "| question | expected | base | r2 | r4 |" in (probe_dirs[0] / "probe.md").read_text(encoding="utf-8")
    again = tlf("probe", spec, "--out", runs_root, "--from", "telecom_test_100", "--rows", "3")
    assert "predicting" not in again.stdout and again.stdout.count("answers exist") == 3


def test_probe_refuses_a_questions_file_that_is_not_text(study, tmp_path):
    spec, runs_root, experiment = study
    bad = tmp_path / "q.txt"
    bad.write_bytes(b"\xff\xfe\x00binary")
    before = sorted(p for p in experiment.rglob("*"))
    result = tlf("probe", spec, "--out", runs_root, "--questions", bad, check=False)
    assert result.returncode == 2 and "not UTF-8" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p for p in experiment.rglob("*")) == before


def test_export_merges_verifies_and_a_wrong_merge_fails_the_check(study, tmp_path):
    spec, runs_root, experiment = study
    out = tmp_path / "shipped"
    result = tlf("export", spec, "--runs", runs_root, "--run", "r2", "--to", out, "--rows", "6")
    assert "6/6 rows of telecom_test_100 identical" in result.stdout
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "tlf_blog_default" in card and WRAPPER[0] in card and "lora_rank: `2`" in card
    assert "- training set: `" in card and "- scored on: `telecom_test_100`" in card
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".shipped")]   # no work dir left

    again = tlf("export", spec, "--runs", runs_root, "--run", "r2", "--to", out, check=False)
    assert again.returncode == 2 and "--force" in again.stderr
    assert json.loads((out / ".tlf-owned").read_text(encoding="utf-8"))["kind"] == "export"
    forced = tlf("export", spec, "--runs", runs_root, "--run", "r2", "--to", out, "--rows", "2", "--force")
    assert "2/2 rows" in forced.stdout     # tlf's own export is replaced with --force (a run or a user's dir is not)
    # --out: the deprecated old name of --to, for one release, with a warning
    old_name = tlf("export", spec, "--runs", runs_root, "--run", "r2", "--out", out, check=False)
    assert old_name.returncode == 2 and "--force" in old_name.stderr and "deprecated; use --to" in old_name.stderr

    from safetensors.torch import load_file, save_file
    weights = load_file(out / "model.safetensors")
    name = next(k for k in weights if k.endswith("v_proj.weight"))
    weights[name] = weights[name] * -3.0          # a merge that went wrong
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    wrong = tlf("export", spec, "--runs", runs_root, "--run", "r2", "--to", out, "--rows", "6", "--verify-only",
                check=False)
    assert wrong.returncode == 1 and "differently from the adapter" in wrong.stderr, wrong.stdout + wrong.stderr
