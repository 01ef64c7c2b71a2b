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
import os
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
    def __init__(self, profile_path: Path | None = None, profile_from: int = 3, profile_steps: int = 2) -> None:
        self.steps: list[dict] = []
        self.predict_batches: list[float] = []
        self.profile_path, self.profile_from, self.profile_steps = profile_path, profile_from, profile_steps
        self.profiler = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.profile_path and state.global_step == self.profile_from and self.profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.start()
            self.profile_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        if self.profiler is not None and state.global_step == self.profile_from + self.profile_steps:
            self._write_profile()
        self.steps.append({"step": state.global_step, "time": time.perf_counter(),
                           "tokens": int(state.num_input_tokens_seen or 0)})

    def _write_profile(self) -> None:
        self.profiler.stop()
        wall = time.perf_counter() - self.profile_started
        events = self.profiler.key_averages()
        device = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA) / 1e6
        # Runtime and driver launch calls both: part of the kernels (Triton's, and on the H100
        # most likely cuBLASLt's) go through the driver's cuLaunchKernelEx, not cudaLaunchKernel.
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC",
                                                              "cuLaunchKernel", "cuLaunchKernelEx"))
        # Device busy time well under the wall time means the card waits for the host (dispatch).
        tables = [
            f"{self.profile_steps} optimiser steps after step {self.profile_from}: wall {wall:.3f} s (profiler on), "
            f"device kernels {device:.3f} s, kernel launches {launches}, {len(self.profiler.events())} events"
        ]
        for key in ("self_cpu_time_total", "self_device_time_total" if torch.cuda.is_available() else None):
            if key:
                tables.append(f"--- by {key}\n" + events.table(sort_by=key, row_limit=40, max_name_column_width=60))
        self.profile_path.write_text("\n".join(tables) + "\n")
        self.profiler, self.profile_path = None, None

    def on_prediction_step(self, args, state, control, **kwargs):
        _sync()
        self.predict_batches.append(time.perf_counter())


def main() -> None:
    config_path, clock_path, *overrides = sys.argv[1:]
    args = yaml.safe_load(Path(config_path).read_text())
    for item in overrides:
        key, _, value = item.partition("=")
        args[key] = yaml.safe_load(value)
    from telecom_lf import dora
    from telecom_lf.compat import register_blog_templates

    register_blog_templates()
    dora.install_for(config_path)   # as tlf-lf does: tlf's DoRA forward when the header asks
    from llamafactory.train.tuner import run_exp

    profile = os.environ.get("TIMED_LF_PROFILE")
    clock = StepClock(Path(profile) if profile else None)
    run_exp(args, callbacks=[clock])
    Path(clock_path).write_text(
        json.dumps({"steps": clock.steps, "predict_batches": clock.predict_batches, "peak_mem_gb": _peak_memory_gb()})
        + "\n"
    )


if __name__ == "__main__":
    main()
