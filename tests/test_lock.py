"""One worker per run: the lock itself, and the checks a step makes before it works
(rendered files unchanged, no symlinked directories)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import spec_file, tlf_bin

from telecom_lf import lock
from telecom_lf.errors import TlfError

pytestmark = pytest.mark.unit
HOLD = """
import sys, time
from telecom_lf import lock
with lock.hold(__import__("pathlib").Path(sys.argv[1]), "a test holder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(directory: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), str(seconds)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_worker_is_refused_naming_the_holder(tmp_path):
    holder = _holder(tmp_path, 30)
    try:
        with pytest.raises(lock.Busy, match=rf"a test holder \(host .*, pid {holder.pid}"):
            with lock.hold(tmp_path, "me"):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_wait_queues_behind_the_holder(tmp_path):
    holder = _holder(tmp_path, 2)
    said = []
    started = time.monotonic()
    with lock.hold(tmp_path, "me", wait=True, echo=said.append):
        assert time.monotonic() - started > 1
    assert holder.wait(timeout=10) == 0
    assert any("waiting for a test holder" in line for line in said)
    assert not any("taking over" in line for line in said)       # the holder released it cleanly


def test_a_dead_holders_lock_is_taken_over_and_said(tmp_path):
    holder = _holder(tmp_path, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    said = []
    with lock.hold(tmp_path, "me", echo=said.append):
        pass
    assert any("taking over from a test holder" in line and str(holder.pid) in line for line in said), said
    said.clear()
    with lock.hold(tmp_path, "me again", echo=said.append):
        pass
    assert said == []


def _rendered(tmp_path, tiny_gemma, telecom_dir) -> Path:
    spec = spec_file(tmp_path / "locked.yaml", tiny_gemma, telecom_dir)
    subprocess.run([tlf_bin(), "render", spec, "--out", tmp_path / "runs"], check=True, capture_output=True)
    return tmp_path / "runs" / "locked" / "locked"


def test_a_step_refuses_a_rendered_file_edited_after_rendering(tmp_path, tiny_gemma, telecom_dir):
    run_dir = _rendered(tmp_path, tiny_gemma, telecom_dir)
    train = run_dir / "train.yaml"
    train.write_text(train.read_text().replace("lora_rank: 4", "lora_rank: 64"))
    result = subprocess.run([tlf_bin(), "step", run_dir, "train"], capture_output=True, text=True)
    assert result.returncode == 2 and "train.yaml changed since rendering" in result.stderr
    assert not (run_dir / "train").exists() and not (run_dir / "steps").exists()


def test_a_symlinked_run_directory_is_refused(tmp_path, tiny_gemma, telecom_dir):
    run_dir = _rendered(tmp_path, tiny_gemma, telecom_dir)
    link = tmp_path / "runs" / "locked" / "alias"
    link.symlink_to(run_dir)
    result = subprocess.run([tlf_bin(), "step", link, "train"], capture_output=True, text=True)
    assert result.returncode == 2 and "is a symbolic link" in result.stderr
    with pytest.raises(TlfError, match="symbolic link"):
        from telecom_lf import rundir
        rundir.refuse_symlinks(link)
