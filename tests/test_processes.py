"""processes: the progress line read from LLaMA-Factory's trainer log, and a failed log's cause."""

from __future__ import annotations

import json

import pytest

from telecom_lf.processes import Launch, Progress, Worker, _progress_line, failure_cause

pytestmark = pytest.mark.unit


def test_the_progress_line_after_a_resume_is_this_jobs_own(tmp_path):
    """Before the resumed job logs a step, the last line of trainer_log.jsonl is the killed job's:
    it must not be shown as current; and the ETA comes from the resumed job's own pace, not from
    LLaMA-Factory's (this segment's time divided by every step since the start)."""
    log = tmp_path / "trainer_log.jsonl"
    old = {"current_steps": 60, "total_steps": 100, "percentage": 60.0, "elapsed_time": "0:01:00",
           "remaining_time": "0:00:40", "loss": 1.5}
    log.write_text(json.dumps(old) + "\n")
    progress = Progress.resuming(log, "train", start_step=60)
    assert _progress_line(progress) is None
    with log.open("a") as handle:   # 10 steps in 20 s: 30 steps left take 60 s (LLaMA-Factory says 0:00:04)
        handle.write(json.dumps({**old, "current_steps": 70, "percentage": 70.0, "elapsed_time": "0:00:20",
                                 "remaining_time": "0:00:04"}) + "\n")
    line = _progress_line(progress)
    assert "(70/100 steps)" in line and line.endswith("ETA 0:01:00")



def test_no_eta_before_a_whole_second_has_passed(tmp_path):
    """The demo printed 'elapsed 0:00:00, ETA 0:00:00' at 1% of a 44 s run: LLaMA-Factory logs
    whole seconds, so at first there is no pace to estimate from."""
    log = tmp_path / "trainer_log.jsonl"
    entry = {"current_steps": 20, "total_steps": 1764, "percentage": 1.1, "elapsed_time": "0:00:00",
             "remaining_time": "0:00:00"}
    log.write_text(json.dumps(entry) + "\n")
    assert _progress_line(Progress(log, "train", 0, 0)).endswith("elapsed 0:00:00, ETA ?")
    log.write_text(json.dumps({**entry, "elapsed_time": "0:00:02"}) + "\n")
    assert _progress_line(Progress(log, "train", 0, 0)).endswith("ETA 0:02:54")


def test_a_launch_fuses_only_with_a_worker_and_no_srun():
    """Fusing a run's steps into one process is explicit: the caller gives its worker."""
    assert not Launch(quiet=True).fuses
    with Worker() as worker:
        assert Launch(quiet=True, worker=worker).fuses
        assert not Launch(srun_nodes=2, worker=worker).fuses


def test_a_worker_that_never_started_stops_cleanly():
    worker = Worker()
    with worker:
        pass
    assert worker.child is None


def test_the_cause_of_a_failure_is_the_workers_exception_not_the_launchers(tmp_path):
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


def test_a_load_failure_names_the_model_it_could_not_load():
    from types import SimpleNamespace

    from telecom_lf.executor import _with_model

    run = SimpleNamespace(model_path="/models/gemma-2b")
    assert _with_model("OSError: Failed to load tokenizer.", run) == \
        "OSError: Failed to load tokenizer. (model /models/gemma-2b)"
    assert _with_model("RuntimeError: CUDA out of memory", run) == "RuntimeError: CUDA out of memory"
    assert _with_model(None, run) is None
