"""``tlf demo``: the whole blog study in miniature on a CPU, with nothing to download.

synthetic competition rows -> import -> balanced split -> a tiny Gemma, briefly pre-trained
on unlabelled telecom text (a random model gives LoRA nothing to adapt) -> the sweep in
experiments/demo.yaml (the blog's configuration and its best one, scaled down, plus
LLaMA-Factory's defaults) -> predictions on train_100/test_100 -> scores -> report.
Every stage is the one a user runs by hand; finished stages are skipped on a rerun.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import yaml

from . import data, executor, synth, tiny
from .errors import TlfError
from .fsutil import atomic_write

PRETRAIN_ROWS = 3000
PRETRAIN_SEED = 12345     # a different draw from the study's rows (seed 0)


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
    """Unlabelled text: questions and answer strings, never paired (the pairing is the task)."""
    rows = synth.generate(PRETRAIN_ROWS, seed=PRETRAIN_SEED)
    answers = [r.answer for r in rows]
    random.Random(PRETRAIN_SEED).shuffle(answers)
    docs = [{"text": data.BLOG_INSTRUCTION.format(question=r.question)} for r in rows]
    docs += [{"text": a} for a in answers]
    random.Random(PRETRAIN_SEED + 1).shuffle(docs)
    atomic_write(path, json.dumps(docs, ensure_ascii=False) + "\n")


def prepare_base_model(out: Path, echo) -> Path:
    base = out / "models" / "base"
    if (base / "config.json").exists() and (base / "train_results.json").exists():
        echo(f"base model: {base} (exists)")
        return base
    random_init = tiny.cached(out / "models", tiny.TinySpec(arch="gemma"))
    work = out / "models" / "pretrain"
    pretrain_corpus(work / "corpus.json")
    data.register(work / data.DATA_INFO, {"corpus": {"file_name": "corpus.json", "columns": {"prompt": "text"}}})
    config = {"model_name_or_path": str(random_init), "stage": "pt", "do_train": True, "finetuning_type": "full",
              "dataset": "corpus", "dataset_dir": str(work), "cutoff_len": 128, "output_dir": str(base),
              "overwrite_output_dir": True, "per_device_train_batch_size": 16, "learning_rate": 5.0e-3,
              "num_train_epochs": 2.0, "lr_scheduler_type": "cosine", "logging_steps": 20,
              "save_strategy": "no", "report_to": "none", "seed": 42}
    atomic_write(work / "pretrain.yaml", yaml.safe_dump(config, sort_keys=False))
    echo("base model: pre-training the tiny Gemma on unlabelled telecom text (stage pt) ...")
    rc = executor.run_child([sys.executable, "-m", "telecom_lf.lf_entry", "train", str(work / "pretrain.yaml")],
                          work / "pretrain.log", executor.Progress(base / "trainer_log.jsonl", "pre-train"))
    if rc != 0:
        raise TlfError(f"pre-training the demo's base model failed; log: {work / 'pretrain.log'}")
    return base
