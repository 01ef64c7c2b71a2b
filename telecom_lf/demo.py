"""``tlf demo``: the whole blog study in miniature on a CPU, with nothing to download.

synthetic competition rows -> import -> balanced split -> a tiny Gemma, pre-trained on
unlabelled text: the product catalogue (each product's documents and their number) and a
glossary of how customers phrase each kind of question, standing in for the Chinese gemma-2b
knows (a random model knows nothing for LoRA to adapt) -> the sweep in
experiments/demo.yaml (the blog's configuration and its best one, scaled down, plus
LLaMA-Factory's defaults) on train_400 -> predictions on train_100/test_100 -> scores -> report.
Every stage is the one a user runs by hand; finished stages are skipped on a rerun.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from . import data, paths, processes, rundir, synth, tiny
from .errors import TlfError
from .fsutil import atomic_write

# The base model: one token per product, category and catalogue number, four key/value heads
# (one shared head could not carry 40 products' identities), pre-trained on catalogue and glossary.
BASE_SPEC = tiny.TinySpec(arch="gemma", num_key_value_heads=4, whole_terms=True)
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


def prepare_base_model(out: Path, echo, worker: processes.Worker) -> Path:
    base = out / "models" / "base"
    if (base / rundir.MODEL_CONFIG).exists() and (base / rundir.TRAIN_RESULTS).exists():
        echo(f"base model: {base} (exists)")
        return base
    return build_base_model(base, out / "models", echo, worker)


def build_base_model(base: Path, work_root: Path, echo, worker: processes.Worker) -> Path:
    """The demo's base: a random tiny Gemma (cached under ``work_root``) pre-trained on the
    catalogue and glossary (stage pt) into ``base``; ``tlf model demo-base`` and ``tlf demo``."""
    random_init = tiny.cached(work_root, BASE_SPEC)
    work = work_root / "pretrain"
    pretrain_corpus(work / "corpus.json")
    data.register(work / data.DATA_INFO, {"corpus": {"file_name": "corpus.json", "columns": {"prompt": "text"}}})
    config = {"model_name_or_path": str(random_init), "dataset": "corpus", "dataset_dir": str(work),
              "output_dir": str(base), **PRETRAIN}
    atomic_write(work / "pretrain.yaml", yaml.safe_dump(config, sort_keys=False))
    echo("base model: pre-training the tiny Gemma on the catalogue and glossary (stage pt) ...")
    progress = processes.Progress(base / rundir.TRAINER_LOG, "pre-train")
    if not worker.run([(work / "pretrain.yaml", work / "pretrain.log")], progress):
        raise TlfError(f"pre-training the demo's base model failed; log: {work / 'pretrain.log'}")
    atomic_write(base / paths.MARKER, paths.marker("model", [p.name for p in base.iterdir()]))
    return base
