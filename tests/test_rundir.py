"""The run-directory contract: names, the chain, one definition of done, states, step records."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import run_manifest, spec_file, tlf_bin

from telecom_lf import rundir
from telecom_lf.errors import TlfError

pytestmark = pytest.mark.unit


def _rendered(tmp_path, trains=True, sets=("a_100", "b_100")):
    run_dir = tmp_path / "exp" / "r1"
    run_dir.mkdir(parents=True)
    manifest = {"trains": trains, "predict_sets": list(sets), "dataset_dir": str(tmp_path / "data"),
                "split_manifest": None, "model": {"name": "m", "path": str(tmp_path / "model")}, "files": {}}
    (run_dir / rundir.MANIFEST).write_text(json.dumps(manifest))
    return rundir.open_run(run_dir)


def _touch(path, text="{}"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_chain_is_train_then_each_predict_then_score():
    links = rundir.chain(True, ["a", "b"])
    assert [(x.name, x.args, x.after) for x in links] == [
        ("train", ("train",), ()),
        ("predict-a", ("predict", "a"), ("train",)),
        ("predict-b", ("predict", "b"), ("train",)),
        ("score", ("score",), ("predict-a", "predict-b"))]
    probe = rundir.chain(False, ["a"])
    assert [(x.name, x.after) for x in probe] == [("predict-a", ()), ("score", ("predict-a",))]


def test_the_manifest_says_everything_a_launcher_needs(tmp_path):
    run = _rendered(tmp_path)
    assert run.trains and run.predict_sets == ["a_100", "b_100"] and run.dataset_dir == tmp_path / "data"
    assert run.config("train").name == "train.yaml" and run.config("predict-a_100").name == "predict-a_100.yaml"
    assert run.step_log("predict-a_100") == run.path / "logs" / "predict-a_100.log"
    (tmp_path / "plain").mkdir()
    with pytest.raises(TlfError, match="not a rendered run"):
        rundir.open_run(tmp_path / "plain")


def test_one_definition_of_done_and_the_states_in_order(tmp_path):
    run = _rendered(tmp_path)
    assert rundir.state(run) == "rendered"
    _touch(run.train_dir / "trainer_log.jsonl", "")
    assert rundir.state(run) == "training"
    _touch(run.train_dir / "train_results.json")
    # results without weights are not a trained run (the report used to count them)
    assert not rundir.train_done(run) and rundir.state(run) == "training"
    _touch(run.train_dir / "adapter_model.safetensors", "x")
    assert rundir.state(run) == "trained"
    for dataset in run.predict_sets:
        _touch(run.predictions(dataset), "")
        _touch(run.path / rundir.predict_dir(dataset) / "predict_results.json")
    assert rundir.state(run) == "predicted"
    _touch(run.path / rundir.SCORES, json.dumps({"sets": {"a_100": {}, "b_100": {}}}))
    assert rundir.score_done(run) and rundir.state(run) == "done"
    # predictions newer than the scores: not done any more
    later = run.path / rundir.SCORES
    os.utime(run.predictions("a_100"), ns=(later.stat().st_mtime_ns + 10**9,) * 2)
    assert not rundir.score_done(run)


def test_a_failed_step_records_its_cause_job_and_log_until_redone(tmp_path, monkeypatch):
    run = _rendered(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    log = run.step_log("train")
    rundir.record_step(run, "train", "running", log)
    rundir.record_step(run, "train", "failed", log, "OSError: no such model")
    record = rundir.step_records(run)["train"]
    assert record["state"] == "failed" and record["job_id"] == "4242" and record["cause"] == "OSError: no such model"
    assert record["log"] == str(log) and record["pid"] == os.getpid()
    assert rundir.state(run) == "failed"
    _touch(run.train_dir / "train_results.json")
    _touch(run.train_dir / "adapter_model.safetensors", "x")
    assert rundir.state(run) == "trained"   # the failure was redone


def test_array_tasks_are_named_as_squeue_shows_them(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "15")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert rundir.slurm_job_id() == "15_2"


def test_reset_keeps_the_rendered_files(tmp_path):
    run = _rendered(tmp_path)
    _touch(run.train_dir / "adapter_model.safetensors", "x")
    _touch(run.predictions("a_100"), "")
    _touch(run.path / rundir.SCORES)
    rundir.record_step(run, "train", "done")
    rundir.reset(run.path)
    assert sorted(p.name for p in run.path.iterdir()) == [rundir.MANIFEST]


@pytest.mark.parametrize("content", ["{not json", "5", '{"runs": {}}', "[5]", '[{"runs": {"r": {"train": "-d"}}}]',
                                     '[{"runs": {"r": ["1"]}}]', '[{"runs": {}, "report": "1; rm -rf ~"}]'])
def test_a_malformed_jobs_json_is_refused_naming_the_file(tmp_path, content):
    from telecom_lf.errors import TlfError
    from telecom_lf.rundir import Experiment

    (tmp_path / "jobs.json").write_text(content)
    with pytest.raises(TlfError, match="jobs.json: not the list of submission records"):
        Experiment(tmp_path).jobs()


def test_a_well_formed_jobs_json_reads_back(tmp_path):
    from telecom_lf.rundir import Experiment

    experiment = Experiment(tmp_path)
    assert experiment.jobs() == []
    record = {"submitted": "now", "runs": {"r2": {"train": "12", "score": "14"}, "r4": {"array_task": "20_1"}},
              "array": "20", "report": "15"}
    experiment.add_jobs(record)
    assert experiment.jobs() == [record]


def test_incomplete_checkpoints_are_set_aside_not_deleted(tmp_path):
    from telecom_lf.rundir import set_aside_incomplete_checkpoints

    for step, files in ((10, ["adapter_model.safetensors", "trainer_state.json"]),
                        (20, ["adapter_model.safetensors"]),   # killed before trainer_state.json
                        (30, [])):                              # killed right after mkdir
        (tmp_path / f"checkpoint-{step}").mkdir()
        for name in files:
            (tmp_path / f"checkpoint-{step}" / name).write_text("x")
    moved = set_aside_incomplete_checkpoints(tmp_path)
    assert sorted(p.name for p in moved) == ["checkpoint-20.incomplete", "checkpoint-30.incomplete"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-20.incomplete",
                                                          "checkpoint-30.incomplete"]


# ---------------------------------------------------------------- one definition of each fact


def _checkpoint(train_dir, step, *names):
    path = train_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    for name in names:
        (path / name).write_text("x")
    return path


def test_one_definition_of_a_complete_checkpoint_for_train_select_and_chat(tmp_path):
    """Weights and trainer_state.json make a checkpoint complete: the resume, the selection and
    chat/export/probe (use.checkpoints) all ask rundir.checkpoints."""
    from telecom_lf import selection, use

    train = tmp_path / "run" / rundir.TRAIN_DIR
    _checkpoint(train, 10, rundir.ADAPTER_WEIGHTS, rundir.TRAINER_STATE)
    _checkpoint(train, 20, rundir.ADAPTER_WEIGHTS)                  # torn: no trainer_state.json
    _checkpoint(train, 30, "model.safetensors", rundir.TRAINER_STATE)
    (train / "checkpoint-x").mkdir()
    complete = [(10, train / "checkpoint-10"), (30, train / "checkpoint-30")]
    assert rundir.checkpoints(train) == complete == selection.checkpoints(train)
    assert [s for s, _ in rundir.checkpoints(train, complete=False)] == [10, 20, 30]
    run = rundir.Run(tmp_path / "run", run_manifest(trains=True))
    assert use.checkpoints(run) == [10, 30]
    assert rundir.last_checkpoint_step(train) == 30


@pytest.mark.parametrize("finetuning, key", [("lora", "adapter_name_or_path"), (None, "adapter_name_or_path"),
                                             ("oft", "adapter_name_or_path"), ("freeze", "model_name_or_path"),
                                             ("full", "model_name_or_path")])
def test_one_definition_of_which_key_loads_what_a_run_trained(finetuning, key):
    assert rundir.weights_key(finetuning) == key
    assert rundir.Run(Path("/r"), run_manifest(finetuning_type=finetuning)).weights_key == key


def test_one_definition_of_finished_predictions(tmp_path):
    from telecom_lf import selection

    run = rundir.Run(tmp_path, run_manifest(predict_sets=["t"], trains=True))
    out = tmp_path / rundir.predict_dir("t")
    out.mkdir()
    (out / rundir.PREDICTIONS).write_text("{}\n")
    assert not rundir.predict_done(run, "t") and not rundir.predictions_done(out)
    (out / rundir.PREDICT_RESULTS).write_text("{}")
    assert rundir.predict_done(run, "t") and rundir.predictions_done(out)
    dev = selection.output_dir(run, 5)
    dev.mkdir(parents=True)
    (dev / rundir.PREDICTIONS).write_text("{}\n")
    assert not selection.predicted(run, 5)
    (dev / rundir.PREDICT_RESULTS).write_text("{}")
    assert selection.predicted(run, 5)


def test_one_lookup_of_the_instruction_wrapper_for_chat_and_the_report(tmp_path):
    """The split manifest's instruction, else the imported file's meta.json: use (chat, probe,
    export) and the report both ask rundir, so the report strips what chat wraps."""
    from telecom_lf import use
    from telecom_lf.report import study as report_study

    (tmp_path / "all.meta.json").write_text(json.dumps({"instruction": "Q: {question}?"}), encoding="utf-8")
    split = tmp_path / rundir.SPLIT_MANIFEST
    split.write_text(json.dumps({"source": str(tmp_path / "all.json")}), encoding="utf-8")
    run = rundir.Run(tmp_path, run_manifest(split_manifest=str(split)))
    assert rundir.instruction_wrapper(split) == run.instruction_wrapper == "Q: {question}?"
    assert use.instruction_wrapper(run) == report_study._instruction([run]) == "Q: {question}?"


def test_a_freeze_run_is_loaded_as_a_whole_model_by_predict_select_and_chat(tiny_gemma, telecom_dir, tmp_path):
    """finetuning_type: freeze saves a whole model, like full: the predict and select configs and
    use.resolve (chat, export, probe) load it as model_name_or_path, never as an adapter."""
    import yaml

    from telecom_lf import use

    spec = spec_file(tmp_path / "freeze.yaml", tiny_gemma, telecom_dir, train=", finetuning_type: freeze",
                     extra="select: {on: telecom_dev_200}\n")
    done = subprocess.run([tlf_bin(), "render", spec, "--out", tmp_path / "runs"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    run = rundir.open_run(tmp_path / "runs" / "freeze" / "freeze")
    assert run.weights_key == "model_name_or_path"
    predict = yaml.safe_load(run.config("predict-telecom_test_100").read_text())
    select = yaml.safe_load(run.config("select").read_text())
    assert predict["model_name_or_path"] == str(run.path / rundir.SELECTED) and "adapter_name_or_path" not in predict
    assert select["model_name_or_path"] == str(run.train_dir) and "adapter_name_or_path" not in select
    (run.train_dir).mkdir()
    (run.train_dir / "model.safetensors").write_text("x")
    (run.train_dir / rundir.TRAIN_RESULTS).write_text("{}")
    resolved = use.resolve(run, checkpoint="last")
    assert resolved.args["model_name_or_path"] == str(run.train_dir) and resolved.adapter is None
