"""Shared fixtures: offline Hugging Face, tiny local models, synthetic telecom data, and a
runner for the real ``llamafactory-cli``."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

# Nothing may be downloaded: every model and data set is built here.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "DISABLE_VERSION_CHECK": "0", "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true"}
os.environ.update(OFFLINE)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("TLF_TEST_CACHE", REPO / ".cache" / "tests"))


KINDS = ("unit", "integration", "slurm")


def pytest_collection_modifyitems(config, items):
    """Every test is of one kind: unit unless it says integration (the real LLaMA-Factory) or slurm
    (the real local Slurm), so ``-m unit`` never starts a training. A test marked as two kinds
    (a module's ``pytestmark`` and its own marker, say) is refused at collection."""
    both = []
    for item in items:
        kinds = {mark.name for mark in item.iter_markers() if mark.name in KINDS}
        if len(kinds) > 1:
            both.append(f"{item.nodeid}: {', '.join(sorted(kinds))}")
        elif not kinds:
            item.add_marker(pytest.mark.unit)
    if both:
        raise pytest.UsageError("tests marked as more than one kind (unit, integration, slurm are exclusive):\n  "
                                + "\n  ".join(both))


def patience(seconds: float) -> float:
    """How long to wait for real work (training, a Slurm job): ``seconds`` on a quiet machine,
    longer on a loaded one (the 1-minute load per core above 1: the suite ran 1.8x slower on a
    busy CI machine), times TLF_TEST_PATIENCE (default 1). A correct product must not fail a test
    because the machine is slow."""
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return seconds * max(1.0, load) * float(os.environ.get("TLF_TEST_PATIENCE", "1"))


def run_while_progressing(argv: list, stall: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run a long command (the demo, a whole local run) to its end, failing only when it stops
    making progress: no new output for ``patience(stall)`` seconds. Wall time alone says nothing
    about a correct product on a slow machine; silence for ten minutes does."""
    process = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    chunks = {process.stdout.fileno(): [], process.stderr.fileno(): []}
    open_fds = set(chunks)
    last = time.monotonic()
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], 5)
        for fd in ready:
            data = os.read(fd, 1 << 16)
            if data:
                chunks[fd].append(data)
                last = time.monotonic()
            else:
                open_fds.discard(fd)
        if time.monotonic() - last > patience(stall):
            process.kill()
            process.wait()
            output = b"".join(chunks[process.stderr.fileno()]).decode(errors="replace")[-3000:]
            command = " ".join(map(str, argv))
            raise AssertionError(f"{command}: no output for {patience(stall):.0f} s; stopped\n{output}")
    process.wait()
    return subprocess.CompletedProcess(argv, process.returncode, b"".join(chunks[process.stdout.fileno()]).decode(),
                                       b"".join(chunks[process.stderr.fileno()]).decode())


def tlf_bin() -> str:
    return str(BIN / "tlf")


def lf_cli() -> str:
    return str(BIN / "llamafactory-cli")


@pytest.fixture(scope="session")
def tiny_gemma() -> Path:
    from telecom_lf import tiny

    return tiny.cached(CACHE / "models", tiny.TinySpec(arch="gemma"))


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    from telecom_lf import tiny

    return tiny.cached(CACHE / "models", tiny.TinySpec(arch="llama"))


@pytest.fixture(scope="session")
def telecom_dir(tmp_path_factory) -> Path:
    """5000 synthetic rows imported and split as ``tlf data`` does (holdout mode)."""
    from telecom_lf import data

    return data.prepare_synthetic(tmp_path_factory.mktemp("telecom"))


def add_dataset(dataset_dir: Path, name: str, records: list[dict]) -> None:
    """Write ``records`` as an Alpaca file and register it (test-only data sets)."""
    from telecom_lf import data

    (dataset_dir / f"{name}.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    data.register(dataset_dir / data.DATA_INFO, {name: data.dataset_entry(f"{name}.json")})


def run_llamafactory(config: dict, workdir: Path, name: str = "cfg", timeout: int = 600,
                     check: bool = True) -> subprocess.CompletedProcess:
    """Write ``config`` as YAML and run the real ``llamafactory-cli train`` on it."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    env = {**os.environ, **OFFLINE}
    result = subprocess.run([lf_cli(), "train", str(path)], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=timeout)
    (workdir / f"{name}.log").write_text(result.stdout + result.stderr, encoding="utf-8")
    if check and result.returncode != 0:
        raise AssertionError(f"llamafactory-cli train {path} failed ({result.returncode}):\n"
                             + (result.stdout + result.stderr)[-4000:])
    return result


def run_manifest(**fields):
    """A run's manifest record with ``fields`` set and the rest as a minimal rendered run has them."""
    from telecom_lf import records

    base = {"predict_sets": [], "files": {}, "model": {"name": "m", "path": "/m"}, "dataset_dir": "/d"}
    return records.Manifest.from_json({**base, **fields}, "test manifest")


def exact_match(predictions: Path) -> float:
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line]
    return sum(r["predict"].strip() == r["label"].strip() for r in rows) / len(rows)


def spec_file(path: Path, model: Path, data_dir: Path, extra: str = "", train: str = "",
              sets=("telecom_test_100",)) -> Path:
    """A small spec on the local-test cluster profile (train_100, 1 epoch of rank 4); ``train``
    (", key: value, ...") adds or replaces training keys."""
    keys = {"lora_rank": 4, "num_train_epochs": 1.0, "cutoff_len": 128}
    keys.update(yaml.safe_load("{" + train.lstrip(", ") + "}") or {})
    path.write_text(f"""name: {path.stem}
model: {model}
data: {{dir: {data_dir}, train: telecom_train_100, predict: [{", ".join(sets)}]}}
template: default
cluster: local-test
train: {yaml.safe_dump(keys, default_flow_style=True, width=1000).strip()}
predict: {{max_samples: 4, max_new_tokens: 8, per_device_eval_batch_size: 4}}
{extra}""", encoding="utf-8")
    return path


class Terminal:
    """A program in a real pseudo-terminal: type keys, read the screen, wait for its exit."""

    def __init__(self, argv: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(argv[0], argv)
        self.screen = b""
        self.cursor = 0          # what the test has read so far

    def read_until(self, text: str, timeout: float = 180) -> str:
        """The screen from the cursor up to and including ``text``; the cursor moves past it."""
        end = time.monotonic() + patience(timeout)
        start = self.cursor
        while text.encode() not in self.screen[start:]:
            if time.monotonic() > end:
                raise AssertionError(
                    f"no {text!r} on the screen after {timeout} s:\n{self.screen.decode(errors='replace')[-3000:]}"
                )
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if ready:
                try:
                    self.screen += os.read(self.fd, 65536)
                except OSError:
                    break
        self.cursor = self.screen.index(text.encode(), start) + len(text.encode())
        return self.screen[start:self.cursor].decode(errors="replace")

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def exit_code(self, timeout: float = 60) -> int:
        end = time.monotonic() + patience(timeout)
        while time.monotonic() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            ready, _, _ = select.select([self.fd], [], [], 0.2)   # never block: a hung program fails the test
            if ready:
                try:
                    self.screen += os.read(self.fd, 65536)
                except OSError:
                    pass
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"the program did not exit; its screen:\n{self.screen.decode(errors='replace')[-2000:]}")

    def prompt_then_type(self, prompt: str, keys: str) -> None:
        """Wait for ``prompt``, then for the program to settle into reading (a terminal switched to
        raw mode by readline after the prompt drops a Ctrl-D typed in between), then type."""
        self.read_until(prompt)
        time.sleep(0.5)
        self.type(keys)
