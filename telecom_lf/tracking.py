"""Experiment tracking (``tracking: mlflow | tensorboard``): a study in the tracker people use.

``mlflow``: one MLflow experiment per spec, in a SQLite store under the experiment directory
(``<experiment>/mlflow.db``, artifacts in ``<experiment>/mlartifacts``) or at ``tracking_uri``;
one MLflow run per tlf run. tlf creates that run itself, under a lock, the first time a process
of the run needs it, and keeps its id in the run directory (``mlflow-run.json``): LLaMA-Factory's
own callback (``report_to: mlflow``) logs the training losses into it through ``MLFLOW_RUN_ID``,
a requeued train step and the score step reattach to it, and tlf's scores land beside the losses.

``tensorboard``: one log directory per experiment (``<experiment>/tensorboard``), a subdirectory
per run: LLaMA-Factory's losses (``report_to: tensorboard``, ``logging_dir``) and tlf's scores as
scalars (``tlf/acc/<set>``).

Rendering writes ``tracking.json`` (what to track where; pure: no versions, no hashes) into each run
and the experiment directory; everything that touches a store happens at run time, here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import rundir
from .errors import TlfError
from .fsutil import atomic_write
from .rundir import MLFLOW_ARTIFACTS as ARTIFACTS
from .rundir import MLFLOW_STORE as STORE
from .rundir import TENSORBOARD as TENSORBOARD_DIR
from .rundir import TRACKER_RUN as RUN_ID_FILE
from .rundir import TRACKING as TRACKING_FILE

KINDS = ("none", "mlflow", "tensorboard")
HEADER_KEY = "tracking"
PACKAGES = {"mlflow": "mlflow", "tensorboard": "tensorboard"}   # tracking: kind -> the package it needs
INSTALL = "pip install -e '.[tracking]' (from a tlf checkout; or: pip install 'mlflow>=3.7,<4' tensorboard)"
# What tlf sets in an LLaMA-Factory process for its MLflow callback, restored before each config
# (a serving process runs many configs; a user's own MLFLOW_* outside tracking: stays theirs).
_SAVED_ENVIRONMENT: dict[str, str | None] = {}
# An experiment directory written into a sqlite:/// URI: SQLAlchemy reads '?' and '#' as URL syntax.
STORE_PATH_RE = re.compile(r"[^?#%\s]+")
# MLflow metric names: alphanumerics, '_', '-', '.', ' ', ':', '/'; a set name may hold '+'.
METRIC_UNSAFE = re.compile(r"[^0-9A-Za-z_\-. :/]")
SCORE_METRICS = ("acc", "acc_raw", "long_recall", "long_recall_raw", "bleu-4", "rouge-1", "rouge-2", "rouge-l",
                 "item_precision", "item_recall", "item_f1")


@dataclass(frozen=True)
class Tracking:
    """What one run (or, with ``run`` None, the experiment) tracks, and where."""
    kind: str
    experiment: str
    root: str                       # the experiment directory
    uri: str | None = None          # mlflow: the tracking URI
    run: str | None = None
    tags: dict = field(default_factory=dict)

    @property
    def logdir(self) -> Path:
        """tensorboard: the experiment's log directory, or this run's subdirectory."""
        base = Path(self.root) / TENSORBOARD_DIR
        return base / self.run if self.run else base

    @property
    def artifacts(self) -> str:
        return (Path(self.root) / ARTIFACTS).as_uri()

    @property
    def store(self) -> Path | None:
        """The SQLite file of a sqlite:/// URI (the one tlf chose, or the spec's)."""
        if self.uri and self.uri.startswith("sqlite:///"):
            return Path(self.uri[len("sqlite:///"):])
        return None

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def missing_packages(kind: str) -> list[str]:
    """The Python packages ``tracking: KIND`` needs that are not installed here."""
    needed = [PACKAGES[kind]] if kind in PACKAGES else []
    return [name for name in needed if importlib.util.find_spec(name) is None]


def default_uri(root: Path) -> str:
    return f"sqlite:///{Path(root).absolute()}/{STORE}"


def plan(kind: str, uri: str | None, experiment: str, root: Path, run: str | None = None,
         tags: dict | None = None) -> Tracking | None:
    if kind == "none":
        return None
    if kind == "mlflow" and uri is None:
        if not STORE_PATH_RE.fullmatch(str(Path(root).absolute())):
            raise TlfError(f"tracking: mlflow: the experiment directory {root} holds '?', '#', '%' or a space, "
                           "which a sqlite:/// URI cannot hold; choose another --out or set tracking_uri")
        uri = default_uri(root)
    return Tracking(kind=kind, experiment=experiment, root=str(Path(root).absolute()),
                    uri=uri if kind == "mlflow" else None, run=run,
                    tags={k: str(v) for k, v in sorted((tags or {}).items())})


def read(directory: Path) -> Tracking | None:
    """A run's (or the experiment's) rendered tracking.json; None when it tracks nothing."""
    path = Path(directory) / TRACKING_FILE
    if not path.is_file():
        return None
    try:
        return Tracking(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as error:
        raise TlfError(f"{path}: unreadable ({error}); re-render the spec") from None


# ---------------------------------------------------------------- MLflow at run time


def _client(tracking: Tracking):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking.uri)


def _store_lock(tracking: Tracking, run_dir: Path):
    """Creating the store, the experiment and a run, one process at a time: array tasks started at
    once would otherwise race MLflow's schema migration of a new SQLite file and create the
    experiment twice. (Logging metrics afterwards is SQLite's own locking.)"""
    from . import lock

    target = tracking.store if tracking.store is not None else Path(run_dir) / RUN_ID_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    return lock.transient(target, timeout=300)


def _experiment_id(client, tracking: Tracking) -> str:
    found = client.get_experiment_by_name(tracking.experiment)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise TlfError(f"MLflow experiment {tracking.experiment!r} in {tracking.uri} is deleted; restore it "
                           f"(mlflow experiments restore --experiment-id {found.experiment_id}) or remove it for good "
                           "(mlflow gc)")
        owner = found.tags.get("tlf.experiment_dir")
        if owner and owner != tracking.root:   # a shared server: another experiment directory's runs
            raise TlfError(f"MLflow experiment {tracking.experiment!r} in {tracking.uri} holds the runs of {owner}, "
                           f"not of {tracking.root}; give this spec another name: (runs of the same name would mix)")
        return found.experiment_id
    artifacts = tracking.artifacts if tracking.store is not None else None
    # experimentKind: MLflow 3's UI opens an experiment without it as a GenAI one (traces, no runs table).
    return client.create_experiment(tracking.experiment, artifact_location=artifacts,
                                    tags={"tlf.experiment_dir": tracking.root, "mlflow.experimentKind": "finetuning"})


def prepare_store(tracking: Tracking) -> str:
    """The experiment's store and MLflow experiment, created before any job starts; its id."""
    with _store_lock(tracking, Path(tracking.root)):
        return _experiment_id(_client(tracking), tracking)


def run_id(run_dir: Path, tracking: Tracking) -> tuple[str, dict | None]:
    """This tlf run's MLflow run id, and the parameters it holds when it existed already (None for
    a new one): read from mlflow-run.json, or a new MLflow run created (named after the tlf run,
    tagged with its swept arguments, the spec's hash and the versions) and its id written there."""
    from . import lfargs

    path = Path(run_dir) / RUN_ID_FILE
    with _store_lock(tracking, run_dir):
        client = _client(tracking)
        recorded = rundir.read_json(path)
        if isinstance(recorded, dict) and isinstance(recorded.get("run_id"), str):
            params = _recorded_params(client, recorded["run_id"])
            if params is not None:
                return recorded["run_id"], params
        manifest = rundir.read_json(Path(run_dir) / rundir.MANIFEST) or {}
        tags = {**tracking.tags, "tlf.run": tracking.run or Path(run_dir).name, "tlf.run_dir": str(run_dir)}
        tags.update({f"tlf.{key}": str(manifest[key]) for key in ("spec", "spec_sha256", "git_commit")
                     if manifest.get(key)})
        tags.update({f"version.{name}": str(value) for name, value in lfargs.installed_versions().items()})
        created = client.create_run(_experiment_id(client, tracking), run_name=tracking.run, tags=tags)
        _log_arguments(client, created.info.run_id, Path(run_dir))
        atomic_write(path, json.dumps({"run_id": created.info.run_id, "experiment": tracking.experiment,
                                       "uri": tracking.uri}, indent=2) + "\n")
        return created.info.run_id, None


def _recorded_params(client, identifier: str) -> dict | None:
    """The parameters of a recorded MLflow run still in the store; None when it is gone (a store
    removed, or a spec moved to another tracking_uri, starts a new run rather than failing every step)."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_run(identifier)
    except MlflowException:
        return None
    return found.data.params if found.info.lifecycle_stage == "active" else None


def _log_arguments(client, identifier: str, run_dir: Path) -> None:
    """The run's LLaMA-Factory training arguments as rendered (train.yaml), as parameters ``lf.<key>``:
    the trainer's callback logs only HF's TrainingArguments, not LoRA's rank, alpha or target."""
    import yaml
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

    path = run_dir / rundir.TRAIN_FILE
    if not path.is_file():
        return
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    params = [Param(f"lf.{key}", str(value)[:MAX_PARAM_VAL_LENGTH]) for key, value in config.items()]
    for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(identifier, params=params[start:start + MAX_PARAMS_TAGS_PER_BATCH])


def install_for(config_path: str | None) -> None:
    """In an LLaMA-Factory process, before each config: the environment transformers' MLflowCallback
    reads, pointing at this run's MLflow run (TensorBoardCallback: TENSORBOARD_LOGGING_DIR, this
    run's subdirectory); restored for a config that does not track. A train step that reattaches (a
    requeue resuming from a checkpoint) logs no parameters again: MLflow refuses a changed parameter
    (a resume or an override on the command line changes some), and the callback's asynchronous batch
    would fail whole, and silently."""
    _restore_environment()
    kind = rundir.header_marker(config_path, HEADER_KEY)
    if kind not in ("mlflow", "tensorboard"):
        return
    run_dir = Path(config_path).parent
    tracking = read(run_dir)
    if tracking is None or tracking.kind != kind:
        return
    if kind == "tensorboard":
        _set_environment({"TENSORBOARD_LOGGING_DIR": str(tracking.logdir)})
        return
    identifier, params = run_id(run_dir, tracking)
    _set_environment({"MLFLOW_TRACKING_URI": tracking.uri, "MLFLOW_EXPERIMENT_NAME": tracking.experiment,
                      "MLFLOW_RUN_ID": identifier, **({"MLFLOW_MAX_LOG_PARAMS": "0"} if params else {})})
    import mlflow

    mlflow.set_tracking_uri(tracking.uri)   # a serving process keeps the first URI it was given otherwise
    print(f"tlf: MLflow run {identifier} ({tracking.run}) in {tracking.uri}", file=sys.stderr, flush=True)


def _set_environment(values: dict[str, str]) -> None:
    for name, value in values.items():
        _SAVED_ENVIRONMENT.setdefault(name, os.environ.get(name))
        os.environ[name] = value


def _restore_environment() -> None:
    for name, value in _SAVED_ENVIRONMENT.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _SAVED_ENVIRONMENT.clear()


def metric_name(name: str) -> str:
    return METRIC_UNSAFE.sub("_", name)


def score_metrics(sets: dict) -> dict[str, float]:
    """``<metric>_<set>`` for every numeric score of every set (acc_test_100, item_f1_train_100, ...)."""
    metrics = {}
    for dataset, scores in sets.items():
        for key in SCORE_METRICS:
            value = scores.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[metric_name(f"{key}_{dataset}")] = float(value)
    return metrics


def _selection_metrics(selection: dict) -> list[tuple[str, float, int]]:
    """Every checkpoint's dev score as a series over steps (select_acc_dev at step N)."""
    metric, dev = selection.get("metric"), selection.get("on")
    series = []
    for checkpoint in selection.get("checkpoints") or []:
        value, step = checkpoint.get(metric), checkpoint.get("step")
        if isinstance(value, (int, float)) and isinstance(step, int):
            series.append((metric_name(f"select_{metric}_{dev}"), float(value), step))
    return series


def log_scores(run_dir: Path, scores: dict, table: str) -> str | None:
    """The score step's metrics, the selection and scores.json into the run's tracker; what was done."""
    tracking = read(run_dir)
    if tracking is None:
        return None
    if tracking.kind == "tensorboard":
        return _tensorboard_scores(tracking, scores)
    identifier, existing = run_id(run_dir, tracking)
    existing = existing or {}
    client = _client(tracking)
    from mlflow.entities import Metric, Param

    now = _now_ms()
    metrics = [Metric(key, value, now, 0) for key, value in score_metrics(scores["sets"]).items()]
    params = []
    selection = rundir.read_json(Path(run_dir) / rundir.SELECTION)
    if isinstance(selection, dict) and isinstance(selection.get("chosen"), dict):
        metrics += [Metric(key, value, now, step) for key, value, step in _selection_metrics(selection)]
        metrics.append(Metric("selected_step", float(selection["chosen"]["step"]), now, 0))
        params.append(Param("tlf.selected_checkpoint", rundir.checkpoint_name(selection["chosen"]["step"])))
    params = [p for p in params if existing.get(p.key) != p.value]
    client.log_batch(identifier, metrics=metrics, params=params)
    client.log_artifact(identifier, str(Path(run_dir) / rundir.SCORES))
    if selection:
        client.log_artifact(identifier, str(Path(run_dir) / rundir.SELECTION))
    client.log_text(identifier, table, "scores.txt")
    client.set_tag(identifier, "tlf.scored", "yes")
    client.set_terminated(identifier)   # a predict-only run has no trainer to end it
    return f"MLflow run {identifier}: {len(metrics)} metric(s) logged"


def _tensorboard_scores(tracking: Tracking, scores: dict) -> str:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(tracking.logdir)) as writer:
        for name, value in score_metrics(scores["sets"]).items():
            writer.add_scalar(f"tlf/{name}", value, 0)
    return f"TensorBoard scalars in {tracking.logdir}"


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def log_report(root: Path, report_files: list[Path], rows: dict[str, dict], verdicts: dict[str, str]) -> str | None:
    """The report's files as artifacts of a run named ``report`` (tag tlf.report) in the experiment;
    each run's row of the comparison table (report_row.json) and its verdict (the paired test against
    its reference, tag tlf.verdict) into that run's MLflow run."""
    tracking = read(root)
    if tracking is None or tracking.kind != "mlflow":
        return None
    client = _client(tracking)
    with _store_lock(tracking, Path(root)):
        experiment_id = _experiment_id(client, tracking)
        found = client.search_runs([experiment_id], filter_string="tags.`tlf.report` = 'yes'", max_results=1)
        report_run = found[0].info.run_id if found else client.create_run(
            experiment_id, run_name="report", tags={"tlf.report": "yes"}).info.run_id
    for path in report_files:
        if path.is_file():
            client.log_artifact(report_run, str(path))
    client.set_terminated(report_run)
    tagged = 0
    for name, row in rows.items():
        recorded = rundir.read_json(Path(root) / name / RUN_ID_FILE)
        if not (isinstance(recorded, dict) and isinstance(recorded.get("run_id"), str)):
            continue
        client.log_dict(recorded["run_id"], row, "report_row.json")
        if name in verdicts:
            client.set_tag(recorded["run_id"], "tlf.verdict", verdicts[name][:5000])
            tagged += 1
    return f"MLflow: the report attached to run 'report' ({report_run}); {tagged} verdict(s) tagged"


def ui_command(root: Path) -> str | None:
    """The command that opens the experiment's tracker on this machine (bound to 127.0.0.1)."""
    tracking = read(root)
    if tracking is None:
        return None
    if tracking.kind == "tensorboard":
        return f"tensorboard --logdir {_quote(str(tracking.logdir))} --host 127.0.0.1 --port 6006"
    return f"mlflow ui --backend-store-uri {_quote(tracking.uri)} --host 127.0.0.1 --port 5000"


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
