"""An experiment spec (YAML) -> a validated ``Spec``. Every error names the file, line and key.

A spec is flat and hackable, torchtune-style: LLaMA-Factory arguments by their own names under
``train:`` and ``predict:``, and a handful of tlf keys around them. See experiments/ for
annotated examples and the README for the full list.
"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

import yaml

from . import guard, lfargs, rundir
from .cluster import PROFILE_KEYS, BadProfileValue, Profile, load_profile
from .compat import BLOG_TEMPLATE_FOR
from .errors import TlfError
from .fsutil import load_yaml_strict, sha256_bytes

SPEEDS = ("as-written", "fast")
DORA_KERNELS = ("fast", "peft")
PROMPT_MODES = ("blog", "upstream")
DECODING = ("greedy", "sampled")
# Keys tlf writes itself: setting them in a spec would silently fight the plan.
RESERVED = {"model_name_or_path", "adapter_name_or_path", "dataset", "eval_dataset", "dataset_dir",
            "output_dir", "do_train", "do_predict", "do_eval", "stage", "template", "seed"}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
NUMBER = r"[0-9]+(?:\.[0-9]+)?"
TIE_RE = re.compile(rf" *(?:(?P<k1>{NUMBER}) *\* *(?P<n1>[a-z_]+)|(?P<n2>[a-z_]+)(?: *\* *(?P<k2>{NUMBER}))?) *")
# A path that does not exist here but reads like `owner/model`: a hub id, resolved at run time.
HUB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


# ---------------------------------------------------------------- the schema: one dataclass per concern
# These name every key a spec may hold, with its default and why; validation, `tlf spec
# --help-keys` and the README's key table are all generated from them.


def _key(default, help_text: str):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class ExperimentKeys:
    name: str | None = _key(None, "experiment name: runs go to <out>/<name>/<run>/ (default: the spec's file stem)")
    description: str | None = _key(None, "free text, kept with the spec")
    model: str | None = _key(None, "model directory (relative to the spec) or hub id (resolved at run time)")
    models: dict | None = _key(None, "name -> model path: a model comparison, one run per model and sweep point")
    seed: int = _key(42, "LLaMA-Factory's seed for training and predict")
    baseline: str | None = _key(None, "upstream: add a run with LLaMA-Factory's own defaults for every "
                                      "hyper-parameter (only infrastructure settings kept)")
    labels: dict = _key({}, "run name -> what the run is, shown beside its name in the report and the "
                            "terminal (e.g. blog configuration)")


@dataclass(frozen=True)
class DataKeys:
    dir: str = _key("data", "the dataset_dir holding dataset_info.json (relative to the spec)")
    train: str | None = _key(None, "registered data set to train on (none: a predict-only probe)")
    predict: list = _key([], "registered data sets to predict on and score")


@dataclass(frozen=True)
class PromptKeys:
    prompt: str = _key("upstream", "blog: LLaMA-Factory 0.6's template rendering (the blog's token ids); "
                                   "upstream: the installed LLaMA-Factory's")
    template: str | None = _key(None, "required: the LLaMA-Factory template name, e.g. default or gemma")
    decoding: str = _key("greedy", "greedy (tlf's default: repeatable scores) or sampled "
                                   "(LLaMA-Factory's defaults, what the blog got)")


@dataclass(frozen=True)
class ArgumentKeys:
    train: dict | None = _key(None, "LLaMA-Factory training arguments by their own names (validated against "
                                    "the installed version); absent: no training")
    predict: dict = _key({}, "LLaMA-Factory arguments for every predict run (e.g. max_new_tokens)")


@dataclass(frozen=True)
class SweepKeys:
    grid: dict = _key({}, "argument -> list of values: the cartesian product")
    zip: list = _key([], "groups of argument -> equal-length lists that move together")
    vary: dict = _key({}, "argument -> values tried one at a time around train: (the blog's A/B method)")
    tie: dict = _key({}, "argument -> '<number> * <argument>', e.g. lora_alpha: 2 * lora_rank")
    max_runs: int = _key(1000, "refuse a sweep of more runs than this, counted before anything is expanded "
                               "(raise it here or with --set sweep.max_runs=N)")


SELECT_METRICS = ("acc", "acc_raw", "long_recall", "rouge-1", "rouge-2", "rouge-l", "bleu-4", "item_f1",
                  "item_precision", "item_recall")


@dataclass(frozen=True)
class SelectKeys:
    on: str | None = _key(None, "checkpoint selection: the registered dev set every checkpoint is scored on "
                                "(never a predict set); absent: no selection, the final adapter predicts")
    metric: str = _key("acc", f"the score that picks the checkpoint: {', '.join(SELECT_METRICS)} (ties: the earlier step)")
    every: str | int = _key("epoch", "epoch, or a step count: how often a checkpoint is saved (and scored)")


@dataclass(frozen=True)
class Select:
    on: str
    metric: str = "acc"
    every: str | int = "epoch"


@dataclass(frozen=True)
class SpeedKeys:
    speed: str = _key("as-written", "as-written, or fast: same data and maths, faster "
                                    "(one micro-batch, SDPA, cached tokens, batched predict)")
    micro_batch: int | None = _key(None, "speed: fast only: rows per forward (default: the whole effective batch)")
    dora_kernel: str | None = _key(None, "fast: tlf's DoRA forward (same maths, factored norm computed once per "
                                         "optimiser step); peft: PEFT's own. Default: fast under speed: fast")


@dataclass(frozen=True)
class ClusterKeys:
    cluster: str | None = _key(None, "cluster profile name (dcu, nvidia, local-test or your own)")
    slurm: dict = _key({}, "overrides of the profile's keys (slurm.<key> below)")


# (section, dataclass): section None holds top-level keys; "slurm" is the Profile itself.
SCHEMA = [(None, ExperimentKeys), ("data", DataKeys), (None, PromptKeys), (None, ArgumentKeys),
          ("sweep", SweepKeys), ("select", SelectKeys), (None, SpeedKeys), (None, ClusterKeys), ("slurm", Profile)]
TOP_KEYS = tuple([f.name for s, c in SCHEMA if s is None for f in fields(c)] + ["data", "sweep", "select"])
SELECT_KEYS = tuple(f.name for f in fields(SelectKeys))
DATA_KEYS = tuple(f.name for f in fields(DataKeys))
SWEEP_KEYS = tuple(f.name for f in fields(SweepKeys))


def schema_rows() -> list[tuple[str, str, str]]:
    """(key, default, help) for every key a spec may hold, in schema order."""
    rows = []
    for section, cls in SCHEMA:
        for f in fields(cls):
            if "help" not in f.metadata:
                continue
            default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
            rows.append((f"{section}.{f.name}" if section else f.name, json.dumps(default, ensure_ascii=False),
                         f.metadata["help"]))
    return rows


def schema_markdown() -> str:
    lines = ["| key | default | what it is |", "|---|---|---|"]
    lines += [f"| `{key}` | `{default}` | {text} |" for key, default, text in schema_rows()]
    return "\n".join(lines) + "\n"


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
    max_runs: int = 1000


@dataclass(frozen=True)
class Spec:
    path: Path
    sha256: str
    name: str
    models: dict[str, str]
    data_dir: Path
    train_set: str | None
    predict_sets: list[str]
    prompt: str
    template: str
    cluster: str | None
    seed: int
    train: dict
    predict: dict
    decoding: str
    sweep: Sweep | None
    baseline: str | None
    slurm: dict
    lines: dict[tuple, int]
    speed: str = "as-written"
    micro_batch: int | None = None   # `speed: fast` only: rows per forward (default: the whole effective batch)
    dora_kernel: str = "peft"        # fast: tlf's DoRA forward in every LLaMA-Factory process of the run
    datasets: dict = field(default_factory=dict)   # the dataset_info.json entries the spec names
    profile: Profile | None = None                 # the cluster profile with slurm: applied, resolved once
    notes: tuple[str, ...] = ()                    # things a user should know that are not errors
    labels: dict = field(default_factory=dict)     # run name -> what the run is, in words
    select: Select | None = None                   # checkpoint selection on a dev set

    def line(self, *path) -> int | None:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path)

    def where(self, *path) -> str:
        line = self.line(*path)
        key = ".".join(map(str, path))
        return f"{self.path}:{line}: {key}" if line else f"{self.path}: {key}"

    @property
    def lf_template(self) -> str:
        """The template name written into LLaMA-Factory configs."""
        return BLOG_TEMPLATE_FOR.get(self.template, self.template) if self.prompt == "blog" else self.template


def _load_yaml(path: Path) -> tuple[dict, dict[tuple, int], bytes]:
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise TlfError(f"{path}: cannot read spec ({error.strerror})") from error
    document, lines = load_yaml_strict(blob, path)
    if not isinstance(document, dict):
        raise TlfError(f"{path}: a spec is a YAML mapping of keys, got {type(document).__name__}")
    return document, lines, blob


class _Checker:
    """Collects every problem, so one run of `tlf render` shows them all."""

    def __init__(self, path: Path, lines: dict[tuple, int]):
        self.path, self.lines, self.problems = path, lines, []

    def fail(self, path: tuple, message: str) -> None:
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        key = ".".join(map(str, path))
        self.problems.append(f"{self.path}:{line}: {key}: {message}" if line else f"{self.path}: {key}: {message}")

    def keys(self, mapping: dict, allowed, prefix: tuple) -> None:
        for key in mapping:
            if key not in allowed:
                self.fail(prefix + (key,), f"unknown key{lfargs.suggest(str(key), allowed)} "
                                           f"(allowed: {', '.join(allowed)})")

    def lf_args(self, mapping, prefix: tuple) -> None:
        if mapping is None:
            return
        if not isinstance(mapping, dict):
            self.fail(prefix, f"expected a mapping of LLaMA-Factory arguments, got {type(mapping).__name__}")
            return
        self.strings(mapping, prefix)
        for key, value in _normalise_targets(mapping).items():
            if key in RESERVED:
                self.fail(prefix + (key,), "set by tlf from the spec's model/data/prompt keys; remove it here")
                continue
            problem = lfargs.check_value(str(key), value)
            if problem:
                self.fail(prefix + (key,), problem)

    def guarded(self, path: tuple, check, *args):
        """A guard check (guard.text, guard.component, ...) whose refusal is collected at ``path``."""
        try:
            return check(*args)
        except guard.Refused as error:
            self.fail(path, error.detail)
            return None

    def strings(self, value, path: tuple) -> None:
        """Every string inside ``value`` must be one line: it reaches a rendered file."""
        if isinstance(value, str):
            self.guarded(path, guard.text, value, "")
        elif isinstance(value, dict):
            for key, item in value.items():
                self.strings(key, path)
                self.strings(item, path + (key,))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.strings(item, path + (index,))

    def raise_if_any(self) -> None:
        if self.problems:
            raise TlfError("invalid spec:\n  " + "\n  ".join(self.problems))


def _normalise_targets(args: dict) -> dict:
    """Lists of modules are written as LLaMA-Factory's comma-separated strings."""
    out = dict(args)
    for key in ("lora_target", "additional_target"):
        if isinstance(out.get(key), list):
            out[key] = ",".join(str(v).strip() for v in out[key])
        elif isinstance(out.get(key), str):
            out[key] = ",".join(p.strip() for p in out[key].split(","))
    return out


def _parse_sweep(raw, check: _Checker) -> Sweep | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        check.fail(("sweep",), "expected a mapping with grid/zip/vary/tie")
        return None
    check.keys(raw, SWEEP_KEYS, ("sweep",))
    check.strings(raw, ("sweep",))
    grid = raw.get("grid") or {}
    vary = raw.get("vary") or {}
    for section, mapping in (("grid", grid), ("vary", vary)):
        if not isinstance(mapping, dict):
            check.fail(("sweep", section), "expected a mapping of argument -> list of values")
            continue
        for key, values in mapping.items():
            if not isinstance(values, list) or not values:
                check.fail(("sweep", section, key), "expected a non-empty list of values")
                continue
            for i, value in enumerate(values):
                problem = lfargs.check_value(str(key), _normalise_targets({key: value})[key])
                if problem:
                    check.fail(("sweep", section, key, i), problem)
    groups = raw.get("zip") or []
    if not isinstance(groups, list):
        check.fail(("sweep", "zip"), "expected a list of groups (mappings of argument -> equal-length lists)")
        groups = []
    for g, group in enumerate(groups):
        if not isinstance(group, dict) or not group:
            check.fail(("sweep", "zip", g), "expected a mapping of argument -> list")
            continue
        lengths = {len(v) if isinstance(v, list) else -1 for v in group.values()}
        if len(lengths) != 1 or -1 in lengths:
            check.fail(("sweep", "zip", g), "every argument of a zip group needs a list of the same length")
            continue
        for key, values in group.items():
            for i, value in enumerate(values):
                problem = lfargs.check_value(str(key), _normalise_targets({key: value})[key])
                if problem:
                    check.fail(("sweep", "zip", g, key, i), problem)
    ties = _parse_ties(raw.get("tie") or {}, check)
    swept = set(grid) | set(vary) | {k for g in groups if isinstance(g, dict) for k in g}
    for tie in ties:
        if tie.target in swept:
            check.fail(("sweep", "tie", tie.target), "is both swept and tied; keep one")
    max_runs = raw.get("max_runs", 1000)
    check.guarded(("sweep", "max_runs"), guard.integer, max_runs, "", 1, 10**9)
    return Sweep(grid=dict(grid) if isinstance(grid, dict) else {},
                 zip=[dict(g) for g in groups if isinstance(g, dict)],
                 vary=dict(vary) if isinstance(vary, dict) else {}, tie=ties, max_runs=max_runs)


def _parse_ties(raw_ties, check: _Checker) -> list[Tie]:
    if not isinstance(raw_ties, dict):
        check.fail(("sweep", "tie"), "expected a mapping of argument -> '<number> * <argument>', "
                                     "e.g. lora_alpha: 2 * lora_rank")
        return []
    ties = []
    for target, expression in raw_ties.items():
        match = TIE_RE.fullmatch(str(expression)) if isinstance(expression, (str, int, float)) else None
        if not match:
            check.fail(("sweep", "tie", target), f"expected '<number> * <argument>', got {expression!r}")
            continue
        source = match.group("n1") or match.group("n2")
        factor = float(match.group("k1") or match.group("k2") or 1)
        if lfargs.table().get(target) is None:
            check.fail(("sweep", "tie", target), lfargs.check_value(target, None) or "unknown argument")
        if lfargs.table().get(source) is None:
            check.fail(("sweep", "tie", target), f"ties to unknown argument {source!r}{lfargs.suggest(source, lfargs.table())}")
        ties.append(Tie(target, source, factor))
    return ties


def apply_overrides(raw: dict, overrides: list[str], path: Path) -> dict:
    """``key.sub=value`` pairs (values parsed as YAML) on top of the file's keys."""
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise TlfError(f"--set {override!r}: expected KEY=VALUE, e.g. model=/path or train.learning_rate=1.0e-4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise TlfError(f"--set {override!r}: value is not valid YAML ({error})") from error
        parts = key.strip().split(".")
        if not all(parts) or guard.CONTROL.search(key):
            raise TlfError(f"--set {override!r}: KEY is dotted names, e.g. train.learning_rate")
        node = raw
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        path_key = key.strip() in ("model", "data.dir") or key.startswith("models.")
        if path_key and isinstance(value, str) and not Path(value).is_absolute():
            value = str(Path(value).resolve())  # paths given on the command line are relative to the CWD
        node[parts[-1]] = value
        if parts[0] == "model":
            raw.pop("models", None)
    return raw


def load(path: Path, overrides: list[str] | None = None, require_model: bool = True) -> Spec:
    """Read and validate one experiment spec against the installed LLaMA-Factory.

    ``require_model=False`` (status, report: they only need to find the runs) accepts a local
    model directory that is gone."""
    path = Path(path)
    guard.text(str(path.absolute()), "the spec's path", "path")   # it is written into every rendered header
    raw, lines, _blob = _load_yaml(path)
    if overrides:
        raw = apply_overrides(raw, overrides, path)
    if isinstance(raw.get("select"), dict) and True in raw["select"]:
        # YAML 1.1 (PyYAML) reads a bare `on:` key as the boolean true
        raw["select"] = {("on" if k is True else k): v for k, v in raw["select"].items()}
    check = _Checker(path, lines)
    check.keys(raw, TOP_KEYS, ())
    values: dict = _parse_models(raw, check, path.parent, require_model)
    for parse in (_parse_data, _parse_prompt, _parse_arguments, _parse_experiment,
                  _parse_speed, _parse_cluster, _parse_select):
        values.update(parse(raw, check, path.parent))
    if values["sweep"] and values["train"] is None:
        check.fail(("sweep",), "a sweep varies training arguments: add train:")
    _check_select(values, check)
    check.raise_if_any()
    sets = [s for s in [values["train_set"], *values["predict_sets"]] if s]
    sets += [values["select"].on] if values["select"] else []
    values["datasets"] = _check_datasets(path, values["data_dir"], sets, lines)
    values["notes"] += _select_overlap(path, values, lines)
    spec = Spec(path=path.resolve(), sha256=_canonical_hash(raw, values), lines=lines, **values)
    return _with_profile(spec)


def _canonical_hash(raw: dict, values: dict) -> str:
    """The hash of what the spec means, not of its bytes: comments, key order and how a path
    was written (relative here, absolute on the command line) do not change it."""
    meaning = {**{k: v for k, v in raw.items() if k not in ("model", "models", "data")},
               "models": values["models"], "data": [str(values["data_dir"]), values["train_set"],
                                                    values["predict_sets"]]}
    return sha256_bytes(json.dumps(_text_keys(meaning), sort_keys=True, default=str, ensure_ascii=False).encode("utf-8"))


def _text_keys(value):
    """Mapping keys as text: YAML 1.1 reads `on:`/`yes:` as booleans, and sort_keys cannot mix them."""
    if isinstance(value, dict):
        return {str(k): _text_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text_keys(v) for v in value]
    return value


def _parse_models(raw: dict, check: _Checker, base: Path, require_model: bool = True) -> dict:
    models_raw = raw.get("models") if raw.get("models") is not None else raw.get("model")
    if "model" in raw and "models" in raw:
        check.fail(("models",), "give either 'model' (one path) or 'models' (name -> path), not both")
    if isinstance(models_raw, str):
        models = {Path(models_raw).name or "model": models_raw}
    elif isinstance(models_raw, dict) and models_raw:
        models = {str(k): v for k, v in models_raw.items()}
    else:
        check.fail(("model",), "expected a model path, or 'models:' mapping name -> path")
        models = {}
    for name, given in list(models.items()):
        key = ("model",) if "model" in raw else ("models", name)
        if check.guarded(key, guard.text, given, "", "model path") is None:
            models.pop(name)
    notes = []
    for name, given in list(models.items()):
        if not NAME_RE.fullmatch(name) or ".." in name or len(name) > guard.MAX_COMPONENT_BYTES:
            check.fail(("models", name), f"model names use letters, digits and _ . + - only, at most "
                                         f"{guard.MAX_COMPONENT_BYTES} of them")
        key = ("model",) if "model" in raw else ("models", name)
        fail = (lambda message, key=key: check.fail(key, message)) if require_model else (lambda message: None)
        models[name], note = _model_location(given, base, fail)
        notes += [note] if note else []
    return {"models": models, "notes": tuple(notes)}


def _model_location(given: str, base: Path, fail) -> tuple[str, str | None]:
    """A local model directory must hold config.json now, not 6 s into a run; a hub id is kept as
    written and resolved by LLaMA-Factory at run time."""
    local = Path(given).expanduser()
    local = local if local.is_absolute() else (base / local).resolve()
    if local.is_dir():
        if not (local / "config.json").is_file():
            fail(f"model directory {local} has no config.json (is it a Hugging Face model directory?)")
        return str(local), None
    if HUB_ID_RE.fullmatch(given) and not local.exists():
        return given, f"model {given!r} is not a directory here: read as a hub id, resolved at run time"
    fail(f"model directory {local} does not exist" + (" (it is a file)" if local.exists() else ""))
    return str(local), None


def _section(raw: dict, key: str, allowed, check: _Checker, expected: str) -> dict:
    """A mapping section of the spec (data:, slurm:): its keys checked against the schema."""
    section = raw.get(key) or {}
    if not isinstance(section, dict):
        check.fail((key,), f"expected {expected}")
        return {}
    check.keys(section, allowed, (key,))
    return section


def _parse_data(raw: dict, check: _Checker, base: Path) -> dict:
    data = _section(raw, "data", DATA_KEYS, check, "a mapping with dir, train, predict")
    predict_sets = data.get("predict") or []
    if isinstance(predict_sets, str):
        predict_sets = [predict_sets]
    if not isinstance(predict_sets, list):
        check.fail(("data", "predict"), "expected a list of registered data set names")
        predict_sets = []
    train_set = data.get("train")
    # Data set names become file and directory names (predict-<SET>.yaml, predict-<SET>/).
    for key, name in [(("data", "train"), train_set)] * (train_set is not None) + [
            (("data", "predict", i), n) for i, n in enumerate(predict_sets)]:
        check.guarded(key, guard.component, name, "", "data set name")
    for i, name in enumerate(predict_sets):
        if name in predict_sets[:i]:
            check.fail(("data", "predict", i), f"{name!r} is listed twice")
    directory = check.guarded(("data", "dir"), guard.text, data.get("dir", "data"), "", "directory")
    return {"data_dir": (base / (directory or "data")).resolve(), "train_set": train_set,
            "predict_sets": list(predict_sets)}


def _parse_prompt(raw: dict, check: _Checker, _base: Path) -> dict:
    prompt = raw.get("prompt", "upstream")
    if prompt not in PROMPT_MODES:
        check.fail(("prompt",), f"expected one of {list(PROMPT_MODES)}, got {prompt!r}")
    template = raw.get("template")
    if not isinstance(template, str):
        check.fail(("template",), "required: the LLaMA-Factory template name, e.g. default or gemma")
    elif prompt == "blog" and template not in BLOG_TEMPLATE_FOR:
        check.fail(("template",), f"blog prompt mode reproduces LLaMA-Factory 0.6's "
                                  f"{sorted(BLOG_TEMPLATE_FOR)} templates, not {template!r}")
    elif template not in lfargs.template_names():
        check.fail(("template",), f"unknown template {template!r}{lfargs.suggest(template, lfargs.template_names())}")
    decoding = raw.get("decoding", "greedy")
    if decoding not in DECODING:
        check.fail(("decoding",), f"expected 'greedy' (tlf default) or 'sampled' (LLaMA-Factory's "
                                  f"defaults, what the blog got), got {decoding!r}")
    return {"prompt": prompt, "template": template, "decoding": decoding}


def _parse_arguments(raw: dict, check: _Checker, _base: Path) -> dict:
    train = raw.get("train")
    predict = raw.get("predict") or {}
    check.lf_args(train, ("train",))
    check.lf_args(predict, ("predict",))
    if isinstance(predict, dict) and predict.get("predict_with_generate") is False:
        check.fail(("predict", "predict_with_generate"), "predict needs predict_with_generate: true "
                                                         "(exact match scores generated text)")
    for section, args in (("train", train), ("predict", predict)):
        if isinstance(args, dict) and args.get("fp16") and args.get("bf16"):
            check.fail((section, "bf16"), "fp16 and bf16 are both true; choose one")
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    if train is not None and not data.get("train"):
        check.fail(("data", "train"), "a spec with train: arguments needs data.train (a dataset name)")
    if not data.get("train") and not data.get("predict"):
        check.fail(("data",), "nothing to do: give data.train and/or data.predict")
    return {"train": _normalise_targets(train) if isinstance(train, dict) else None,
            "predict": dict(predict) if isinstance(predict, dict) else {}}


def _parse_experiment(raw: dict, check: _Checker, path_dir: Path) -> dict:
    seed = raw.get("seed", 42)
    check.guarded(("seed",), guard.integer, seed, "", 0, 2**32 - 1)   # numpy's seeds are 32-bit
    if not isinstance(raw.get("description", ""), (str, type(None))):
        check.fail(("description",), "expected text")
    baseline = raw.get("baseline")
    if baseline not in (None, "upstream"):
        check.fail(("baseline",), f"expected 'upstream' (LLaMA-Factory's own defaults), got {baseline!r}")
    if baseline and raw.get("train") is None:
        check.fail(("baseline",), "a baseline needs a training run to compare with")
    name = str(raw.get("name") or check.path.stem)
    if not NAME_RE.fullmatch(name) or ".." in name or len(name) > guard.MAX_COMPONENT_BYTES:
        check.fail(("name",), f"experiment names use letters, digits and _ . + - only, at most "
                              f"{guard.MAX_COMPONENT_BYTES} of them (the name is a directory)")
    return {"name": name, "seed": seed, "baseline": baseline, "sweep": _parse_sweep(raw.get("sweep"), check),
            "labels": _parse_labels(raw.get("labels"), check)}


MAX_LABEL = 80


def _parse_labels(raw, check: _Checker) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        check.fail(("labels",), "expected a mapping of run name -> what the run is")
        return {}
    labels = {}
    for name, label in raw.items():
        text = check.guarded(("labels", name), guard.text, label, "", "label")
        if text is not None and len(text) > MAX_LABEL:
            check.fail(("labels", name), f"a label is at most {MAX_LABEL} characters (a table cell)")
        elif text is not None:
            labels[str(name)] = text
    return labels


def _parse_speed(raw: dict, check: _Checker, _base: Path) -> dict:
    speed = raw.get("speed", "as-written")
    if speed not in SPEEDS:
        check.fail(("speed",), f"expected one of {list(SPEEDS)}, got {speed!r}")
    micro_batch = raw.get("micro_batch")
    if micro_batch is not None and check.guarded(("micro_batch",), guard.integer, micro_batch, "", 1, 1_000_000):
        if speed != "fast":
            check.fail(("micro_batch",), "micro_batch sets the `speed: fast` profile's micro-batch; add speed: fast "
                                         "(as written, the micro-batch is train.per_device_train_batch_size)")
    dora_kernel = raw.get("dora_kernel")
    if dora_kernel is not None and dora_kernel not in DORA_KERNELS:
        check.fail(("dora_kernel",), f"expected one of {list(DORA_KERNELS)}, got {dora_kernel!r}")
    return {"speed": speed, "micro_batch": micro_batch,
            "dora_kernel": dora_kernel or ("fast" if speed == "fast" else "peft")}


def _parse_cluster(raw: dict, check: _Checker, _base: Path) -> dict:
    slurm = _section(raw, "slurm", PROFILE_KEYS, check, "a mapping of Slurm overrides")
    cluster = raw.get("cluster")
    if cluster is not None and not isinstance(cluster, str):
        check.fail(("cluster",), f"expected a profile name, got {type(cluster).__name__}")
        cluster = None
    if slurm and not cluster:
        check.fail(("slurm",), "slurm: overrides keys of a cluster profile, and this spec names none; add "
                               "cluster: (dcu, nvidia, local-test or your own profile)")
    return {"cluster": cluster, "slurm": dict(slurm)}


def _parse_select(raw: dict, check: _Checker, _base: Path) -> dict:
    if raw.get("select") is None:
        return {"select": None}
    section = _section(raw, "select", SELECT_KEYS, check, "a mapping with on, metric, every")
    on = check.guarded(("select", "on"), guard.component, section.get("on"), "", "data set name")
    metric = section.get("metric", "acc")
    if metric not in SELECT_METRICS:
        check.fail(("select", "metric"), f"expected one of {', '.join(SELECT_METRICS)}, got {metric!r}")
    every = section.get("every", "epoch")
    if every != "epoch":
        check.guarded(("select", "every"), guard.integer, every, "", 1, 10**9)
    return {"select": Select(on, metric, every) if on else None}


def _check_select(values: dict, check: _Checker) -> None:
    select = values["select"]
    if select is None:
        return
    if values["train"] is None:
        check.fail(("select",), "selection picks one of a run's checkpoints: add train:")
    if select.on in values["predict_sets"] or select.on == values["train_set"]:
        used = "a predict set" if select.on in values["predict_sets"] else "the train set"
        check.fail(("select", "on"), f"{select.on!r} is {used}: selection must score on a set it never reports "
                                     "(a dev set: `tlf data split` cuts <prefix>_dev_200)")
    for key in ("save_total_limit", "save_strategy", "save_steps", "load_best_model_at_end"):
        if key in (values["train"] or {}):
            check.fail(("train", key), "set by select: (every checkpoint is kept and scored); remove it here")


def _select_overlap(path: Path, values: dict, lines: dict) -> tuple[str, ...]:
    """A dev set that shares questions with the training set, or that the split calls a test set,
    is refused; a blog-mode split (whose last train set holds every row) only gets a note."""
    select = values["select"]
    if select is None or not values["train_set"]:
        return ()
    where = f"{path}:{lines.get(('select', 'on'), lines.get(('select',), 0))}: select.on"
    manifest = rundir.read_json(values["data_dir"] / "split_manifest.json")
    splits = manifest.get("splits", {}) if isinstance(manifest, dict) else {}
    if isinstance(splits.get(select.on), dict) and splits[select.on].get("role") == "test":
        raise TlfError(f"{where}: {select.on!r} is a test set of the split: selection must never see it")
    shared = _shared_questions(values["data_dir"], values["datasets"], select.on, values["train_set"])
    if not shared:
        return ()
    message = (f"{select.on} shares {shared} question(s) with the train set {values['train_set']}, so its "
               "scores reward recall of training rows")
    if isinstance(manifest, dict) and manifest.get("mode") == "blog":
        return (f"WARNING: {message} (a blog-mode split: its {values['train_set']} holds every row)",)
    raise TlfError(f"{where}: {message}; cut a dev set held out from training (`tlf data split`)")


def _shared_questions(data_dir: Path, datasets: dict, dev: str, train: str) -> int:
    def questions(name: str) -> set[str]:
        rows = rundir.read_json(data_dir / str(datasets[name].get("file_name", "")))
        return {str(r.get("instruction", "")) + str(r.get("input", "")) for r in rows if isinstance(r, dict)} \
            if isinstance(rows, list) else set()
    return len(questions(dev) & questions(train))


def _with_profile(spec: Spec) -> Spec:
    """The cluster profile, with the spec's slurm: on top, resolved once here. A bad value the spec
    itself set is named by the spec's file:line:key, not by the profile's file."""
    if not spec.cluster:
        return spec
    try:
        profile = load_profile(spec.cluster, spec.path.parent, spec.slurm)
    except BadProfileValue as error:
        if error.key not in spec.slurm:
            raise
        raise TlfError(f"{spec.where('slurm', error.key)}: {error.detail}") from None
    return replace(spec, profile=profile)


def _check_datasets(path: Path, data_dir: Path, names: list[str], lines: dict) -> dict:
    """Every dataset the spec names must be registered in data.dir's dataset_info.json;
    returns their entries."""
    import json

    info_path = data_dir / "dataset_info.json"
    line = lines.get(("data",))
    where = f"{path}:{line}: data" if line else f"{path}: data"
    if not info_path.exists():
        raise TlfError(f"{where}: {info_path} does not exist; run `tlf data split` or fix data.dir")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise TlfError(f"{info_path}: not valid JSON ({error})") from None
    if not isinstance(info, dict):
        raise TlfError(f"{info_path}: expected a JSON object of data set entries")
    for name in names:
        if name not in info:
            raise TlfError(f"{where}: dataset {name!r} is not registered in {info_path}"
                           f"{lfargs.suggest(name, info)}")
        entry = info[name]
        if not isinstance(entry, dict):
            raise TlfError(f"{info_path}: entry {name!r}: expected a data set object (file_name, columns, ...)")
        if "file_name" in entry:
            guard.text(entry["file_name"], f"{info_path}: entry {name!r}: file_name", "file name")
    return {name: info[name] for name in names}
