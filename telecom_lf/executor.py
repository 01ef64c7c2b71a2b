"""The compute-node side: the steps of one run (``tlf step``), and nothing else.

``job.sbatch`` and ``array.sbatch`` call ``python -m telecom_lf.cli step RUN_DIR [options] STEP``
and ``tlf run`` calls the same functions, so blog-era templates, environment records, step
records and skip-if-done behave the same everywhere. Each step records its state (with its
Slurm job id, host and pid) in the run directory, and a failed step its cause and log.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from . import lfargs, lock, rundir, score, selection
from .errors import Failed, TlfError
from .fsutil import atomic_write
from .rundir import Run

SMI_TOOLS = ("nvidia-smi", "rocm-smi", "hy-smi")
DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
# The line of a LLaMA-Factory log that says why it stopped: an exception's own line.
WRAPPER_ERRORS = ("CalledProcessError", "ChildFailedError")
ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit)\b.*")


class StepFailed(Failed):
    pass


@dataclass(frozen=True)
class Launch:
    """How a step starts LLaMA-Factory: here, or one srun task per node (multi-card Slurm jobs)."""
    srun_nodes: int | None = None
    nproc_per_node: int = 1
    quiet: bool = False          # tlf run: progress lines only; the log goes to logs/<step>.log


# ---------------------------------------------------------------- environment record


def record_environment(run: Run, step: str) -> Path:
    """SLURM_* variables, visible devices, *-smi output and package versions, at step start."""
    env = os.environ
    record = {
        "step": step,
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "versions": lfargs.installed_versions(),
        "slurm": {k: v for k, v in sorted(env.items()) if k.startswith("SLURM_")},
        "visible_devices": {k: env.get(k) for k in DEVICE_VARIABLES if k in env},
        "smi": {tool: _smi(tool) for tool in SMI_TOOLS if shutil.which(tool)},
    }
    job = env.get("SLURM_JOB_ID", "local")
    attempt = env.get("SLURM_RESTART_COUNT", "0")
    path = run.path / rundir.ENVIRONMENT / f"{step}-{job}-{attempt}-{os.getpid()}.json"
    atomic_write(path, json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    return path


def _smi(tool: str) -> str:
    try:
        done = subprocess.run([tool], capture_output=True, text=True, timeout=30)
        return (done.stdout + done.stderr)[-8000:]
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"failed: {error}"


# ---------------------------------------------------------------- child processes


@dataclass(frozen=True)
class Progress:
    """Where a training process logs its steps, and what of that log is this process's."""
    log: Path
    label: str
    offset: int = 0          # bytes an earlier segment (a resumed run's first job) wrote to the log
    start_step: int = 0      # the checkpoint step this process resumed from

    @classmethod
    def resuming(cls, log: Path, label: str, start_step: int = 0) -> "Progress":
        return cls(log, label, log.stat().st_size if log.exists() else 0, start_step)


def _progress_line(progress: Progress) -> str | None:
    """The latest step this process logged, with its own ETA: LLaMA-Factory's divides the time of
    this segment by every step since the start, so after a resume it is far too short."""
    try:
        with open(progress.log, "rb") as handle:
            handle.seek(progress.offset)
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "percentage" in entry and "current_steps" in entry:
            loss = f" loss {entry['loss']:.4f}" if isinstance(entry.get("loss"), (int, float)) else ""
            return (f"  {progress.label}: {entry['percentage']:5.1f}% ({entry['current_steps']}/{entry['total_steps']} "
                    f"steps){loss}, elapsed {entry.get('elapsed_time', '?')}, ETA {_eta(entry, progress.start_step)}")
    return None


def _eta(entry: dict, start_step: int) -> str:
    elapsed = rundir.elapsed_seconds(entry.get("elapsed_time"))
    done = entry["current_steps"] - start_step
    # LLaMA-Factory logs whole seconds: in the first second there is no pace to go by
    if not elapsed or done <= 0 or not isinstance(entry.get("total_steps"), int):
        return "?"
    return str(timedelta(seconds=int((entry["total_steps"] - entry["current_steps"]) * elapsed / done)))


def _default_stop_signals() -> None:
    """In the child, before exec. A background job of a non-interactive shell (`tlf run ... &`
    in a script, some CI runners) starts with SIGINT ignored; inherited, that would make
    LLaMA-Factory train on through the Ctrl-C tlf forwards to it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _copy_output(source, log, echo: bool) -> None:
    """The child's output into its log, and also to tlf's stderr unless quiet (Slurm's .err file)."""
    for chunk in iter(lambda: source.read1(1 << 16), b""):
        log.write(chunk)
        log.flush()
        if echo:
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()


def run_child(command: list[str], log_file: Path, progress: Progress | None = None,
              echo: bool = False, env: dict[str, str] | None = None) -> int:
    """Run one LLaMA-Factory process; Ctrl-C or SIGTERM stops it cleanly and is re-raised."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**_child_env(), **(env or {})}
    with open(log_file, "ab") as log:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=_default_stop_signals)
        copier = threading.Thread(target=_copy_output, args=(child.stdout, log, echo), daemon=True)
        copier.start()
        received = _wait_forwarding_signals(child, progress)
        copier.join(timeout=10)
    if received:
        raise KeyboardInterrupt(f"stopped by signal {received[0]}; the run resumes where it was")
    return child.returncode


def _child_env() -> dict[str, str]:
    # RECORD_VRAM: LLaMA-Factory logs peak memory into trainer_log.jsonl only when asked.
    return {**os.environ, "RECORD_VRAM": os.environ.get("RECORD_VRAM", "1")}


class Worker:
    """One long-lived ``tlf-lf serve`` process: LLaMA-Factory configs run in it one request after
    another, so ``tlf run`` (and ``tlf demo``) import Python, torch and LLaMA-Factory once (~10 s
    a process on a CPU) instead of once per run. Ctrl-C, SIGTERM or a failed request end it; the
    next request starts a fresh one."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.replies = None

    def run(self, pairs: list[tuple[Path, Path]], progress: Progress | None = None) -> bool:
        """Each (config, log) in turn, the output appended to the log; whether all succeeded."""
        if self.child is None or self.child.poll() is not None:
            self._start(pairs[0][1])
        request = json.dumps([[str(config), str(log)] for config, log in pairs]) + "\n"
        try:
            self.child.stdin.write(request.encode("utf-8"))
            self.child.stdin.flush()
        except OSError:
            self.stop()
            return False
        received = _wait_forwarding_signals(self.child, progress, self._answered)
        if received:
            self.stop()
            raise KeyboardInterrupt(f"stopped by signal {received[0]}; the run resumes where it was")
        # The worker's own line; anything else (its end of input, when it died) is a failure.
        ok = self.replies.readline().strip() == json.dumps({"ok": True})
        if not ok:
            self.stop()
        return ok

    def _answered(self, timeout: float) -> bool:
        import select

        ready, _, _ = select.select([self.replies], [], [], timeout)
        return bool(ready) or self.child.poll() is not None

    def _start(self, first_log: Path) -> None:
        first_log.parent.mkdir(parents=True, exist_ok=True)
        read_end, write_end = os.pipe()
        with open(first_log, "ab") as log:
            self.child = subprocess.Popen(
                [sys.executable, "-m", "telecom_lf.lf_entry", "serve", str(write_end)], stdin=subprocess.PIPE,
                stdout=log, stderr=subprocess.STDOUT, env=_child_env(), pass_fds=(write_end,), start_new_session=True,
                preexec_fn=_default_stop_signals)
        os.close(write_end)
        self.replies = os.fdopen(read_end, "r")

    def stop(self) -> None:
        """End the process: its input closed, it exits after what it is doing (killed after 10 s)."""
        if self.child is None:
            return
        with contextlib.suppress(OSError):
            self.child.stdin.close()
        try:
            self.child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pid, signal.SIGKILL)
            self.child.wait()
        self.replies.close()
        self.child = self.replies = None


WORKER = Worker()
atexit.register(WORKER.stop)


def _wait_forwarding_signals(child: subprocess.Popen, progress: Progress | None, finished=None) -> list[int]:
    """Until the child exits (or ``finished(timeout)`` says its work is done), printing progress;
    SIGINT/SIGTERM go on to its process group (a second one kills it)."""
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        try:
            os.killpg(child.pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    last = None
    try:
        while True:
            try:
                if finished is None:
                    child.wait(timeout=2)
                    return received
                if finished(2):
                    return received
            except subprocess.TimeoutExpired:
                pass
            if len(received) > 1:
                os.killpg(child.pid, signal.SIGKILL)
            line = _progress_line(progress) if progress else None
            if line and line != last:
                print(line, file=sys.stderr, flush=True)
                last = line
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def lf_command(config: Path, launch: Launch = Launch()) -> list[str]:
    """``tlf-lf train CONFIG`` with this interpreter; under srun, one task per node."""
    if not launch.srun_nodes:
        return [sys.executable, "-m", "telecom_lf.lf_entry", "train", str(config)]
    return ["srun", f"--nodes={launch.srun_nodes}", "--ntasks-per-node=1", "--export=ALL",
            sys.executable, "-m", "telecom_lf.lf_entry", "slurm-node", "--nproc-per-node",
            str(launch.nproc_per_node), "train", str(config)]


def failure_cause(log: Path) -> str | None:
    """The line of a log that says why the process stopped (the last exception line)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-400:]
    except OSError:
        return None
    errors = [line.strip() for line in lines if ERROR_LINE.match(line.strip())]
    # torchrun and LLaMA-Factory's launcher re-raise a worker's failure as their own: the
    # worker's exception is the one that says why.
    causes = [e for e in errors if not e.split(":", 1)[0].endswith(WRAPPER_ERRORS)] or errors
    return causes[-1][:500] if causes else None


# ---------------------------------------------------------------- steps


def set_aside_incomplete_checkpoints(train_dir: Path) -> list[Path]:
    """A job killed while saving leaves a checkpoint-N without its trainer_state.json (written
    last) or weights; LLaMA-Factory would resume from it and fail. Rename such directories so
    the resume picks the last complete one; nothing is deleted."""
    moved = []
    for checkpoint in sorted(train_dir.glob("checkpoint-*")):
        if not checkpoint.is_dir() or not checkpoint.name.split("-", 1)[1].isdigit():
            continue
        complete = (checkpoint / "trainer_state.json").exists() and any(
            (checkpoint / name).exists() for name in rundir.WEIGHT_FILES)
        if not complete:
            target = checkpoint.with_name(f"{checkpoint.name}.incomplete")
            suffix = 1
            while target.exists():
                target = checkpoint.with_name(f"{checkpoint.name}.incomplete{suffix}")
                suffix += 1
            checkpoint.rename(target)
            moved.append(target)
    return moved


def _model_problem(run: Run) -> str | None:
    """A local model directory that vanished after rendering, named as such before LLaMA-Factory
    buries it under a tokenizer traceback."""
    model = Path(run.model_path)
    if model.is_absolute() and not (model / "config.json").is_file():
        missing = "does not exist" if not model.exists() else "has no config.json"
        return f"model directory {model} {missing} (it was there when the run was rendered)"
    return None


def _run_lf(run: Run, link: str, launch: Launch, progress: Progress | None = None) -> None:
    """One LLaMA-Factory process for a link; records running -> done, failed (with its cause) or
    interrupted."""
    log = run.step_log(link)
    rundir.record_step(run, link, "running", log)
    cause = _model_problem(run)
    if cause is None:
        record_environment(run, link)
        try:
            rc = run_child(lf_command(run.config(link), launch), log, progress if launch.quiet else None,
                           echo=not launch.quiet)
        except KeyboardInterrupt:
            rundir.record_step(run, link, "interrupted", log)
            raise
        if rc != 0 or not rundir.link_done(run, link):
            cause = failure_cause(log) or f"exit code {rc}, and no error line in the log"
    if cause:
        rundir.record_step(run, link, "failed", log, cause)
        raise StepFailed(f"{run.name}: {link} failed: {cause}; log: {log}")
    rundir.record_step(run, link, "done", log)


def step_train(run: Run, launch: Launch = Launch()) -> str:
    if not run.trains:
        return "no training (probe run)"
    if rundir.train_done(run):
        return "done already, skipped"
    resumed = _prepare_train(run)
    _run_lf(run, "train", launch, Progress.resuming(run.train_dir / "trainer_log.jsonl", "train", resumed))
    return _trained(resumed)


def _prepare_train(run: Run) -> int:
    """Before LLaMA-Factory trains: incomplete checkpoints set aside; the step it resumes from."""
    for moved in set_aside_incomplete_checkpoints(run.train_dir):
        print(f"tlf: {moved.name}: set aside an incomplete checkpoint (the job was stopped while saving)",
              file=sys.stderr)
    resumed = last_checkpoint_step(run.train_dir)
    if resumed:
        print(f"tlf: {run.name}: resuming from checkpoint-{resumed} (steps 1-{resumed} were trained by an earlier "
              "job; LLaMA-Factory goes on from there)", file=sys.stderr, flush=True)
    return resumed


def _trained(resumed: int) -> str:
    return f"trained (resumed from checkpoint-{resumed})" if resumed else "trained"


def last_checkpoint_step(train_dir: Path) -> int:
    """The step of the last checkpoint-N LLaMA-Factory would resume from (0: none)."""
    steps = [int(p.name.split("-", 1)[1]) for p in train_dir.glob("checkpoint-*")
             if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return max(steps, default=0)


def step_predict(run: Run, dataset: str, launch: Launch = Launch()) -> str:
    if dataset not in run.predict_sets:
        raise TlfError(f"{run.name}: no predict set {dataset!r}; has {run.predict_sets}")
    if rundir.predict_done(run, dataset):
        return "done already, skipped"
    if run.trains and not rundir.train_done(run):
        raise StepFailed(f"{run.name}: cannot predict {dataset}: training has not finished")
    if run.select and not rundir.select_done(run):
        raise StepFailed(f"{run.name}: cannot predict {dataset}: checkpoint selection has not finished")
    _run_lf(run, f"predict-{dataset}", Launch(quiet=launch.quiet))
    return "predicted"


def step_score(run: Run) -> str:
    """Score every predict set into ``scores.json`` (written whole, atomically)."""
    if rundir.score_done(run):
        return "done already, skipped"
    sets = {}
    similarity = score.Similarity()
    for dataset in run.predict_sets:
        if not rundir.predict_done(run, dataset):
            raise StepFailed(f"{run.name}: cannot score {dataset}: no predictions yet")
        rows = score.read_predictions(run.predictions(dataset)).rows
        sets[dataset] = score.score_rows(rows, categories=_categories(run, dataset), similarity=similarity)
    atomic_write(run.path / rundir.SCORES, json.dumps({"run": run.name, "sets": sets}, ensure_ascii=False,
                                                      indent=2) + "\n")
    rundir.record_step(run, "score", "done")
    return f"scored {len(sets)} set(s)"


def _categories(run: Run, dataset: str) -> list[str] | None:
    if run.split_manifest is None or not run.split_manifest.exists():
        return None
    try:
        return score.categories_for(run.split_manifest, dataset)
    except TlfError:
        return None


def step(run_dir: Path, what: list[str], launch: Launch = Launch(), echo=print, wait: bool = False) -> None:
    """``all`` or one link of the run's chain: ``train`` | ``predict SET`` | ``score``, holding the
    run's lock, on the files manifest.json recorded."""
    rundir.refuse_symlinks(run_dir)
    run = rundir.open_run(run_dir)
    if not what or what == ["all"]:
        links = run.chain()
    else:
        links = [link for link in run.chain() if list(link.args) == what]
        if not links:
            raise TlfError(f"unknown step {' '.join(what)!r} for run {run.name}; expected: all | "
                           + " | ".join(" ".join(link.args) for link in run.chain()))
    rundir.check_rendered(run)
    fused = _fusable(run, links, launch)
    if fused:
        with contextlib.ExitStack() as held:
            for link in fused:
                held.enter_context(lock.hold(run.path, f"tlf step {' '.join(link.args)} of {run.name}", wait,
                                             step=link.name))
            for link, message in run_fused(run, fused):
                echo(f"{run.name}: {' '.join(link.args)}: {message}")
        links = links[len(fused):]
    for link in links:
        with lock.hold(run.path, f"tlf step {' '.join(link.args)} of {run.name}", wait, step=link.name):
            echo(f"{run.name}: {' '.join(link.args)}: {run_link(run, link.args, launch, echo)}")


def _fusable(run: Run, links: list[rundir.Link], launch: Launch) -> list[rundir.Link]:
    """The links ``tlf run`` can give one LLaMA-Factory process (the ``WORKER``): the chain's
    train and predicts, when more than one is to do, on at most one device (several would need
    torchrun). A chain with checkpoint selection, or any single step, runs link by link."""
    if not launch.quiet or launch.srun_nodes or run.select is not None:
        return []
    lf_links = [link for link in links if link.name == "train" or link.name.startswith("predict-")]
    if lf_links != links[:len(lf_links)]:
        return []
    if sum(not rundir.link_done(run, link.name) for link in lf_links) < 2 or not _one_device_at_most():
        return []
    return lf_links


def run_fused(run: Run, links: list[rundir.Link]) -> list[tuple[rundir.Link, str]]:
    """The train and predict links in the LLaMA-Factory ``WORKER`` (no imports per step or run).
    Each link keeps its own log and record: running while the worker runs them, then done, failed
    (the first link not done, with its log's cause; those after it "not run") or interrupted."""
    todo = [link for link in links if not rundir.link_done(run, link.name)]
    messages = [(link, "done already, skipped") for link in links if link not in todo]
    logs = {link.name: run.step_log(link.name) for link in todo}
    cause = _model_problem(run)
    resumed = _prepare_train(run) if cause is None and todo[0].name == "train" else 0
    for link in todo:
        rundir.record_step(run, link.name, "running", logs[link.name])
    if cause is None:
        for link in todo:
            record_environment(run, link.name)
            logs[link.name].parent.mkdir(parents=True, exist_ok=True)
        progress = Progress.resuming(run.train_dir / "trainer_log.jsonl", "train", resumed)
        try:
            WORKER.run([(run.config(link.name), logs[link.name]) for link in todo], progress)
        except KeyboardInterrupt:
            for link in todo:
                state = "done" if rundir.link_done(run, link.name) else "interrupted"
                rundir.record_step(run, link.name, state, logs[link.name])
            raise
    failed = None
    for link in todo:
        log = logs[link.name]
        if failed is None and rundir.link_done(run, link.name):
            rundir.record_step(run, link.name, "done", log)
            messages.append((link, _trained(resumed) if link.name == "train" else "predicted"))
        elif failed is None:
            failed = link
            cause = cause or failure_cause(log) or "LLaMA-Factory stopped, and no error line in the log"
            rundir.record_step(run, link.name, "failed", log, cause)
        else:
            rundir.record_step(run, link.name, "failed", log, f"not run: {failed.name} failed before it")
    if failed is not None:
        raise StepFailed(f"{run.name}: {failed.name} failed: {cause}; log: {logs[failed.name]}")
    return sorted(messages, key=lambda pair: links.index(pair[0]))


def _one_device_at_most() -> bool:
    """At most one visible accelerator (a CPU machine counts): what one process trains on alone."""
    for name in DEVICE_VARIABLES:
        if name in os.environ:
            return len([d for d in os.environ[name].split(",") if d.strip()]) <= 1
    import torch

    return torch.cuda.device_count() <= 1 and (not hasattr(torch, "xpu") or torch.xpu.device_count() <= 1)


def reset_run(run_dir: Path, wait: bool = False) -> None:
    """--force: clear a run's outputs, never under a worker that is still writing them (every
    step's lock is held while the outputs go)."""
    rundir.refuse_symlinks(run_dir)
    run = rundir.open_run(run_dir)
    with contextlib.ExitStack() as held:
        for link in run.chain():
            held.enter_context(lock.hold(run.path, f"--force reset of {run.name}", wait, step=link.name))
        rundir.reset(run.path)


def step_select(run: Run, launch: Launch = Launch(), echo=print) -> str:
    """Predict the dev set with every checkpoint not predicted yet (one LLaMA-Factory process for
    all of them), score each, choose the best, prune the others' resume state, link the choice."""
    if rundir.select_done(run):
        return "done already, skipped"
    if not rundir.train_done(run):
        raise StepFailed(f"{run.name}: cannot select a checkpoint: training has not finished")
    found = selection.checkpoints(run.train_dir)
    if not found:
        raise StepFailed(f"{run.name}: training kept no complete checkpoint to select from in {run.train_dir}")
    todo = [(step, path) for step, path in found if not selection.predicted(run, step)]
    if todo:
        _predict_checkpoints(run, todo, launch)
    scored = [selection.scores(run, step) for step, _path in found]
    metric = run.select["metric"]
    for entry in scored:
        echo(f"  select: checkpoint-{entry['step']} (epoch {entry.get('epoch')}): {metric} {entry.get(metric)} %")
    chosen = selection.choose(scored, metric)
    freed = selection.prune(found)
    selection.record(run, scored, chosen, freed, found[-1][0])
    rundir.record_step(run, "select", "done", run.step_log("select"))
    return (f"checkpoint-{chosen['step']} chosen ({metric} {chosen[metric]} % on {run.select['on']}; "
            f"{len(todo)} of {len(found)} predicted now; {freed / 2**20:.1f} MiB of optimizer state pruned)")


def _predict_checkpoints(run: Run, todo: list[tuple[int, Path]], launch: Launch) -> None:
    """One `tlf-lf select` process over the checkpoints, on one card; recorded like any step."""
    log = run.step_log("select")
    rundir.record_step(run, "select", "running", log)
    record_environment(run, "select")
    key = "model_name_or_path" if run.manifest.get("finetuning_type") == "full" else "adapter_name_or_path"
    command = [sys.executable, "-m", "telecom_lf.lf_entry", "select", str(run.config("select")), key]
    for step, path in todo:
        command += [str(path), str(selection.output_dir(run, step))]
    try:
        rc = run_child(command, log, echo=not launch.quiet, env=_one_card())
    except KeyboardInterrupt:
        rundir.record_step(run, "select", "interrupted", log)
        raise
    missing = [step for step, _path in todo if not selection.predicted(run, step)]
    if rc != 0 or missing:
        cause = failure_cause(log) or f"exit code {rc}; checkpoints without predictions: {missing}"
        rundir.record_step(run, "select", "failed", log, cause)
        raise StepFailed(f"{run.name}: select failed: {cause}; log: {log}")


def _one_card() -> dict[str, str]:
    """The dev predictions run in one process: on one card (several would mean DataParallel)."""
    env = {}
    for name in DEVICE_VARIABLES:
        if "," in os.environ.get(name, ""):
            env[name] = os.environ[name].split(",")[0]
    return env


def run_link(run: Run, args: tuple[str, ...], launch: Launch, echo=print) -> str:
    if args[0] == "train":
        return step_train(run, launch)
    if args[0] == "select":
        return step_select(run, launch, echo)
    if args[0] == "predict":
        return step_predict(run, args[1], launch)
    return step_score(run)
