"""``tlf chat``, ``tlf probe`` and ``tlf export``: the commands that use what a run trained."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli_base import RUNS_OUT_OPTION, SET_OPTION, Command, load_spec, say
from .errors import TlfError


def _export_target(to: Path | None, deprecated_out: Path | None) -> Path:
    """--to, or the deprecated --out (one release, with a warning): where the export goes."""
    if to is not None and deprecated_out is not None:
        raise TlfError("give --to DIR only (--out is its deprecated old name)")
    if deprecated_out is not None:
        say("tlf: warning: `tlf export --out` is deprecated; use --to DIR (--out means the runs root in "
                   "every other command, and will here too in the next release)", err=True)
        return deprecated_out
    if to is None:
        raise click.UsageError("Missing option '--to' (the directory to write the merged model to).")
    return to


TARGET_ARGUMENT = click.argument("target", metavar="SPEC|RUN_DIR", type=click.Path(exists=True, path_type=Path))
RUN_OPTION = click.option("--run", "run_name", default=None, help="The run of SPEC (not needed with RUN_DIR).")
CHECKPOINT_OPTION = click.option("--checkpoint", default=None, metavar="STEP",
                                 help="A kept checkpoint's step instead of the final adapter.")


def _experiment_runs(target: Path, out: Path, overrides):
    """SPEC -> (spec, its rendered runs); RUN_DIR -> (None, [that run])."""
    from . import plan as plan_mod
    from . import render as render_mod
    from . import rundir

    if target.is_dir():
        return None, [rundir.open_run(target)]
    spec = load_spec(target, overrides, require_model=False)
    where = render_mod.layout(spec, out)
    return spec, [rundir.open_run(where.run_dir(r.name)) for r in plan_mod.expand(spec)]


def _one_run(target: Path, out: Path, run_name: str | None, overrides):
    spec, runs = _experiment_runs(target, out, overrides)
    names = [r.name for r in runs]
    if run_name is None and len(runs) == 1:
        return spec, runs[0]
    if run_name is None or run_name not in names:
        given = "give --run NAME" if run_name is None else f"--run {run_name!r}: no such run"
        raise TlfError(f"{target}: {given}; runs: {', '.join(names)}")
    return spec, runs[names.index(run_name)]


@click.command(cls=Command)
@TARGET_ARGUMENT
@RUN_OPTION
@RUNS_OUT_OPTION
@CHECKPOINT_OPTION
@click.option("--base", is_flag=True, help="Chat with the base model (no adapter), as the blog did before training.")
@click.option("--raw", is_flag=True, help="Send what you type as the whole prompt (no instruction wrapper).")
@click.option("--history", is_flag=True, help="Keep the conversation (default: each question asked fresh, as predict).")
@click.option("--srun", is_flag=True, help="Run the chat on a compute node: srun --pty from SPEC's cluster profile.")
@SET_OPTION
def chat(target: Path, run_name: str | None, out: Path, checkpoint: str | None, base: bool, raw: bool,
         history: bool, srun: bool, overrides) -> None:
    """Talk to a run's model in the terminal, with its adapter, template, decoding and instruction."""
    from . import chat as chat_mod
    from . import use

    spec, run = _base_run(target, out, overrides) if base and run_name is None else _one_run(target, out, run_name,
                                                                                              overrides)
    model = use.resolve(run, checkpoint, base)
    if srun:
        _chat_on_node(spec, run.path, [f"--checkpoint={checkpoint}"] * bool(checkpoint)
                      + ["--base"] * base + ["--raw"] * raw + ["--history"] * history)
    sys.exit(chat_mod.chat(model, raw, history))


def _base_run(target: Path, out: Path, overrides):
    """--base without --run: any run of the experiment knows the base model, its template and
    decoding, when every run has the same base; a model comparison needs --run to say which."""
    spec, runs = _experiment_runs(target, out, overrides)
    models = sorted({r.model_path for r in runs})
    if len(models) > 1:
        raise TlfError(f"{target}: the runs have {len(models)} base models; give --run NAME to chat with that run's "
                       f"base model; runs: {', '.join(r.name for r in runs)}")
    return spec, runs[0]


def _chat_on_node(spec, run_dir: Path, flags: list[str]) -> None:
    import os
    import shutil

    from . import chat as chat_mod
    from . import slurm

    if spec is None or spec.cluster.profile is None:
        raise TlfError("--srun needs SPEC with a cluster profile (cluster: NAME), not a run directory")
    if shutil.which("srun") is None:
        raise TlfError("--srun: no `srun` on PATH; run it where Slurm's client commands are")
    command = chat_mod.srun_command(
        slurm.interactive_srun(spec.cluster.profile, slurm.job_name(spec, "chat")),
        slurm.setup_lines(spec.cluster.profile),
        spec.cluster.profile.python or sys.executable,
        [str(run_dir), *flags],
    )
    sys.stdout.flush()
    os.execvp(command[0], command)


@click.command(cls=Command)
@click.argument("spec_path", metavar="SPEC", required=False, type=click.Path(dir_okay=False, path_type=Path))
@RUNS_OUT_OPTION
@click.option(
    "--question",
    "asked",
    multiple=True,
    metavar="TEXT",
    help="A question (the data's instruction is added). Repeatable.",
)
@click.option("--questions", "questions_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A file: one question per line, or JSON lines {\"question\", \"expected\"}.")
@click.option("--from", "from_set", metavar="SET", help="Ask the first --rows rows of a registered set.")
@click.option("--rows", type=click.IntRange(min=1, max=10_000), default=5, show_default=True,
              help="Rows taken by --from (and by default, from the first predict set).")
@click.option("--raw", is_flag=True, help="Questions are whole prompts (no instruction wrapper).")
@click.option("--submit", is_flag=True, help="Run it as one Slurm job from SPEC's cluster profile; returns at once.")
@click.option("--request", type=click.Path(dir_okay=False, path_type=Path),
              help="Answer a probe prepared earlier (its probe_request.json): what a submitted job runs.")
@SET_OPTION
def probe(spec_path: Path | None, out: Path, asked, questions_file: Path | None, from_set: str | None, rows: int,
          raw: bool, submit: bool, request: Path | None, overrides) -> None:
    """The base model and every trained run answer the same questions, side by side (greedy)."""
    from . import probe as probe_mod

    if request is not None:
        runs, questions = probe_mod.load_request(request)
        where = request.resolve().parent
    else:
        spec, runs, where, questions = _prepare_probe(spec_path, out, asked, questions_file, from_set, rows, raw,
                                                      overrides)
        if submit:
            _submit_probe(spec, where)
            return
    table = probe_mod.probe(runs, where, questions, say)
    say("")
    say(table)
    say(f"\nprobe: {where / 'probe.md'} (and probe.json)")


def _prepare_probe(spec_path, out, asked, questions_file, from_set, rows, raw, overrides):
    from . import probe as probe_mod
    from . import render as render_mod
    from . import use

    if spec_path is None:
        raise TlfError("give SPEC (or --request PROBE_DIR/probe_request.json)")
    spec, runs = _experiment_runs(spec_path, out, overrides)
    items = [{"question": probe_mod.check_question(q, "--question"), "expected": None} for q in asked]
    if questions_file is not None:
        items += probe_mod.read_questions_file(questions_file)
    questions = probe_mod.questions(runs[0], use.instruction_wrapper(runs[0]), items, from_set, rows, raw)
    where = probe_mod.prepare(runs, render_mod.layout(spec, out).report_dir, questions)
    return spec, runs, where, questions


def _submit_probe(spec, where: Path) -> None:
    from . import probe as probe_mod
    from . import scheduler, slurm
    from .fsutil import atomic_write

    if spec.cluster.profile is None:
        raise TlfError(f"{spec.where('cluster')}: --submit needs a cluster profile (e.g. cluster: dcu)")
    script = where / probe_mod.JOB_SCRIPT
    atomic_write(script, slurm.probe_script(spec, where, where / probe_mod.REQUEST))
    job = scheduler.submit_script(script)
    say(f"probe job {job}: {script}; answers go to {where / 'probe.md'} (log beside it)")


@click.command(cls=Command)
@TARGET_ARGUMENT
@RUN_OPTION
@click.option("--runs", "runs_root", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="The runs root SPEC was rendered into (render's --out).")
@click.option(
    "--checkpoint", default=None, metavar="STEP", help="A kept checkpoint's step instead of the final adapter."
)
@click.option("--to", "export_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="The directory to write (required).")
@click.option("--out", "deprecated_out", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Deprecated: the old name of --to, kept for one release (--out is the runs root elsewhere).")
@click.option("--rows", type=click.IntRange(min=1), default=32, show_default=True,
              help="Rows of the run's test set the merged model must answer as the adapter did.")
@click.option("--allow-diff", type=click.IntRange(min=0), default=0, show_default=True,
              help="Rows allowed to differ (half-precision merges can flip a near-tie).")
@click.option("--verify-only", is_flag=True, help="Only check an existing export in --to against the adapter.")
@click.option("--force", is_flag=True, help="Replace --to when it exists.")
@SET_OPTION
def export(target: Path, run_name: str | None, runs_root: Path, checkpoint: str | None, export_dir: Path | None,
           deprecated_out: Path | None, rows: int, allow_diff: int, verify_only: bool, force: bool, overrides) -> None:
    """Merge a run's adapter into a standalone model with a model card, checked against the adapter."""
    from . import export as export_mod
    from . import use

    export_dir = _export_target(export_dir, deprecated_out)

    _, run = _one_run(target, runs_root, run_name, overrides)
    model = use.resolve(run, checkpoint)
    if verify_only:
        export_mod.verify_existing(run, model, export_dir, rows, allow_diff, say)
        return
    export_mod.export(run, model, export_dir, rows, force, allow_diff, say)
    say(f"exported {model.label} to {export_dir} (model card: {export_dir / export_mod.CARD})")
