"""The ``tlf`` command line: one click group, one sub-command per stage."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import TlfError


class _Group(click.Group):
    """Turns a TlfError anywhere below into one clear message and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TlfError as error:
            click.echo(f"tlf: error: {error}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tlf")
def main() -> None:
    """tlf: the blog's telecom-QA LoRA study on LLaMA-Factory and Slurm, as one tool."""


@main.group(cls=_Group)
def data() -> None:
    """Data stage: synthetic or real competition rows -> Alpaca JSON, subsets, checks."""


@data.command("synth")
@click.option("--rows", "n_rows", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV/XLSX/JSON/JSONL file, by suffix, with the competition's columns.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def data_synth(n_rows: int, seed: int, out: Path, force: bool) -> None:
    """Write competition-like raw rows (用户问题, 答案); same seed, same bytes."""
    from . import data as data_stage

    data_stage.write_synthetic(out, n_rows=n_rows, seed=seed, force=force)
    click.echo(f"wrote {n_rows} rows to {out}")


@data.command("import")
@click.argument("raw", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--name", default="telecom_all", show_default=True, help="Output file stem.")
@click.option("--question-column", default="用户问题", show_default=True)
@click.option("--answer-column", default="答案", show_default=True)
@click.option("--category-column", default=None,
              help="Balance by this column; default: the label before '_' of the answer's first item.")
@click.option("--encoding", default=None, help="Source encoding; default: UTF-8, else GB18030.")
@click.option("--sheet", default=None, help="XLSX sheet name (default: the first).")
@click.option("--instruction", default=None,
              help="Instruction template with {question}; default: the blog's, byte for byte.")
@click.option("--drop-duplicates", is_flag=True, help="Keep the first of identical rows instead of failing.")
@click.option("--force", is_flag=True, help="Overwrite existing output files that differ.")
def data_import(raw: Path, out_dir: Path, name: str, question_column: str, answer_column: str,
                category_column: str | None, encoding: str | None, sheet: str | None,
                instruction: str | None, drop_duplicates: bool, force: bool) -> None:
    """Read the competition file (CSV/XLSX/JSON/JSONL) and write Alpaca JSON."""
    from . import data as data_stage

    rows = data_stage.read_raw(raw, question_column, answer_column, category_column,
                               encoding, sheet, drop_duplicates)
    result = data_stage.import_rows(rows, raw, out_dir, name,
                                    instruction or data_stage.BLOG_INSTRUCTION, force)
    click.echo(f"wrote {result.rows} rows to {result.data_file} (categories in {result.meta_file.name})")


@data.command("split")
@click.argument("imported", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for the subsets (default: beside IMPORTED).")
@click.option("--mode", type=click.Choice(["holdout", "blog"]), default="holdout", show_default=True,
              help="blog: also write <prefix>_train_<N> with every row, as the blog did (test rows leak).")
@click.option("--test-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--train-sizes", default="100,400", show_default=True, help="Nested train subset sizes.")
@click.option("--prefix", default="telecom", show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--register-into", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="dataset_info.json to merge the entries into (default: OUT/dataset_info.json).")
@click.option("--strict-holdout", is_flag=True,
              help="Keep rows whose normalised question equals a test row's out of the train subsets.")
@click.option("--force", is_flag=True, help="Overwrite differing files and entries.")
def data_split(imported: Path, out_dir: Path | None, mode: str, test_size: int, train_sizes: str,
               prefix: str, seed: int, register_into: Path | None, strict_holdout: bool, force: bool) -> None:
    """Cut seeded, class-balanced subsets (largest remainder) and register them."""
    from . import data as data_stage

    try:
        sizes = tuple(int(s) for s in train_sizes.split(",") if s.strip())
    except ValueError as error:
        raise TlfError(f"--train-sizes {train_sizes!r}: expected comma-separated integers") from error
    records, categories, meta = data_stage.load_imported(imported)
    requests = data_stage.default_requests(test_size, sizes, prefix, mode)
    questions = [r["instruction"] for r in records] if strict_holdout else None
    plan = data_stage.plan_splits(categories, requests, seed, mode, questions)
    files, manifest = data_stage.render_splits(records, categories, plan, meta, imported)
    out_dir = out_dir or imported.parent
    data_stage.write_splits(out_dir, files, manifest, force, register_into)
    for warning in plan.warnings:
        click.secho(f"WARNING: {warning}", fg="red", bold=True, err=True)
    for name, split in manifest["splits"].items():
        click.echo(f"{name:28s} {split['rows']:6d} rows  ({split['role']})")
    if strict_holdout:
        click.echo(f"strict hold-out: {plan.excluded} rows kept out of the train subsets "
                   "(their normalised question is a test question)")
    click.echo(f"manifest: {out_dir / data_stage.MANIFEST}")


@data.command("check")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Exit 1 when any problem (leakage included) is found.")
def data_check(manifest: Path, strict: bool) -> None:
    """Report train/test leakage, duplicates, empty answers and class counts per split."""
    from . import data as data_stage

    report = data_stage.check(manifest)
    click.echo(report.table.to_string())
    for problem in report.problems:
        click.echo(f"PROBLEM: {problem}")
    if not report.problems:
        click.echo("no leakage, duplicates or empty answers found")
    if strict and report.problems:
        sys.exit(1)


@data.command("register")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--into", "info", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The dataset_info.json to merge into, e.g. LLaMA-Factory/data/dataset_info.json.")
@click.option("--force", is_flag=True, help="Replace entries of the same name that differ.")
def data_register(manifest: Path, info: Path, force: bool) -> None:
    """Merge a split's entries into another dataset_info.json, keeping all its entries."""
    import json

    from . import data as data_stage

    manifest = manifest / data_stage.MANIFEST if manifest.is_dir() else manifest
    if not manifest.exists():
        raise TlfError(f"{manifest}: no split manifest")
    splits = json.loads(manifest.read_text(encoding="utf-8"))["splits"]
    entries = data_stage.split_entries(splits, manifest.parent, info)
    changed = data_stage.register(info, entries, force)
    click.echo(f"{info}: {len(changed)} entries added or replaced, {len(entries) - len(changed)} unchanged")


SPEC_ARGUMENT = click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
RUNS_OUT_OPTION = click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                               show_default=True)
SET_OPTION = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a spec key (dotted, YAML value), e.g. model=/models/tiny "
                               "or predict.fp16=false. Repeatable.")


def _load_spec(spec_path: Path, overrides):
    from . import spec as spec_mod

    return spec_mod.load(spec_path, list(overrides))


@main.command()
@SPEC_ARGUMENT
@RUNS_OUT_OPTION
@click.option("--dry-run", is_flag=True, help="Print what would be written; write nothing.")
@click.option("--force", is_flag=True, help="Re-render over runs that already have outputs.")
@SET_OPTION
def render(spec_path: Path, out: Path, dry_run: bool, force: bool, overrides) -> None:
    """Render SPEC into LLaMA-Factory YAMLs, sbatch files and manifests, one directory per run."""
    from . import render as render_mod

    spec = _load_spec(spec_path, overrides)
    runs, files = render_mod.plan_and_render(spec, out)
    if dry_run:
        for path, blob in sorted(files.items()):
            state = "same" if path.exists() and path.read_bytes() == blob else "write"
            click.echo(f"{state:5s} {path}  ({len(blob)} bytes)")
        click.echo(f"{len(runs)} run(s); dry run: nothing written")
        return
    changed = render_mod.write_files(files, force)
    for run in runs:
        click.echo(f"{run.name:40s} {render_mod.layout(spec, out).run_dir(run)}")
    click.echo(f"{len(runs)} run(s), {len(changed)} file(s) written, {len(files) - len(changed)} unchanged")


@main.command()
@SPEC_ARGUMENT
@click.option("--run", "run_name", default=None, help="Diff this run of a sweep (default: the first).")
@click.option("--all", "show_all", is_flag=True, help="Also list arguments equal to the default.")
@SET_OPTION
def diff(spec_path: Path, run_name: str | None, show_all: bool, overrides) -> None:
    """Every training argument SPEC sets, against the installed LLaMA-Factory's defaults."""
    from . import diff as diff_mod
    from . import plan as plan_mod

    spec = _load_spec(spec_path, overrides)
    runs = plan_mod.expand(spec)
    chosen = next((r for r in runs if r.name == run_name), None) if run_name else runs[0]
    if chosen is None:
        raise TlfError(f"{spec_path}: no run named {run_name!r}; runs: {', '.join(r.name for r in runs)}")
    click.echo(f"run {chosen.name} of {spec.path}")
    click.echo(diff_mod.table(spec, chosen, show_all).to_string(index=False))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("what", nargs=-1)
def step(run_dir: Path, what: tuple[str, ...]) -> None:
    """Run steps of one rendered run: all | train | predict SET | score (the sbatch entry point).

    A step whose outputs are complete is skipped, so a requeued job goes on where it stopped.
    """
    from . import launch

    try:
        launch.step(run_dir, list(what))
    except launch.StepFailed as error:
        click.echo(f"tlf: {error}", err=True)
        sys.exit(1)


@main.command()
@SPEC_ARGUMENT
@RUNS_OUT_OPTION
@click.option("--only", "only", multiple=True, help="Run only this run (repeatable).")
@click.option("--force", is_flag=True, help="Rerun from scratch: remove the selected runs' outputs first.")
@SET_OPTION
def run(spec_path: Path, out: Path, only, force: bool, overrides) -> None:
    """Render SPEC and run every step locally, without Slurm, then write the report."""
    spec = _load_spec(spec_path, overrides)
    _run_spec(spec, out, only, force)


def _run_spec(spec, out: Path, only=(), force: bool = False):
    from . import launch
    from . import render as render_mod
    from . import report as report_mod

    runs, files = render_mod.plan_and_render(spec, out)
    names = [r.name for r in runs]
    unknown = [o for o in only if o not in names]
    if unknown:
        raise TlfError(f"--only {unknown[0]!r}: no such run; runs: {', '.join(names)}")
    selected = [r for r in runs if not only or r.name in only]
    where = render_mod.layout(spec, out)
    if force:
        for chosen in selected:
            launch.reset_run(where.run_dir(chosen))
    render_mod.write_files(files, force)
    failures = []
    for index, chosen in enumerate(selected, start=1):
        click.echo(f"[{index}/{len(selected)}] {chosen.name}")
        try:
            launch.step(where.run_dir(chosen), ["all"], quiet=True, echo=lambda m: click.echo(f"  {m}"))
        except launch.StepFailed as error:
            click.echo(f"  FAILED: {error}", err=True)
            failures.append(chosen.name)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: finished steps are kept; run the same command to go on", err=True)
            sys.exit(130)
    path, table = report_mod.write_report(where.root)
    click.echo(f"\nreport: {path}")
    if failures:
        click.echo(f"{len(failures)} run(s) failed: {', '.join(failures)}", err=True)
        sys.exit(1)
    return path, table


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"), show_default=True)
@click.option("--force", is_flag=True, help="Rerun the sweep from scratch (data and base model are kept).")
def demo(out: Path, force: bool) -> None:
    """The blog's whole study in miniature on this CPU: data, tiny model, sweep, scores, report."""
    import time

    from . import demo as demo_mod

    started = time.monotonic()
    out = out.resolve()
    data_dir = demo_mod.prepare_data(out, click.echo)
    base = demo_mod.prepare_base_model(out, click.echo)
    spec = _load_spec(demo_mod.demo_spec_path(), [f"model={base}", f"data.dir={data_dir}"])
    path, table = _run_spec(spec, out / "runs", (), force)
    columns = ["run", "state", "trainable_params", "final_loss"] + [
        c for c in table.columns if c.split("[")[0] in ("acc", "long_recall", "rouge-1")]
    click.echo("")
    click.echo(table[columns].to_string(index=False))
    click.echo(f"\nreport with plots: {path}  ({time.monotonic() - started:.0f} s)")


@main.command()
@SPEC_ARGUMENT
@RUNS_OUT_OPTION
@click.option("--test-only", is_flag=True, help="Ask `sbatch --test-only` about every script; submit nothing.")
@click.option("--force", is_flag=True, help="Re-render over runs that already have outputs.")
@SET_OPTION
def submit(spec_path: Path, out: Path, test_only: bool, force: bool, overrides) -> None:
    """Render SPEC and submit it to Slurm; returns at once.

    One run or a model comparison: per run train -> predict(s) -> score chained with afterok.
    A sweep: one job array (--array=0-N%K). Then one report job after everything.
    """
    from . import launch
    from . import render as render_mod
    from . import slurm as slurm_mod

    spec = _load_spec(spec_path, overrides)
    if not spec.cluster:
        raise TlfError(f"{spec.where('cluster')}: `tlf submit` needs a cluster profile (e.g. cluster: dcu)")
    runs, files = render_mod.plan_and_render(spec, out)
    render_mod.write_files(files, force)
    root = render_mod.layout(spec, out).root
    if test_only:
        scripts = [root / r.name / slurm_mod.JOB_SCRIPT for r in runs]
        scripts += [root / slurm_mod.ARRAY_SCRIPT, root / slurm_mod.REPORT_SCRIPT]
        results = launch.test_only(scripts)
        for script, rc, message in results:
            click.echo(f"{'ok  ' if rc == 0 else 'FAIL'} {script}: {message.splitlines()[-1] if message else ''}")
        if any(rc for _, rc, _ in results):
            sys.exit(1)
        return
    as_array = spec.sweep is not None and len(runs) > 1
    try:
        record = launch.submit(root, [r.name for r in runs], spec.predict_sets, as_array)
    except launch.StepFailed as error:
        click.echo(f"tlf: {error}", err=True)
        sys.exit(1)
    if as_array:
        click.echo(f"array {record['array']} ({len(runs)} runs), report {record['report']}")
    else:
        for name, ids in record["runs"].items():
            click.echo(f"{name}: " + ", ".join(f"{k} {v}" for k, v in ids.items()))
        click.echo(f"report {record['report']}")
    click.echo(f"job ids recorded in {root / launch.JOBS}; `tlf status {spec_path}` shows progress")


@main.command()
@SPEC_ARGUMENT
@RUNS_OUT_OPTION
@SET_OPTION
def status(spec_path: Path, out: Path, overrides) -> None:
    """Per run: Slurm job states (squeue/sacct) and which artifacts exist."""
    import json

    from . import launch
    from . import plan as plan_mod
    from . import render as render_mod

    spec = _load_spec(spec_path, overrides)
    root = render_mod.layout(spec, out).root
    runs = plan_mod.expand(spec)
    history = json.loads((root / launch.JOBS).read_text()) if (root / launch.JOBS).exists() else []
    last = history[-1] if history else {"runs": {}}
    ids = [v for ids in last["runs"].values() for v in ids.values()] + ([last["report"]] if "report" in last else [])
    states = launch.job_states(ids)
    for chosen in runs:
        run_dir = root / chosen.name
        if not (run_dir / render_mod.MANIFEST).exists():
            click.echo(f"{chosen.name:36s} not rendered")
            continue
        rundir = launch.open_run(run_dir)
        artifacts = ["train:" + ("done" if launch.train_done(rundir) else "-" if rundir.trains else "n/a")]
        artifacts += [f"predict[{s}]:" + ("done" if launch.predict_done(rundir, s) else "-") for s in rundir.predict_sets]
        artifacts.append("score:" + ("done" if launch.score_done(rundir) else "-"))
        jobs = " ".join(f"{k}={v}:{states.get(v, '?')}" for k, v in last["runs"].get(chosen.name, {}).items())
        click.echo(f"{chosen.name:36s} {' '.join(artifacts)}  {jobs}")
    if "report" in last:
        click.echo(f"report job {last['report']}: {states.get(last['report'], '?')}")


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
def score(predictions: Path, manifest: Path | None, split: str | None, long_threshold: int,
          json_out: Path | None, skip_bad: bool) -> None:
    """Score a generated_predictions.jsonl: exact match, long-answer recall, BLEU/ROUGE, item F1."""
    import json

    from . import score as score_mod
    from .fsutil import atomic_write

    read = score_mod.read_predictions(predictions, skip_bad)
    categories = None
    if manifest is not None:
        split = split or predictions.parent.name.removeprefix("predict-")
        categories = score_mod.categories_for(manifest, split)
    scores = score_mod.score_rows(read.rows, long_threshold, categories)
    scores["skipped"] = len(read.skipped)
    scores["format"] = read.format
    for message in read.skipped:
        click.echo(f"skipped: {message}", err=True)
    click.echo(score_mod.format_table(scores))
    if json_out:
        atomic_write(json_out, json.dumps(scores, ensure_ascii=False, indent=2) + "\n")


@main.command()
@click.argument("spec_path", metavar="SPEC", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory (default: <experiment>/report).")
@click.option("--runs", "runs_root", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="Where the experiment was rendered (render's --out).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The experiment directory itself (what report.sbatch passes), instead of SPEC.")
@SET_OPTION
def report(spec_path: Path | None, out: Path | None, runs_root: Path, root: Path | None, overrides) -> None:
    """One comparison table (Markdown, CSV) and plots over every run of an experiment."""
    from . import render as render_mod
    from . import report as report_mod

    if root is None:
        if spec_path is None:
            raise TlfError("give SPEC or --root EXPERIMENT_DIR")
        root = render_mod.layout(_load_spec(spec_path, overrides), runs_root).root
    path, table = report_mod.write_report(root, out)
    click.echo(table.to_string(index=False))
    click.echo(f"\nreport: {path}")


@main.group(cls=_Group)
def model() -> None:
    """Local models for tests and the demo."""


@model.command("tiny")
@click.option("--arch", type=click.Choice(["gemma", "llama"]), default="gemma", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
def model_tiny(arch: str, out: Path, force: bool) -> None:
    """Build a tiny random-weight causal LM with a locally trained tokenizer."""
    from . import tiny

    if out.exists() and any(out.iterdir()) and not force:
        raise TlfError(f"{out} exists and is not empty; pass --force to replace it")
    tiny.build(out, tiny.TinySpec(arch=arch))
    click.echo(f"wrote tiny {arch} model to {out}")


if __name__ == "__main__":
    main()
