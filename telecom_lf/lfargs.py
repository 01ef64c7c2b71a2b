"""What the installed LLaMA-Factory accepts, read from its own argument dataclasses.

``llamafactory-cli train`` parses one YAML with ``HfArgumentParser`` over ModelArguments,
DataArguments, TrainingArguments, FinetuningArguments and GeneratingArguments. It rejects
unknown keys but never type-checks values (``learning_rate: 5e-5`` arrives as a string in
YAML 1.1 and fails deep in the optimiser). tlf reads those dataclasses once per installed
version — names, accepted types, choices, defaults, help — and caches the result as JSON,
because importing LLaMA-Factory costs seconds and a warm ``tlf render`` must not.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import os
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from . import __version__
from .fsutil import atomic_write

KINDS = ("bool", "int", "float", "str", "list", "dict", "null", "any")


@dataclass(frozen=True)
class ArgInfo:
    name: str
    group: str                  # the dataclass it belongs to
    kinds: tuple[str, ...]      # accepted YAML kinds
    choices: tuple[str, ...]    # allowed strings, empty when free
    default: object             # JSON-able default (enum values as strings)
    help: str


def _kinds_of(annotation) -> tuple[set[str], list[str]]:
    """Accepted YAML kinds and string choices for one dataclass field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds: set[str] = set()
        choices: list[str] = []
        free_string = False
        for arg in typing.get_args(annotation):
            sub_kinds, sub_choices = _kinds_of(arg)
            kinds |= sub_kinds
            choices += sub_choices
            free_string |= arg is str
        # `SchedulerType | str` accepts only the enum's values once __post_init__ runs.
        enum_members = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, enum.Enum)]
        if free_string and not enum_members:
            choices = []
        return kinds, choices
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        kinds = {"bool" if isinstance(v, bool) else "str" if isinstance(v, str) else "null" if v is None else "int"
                 for v in values}
        return kinds, [v for v in values if isinstance(v, str)]
    if annotation is type(None) or annotation is None:
        return {"null"}, []
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {"str"}, [str(m.value) for m in annotation]
    if annotation is bool:
        return {"bool"}, []
    if annotation is int:
        return {"int"}, []
    if annotation is float:
        return {"float", "int"}, []
    if annotation is str:
        return {"str"}, []
    if origin in (list, tuple) or annotation in (list, tuple):
        return {"list"}, []
    if origin is dict or annotation is dict:
        return {"dict"}, []
    return {"any"}, []


def _jsonable(value):
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _introspect() -> dict[str, dict]:
    from llamafactory.hparams.parser import _TRAIN_ARGS  # the exact list `llamafactory-cli train` parses

    table: dict[str, dict] = {}
    for cls in _TRAIN_ARGS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init or f.name in table:
                continue
            kinds, choices = _kinds_of(hints.get(f.name, f.type))
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = None
            table[f.name] = {"group": cls.__name__, "kinds": sorted(kinds), "choices": choices,
                             "default": _jsonable(default), "help": str(f.metadata.get("help", ""))}
    return table


def installed_versions() -> dict[str, str]:
    versions = {}
    for package in ("llamafactory", "transformers", "peft", "trl", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def cache_path() -> Path:
    base = Path(
        os.environ.get("TLF_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tlf"
    )
    versions = installed_versions()
    key = f"lfargs-tlf{__version__}-lf{versions['llamafactory']}-tf{versions['transformers']}.json"
    return base / key


def _cached_json(path: Path, compute):
    """``compute()``'s JSON-able result, stored at ``path`` and read from there next time."""
    if path.exists():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    value = compute()
    try:
        atomic_write(path, json.dumps(value, indent=0, sort_keys=True))
    except OSError:
        pass  # a read-only home still works, just without the cache
    return value


@lru_cache(maxsize=1)
def table() -> dict[str, ArgInfo]:
    """Every argument of the installed LLaMA-Factory's train parser (cached per version)."""
    raw = _cached_json(cache_path(), _introspect)
    return {name: ArgInfo(name, d["group"], tuple(d["kinds"]), tuple(d["choices"]), d["default"], d["help"])
            for name, d in raw.items()}


def suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_value(name: str, value) -> str | None:
    """None when ``value`` is acceptable for argument ``name``, else what is wrong with it."""
    info = table().get(name)
    if info is None:
        return f"unknown LLaMA-Factory argument {name!r}{suggest(name, table())}"
    kind = _yaml_kind(value)
    if "any" in info.kinds:
        return None
    if kind not in info.kinds:
        hint = ""
        if kind == "str" and ("float" in info.kinds or "int" in info.kinds):
            try:
                float(value)
                hint = (f" (YAML 1.1 reads {value!r} as a string: write it with a decimal point "
                        f"and a signed exponent, e.g. 5.0e-5)")
            except ValueError:
                pass
        expected = " or ".join(k for k in info.kinds if k != "null") + (" or null" if "null" in info.kinds else "")
        return f"expected {expected}, got {kind} {value!r}{hint}"
    if kind == "str" and info.choices and value not in info.choices:
        return f"{value!r} is not one of {list(info.choices)}{suggest(value, info.choices)}"
    if kind in ("int", "float") and name in RANGES:
        return RANGES[name].problem(value)
    if kind in ("int", "float"):
        return magnitude_problem(value)
    return None


MAX_INTEGER = 2**32 - 1    # the widest integer the C code under LLaMA-Factory takes (numpy's seed)
MAX_FLOAT = 1e15           # far past any rate, ratio or norm; 1e30 is a typo, not a setting


def magnitude_problem(value) -> str | None:
    """Every numeric argument, also those without a range of their own: finite, and an integer
    within MAX_INTEGER, a float within MAX_FLOAT (lora_rank: 10**30 would fail deep in PEFT)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, got {value!r}"
    limit = MAX_INTEGER if isinstance(value, int) else MAX_FLOAT
    if abs(value) > limit:
        return f"{value!r} is beyond any setting (at most {limit:g} in magnitude)"
    return None


class Range(typing.NamedTuple):
    low: float
    low_included: bool = True
    high: float | None = None      # None: no upper bound
    high_included: bool = False

    def problem(self, value) -> str | None:
        above = value >= self.low if self.low_included else value > self.low
        below = self.high is None or (value <= self.high if self.high_included else value < self.high)
        if above and below and math.isfinite(value):
            return magnitude_problem(value)
        opening = "[" if self.low_included else "("
        closing = "inf)" if self.high is None else f"{self.high}{']' if self.high_included else ')'}"
        return f"expected a finite value in {opening}{self.low}, {closing}, got {value!r}"


# Ranges LLaMA-Factory does not check when it reads its arguments: a value outside one fails
# only once the job runs (PEFT refuses r = -1 after the model is loaded), or trains nothing
# (0 epochs).
RANGES = {
    "lora_rank": Range(1),
    "lora_alpha": Range(0, low_included=False),
    "lora_dropout": Range(0, high=1),
    "learning_rate": Range(0, low_included=False),
    "num_train_epochs": Range(0, low_included=False),
    "cutoff_len": Range(1),
    "per_device_train_batch_size": Range(1),
    "per_device_eval_batch_size": Range(1),
    "gradient_accumulation_steps": Range(1),
    "max_new_tokens": Range(1),
    "max_samples": Range(1),
    "loraplus_lr_ratio": Range(0, low_included=False),
    "warmup_ratio": Range(0, high=1, high_included=True),
}


# bool before int: YAML's true is a Python bool, which is also an int.
_YAML_KINDS = (("null", type(None)), ("bool", bool), ("int", int), ("float", float), ("str", str),
               ("list", list), ("dict", dict))


def _yaml_kind(value) -> str:
    return next((kind for kind, type_ in _YAML_KINDS if isinstance(value, type_)), type(value).__name__)


def template_names() -> list[str]:
    """Templates the installed LLaMA-Factory knows, plus tlf's blog-era ones (cached like the table)."""

    def introspect() -> list[str]:
        from llamafactory.data.template import TEMPLATES

        from .compat import BLOG_TEMPLATES

        return sorted(set(TEMPLATES) | set(BLOG_TEMPLATES))

    return _cached_json(cache_path().with_name(cache_path().stem + "-templates.json"), introspect)
