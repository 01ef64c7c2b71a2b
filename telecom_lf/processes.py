"""The processes tlf starts for LLaMA-Factory, and nothing else: one child per step (its output to
the step's log, Ctrl-C and SIGTERM forwarded to it), the long-lived worker that ``tlf run`` and
``tlf demo`` send their configs to, the progress line read from LLaMA-Factory's trainer log, and
the line of a failed process's log that says why it stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from . import rundir

DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
# The line of a LLaMA-Factory log that says why it stopped: an exception's own line.
WRAPPER_ERRORS = ("CalledProcessError", "ChildFailedError")
ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit)\b.*")


@dataclass(frozen=True)
class Launch:
    """How a step starts LLaMA-Factory: here, or one srun task per node (multi-card Slurm jobs)."""
    srun_nodes: int | None = None
    nproc_per_node: int = 1
    quiet: bool = False          # tlf run: progress lines only; the log goes to logs/<step>.log
    # Fuse a run's train and predicts into this worker's process (tlf run, tlf demo), where they
    # can share one (at most one device, no srun); None: one process per step (Slurm jobs).
    worker: Worker | None = None

    @property
    def fuses(self) -> bool:
        """A worker was given and the step runs here (not under srun). Whether there is at most one
        device is asked last, by the caller: answering it may import torch (seconds)."""
        return self.worker is not None and not self.srun_nodes



@dataclass(frozen=True)
class Progress:
    """Where a training process logs its steps, and what of that log is this process's."""
    log: Path
    label: str
    offset: int = 0          # bytes an earlier segment (a resumed run's first job) wrote to the log
    start_step: int = 0      # the checkpoint step this process resumed from

    @classmethod
    def resuming(cls, log: Path, label: str, start_step: int = 0) -> Progress:
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


def _child_env(share_base: bool = False) -> dict[str, str]:
    # RECORD_VRAM: LLaMA-Factory logs peak memory into trainer_log.jsonl only when asked.
    env = {**os.environ, "RECORD_VRAM": os.environ.get("RECORD_VRAM", "1")}
    env.pop(rundir.SHARE_BASE_ENV, None)
    return {**env, rundir.SHARE_BASE_ENV: "1"} if share_base else env


class Worker:
    """One long-lived ``tlf-lf serve`` process: LLaMA-Factory configs run in it one request after
    another, so ``tlf run`` (and ``tlf demo``) import Python, torch and LLaMA-Factory once (~10 s
    a process on a CPU) instead of once per run. Ctrl-C, SIGTERM or a failed request end it; the
    next request starts a fresh one. Its owner holds it as a context manager
    (``with Worker() as worker:``), which ends the process on the way out. ``share_base``: its
    predicts read a base model from disk once and work on in-memory copies (predict_mode: shared)."""

    def __init__(self, share_base: bool = False) -> None:
        self.child: subprocess.Popen | None = None
        self.replies = None
        self.share_base = share_base

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

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
                stdout=log, stderr=subprocess.STDOUT, env=_child_env(self.share_base), pass_fds=(write_end,),
                start_new_session=True, preexec_fn=_default_stop_signals)
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


def one_device_at_most() -> bool:
    """At most one visible accelerator (a CPU machine counts): what one process trains on alone."""
    for name in DEVICE_VARIABLES:
        if name in os.environ:
            return len([d for d in os.environ[name].split(",") if d.strip()]) <= 1
    import torch

    return torch.cuda.device_count() <= 1 and (not hasattr(torch, "xpu") or torch.xpu.device_count() <= 1)


def one_card() -> dict[str, str]:
    """The dev predictions run in one process: on one card (several would mean DataParallel)."""
    env = {}
    for name in DEVICE_VARIABLES:
        if "," in os.environ.get(name, ""):
            env[name] = os.environ[name].split(",")[0]
    return env
