"""The keys a spec may hold: one dataclass per concern, each key with its default (stated here
once) and why. Validation, `tlf spec --help-keys` and the README's key table come from them."""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, dataclass, field, fields

from ..cluster import Profile

SPEEDS = ("as-written", "fast")
DORA_KERNELS = ("fast", "peft")
PREDICT_MODES = ("shared", "per-run")
TRACKERS = ("none", "mlflow", "tensorboard")
PROMPT_MODES = ("blog", "upstream")
DECODING = ("greedy", "sampled")
# Keys tlf writes itself: setting them in a spec would silently fight the plan.
RESERVED = {"model_name_or_path", "adapter_name_or_path", "dataset", "eval_dataset", "dataset_dir",
            "output_dir", "do_train", "do_predict", "do_eval", "stage", "template", "seed"}
MAX_SEEDS = 100
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
    seeds: list | None = _key(None, f"replicate every run over these seeds (e.g. [42, 7, 1]; at most {MAX_SEEDS}, "
                                    "instead of seed:): runs are named <run>-s<seed>, and the report shows each "
                                    "configuration as mean ± sd over them and compares configurations on all replicas")
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
class Select:
    """select: as written and as parsed (a parsed one always has ``on``)."""
    on: str | None = _key(None, "checkpoint selection: the registered dev set every checkpoint is scored on "
                                "(never a predict set); absent: no selection, the final adapter predicts")
    metric: str = _key(
        "acc", f"the score that picks the checkpoint: {', '.join(SELECT_METRICS)} (ties: the earlier step)"
    )
    every: str | int = _key("epoch", "epoch, or a step count: how often a checkpoint is saved (and scored)")


@dataclass(frozen=True)
class SpeedKeys:
    speed: str = _key("as-written", "as-written, or fast: same data and maths, faster "
                                    "(one micro-batch, SDPA, cached tokens, batched predict)")
    micro_batch: int | None = _key(None, "speed: fast only: rows per forward (default: the whole effective batch)")
    dora_kernel: str | None = _key(None, "fast: tlf's DoRA forward (same maths, factored norm computed once per "
                                         "optimiser step); peft: PEFT's own. Default: fast under speed: fast")
    predict_mode: str = _key("shared", "shared: in one LLaMA-Factory process (tlf run, tlf demo; on Slurm a sweep's "
                                       "one predict job after its array) the base model is read from disk once and "
                                       "every predict works on an in-memory copy (the same bytes, the same "
                                       "predictions); per-run: each predict reads it (on Slurm: in its array task)")


@dataclass(frozen=True)
class TrackingKeys:
    tracking: str = _key("none", "mlflow: one MLflow experiment per spec, one MLflow run per tlf run (LLaMA-Factory's "
                                 "losses, tlf's scores and the selection), in <experiment>/mlflow.db; tensorboard: "
                                 "<experiment>/tensorboard/<run>; both need `pip install -e '.[tracking]'`")
    tracking_uri: str | None = _key(None, "tracking: mlflow only: an MLflow tracking URI instead of the SQLite store "
                                          "(e.g. http://mlflow.example:5000); default: the profile's, else SQLite")


@dataclass(frozen=True)
class ClusterKeys:
    cluster: str | None = _key(None, "cluster profile name (dcu, nvidia, local-test or your own)")
    slurm: dict = _key({}, "overrides of the profile's keys (slurm.<key> below)")


# (section, dataclass): section None holds top-level keys; "slurm" is the Profile itself.
SCHEMA = [(None, ExperimentKeys), ("data", DataKeys), (None, PromptKeys), (None, ArgumentKeys),
          ("sweep", SweepKeys), ("select", Select), (None, SpeedKeys), (None, TrackingKeys),
          (None, ClusterKeys), ("slurm", Profile)]
TOP_KEYS = tuple([f.name for s, c in SCHEMA if s is None for f in fields(c)] + ["data", "sweep", "select"])
SELECT_KEYS = tuple(f.name for f in fields(Select))
DATA_KEYS = tuple(f.name for f in fields(DataKeys))
SWEEP_KEYS = tuple(f.name for f in fields(SweepKeys))


def default(cls, name: str):
    """The one statement of a key's default: its schema field's."""
    found = {f.name: f for f in fields(cls)}[name]
    return found.default_factory() if found.default is MISSING else found.default  # type: ignore[misc]


def schema_rows() -> list[tuple[str, str, str]]:
    """(key, default, help) for every key a spec may hold, in schema order."""
    rows = []
    for section, cls in SCHEMA:
        for f in fields(cls):
            if "help" not in f.metadata:
                continue
            rows.append(
                (
                    f"{section}.{f.name}" if section else f.name,
                    json.dumps(default(cls, f.name), ensure_ascii=False),
                    f.metadata["help"],
                )
            )
    return rows


def schema_markdown() -> str:
    lines = ["| key | default | what it is |", "|---|---|---|"]
    lines += [f"| `{key}` | `{default}` | {text} |" for key, default, text in schema_rows()]
    return "\n".join(lines) + "\n"


