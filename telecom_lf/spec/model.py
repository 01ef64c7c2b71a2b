"""A parsed spec: ``Spec`` with one section dataclass per concern (data, prompt, sweep, select,
speed, cluster). Every value here has been validated; defaults come from the schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cluster import Profile
from ..compat import BLOG_TEMPLATE_FOR
from .schema import ClusterKeys, ExperimentKeys, Select, SpeedKeys, SweepKeys, TrackingKeys, default

__all__ = ["Cluster", "Data", "Prompt", "Select", "Spec", "Speed", "Sweep", "Tie", "Tracking"]


@dataclass(frozen=True)
class Tie:
    """``target = factor * source`` (the blog's ``lora_alpha = 2 x lora_rank``)."""
    target: str
    source: str
    factor: float

    def value(self, source_value):
        result = self.factor * source_value
        return int(result) if float(result).is_integer() and isinstance(source_value, int) else result


@dataclass(frozen=True)
class Sweep:
    grid: dict[str, list] = field(default_factory=dict)
    zip: list[dict[str, list]] = field(default_factory=list)
    vary: dict[str, list] = field(default_factory=dict)
    tie: list[Tie] = field(default_factory=list)
    max_runs: int = default(SweepKeys, "max_runs")


@dataclass(frozen=True)
class Data:
    """data: the dataset_info.json directory, the set to train on, the sets to predict."""
    dir: Path
    train: str | None
    predict: list[str]
    entries: dict = field(default_factory=dict)    # the dataset_info.json entries the spec names


@dataclass(frozen=True)
class Prompt:
    """prompt:, template:, decoding:."""
    mode: str                        # blog | upstream
    template: str
    decoding: str

    @property
    def lf_template(self) -> str:
        """The template name written into LLaMA-Factory configs."""
        return BLOG_TEMPLATE_FOR.get(self.template, self.template) if self.mode == "blog" else self.template


@dataclass(frozen=True)
class Speed:
    """speed:, micro_batch:, dora_kernel:, predict_mode:."""
    mode: str = default(SpeedKeys, "speed")
    micro_batch: int | None = None   # `speed: fast` only: rows per forward (default: the whole effective batch)
    dora_kernel: str = "peft"        # fast: tlf's DoRA forward in every LLaMA-Factory process of the run
    predict_mode: str = default(SpeedKeys, "predict_mode")   # shared: one base load per process (basecache.py)


@dataclass(frozen=True)
class Tracking:
    """tracking:, tracking_uri: (the spec's, else the cluster profile's)."""
    kind: str = default(TrackingKeys, "tracking")
    uri: str | None = None


@dataclass(frozen=True)
class Cluster:
    """cluster: and its slurm: overrides, and the profile they resolve to (once, at load)."""
    name: str | None = default(ClusterKeys, "cluster")
    slurm: dict = field(default_factory=dict)
    profile: Profile | None = None


@dataclass(frozen=True)
class Spec:
    path: Path
    sha256: str
    name: str
    models: dict[str, str]
    data: Data
    prompt: Prompt
    train: dict | None               # LLaMA-Factory training arguments; None: a predict-only probe
    predict: dict
    lines: dict[tuple, int]
    seed: int = default(ExperimentKeys, "seed")
    seeds: tuple[int, ...] | None = None   # replicas: every run once per seed
    sweep: Sweep | None = None
    select: Select | None = None     # checkpoint selection on a dev set
    speed: Speed = Speed()
    cluster: Cluster = Cluster()
    tracking: Tracking = Tracking()
    baseline: str | None = None
    labels: dict = field(default_factory=dict)     # run name -> what the run is, in words
    notes: tuple[str, ...] = ()                    # things a user should know that are not errors

    def line(self, *path) -> int | None:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path)

    def where(self, *path) -> str:
        line = self.line(*path)
        key = ".".join(map(str, path))
        return f"{self.path}:{line}: {key}" if line else f"{self.path}: {key}"
