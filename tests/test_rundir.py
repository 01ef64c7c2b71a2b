"""The run-directory contract: names, the chain, one definition of done, states, step records."""

from __future__ import annotations

import json
import os

import pytest

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
    assert [(l.name, l.args, l.after) for l in links] == [
        ("train", ("train",), ()),
        ("predict-a", ("predict", "a"), ("train",)),
        ("predict-b", ("predict", "b"), ("train",)),
        ("score", ("score",), ("predict-a", "predict-b"))]
    probe = rundir.chain(False, ["a"])
    assert [(l.name, l.after) for l in probe] == [("predict-a", ()), ("score", ("predict-a",))]


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


def test_the_cause_of_a_failure_is_the_workers_exception_not_the_launchers(tmp_path):
    from telecom_lf.executor import failure_cause

    log = tmp_path / "train.log"
    log.write_text("loading\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                   "ImportError: attempted relative import with no known parent package\n"
                   "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
                   "subprocess.CalledProcessError: Command '['torchrun']' returned non-zero exit status 1.\n")
    assert failure_cause(log) == "ImportError: attempted relative import with no known parent package"
    log.write_text("OSError: /m does not appear to have a file named config.json\n")
    assert failure_cause(log).startswith("OSError: /m does not")
    log.write_text("all fine\n")
    assert failure_cause(log) is None


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
