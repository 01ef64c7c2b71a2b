"""Runs -> files: LLaMA-Factory train/predict YAMLs, dataset entries, job scripts, manifests.

``render_files`` is pure (same spec, same bytes); ``write_files`` is the only writer and
refuses to touch a run that has already produced outputs unless forced.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import yaml

from . import __version__, compat, dora, guard, inputs, lfargs, rundir, slurm, tracking
from . import plan as plan_mod
from .errors import TlfError
from .fsutil import sha256_bytes, write_all
from .plan import RunPlan
from .records import ExperimentRecord, Manifest, RunEntry
from .rundir import MANIFEST, TRAIN_DIR, TRAIN_FILE, predict_dir, predict_file
from .spec import Spec

# LLaMA-Factory 0.6, which the blog ran, cut sequences at 1024 tokens; 0.9.5 at 2048.
BLOG_CUTOFF_LEN = 1024
BLOG_MAX_NEW_TOKENS = 512   # LLaMA-Factory 0.6's generating_args default; 0.9.5's is 1024
# tlf's own choices where LLaMA-Factory's defaults hide what a study needs to see:
# a loss point every 5 steps (HF's default 500 logs nothing on short runs) and the loss plot.
TLF_TRAIN_DEFAULTS = {"logging_steps": (5, "tlf default: a loss point every 5 steps (HF: 500)"),
                      "plot_loss": (True, "tlf default: training_loss.png"),
                      "report_to": ("none", "tlf default: no wandb/tensorboard")}
FAST = "speed: fast"


class Config(dict):
    """LLaMA-Factory arguments in order, each with where its value came from."""

    def put(self, key: str, value, origin: str) -> None:
        self[key] = (value, origin)

    def values(self) -> dict:  # type: ignore[override]
        return {key: value for key, (value, _origin) in self.items()}

    def value(self, key: str, default=None):
        return self[key][0] if key in self else default

    def put_fast(self, key: str, value) -> None:
        """A `speed: fast` value, saying which value it replaced and where that came from."""
        before = f" (was {self[key][0]}: {self[key][1]})" if key in self and self[key][0] != value else ""
        self.put(key, value, FAST + before)


def layout(spec: Spec, out: Path) -> rundir.Experiment:
    return rundir.Experiment.at(out, spec.name)


def _from_spec(spec: Spec, *path) -> str:
    line = spec.line(*path)
    return f"spec {spec.path.name}:{line}" if line else f"spec {spec.path.name}"


def _arg_origin(spec: Spec, run: RunPlan, key: str) -> str:
    """A training argument's origin: the sweep line that chose it, else its line under train:."""
    sweep = spec.sweep
    if key in run.varied and sweep:
        if any(tie.target == key for tie in sweep.tie):
            return _from_spec(spec, "sweep", "tie", key) + " (sweep tie)"
        for section in ("grid", "vary"):
            if key in getattr(sweep, section):
                return _from_spec(spec, "sweep", section, key) + f" (sweep {section})"
        for index, group in enumerate(sweep.zip):
            if key in group:
                return _from_spec(spec, "sweep", "zip", index, key) + " (sweep zip)"
    if run.is_baseline:
        return _from_spec(spec, "train", key) + " (kept by the upstream baseline)"
    return _from_spec(spec, "train", key)


def _common(spec: Spec, run: RunPlan, config: Config) -> None:
    template_note = (
        f" (prompt: blog -> LLaMA-Factory 0.6's {spec.prompt.template})" if spec.prompt.mode == "blog" else ""
    )
    config.put("template", spec.prompt.lf_template, _from_spec(spec, "template") + template_note)
    config.put("dataset_dir", str(spec.data.dir), _from_spec(spec, "data", "dir"))
    if run.seed is not None:
        config.put("seed", run.seed, _from_spec(spec, "seeds") + " (this replica's)")
    else:
        origin = _from_spec(spec, "seed") if spec.line("seed") else f"tlf default: {spec.seed}, as HF"
        config.put("seed", spec.seed, origin)


def _model_origin(spec: Spec, run: RunPlan) -> str:
    return _from_spec(spec, "models", run.model_name) if len(spec.models) > 1 else _from_spec(spec, "model")


def train_config(spec: Spec, run: RunPlan, run_dir: Path) -> Config:
    args = dict(run.train_args or {})
    config = Config()
    config.put("model_name_or_path", run.model_path, _model_origin(spec, run))
    config.put("stage", "sft", "tlf: supervised fine-tuning")
    config.put("do_train", True, "tlf: the train step")
    if "finetuning_type" not in args:
        config.put("finetuning_type", "lora", "tlf default: LoRA, as the blog")
    _common(spec, run, config)
    config.put("dataset", spec.data.train, _from_spec(spec, "data", "train"))
    config.put("output_dir", str(run_dir / TRAIN_DIR), "tlf: the run directory (stable: resume after a requeue)")
    config.put("overwrite_output_dir", False, "tlf: resume from the last checkpoint, never wipe")
    if spec.prompt.mode == "blog":
        config.put("cutoff_len", BLOG_CUTOFF_LEN, "tlf default: LLaMA-Factory 0.6's cutoff (prompt: blog)")
    for key, (value, origin) in TLF_TRAIN_DEFAULTS.items():
        config.put(key, value, origin)
    profile = spec.cluster.profile
    if profile and profile.precision and not ({"fp16", "bf16", "pure_bf16"} & set(args)):
        config.put(profile.precision, True, f"profile {profile.name}")
    if spec.select is not None:
        _select_saving(spec, args, config)
    elif "save_steps" not in args and args.get("save_strategy", "steps") == "steps":
        config.put("save_steps", max(1, _total_steps(spec, args) // 10), "tlf default: about ten checkpoints per run")
        config.put("save_total_limit", 2, "tlf default: keep the last two checkpoints")
    for key, value in args.items():
        config.put(key, value, _arg_origin(spec, run, key))
    if spec.speed.mode == "fast":
        for key, value in fast_settings(spec, run, config.values(), args,
                                        profile.gpu_memory_gb if profile else None).items():
            config.put_fast(key, value)
    _tracking_arguments(spec, run, config)
    return config


def _tracking_arguments(spec: Spec, run: RunPlan, config: Config) -> None:
    """tracking: the tracker LLaMA-Factory's trainer reports the losses to. Where in it (the MLflow
    run, TensorBoard's directory: transformers 5 reads it from TENSORBOARD_LOGGING_DIR, not
    logging_dir) tlf-lf sets from the run's tracking.json (the header line)."""
    kind = spec.tracking.kind
    if kind == "none":
        return
    origin = _from_spec(spec, "tracking")
    config.put("report_to", kind, origin + " (LLaMA-Factory's losses)")
    if kind == "mlflow":
        config.put("run_name", run.name, origin + " (the MLflow run's name; tlf-lf attaches it to the run's id)")


FAST_PREDICT_BATCH = 32   # rows per generate call under `speed: fast` (the blog: 1)
# Measured on one H100 (benchmarks/RESULTS.md, gemma-2b shape, 64 rows of ~38 tokens): Liger
# kernels cut peak memory from 17.0 to 5.8 GB but cost 1.49x in samples/s. So the fast
# profile uses them only where memory is the question: a card under this size, or one the
# cluster profile does not size (gpu_memory_gb: null, or no cluster).
LIGER_BELOW_GB = 40
# Below this, 64 such rows without Liger (17.0 GB) do not fit; half of them (~11 GB,
# interpolated between the measured 8 and 64 rows) do.
HALVE_MICRO_BELOW_GB = 24


def liger_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def _micro_batch_for(effective: int, card_gb: float | None, liger: bool) -> int:
    """The whole effective batch at once, except on a small card without Liger: half of it."""
    small = card_gb is not None and card_gb < HALVE_MICRO_BELOW_GB
    return effective // 2 if small and not liger and effective % 2 == 0 else effective


def fast_settings(spec: Spec, run: RunPlan, config: dict, user_args: dict, card_gb: float | None) -> dict:
    """The `speed: fast` profile: same data, same effective batch, same hyper-parameters; only
    how the work is done changes. One micro-batch holds the whole effective batch (or
    `micro_batch` rows, the rest by accumulation), SDPA attention, the tokenised data set
    cached on disk, tokens/s logged, and for CARD_GB (the cluster profile's
    gpu_memory_gb, None when unknown): Liger kernels below LIGER_BELOW_GB when installed, else half the batch per
    micro-batch below HALVE_MICRO_BELOW_GB. A key the spec sets in train: itself (say
    `enable_liger_kernel: false`) is left as the spec has it."""
    table = lfargs.table()
    batch = config.get("per_device_train_batch_size", table["per_device_train_batch_size"].default)
    accumulation = config.get("gradient_accumulation_steps", table["gradient_accumulation_steps"].default)
    effective = batch * accumulation
    liger = "enable_liger_kernel" not in user_args and liger_installed() and (card_gb or 0) < LIGER_BELOW_GB
    micro = spec.speed.micro_batch or _micro_batch_for(
        effective, card_gb, liger or bool(user_args.get("enable_liger_kernel"))
    )
    if effective % micro:
        raise TlfError(f"{spec.path}:{spec.line('micro_batch') or 1}: micro_batch {micro} does not divide the "
                       f"effective batch {effective} (= {batch} x {accumulation}) of run {run.name!r}; "
                       f"the fast profile keeps the effective batch, so use a divisor of {effective}")
    key = sha256_bytes(json.dumps([run.model_path, spec.prompt.lf_template, config.get("cutoff_len"), spec.data.train],
                                  sort_keys=True).encode())[:16]
    fast = {
        "flash_attn": "sdpa" if config.get("flash_attn", "auto") == "auto" else config["flash_attn"],
        "tokenized_path": str(spec.data.dir / ".tlf-tokenized" / key),
        "include_num_input_tokens_seen": True,
        "dataloader_num_workers": 2,
        **({"enable_liger_kernel": True} if liger else {}),
    }
    fast = {k: v for k, v in fast.items() if k not in user_args}
    return {**fast, "per_device_train_batch_size": micro, "gradient_accumulation_steps": effective // micro}


MAX_SELECT_CHECKPOINTS = 50   # each one is predicted on the dev set: more is a typo of `every`


def _select_saving(spec: Spec, args: dict, config: Config) -> None:
    """select: every checkpoint is kept (no save_total_limit) and saved every epoch or N steps."""
    import math

    origin = _from_spec(spec, "select", "every") + " (select: every checkpoint is scored)"
    table = lfargs.table()
    if spec.select.every == "epoch":
        config.put("save_strategy", "epoch", origin)
        count = math.ceil(float(args.get("num_train_epochs", table["num_train_epochs"].default)))
    else:
        config.put("save_strategy", "steps", origin)
        config.put("save_steps", spec.select.every, origin)
        count = math.ceil(_total_steps(spec, args) / spec.select.every)
    if count > MAX_SELECT_CHECKPOINTS:
        raise TlfError(f"{spec.where('select', 'every')}: {spec.select.every} would save {count} checkpoints, each "
                       f"predicted on {spec.select.on}; at most {MAX_SELECT_CHECKPOINTS}: choose a larger step count")


def _total_steps(spec: Spec, args: dict) -> int:
    """Optimiser steps of a run, from the train set's rows, the effective batch and the epochs."""
    import math

    file_name = spec.data.entries[spec.data.train].get("file_name")
    if file_name is None:
        raise TlfError(f"{spec.where('data', 'train')}: {spec.data.train} has no local file_name, so tlf cannot count "
                       "its rows to choose save_steps; set train.save_steps")
    data_file = spec.data.dir / file_name
    try:
        rows = _row_count(data_file)
    except (OSError, ValueError, TypeError, RecursionError) as error:
        raise TlfError(f"{spec.where('data', 'train')}: cannot read {data_file} as a list of rows ({error})") from None
    if args.get("max_samples"):
        rows = min(rows, int(args["max_samples"]))
    table = lfargs.table()
    batch = args.get("per_device_train_batch_size", table["per_device_train_batch_size"].default)
    accumulation = args.get("gradient_accumulation_steps", table["gradient_accumulation_steps"].default)
    epochs = args.get("num_train_epochs", table["num_train_epochs"].default)
    return max(1, int(math.ceil(rows / (batch * accumulation)) * epochs))


def predict_config(spec: Spec, run: RunPlan, run_dir: Path, dataset: str) -> Config:
    train = run.train_args
    finetuning = (train or {}).get("finetuning_type", "lora")
    config = Config()
    if spec.select and train is not None:
        trained, model, adapter = (
            run_dir / rundir.SELECTED,
            *(
                f"tlf: the checkpoint select: chose on {spec.select.on} ({what})"
                for what in ("its whole model", "its adapter")
            ),
        )
    else:
        trained, model, adapter = run_dir / TRAIN_DIR, "tlf: the run's fully fine-tuned model", "tlf: the run's adapter"
    whole_model = train is not None and rundir.weights_key(finetuning) == "model_name_or_path"
    if whole_model:
        config.put("model_name_or_path", str(trained), model)
    else:
        config.put("model_name_or_path", run.model_path, _model_origin(spec, run))
    if train is not None and not whole_model:
        config.put("adapter_name_or_path", str(trained), adapter)
    config.put("stage", "sft", "tlf: predict runs through the sft stage")
    config.put("do_predict", True, "tlf: the predict step")
    config.put("predict_with_generate", True, "tlf: exact match scores generated text")
    config.put("finetuning_type", finetuning, _from_spec(spec, "train", "finetuning_type")
               if "finetuning_type" in (train or {}) else "tlf default: LoRA, as the blog")
    _common(spec, run, config)
    # 0.9.5 reads the predict set from eval_dataset; `dataset` fails there.
    config.put("eval_dataset", dataset, _from_spec(spec, "data", "predict"))
    config.put("output_dir", str(run_dir / predict_dir(dataset)), "tlf: the run directory")
    config.put("overwrite_output_dir", True, "tlf: a predict step is redone whole")
    config.put("report_to", "none", "tlf default: no wandb/tensorboard")
    if spec.prompt.mode == "blog":
        config.put("cutoff_len", BLOG_CUTOFF_LEN, "tlf default: LLaMA-Factory 0.6's cutoff (prompt: blog)")
    if train and "cutoff_len" in train:
        config.put("cutoff_len", train["cutoff_len"], _arg_origin(spec, run, "cutoff_len") + " (as trained)")
    if spec.prompt.mode == "blog":
        # The blog never set it: LLaMA-Factory 0.6 generated at most 512 new tokens, 0.9.5 1024.
        config.put("max_new_tokens", BLOG_MAX_NEW_TOKENS, "tlf default: LLaMA-Factory 0.6's limit (prompt: blog)")
    if spec.prompt.decoding == "greedy":
        # LLaMA-Factory samples by default (temperature 0.95, top_p 0.7): the blog's scores
        # were sampled. Greedy makes a score a property of the adapter, not of the dice.
        config.put("do_sample", False, "tlf default: greedy predict (decoding: greedy)")
    for key, value in spec.predict.items():
        config.put(key, value, _from_spec(spec, "predict", key))
    if spec.speed.mode == "fast":
        # Rows are generated independently (left-padded), so a batch changes the speed, not the
        # maths; bf16 near-ties can still flip a token (measured: 100/100 identical on an H200,
        # 99/100 on an H100).
        batch = config.value("per_device_eval_batch_size", lfargs.table()["per_device_eval_batch_size"].default)
        if batch < FAST_PREDICT_BATCH:
            config.put_fast("per_device_eval_batch_size", FAST_PREDICT_BATCH)
    return config


def git_commit(start: Path) -> str | None:
    """The commit checked out in the repository holding ``start``, read from .git (no process)."""
    for directory in [start, *start.parents]:
        git = directory / ".git"
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            git = (directory / git.read_text().split(":", 1)[1].strip()).resolve()
        if not git.is_dir():
            continue
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        for base in (git, git / ".." if (git / "commondir").exists() else git):
            if (base / ref).exists():
                return (base / ref).read_text().strip()
        packed = git / "packed-refs"
        if packed.exists():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
        return None
    return None


@cache
def _row_count(data_file: Path) -> int:
    """Rows of an Alpaca JSON file; read once, not once per sweep point."""
    rows = json.loads(inputs.read_input(data_file, "data set"))
    if not isinstance(rows, list):
        raise TypeError(f"a JSON {type(rows).__name__}, not a list")
    return len(rows)


# LLaMA-Factory's argument groups, in the order its train parser reads them.
GROUP_ORDER = ("ModelArguments", "DataArguments", "Seq2SeqTrainingArguments", "TrainingArguments",
               "FinetuningArguments", "GeneratingArguments")


def config_yaml(header: list[str], config: Config) -> bytes:
    """The config as YAML that plain llamafactory-cli reads: keys grouped by LLaMA-Factory's
    argument group, each line commented with where its value came from."""
    table = lfargs.table()
    groups: dict[str, list[str]] = {}
    for key, (value, origin) in config.items():
        line = yaml.safe_dump({key: value}, allow_unicode=True, default_flow_style=False, width=10**6).rstrip("\n")
        text = f"{line}  # {origin}" if "\n" not in line else f"# {origin}\n{line}"
        group = table[key].group if key in table else "other"
        groups.setdefault(group, []).append(text)
    order = sorted(groups, key=lambda g: GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER))
    body = "".join(f"\n# --- {group} ---\n" + "\n".join(groups[group]) + "\n" for group in order)
    blob = ("".join(f"# {line}\n" for line in header) + body).encode("utf-8")
    if yaml.safe_load(blob) != config.values():
        raise AssertionError("tlf bug: the commented YAML does not read back as the config it was made from")
    return blob


def _header(spec: Spec, run: RunPlan, name: str) -> list[str]:
    lines = [f"Rendered by tlf {__version__} from {spec.path} (run {run.name}); re-render, do not edit.",
             f"Run:      tlf-lf train {name}   (llamafactory-cli plus tlf's blog-era templates)",
             f"Override: tlf-lf train {name} {'learning_rate=1.0e-4' if name == TRAIN_FILE else 'max_samples=10'}"
             "   (key=value after the file)",
             "Each value's comment says where it came from: the spec's file:line, the cluster profile,",
             "a tlf default (and why), or speed: fast."]
    if name != TRAIN_FILE and spec.prompt.mode == "blog":
        lines.append(
            rundir.header_line(
                compat.DECODE_KEY,
                "0.6",
                "prompt: blog: predictions decoded with "
                "clean_up_tokenization_spaces=True, as LLaMA-Factory 0.6 did; plain llamafactory-cli ignores this line",
            )
        )
    if name == TRAIN_FILE and spec.tracking.kind != "none":
        where = "this run's MLflow run" if spec.tracking.kind == "mlflow" else "this run's log directory"
        lines.append(rundir.header_line(tracking.HEADER_KEY, spec.tracking.kind, f"{_from_spec(spec, 'tracking')}: "
                                        f"tlf-lf points LLaMA-Factory's {spec.tracking.kind} callback at {where} "
                                        f"({tracking.TRACKING_FILE}); plain llamafactory-cli ignores this line"))
    if uses_fast_dora(spec, run):
        origin = _from_spec(spec, "dora_kernel") if spec.line("dora_kernel") else "speed: fast"
        lines.append(rundir.header_line(dora.KEY, "fast", f"{origin}: tlf-lf installs its DoRA forward, same maths "
                                        "as PEFT's; plain llamafactory-cli ignores this line"))
    return lines


def uses_fast_dora(spec: Spec, run: RunPlan) -> bool:
    return spec.speed.dora_kernel == "fast" and bool((run.train_args or {}).get("use_dora"))


def select_config(spec: Spec, run: RunPlan, run_dir: Path) -> Config:
    """The dev set's predict config; `tlf step select` runs it once per checkpoint with
    adapter_name_or_path (model_name_or_path for full fine-tuning) and output_dir set to it."""
    config = predict_config(spec, run, run_dir, spec.select.on)
    key = rundir.weights_key((run.train_args or {}).get("finetuning_type"))
    config.put(key, str(run_dir / TRAIN_DIR), "tlf: replaced by each checkpoint in turn (tlf step select)")
    config.put("output_dir", str(run_dir / rundir.SELECT_DIR), "tlf: select/<checkpoint>/ per checkpoint")
    # A checkpoint's score must not depend on the dice or on a row limit meant for the reports.
    config.put("do_sample", False, "tlf: selection is greedy, whatever decoding: says")
    config.pop("max_samples", None)
    if "per_device_eval_batch_size" not in spec.predict:
        config.put("per_device_eval_batch_size", FAST_PREDICT_BATCH, "tlf: selection predicts batched")
    return config


def _run_files(spec: Spec, run: RunPlan, run_dir: Path, entries: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    if run.train_args is not None:
        files[TRAIN_FILE] = config_yaml(_header(spec, run, TRAIN_FILE), train_config(spec, run, run_dir))
    if run.train_args is not None and spec.select is not None:
        name = rundir.select_file(spec.select.on)
        files[name] = config_yaml(_header(spec, run, name), select_config(spec, run, run_dir))
    for dataset in spec.data.predict:
        name = predict_file(dataset)
        files[name] = config_yaml(_header(spec, run, name), predict_config(spec, run, run_dir, dataset))
    files[rundir.DATASETS_FILE] = entries
    tracked = _tracking(spec, run_dir.parent, run)
    if tracked is not None:
        files[tracking.TRACKING_FILE] = tracked.to_json()
    files.update(slurm.job_files(spec, run, run_dir))
    return files


def _tracking(spec: Spec, root: Path, run: RunPlan | None = None) -> tracking.Tracking | None:
    """What a run (or, without one, the experiment) tracks where: its tracking.json."""
    tags = {}
    if run is not None:
        tags = {f"arg.{key}": plan_mod.argument_text(value) for key, value in sorted(run.point.items())}
        tags.update({"tlf.model": run.model_name, "tlf.seed": run.seed if run.seed is not None else spec.seed,
                     "tlf.baseline": run.is_baseline, **({"tlf.label": run.label} if run.label else {})})
    return tracking.plan(spec.tracking.kind, spec.tracking.uri, spec.name, root, run.name if run else None, tags)


def _check_tracking(spec: Spec) -> None:
    missing = tracking.missing_packages(spec.tracking.kind)
    if missing:
        raise TlfError(f"{spec.where('tracking')}: tracking: {spec.tracking.kind} needs {', '.join(missing)}, "
                       f"which is not installed here: {tracking.INSTALL}")


def _manifest(spec: Spec, run: RunPlan, files: dict[str, bytes], provenance: dict) -> bytes:
    split_manifest = spec.data.dir / rundir.SPLIT_MANIFEST
    manifest = Manifest(
        **provenance,
        experiment=spec.name,
        run=run.name,
        model={"name": run.model_name, "path": run.model_path},
        prompt=spec.prompt.mode,
        template=spec.prompt.lf_template,
        seed=run.seed if run.seed is not None else spec.seed,
        varied=run.varied,
        baseline=run.is_baseline,
        trains=run.train_args is not None,
        finetuning_type=run.train_args.get("finetuning_type", "lora") if run.train_args is not None else None,
        dora_kernel="fast" if uses_fast_dora(spec, run) else "peft",
        predict_sets=spec.data.predict,
        select=({"on": spec.select.on, "metric": spec.select.metric, "every": spec.select.every}
                if spec.select and run.train_args is not None else None),
        dataset_dir=str(spec.data.dir),
        split_manifest=str(split_manifest) if split_manifest.exists() else None,
        files={name: sha256_bytes(blob) for name, blob in sorted(files.items())},
    )
    return manifest.to_json()


def render_files(spec: Spec, runs: list[RunPlan], out: Path) -> dict[Path, bytes]:
    """Every file of the experiment, path -> bytes. Pure: no file is written."""
    where = layout(spec, out)
    _check_tracking(spec)
    provenance = {"tlf": __version__, "versions": lfargs.installed_versions(), "spec": str(spec.path),
                  "spec_sha256": spec.sha256, "git_commit": git_commit(spec.path.parent)}
    entries = (json.dumps(spec.data.entries, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    files: dict[Path, bytes] = {}
    for run in runs:
        run_dir = where.run_dir(run.name)
        run_files = _run_files(spec, run, run_dir, entries)
        run_files[MANIFEST] = _manifest(spec, run, run_files, provenance)
        files.update({run_dir / name: blob for name, blob in run_files.items()})
    experiment = ExperimentRecord(
        experiment=spec.name, spec=str(spec.path), spec_sha256=spec.sha256, predict_sets=spec.data.predict,
        axes=[{"kind": a.kind, "arguments": list(a.arguments)} for a in plan_mod.axes(spec)],
        runs=[RunEntry(name=r.name, model=r.model_name, varied=r.varied, baseline=r.is_baseline,
                       train=r.train_args is not None, point=r.point, reference=r.reference, label=r.label,
                       seed=r.seed, config=r.config)
              for r in runs])
    files.update(slurm.experiment_files(spec, runs, where.root))
    files[where.root / rundir.EXPERIMENT] = experiment.to_json()
    tracked = _tracking(spec, where.root)
    if tracked is not None:
        files[where.root / tracking.TRACKING_FILE] = tracked.to_json()
    return files


def _only_provenance_differs(path: Path, blob: bytes) -> bool:
    """A started run's manifest may be rewritten when its rendered files are the same: only
    provenance (the spec's hash, versions, commit) changed, and the results still match."""
    if path.name != MANIFEST:
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8"))["files"] == json.loads(blob)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _root_of(files: dict[Path, bytes]) -> Path:
    """The experiment directory of a rendering: where its experiment.json goes."""
    return next(path.parent for path in files if path.name == rundir.EXPERIMENT)


def _refuse_other_experiment(root: Path, blob: bytes) -> None:
    """An experiment directory belongs to one spec: a second spec with the same name would replace
    its scripts and experiment.json, and its finished runs would drop out of the report."""
    existing = rundir.read_json(root / rundir.EXPERIMENT)
    if not (root / rundir.EXPERIMENT).exists():
        return
    theirs = existing.get("spec") if isinstance(existing, dict) else None
    ours = json.loads(blob)["spec"]
    if theirs != ours:
        raise TlfError(f"{root}: already holds experiment {root.name!r} rendered from "
                       f"{theirs or 'an unreadable experiment.json'}, not from {ours}; give this spec another "
                       "name: or --out, or pass --force to take the directory over")


def plan_writes(files: dict[Path, bytes], force: bool = False) -> list[Path]:
    """The files that differ from what is on disk. Refuses, before anything is written, to change a
    run that has outputs (unless forced), to write through a link out of the experiment directory,
    and to take over another spec's experiment: the same checks for a dry run and a real one."""
    root = _root_of(files)
    for directory in sorted({path.parent for path in files}):
        rundir.refuse_symlinks(directory)   # a run directory or the experiment's, each a real directory
    for path in files:
        guard.inside(path, root, "rendering")
    if not force:
        _refuse_other_experiment(root, files[root / rundir.EXPERIMENT])
    changed = [p for p, blob in files.items() if not p.exists() or p.read_bytes() != blob]
    if not force:
        for path in changed:
            if path.exists() and rundir.started(path.parent) and not _only_provenance_differs(path, files[path]):
                raise TlfError(f"{path} differs from the new rendering and run {path.parent.name} has "
                               f"outputs in {path.parent}; pass --force to re-render over it")
    return changed


def write_files(files: dict[Path, bytes], force: bool = False, changed: list[Path] | None = None) -> list[Path]:
    """Write what changed, all or none (a full disk leaves no run half-rendered); refuse to change a
    started run. ``changed``: plan_writes' answer when the caller has it already (nothing is read twice)."""
    changed = plan_writes(files, force) if changed is None else changed
    write_all({path: files[path] for path in changed})
    return changed


def plan_and_render(spec: Spec, out: Path) -> tuple[list[RunPlan], dict[Path, bytes]]:
    runs = plan_mod.expand(spec)
    return runs, render_files(spec, runs, out)
