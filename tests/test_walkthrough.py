"""The README's "Your own data in 15 minutes", followed command by command as a new user would:
the block between its walkthrough markers runs line by line in an empty directory, with only the
venv's bin directory added to PATH. A command that fails, or that the README no longer holds,
fails this test."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, patience

pytestmark = pytest.mark.integration


def walkthrough() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- walkthrough:start -->\n```bash\n(.*?)```\n<!-- walkthrough:end -->", readme, re.S)
    assert found, "README.md lost its walkthrough block"
    return found.group(1)


def test_the_readme_walkthrough_runs_as_written(tmp_path):
    script = walkthrough()
    commands = [line for line in script.splitlines() if line.startswith("tlf ") or " | tlf " in line]
    assert [c.split()[1] for c in commands if c.startswith("tlf ")][:5] == ["data", "data", "data", "data", "model"]
    log = tmp_path / "walkthrough.log"
    env = {**os.environ, "PATH": f"{Path(REPO / '.venv' / 'bin')}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    # -x: the log names each command as it runs, so a failure says which README line broke.
    done = subprocess.run(["bash", "-euxo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=patience(1500))
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "read mine.csv as UTF-8 (detected)" in done.stdout
    assert (tmp_path / "runs" / "mine" / "report" / "report.html").is_file()
    assert "2 run(s): 2 done" in done.stdout                      # tlf status: every run done (and exit 0)
    assert "Model:" in done.stdout                                 # chat answered the piped question
    for run in ("r8", "r16"):
        assert (tmp_path / "runs" / "mine" / run / "selection.json").is_file()   # select: chose a checkpoint
