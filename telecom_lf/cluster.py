"""Cluster profiles: flat YAML files (``slurm/profiles/*.yaml``) -> a validated ``Profile``.

tlf looks in ``<spec dir>/slurm/profiles``, then each directory of ``$TLF_PROFILES``, then its
own. A spec's ``slurm:`` section overrides a profile's keys; the spec resolves its profile once,
when it is loaded, so a bad profile is reported there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from . import guard, inputs
from .errors import TlfError
from .fsutil import load_yaml_strict

PACKAGE_DIR = Path(__file__).resolve().parent
# A #SBATCH value is parsed by Slurm, not the shell: keep it to characters that need no quoting.
# Use it with fullmatch: `$` would let a trailing newline through.
SBATCH_VALUE = re.compile(r"[A-Za-z0-9_.,:/@%=+\-\[\]]+")
# Bounds checked before anything is rendered: a typo of 10**9 cards must not expand a 10**9-item
# device list (or ask Slurm for it).
INTEGER_RANGES = {"gpus_per_node": (0, 64), "cpus_per_gpu": (1, 1024), "nodes": (1, 1024),
                  "signal_seconds": (1, 86_400), "array_parallel": (1, 10_000)}
MAX_GPU_MEMORY_GB = 4096


def resource_dir(name: str) -> Path:
    """templates/, slurm/profiles/ and experiments/ live at the repository root; wheels carry copies."""
    source = {"templates": "templates", "profiles": "slurm/profiles", "experiments": "experiments"}[name]
    checkout = PACKAGE_DIR.parent / source
    return checkout if checkout.is_dir() else PACKAGE_DIR / f"_{name}"


def _key(default, help_text: str, **kwargs):
    return field(default=default, metadata={"help": help_text}, **kwargs)


@dataclass(frozen=True)
class Profile:
    name: str
    partition: str | None = _key(None, "Slurm partition (the site's `whichpartition`); null: the default")
    gres: str | None = _key("gpu", "the site's GRES name for its cards (dcu on Hygon, gpu on NVIDIA)")
    gpus_per_node: int = _key(1, "cards per node (--gres=<gres>:N); 0 for a CPU partition")
    cpus_per_gpu: int = _key(8, "CPU cores per card (the blog: 8)")
    nodes: int = _key(1, "nodes per training job (>1: torchrun on each, one srun task per node)")
    time: str = _key("04:00:00", "wall-clock limit per job")
    mem: str | None = _key(None, "memory per node; null: the partition's default")
    account: str | None = _key(None, "--account")
    qos: str | None = _key(None, "--qos")
    constraint: str | None = _key(None, "--constraint")
    extra_sbatch: list = field(default_factory=list, metadata={
        "help": "verbatim extra #SBATCH options, one '--option[=value]' each"})
    setup: list = field(default_factory=list, metadata={
        "help": "shell lines run first on the compute node (e.g. source load_torch2.1_py3.sh)"})
    env: dict = field(default_factory=dict, metadata={"help": "environment variables exported for every step"})
    visible_devices_var: str = _key("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES on DCU/ROCm")
    precision: str | None = _key(None, "fp16 or bf16 added to training unless train: sets one; null: neither")
    gpu_memory_gb: float | None = _key(None, "one card's memory; `speed: fast` sizes Liger and the micro-batch by it")
    requeue: bool = _key(True, "requeue on preemption or near the time limit, then resume from the last checkpoint")
    signal_seconds: int = _key(300, "USR1 this long before the time limit -> scontrol requeue")
    python: str | None = _key(None, "interpreter on the compute nodes; null: the one rendering")
    array_parallel: int = _key(2, "the %K of --array=0-N%K for sweeps")
    emulate_devices: bool = _key(True, "set *_VISIBLE_DEVICES when Slurm's GRES does not")
    tracking_uri: str | None = _key(None, "the site's MLflow tracking server for specs with tracking: mlflow "
                                          "(a spec's tracking_uri wins); null: a SQLite store per experiment")


PROFILE_KEYS = [f.name for f in fields(Profile) if f.name != "name"]


def profile_dirs(spec_dir: Path | None) -> list[Path]:
    dirs = [spec_dir / "slurm" / "profiles"] if spec_dir else []
    dirs += [Path(p) for p in os.environ.get("TLF_PROFILES", "").split(os.pathsep) if p]
    return dirs + [resource_dir("profiles")]


class BadProfileValue(TlfError):
    """A profile value that cannot be used; `key` says which, so a spec's override can be named."""

    def __init__(self, path: Path, key: str, detail: str) -> None:
        super().__init__(f"{path}: {key}: {detail}")
        self.key, self.detail = key, detail


def _find(name: str, spec_dir: Path | None) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
        raise TlfError(f"cluster profile name {name!r}: letters, digits, '_', '-' and '.' only")
    for directory in profile_dirs(spec_dir):
        if (directory / f"{name}.yaml").exists():
            return directory / f"{name}.yaml"
    known = sorted({p.stem for d in profile_dirs(spec_dir) if d.is_dir() for p in d.glob("*.yaml")})
    raise TlfError(f"unknown cluster profile {name!r}; known: {', '.join(known)}")


def load_profile(name: str, spec_dir: Path | None = None, overrides: dict | None = None) -> Profile:
    path = _find(name, spec_dir)
    blob = inputs.read_input(path, "cluster profile")
    raw = load_yaml_strict(blob, path)[0] or {}
    if not isinstance(raw, dict):
        raise TlfError(f"{path}: a cluster profile is a YAML mapping of keys")
    unknown = [k for k in raw if k not in PROFILE_KEYS]
    if unknown:
        from .lfargs import suggest

        raise TlfError(f"{path}: unknown profile key(s) {unknown}{suggest(str(unknown[0]), PROFILE_KEYS)}; "
                       f"allowed: {', '.join(PROFILE_KEYS)}")
    profile = Profile(name=name, **{**raw, **(overrides or {})})
    _check_profile(profile, path)
    return profile


def _check_profile(profile: Profile, path: Path) -> None:
    for key in ("partition", "gres", "time", "mem", "account", "qos", "constraint"):
        value = getattr(profile, key)
        if value is not None and (isinstance(value, (bool, list, dict)) or not SBATCH_VALUE.fullmatch(str(value))):
            raise BadProfileValue(path, key, f"{value!r} has characters an #SBATCH line cannot carry "
                                             "(spaces, quotes, $, `, newlines)")
    for key, (low, high) in INTEGER_RANGES.items():
        _guarded(path, key, guard.integer, getattr(profile, key), "", low, high)
    for key in ("requeue", "emulate_devices"):
        _guarded(path, key, guard.boolean, getattr(profile, key), "")
    for key in ("extra_sbatch", "setup"):
        if not isinstance(getattr(profile, key), list):
            raise BadProfileValue(path, key, f"expected a list, got {type(getattr(profile, key)).__name__}")
        for line in getattr(profile, key):
            _guarded(path, key, guard.text, line, "", "list entry")   # one entry is one line
    for line in profile.extra_sbatch:
        _check_extra_sbatch(line, path)
    if profile.gpu_memory_gb is not None:
        _guarded(path, "gpu_memory_gb", guard.number, profile.gpu_memory_gb, "", 0, MAX_GPU_MEMORY_GB, "GB")
    if profile.precision not in (None, "fp16", "bf16"):
        raise BadProfileValue(path, "precision", f"expected fp16, bf16 or null, got {profile.precision!r}")
    if profile.python is not None:
        _guarded(path, "python", guard.text, profile.python, "", "path")
    if profile.tracking_uri is not None:
        _guarded(path, "tracking_uri", guard.text, profile.tracking_uri, "", "tracking URI")
        problem = tracking_uri_problem(profile.tracking_uri)
        if problem:
            raise BadProfileValue(path, "tracking_uri", problem)
    _check_env(profile, path)


TRACKING_URI = re.compile(r"[a-z][a-z0-9+.-]*:\S+")
# A local store given relative (sqlite:///x.db, file:x): one per working directory, not one per experiment.
RELATIVE_STORE = re.compile(r"sqlite:///(?!/)|file:(?!/)")


def tracking_uri_problem(uri: str) -> str | None:
    """What is wrong with an MLflow tracking URI (a profile's or a spec's), or None."""
    if not TRACKING_URI.fullmatch(uri):
        return f"expected a URI such as http://host:5000 or sqlite:////abs/mlflow.db, got {guard._short(uri)}"
    if RELATIVE_STORE.match(uri):
        return (f"{guard._short(uri)} is a relative path: every job would read it from its own working directory; "
                "write it absolute (sqlite:////abs/mlflow.db)")
    return None


# Options tlf writes itself (each from a profile key, or for the job's own working): one given
# again in extra_sbatch would silently win or lose depending on Slurm's order.
TLF_SBATCH_OPTIONS = {"--output": "tlf writes it (the run's logs/)", "--error": "tlf writes it (the run's logs/)",
                      "--array": "tlf writes it for a sweep", "--dependency": "tlf submit chains the steps",
                      "--job-name": "tlf names each job after its run", "--open-mode": "tlf writes it (requeue)",
                      "--signal": "use signal_seconds", "--requeue": "use requeue", "--no-requeue": "use requeue",
                      "--partition": "use partition", "--nodes": "use nodes", "--ntasks-per-node": "tlf writes it",
                      "--cpus-per-task": "use cpus_per_gpu", "--gres": "use gres and gpus_per_node",
                      "--time": "use time", "--mem": "use mem", "--account": "use account", "--qos": "use qos",
                      "--constraint": "use constraint",
                      "--wrap": "tlf's jobs are its scripts", "--parsable": "a command-line option of sbatch"}


def _check_extra_sbatch(line: str, path: Path) -> None:
    """One ``--option[=value]`` per entry: no space (an #SBATCH line with two options would carry a
    second one past every check), and not an option tlf sets itself."""
    if not re.fullmatch(r"--[a-z][a-z0-9-]*(=\S+)?", line):
        raise BadProfileValue(path, "extra_sbatch", f"{guard._short(line)} must be one '--option[=value]' per "
                              "entry, without spaces (give each option as its own entry)")
    option = line.split("=", 1)[0]
    if option in TLF_SBATCH_OPTIONS:
        raise BadProfileValue(path, "extra_sbatch", f"{option} is set by tlf ({TLF_SBATCH_OPTIONS[option]})")


# Variables tlf's job scripts and steps set or read (RUN_DIR, TLF_*), Slurm's own (SLURM_*, the
# job's identity: the requeue trap acts on $SLURM_JOB_ID), the multi-node rendezvous, and the
# names that change how bash itself runs the script. PATH, LD_LIBRARY_PATH and LD_PRELOAD stay
# allowed: sites need them for their modules and allocators, and the spec's author already
# controls the job's set-up lines.
RESERVED_ENV = {"RUN_DIR", "RUNS", "MASTER_ADDR", "MASTER_PORT", "MASTER_NODE", "SHELLOPTS", "BASHOPTS", "IFS",
                "BASH_ENV", "ENV", "PS4", "BASH_XTRACEFD", "CDPATH", "GLOBIGNORE", "PROMPT_COMMAND",
                "POSIXLY_CORRECT", "BASH_COMPAT", "HISTFILE", "child", "rc"}
RESERVED_ENV_PREFIXES = ("TLF_", "SLURM_", "SBATCH_", "SRUN_", "BASH_FUNC_")


def _check_env(profile: Profile, path: Path) -> None:
    if not isinstance(profile.env, dict):
        raise BadProfileValue(path, "env", "expected a mapping of variable -> value")
    if not isinstance(profile.visible_devices_var, str) or not re.fullmatch(r"[A-Z_][A-Z0-9_]*",
                                                                            profile.visible_devices_var):
        raise BadProfileValue(path, "visible_devices_var", "not an environment variable name")
    for key, value in profile.env.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise BadProfileValue(path, "env", f"{guard._short(key)} is not an environment variable name")
        if key in RESERVED_ENV or key.startswith(RESERVED_ENV_PREFIXES):
            raise BadProfileValue(path, "env", f"{key} is set by tlf, Slurm or bash for the job itself; a spec may "
                                  "not change it (see the README's promises)")
        if isinstance(value, (dict, list)) or value is None:
            raise BadProfileValue(path, "env", f"{key}: expected a text or number value, got {value!r}")
        _guarded(path, "env", guard.text, str(value), "", "value")


def _guarded(path: Path, key: str, check, *args):
    try:
        return check(*args)
    except guard.Refused as error:
        raise BadProfileValue(path, key, error.detail) from None
