"""sbatch rendering (pure: text out, no process started).

``#SBATCH`` lines carry literal values (Slurm never expands shell variables there); values
that would need quoting in them are refused, and every value used by the shell is quoted.
Every script calls ``tlf step RUN_DIR ...`` with explicit options; ``submit.sh`` is rendered
from the same chain description (``rundir.chain``) that ``tlf submit`` walks.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from pathlib import Path

import jinja2

from . import __version__, guard
from .cluster import SBATCH_VALUE, Profile, resource_dir
from .errors import TlfError
from .rundir import ARRAY_SCRIPT, JOB_SCRIPT, LOGS, PREDICT_SCRIPT, REPORT_SCRIPT, SUBMIT_SCRIPT, chain
from .spec import Spec


def _one_line(value):
    """Every value a template puts into a script stays on its line: a newline in one would start a
    shell line of its own (before `set -euo pipefail`, in a header comment). Values are checked
    where they enter (spec, profile, names); this is the backstop."""
    if isinstance(value, str) and guard.CONTROL.search(value):
        raise TlfError(f"tlf bug: a value with a control character reached a script: {value!r}")
    return value


def _environment():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False, finalize=_one_line)
    env.filters["q"] = lambda value: shlex.quote(str(value))
    return env


def _safe_path(path: Path) -> str:
    text = str(path)
    if not SBATCH_VALUE.fullmatch(text):
        raise TlfError(f"{text}: the run directory is used in #SBATCH --output and must not contain "
                       "spaces, quotes or shell characters; choose another --out")
    return text


def sbatch_lines(profile: Profile, job_name: str, log_dir: Path, array: str | None = None,
                 gpus: bool = True) -> list[str]:
    logs = _safe_path(log_dir)
    lines = [f"--job-name={job_name}"]
    if profile.partition:
        lines.append(f"--partition={profile.partition}")
    lines += [f"--nodes={profile.nodes}", "--ntasks-per-node=1",
              f"--cpus-per-task={max(1, profile.gpus_per_node) * profile.cpus_per_gpu}"]
    if gpus and profile.gres and profile.gpus_per_node:
        lines.append(f"--gres={profile.gres}:{profile.gpus_per_node}")
    lines.append(f"--time={profile.time}")
    for key in ("mem", "account", "qos", "constraint"):
        if getattr(profile, key):
            lines.append(f"--{key}={getattr(profile, key)}")
    if array:
        lines.append(f"--array={array}")
    pattern = "%x-%A_%a" if array else "%x-%j"
    lines += [f"--output={logs}/{pattern}.out", f"--error={logs}/{pattern}.err"]
    if profile.requeue:
        # append: a requeued job's second attempt must not truncate the first attempt's log
        lines += ["--requeue", f"--signal=B:USR1@{profile.signal_seconds}", "--open-mode=append"]
    lines += [str(x) for x in profile.extra_sbatch]
    return lines


def interactive_srun(profile: Profile, job_name: str) -> list[str]:
    """``srun`` options for one interactive task with one card (chat), from the same profile."""
    command = ["srun", f"--job-name={job_name}", "--nodes=1", "--ntasks=1", f"--cpus-per-task={profile.cpus_per_gpu}"]
    if profile.partition:
        command.append(f"--partition={profile.partition}")
    if profile.gres and profile.gpus_per_node:
        command.append(f"--gres={profile.gres}:1")
    command.append(f"--time={profile.time}")
    command += [f"--{key}={getattr(profile, key)}" for key in ("mem", "account", "qos", "constraint")
                if getattr(profile, key)]
    return command


def setup_lines(profile: Profile) -> list[str]:
    """The profile's site set-up and environment, as the job scripts run them."""
    lines = list(map(str, profile.setup))
    lines += [f"export {k}={shlex.quote(str(v))}" for k, v in sorted(profile.env.items())]
    return lines


def job_name(spec: Spec, run_name: str) -> str:
    """The run's name first: squeue's default 8-character NAME column then tells runs apart."""
    name = f"{run_name}-{spec.name}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:120]


def _step_context(profile: Profile) -> dict:
    """What templates/_step_body.j2 needs: environment set-up, requeue, multi-node launch."""
    return dict(python=profile.python or sys.executable, setup=profile.setup,
                env=sorted((str(k), str(v)) for k, v in profile.env.items()),
                emulate_devices=profile.emulate_devices and profile.gpus_per_node > 0,
                visible_devices_var=profile.visible_devices_var, requeue=profile.requeue,
                signal_seconds=profile.signal_seconds, nodes=profile.nodes, gpus_per_node=profile.gpus_per_node)


def job_files(spec: Spec, run, run_dir: Path) -> dict[str, bytes]:
    """``job.sbatch`` (and the logs directory) for one run; nothing without a cluster profile."""
    profile = spec.cluster.profile
    if profile is None:
        return {}
    script = _environment().get_template("job.sbatch.j2").render(
        **_step_context(profile), tlf_version=__version__, spec_path=str(spec.path), run_name=run.name,
        script_path=str(run_dir / JOB_SCRIPT), predict_sets=spec.data.predict,
        selects=spec.select is not None and run.train_args is not None,
        sbatch_lines=sbatch_lines(profile, job_name(spec, run.name), run_dir / LOGS), run_dir=str(run_dir))
    return {JOB_SCRIPT: script.encode("utf-8"), f"{LOGS}/.keep": b""}


def _shell_chain(run_name: str, links: list) -> tuple[str, list[dict], str]:
    """One run's chain for submit.sh: a shell variable per job, dependencies as ``afterok:$jN``."""
    var = {link.name: f"j{index}" for index, link in enumerate(links)}
    shell = [{"name": link.name, "var": var[link.name], "args": link.args,
              "after": "afterok:" + ":".join(f"${var[a]}" for a in link.after) if link.after else ""}
             for link in links]
    return run_name, shell, var[links[-1].name]


def probe_script(spec: Spec, where: Path, request: Path) -> bytes:
    """One job that answers a prepared probe (``tlf probe --submit``)."""
    one_card = dataclasses.replace(
        spec.cluster.profile, nodes=1, gpus_per_node=min(1, spec.cluster.profile.gpus_per_node), requeue=False
    )   # a probe is short: no requeue, no resume
    script = _environment().get_template("probe.sbatch.j2").render(
        **_step_context(one_card), tlf_version=__version__, spec_path=str(spec.path),
        sbatch_lines=sbatch_lines(one_card, job_name(spec, "probe"), where), request=str(request))
    return script.encode("utf-8")


def experiment_files(spec: Spec, runs: list, root: Path) -> dict[Path, bytes]:
    """The sweep's job array, the report job and a plain ``submit.sh`` (pure)."""
    profile = spec.cluster.profile
    if profile is None:
        return {}
    env = _environment()
    run_names = [r.name for r in runs]
    common = dict(**_step_context(profile), tlf_version=__version__, spec_path=str(spec.path), root=str(root),
                  run_names=run_names, predict_sets=spec.data.predict)
    array = f"0-{len(run_names) - 1}%{profile.array_parallel}"
    chains = [_shell_chain(r.name, chain(r.train_args is not None, spec.data.predict, spec.select is not None))
              for r in runs]
    report_lines = [line for line in sbatch_lines(profile, job_name(spec, "report"), root / LOGS, gpus=False)
                    if not line.startswith(("--requeue", "--signal", "--open-mode"))]
    shared = shares_predicts(spec, runs)
    files = {
        root / ARRAY_SCRIPT: env.get_template("array.sbatch.j2").render(
            **common, shared_predict=shared,
            sbatch_lines=sbatch_lines(profile, job_name(spec, "sweep"), root / LOGS, array=array)),
        root / REPORT_SCRIPT: env.get_template("report.sbatch.j2").render(**common, sbatch_lines=report_lines),
        root / SUBMIT_SCRIPT: env.get_template("submit.sh.j2").render(
            **common, job_script=JOB_SCRIPT, report_script=REPORT_SCRIPT, chains=chains),
        root / LOGS / ".keep": "",
    }
    if shared:
        one_card = dataclasses.replace(profile, nodes=1, gpus_per_node=min(1, profile.gpus_per_node))
        files[root / PREDICT_SCRIPT] = env.get_template("predict.sbatch.j2").render(
            **{**common, **_step_context(one_card)}, predict_job=True,
            sbatch_lines=sbatch_lines(one_card, job_name(spec, "predict"), root / LOGS))
    return {path: text.encode("utf-8") for path, text in files.items()}


def shares_predicts(spec: Spec, runs: list) -> bool:
    """Whether `tlf submit` predicts the sweep in one job after its array (predict_mode: shared): a
    sweep of several runs with sets to predict."""
    return spec.speed.predict_mode == "shared" and spec.sweep is not None and len(runs) > 1 \
        and bool(spec.data.predict)
