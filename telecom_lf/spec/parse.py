"""Reading a spec: strict YAML, every problem collected with its file:line:key, one section at a
time, then the data sets checked against data.dir's dataset_info.json and the cluster profile
applied."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import yaml

from .. import guard, inputs, lfargs, rundir
from ..cluster import PROFILE_KEYS, BadProfileValue, load_profile
from ..compat import BLOG_TEMPLATE_FOR
from ..errors import TlfError
from ..fsutil import load_yaml_strict, sha256_bytes
from .model import Cluster, Data, Prompt, Spec, Sweep, Tie
from .options import parse_speed, parse_tracking
from .schema import (
    DATA_KEYS,
    DECODING,
    HUB_ID_RE,
    MAX_SEEDS,
    NAME_RE,
    PROMPT_MODES,
    RESERVED,
    SELECT_KEYS,
    SELECT_METRICS,
    SWEEP_KEYS,
    TIE_RE,
    TOP_KEYS,
    DataKeys,
    ExperimentKeys,
    PromptKeys,
    Select,
    SweepKeys,
    default,
)


def _load_yaml(path: Path) -> tuple[dict, dict[tuple, int], bytes]:
    blob = inputs.read_input(path, "spec")
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
    max_runs = raw.get("max_runs", default(SweepKeys, "max_runs"))
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
            check.fail(
                ("sweep", "tie", target), f"ties to unknown argument {source!r}{lfargs.suggest(source, lfargs.table())}"
            )
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
        except (yaml.YAMLError, ValueError, RecursionError) as error:
            raise TlfError(f"--set {guard._short(override)}: value is not valid YAML "
                           f"({guard._short(str(error).split(';')[0], 200)})") from None
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
    models, notes = _parse_models(raw, check, path.parent, require_model)
    data = _parse_data(raw, check, path.parent)
    train, predict = _parse_arguments(raw, check)
    top = _parse_experiment(raw, check)
    select = _parse_select(raw, check)
    sections = {"prompt": _parse_prompt(raw, check), "speed": parse_speed(raw, check),
                "cluster": _parse_cluster(raw, check), "select": select,
                "tracking": parse_tracking(raw, train, check)}
    if top["sweep"] and train is None:
        check.fail(("sweep",), "a sweep varies training arguments: add train:")
    _check_select(select, train, data, check)
    check.raise_if_any()
    sets = [s for s in [data.train, *data.predict] if s] + ([select.on] if select else [])
    data = replace(data, entries=_check_datasets(path, data.dir, sets, lines))
    notes += _select_overlap(path, select, data, lines)
    spec = Spec(path=path.resolve(), sha256=_canonical_hash(raw, models, data), lines=lines, models=models, data=data,
                train=train, predict=predict, notes=notes, **top, **sections)
    return _with_profile(spec)


def _canonical_hash(raw: dict, models: dict, data: Data) -> str:
    """The hash of what the spec means, not of its bytes: comments, key order and how a path
    was written (relative here, absolute on the command line) do not change it."""
    meaning = {**{k: v for k, v in raw.items() if k not in ("model", "models", "data")},
               "models": models, "data": [str(data.dir), data.train, data.predict]}
    return sha256_bytes(
        json.dumps(_text_keys(meaning), sort_keys=True, default=str, ensure_ascii=False).encode("utf-8")
    )


def _text_keys(value):
    """Mapping keys as text: YAML 1.1 reads `on:`/`yes:` as booleans, and sort_keys cannot mix them."""
    if isinstance(value, dict):
        return {str(k): _text_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text_keys(v) for v in value]
    return value


def _parse_models(raw: dict, check: _Checker, base: Path, require_model: bool = True) -> tuple[dict, tuple]:
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
    return models, tuple(notes)


def _model_location(given: str, base: Path, fail) -> tuple[str, str | None]:
    """A local model directory must hold config.json now, not 6 s into a run; a hub id is kept as
    written and resolved by LLaMA-Factory at run time."""
    local = Path(given).expanduser()
    local = local if local.is_absolute() else (base / local).resolve()
    if local.is_dir():
        if not (local / rundir.MODEL_CONFIG).is_file():
            fail(f"model directory {local} has no config.json (is it a Hugging Face model directory?)")
        return str(local), None
    from_cwd = Path(given).expanduser().absolute()
    if not Path(given).expanduser().is_absolute() and not local.exists() and from_cwd.is_dir():
        fail(f"{given!r} is not a directory relative to the spec ({local}), but is relative to the working directory "
             f"({from_cwd}); a spec's relative paths are read from the spec's own directory, as data.dir is (so "
             "the spec means the same from anywhere): write the absolute path, or the path from the spec")
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


def _parse_data(raw: dict, check: _Checker, base: Path) -> Data:
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
    fallback = default(DataKeys, "dir")
    directory = check.guarded(("data", "dir"), guard.text, data.get("dir", fallback), "", "directory")
    return Data(dir=(base / (directory or fallback)).resolve(), train=train_set, predict=list(predict_sets))


def _parse_prompt(raw: dict, check: _Checker) -> Prompt:
    prompt = raw.get("prompt", default(PromptKeys, "prompt"))
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
    decoding = raw.get("decoding", default(PromptKeys, "decoding"))
    if decoding not in DECODING:
        check.fail(("decoding",), f"expected 'greedy' (tlf default) or 'sampled' (LLaMA-Factory's "
                                  f"defaults, what the blog got), got {decoding!r}")
    return Prompt(mode=prompt, template=template, decoding=decoding)


def _parse_arguments(raw: dict, check: _Checker) -> tuple[dict | None, dict]:
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
    return (_normalise_targets(train) if isinstance(train, dict) else None,
            dict(predict) if isinstance(predict, dict) else {})


def _parse_experiment(raw: dict, check: _Checker) -> dict:
    """The top-level keys of the experiment itself: name, seed, baseline, sweep, labels."""
    seed = raw.get("seed")
    seed = default(ExperimentKeys, "seed") if seed is None else seed
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
    return {"name": name, "seed": seed, "seeds": _parse_seeds(raw, check), "baseline": baseline,
            "sweep": _parse_sweep(raw.get("sweep"), check),
            "labels": _parse_labels(raw.get("labels"), check)}


def _parse_seeds(raw: dict, check: _Checker) -> tuple[int, ...] | None:
    """seeds: a list of distinct 32-bit integers, at most MAX_SEEDS of them, instead of seed:."""
    seeds = raw.get("seeds")
    if seeds is None:
        return None
    if raw.get("seed") is not None:
        check.fail(("seeds",), "give seed: (one run per configuration) or seeds: (replicas), not both "
                               "(on the command line: --set seed=null --set seeds=[42,7])")
    if not isinstance(seeds, list) or not seeds:
        check.fail(("seeds",), "expected a non-empty list of integer seeds, e.g. [42, 7, 1]")
        return None
    if len(seeds) > MAX_SEEDS:
        check.fail(("seeds",), f"{len(seeds)} seeds; at most {MAX_SEEDS} (each one replicates every run)")
        return None
    for index, seed in enumerate(seeds):
        if check.guarded(("seeds", index), guard.integer, seed, "", 0, 2**32 - 1) is None:
            return None
        if seed in seeds[:index]:
            check.fail(("seeds", index), f"seed {seed} is listed twice")
            return None
    return tuple(seeds)


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


def _parse_cluster(raw: dict, check: _Checker) -> Cluster:
    slurm = _section(raw, "slurm", PROFILE_KEYS, check, "a mapping of Slurm overrides")
    cluster = raw.get("cluster")
    if cluster is not None and not isinstance(cluster, str):
        check.fail(("cluster",), f"expected a profile name, got {type(cluster).__name__}")
        cluster = None
    if slurm and not cluster:
        check.fail(("slurm",), "slurm: overrides keys of a cluster profile, and this spec names none; add "
                               "cluster: (dcu, nvidia, local-test or your own profile)")
    return Cluster(name=cluster, slurm=dict(slurm))


def _parse_select(raw: dict, check: _Checker) -> Select | None:
    if raw.get("select") is None:
        return None
    section = _section(raw, "select", SELECT_KEYS, check, "a mapping with on, metric, every")
    on = check.guarded(("select", "on"), guard.component, section.get("on"), "", "data set name")
    metric = section.get("metric", default(Select, "metric"))
    if metric not in SELECT_METRICS:
        check.fail(("select", "metric"), f"expected one of {', '.join(SELECT_METRICS)}, got {metric!r}")
    every = section.get("every", default(Select, "every"))
    if every != "epoch":
        check.guarded(("select", "every"), guard.integer, every, "", 1, 10**9)
    return Select(on, metric, every) if on else None


def _check_select(select: Select | None, train: dict | None, data: Data, check: _Checker) -> None:
    if select is None:
        return
    if train is None:
        check.fail(("select",), "selection picks one of a run's checkpoints: add train:")
    if select.on in data.predict or select.on == data.train:
        used = "a predict set" if select.on in data.predict else "the train set"
        check.fail(("select", "on"), f"{select.on!r} is {used}: selection must score on a set it never reports "
                                     "(a dev set: `tlf data split` cuts <prefix>_dev_200)")
    for key in ("save_total_limit", "save_strategy", "save_steps", "load_best_model_at_end"):
        if key in (train or {}):
            check.fail(("train", key), "set by select: (every checkpoint is kept and scored); remove it here")


def _select_overlap(path: Path, select: Select | None, data: Data, lines: dict) -> tuple[str, ...]:
    """A dev set that shares questions with the training set, or that the split calls a test set,
    is refused; a blog-mode split (whose last train set holds every row) only gets a note."""
    if select is None or not data.train:
        return ()
    where = f"{path}:{lines.get(('select', 'on'), lines.get(('select',), 0))}: select.on"
    manifest = rundir.read_json(data.dir / rundir.SPLIT_MANIFEST)
    splits = manifest.get("splits", {}) if isinstance(manifest, dict) else {}
    if isinstance(splits.get(select.on), dict) and splits[select.on].get("role") == "test":
        raise TlfError(f"{where}: {select.on!r} is a test set of the split: selection must never see it")
    shared = _shared_questions(data.dir, data.entries, select.on, data.train)
    if not shared:
        return ()
    message = (f"{select.on} shares {shared} question(s) with the train set {data.train}, so its "
               "scores reward recall of training rows")
    if isinstance(manifest, dict) and manifest.get("mode") == "blog":
        return (f"WARNING: {message} (a blog-mode split: its {data.train} holds every row)",)
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
    cluster = spec.cluster
    if not cluster.name:
        return spec
    try:
        profile = load_profile(cluster.name, spec.path.parent, cluster.slurm)
    except BadProfileValue as error:
        if error.key not in cluster.slurm:
            raise
        raise TlfError(f"{spec.where('slurm', error.key)}: {error.detail}") from None
    tracking = spec.tracking
    if tracking.kind == "mlflow" and tracking.uri is None and profile.tracking_uri:
        tracking = replace(tracking, uri=profile.tracking_uri)   # the site's server; the spec's URI wins
    return replace(spec, cluster=replace(cluster, profile=profile), tracking=tracking)


def _check_datasets(path: Path, data_dir: Path, names: list[str], lines: dict) -> dict:
    """Every dataset the spec names must be registered in data.dir's dataset_info.json;
    returns their entries."""

    info_path = data_dir / rundir.DATASET_INFO
    line = lines.get(("data",))
    where = f"{path}:{line}: data" if line else f"{path}: data"
    if not info_path.exists():
        raise TlfError(f"{where}: {info_path} does not exist; run `tlf data split` or fix data.dir")
    try:
        info = json.loads(inputs.read_input(info_path, "record"))
    except (ValueError, RecursionError) as error:
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
