"""The only layer that starts processes: the steps of one run, local chains, Slurm submission.

Every launch path goes through ``step``: ``job.sbatch`` and ``array.sbatch`` call
``python -m telecom_lf.cli step RUN_DIR ...`` and ``tlf run`` calls the same functions, so
blog-era templates, environment records and skip-if-done behave the same everywhere.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import lfargs, render, score, slurm
from .errors import TlfError
from .fsutil import atomic_write

SCORES = "scores.json"
JOBS = "jobs.json"
SMI_TOOLS = ("nvidia-smi", "rocm-smi", "hy-smi")
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json",
                "adapter_model.bin", "pytorch_model.bin")


class StepFailed(TlfError):
    pass


@dataclass(frozen=True)
class RunDir:
    path: Path
    manifest: dict
    predict_sets: list[str]

    @property
    def trains(self) -> bool:
        return (self.path / render.TRAIN_FILE).exists()


def open_run(run_dir: Path) -> RunDir:
    run_dir = Path(run_dir).resolve()
    manifest_path = run_dir / render.MANIFEST
    if not manifest_path.exists():
        raise TlfError(f"{run_dir}: not a rendered run (no {render.MANIFEST}); run `tlf render` first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    sets = [name[len("predict-"):-len(".yaml")] for name in sorted(manifest["files"])
            if name.startswith("predict-") and name.endswith(".yaml")]
    return RunDir(run_dir, manifest, sets)


# ---------------------------------------------------------------- what is done


def train_done(run: RunDir) -> bool:
    out = run.path / render.TRAIN_DIR
    weights = any((out / name).exists() for name in WEIGHT_FILES)
    return (out / "train_results.json").exists() and weights


def predict_done(run: RunDir, dataset: str) -> bool:
    out = run.path / render.predict_dir(dataset)
    return (out / "generated_predictions.jsonl").exists() and (out / "predict_results.json").exists()


def score_done(run: RunDir) -> bool:
    """Scores exist for every predict set and are newer than every prediction file."""
    path = run.path / SCORES
    if not path.exists():
        return False
    scored = json.loads(path.read_text(encoding="utf-8")).get("sets", {})
    predictions = [run.path / render.predict_dir(s) / "generated_predictions.jsonl" for s in run.predict_sets]
    newest = max((p.stat().st_mtime_ns for p in predictions if p.exists()), default=0)
    return all(s in scored for s in run.predict_sets) and path.stat().st_mtime_ns >= newest


# ---------------------------------------------------------------- environment record


def record_environment(run: RunDir, step: str) -> Path:
    """SLURM_* variables, visible devices, *-smi output and package versions, at step start."""
    env = os.environ
    record = {
        "step": step,
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "versions": lfargs.installed_versions(),
        "slurm": {k: v for k, v in sorted(env.items()) if k.startswith("SLURM_")},
        "visible_devices": {k: env.get(k) for k in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
                                                    "ROCR_VISIBLE_DEVICES") if k in env},
        "smi": {},
    }
    for tool in SMI_TOOLS:
        if shutil.which(tool):
            try:
                done = subprocess.run([tool], capture_output=True, text=True, timeout=30)
                record["smi"][tool] = (done.stdout + done.stderr)[-8000:]
            except (OSError, subprocess.TimeoutExpired) as error:
                record["smi"][tool] = f"failed: {error}"
    job = env.get("SLURM_JOB_ID", "local")
    attempt = env.get("SLURM_RESTART_COUNT", "0")
    path = run.path / "environment" / f"{step}-{job}-{attempt}-{os.getpid()}.json"
    atomic_write(path, json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    return path


# ---------------------------------------------------------------- child processes


def _progress_line(log: Path, label: str) -> str | None:
    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "percentage" in entry:
            loss = f" loss {entry['loss']:.4f}" if isinstance(entry.get("loss"), (int, float)) else ""
            return (f"  {label}: {entry['percentage']:5.1f}% ({entry['current_steps']}/{entry['total_steps']} steps)"
                    f"{loss}, elapsed {entry.get('elapsed_time', '?')}, ETA {entry.get('remaining_time', '?')}")
    return None


def _default_stop_signals() -> None:
    """In the child, before exec. A background job of a non-interactive shell (`tlf run ... &`
    in a script, some CI runners) starts with SIGINT ignored; inherited, that would make
    LLaMA-Factory train on through the Ctrl-C tlf forwards to it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_child(command: list[str], log_file: Path | None, progress: tuple[Path, str] | None = None) -> int:
    """Run one LLaMA-Factory process; Ctrl-C or SIGTERM stops it cleanly and is re-raised."""
    if log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_file, "ab") if log_file else None
    # RECORD_VRAM: LLaMA-Factory logs peak memory into trainer_log.jsonl only when asked.
    env = {**os.environ, "RECORD_VRAM": os.environ.get("RECORD_VRAM", "1")}
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stream, env=env,
                             stderr=subprocess.STDOUT if stream else None, start_new_session=True,
                             preexec_fn=_default_stop_signals)
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
                rc = child.wait(timeout=2)
                break
            except subprocess.TimeoutExpired:
                if received and len(received) > 1:
                    os.killpg(child.pid, signal.SIGKILL)
                if progress:
                    line = _progress_line(*progress)
                    if line and line != last:
                        print(line, file=sys.stderr, flush=True)
                        last = line
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if stream:
            stream.close()
    if received:
        raise KeyboardInterrupt(f"stopped by signal {received[0]}; the run resumes where it was")
    return rc


def _lf_command(config: Path, *mode: str) -> list[str]:
    """``tlf-lf [slurm-node] train CONFIG`` with this interpreter."""
    return [sys.executable, "-m", "telecom_lf.lf_entry", *mode, "train", str(config)]


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
            (checkpoint / name).exists() for name in WEIGHT_FILES)
        if not complete:
            target = checkpoint.with_name(f"{checkpoint.name}.incomplete")
            suffix = 1
            while target.exists():
                target = checkpoint.with_name(f"{checkpoint.name}.incomplete{suffix}")
                suffix += 1
            checkpoint.rename(target)
            moved.append(target)
    return moved


def step_train(run: RunDir, quiet: bool = False) -> str:
    if not run.trains:
        return "no training (probe run)"
    if train_done(run):
        return "done already, skipped"
    for moved in set_aside_incomplete_checkpoints(run.path / render.TRAIN_DIR):
        print(f"tlf: {moved.name}: set aside an incomplete checkpoint (the job was stopped while saving)",
              file=sys.stderr)
    record_environment(run, "train")
    command = _lf_command(run.path / render.TRAIN_FILE)
    if os.environ.get("TLF_SRUN_TRAIN") == "1":
        # One task per node; each runs LLaMA-Factory's torchrun launcher for its node's cards.
        command = ["srun", f"--nodes={os.environ.get('SLURM_NNODES', '1')}", "--ntasks-per-node=1",
                   "--export=ALL", *_lf_command(run.path / render.TRAIN_FILE, "slurm-node")]
    log = run.path / slurm.LOGS / "train.log" if quiet else None
    progress = (run.path / render.TRAIN_DIR / "trainer_log.jsonl", "train") if quiet else None
    rc = run_child(command, log, progress)
    if rc != 0 or not train_done(run):
        where = f"; log: {log}" if log else ""
        raise StepFailed(f"{run.path.name}: training failed (exit {rc}){where}")
    return "trained"


def step_predict(run: RunDir, dataset: str, quiet: bool = False) -> str:
    if dataset not in run.predict_sets:
        raise TlfError(f"{run.path.name}: no predict set {dataset!r}; has {run.predict_sets}")
    if predict_done(run, dataset):
        return "done already, skipped"
    if run.trains and not train_done(run):
        raise StepFailed(f"{run.path.name}: cannot predict {dataset}: training has not finished")
    record_environment(run, f"predict-{dataset}")
    log = run.path / slurm.LOGS / f"predict-{dataset}.log" if quiet else None
    rc = run_child(_lf_command(run.path / render.predict_file(dataset)), log)
    if rc != 0 or not predict_done(run, dataset):
        raise StepFailed(f"{run.path.name}: predict on {dataset} failed (exit {rc})"
                         + (f"; log: {log}" if log else ""))
    return "predicted"


def step_score(run: RunDir) -> str:
    """Score every predict set into ``scores.json`` (written whole, atomically)."""
    if score_done(run):
        return "done already, skipped"
    sets = {}
    similarity = score.Similarity()
    split_manifest = _split_manifest_of(run)
    for dataset in run.predict_sets:
        if not predict_done(run, dataset):
            raise StepFailed(f"{run.path.name}: cannot score {dataset}: no predictions yet")
        predictions = run.path / render.predict_dir(dataset) / "generated_predictions.jsonl"
        rows = score.read_predictions(predictions).rows
        categories = None
        if split_manifest is not None:
            try:
                categories = score.categories_for(split_manifest, dataset)
            except TlfError:
                categories = None
        sets[dataset] = score.score_rows(rows, categories=categories, similarity=similarity)
    atomic_write(run.path / SCORES, json.dumps({"run": run.path.name, "sets": sets}, ensure_ascii=False,
                                               indent=2) + "\n")
    return f"scored {len(sets)} set(s)"


def _split_manifest_of(run: RunDir) -> Path | None:
    for name in (render.TRAIN_FILE, *(render.predict_file(s) for s in run.predict_sets)):
        path = run.path / name
        if path.exists():
            import yaml

            config = yaml.safe_load(path.read_text(encoding="utf-8"))
            candidate = Path(config["dataset_dir"]) / "split_manifest.json"
            return candidate if candidate.exists() else None
    return None


def step(run_dir: Path, what: list[str], quiet: bool = False, echo=print) -> None:
    run = open_run(run_dir)
    if not what or what == ["all"]:
        echo(f"{run.path.name}: train: {step_train(run, quiet)}")
        for dataset in run.predict_sets:
            echo(f"{run.path.name}: predict {dataset}: {step_predict(run, dataset, quiet)}")
        echo(f"{run.path.name}: score: {step_score(run)}")
    elif what[0] == "train" and len(what) == 1:
        echo(f"{run.path.name}: train: {step_train(run, quiet)}")
    elif what[0] == "predict" and len(what) == 2:
        echo(f"{run.path.name}: predict {what[1]}: {step_predict(run, what[1], quiet)}")
    elif what[0] == "score" and len(what) == 1:
        echo(f"{run.path.name}: score: {step_score(run)}")
    else:
        raise TlfError(f"unknown step {' '.join(what)!r}; expected: all | train | predict SET | score")


def reset_run(run_dir: Path) -> None:
    """--force: remove what LLaMA-Factory and scoring wrote, keep the rendered files."""
    for child in [run_dir / render.TRAIN_DIR, *run_dir.glob("predict-*/")]:
        if child.is_dir():
            shutil.rmtree(child)
    (run_dir / SCORES).unlink(missing_ok=True)


# ---------------------------------------------------------------- Slurm


def _sbatch(args: list[str]) -> str:
    done = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise StepFailed(f"sbatch {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip().split(";")[0]


def test_only(scripts: list[Path]) -> list[tuple[Path, int, str]]:
    """``sbatch --test-only`` on each script: (script, exit code, Slurm's message)."""
    results = []
    for script in scripts:
        done = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True)
        results.append((script, done.returncode, (done.stderr or done.stdout).strip()))
    return results


def submit(root: Path, run_names: list[str], predict_sets: list[str], as_array: bool) -> dict:
    """Submit and return at once. Chains use afterok; a failed parent cancels its children
    (``--kill-on-invalid-dep=yes``: Slurm would otherwise keep them PENDING forever)."""
    if not shutil.which("sbatch"):
        raise TlfError("sbatch is not on PATH: run `tlf submit` on a Slurm login node, or `tlf run` locally")
    submitted: list[str] = []
    record: dict = {"submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": {}}
    try:
        if as_array:
            array = _sbatch([str(root / slurm.ARRAY_SCRIPT)])
            submitted.append(array)
            record["array"] = array
            record["runs"] = {name: {"array_task": f"{array}_{i}"} for i, name in enumerate(run_names)}
            last = [array]
        else:
            last = []
            for name in run_names:
                script = str(root / name / slurm.JOB_SCRIPT)
                ids = {"train": _sbatch([script, "train"])}
                submitted.append(ids["train"])
                for dataset in predict_sets:
                    ids[f"predict-{dataset}"] = _sbatch(
                        [f"--dependency=afterok:{ids['train']}", "--kill-on-invalid-dep=yes", script, "predict", dataset])
                    submitted.append(ids[f"predict-{dataset}"])
                parents = [v for k, v in ids.items() if k.startswith("predict-")] or [ids["train"]]
                ids["score"] = _sbatch([f"--dependency=afterok:{':'.join(parents)}", "--kill-on-invalid-dep=yes",
                                        script, "score"])
                submitted.append(ids["score"])
                record["runs"][name] = ids
                last.append(ids["score"])
        record["report"] = _sbatch([f"--dependency=afterany:{':'.join(last)}", str(root / slurm.REPORT_SCRIPT)])
        submitted.append(record["report"])
    except StepFailed as error:
        if submitted:
            subprocess.run(["scancel", *submitted], capture_output=True)
        raise StepFailed(f"{error}\ncancelled the {len(submitted)} job(s) already submitted: "
                         f"{' '.join(submitted) or 'none'}") from error
    history = json.loads((root / JOBS).read_text(encoding="utf-8")) if (root / JOBS).exists() else []
    atomic_write(root / JOBS, json.dumps([*history, record], indent=2) + "\n")
    return record


def job_states(job_ids: list[str]) -> dict[str, str]:
    """State per job id from squeue, then sacct, then scontrol (whatever the site has)."""
    states: dict[str, str] = {}
    if not job_ids or not shutil.which("squeue"):
        return states
    done = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        job, _, state = line.partition(" ")
        states[job] = state
    missing = [j for j in job_ids if j not in states]
    if missing and shutil.which("sacct"):
        done = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)],
                              capture_output=True, text=True)
        for line in done.stdout.splitlines():
            job, _, state = line.partition("|")
            states.setdefault(job, state.split()[0] if state else "?")
    for job in [j for j in job_ids if j not in states]:
        done = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True)
        for token in done.stdout.split():
            if token.startswith("JobState="):
                states[job] = token.split("=", 1)[1]
    return states
