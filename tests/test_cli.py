"""The command line itself: help, version, click's errors."""

from __future__ import annotations

import subprocess

import pytest
from conftest import tlf_bin

from telecom_lf import __version__

pytestmark = pytest.mark.unit
COMMANDS = [
    "chat",
    "data",
    "demo",
    "diff",
    "export",
    "model",
    "predict-shared",
    "probe",
    "render",
    "report",
    "run",
    "score",
    "spec",
    "status",
    "step",
    "submit",
]


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([tlf_bin(), *args], capture_output=True, text=True)


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == COMMANDS
    # each command's whole first docstring line, on one line (click cut them at 45 characters)
    assert "Render SPEC into LLaMA-Factory YAMLs, sbatch files and manifests, one directory per run." in result.stdout
    assert "..." not in result.stdout.split("Commands:")[1]
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


def test_tlf_lf_help_prints_usage():
    import sys
    from pathlib import Path

    result = subprocess.run([str(Path(sys.executable).parent / "tlf-lf"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: tlf-lf COMMAND" in result.stdout and "tlf_blog_default" in result.stdout


def test_spec_help_keys_lists_the_schema_and_the_readme_table_is_generated_from_it():
    from conftest import REPO

    from telecom_lf import spec

    result = run("spec", "--help-keys")
    assert result.returncode == 0
    for key in ("data.predict", "sweep.vary", "micro_batch", "slurm.gpu_memory_gb", "decoding"):
        assert any(line.split()[0] == key for line in result.stdout.splitlines()), key
    markdown = run("spec", "--help-keys", "--markdown").stdout
    assert markdown == spec.schema_markdown()
    assert markdown in (REPO / "README.md").read_text(encoding="utf-8"), \
        "README's key table differs from `tlf spec --help-keys --markdown`: paste the new one"


def test_printed_next_commands_carry_out_quote_paths_and_survive_a_leading_dash(tmp_path):
    from pathlib import Path

    from telecom_lf.cli import next_command

    assert next_command("run", Path("my specs/a.yaml"), Path("/r o")) == "tlf run --out '/r o' 'my specs/a.yaml'"
    assert next_command("status", Path("-x.yaml"), Path("runs")) == "tlf status --out runs -- -x.yaml"
    # as printed, the line parses: the spec is the argument, not an option
    result = run("spec", "--", "-x.yaml")
    assert result.returncode == 2 and "-x.yaml" in result.stderr and "No such option" not in result.stderr
