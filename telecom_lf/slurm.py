"""Cluster profiles and sbatch rendering (pure: text out, no process started).

Profiles are flat YAML files (``slurm/profiles/*.yaml``), user-extendable: tlf looks in
``<spec dir>/slurm/profiles``, then each directory of ``$TLF_PROFILES``, then its own.
``#SBATCH`` lines carry literal values (Slurm never expands shell variables there); values
that would need quoting in them are refused, and every value used by the shell is quoted.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import jinja2
import yaml

from . import __version__
from .errors import TlfError
from .spec import Spec

PACKAGE_DIR = Path(__file__).resolve().parent
JOB_SCRIPT = "job.sbatch"
ARRAY_SCRIPT = "array.sbatch"
REPORT_SCRIPT = "report.sbatch"
LOGS = "logs"
# A #SBATCH value is parsed by Slurm, not the shell: keep it to characters that need no quoting.
SBATCH_VALUE = re.compile(r"^[A-Za-z0-9_.,:/@%=+\-\[\]]+$")


def _resource_dir(name: str) -> Path:
    """templates/ and slurm/profiles/ live at the repository root; wheels carry copies."""
    packaged = {"templates": PACKAGE_DIR / "_templates", "profiles": PACKAGE_DIR / "_profiles"}[name]
    source = PACKAGE_DIR.parent / ("templates" if name == "templates" else "slurm/profiles")
    return source if source.is_dir() else packaged


@dataclass(frozen=True)
class Profile:
    name: str
    partition: str | None = None
    gres: str | None = "gpu"
    gpus_per_node: int = 1
    cpus_per_gpu: int = 8
    nodes: int = 1
    time: str = "04:00:00"
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra_sbatch: list = field(default_factory=list)
    setup: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    visible_devices_var: str = "CUDA_VISIBLE_DEVICES"
    precision: str | None = None
    gpu_memory_gb: float | None = None   # one card's memory; `speed: fast` sizes its choices by it
    requeue: bool = True
    signal_seconds: int = 300
    python: str | None = None        # interpreter on the compute nodes; default: the one rendering
    array_parallel: int = 2          # the %K of --array=0-N%K for sweeps
    emulate_devices: bool = True     # set *_VISIBLE_DEVICES when Slurm's GRES does not


PROFILE_KEYS = [f.name for f in fields(Profile) if f.name != "name"]


def profile_dirs(spec_dir: Path | None) -> list[Path]:
    dirs = [spec_dir / "slurm" / "profiles"] if spec_dir else []
    dirs += [Path(p) for p in os.environ.get("TLF_PROFILES", "").split(os.pathsep) if p]
    return dirs + [_resource_dir("profiles")]


def load_profile(name: str, spec_dir: Path | None = None, overrides: dict | None = None) -> Profile:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
        raise TlfError(f"cluster profile name {name!r}: letters, digits, '_', '-' and '.' only")
    for directory in profile_dirs(spec_dir):
        path = directory / f"{name}.yaml"
        if path.exists():
            break
    else:
        known = sorted({p.stem for d in profile_dirs(spec_dir) if d.is_dir() for p in d.glob("*.yaml")})
        raise TlfError(f"unknown cluster profile {name!r}; known: {', '.join(known)}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    merged = {**raw, **(overrides or {})}
    unknown = [k for k in merged if k not in PROFILE_KEYS]
    if unknown:
        from .lfargs import suggest

        raise TlfError(f"{path}: unknown profile key(s) {unknown}{suggest(str(unknown[0]), PROFILE_KEYS)}; "
                       f"allowed: {', '.join(PROFILE_KEYS)}")
    profile = Profile(name=name, **merged)
    _check_profile(profile, path)
    return profile


class BadProfileValue(TlfError):
    """A profile value that cannot be used; `key` says which, so a spec's override can be named."""

    def __init__(self, path: Path, key: str, detail: str) -> None:
        super().__init__(f"{path}: {key}: {detail}")
        self.key, self.detail = key, detail


def _check_profile(profile: Profile, path: Path) -> None:
    for key in ("partition", "gres", "time", "mem", "account", "qos", "constraint"):
        value = getattr(profile, key)
        if value is not None and not SBATCH_VALUE.match(str(value)):
            raise BadProfileValue(path, key, f"{value!r} has characters an #SBATCH line cannot carry "
                                             "(spaces, quotes, $, `, newlines)")
    for key in ("gpus_per_node", "cpus_per_gpu", "nodes", "signal_seconds", "array_parallel"):
        value = getattr(profile, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "gpus_per_node" else 1):
            raise BadProfileValue(path, key, f"expected a positive integer, got {value!r}")
    for line in profile.extra_sbatch:
        if "\n" in str(line) or not str(line).startswith("--"):
            raise BadProfileValue(path, "extra_sbatch", f"{line!r} must be one '--option[=value]' per entry")
    memory = profile.gpu_memory_gb
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, float)) or memory <= 0):
        raise BadProfileValue(path, "gpu_memory_gb", f"expected a positive number of GB or null, got {memory!r}")
    if profile.precision not in (None, "fp16", "bf16"):
        raise BadProfileValue(path, "precision", f"expected fp16, bf16 or null, got {profile.precision!r}")
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", profile.visible_devices_var):
        raise BadProfileValue(path, "visible_devices_var", "not an environment variable name")
    for key in profile.env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
            raise BadProfileValue(path, "env", f"{key!r} is not an environment variable name")


def spec_profile(spec: Spec) -> Profile | None:
    if not spec.cluster:
        return None
    try:
        return load_profile(spec.cluster, spec.path.parent, spec.slurm)
    except BadProfileValue as error:
        if error.key not in spec.slurm:
            raise
        raise TlfError(f"{spec.where('slurm', error.key)}: {error.detail}") from None


def _environment():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_resource_dir("templates"))),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["q"] = lambda value: shlex.quote(str(value))
    return env


def _safe_path(path: Path) -> str:
    text = str(path)
    if not SBATCH_VALUE.match(text):
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


def job_name(spec: Spec, run_name: str) -> str:
    name = f"tlf-{spec.name}-{run_name}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:120]


def _python(profile: Profile) -> str:
    return profile.python or sys.executable


def job_files(spec: Spec, run, run_dir: Path) -> dict[str, bytes]:
    """``job.sbatch`` (and the logs directory) for one run; nothing without a cluster profile."""
    profile = spec_profile(spec)
    if profile is None:
        return {}
    script = _environment().get_template("job.sbatch.j2").render(
        **_step_context(profile), tlf_version=__version__, spec_path=str(spec.path), run_name=run.name,
        script_path=str(run_dir / JOB_SCRIPT), predict_sets=spec.predict_sets,
        sbatch_lines=sbatch_lines(profile, job_name(spec, run.name), run_dir / LOGS), run_dir=str(run_dir))
    return {JOB_SCRIPT: script.encode("utf-8"), f"{LOGS}/.keep": b""}


def _step_context(profile: Profile) -> dict:
    """What templates/_step_body.j2 needs: environment set-up, requeue, multi-node launch."""
    return dict(python=_python(profile), setup=profile.setup,
                env=sorted((str(k), str(v)) for k, v in profile.env.items()),
                emulate_devices=profile.emulate_devices and profile.gpus_per_node > 0,
                visible_devices_var=profile.visible_devices_var, requeue=profile.requeue,
                signal_seconds=profile.signal_seconds, nodes=profile.nodes, gpus_per_node=profile.gpus_per_node)


def experiment_files(spec: Spec, run_names: list[str], root: Path) -> dict[Path, bytes]:
    """The sweep's job array, the report job and a plain ``submit.sh`` (pure)."""
    profile = spec_profile(spec)
    if profile is None:
        return {}
    env = _environment()
    common = dict(**_step_context(profile), tlf_version=__version__, spec_path=str(spec.path), root=str(root),
                  run_names=run_names, predict_sets=spec.predict_sets)
    array = f"0-{len(run_names) - 1}%{profile.array_parallel}"
    files = {
        root / ARRAY_SCRIPT: env.get_template("array.sbatch.j2").render(
            **common, sbatch_lines=sbatch_lines(profile, job_name(spec, "sweep"), root / LOGS, array=array)),
        root / REPORT_SCRIPT: env.get_template("report.sbatch.j2").render(
            **common, sbatch_lines=[line for line in sbatch_lines(profile, job_name(spec, "report"), root / LOGS,
                                                                  gpus=False)
                                    if not line.startswith(("--requeue", "--signal", "--open-mode"))]),
        root / "submit.sh": env.get_template("submit.sh.j2").render(**common, job_script=JOB_SCRIPT),
        root / LOGS / ".keep": "",
    }
    return {path: text.encode("utf-8") for path, text in files.items()}
