"""The two records render writes and every later stage reads: a run's ``manifest.json`` and an
experiment's ``experiment.json``, typed and versioned.

``format_version`` is the first key of each. A record without one was written by a tlf from
before versioning (same fields; it is read as version 0). A record from a newer tlf, or one whose
fields are not what tlf writes, is refused with the command that writes it again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import guard
from .errors import TlfError

FORMAT_VERSION = 1
RERENDER = "re-render the spec (`tlf render SPEC`; `--force` for a run that has outputs)"


def _dumps(value: dict) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _version(record: dict, where: str) -> int:
    version = record.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise TlfError(f"{where}: format_version {version!r} is not a record version tlf writes; {RERENDER}")
    if version > FORMAT_VERSION:
        raise TlfError(f"{where}: format_version {version} was written by a newer tlf (this one reads up to "
                       f"{FORMAT_VERSION}); upgrade tlf, or {RERENDER}")
    return version


def _typed(record: dict, where: str, what: str, types: dict[str, type | tuple]) -> None:
    for key, expected in types.items():
        if key in record and not isinstance(record[key], expected):
            raise TlfError(f"{where}: not the {what} tlf writes ({key} is a {type(record[key]).__name__}); {RERENDER}")


# ---------------------------------------------------------------- a run's manifest.json


@dataclass(frozen=True)
class Manifest:
    """What a run is: its provenance, model, prompt, chain and the hash of every rendered file.
    Field order is the file's key order (rendered files stay byte-identical across releases)."""
    tlf: str | None
    versions: dict
    spec: str | None
    spec_sha256: str | None
    git_commit: str | None
    experiment: str | None
    run: str | None
    model: dict                      # {"name", "path"}
    prompt: str | None
    template: str | None
    seed: int | None
    varied: dict
    baseline: bool
    trains: bool
    finetuning_type: str | None      # None: a predict-only run
    dora_kernel: str
    predict_sets: list[str]
    select: dict | None              # {"on", "metric", "every"}, or None
    dataset_dir: str | None
    split_manifest: str | None
    files: dict[str, str]            # rendered file name -> sha256
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        values = asdict(self)
        return _dumps({"format_version": values.pop("format_version"), **values})

    @classmethod
    def from_json(cls, record, where: str) -> Manifest:
        if not isinstance(record, dict) or "predict_sets" not in record:
            raise TlfError(f"{where}: not a rendered run's manifest (no readable record); run `tlf render` first")
        version = _version(record, where)
        _typed(record, where, "manifest", {"predict_sets": list, "files": dict, "model": dict, "varied": dict,
                               "select": (dict, type(None)), "dataset_dir": (str, type(None))})
        for name in record["predict_sets"]:
            guard.component(name, f"{where}: predict_sets", "data set name")
        if not isinstance(record.get("model", {}).get("path"), str):
            raise TlfError(f"{where}: not the manifest tlf writes (no model.path); {RERENDER}")
        values = {f.name: record.get(f.name, _MANIFEST_DEFAULTS.get(f.name)) for f in fields(cls)}
        return cls(**{**values, "format_version": version})


# What a record written before a field existed is read with.
_MANIFEST_DEFAULTS = {"versions": {}, "model": {}, "varied": {}, "baseline": False, "trains": False,
                      "dora_kernel": "peft", "files": {}}


# ---------------------------------------------------------------- an experiment's experiment.json


@dataclass(frozen=True)
class RunEntry:
    """One run of an experiment as the report compares it."""
    name: str
    model: str | None
    varied: dict
    baseline: bool
    train: bool
    point: dict
    reference: str | None
    label: str | None
    seed: int | None = None          # a replica's seed (seeds:); written only for replicas
    config: str | None = None        # a replica's configuration name


OPTIONAL_RUN_KEYS = ("seed", "config")   # absent from a record of an experiment without replicas
@dataclass(frozen=True)
class ExperimentRecord:
    """The spec an experiment came from, its predict sets, its sweep axes and every run rendered."""
    experiment: str
    spec: str
    spec_sha256: str
    predict_sets: list[str]
    axes: list[dict]                 # {"kind": grid | zip | vary, "arguments": [...]}
    runs: list[RunEntry]
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        values = asdict(self)
        for run in values["runs"]:
            for key in OPTIONAL_RUN_KEYS:
                if run[key] is None:
                    del run[key]
        return _dumps({"format_version": values.pop("format_version"), **values})

    def run(self, name: str) -> RunEntry | None:
        return next((r for r in self.runs if r.name == name), None)

    @classmethod
    def from_json(cls, record, where: str) -> ExperimentRecord:
        if not isinstance(record, dict):
            raise TlfError(f"{where}: no readable experiment.json; render the experiment first")
        version = _version(record, where)
        runs, sets = record.get("runs"), record.get("predict_sets")
        if not isinstance(runs, list) or not isinstance(sets, list) or not all(
                isinstance(r, dict) and isinstance(r.get("varied", {}), dict)
                and isinstance(r.get("point", {}), dict) for r in runs):
            raise TlfError(f"{where}: not the experiment record tlf writes (runs, predict_sets); {RERENDER}")
        for name in sets:
            guard.component(name, f"{where}: predict_sets", "data set name")
        axes = record.get("axes", [])
        if not isinstance(axes, list) or not all(isinstance(a, dict) and isinstance(a.get("arguments"), list)
                                                 for a in axes):
            raise TlfError(f"{where}: axes is not the list of sweep axes tlf writes; {RERENDER}")
        entries = [RunEntry(name=r.get("name"), model=r.get("model"), varied=r.get("varied", {}),
                            baseline=bool(r.get("baseline")), train=bool(r.get("train", True)),
                            point=r.get("point", {}), reference=_text_or_none(r.get("reference")),
                            label=_text_or_none(r.get("label")), seed=_int_or_none(r.get("seed")),
                            config=_text_or_none(r.get("config"))) for r in runs]
        return cls(
            experiment=str(record.get("experiment") or Path(where).parent.name),
            spec=str(record.get("spec", "")),
            spec_sha256=str(record.get("spec_sha256", "")),
            predict_sets=list(sets),
            axes=axes,
            runs=entries,
            format_version=version,
        )


def _text_or_none(value) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_none(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
