"""Run one rendered LLaMA-Factory config (train or predict) through LLaMA-Factory's own
`run_exp` (what `llamafactory-cli train` calls), with tlf's blog-era templates registered as
`tlf-lf` does, plus one callback that stamps the wall clock at the end of every optimiser
step and every prediction batch (after a device sync). Throughput is then taken over the
steps after the warm-up, which the Trainer's own `train_runtime` and
`predict_samples_per_second` (first CUDA kernels, dataloader start, metric computation)
cannot do.

    python benchmarks/timed_lf.py config.yaml clock.json [key=value ...]

Writes clock.json: per-step time and non-padding tokens seen, per-batch prediction time, and
peak device memory.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import yaml
from transformers import TrainerCallback


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_memory_gb() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


class StepClock(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.predict_batches: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.steps.append({"step": state.global_step, "time": time.perf_counter(),
                           "tokens": int(state.num_input_tokens_seen or 0)})

    def on_prediction_step(self, args, state, control, **kwargs):
        _sync()
        self.predict_batches.append(time.perf_counter())


def main() -> None:
    config_path, clock_path, *overrides = sys.argv[1:]
    args = yaml.safe_load(Path(config_path).read_text())
    for item in overrides:
        key, _, value = item.partition("=")
        args[key] = yaml.safe_load(value)
    from telecom_lf.compat import register_blog_templates

    register_blog_templates()
    from llamafactory.train.tuner import run_exp

    clock = StepClock()
    run_exp(args, callbacks=[clock])
    Path(clock_path).write_text(json.dumps({"steps": clock.steps, "predict_batches": clock.predict_batches, "peak_mem_gb": _peak_memory_gb()}) + "\n")


if __name__ == "__main__":
    main()
