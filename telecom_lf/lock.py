"""One worker per run: an exclusive lock on a directory, held while a process works in it.

Two ``tlf run`` of one spec, a local run and a Slurm job, or a requeued job and a manual
``sbatch`` would otherwise train one run into one directory twice (LLaMA-Factory appends to
``trainer_log.jsonl`` and both write the same checkpoints). Every step, ``--force``'s reset and
the report take ``<dir>/.tlf-lock`` with ``flock``; a second worker is refused at once (or waits,
when asked), told who holds it. The kernel drops the lock when its holder dies, so a lock is
never "stale"; the holder's description is written into the file and cleared on a clean
release, so a non-empty file found on taking the lock means the last holder died, and is said.
``flock`` is local to a machine unless the file system forwards it: NFSv4 does (as a POSIX
lock, through the server); Lustre only when mounted with ``-o flock``; see the README.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import TlfError
from .fsutil import default_mode
from .rundir import slurm_job_id

LOCK_FILE = ".tlf-lock"     # a directory's lock; a run's steps each have their own (lock_file)


def lock_file(step: str | None = None) -> str:
    """A run locks per step, so that its predict jobs (all after train) may run side by side
    while no step ever runs twice at once; the report directory has one lock."""
    return f"{LOCK_FILE}-{step}" if step else LOCK_FILE


class Busy(TlfError):
    """Another process works on this directory."""


def _me(what: str) -> dict:
    return {"what": what, "host": platform.node(), "pid": os.getpid(), "job_id": slurm_job_id(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def describe(holder: dict | None) -> str:
    if not holder:
        return "another process (it wrote no description yet)"
    job = f", Slurm job {holder['job_id']}" if holder.get("job_id") else ""
    return f"{holder.get('what', '?')} (host {holder.get('host', '?')}, pid {holder.get('pid', '?')}{job}, " \
           f"since {holder.get('since', '?')})"


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    blob = os.read(fd, 1 << 16)
    try:
        holder = json.loads(blob) if blob.strip() else None
    except ValueError:
        return {"what": "an unreadable holder"}
    return holder if isinstance(holder, dict) else None


def _write(fd: int, holder: dict | None) -> None:
    os.ftruncate(fd, 0)
    if holder:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))


def _acquire(fd: int, directory: Path, wait: bool, echo) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        holder = describe(_read(fd))
        if not wait:
            raise Busy(f"{directory}: {holder} is working on it; let it finish (`tlf status` shows it), "
                       "or pass --wait to queue behind it") from None
        echo(f"tlf: {directory.name}: waiting for {holder}")
    except OSError as error:
        _unsupported(directory, error)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as error:
        _unsupported(directory, error)


def _unsupported(directory: Path, error: OSError):
    if error.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
        raise TlfError(f"{directory}: the file system refuses file locks ({error.strerror}); tlf needs flock "
                       "to keep two workers off one run (Lustre: mount with -o flock)") from None
    raise error


@contextmanager
def hold(directory: Path, what: str, wait: bool = False, echo=None, step: str | None = None):
    """Hold ``directory``'s lock (or one step's) for the ``with`` block; ``what`` says what the
    holder does."""
    echo = echo or (lambda message: print(message, file=sys.stderr))
    directory = Path(directory)
    fd = os.open(directory / lock_file(step), os.O_RDWR | os.O_CREAT, default_mode())
    try:
        _acquire(fd, directory, wait, echo)
        previous = _read(fd)
        if previous:
            echo(f"tlf: {directory.name}: taking over from {describe(previous)}, which ended without "
                 "releasing its lock (it was killed or its node failed)")
        _write(fd, _me(what))
        try:
            yield
        finally:
            _write(fd, None)    # empty: released cleanly
    finally:
        os.close(fd)            # closing drops the flock


@contextmanager
def transient(target: Path, timeout: float = 60.0):
    """An exclusive lock for rewriting ``target`` (another tool's file, e.g. LLaMA-Factory's
    dataset_info.json) that leaves nothing behind: ``.<name>.tlf-lock`` beside it exists only
    while held. Unlinking a lock file is safe because a taker checks, once it holds the lock,
    that the path still names the file it locked, and otherwise tries again."""
    path = Path(target).parent / f".{Path(target).name}.tlf-lock"
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, default_mode())
        try:
            _lock_until(fd, path, deadline)
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)        # the holder before us removed it: take the new one
    try:
        yield
    finally:
        with suppress(OSError):
            path.unlink()
        os.close(fd)


def _lock_until(fd: int, path: Path, deadline: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise Busy(f"{path}: another tlf process has held this lock for a minute; try again") from None
            time.sleep(0.05)
        except OSError as error:
            _unsupported(path.parent, error)
