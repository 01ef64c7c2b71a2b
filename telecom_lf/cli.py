"""The ``tlf`` command line: one click group, one sub-command per stage."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from . import __version__, rundir
from .cli_base import SET_OPTION, Group, load_spec, say, spec_options
from .cli_data import data, model
from .cli_use import chat, export, probe
from .errors import Failed, TlfError


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "terminal_width": 120,
                                  "max_content_width": 120})
@click.version_option(__version__, prog_name="tlf")
def main() -> None:
    """tlf: the blog's telecom-QA LoRA study on LLaMA-Factory and Slurm, as one tool."""


@main.command("spec")
@click.argument("spec_path", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--help-keys", is_flag=True, help="Print every key a spec may hold, with its default and help.")
@click.option("--markdown", is_flag=True, help="With --help-keys: as the README's Markdown table.")
@SET_OPTION
def spec_command(spec_path: Path | None, help_keys: bool, markdown: bool, overrides) -> None:
    """Validate SPEC and list its runs, or (--help-keys) print every key a spec may hold."""
    from . import plan as plan_mod
    from . import spec as spec_mod

    if help_keys:
        if markdown:
            say(spec_mod.schema_markdown(), nl=False)
            return
        for key, default, text in spec_mod.schema_rows():
            say(f"{key:26s} {default:22s} {text}")
        return
    if spec_path is None:
        raise TlfError("give SPEC to validate, or --help-keys")
    loaded = load_spec(spec_path, overrides)
    runs = plan_mod.expand(loaded)
    say(f"{spec_path}: valid; experiment {loaded.name}, {len(runs)} run(s): {', '.join(r.name for r in runs)}")


@main.command()
@spec_options(click.option("--dry-run", is_flag=True, help="Print what would be written; write nothing."),
              click.option("--force", is_flag=True, help="Re-render over runs that already have outputs."))
def render(spec_path: Path, out: Path, dry_run: bool, force: bool, overrides) -> None:
    """Render SPEC into LLaMA-Factory YAMLs, sbatch files and manifests, one directory per run."""
    from . import render as render_mod

    spec = load_spec(spec_path, overrides)
    runs, files = render_mod.plan_and_render(spec, out)
    changed = render_mod.plan_writes(files, force)  # a dry run refuses exactly what a real one would
    if dry_run:
        for path in sorted(files):
            say(f"{'write' if path in changed else 'same':5s} {path}  ({len(files[path])} bytes)")
        say(f"{len(runs)} run(s); dry run: nothing written")
        return
    render_mod.write_files(files, force, changed)
    where = render_mod.layout(spec, out)
    for run in runs:
        say(f"{run.name:40s} {where.run_dir(run.name)}")
    say(f"{len(runs)} run(s), {len(changed)} file(s) written, {len(files) - len(changed)} unchanged")
    _print_next_steps(spec, spec_path, out, where, runs)


def next_command(verb: str, spec_path: Path, out: Path) -> str:
    """A command line to copy and paste: quoted, with --out, and ``--`` before a spec path that
    begins with '-' (it would read as an option)."""
    from shlex import quote

    path = quote(str(spec_path))
    return f"tlf {verb} --out {quote(str(out))} {'-- ' if str(spec_path).startswith('-') else ''}{path}"


def _print_next_steps(spec, spec_path: Path, out: Path, where, runs) -> None:
    from shlex import quote

    from . import rundir

    if spec.cluster.profile is None:
        say(f"\nnext: {next_command('run', spec_path, out)}")
        return
    say(f"\nnext, one of:\n  {next_command('submit', spec_path, out)}      # chains (a sweep: one job array), "
               "then the report")
    say(f"  bash {quote(str(where.root / rundir.SUBMIT_SCRIPT))}      # the same chains with plain sbatch")
    for run in runs:
        say(
            f"  sbatch {quote(str(where.run_dir(run.name) / rundir.JOB_SCRIPT))}"
            f"      # {run.name}: all steps in one job"
        )


@main.command()
@spec_options(click.option("--run", "run_name", default=None, help="Diff this run of a sweep (default: the first)."),
              click.option("--all", "show_all", is_flag=True, help="Also list arguments equal to the default."))
def diff(spec_path: Path, out: Path, run_name: str | None, show_all: bool, overrides) -> None:
    """Every training argument SPEC sets, against the installed LLaMA-Factory's defaults."""
    from . import diff as diff_mod
    from . import plan as plan_mod

    spec = load_spec(spec_path, overrides)
    runs = plan_mod.expand(spec)
    chosen = next((r for r in runs if r.name == run_name), None) if run_name else runs[0]
    if chosen is None:
        raise TlfError(f"{spec_path}: no run named {run_name!r}; runs: {', '.join(r.name for r in runs)}")
    say(f"run {chosen.name} of {spec.path}")
    say(diff_mod.table(spec, chosen, out, show_all).to_string(index=False))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("what", nargs=-1)
@click.option("--srun-nodes", type=click.IntRange(min=1), default=None,
              help="Train with one srun task per node on this many nodes (multi-card Slurm jobs).")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --srun-nodes: training processes (cards) per node.")
@click.option("--wait", is_flag=True, help="If another worker holds the run, wait for it instead of refusing.")
def step(run_dir: Path, what: tuple[str, ...], srun_nodes: int | None, nproc_per_node: int, wait: bool) -> None:
    """Run steps of one rendered run: all | training | train | select | predict SET | score (sbatch's entry).

    A step whose outputs are complete is skipped, so a requeued job goes on where it stopped.
    """
    from . import executor

    executor.step(run_dir, list(what), executor.Launch(srun_nodes=srun_nodes, nproc_per_node=nproc_per_node),
                  wait=wait)


@main.command("predict-shared")
@click.argument("experiment_dir", type=click.Path(file_okay=False, path_type=Path))
def predict_shared(experiment_dir: Path) -> None:
    """Predict and score every trained run in one process, the base read once (a sweep's Slurm job).

    predict_mode: shared: predict.sbatch runs it after the sweep's array trained every run. Runs
    whose training is not done are skipped; done steps are skipped, so a requeued job goes on.
    """
    from . import executor, processes

    with processes.Worker(share_base=True) as worker:
        failures = executor.predict_shared(experiment_dir, executor.Launch(worker=worker))
    if failures:
        raise Failed(f"{len(failures)} run(s) failed to predict or score: {', '.join(failures)}")


@main.command()
@spec_options(
    click.option("--only", "only", multiple=True, help="Run only this run (repeatable)."),
    click.option("--force", is_flag=True, help="Rerun from scratch: remove the selected runs' outputs first."),
    click.option("--wait", is_flag=True, help="Wait for another worker on a run instead of refusing."),
)
def run(spec_path: Path, out: Path, only, force: bool, wait: bool, overrides) -> None:
    """Render SPEC and run every step locally, without Slurm, then write the report."""
    _run_spec(load_spec(spec_path, overrides), out, only, force, wait)


def _run_spec(spec, out: Path, only=(), force: bool = False, wait: bool = False, worker=None):
    """Render and run ``spec`` here. ``worker``: the caller's LLaMA-Factory process (tlf demo);
    without one, this call holds its own for its runs."""
    from . import executor, processes, scheduler
    from . import render as render_mod

    runs, files = render_mod.plan_and_render(spec, out)
    names = [r.name for r in runs]
    unknown = [o for o in only if o not in names]
    if unknown:
        raise TlfError(f"--only {unknown[0]!r}: no such run; runs: {', '.join(names)}")
    selected = [n for n in names if not only or n in only]
    where = render_mod.layout(spec, out)
    changed = render_mod.plan_writes(files, force)
    if force:
        for name in selected:
            if where.run_dir(name).is_dir():
                executor.reset_run(where.run_dir(name), wait)
    render_mod.write_files(files, force, changed)
    say(f"experiment {spec.name}: {where.root} ({len(selected)} of {len(names)} run(s) here)")
    _prepare_tracker(where)
    try:
        with contextlib.ExitStack() as stack:
            worker = worker or stack.enter_context(processes.Worker(spec.speed.predict_mode == "shared"))
            result = scheduler.run_local(where, selected, say, lambda m: say(m, err=True), wait, worker)
    except KeyboardInterrupt:
        say("\ninterrupted: finished steps are kept; run the same command to go on", err=True)
        sys.exit(130)
    say("")
    _print_report(result.report)
    if result.failures:
        say(f"{len(result.failures)} run(s) failed: {', '.join(result.failures)}", err=True)
        sys.exit(1)
    return result.report


def _prepare_tracker(where) -> None:
    """tracking: mlflow: the store and the MLflow experiment made before any step starts (array tasks
    then only add runs to it), and a tracker that cannot be reached said now, not by every job."""
    from . import tracking

    tracked = tracking.read(where.root)
    if tracked is None or tracked.kind != "mlflow":
        return
    try:
        experiment_id = tracking.prepare_store(tracked)
    except TlfError:
        raise
    except Exception as error:
        raise TlfError(f"tracking: mlflow: {tracked.uri}: {type(error).__name__}: {error}") from None
    say(f"tracking: MLflow experiment {tracked.experiment!r} (id {experiment_id}) in {tracked.uri}")


def _print_report(report) -> None:
    say(report.terminal)
    say(
        f"\nreport: {report.html}\n  open it in a browser (one self-contained file: the sortable table, plots and "
        f"each question's answers); also report.md and report.csv in {report.directory}"
    )
    if report.tracker:
        port = report.tracker.rsplit(" ", 1)[-1]
        say(f"tracker: {report.tracker}\n  then open http://127.0.0.1:{port} in a browser (from another machine: "
            f"ssh -L {port}:127.0.0.1:{port} to this one first)")


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"), show_default=True)
@click.option("--force", is_flag=True, help="Rerun the sweep from scratch (data and base model are kept).")
def demo(out: Path, force: bool) -> None:
    """The blog's whole study in miniature on this CPU: data, tiny model, sweep, scores, report."""
    import time

    from . import demo as demo_mod

    started = time.monotonic()
    out = out.resolve()
    from . import processes

    data_dir = demo_mod.prepare_data(out, say)
    base = demo_mod.prepare_base_model(out, say)
    spec = load_spec(demo_mod.demo_spec_path(), [f"model={base}", f"data.dir={data_dir}"])
    # One LLaMA-Factory process for every run's train and predicts.
    with processes.Worker(spec.speed.predict_mode == "shared") as worker:
        _run_spec(spec, out / "runs", (), force, worker=worker)
    say(f"\ndemo finished in {time.monotonic() - started:.0f} s")


@main.command()
@spec_options(
    click.option("--test-only", is_flag=True, help="Ask `sbatch --test-only` about every script; submit nothing."),
    click.option("--force", is_flag=True, help="Re-render over runs with outputs, and redo those whose files changed."),
)
def submit(spec_path: Path, out: Path, test_only: bool, force: bool, overrides) -> None:
    """Render SPEC and submit what is not done yet to Slurm; returns at once.

    One run or a model comparison: per run train -> predict(s) -> score chained with afterok.
    A sweep: one job array (--array=...%K); under predict_mode: shared (the default) its tasks
    train, then one job predicts every run with the base read once. Then one report job.
    """
    from . import executor, rundir, scheduler, slurm
    from . import render as render_mod

    spec = load_spec(spec_path, overrides)
    if spec.cluster.profile is None:
        raise TlfError(f"{spec.where('cluster')}: `tlf submit` needs a cluster profile (e.g. cluster: dcu)")
    runs, files = render_mod.plan_and_render(spec, out)
    where = render_mod.layout(spec, out)
    if not test_only:
        _refuse_active_jobs(spec, where, [r.name for r in runs])
    changed = render_mod.plan_writes(files, force)
    for run_dir in {p.parent for p in changed if p.name != rundir.MANIFEST and p.parent.parent == where.root}:
        if run_dir.is_dir():
            executor.reset_run(run_dir)  # --force: results of an older rendering must not pass as this one's
    render_mod.write_files(files, force, changed)
    names = [r.name for r in runs]
    if not test_only:
        _prepare_tracker(where)
    if test_only:
        _test_only([where.run_dir(n) / rundir.JOB_SCRIPT for n in names]
                   + [where.root / rundir.ARRAY_SCRIPT, where.root / rundir.REPORT_SCRIPT])
        return
    as_array = spec.sweep is not None and len(runs) > 1
    shared = as_array and slurm.shares_predicts(spec, runs)
    record = scheduler.submit(where, names, as_array, spec.cluster.profile.array_parallel, shared)
    if record is None:
        say(f"nothing to do: all {len(names)} run(s) are done (--force redoes runs whose files changed)")
        return
    if as_array:
        predict = f", then predict {record['predict']} (every run, the base read once)" if "predict" in record else ""
        say(f"array {record['array']} ({len(record['runs'])} of {len(runs)} runs){predict}, report {record['report']}")
    else:
        for name, ids in record["runs"].items():
            say(f"{name}: " + ", ".join(f"{k} {v}" for k, v in ids.items()))
        say(f"report {record['report']}")
    say(f"job ids recorded in {where.root / rundir.JOBS}; `{next_command('status', spec_path, out)}` shows "
               "progress")


def _refuse_active_jobs(spec, where, names: list[str]) -> None:
    """A second submit while the first's jobs are queued or running would train runs twice."""
    from . import scheduler, slurm

    active = scheduler.active_jobs(where, [slurm.job_name(spec, n) for n in [*names, "sweep", "predict", "report"]])
    if active:
        raise TlfError(f"jobs of experiment {spec.name} are still queued or running: {', '.join(active)}; "
                       "let them finish (`tlf status`) or scancel them, then submit again")


def _test_only(scripts: list[Path]) -> None:
    from . import scheduler

    results = scheduler.test_only(scripts)
    for script, rc, message in results:
        say(f"{'ok  ' if rc == 0 else 'FAIL'} {script}: {message.splitlines()[-1] if message else ''}")
    if any(rc for _, rc, _ in results):
        sys.exit(1)


@main.command(epilog=f"States: {rundir.STATE_LEGEND}")
@spec_options()
def status(spec_path: Path, out: Path, overrides) -> None:
    """Per run: its state, artifacts, Slurm jobs (tlf submit's and plain sbatch's) and failure causes.

    Exit status: 0 when every run is done; 1 when a run failed, was cancelled, timed out, was
    preempted or interrupted, or Slurm could not be asked; 3 when runs are still to run or running.
    """
    from collections import Counter

    from . import plan as plan_mod
    from . import render as render_mod
    from . import scheduler, slurm

    spec = load_spec(spec_path, overrides, require_model=False)
    names = [r.name for r in plan_mod.expand(spec)]
    # A spec without a cluster has no jobs to ask Slurm about (a login node's Slurm being down is no problem of it).
    job_names = {n: slurm.job_name(spec, n) for n in names} if spec.cluster.name else {}
    where = render_mod.layout(spec, out)
    say(f"experiment {spec.name}: {where.root}" + ("" if where.root.is_dir() else
                                                    f" (not rendered there: is --out {out} the runs root it was "
                                                    "rendered into?)"))
    lines, problem, words = scheduler.status_lines(where, names, job_names)
    for line in lines:
        say(line)
    say(f"{len(words)} run(s): " + ", ".join(f"{n} {w}" for w, n in Counter(words).items()))
    if problem:
        raise Failed(problem)
    if any(word in scheduler.NOT_FINISHED_BADLY for word in words):
        sys.exit(1)
    if any(word != "done" for word in words):
        sys.exit(3)


@main.command()
@click.argument("predictions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", "manifest", type=click.Path(path_type=Path), default=None,
              help="Split manifest (or its directory) for per-category accuracy.")
@click.option("--split", default=None, help="The split the predictions are of (default: from the path).")
@click.option("--long-threshold", type=click.IntRange(min=0), default=10, show_default=True,
              help="A label longer than this many characters is a 'long answer'.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the scores as JSON here.")
@click.option("--skip-bad", is_flag=True, help="Skip malformed lines (counted) instead of failing.")
@click.option("--against", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="B.jsonl",
              help="Compare with another predictions file of the same questions: paired tests and 95 % intervals.")
def score(predictions: Path, manifest: Path | None, split: str | None, long_threshold: int,
          json_out: Path | None, skip_bad: bool, against: Path | None) -> None:
    """Score a generated_predictions.jsonl: exact match, long-answer recall, BLEU/ROUGE, item F1.

    With --against B.jsonl: is the difference from B distinguishable from noise? Exact McNemar
    for exact match and long-answer recall, a paired permutation test for ROUGE-1, paired
    bootstrap 95 % intervals of each difference (A - B, percentage points)."""
    import json

    from . import rundir
    from . import score as score_mod
    from .fsutil import atomic_write

    if json_out is not None:
        _check_score_json(json_out, [predictions, against, manifest,
                                     *([manifest / rundir.SPLIT_MANIFEST] if manifest and manifest.is_dir() else [])])
    if against is not None:
        _score_against(predictions, against, json_out, skip_bad, long_threshold)
        return
    read = score_mod.read_predictions(predictions, skip_bad)
    categories = None
    if manifest is not None:
        split = split or predictions.parent.name.removeprefix("predict-")
        categories = score_mod.categories_for(manifest, split)
    scores = {"tool": SCORE_JSON_TOOL, **score_mod.score_rows(read.rows, long_threshold, categories)}
    scores["skipped"] = len(read.skipped)
    scores["format"] = read.format
    for message in read.skipped:
        say(f"skipped: {message}", err=True)
    say(score_mod.format_table(scores))
    if json_out:
        atomic_write(json_out, json.dumps(scores, ensure_ascii=False, indent=2) + "\n")


SCORE_JSON_TOOL = "tlf score"


def _check_score_json(json_out: Path, given) -> None:
    """--json replaces only a file tlf's score wrote (its "tool" key): not a manifest, not a
    dataset_info.json, not any other file a user gives by mistake."""
    import json

    from . import inputs, paths

    paths.check_output_file(json_out, "--json", given)
    if json_out.exists():
        try:
            tool = json.loads(inputs.read_input(json_out, "record")).get("tool")
        except (TlfError, ValueError, AttributeError):
            tool = None
        if tool != SCORE_JSON_TOOL:
            raise TlfError(f"--json {json_out}: exists and is not a score file tlf wrote; remove it yourself or "
                           "choose another path")


def _score_against(a: Path, b: Path, json_out: Path | None, skip_bad: bool, long_threshold: int) -> None:
    import json

    from . import compare
    from . import score as score_mod
    from .fsutil import atomic_write

    if long_threshold != score_mod.LONG_THRESHOLD:
        raise TlfError("--long-threshold is not taken with --against (the comparison uses the blog's 10 characters)")
    rows_a = score_mod.read_predictions(a, skip_bad).rows
    rows_b = score_mod.read_predictions(b, skip_bad).rows
    result = {"tool": SCORE_JSON_TOOL, **compare.compare_files(a, b, rows_a, rows_b)}
    say(compare.describe(result["metrics"], str(a), str(b)))
    if json_out:
        atomic_write(json_out, json.dumps(result, ensure_ascii=False, indent=2) + "\n")


@main.command()
@click.argument("spec_path", metavar="SPEC", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "--runs", "runs_root", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="The runs root the experiment was rendered into (render's --out).")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the report (default: <experiment>/report).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The experiment directory itself (what report.sbatch passes), instead of SPEC.")
@click.option("--force", is_flag=True, help="Write into a --report-dir that holds files tlf did not write "
                                            "(theirs are never deleted).")
@SET_OPTION
def report(spec_path: Path | None, runs_root: Path, report_dir: Path | None, root: Path | None, force: bool,
           overrides) -> None:
    """One comparison table (Markdown, CSV) and plots over every run of an experiment."""
    from . import render as render_mod
    from . import report as report_mod

    if root is None:
        if spec_path is None:
            raise TlfError("give SPEC or --root EXPERIMENT_DIR")
        root = render_mod.layout(load_spec(spec_path, overrides, require_model=False), runs_root).root
    _print_report(report_mod.write_report(root, report_dir, force))


# ---------------------------------------------------------------- using what a study found

for command in (data, model, chat, probe, export):
    main.add_command(command)


if __name__ == "__main__":
    main()
