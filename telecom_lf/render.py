"""Runs -> files: LLaMA-Factory train/predict YAMLs, dataset entries, job scripts, manifests.

``render_files`` is pure (same spec, same bytes); ``write_files`` is the only writer and
refuses to touch a run that has already produced outputs unless forced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from . import __version__, lfargs, slurm
from . import plan as plan_mod
from .errors import TlfError
from .fsutil import atomic_write, sha256_bytes
from .plan import RunPlan
from .spec import Spec

TRAIN_FILE = "train.yaml"
TRAIN_DIR = "train"
MANIFEST = "manifest.json"
EXPERIMENT = "experiment.json"
# LLaMA-Factory 0.6, which the blog ran, cut sequences at 1024 tokens; 0.9.5 at 2048.
BLOG_CUTOFF_LEN = 1024
# tlf's own choices where LLaMA-Factory's defaults hide what a study needs to see:
# a loss point every 5 steps (HF's default 500 logs nothing on short runs) and the loss plot.
TLF_TRAIN_DEFAULTS = {"logging_steps": 5, "plot_loss": True, "report_to": "none"}


def predict_file(dataset: str) -> str:
    return f"predict-{dataset}.yaml"


def predict_dir(dataset: str) -> str:
    return f"predict-{dataset}"


@dataclass(frozen=True)
class Layout:
    """Where an experiment's runs live: ``<out>/<experiment>/<run>/``."""
    root: Path

    def run_dir(self, run: RunPlan | str) -> Path:
        return self.root / (run if isinstance(run, str) else run.name)


def layout(spec: Spec, out: Path) -> Layout:
    return Layout(Path(out).resolve() / spec.name)


def _yaml(header: list[str], config: dict) -> bytes:
    body = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    return ("".join(f"# {line}\n" for line in header) + body).encode("utf-8")


def _common(spec: Spec, run: RunPlan) -> dict:
    return {"template": spec.lf_template, "dataset_dir": str(spec.data_dir), "seed": spec.seed}


def train_config(spec: Spec, run: RunPlan, run_dir: Path) -> dict:
    args = dict(run.train_args or {})
    config = {
        "model_name_or_path": run.model_path,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": args.pop("finetuning_type", "lora"),
        **_common(spec, run),
        "dataset": spec.train_set,
        # A stable output_dir that is never wiped: LLaMA-Factory resumes from its last
        # checkpoint-* there after a requeue or a Ctrl-C.
        "output_dir": str(run_dir / TRAIN_DIR),
        "overwrite_output_dir": False,
    }
    if spec.prompt == "blog":
        config["cutoff_len"] = BLOG_CUTOFF_LEN
    for key, value in TLF_TRAIN_DEFAULTS.items():
        config.setdefault(key, value)
    profile = slurm.spec_profile(spec)
    if profile and profile.precision and not ({"fp16", "bf16", "pure_bf16"} & set(args)):
        config[profile.precision] = True
    if "save_steps" not in args and args.get("save_strategy", "steps") == "steps":
        config["save_steps"] = _save_steps(spec, args)
        config.setdefault("save_total_limit", 2)
    config.update(args)
    if spec.speed == "fast":
        config.update(fast_settings(spec, run, config, args, profile.gpu_memory_gb if profile else None))
    return config


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
    micro = spec.micro_batch or _micro_batch_for(effective, card_gb, liger or bool(user_args.get("enable_liger_kernel")))
    if effective % micro:
        raise TlfError(f"{spec.path}:{spec.line('micro_batch') or 1}: micro_batch {micro} does not divide the "
                       f"effective batch {effective} (= {batch} x {accumulation}) of run {run.name!r}; "
                       f"the fast profile keeps the effective batch, so use a divisor of {effective}")
    key = sha256_bytes(json.dumps([run.model_path, spec.lf_template, config.get("cutoff_len"), spec.train_set],
                                  sort_keys=True).encode())[:16]
    fast = {
        "flash_attn": "sdpa" if config.get("flash_attn", "auto") == "auto" else config["flash_attn"],
        "tokenized_path": str(spec.data_dir / ".tlf-tokenized" / key),
        "include_num_input_tokens_seen": True,
        "dataloader_num_workers": 2,
        **({"enable_liger_kernel": True} if liger else {}),
    }
    fast = {k: v for k, v in fast.items() if k not in user_args}
    return {**fast, "per_device_train_batch_size": micro, "gradient_accumulation_steps": effective // micro}


def _save_steps(spec: Spec, args: dict) -> int:
    """About ten checkpoints per run, so a requeued or interrupted job loses little work."""
    import math

    data_file = spec.data_dir / spec.datasets[spec.train_set]["file_name"]
    try:
        rows = _row_count(data_file)
    except (OSError, ValueError) as error:
        raise TlfError(f"{spec.where('data', 'train')}: cannot read {data_file} ({error})") from error
    if args.get("max_samples"):
        rows = min(rows, int(args["max_samples"]))
    table = lfargs.table()
    batch = args.get("per_device_train_batch_size", table["per_device_train_batch_size"].default)
    accumulation = args.get("gradient_accumulation_steps", table["gradient_accumulation_steps"].default)
    epochs = args.get("num_train_epochs", table["num_train_epochs"].default)
    total = math.ceil(rows / (batch * accumulation)) * epochs
    return max(1, int(total // 10))


def predict_config(spec: Spec, run: RunPlan, run_dir: Path, dataset: str) -> dict:
    train = run.train_args
    finetuning = (train or {}).get("finetuning_type", "lora")
    config: dict = {"model_name_or_path": run.model_path}
    if train is not None and finetuning == "full":
        config["model_name_or_path"] = str(run_dir / TRAIN_DIR)
    elif train is not None:
        config["adapter_name_or_path"] = str(run_dir / TRAIN_DIR)
    config.update({
        "stage": "sft",
        "do_predict": True,
        "predict_with_generate": True,
        "finetuning_type": finetuning,
        **_common(spec, run),
        # 0.9.5 reads the predict set from eval_dataset; `dataset` fails there.
        "eval_dataset": dataset,
        "output_dir": str(run_dir / predict_dir(dataset)),
        "overwrite_output_dir": True,
        "report_to": "none",
    })
    if spec.prompt == "blog":
        config["cutoff_len"] = BLOG_CUTOFF_LEN
    if train and "cutoff_len" in train:
        config["cutoff_len"] = train["cutoff_len"]
    if spec.decoding == "greedy":
        # LLaMA-Factory samples by default (temperature 0.95, top_p 0.7): the blog's scores
        # were sampled. Greedy makes a score a property of the adapter, not of the dice.
        config["do_sample"] = False
    config.update(spec.predict)
    if spec.speed == "fast":
        # Rows are generated independently (left-padded), so a batch changes the speed, not the
        # maths; bf16 near-ties can still flip a token (measured: 100/100 identical on an H200,
        # 99/100 on an H100).
        batch = config.get("per_device_eval_batch_size", lfargs.table()["per_device_eval_batch_size"].default)
        config["per_device_eval_batch_size"] = max(batch, FAST_PREDICT_BATCH)
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


@lru_cache(maxsize=None)
def _row_count(data_file: Path) -> int:
    """Rows of an Alpaca JSON file; read once, not once per sweep point."""
    return len(json.loads(data_file.read_text(encoding="utf-8")))


def render_files(spec: Spec, runs: list[RunPlan], out: Path) -> dict[Path, bytes]:
    """Every file of the experiment, path -> bytes. Pure: no file is written."""
    where = layout(spec, out)
    versions = lfargs.installed_versions()
    commit = git_commit(spec.path.parent)
    entries = (json.dumps(spec.datasets, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    files: dict[Path, bytes] = {}
    for run in runs:
        run_dir = where.run_dir(run)
        header = [f"Rendered by tlf {__version__} from {spec.path} (run {run.name}); re-render, do not edit.",
                  "Run: tlf-lf train <this file>   (llamafactory-cli plus tlf's blog-era templates)"]
        run_files: dict[str, bytes] = {}
        if run.train_args is not None:
            run_files[TRAIN_FILE] = _yaml(header, train_config(spec, run, run_dir))
        for dataset in spec.predict_sets:
            run_files[predict_file(dataset)] = _yaml(header, predict_config(spec, run, run_dir, dataset))
        run_files["datasets.json"] = entries
        run_files.update(slurm.job_files(spec, run, run_dir))
        manifest = {
            "tlf": __version__,
            "versions": versions,
            "spec": str(spec.path),
            "spec_sha256": spec.sha256,
            "git_commit": commit,
            "experiment": spec.name,
            "run": run.name,
            "model": {"name": run.model_name, "path": run.model_path},
            "prompt": spec.prompt,
            "template": spec.lf_template,
            "seed": spec.seed,
            "varied": run.varied,
            "baseline": run.is_baseline,
            "files": {name: sha256_bytes(blob) for name, blob in sorted(run_files.items())},
        }
        run_files[MANIFEST] = (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        files.update({run_dir / name: blob for name, blob in run_files.items()})
    experiment = {
        "experiment": spec.name,
        "spec": str(spec.path),
        "spec_sha256": spec.sha256,
        "predict_sets": spec.predict_sets,
        "runs": [{"name": r.name, "model": r.model_name, "varied": r.varied, "baseline": r.is_baseline,
                  "train": r.train_args is not None} for r in runs],
    }
    files.update(slurm.experiment_files(spec, [r.name for r in runs], where.root))
    files[where.root / EXPERIMENT] = (json.dumps(experiment, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    return files


def run_started(run_dir: Path) -> bool:
    """True once LLaMA-Factory has written anything for this run."""
    return (run_dir / TRAIN_DIR).exists() or any(run_dir.glob("predict-*/"))


def write_files(files: dict[Path, bytes], force: bool = False) -> list[Path]:
    """Write what changed; refuse (before writing anything) to change a started run."""
    changed = [p for p, blob in files.items() if not p.exists() or p.read_bytes() != blob]
    if not force:
        for path in changed:
            if path.exists() and run_started(path.parent):
                raise TlfError(f"{path} differs from the new rendering and run {path.parent.name} has "
                               f"outputs in {path.parent}; pass --force to re-render over it")
    for path in changed:
        atomic_write(path, files[path])
    return changed


def plan_and_render(spec: Spec, out: Path) -> tuple[list[RunPlan], dict[Path, bytes]]:
    runs = plan_mod.expand(spec)
    return runs, render_files(spec, runs, out)
