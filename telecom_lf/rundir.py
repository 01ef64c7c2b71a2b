"""The run-directory contract: every name, every state and the manifest of a run and an experiment.

Every other module asks this one where a run's files are and whether a step is done, so
"done" has one definition. Layout::

    <out>/<experiment>/                 experiment.json, jobs.json, array.sbatch, report.sbatch,
                                        submit.sh, logs/, report/
    <out>/<experiment>/<run>/           manifest.json, train.yaml, predict-<SET>.yaml, datasets.json,
                                        job.sbatch, logs/, environment/, steps/, scores.json
    <out>/<experiment>/<run>/train/     LLaMA-Factory's output_dir (adapter, checkpoints, logs)
    <out>/<experiment>/<run>/predict-<SET>/   generated_predictions.jsonl, predict_results.json
    with select: select-<DEV>.yaml, select/checkpoint-<N>/ (the dev set's predictions per
                 checkpoint), selection.json, selected -> train/checkpoint-<N> (what predict loads)

A run's states, in order: rendered -> training -> trained -> [selected] -> predicted -> done
(every predict set scored); or failed, with the cause a step recorded in ``steps/<step>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

from . import guard, inputs
from .errors import TlfError
from .fsutil import atomic_write, sha256_file
from .records import ExperimentRecord, Manifest

TRAIN_FILE = "train.yaml"
TRAIN_DIR = "train"
MANIFEST = "manifest.json"
EXPERIMENT = "experiment.json"
SCORES = "scores.json"
JOBS = "jobs.json"
LOGS = "logs"
STEPS = "steps"
ENVIRONMENT = "environment"
REPORT_DIR = "report"
JOB_SCRIPT = "job.sbatch"
ARRAY_SCRIPT = "array.sbatch"
REPORT_SCRIPT = "report.sbatch"
PREDICT_SCRIPT = "predict.sbatch"  # a shared sweep on Slurm: every run's predicts in one job after the array
SUBMIT_SCRIPT = "submit.sh"
DATASETS_FILE = "datasets.json"
SELECT_DIR = "select"            # select/<checkpoint-N>/: the dev set's predictions per checkpoint
SELECTED = "selected"            # a link to the chosen train/checkpoint-N: what the predict steps load
SELECTION = "selection.json"     # every checkpoint's dev score and the choice
TRACKING = "tracking.json"       # tracking: what the run logs to which tracker (rendered)
TRACKER_RUN = "mlflow-run.json"  # tracking: mlflow: the run's MLflow run id (made by the first process needing it)
MLFLOW_STORE = "mlflow.db"       # tracking: mlflow: the experiment's SQLite store ...
MLFLOW_ARTIFACTS = "mlartifacts"  # ... and its artifacts
TENSORBOARD = "tensorboard"      # tracking: tensorboard: the experiment's log directory, a subdirectory per run
# LLaMA-Factory's (and transformers') artefact names: every other module asks here.
PREDICTIONS = "generated_predictions.jsonl"
PREDICT_RESULTS = "predict_results.json"
TRAIN_RESULTS = "train_results.json"
TRAINER_STATE = "trainer_state.json"      # written last into a checkpoint: a checkpoint without it is torn
TRAINER_LOG = "trainer_log.jsonl"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_CONFIG = "config.json"
DATASET_INFO = "dataset_info.json"
SPLIT_MANIFEST = "split_manifest.json"    # what `tlf data split` writes beside its subsets
WEIGHT_FILES = (ADAPTER_WEIGHTS, "model.safetensors", "model.safetensors.index.json",
                "adapter_model.bin", "pytorch_model.bin")
CHECKPOINT_NAME = re.compile(r"^checkpoint-([0-9]+)$")
# The fine-tuning types whose output is an adapter on the base; every other type (full, freeze)
# saves a whole model, loaded as model_name_or_path.
ADAPTER_TYPES = ("lora", "oft")
# What an experiment directory holds beside its runs: no run may be named like one of them.
EXPERIMENT_ENTRIES = (EXPERIMENT, JOBS, LOGS, REPORT_DIR, ARRAY_SCRIPT, REPORT_SCRIPT, SUBMIT_SCRIPT, PREDICT_SCRIPT,
                      TRACKING, MLFLOW_STORE, MLFLOW_ARTIFACTS, TENSORBOARD)
JOB_ID = re.compile(r"^[0-9]+(?:_[0-9]+)?$")    # what sbatch returns, or <array>_<task>
STATES = ("rendered", "training", "trained", "selected", "predicted", "done", "failed", "interrupted")
# What `tlf status` says (STATES, and what Slurm's job states add: scheduler.run_word).
STATE_LEGEND = (
    "rendered: nothing ran yet; queued: a job of the run waits in Slurm's queue; training: its training step "
    "is running; trained / selected / predicted: those steps are done; done: scored; requeued: Slurm requeued "
    "its job (preemption or time limit) and it resumes from the last checkpoint; failed: a step failed (its "
    "cause and log are shown) or its job failed before the step started (the job's .err is shown); cancelled: "
    "its job was cancelled (scancel); timed-out: its job hit the time limit; preempted: its job was preempted "
    "and not requeued; interrupted: its step stopped (Ctrl-C, a killed process or job) and nothing runs it now; "
    "not rendered: no run directory under --out.")


def predict_file(dataset: str) -> str:
    return f"predict-{dataset}.yaml"


def predict_dir(dataset: str) -> str:
    return f"predict-{dataset}"


def select_file(dataset: str) -> str:
    return f"select-{dataset}.yaml"


# ---------------------------------------------------------------- the chain of steps


@dataclass(frozen=True)
class Link:
    """One step of a run's chain: ``tlf step RUN_DIR *args``, after the links named in ``after``."""
    name: str
    args: tuple[str, ...]
    after: tuple[str, ...] = ()


TRAINING = "training"   # `tlf step RUN training`: the links before the predicts (train, select)


def chain(trains: bool, predict_sets: list[str], selects: bool = False) -> list[Link]:
    """train -> [select] -> predict(s) -> score: the one description both launchers (and submit.sh)
    walk. select scores every checkpoint on the dev set; the predict steps then load its choice."""
    links = [Link("train", ("train",))] if trains else []
    first = ("train",) if trains else ()
    if trains and selects:
        links.append(Link("select", ("select",), first))
        first = ("select",)
    links += [Link(f"predict-{s}", ("predict", s), first) for s in predict_sets]
    links.append(Link("score", ("score",), tuple(f"predict-{s}" for s in predict_sets) or first))
    return links


# ---------------------------------------------------------------- experiments and runs


@dataclass(frozen=True)
class Experiment:
    """``<out>/<experiment>/``: the runs of one spec."""
    root: Path

    @classmethod
    def at(cls, out: Path, name: str) -> Experiment:
        guard.text(str(out), "--out", "path")
        if Path(out).exists() and not Path(out).is_dir():
            raise TlfError(f"--out {out}: is a file; expected the runs directory")
        return cls(Path(out).resolve() / guard.component(name, "experiment name"))

    def run_dir(self, run_name: str) -> Path:
        return self.root / run_name

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT_DIR

    def read(self) -> ExperimentRecord:
        """experiment.json: the spec, the predict sets and every run rendered."""
        where = f"{self.root / EXPERIMENT}"
        if not (self.root / EXPERIMENT).exists():
            raise TlfError(f"{self.root}: no readable {EXPERIMENT}; render the experiment first")
        record = ExperimentRecord.from_json(read_json(self.root / EXPERIMENT), where)
        for run in record.runs:
            check_run_name(run.name, f"{where}: runs")
        return record

    def jobs(self) -> list[dict]:
        """jobs.json: one record per submission; a file that is not one is refused, never guessed at."""
        path = self.root / JOBS
        if not path.exists():
            return []
        history = read_json(path)
        if not isinstance(history, list) or not all(_job_record(r) for r in history):
            raise TlfError(f"{path}: not the list of submission records tlf writes (unreadable, or an entry with "
                           "a wrong shape); move it aside and look at `squeue --me` for jobs it recorded")
        return history

    def add_jobs(self, record: dict) -> None:
        atomic_write(self.root / JOBS, json.dumps([*self.jobs(), record], indent=2) + "\n")


def check_run_name(name: str, where: str) -> str:
    """A run's name is its directory under the experiment: a plain name, not one of the
    experiment's own entries (report/, logs/, jobs.json ...), not hidden."""
    guard.component(name, where, "run name")
    if name in EXPERIMENT_ENTRIES or name.startswith("."):
        raise TlfError(f"{where}: run name {name!r} would collide with the experiment's own "
                       f"{'hidden files' if name.startswith('.') else name}; "
                       f"run names may not be {', '.join(EXPERIMENT_ENTRIES)} or begin with '.'")
    return name


def submission_ids(record: dict) -> list:
    """Every job id a jobs.json record names: each run's steps (or array task), the array, the shared
    predict job, the report."""
    ids = [i for jobs in record.get("runs", {}).values() if isinstance(jobs, dict) for i in jobs.values()]
    return ids + [record[k] for k in ("array", "predict", "report") if k in record]


def _job_record(record) -> bool:
    """A submission record: run -> {step: job id}, optional array and report, every id a job id."""
    return (isinstance(record, dict) and isinstance(record.get("runs", {}), dict)
            and all(isinstance(jobs, dict) for jobs in record.get("runs", {}).values())
            and all(isinstance(i, str) and JOB_ID.match(i) for i in submission_ids(record)))


@dataclass(frozen=True)
class Run:
    """A rendered run, read from its manifest: nothing is re-parsed from the rendered YAMLs."""
    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def trains(self) -> bool:
        return bool(self.manifest.trains)

    @property
    def predict_sets(self) -> list[str]:
        return list(self.manifest.predict_sets)

    @property
    def select(self) -> dict | None:
        """select: of the spec (on, metric, every), or None."""
        value = self.manifest.select
        return value if isinstance(value, dict) and isinstance(value.get("on"), str) else None

    @property
    def dataset_dir(self) -> Path:
        if not self.manifest.dataset_dir:
            raise TlfError(f"{self.path / MANIFEST}: no dataset_dir; re-render the spec")
        return Path(self.manifest.dataset_dir)

    @property
    def split_manifest(self) -> Path | None:
        path = self.manifest.split_manifest
        return Path(path) if isinstance(path, str) and path else None

    @property
    def model_path(self) -> str:
        return self.manifest.model["path"]

    @property
    def train_dir(self) -> Path:
        return self.path / TRAIN_DIR

    def predictions(self, dataset: str) -> Path:
        return self.path / predict_dir(dataset) / PREDICTIONS

    @property
    def finetuning_type(self) -> str:
        return self.manifest.finetuning_type or "lora"

    @property
    def weights_key(self) -> str:
        return weights_key(self.finetuning_type)

    @property
    def instruction_wrapper(self) -> str | None:
        return instruction_wrapper(self.split_manifest)

    def config(self, link: str) -> Path:
        if link == "select":
            return self.path / select_file(self.select["on"])
        return self.path / (TRAIN_FILE if link == "train" else predict_file(link.removeprefix("predict-")))

    def step_log(self, link: str) -> Path:
        return self.path / LOGS / f"{link}.log"

    def chain(self) -> list[Link]:
        return chain(self.trains, self.predict_sets, self.select is not None)


def open_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir).resolve()
    where = f"{run_dir / MANIFEST}"
    if not (run_dir / MANIFEST).is_file():
        raise TlfError(f"{run_dir}: not a rendered run (no readable {MANIFEST}); run `tlf render` first")
    manifest = Manifest.from_json(read_json(run_dir / MANIFEST), where)
    for name in manifest.files:
        guard.inside(run_dir / guard.text(name, f"{where}: files", "file name"), run_dir, f"{where}: files")
    return Run(run_dir, manifest)


def refuse_symlinks(run_dir: Path) -> None:
    """A run (or experiment) directory that is a symbolic link may hold another tree's results."""
    run_dir = Path(run_dir).absolute()
    for path in (run_dir, run_dir.parent):
        if path.is_symlink():
            raise TlfError(f"{path}: is a symbolic link (to {os.readlink(path)}); tlf works only in the "
                           "directories it rendered: render into the real location instead")


def check_rendered(run: Run) -> None:
    """Refuse to work on a run whose rendered files are not the ones manifest.json recorded:
    results must match the config they are reported with."""
    changed = []
    for name, digest in run.manifest.files.items():
        path = run.path / name
        if not path.is_file():
            changed.append(f"{name} (missing)")
        elif sha256_file(path) != digest:
            changed.append(name)
    if changed:
        raise TlfError(f"{run.path}: {', '.join(changed)} changed since rendering (manifest.json holds each "
                       "rendered file's hash), so results would not match the config; re-render the spec "
                       "(`tlf render SPEC --force`) or restore the file")


HEADER_PREFIX = "tlf-lf: "
# In the environment of a tlf-lf process: 1 makes its predicts share one in-memory base (basecache.py).
SHARE_BASE_ENV = "TLF_SHARE_BASE"


def header_line(key: str, value: str, why: str) -> str:
    """``tlf-lf: KEY=VALUE   (why)``, for a rendered config's header comment (see header_marker)."""
    return f"{HEADER_PREFIX}{key}={value}   ({why})"


def header_marker(config_path: str | None, key: str) -> str | None:
    """The value of ``# tlf-lf: KEY=VALUE`` in a rendered config's header comment: how a rendered
    YAML tells ``tlf-lf`` what LLaMA-Factory has no argument for (plain llamafactory-cli ignores it)."""
    if not config_path or not str(config_path).endswith((".yaml", ".yml")):
        return None
    marker = f"{HEADER_PREFIX}{key}="
    try:
        with open(config_path, encoding="utf-8") as handle:
            for line in handle:
                if not line.startswith("#"):
                    break
                if marker in line:
                    return (line.split(marker, 1)[1].split() or [""])[0]
    except (OSError, UnicodeDecodeError):
        return None
    return None


def elapsed_seconds(text) -> float | None:
    """LLaMA-Factory's trainer_log.jsonl elapsed_time, ``str(timedelta)``: ``0:00:16``, ``1 day, 2:03:04``."""
    match = re.fullmatch(r"(?:(\d+) days?, )?(\d+):(\d\d):(\d\d)", str(text or ""))
    if not match:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def read_json(path: Path):
    """A JSON file's value, or None when it is missing or unreadable."""
    try:
        return json.loads(inputs.read_input(path, "record"))
    except (TlfError, OSError, ValueError, RecursionError):
        return None


# ---------------------------------------------------------------- what is done


def has_weights(directory: Path) -> bool:
    """A directory holding trained weights (an adapter or a whole model), in any format LF saves."""
    return any((Path(directory) / name).exists() for name in WEIGHT_FILES)


def checkpoint_complete(path: Path) -> bool:
    """A checkpoint-N that can be loaded and resumed from: its weights and its trainer_state.json
    (the trainer writes that last, so a job killed while saving leaves a checkpoint without it)."""
    return Path(path).is_dir() and (Path(path) / TRAINER_STATE).exists() and has_weights(path)


def checkpoints(train_dir: Path, complete: bool = True) -> list[tuple[int, Path]]:
    """(step, directory) of the checkpoint-N directories of a training output, by step: only the
    complete ones, or (complete=False) every one, torn ones included."""
    found = []
    for path in Path(train_dir).glob("checkpoint-*"):
        match = CHECKPOINT_NAME.match(path.name)
        if match and path.is_dir() and (not complete or checkpoint_complete(path)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def checkpoint_name(step: int) -> str:
    """``checkpoint-N``: the trainer's directory of step N (and select/'s of its dev predictions)."""
    return f"checkpoint-{step}"


def set_aside_incomplete_checkpoints(train_dir: Path) -> list[Path]:
    """A job killed while saving leaves a checkpoint-N without its trainer_state.json (written
    last) or weights; LLaMA-Factory would resume from it and fail. Rename such directories so
    the resume picks the last complete one; nothing is deleted."""
    moved = []
    for _step, checkpoint in checkpoints(train_dir, complete=False):
        if not checkpoint_complete(checkpoint):
            target = checkpoint.with_name(f"{checkpoint.name}.incomplete")
            suffix = 1
            while target.exists():
                target = checkpoint.with_name(f"{checkpoint.name}.incomplete{suffix}")
                suffix += 1
            checkpoint.rename(target)
            moved.append(target)
    return moved


def last_checkpoint_step(train_dir: Path) -> int:
    """The step of the last checkpoint-N LLaMA-Factory would resume from (0: none)."""
    return max((step for step, _path in checkpoints(train_dir, complete=False)), default=0)


def weights_key(finetuning_type: str | None) -> str:
    """The LLaMA-Factory argument that loads what a run trained: an adapter (LoRA, the default)
    on the base, or the whole model that full and freeze fine-tuning save."""
    return "adapter_name_or_path" if (finetuning_type or "lora") in ADAPTER_TYPES else "model_name_or_path"


def predictions_done(out_dir: Path) -> bool:
    """A predict output directory LLaMA-Factory finished: predictions and their results file."""
    return (Path(out_dir) / PREDICTIONS).exists() and (Path(out_dir) / PREDICT_RESULTS).exists()


def instruction_wrapper(split_manifest: Path | None) -> str | None:
    """The instruction the data wrapped every question in (``... {question} ...``): the split
    manifest's, else the imported file's meta.json beside its source; None when neither recorded one."""
    manifest = read_json(Path(split_manifest)) if split_manifest else None
    if not isinstance(manifest, dict):
        return None
    wrapper = manifest.get("instruction")
    if not isinstance(wrapper, str) and isinstance(manifest.get("source"), str):
        source = Path(manifest["source"])
        meta = read_json(source.with_name(source.stem + ".meta.json"))
        wrapper = meta.get("instruction") if isinstance(meta, dict) else None
    return wrapper if isinstance(wrapper, str) and "{question}" in wrapper else None


def train_done(run: Run) -> bool:
    out = run.train_dir
    return (out / TRAIN_RESULTS).exists() and has_weights(out)


def predict_done(run: Run, dataset: str) -> bool:
    return predictions_done(run.path / predict_dir(dataset))


def score_done(run: Run) -> bool:
    """Scores exist for every predict set and are newer than every prediction file."""
    path = run.path / SCORES
    scored = (read_json(path) or {}).get("sets", {}) if path.exists() else None
    if not isinstance(scored, dict):
        return False
    newest = max((p.stat().st_mtime_ns for p in map(run.predictions, run.predict_sets) if p.exists()), default=0)
    return all(s in scored for s in run.predict_sets) and path.stat().st_mtime_ns >= newest


def select_done(run: Run) -> bool:
    """selection.json names a chosen checkpoint, and the selected link leads to it."""
    record = read_json(run.path / SELECTION)
    chosen = record.get("chosen") if isinstance(record, dict) else None
    link = run.path / SELECTED
    return (isinstance(chosen, dict) and isinstance(chosen.get("step"), int) and link.is_symlink() and link.is_dir()
            and os.readlink(link) == f"{TRAIN_DIR}/{checkpoint_name(chosen['step'])}")


def chosen_step(run: Run) -> int | None:
    """The checkpoint step select: chose for this run, once selection is done."""
    if not select_done(run):
        return None
    return int((read_json(run.path / SELECTION) or {})["chosen"]["step"])


def link_done(run: Run, link: str) -> bool:
    if link == "train":
        return train_done(run)
    if link == "select":
        return select_done(run)
    if link == "score":
        return score_done(run)
    return predict_done(run, link.removeprefix("predict-"))


def started(run_dir: Path) -> bool:
    """True once LLaMA-Factory has written anything for this run."""
    return (run_dir / TRAIN_DIR).exists() or any(run_dir.glob("predict-*/"))


def _gone(record: dict) -> bool:
    """A "running" record whose process was on this host and is not alive any more (killed)."""
    if record.get("host") != platform.node() or not isinstance(record.get("pid"), int) or record.get("job_id"):
        return False
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def state(run: Run) -> str:
    """One word from STATES; "failed" only while the failed step has not been redone."""
    if score_done(run):
        return "done"
    records = step_records(run)
    if failed_steps(run, records):
        return "failed"
    if run.trains and not train_done(run):
        train = records.get("train", {})
        if train.get("state") == "interrupted" or (train.get("state") == "running" and _gone(train)):
            return "interrupted"
        return "training" if train.get("state") == "running" or started(run.path) else "rendered"
    if run.predict_sets and all(predict_done(run, s) for s in run.predict_sets):
        return "predicted"
    if run.select and select_done(run):
        return "selected"
    return "trained" if run.trains else "rendered"


def failed_steps(run: Run, records: dict[str, dict]) -> dict[str, dict]:
    """The step records that say "failed" for a step not redone since."""
    return {name: r for name, r in records.items() if r.get("state") == "failed" and not link_done(run, name)}


def reset(run_dir: Path) -> None:
    """--force: remove what LLaMA-Factory, scoring and the steps wrote; keep the rendered files."""
    import shutil

    (run_dir / SELECTED).unlink(missing_ok=True)      # a link: never followed into the tree
    for child in [run_dir / TRAIN_DIR, run_dir / STEPS, run_dir / SELECT_DIR, *run_dir.glob("predict-*/")]:
        if child.is_dir():
            shutil.rmtree(child)
    for name in (SCORES, SELECTION, TRACKER_RUN):   # a rerun from scratch is a new MLflow run
        (run_dir / name).unlink(missing_ok=True)


# ---------------------------------------------------------------- step records (job state from the run)


def step_records(run: Run) -> dict[str, dict]:
    """The last record of each step: ``steps/<link>.json``."""
    records = {}
    for path in sorted((run.path / STEPS).glob("*.json")):
        record = read_json(path)
        if isinstance(record, dict):
            records[path.stem] = record
    return records


def slurm_job_id(env=os.environ) -> str | None:
    """The job id as squeue shows it: ``<array>_<task>`` for array tasks."""
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def record_step(run: Run, link: str, state_word: str, log: Path | None = None, cause: str | None = None) -> None:
    """A step's state change, with the Slurm job (if any), host and pid that made it."""
    path = run.path / STEPS / f"{link}.json"
    previous = read_json(path) if state_word != "running" else None
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record = {
        "step": link,
        "state": state_word,
        "job_id": slurm_job_id(),
        "host": platform.node(),
        "pid": os.getpid(),
        "started": (previous or {}).get("started", now),
        "updated": now,
        "log": str(log) if log else None,
        "cause": cause,
    }
    atomic_write(path, json.dumps(record, ensure_ascii=False, indent=2) + "\n")
