"""``tlf demo``: the whole blog study in miniature on a CPU, with nothing to download.

synthetic competition rows -> import -> balanced split -> a tiny Gemma, pre-trained on
unlabelled text: the product catalogue (each product's documents and their number) and a
glossary of how customers phrase each kind of question, standing in for the Chinese gemma-2b
knows (a random model knows nothing for LoRA to adapt; shipped pre-trained in
experiments/demo-base, ``tlf model demo-base --pretrain`` rebuilds it) -> the sweep in
experiments/demo.yaml (the blog's configuration and its best one, scaled down, plus
LLaMA-Factory's defaults) on train_400 -> predictions on train_100/test_100 -> scores -> report.
Every stage is the one a user runs by hand; finished stages are skipped on a rerun.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import random
import shutil
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import yaml

from . import data, paths, processes, rundir, synth, tiny
from .errors import TlfError
from .fsutil import atomic_write, sha256_file

# The base model: one token per product, category and catalogue number, four key/value heads
# (one shared head could not carry 40 products' identities), pre-trained on catalogue and glossary.
BASE_SPEC = tiny.TinySpec(arch="gemma", num_key_value_heads=4, whole_terms=True)
# Shipped pre-trained (experiments/demo-base): pre-training is chaotic, and a base pre-trained with
# another thread count or CPU gave the blog configuration 59 % where this one gives 82 %; on one
# base the fine-tuning alone moves a few points (issue #28).
SHIPPED_BASE = "demo-base"
PROVENANCE = "tlf_demo_base.json"
BASE_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json", "chat_template.jinja", "trainer_log.jsonl")
CATALOGUE_REPEATS = 8
GLOSSARY_REPEATS = 3
PRETRAIN = {"stage": "pt", "do_train": True, "finetuning_type": "full", "cutoff_len": 64,
            "per_device_train_batch_size": 32, "learning_rate": 1.0e-2, "num_train_epochs": 10.0,
            "lr_scheduler_type": "cosine", "warmup_ratio": 0.05, "logging_steps": 25, "save_strategy": "no",
            "overwrite_output_dir": True, "report_to": "none", "seed": 42}


def demo_spec_path() -> Path:
    from .cluster import resource_dir

    return resource_dir("experiments") / "demo.yaml"


def prepare_data(out: Path, echo) -> Path:
    data_dir = out / "data"
    if (data_dir / data.MANIFEST).exists():
        echo(f"data: {data_dir} (exists)")
        return data_dir
    data.prepare_synthetic(out)
    manifest = json.loads((data_dir / data.MANIFEST).read_text(encoding="utf-8"))
    echo(f"data: 5000 synthetic rows -> {', '.join(manifest['splits'])} in {data_dir}")
    return data_dir


def pretrain_corpus(path: Path) -> None:
    """Catalogue and glossary lines, shuffled: never a question with its answer."""
    docs = [{"text": line} for line in synth.catalogue()] * CATALOGUE_REPEATS
    docs += [{"text": line} for line in synth.glossary()] * GLOSSARY_REPEATS
    random.Random(PRETRAIN["seed"]).shuffle(docs)
    atomic_write(path, json.dumps(docs, ensure_ascii=False) + "\n")


def shipped_base() -> Path:
    from .cluster import resource_dir

    return resource_dir("experiments") / SHIPPED_BASE


def prepare_base_model(out: Path, echo) -> Path:
    """The demo's base under ``out``: the shipped pre-trained one, copied and checked."""
    base = out / "models" / "base"
    if (base / rundir.MODEL_CONFIG).exists() and paths.owner(base) == "model":
        older = "" if (base / PROVENANCE).exists() else \
            "; pre-trained by an earlier tlf on this machine: remove it for the shipped one the README's numbers are of"
        echo(f"base model: {base} (exists{older})")
        return base
    paths.claim_directory(base, "model", True, "the demo's base model")
    with paths.staged_directory(base, "model") as staged:
        built = copy_shipped_base(staged)
    echo(f"base model: {base}, the shipped tiny Gemma pre-trained on the catalogue and glossary "
         f"({shipped_base()}, built by `{built['command']}` on {built['date'][:10]}): the same weights on "
         "every machine")
    return base


def copy_shipped_base(staged: Path) -> dict:
    """Copy the shipped base's files into ``staged``, each checked against the sha256 its provenance records."""
    source = shipped_base()
    provenance = json.loads((source / PROVENANCE).read_text(encoding="utf-8"))
    for name in BASE_FILES:
        shutil.copyfile(source / name, staged / name)
        if sha256_file(staged / name) != provenance["files"].get(name):
            raise TlfError(f"{source / name}: its sha256 is not the one {source / PROVENANCE} records: the shipped "
                           "base model is damaged (`git checkout -- experiments/demo-base` restores it; "
                           "`tlf model demo-base --pretrain --out DIR` builds one on this machine)")
    shutil.copyfile(source / PROVENANCE, staged / PROVENANCE)
    return provenance


def pretrain_base_model(staged: Path, echo, worker: processes.Worker) -> dict:
    """Pre-train the demo's base on this machine into ``staged`` (``tlf model demo-base --pretrain``):
    a random tiny Gemma (stage pt) on the catalogue and glossary. Only the files a user of the
    model needs are kept, with a provenance record; the weights depend on this machine's float
    summation order (CPU kernels, thread count), so a base built here differs from the shipped one."""
    work = staged.parent / "pretrain"
    random_init = tiny.build(work / "random-init", BASE_SPEC)
    pretrain_corpus(work / "corpus.json")
    data.register(work / data.DATA_INFO, {"corpus": {"file_name": "corpus.json", "columns": {"prompt": "text"}}})
    trained = work / "trained"
    config = {"model_name_or_path": str(random_init), "dataset": "corpus", "dataset_dir": str(work),
              "output_dir": str(trained), **PRETRAIN}
    atomic_write(work / "pretrain.yaml", yaml.safe_dump(config, sort_keys=False))
    echo("base model: pre-training the tiny Gemma on the catalogue and glossary (stage pt) ...")
    log = work / "pretrain.log"
    if not worker.run([(work / "pretrain.yaml", log)], processes.Progress(trained / rundir.TRAINER_LOG, "pre-train")):
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:] if log.exists() else []
        raise TlfError("pre-training the demo's base model failed; the end of its log:\n  " + "\n  ".join(tail))
    for name in BASE_FILES:
        shutil.copyfile(trained / name, staged / name)
    provenance = {"format_version": 1, "command": "tlf model demo-base --pretrain",
                  "date": datetime.now(UTC).isoformat(timespec="seconds"),
                  "machine": {"processor": _processor(), "cpus": os.cpu_count(),
                              "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
                  "versions": {name: _version(name) for name in ("telecom_lf", "llamafactory", "torch",
                                                                  "transformers")},
                  "pretrain": PRETRAIN, "random_init": asdict(BASE_SPEC),
                  "final_loss": _final_loss(trained / rundir.TRAINER_LOG),
                  "files": {name: sha256_file(staged / name) for name in BASE_FILES}}
    atomic_write(staged / PROVENANCE, json.dumps(provenance, indent=1, ensure_ascii=False) + "\n")
    return provenance


def _final_loss(trainer_log: Path) -> float | None:
    losses = [entry["loss"] for entry in map(json.loads, trainer_log.read_text(encoding="utf-8").splitlines())
              if "loss" in entry]
    return losses[-1] if losses else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _processor() -> str:
    """The CPU's model name (its kernels decide the summation order), or the architecture."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()
