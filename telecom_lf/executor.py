"""The compute-node side: the steps of one run (``tlf step``), and nothing else.

``job.sbatch`` and ``array.sbatch`` call ``python -m telecom_lf.cli step RUN_DIR [options] STEP``
and ``tlf run`` calls the same functions, so blog-era templates, environment records, step
records and skip-if-done behave the same everywhere. Each step records its state (with its
Slurm job id, host and pid) in the run directory, and a failed step its cause and log
(``Recorder``: the one way a step's state changes). The processes themselves are
``processes``'s: one child per step, or a caller's ``Worker`` for a fused chain.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import lfargs, lock, rundir, score, selection, tracking
from .errors import Failed, TlfError
from .fsutil import atomic_write
from .processes import (
    DEVICE_VARIABLES,
    Launch,
    Progress,
    failure_cause,
    lf_command,
    one_card,
    one_device_at_most,
    run_child,
)
from .rundir import Run

SMI_TOOLS = ("nvidia-smi", "rocm-smi", "hy-smi")


class StepFailed(Failed):
    pass


# ---------------------------------------------------------------- environment record


def record_environment(run: Run, step: str) -> Path:
    """SLURM_* variables, visible devices, *-smi output and package versions, at step start."""
    env = os.environ
    record = {
        "step": step,
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "versions": lfargs.installed_versions(),
        "slurm": {k: v for k, v in sorted(env.items()) if k.startswith("SLURM_")},
        "visible_devices": {k: env.get(k) for k in DEVICE_VARIABLES if k in env},
        "smi": {tool: _smi(tool) for tool in SMI_TOOLS if shutil.which(tool)},
    }
    job = env.get("SLURM_JOB_ID", "local")
    attempt = env.get("SLURM_RESTART_COUNT", "0")
    path = run.path / rundir.ENVIRONMENT / f"{step}-{job}-{attempt}-{os.getpid()}.json"
    atomic_write(path, json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    return path


def _smi(tool: str) -> str:
    try:
        done = subprocess.run([tool], capture_output=True, text=True, timeout=30)
        return (done.stdout + done.stderr)[-8000:]
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"failed: {error}"


# ---------------------------------------------------------------- step records


class Recorder:
    """The step records of links run by one process (one link, or a fused train and predicts):
    running when it starts; then each link done, or the first link not done failed with the log's
    cause and those after it "not run"; or, on Ctrl-C/SIGTERM, interrupted (a link that finished
    before the signal stays done)."""

    def __init__(self, run: Run, links: list[str]) -> None:
        self.run, self.links = run, links
        self.logs = {link: run.step_log(link) for link in links}

    def start(self) -> None:
        for link in self.links:
            rundir.record_step(self.run, link, "running", self.logs[link])

    @contextlib.contextmanager
    def interruptible(self):
        try:
            yield
        except KeyboardInterrupt:
            for link in self.links:
                finished = rundir.link_done(self.run, link)
                rundir.record_step(self.run, link, "done" if finished else "interrupted", self.logs[link])
            raise

    def fail(self, link: str, cause: str) -> None:
        rundir.record_step(self.run, link, "failed", self.logs[link], cause)
        raise StepFailed(f"{self.run.name}: {link} failed: {cause}; log: {self.logs[link]}")

    def finish(self, ok: bool, cause: str | None = None, fallback: str = "no error line in the log") -> list[str]:
        """Record each link's outcome: a link is done when its outputs are there and the process
        succeeded (or a later link was still to run). Returns the links done; raises StepFailed."""
        failed = None
        for index, link in enumerate(self.links):
            last = index == len(self.links) - 1
            if failed is None and cause is None and rundir.link_done(self.run, link) and (ok or not last):
                rundir.record_step(self.run, link, "done", self.logs[link])
            elif failed is None:
                failed = link
                cause = cause or _with_model(failure_cause(self.logs[link]), self.run) or fallback
                rundir.record_step(self.run, link, "failed", self.logs[link], cause)
            else:
                rundir.record_step(self.run, link, "failed", self.logs[link], f"not run: {failed} failed before it")
        if failed is not None:
            raise StepFailed(f"{self.run.name}: {failed} failed: {cause}; log: {self.logs[failed]}")
        return list(self.links)


# ---------------------------------------------------------------- steps


def _with_model(cause: str | None, run: Run) -> str | None:
    """LLaMA-Factory's "Failed to load tokenizer." names no path: a load failure says which model."""
    if cause and any(word in cause.lower() for word in ("load tokenizer", "load model", "can't load", "cannot load")):
        return f"{cause} (model {run.model_path})"
    return cause


def _model_problem(run: Run) -> str | None:
    """A local model directory that vanished after rendering, named as such before LLaMA-Factory
    buries it under a tokenizer traceback."""
    model = Path(run.model_path)
    if model.is_absolute() and not (model / rundir.MODEL_CONFIG).is_file():
        missing = "does not exist" if not model.exists() else "has no config.json"
        return f"model directory {model} {missing} (it was there when the run was rendered)"
    return None


def _run_lf(run: Run, link: str, launch: Launch, progress: Progress | None = None) -> None:
    """One LLaMA-Factory process for a link, recorded."""
    recorder = Recorder(run, [link])
    recorder.start()
    cause = _model_problem(run)
    rc = None
    if cause is None:
        record_environment(run, link)
        with recorder.interruptible():
            rc = run_child(lf_command(run.config(link), launch), recorder.logs[link],
                           progress if launch.quiet else None, echo=not launch.quiet)
    recorder.finish(rc == 0, cause, f"exit code {rc}, and no error line in the log")


def step_train(run: Run, launch: Launch = Launch()) -> str:
    if not run.trains:
        return "no training (probe run)"
    if rundir.train_done(run):
        return "done already, skipped"
    resumed = _prepare_train(run)
    _run_lf(run, "train", launch, Progress.resuming(run.train_dir / rundir.TRAINER_LOG, "train", resumed))
    return _trained(resumed)


def _prepare_train(run: Run) -> int:
    """Before LLaMA-Factory trains: incomplete checkpoints set aside; the step it resumes from."""
    for moved in rundir.set_aside_incomplete_checkpoints(run.train_dir):
        print(f"tlf: {moved.name}: set aside an incomplete checkpoint (the job was stopped while saving)",
              file=sys.stderr)
    resumed = rundir.last_checkpoint_step(run.train_dir)
    if resumed:
        print(f"tlf: {run.name}: resuming from checkpoint-{resumed} (steps 1-{resumed} were trained by an earlier "
              "job; LLaMA-Factory goes on from there)", file=sys.stderr, flush=True)
    return resumed


def _trained(resumed: int) -> str:
    return f"trained (resumed from checkpoint-{resumed})" if resumed else "trained"


def step_predict(run: Run, dataset: str, launch: Launch = Launch()) -> str:
    if dataset not in run.predict_sets:
        raise TlfError(f"{run.name}: no predict set {dataset!r}; has {run.predict_sets}")
    if rundir.predict_done(run, dataset):
        return "done already, skipped"
    if run.trains and not rundir.train_done(run):
        raise StepFailed(f"{run.name}: cannot predict {dataset}: training has not finished")
    if run.select and not rundir.select_done(run):
        raise StepFailed(f"{run.name}: cannot predict {dataset}: checkpoint selection has not finished")
    _run_lf(run, f"predict-{dataset}", Launch(quiet=launch.quiet))
    return "predicted"


def step_score(run: Run) -> str:
    """Score every predict set into ``scores.json`` (written whole, atomically)."""
    if rundir.score_done(run):
        return "done already, skipped"
    sets = {}
    similarity = score.Similarity()
    for dataset in run.predict_sets:
        if not rundir.predict_done(run, dataset):
            raise StepFailed(f"{run.name}: cannot score {dataset}: no predictions yet")
        rows = score.read_predictions(run.predictions(dataset)).rows
        sets[dataset] = score.score_rows(rows, categories=_categories(run, dataset), similarity=similarity)
    scores = {"run": run.name, "sets": sets}
    atomic_write(run.path / rundir.SCORES, json.dumps(scores, ensure_ascii=False, indent=2) + "\n")
    tracked = _track_scores(run, scores)
    rundir.record_step(run, "score", "done")
    return f"scored {len(sets)} set(s)" + (f"; {tracked}" if tracked else "")


def _track_scores(run: Run, scores: dict) -> str | None:
    """The scores into the run's tracker (tracking:); a tracker that refuses fails the step (scores.json
    stays; running the step again logs them)."""
    table = "\n\n".join(f"{run.name} on {dataset}:\n{score.format_table(values)}"
                          for dataset, values in scores["sets"].items())
    try:
        return tracking.log_scores(run.path, scores, table + "\n")
    except Exception as error:   # the tracker's own: a locked or corrupt store, a server that is down, no mlflow
        raise StepFailed(f"{run.name}: scores written to {run.path / rundir.SCORES}, but the tracker refused them: "
                         f"{type(error).__name__}: {error}") from None


def _categories(run: Run, dataset: str) -> list[str] | None:
    if run.split_manifest is None or not run.split_manifest.exists():
        return None
    try:
        return score.categories_for(run.split_manifest, dataset)
    except TlfError:
        return None


def step(run_dir: Path, what: list[str], launch: Launch = Launch(), echo=print, wait: bool = False) -> None:
    """``all`` or one link of the run's chain: ``train`` | ``predict SET`` | ``score``, holding the
    run's lock, on the files manifest.json recorded."""
    rundir.refuse_symlinks(run_dir)
    run = rundir.open_run(run_dir)
    if not what or what == ["all"]:
        links = run.chain()
    elif what == [rundir.TRAINING]:
        links = _training_links(run)
        if not links:
            echo(f"{run.name}: {rundir.TRAINING}: nothing to train (a predict-only run)")
    else:
        links = [link for link in run.chain() if list(link.args) == what]
        if not links:
            raise TlfError(f"unknown step {' '.join(what)!r} for run {run.name}; expected: all | {rundir.TRAINING} | "
                           + " | ".join(" ".join(link.args) for link in run.chain()))
    rundir.check_rendered(run)
    for group in _groups(run, links, launch):
        if len(group) > 1:
            with contextlib.ExitStack() as held:
                for link in group:
                    held.enter_context(lock.hold(run.path, f"tlf step {' '.join(link.args)} of {run.name}", wait,
                                                 step=link.name))
                for link, message in run_fused(run, group, launch.worker):
                    echo(f"{run.name}: {' '.join(link.args)}: {message}")
            continue
        link = group[0]
        with lock.hold(run.path, f"tlf step {' '.join(link.args)} of {run.name}", wait, step=link.name):
            echo(f"{run.name}: {' '.join(link.args)}: {run_link(run, link.args, launch, echo)}")


def _training_links(run: Run) -> list[rundir.Link]:
    """The links before the first predict: train and, under select:, select."""
    return [link for link in run.chain() if link.name in ("train", "select")]


def predict_shared(root: Path, launch: Launch, echo=print) -> list[str]:
    """The shared predict job of a sweep on Slurm (after its array trained every run): each run's
    predicts and score, in experiment order, through the one worker ``launch`` holds, so its base
    model is read once for all of them. A run whose training is not done (its array task failed or
    was cancelled) is skipped and said; a run whose predict fails has its own record and log, and
    the others go on. Done steps are skipped: a requeued job predicts no finished set twice.
    Returns the runs that failed here."""
    experiment = rundir.Experiment(Path(root).resolve())
    failures = []
    for entry in experiment.read().runs:
        run = rundir.open_run(experiment.run_dir(entry.name))
        untrained = [link.name for link in _training_links(run) if not rundir.link_done(run, link.name)]
        if untrained:
            echo(f"{run.name}: skipped: {' and '.join(untrained)} not done (its array task did not finish: "
                 "`tlf status` says why)")
            continue
        if run.manifest.finetuning_type == "full":
            echo(f"{run.name}: a full fine-tune: predicts from its own weights, not from the shared base")
        try:
            step(run.path, ["all"], launch, echo=echo)
        except Failed as error:
            echo(f"{run.name}: FAILED: {error}")
            failures.append(run.name)
    return failures


def _groups(run: Run, links: list[rundir.Link], launch: Launch) -> list[list[rundir.Link]]:
    """The links in order, consecutive train and predict links grouped: a group of two or more
    still to do runs in one request to the caller's worker (one LLaMA-Factory process, the base
    read once for its predicts), when the launch fuses (a worker given, at most one device, no
    srun). Selection sits between a run's train and its predicts, so there the predicts fuse;
    every other link runs alone."""
    groups: list[list[rundir.Link]] = []
    fuses = launch.fuses and one_device_at_most()
    for link in links:
        if fuses and _in_lf(link) and groups and _in_lf(groups[-1][-1]):
            groups[-1].append(link)
        else:
            groups.append([link])
    return [part for group in groups for part in _split_unless_fusable(run, group)]


def _in_lf(link: rundir.Link) -> bool:
    """Whether the link is a LLaMA-Factory train or predict (what a worker runs)."""
    return link.name == "train" or link.name.startswith("predict-")


def _split_unless_fusable(run: Run, group: list[rundir.Link]) -> list[list[rundir.Link]]:
    if len(group) > 1 and sum(not rundir.link_done(run, link.name) for link in group) >= 2:
        return [group]
    return [[link] for link in group]


def run_fused(run: Run, links: list[rundir.Link], worker) -> list[tuple[rundir.Link, str]]:
    """The train and predict links in one request to ``worker`` (no imports per step or run).
    Each link keeps its own log and record (``Recorder``)."""
    todo = [link for link in links if not rundir.link_done(run, link.name)]
    messages = [(link, "done already, skipped") for link in links if link not in todo]
    recorder = Recorder(run, [link.name for link in todo])
    cause = _model_problem(run)
    resumed = _prepare_train(run) if cause is None and todo[0].name == "train" else 0
    recorder.start()
    ok = False
    if cause is None:
        for link in todo:
            record_environment(run, link.name)
            recorder.logs[link.name].parent.mkdir(parents=True, exist_ok=True)
        progress = Progress.resuming(run.train_dir / rundir.TRAINER_LOG, "train", resumed)
        with recorder.interruptible():
            ok = worker.run([(run.config(link.name), recorder.logs[link.name]) for link in todo], progress)
    recorder.finish(ok, cause, "LLaMA-Factory stopped, and no error line in the log")
    messages += [(link, _trained(resumed) if link.name == "train" else "predicted") for link in todo]
    return sorted(messages, key=lambda pair: links.index(pair[0]))


def reset_run(run_dir: Path, wait: bool = False) -> None:
    """--force: clear a run's outputs, never under a worker that is still writing them (every
    step's lock is held while the outputs go)."""
    rundir.refuse_symlinks(run_dir)
    run = rundir.open_run(run_dir)
    with contextlib.ExitStack() as held:
        for link in run.chain():
            held.enter_context(lock.hold(run.path, f"--force reset of {run.name}", wait, step=link.name))
        rundir.reset(run.path)


def step_select(run: Run, launch: Launch = Launch(), echo=print) -> str:
    """Predict the dev set with every checkpoint not predicted yet (one LLaMA-Factory process for
    all of them), score each, choose the best, prune the others' resume state, link the choice."""
    if rundir.select_done(run):
        return "done already, skipped"
    if not rundir.train_done(run):
        raise StepFailed(f"{run.name}: cannot select a checkpoint: training has not finished")
    found = selection.checkpoints(run.train_dir)
    if not found:
        raise StepFailed(f"{run.name}: training kept no complete checkpoint to select from in {run.train_dir}")
    todo = [(step, path) for step, path in found if not selection.predicted(run, step)]
    if todo:
        _predict_checkpoints(run, todo, launch)
    scored = [selection.scores(run, step) for step, _path in found]
    metric = run.select["metric"]
    for entry in scored:
        echo(f"  select: checkpoint-{entry['step']} (epoch {entry.get('epoch')}): {metric} {entry.get(metric)} %")
    chosen = selection.choose(scored, metric)
    freed = selection.prune(found)
    selection.record(run, scored, chosen, freed, found[-1][0])
    rundir.record_step(run, "select", "done", run.step_log("select"))
    return (f"checkpoint-{chosen['step']} chosen ({metric} {chosen[metric]} % on {run.select['on']}; "
            f"{len(todo)} of {len(found)} predicted now; {freed / 2**20:.1f} MiB of optimizer state pruned)")


def _predict_checkpoints(run: Run, todo: list[tuple[int, Path]], launch: Launch) -> None:
    """One `tlf-lf select` process over the checkpoints, on one card; recorded like any step."""
    recorder = Recorder(run, ["select"])
    recorder.start()
    record_environment(run, "select")
    command = [sys.executable, "-m", "telecom_lf.lf_entry", "select", str(run.config("select")), run.weights_key]
    for step, path in todo:
        command += [str(path), str(selection.output_dir(run, step))]
    with recorder.interruptible():
        rc = run_child(command, recorder.logs["select"], echo=not launch.quiet, env={**one_card(), **_share(launch)})
    missing = [step for step, _path in todo if not selection.predicted(run, step)]
    if rc != 0 or missing:
        recorder.fail("select", failure_cause(recorder.logs["select"])
                      or f"exit code {rc}; checkpoints without predictions: {missing}")


def _share(launch: Launch) -> dict[str, str]:
    """The environment that makes the select process read the base once over its checkpoints:
    under tlf run when the spec's predicts share (predict_mode: shared)."""
    return {rundir.SHARE_BASE_ENV: "1"} if launch.worker is not None and launch.worker.share_base else {}


def run_link(run: Run, args: tuple[str, ...], launch: Launch, echo=print) -> str:
    if args[0] == "train":
        return step_train(run, launch)
    if args[0] == "select":
        return step_select(run, launch, echo)
    if args[0] == "predict":
        return step_predict(run, args[1], launch)
    return step_score(run)
