"""The login-node side: the local chain (``tlf run``), Slurm submission and job states.

Both launchers walk the same chain description (``rundir.chain``: train -> predict(s) ->
score, then the experiment's report); the steps themselves run in ``executor``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import executor, processes, report, rundir
from .errors import Failed, TlfError
from .rundir import JOB_ID, Experiment

ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED")
SLURM_TIMEOUT_S = 15   # a controller that does not answer by then is reported as unreachable


class SlurmFailed(Failed):
    pass


# ---------------------------------------------------------------- local chain


@dataclass
class LocalResult:
    report: report.Report
    failures: list[str]


def run_local(experiment: Experiment, run_names: list[str], echo, warn, wait: bool = False,
              worker: processes.Worker | None = None) -> LocalResult:
    """Every link of every run's chain in order, here; then the report. A failed run does not
    stop the others; Ctrl-C does (finished steps are kept, the next call goes on). ``worker``:
    the caller's LLaMA-Factory process, which each run's train and predicts are fused into."""
    failures = []
    for index, name in enumerate(run_names, start=1):
        echo(f"[{index}/{len(run_names)}] {name}")
        try:
            executor.step(experiment.run_dir(name), ["all"], processes.Launch(quiet=True, worker=worker),
                          echo=lambda message: echo(f"  {message}"), wait=wait)
        except executor.StepFailed as error:
            warn(f"  FAILED: {error}")
            failures.append(name)
    return LocalResult(report.write_report(experiment.root), failures)


# ---------------------------------------------------------------- Slurm client


def _slurm(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=SLURM_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise SlurmFailed(f"{command[0]} did not answer within {SLURM_TIMEOUT_S} s: is the Slurm "
                          "controller reachable (scontrol ping)?") from error


def _sbatch(args: list[str]) -> str:
    done = _slurm(["sbatch", "--parsable", *args])
    if done.returncode != 0:
        raise SlurmFailed(f"sbatch {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")
    job = done.stdout.strip().split(";")[0]
    if not JOB_ID.match(job):
        raise SlurmFailed(f"sbatch answered {done.stdout.strip()!r}, not a job id")
    return job


def submit_script(script: Path) -> str:
    """``sbatch SCRIPT``: its job id."""
    return _sbatch([str(script)])


def test_only(scripts: list[Path]) -> list[tuple[Path, int, str]]:
    """``sbatch --test-only`` on each script: (script, exit code, Slurm's message)."""
    results = []
    for script in scripts:
        done = _slurm(["sbatch", "--test-only", str(script)])
        results.append((script, done.returncode, (done.stderr or done.stdout).strip()))
    return results


def unfinished(experiment: Experiment, run_names: list[str]) -> list[str]:
    return [n for n in run_names if not rundir.score_done(rundir.open_run(experiment.run_dir(n)))]


def submit(experiment: Experiment, run_names: list[str], as_array: bool, array_parallel: int = 2,
           shared_predict: bool = False) -> dict | None:
    """Submit the runs not done yet and return at once (None: nothing to do). Chains use afterok;
    a failed parent cancels its children (``--kill-on-invalid-dep=yes``: Slurm would otherwise
    keep them PENDING forever). ``shared_predict`` (an array only): its tasks train, then one job
    after all of them (afterany: a failed task does not cost the others their predictions)
    predicts every trained run. If one sbatch fails, what was submitted is cancelled."""
    if not shutil.which("sbatch"):
        raise TlfError("sbatch is not on PATH: run `tlf submit` on a Slurm login node, or `tlf run` locally")
    experiment.jobs()            # a broken jobs.json is refused before anything is submitted
    todo = unfinished(experiment, run_names)
    if not todo:
        return None
    submitted: list[str] = []
    record: dict = {"submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": {}}
    try:
        if as_array:
            indices = [run_names.index(n) for n in todo]
            steps = [rundir.TRAINING] if shared_predict else []   # the array script's default: all
            array = _sbatch([f"--array={','.join(map(str, indices))}%{array_parallel}",
                             str(experiment.root / rundir.ARRAY_SCRIPT), *steps])
            submitted.append(array)
            record["array"] = array
            record["runs"] = {name: {"array_task": f"{array}_{run_names.index(name)}"} for name in todo}
            last = [array]
            if shared_predict:
                record["predict"] = _sbatch([f"--dependency=afterany:{array}",
                                             str(experiment.root / rundir.PREDICT_SCRIPT)])
                submitted.append(record["predict"])
                for jobs in record["runs"].values():
                    jobs["predict"] = record["predict"]
                last = [record["predict"]]
        else:
            last = [_submit_chain(experiment.run_dir(name), record["runs"].setdefault(name, {}), submitted)
                    for name in todo]
        record["report"] = _sbatch([f"--dependency=afterany:{':'.join(last)}",
                                    str(experiment.root / rundir.REPORT_SCRIPT)])
        submitted.append(record["report"])
    except SlurmFailed as error:
        if submitted:
            subprocess.run(["scancel", *submitted], capture_output=True, timeout=SLURM_TIMEOUT_S)
        raise SlurmFailed(f"{error}\ncancelled the {len(submitted)} job(s) already submitted: "
                          f"{' '.join(submitted) or 'none'}") from error
    experiment.add_jobs(record)
    return record


def _submit_chain(run_dir: Path, ids: dict, submitted: list[str]) -> str:
    """One run's chain as afterok-linked jobs; returns the last job's id."""
    run = rundir.open_run(run_dir)
    script = str(run_dir / rundir.JOB_SCRIPT)
    for link in run.chain():
        after = [f"--dependency=afterok:{':'.join(ids[a] for a in link.after)}", "--kill-on-invalid-dep=yes"]
        ids[link.name] = _sbatch([*(after if link.after else []), script, *link.args])
        submitted.append(ids[link.name])
    return ids[run.chain()[-1].name]


def job_states(job_ids: list[str]) -> dict[str, str]:
    """State per job id from squeue, then sacct, then scontrol (whatever the site has)."""
    ids = sorted({j for j in job_ids if JOB_ID.match(str(j))})
    states: dict[str, str] = {}
    if not ids or not shutil.which("squeue"):
        return states
    done = _slurm(["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)])
    if done.returncode != 0 and (problem := controller_problem()):
        # squeue also fails for ids the controller has forgotten; only an unreachable one is an error
        raise SlurmFailed(problem)
    for line in done.stdout.splitlines():
        job, _, state = line.partition(" ")
        states[job] = state
    missing = [j for j in ids if j not in states]
    if missing and shutil.which("sacct"):
        done = _slurm(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)])
        for line in done.stdout.splitlines():
            job, _, state = line.partition("|")
            if state:
                states.setdefault(job, state.split()[0])
    for job in [j for j in ids if j not in states]:
        state = _fields(_slurm(["scontrol", "-o", "show", "job", job]).stdout).get("JobState")
        if state:
            states[job] = state
    return states


def controller_problem() -> str | None:
    """Why the Slurm controller cannot be asked, or None. ``scontrol ping`` answers at once even
    when the controller is down (squeue would retry for ~18 s first)."""
    if not shutil.which("scontrol"):
        return None
    ping = _slurm(["scontrol", "ping"])
    if " is UP" in ping.stdout:
        return None
    said = [line for line in (ping.stdout + ping.stderr).splitlines() if line.strip() and "*" not in line]
    reason = said[0].strip() if said else "scontrol ping failed"
    return f"the Slurm controller does not answer ({reason}); job states unknown"


def active_jobs(experiment: Experiment, job_names: list[str]) -> list[str]:
    """This experiment's jobs still queued or running: tlf submit's, and any with its job names."""
    ids = [j for record in experiment.jobs()[-1:] for j in rundir.submission_ids(record)]
    queued = [job for jobs in queued_by_name(job_names).values() for job, _ in jobs]
    states = job_states(ids + queued)
    return sorted(j for j, state in states.items() if state.split()[0] in ACTIVE)


def queued_by_name(names: list[str], finished_under: Path | None = None) -> dict[str, list[tuple[str, str]]]:
    """Jobs in the queue by job name (job id, state), also those submitted by plain ``sbatch``;
    with ``finished_under``, also those the controller still remembers after they ended (MinJobAge,
    5 minutes by default) whose script lies under that experiment directory: a plain sbatch that
    failed before its step wrote anything (an ended job of another experiment with the same name,
    rendered into another --out, is not this run's)."""
    if not names or not shutil.which("squeue"):
        return {}
    done = _slurm(["squeue", "-h", "-r", "-o", "%i|%j|%T", f"--name={','.join(names)}"])
    queued: dict[str, list[tuple[str, str]]] = {}
    for line in done.stdout.splitlines():
        job, name, state = (line.split("|") + ["", ""])[:3]
        queued.setdefault(name, []).append((job, state))
    if finished_under is not None and shutil.which("scontrol"):
        wanted, inside = set(names), os.path.realpath(finished_under) + os.sep
        for fields in map(_fields, _slurm(["scontrol", "-o", "show", "jobs"]).stdout.splitlines()):
            job = _job_id(fields)
            script = os.path.realpath(os.path.join(fields.get("WorkDir", ""), fields.get("Command", "")))
            if (fields.get("JobName") in wanted and script.startswith(inside)
                    and job not in {j for j, _ in queued.get(fields["JobName"], [])}):
                queued.setdefault(fields["JobName"], []).append((job, fields.get("JobState", "?")))
    return queued


def _fields(line: str) -> dict[str, str]:
    """``scontrol -o show job``'s KEY=VALUE tokens (values with spaces, such as a command, are cut; the keys read
    here have none)."""
    return dict(token.split("=", 1) for token in line.split() if "=" in token)


def _job_id(fields: dict[str, str]) -> str:
    """An array task as squeue and sbatch name it (123_4), else the job id."""
    if fields.get("ArrayTaskId") and fields.get("ArrayJobId"):
        return f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
    return fields.get("JobId", "?")


def job_stderr(job: str, log_dirs: list[Path]) -> str | None:
    """Where a job's stderr went: scontrol's StdErr while the controller remembers the job, else the
    file tlf's #SBATCH --error pattern (%x-%j.err, %x-%A_%a.err) gave it in the logs directories."""
    if shutil.which("scontrol"):
        with_fields = _fields(_slurm(["scontrol", "-o", "show", "job", job]).stdout)
        if with_fields.get("StdErr"):
            return with_fields["StdErr"]
    for directory in log_dirs:
        found = sorted(directory.glob(f"*-{job}.err")) if directory.is_dir() else []
        if found:
            return str(found[0])
    return None


# ---------------------------------------------------------------- status


def _artifacts(run: rundir.Run) -> str:
    words = ["train:" + ("done" if rundir.train_done(run) else "-" if run.trains else "n/a")]
    if run.select:
        chosen = rundir.chosen_step(run)
        words.append("select:" + (f"checkpoint-{chosen}" if chosen is not None else "-"))
    words += [f"predict[{s}]:" + ("done" if rundir.predict_done(run, s) else "-") for s in run.predict_sets]
    return " ".join(words + ["score:" + ("done" if rundir.score_done(run) else "-")])


def _run_jobs(submitted: dict, records: dict[str, dict], queued: list[tuple[str, str]]) -> dict[str, str]:
    """step -> job id: tlf submit's record, then what each step recorded (plain sbatch too)."""
    jobs = {k: v for k, v in submitted.items() if isinstance(v, str)}
    for link, record in records.items():
        if record.get("job_id") and record["job_id"] not in jobs.values():
            jobs[link] = str(record["job_id"])
    for job, _state in queued:
        if job not in jobs.values():
            jobs[f"queued{'' if 'queued' not in jobs else len(jobs)}"] = job
    return jobs


def _guarded(call, problems: list[str], fallback):
    """A Slurm query whose failure becomes a reported problem, not an exception."""
    try:
        return call()
    except SlurmFailed as error:
        problems.append(str(error))
        return fallback


def _last_submission(experiment: Experiment, problems: list[str]) -> dict:
    try:
        return (experiment.jobs() or [{}])[-1]
    except TlfError as error:
        problems.append(str(error))
        return {}


def status_lines(
    experiment: Experiment, run_names: list[str], job_names: dict[str, str]
) -> tuple[list[str], str | None, list[str]]:
    """Per run: its state, which artifacts exist, its jobs and their states, and for a failed run
    the cause and the log it was read from; what kept job states from being known, if anything;
    and each run's state word."""
    problems: list[str] = []
    last = _last_submission(experiment, problems)
    down = controller_problem() if job_names else None
    if down:
        problems.append(down)
    queued = {} if down else _guarded(lambda: queued_by_name(list(job_names.values()), experiment.root), problems, {})
    submitted = last.get("runs", {})
    per_run = {}
    for name in run_names:
        if (experiment.run_dir(name) / rundir.MANIFEST).exists():
            run = rundir.open_run(experiment.run_dir(name))
            records = rundir.step_records(run)
            per_run[name] = (run, records,
                             _run_jobs(submitted.get(name, {}), records, queued.get(job_names.get(name), [])))
    report_job, predict_job = last.get("report"), last.get("predict")
    ids = [j for *_, jobs in per_run.values() for j in jobs.values()] + [report_job or "", predict_job or ""]
    states = {} if down else _guarded(lambda: job_states(ids), problems, {})
    shown = [_run_line(name, per_run.get(name), states) for name in run_names]
    lines = [line for line, _ in shown]
    if predict_job:
        lines.append(f"predict job {predict_job} (every run's predicts, the base read once): "
                     f"{states.get(predict_job, '?')}")
    if report_job:
        lines.append(f"report job {report_job}: {states.get(report_job, '?')}")
    return lines, "; ".join(problems) or None, [word for _, word in shown]


# What a job's final state says about a run that is not done; the run's own records come first.
ENDED_BADLY = {"CANCELLED": "cancelled", "TIMEOUT": "timed-out", "DEADLINE": "timed-out", "FAILED": "failed",
               "NODE_FAIL": "failed", "OUT_OF_MEMORY": "failed", "BOOT_FAIL": "failed", "PREEMPTED": "preempted"}
NOT_FINISHED_BADLY = ("failed", "cancelled", "timed-out", "preempted", "interrupted")


def _state(states: dict[str, str], job: str) -> str:
    """A job's state word as Slurm's tools print it, without "by 0" or sacct's "+" suffix; "?" when unknown."""
    return (states.get(job) or "?").split()[0].rstrip("+")


def run_word(word: str, jobs: dict[str, str], states: dict[str, str]) -> str:
    """The run's state from its own records (rundir.state) corrected by what Slurm says of its jobs:
    a run whose record still says "training" after its job was cancelled is cancelled, not training."""
    if word == "done":
        return word
    current = [_state(states, job) for job in jobs.values()]
    if any(state in ACTIVE for state in current):
        if any(state in ("REQUEUED", "REQUEUE_HOLD") for state in current):
            return "requeued"
        return "queued" if word == "rendered" and "RUNNING" not in current else word
    badly = [ENDED_BADLY[state] for state in current if state in ENDED_BADLY]
    if word == "failed" or not badly:
        return "interrupted" if word == "training" and current and "?" not in current else word
    return badly[-1]


def _run_line(name: str, found, states: dict[str, str]) -> tuple[str, str]:
    if found is None:
        return f"{name:36s} not rendered", "not rendered"
    run, records, jobs = found
    word = run_word(rundir.state(run), jobs, states)
    shown = " ".join(f"{k}={v}:{states.get(v, '?')}" for k, v in jobs.items())
    lines = [f"{name:36s} {word:11s} {_artifacts(run)}  {shown}".rstrip()]
    failed = rundir.failed_steps(run, records)
    for link, record in failed.items():
        lines += [f"    {link} failed: {record.get('cause')}", f"    log: {record.get('log')}"]
    for link, job in jobs.items():
        state = _state(states, job)
        if state in ENDED_BADLY and not failed:
            err = job_stderr(job, [run.path / rundir.LOGS, run.path.parent / rundir.LOGS])
            lines.append(f"    job {job} ({link}) ended {state} before its step recorded a failure; its stderr: "
                         f"{err or 'not found (the job may have been cancelled before it started)'}")
    return "\n".join(lines), word
