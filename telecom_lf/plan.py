"""A validated spec -> the list of runs it stands for (sweep points, models, baseline).

Pure: no files are read except each model's ``config.json`` (for per-family module names),
nothing is written. The same spec always gives the same runs in the same order.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import lfargs, rundir
from .errors import TlfError
from .spec import Spec, SweepKeys, default

# What `baseline: upstream` keeps from the spec: settings that change neither the
# mathematics of training nor the data, only how and where it runs. Every other training
# argument falls back to LLaMA-Factory's own default.
INFRASTRUCTURE = {
    "finetuning_type", "cutoff_len", "fp16", "bf16", "pure_bf16", "flash_attn", "logging_steps",
    "save_steps", "save_strategy", "save_total_limit", "plot_loss", "report_to", "overwrite_cache",
    "preprocessing_num_workers", "dataloader_num_workers", "ddp_timeout", "deepspeed",
    "gradient_checkpointing", "disable_gradient_checkpointing", "include_num_input_tokens_seen",
    "max_samples", "trust_remote_code", "use_cache", "enable_liger_kernel", "torch_compile",
    "overwrite_output_dir", "resume_from_checkpoint", "tokenized_path",
}
BASELINE_NAME = "upstream-defaults"

# Module names per model family, from config.json's model_type. A spec names LLaMA-style
# modules; other families get their equivalents (fused qkv maps from any of q/k/v).
FAMILY_MODULES = {
    "llama": None, "qwen2": None, "qwen3": None, "gemma": None, "gemma2": None, "gemma3_text": None,
    "mistral": None, "qwen": None,
    "chatglm": {"q_proj": "query_key_value", "k_proj": "query_key_value", "v_proj": "query_key_value",
                "o_proj": "dense", "gate_proj": "dense_h_to_4h", "up_proj": "dense_h_to_4h",
                "down_proj": "dense_4h_to_h"},
    "baichuan": {"q_proj": "W_pack", "k_proj": "W_pack", "v_proj": "W_pack", "o_proj": "o_proj",
                 "gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"},
}
NAME_ABBREVIATIONS = {"lora_rank": "r", "lora_alpha": "a", "lora_dropout": "d", "learning_rate": "lr",
                      "num_train_epochs": "ep", "loraplus_lr_ratio": "lp", "per_device_train_batch_size": "bs",
                      "gradient_accumulation_steps": "ga"}
NAME_ORDER = ["lora_rank", "lora_alpha", "lora_target", "lora_dropout", "use_rslora", "use_dora"]
MODULE_LETTERS = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "g",
                  "up_proj": "u", "down_proj": "d"}


@dataclass(frozen=True)
class RunPlan:
    name: str                       # directory name, unique within the experiment
    model_name: str
    model_path: str
    train_args: dict | None         # LLaMA-Factory training arguments (None: predict-only probe)
    varied: dict = field(default_factory=dict)   # the arguments that make this run differ
    is_baseline: bool = False
    point: dict = field(default_factory=dict)    # every swept argument's value in this run, defaults included
    reference: str | None = None    # the run this one is compared with: its A/B base in a vary sweep
    label: str | None = None        # what the run is, in words (spec labels:, or tlf's for the baseline)
    seed: int | None = None         # a replica's seed (seeds:); None: the spec's seed
    config: str | None = None       # a replica's configuration: the run's name without -s<seed>


@dataclass(frozen=True)
class Axis:
    """One direction of a sweep: the arguments that move together along it (a zip group moves as
    one; a tied argument follows its source), and how the sweep moves them."""
    kind: str                       # grid | zip | vary
    arguments: tuple[str, ...]

    @property
    def name(self) -> str:
        return " + ".join(self.arguments)


def argument_text(value):
    """A swept argument's value as the spec writes it (JSON true/false and lists), ints as ints: the
    report's columns and the tracker's tags."""
    return json.dumps(value) if isinstance(value, (bool, list, dict)) else value


BASELINE_LABEL = "LLaMA-Factory defaults"
VARY_BASE_LABEL = "A/B base"


def axes(spec: Spec) -> list[Axis]:
    sweep = spec.sweep
    if sweep is None:
        return []
    found = [Axis("grid", (key,)) for key in sweep.grid]
    found += [Axis("zip", tuple(group)) for group in sweep.zip]
    found += [Axis("vary", (key,)) for key in sweep.vary]
    for tie in sweep.tie:   # lora_alpha moves with lora_rank: one axis, not two
        found = [replace(a, arguments=a.arguments + (tie.target,)) if tie.source in a.arguments else a for a in found]
    return found


def _points(spec: Spec) -> list[tuple[dict, dict | None]]:
    """Every sweep point, with the point it is compared with (a vary point's base), in order."""
    sweep = spec.sweep
    if sweep is None:
        return [({}, None)]
    axes_: list[list[dict]] = [[{key: value} for value in values] for key, values in sweep.grid.items()]
    for group in sweep.zip:
        keys = list(group)
        axes_.append([dict(zip(keys, values)) for values in zip(*group.values())])
    grid = [dict(kv for part in combo for kv in part.items()) for combo in itertools.product(*axes_)]
    points: list[tuple[dict, dict | None]] = [(point, None) for point in grid]
    # One factor at a time, the blog's A/B method: each alternative value against its base point.
    for base in grid if sweep.vary else []:
        for key, values in sweep.vary.items():
            for value in values:
                if (spec.train or {}).get(key) != value:
                    points.append(({**base, key: value}, base))
    return points


def _apply_ties(spec: Spec, args: dict) -> dict:
    for tie in spec.sweep.tie if spec.sweep else []:
        source = args.get(tie.source, lfargs.table()[tie.source].default)
        if source is None:
            raise TlfError(f"{spec.where('sweep', 'tie', tie.target)}: {tie.source} has no value to tie to")
        args[tie.target] = tie.value(source)
    return args


def _target_letters(value: str) -> str:
    modules = [m.strip() for m in str(value).split(",")]
    if all(m in MODULE_LETTERS for m in modules):
        order = "qkvogud"
        return "".join(sorted((MODULE_LETTERS[m] for m in modules), key=order.index))
    return "+".join(modules)


def _token(key: str, value) -> str:
    if key == "lora_target":
        return _target_letters(value)
    if key in ("use_rslora", "use_dora", "create_new_adapter"):
        word = key.split("_", 1)[1].replace("adapter", "newadapter")
        return word if value else f"no{word}"
    short = NAME_ABBREVIATIONS.get(key, key)
    if isinstance(value, bool):
        return short if value else f"no{short}"
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{short}{value}"


def run_name(varied: dict) -> str:
    """A readable, stable name from the varied arguments: ``r256-a512-qkvo-rslora-dora``."""
    keys = [k for k in NAME_ORDER if k in varied] + sorted(k for k in varied if k not in NAME_ORDER)
    name = "-".join(_token(k, varied[k]) for k in keys)
    safe = "".join(ch if ch.isalnum() or ch in "._+-" else "_" for ch in name)
    return safe or "run"


def map_targets(spec: Spec, model_name: str, model_path: str, args: dict) -> dict:
    """Rewrite LLaMA-style module names for the model's family (read from its config.json)."""
    target = args.get("lora_target")
    if not target or target == "all":
        return args
    config_file = Path(model_path) / rundir.MODEL_CONFIG
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type", "")
    except (OSError, ValueError) as error:
        raise TlfError(f"{spec.where('models', model_name)}: cannot read {config_file} to map "
                       f"lora_target for this model ({error}); use lora_target: all") from error
    family = next((f for f in FAMILY_MODULES if model_type == f or model_type.startswith(f)), None)
    if family is None:
        raise TlfError(f"{spec.where('train', 'lora_target')}: model {model_name!r} is a {model_type!r}, "
                       f"whose module names tlf does not know; use lora_target: all")
    mapping = FAMILY_MODULES[family]
    if mapping is None:
        return args
    modules = []
    for module in target.split(","):
        mapped = mapping.get(module, module)
        if mapped not in modules:
            modules.append(mapped)
    return {**args, "lora_target": ",".join(modules)}




def count_runs(spec: Spec) -> int:
    """How many runs ``expand`` would make, from the list lengths alone (nothing is expanded)."""
    sweep, points = spec.sweep, 1
    if sweep is not None:
        for values in sweep.grid.values():
            points *= len(values)
        for group in sweep.zip:
            points *= len(next(iter(group.values()), []))
        if sweep.vary:
            points *= 1 + sum(len(values) for values in sweep.vary.values())
    per_model = (points if spec.train is not None else 1) + (spec.baseline == "upstream")
    return per_model * len(spec.models) * len(spec.seeds or (None,))


def _refuse_huge(spec: Spec) -> None:
    limit = spec.sweep.max_runs if spec.sweep else default(SweepKeys, "max_runs")
    total = count_runs(spec)
    if total > limit:
        raise TlfError(f"{spec.where('sweep')}: the experiment would have {total:,} runs, more than sweep.max_runs "
                       f"= {limit:,}; shorten the lists, or raise sweep.max_runs (in the spec, or "
                       f"--set sweep.max_runs={total}) if you mean it")


def expand(spec: Spec) -> list[RunPlan]:
    """Every run of the experiment, in a stable order: models x sweep points, then baseline."""
    _refuse_huge(spec)
    runs: list[RunPlan] = []
    multi_model = len(spec.models) > 1
    swept = [argument for axis in axes(spec) for argument in axis.arguments]
    for model_name, model_path in spec.models.items():
        if spec.train is None:
            runs.append(RunPlan(name=f"{model_name}-probe", model_name=model_name,
                                model_path=model_path, train_args=None))
            continue
        for point, base in _points(spec):
            run = _sweep_run(spec, model_name, model_path, point, swept, multi_model)
            reference = (
                _sweep_run(spec, model_name, model_path, base, swept, multi_model).name if base is not None else None
            )
            label = VARY_BASE_LABEL if spec.sweep and spec.sweep.vary and base is None else None
            runs.append(replace(run, reference=reference, label=label))
        if spec.baseline == "upstream":
            args = {k: v for k, v in spec.train.items() if k in INFRASTRUCTURE}
            runs.append(RunPlan(name=_prefixed(model_name, BASELINE_NAME, multi_model), model_name=model_name,
                                model_path=model_path, train_args=args, is_baseline=True, label=BASELINE_LABEL,
                                point={k: _value(args, k) for k in swept}))
    runs = _replicas(spec, _with_labels(spec, runs))
    seen: dict[str, RunPlan] = {}
    for run in runs:
        rundir.check_run_name(run.name, f"{spec.path}: run {run.name!r} (from {run.varied or 'the name'})")
        if run.name in seen:
            raise TlfError(f"{spec.path}: two runs are both named {run.name!r} (the sweep repeats a point)")
        seen[run.name] = run
    return runs


def replica_name(name: str, seed: int) -> str:
    return f"{name}-s{seed}"


def _replicas(spec: Spec, runs: list[RunPlan]) -> list[RunPlan]:
    """seeds: every run once per seed, named <run>-s<seed>, compared with its reference's replica of
    the same seed (so a Δ pairs runs that differ in one thing)."""
    if not spec.seeds:
        return runs
    return [replace(run, name=replica_name(run.name, seed), seed=seed, config=run.name,
                    reference=replica_name(run.reference, seed) if run.reference else None)
            for run in runs for seed in spec.seeds]


def _sweep_run(spec: Spec, model_name: str, model_path: str, point: dict, swept: list[str],
               multi_model: bool) -> RunPlan:
    args = _apply_ties(spec, {**spec.train, **point})
    if multi_model:
        args = map_targets(spec, model_name, model_path, args)
    ties = spec.sweep.tie if spec.sweep else []
    varied = {k: args[k] for k in [*point, *(t.source for t in ties), *(t.target for t in ties)] if k in args}
    name = run_name(varied) if varied else spec.name
    return RunPlan(name=_prefixed(model_name, name, multi_model), model_name=model_name, model_path=model_path,
                   train_args=args, varied=varied, point={k: _value(args, k) for k in swept})


def _value(args: dict, key: str):
    """An argument's value in a run: as set, else LLaMA-Factory's own default."""
    return args[key] if key in args else lfargs.table()[key].default


def _with_labels(spec: Spec, runs: list[RunPlan]) -> list[RunPlan]:
    """The spec's labels: (run name -> what it is) on its runs; a name that is no run is refused."""
    names = [r.name for r in runs]
    for name in spec.labels:
        if name not in names:
            raise TlfError(f"{spec.where('labels', name)}: no run is named {name!r}; runs: {', '.join(names)}")
    return [replace(r, label=spec.labels.get(r.name, r.label)) for r in runs]


def _prefixed(model_name: str, name: str, with_model: bool) -> str:
    return f"{model_name}-{name}" if with_model else name
