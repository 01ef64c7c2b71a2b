"""The command line itself: help, version, click's errors."""

from __future__ import annotations

import subprocess

import pytest

from conftest import tlf_bin
from telecom_lf import __version__

pytestmark = pytest.mark.unit
COMMANDS = ["data", "demo", "diff", "model", "render", "report", "run", "score", "status", "step", "submit"]


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([tlf_bin(), *args], capture_output=True, text=True)


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == COMMANDS
    data = run("data", "--help").stdout
    assert all(c in data for c in ("synth", "import", "split", "check", "register"))


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"tlf, version {__version__}"


@pytest.mark.parametrize("args,message", [(["nosuch"], "No such command 'nosuch'"),
                                          (["render", "--nosuch"], "No such option '--nosuch'"),
                                          (["data", "split"], "Missing argument 'IMPORTED'")])
def test_unknown_commands_and_options_exit_2(args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr
