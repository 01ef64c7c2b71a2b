"""Using what a run trained: which weights, template, decoding and prompt wrapper.

``tlf chat``, ``tlf probe`` and ``tlf export`` all start here, so the three talk to exactly
what the run's predict step used: its base model, its adapter (the final one or a chosen
checkpoint), its template (blog-era templates included), its decoding, and the instruction
the data wrapped every question in. Nothing is re-derived from the spec: the run's own
rendered predict YAML is the source, as it is for the predict step itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import inputs, rundir
from .errors import TlfError
from .rundir import Run

# The keys of a rendered config that say what answers: the model and adapter, the prompt
# template, the fine-tuning type, and LLaMA-Factory's GeneratingArguments.
MODEL_KEYS = ("model_name_or_path", "adapter_name_or_path", "template", "finetuning_type", "trust_remote_code")
GENERATING_KEYS = ("do_sample", "temperature", "top_p", "top_k", "num_beams", "max_length", "max_new_tokens",
                   "repetition_penalty", "length_penalty", "skip_special_tokens", "enable_thinking")


@dataclass(frozen=True)
class RunModel:
    """What answers a question: ``args`` are LLaMA-Factory inference arguments."""
    label: str                      # "base" or the run's name, with "@checkpoint-N" when chosen
    args: dict
    wrapper: str | None             # the data's instruction, with {question}; None: type whole prompts
    precision: dict = field(default_factory=dict)   # fp16/bf16 as the predict step ran

    @property
    def adapter(self) -> str | None:
        return self.args.get("adapter_name_or_path")

MAX_QUESTION_CHARS = 20_000   # one question typed to chat or given to probe



def read_config(path: Path) -> dict | None:
    """A rendered config as a dict; None when the file is missing."""
    if not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise TlfError(f"{path}: not readable as YAML ({error}); re-render the run") from None
    if not isinstance(loaded, dict):
        raise TlfError(f"{path}: not a rendered config (not a mapping); re-render the run")
    return loaded


def _predict_config(run: Run) -> tuple[Path, dict]:
    """The run's first predict YAML (or train.yaml when the run predicts nothing)."""
    for path in [run.config(f"predict-{s}") for s in run.predict_sets] + [run.config("train")]:
        loaded = read_config(path)
        if loaded is not None:
            return path, loaded
    raise TlfError(f"{run.path}: no rendered predict or train YAML; run `tlf render` first")


def predict_config(run: Run, model_args: dict, changes: dict, dataset: str | None = None) -> dict:
    """The run's predict YAML for ``dataset`` (default: its first predict set) answering with
    ``model_args`` instead, greedy, with ``changes``: how probe and export predict through the
    same path, template and settings as the run's own predict step."""
    if not run.predict_sets:
        raise TlfError(f"run {run.name} predicts no set: its predict settings are unknown; give it data.predict")
    path = run.config(f"predict-{dataset or run.predict_sets[0]}")
    config = read_config(path)
    if config is None:
        raise TlfError(f"{path}: missing; re-render the run")
    for key in (*MODEL_KEYS, "max_samples"):
        config.pop(key, None)
    return {**config, **model_args, "do_sample": False, "overwrite_output_dir": True, **changes}


def checkpoints(run: Run) -> list[int]:
    """Steps of the run's complete checkpoints (rundir's definition), in order."""
    return [step for step, _path in rundir.checkpoints(run.train_dir, complete=True)]


def _adapter_dir(run: Run, checkpoint: str | None) -> tuple[Path, str]:
    """The adapter to load and its label; refuses a run not trained yet or an unknown step."""
    if not rundir.train_done(run):
        raise TlfError(f"run {run.name} is not trained yet ({run.train_dir} has no final weights); "
                       f"train it first (`tlf run` or `tlf submit`), or use --base")
    chosen = rundir.chosen_step(run)
    if checkpoint is None and chosen is not None:
        checkpoint = "best"                  # what the run's predict steps used
    if checkpoint in (None, "last", "final"):
        return run.train_dir, run.name
    if checkpoint == "best":
        if chosen is None:
            raise TlfError(
                "--checkpoint best needs a checkpoint selection (`select:` in the spec)"
                + (" that has finished (`tlf step RUN select`)" if run.select else ", which this run does not have")
                + "; give a step number, or --checkpoint last for the final adapter"
            )
        return run.path / rundir.SELECTED, f"{run.name}@checkpoint-{chosen} (selected)"
    valid = checkpoints(run)
    listing = ", ".join(map(str, valid)) or "none kept"
    if not (checkpoint.isascii() and checkpoint.isdigit() and len(checkpoint) <= 18) or int(checkpoint) not in valid:
        otherwise = (f"leave it out for the selected checkpoint-{chosen}, or --checkpoint last for the final adapter"
                     if chosen is not None else "leave it out for the final adapter")
        raise TlfError(f"--checkpoint {checkpoint[:40]!r}: no such checkpoint of run {run.name}; "
                       f"kept steps: {listing} (or {otherwise})")
    name = rundir.checkpoint_name(int(checkpoint))
    return run.train_dir / name, f"{run.name}@{name}"


def resolve(run: Run, checkpoint: str | None = None, base: bool = False) -> RunModel:
    """The model, adapter, template and decoding the run's predict step used."""
    source, config = _predict_config(run)
    args = {k: config[k] for k in (*MODEL_KEYS, *GENERATING_KEYS) if k in config}
    args.pop("adapter_name_or_path", None)
    precision = {k: config[k] for k in ("fp16", "bf16") if config.get(k)}
    label = "base"
    if base:
        if checkpoint is not None:
            raise TlfError("--base and --checkpoint exclude each other: the base model has no checkpoints")
        args["model_name_or_path"] = run.model_path
    elif run.trains:
        adapter, label = _adapter_dir(run, checkpoint)
        args[rundir.weights_key(config.get("finetuning_type"))] = str(adapter)
    elif checkpoint is not None:
        raise TlfError(f"run {run.name} trains nothing (it predicts with the base model): no checkpoints")
    if "model_name_or_path" not in args:
        raise TlfError(f"{source}: no model_name_or_path; re-render the run")
    return RunModel(label, args, instruction_wrapper(run), precision)


def infer_args(model: RunModel) -> dict:
    """LLaMA-Factory inference arguments (chat, export): the run's, in the precision its
    predict step ran (fp16/bf16 there are TrainingArguments; inference reads infer_dtype)."""
    args = dict(model.args)
    for flag, dtype in (("fp16", "float16"), ("bf16", "bfloat16")):
        if model.precision.get(flag):
            args["infer_dtype"] = dtype
    return args


def instruction_wrapper(run: Run) -> str | None:
    """The instruction template the run's data was written with (rundir's lookup)."""
    return run.instruction_wrapper


def wrap(model: RunModel, question: str, raw: bool = False) -> str:
    """The user turn the run saw for ``question``: the data's instruction around it."""
    if raw or model.wrapper is None:
        return question
    return model.wrapper.replace("{question}", question)


# ---------------------------------------------------------------- registered data sets


def dataset_rows(dataset_dir: Path, name: str) -> list[dict]:
    """The Alpaca records of a set registered in ``dataset_dir/dataset_info.json``."""
    info = rundir.read_json(dataset_dir / rundir.DATASET_INFO)
    if not isinstance(info, dict) or not isinstance(info.get(name), dict):
        known = ", ".join(sorted(info)) if isinstance(info, dict) else "none"
        raise TlfError(f"data set {name!r} is not registered in {dataset_dir / rundir.DATASET_INFO}; "
                       f"registered: {known[:400]}")
    file_name = info[name].get("file_name")
    path = (dataset_dir / str(file_name)).resolve()
    try:
        records = json.loads(inputs.read_input(path, "data set"))
    except (OSError, ValueError) as error:
        raise TlfError(f"{path}: data set {name!r} is not readable JSON ({error})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and "instruction" in r for r in records):
        raise TlfError(f"{path}: expected a list of Alpaca records with 'instruction'")
    return records
