"""An experiment spec (YAML) -> a validated ``Spec``. Every error names the file, line and key.

A spec is flat and hackable, torchtune-style: LLaMA-Factory arguments by their own names under
``train:`` and ``predict:``, and a handful of tlf keys around them. See experiments/ for
annotated examples and the README for the full list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import lfargs
from .compat import BLOG_TEMPLATE_FOR
from .errors import TlfError
from .fsutil import sha256_bytes

TOP_KEYS = ("name", "description", "model", "models", "data", "prompt", "template", "cluster",
            "seed", "train", "predict", "decoding", "sweep", "baseline", "slurm", "speed", "micro_batch")
SPEEDS = ("as-written", "fast")
DATA_KEYS = ("dir", "train", "predict")
SWEEP_KEYS = ("grid", "zip", "vary", "tie")
PROMPT_MODES = ("blog", "upstream")
DECODING = ("greedy", "sampled")
# Keys tlf writes itself: setting them in a spec would silently fight the plan.
RESERVED = {"model_name_or_path", "adapter_name_or_path", "dataset", "eval_dataset", "dataset_dir",
            "output_dir", "do_train", "do_predict", "do_eval", "stage", "template", "seed"}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
TIE_RE = re.compile(r"^\s*(?:(?P<k1>[0-9.]+)\s*\*\s*(?P<n1>[a-z_]+)|(?P<n2>[a-z_]+)(?:\s*\*\s*(?P<k2>[0-9.]+))?)\s*$")


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
    datasets: dict = field(default_factory=dict)   # the dataset_info.json entries the spec names

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
    try:
        loader = yaml.SafeLoader(blob.decode("utf-8"))
        try:
            node = loader.get_single_node()
            document = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError as error:
        raise TlfError(f"{path}: not UTF-8 ({error})") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TlfError(f"{where}: invalid YAML ({getattr(error, 'problem', error)})") from error
    if not isinstance(document, dict):
        raise TlfError(f"{path}: a spec is a YAML mapping of keys, got {type(document).__name__}")
    lines: dict[tuple, int] = {}
    _collect_lines(node, (), lines)
    return document, lines, blob


def _collect_lines(node, prefix: tuple, lines: dict[tuple, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (key_node.value,)
            lines[path] = key_node.start_mark.line + 1
            _collect_lines(value_node, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[prefix + (index,)] = item.start_mark.line + 1
            _collect_lines(item, prefix + (index,), lines)


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
        for key, value in _normalise_targets(mapping).items():
            if key in RESERVED:
                self.fail(prefix + (key,), "set by tlf from the spec's model/data/prompt keys; remove it here")
                continue
            problem = lfargs.check_value(str(key), value)
            if problem:
                self.fail(prefix + (key,), problem)

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
    ties = []
    for target, expression in (raw.get("tie") or {}).items():
        match = TIE_RE.match(str(expression))
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
    swept = set(grid) | set(vary) | {k for g in groups if isinstance(g, dict) for k in g}
    for tie in ties:
        if tie.target in swept:
            check.fail(("sweep", "tie", tie.target), "is both swept and tied; keep one")
    return Sweep(grid=dict(grid) if isinstance(grid, dict) else {},
                 zip=[dict(g) for g in groups if isinstance(g, dict)],
                 vary=dict(vary) if isinstance(vary, dict) else {}, tie=ties)


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
        node = raw
        parts = key.strip().split(".")
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


def load(path: Path, overrides: list[str] | None = None) -> Spec:
    """Read and validate one experiment spec against the installed LLaMA-Factory."""
    path = Path(path)
    raw, lines, blob = _load_yaml(path)
    if overrides:
        raw = apply_overrides(raw, overrides, path)
        blob += ("\n# --set " + " ".join(overrides)).encode("utf-8")
    check = _Checker(path, lines)
    check.keys(raw, TOP_KEYS, ())
    base = path.parent

    models_raw = raw.get("models") if raw.get("models") is not None else raw.get("model")
    if "model" in raw and "models" in raw:
        check.fail(("models",), "give either 'model' (one path) or 'models' (name -> path), not both")
    if isinstance(models_raw, str):
        models = {Path(models_raw).name or "model": models_raw}
    elif isinstance(models_raw, dict) and models_raw:
        models = {str(k): str(v) for k, v in models_raw.items()}
    else:
        check.fail(("model",), "expected a model path, or 'models:' mapping name -> path")
        models = {}
    for name in models:
        if not NAME_RE.fullmatch(name) or ".." in name:
            check.fail(("models", name), "model names use letters, digits and _ . + - only")
    models = {n: str((base / Path(p).expanduser()).resolve()) if not Path(p).is_absolute() else p
              for n, p in models.items()}

    data = raw.get("data") or {}
    if not isinstance(data, dict):
        check.fail(("data",), "expected a mapping with dir, train, predict")
        data = {}
    check.keys(data, DATA_KEYS, ("data",))
    data_dir = (base / str(data.get("dir", "data"))).resolve()
    predict_sets = data.get("predict") or []
    if isinstance(predict_sets, str):
        predict_sets = [predict_sets]
    train_set = data.get("train")

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

    seed = raw.get("seed", 42)
    if not isinstance(seed, int) or isinstance(seed, bool):
        check.fail(("seed",), f"expected an integer, got {seed!r}")
    decoding = raw.get("decoding", "greedy")
    if decoding not in DECODING:
        check.fail(("decoding",), f"expected 'greedy' (tlf default) or 'sampled' (LLaMA-Factory's "
                                  f"defaults, what the blog got), got {decoding!r}")
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
    if train is not None and not train_set:
        check.fail(("data", "train"), "a spec with train: arguments needs data.train (a dataset name)")
    if not train_set and not predict_sets:
        check.fail(("data",), "nothing to do: give data.train and/or data.predict")
    baseline = raw.get("baseline")
    if baseline not in (None, "upstream"):
        check.fail(("baseline",), f"expected 'upstream' (LLaMA-Factory's own defaults), got {baseline!r}")
    if baseline and train is None:
        check.fail(("baseline",), "a baseline needs a training run to compare with")
    sweep = _parse_sweep(raw.get("sweep"), check)
    if sweep and train is None:
        check.fail(("sweep",), "a sweep varies training arguments: add train:")
    name = str(raw.get("name") or path.stem)
    if not NAME_RE.fullmatch(name) or ".." in name:
        check.fail(("name",), "experiment names use letters, digits and _ . + - only")
    slurm = raw.get("slurm") or {}
    if not isinstance(slurm, dict):
        check.fail(("slurm",), "expected a mapping of Slurm overrides")
        slurm = {}
    cluster = raw.get("cluster")
    if slurm and not cluster:
        check.fail(("slurm",), "slurm: overrides keys of a cluster profile, and this spec names none; add "
                               "cluster: (dcu, nvidia, local-test or your own profile)")
    speed = raw.get("speed", "as-written")
    if speed not in SPEEDS:
        check.fail(("speed",), f"expected one of {list(SPEEDS)}, got {speed!r}")
    micro_batch = raw.get("micro_batch")
    if micro_batch is not None:
        if isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or micro_batch < 1:
            check.fail(("micro_batch",), f"expected a positive whole number of rows, got {micro_batch!r}")
        elif speed != "fast":
            check.fail(("micro_batch",), "micro_batch sets the `speed: fast` profile's micro-batch; add speed: fast "
                                         "(as written, the micro-batch is train.per_device_train_batch_size)")
    check.raise_if_any()
    datasets = _check_datasets(path, data_dir, [s for s in [train_set, *predict_sets] if s], lines)

    return Spec(path=path.resolve(), sha256=sha256_bytes(blob), name=name, models=models, data_dir=data_dir,
                train_set=train_set, predict_sets=list(predict_sets), prompt=prompt, template=template,
                cluster=cluster, seed=seed, train=_normalise_targets(train or {}) if train is not None else None,
                predict=dict(predict), decoding=decoding, sweep=sweep, baseline=baseline, slurm=dict(slurm),
                lines=lines, speed=speed, micro_batch=micro_batch, datasets=datasets)


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
    except (OSError, ValueError) as error:
        raise TlfError(f"{info_path}: not valid JSON ({error})") from error
    for name in names:
        if name not in info:
            raise TlfError(f"{where}: dataset {name!r} is not registered in {info_path}"
                           f"{lfargs.suggest(name, info)}")
    return {name: info[name] for name in names}
