"""One DoRA layer's step, PEFT's forward against tlf's (telecom_lf/dora.py) and DoRA off:
torch.profiler events and milliseconds per forward + backward, the forwards interleaved
round by round so that the machine's drift falls on all of them alike.

    python benchmarks/dora_bench.py                      # gemma-2b-thin's q_proj: 64 -> 64, r 128
    python benchmarks/dora_bench.py --width 2048 --rounds 5

The layer is the blog's: rank 128, alpha 256, rsLoRA, dropout 0.1 (and 0.0, the blog's best), rows
as one 64-row micro-batch of ~38 tokens. The input requires a gradient, as under LLaMA-Factory's
gradient checkpointing. The norm is computed once per optimiser step by tlf's forward; here every
call after the first is inside one step, as the micro-batches and recomputes of a step are, and
`norm` rows time the first call of a step (an optimiser step in between).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORWARDS = ("peft", "tlf", "off")


class Block:
    def __init__(self, width: int, out: int, rank: int, dropout: float, forward: str, rows: int):
        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        module = torch.nn.Sequential()
        module.add_module("q_proj", torch.nn.Linear(width, out, bias=False))
        self.model = get_peft_model(module, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=dropout,
                                                       use_rslora=True, use_dora=forward != "off",
                                                       target_modules=["q_proj"])).train()
        self.forward = forward
        self.x = torch.randn(rows, width, requires_grad=True).view(64, rows // 64, width)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def install(self) -> None:
        from telecom_lf import dora

        dora.install(self.forward == "tlf")

    def step(self, new_optimiser_step: bool) -> None:
        import torch

        from telecom_lf import dora

        if new_optimiser_step:
            with torch.no_grad():
                for p in self.params:
                    p.add_(1e-6)   # a changed A and B: tlf's forward computes the norm again
            dora._optimiser_steps[0] += 1
        self.model(self.x).sum().backward()


def events(block: Block) -> int:
    import torch

    block.install()
    block.step(False)
    with torch.profiler.profile() as profile:
        block.step(False)
    return len(profile.events())


def timed(block: Block, calls: int, new_optimiser_step: bool) -> float:
    block.install()
    start = time.perf_counter()
    for _ in range(calls):
        block.step(new_optimiser_step)
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--out", type=int, default=None, help="output features (default: --width)")
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--rows", type=int, default=64 * 38, help="rows of one micro-batch (multiple of 64)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20, help="forward + backward calls per round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.rows % 64 or args.rows <= 0:
        parser.error(f"--rows must be a positive multiple of 64 (one 64-row micro-batch), got {args.rows}")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for dropout in (0.1, 0.0):
        blocks = {f: Block(args.width, args.out or args.width, args.rank, dropout, f, args.rows) for f in FORWARDS}
        counts = {f: events(b) for f, b in blocks.items()}
        times = {f: [] for f in FORWARDS}
        norm_times = {f: [] for f in FORWARDS}
        for _ in range(args.rounds):
            for forward, block in blocks.items():
                times[forward].append(timed(block, args.calls, False))
                norm_times[forward].append(timed(block, 3, True))
        for forward in FORWARDS:
            results[f"{forward}, dropout {dropout}"] = {
                "events": counts[forward], "events_added": counts[forward] - counts["off"],
                "ms": statistics.median(times[forward]), "ms_first_of_step": statistics.median(norm_times[forward]),
                "ms_rounds": times[forward]}
    print(f"one DoRA layer {args.width} -> {args.out or args.width}, rank {args.rank}, {args.rows} rows, "
          f"{torch.get_num_threads()} threads; median of {args.rounds} interleaved rounds of {args.calls} calls")
    print(f"{'forward':20s} {'events':>7s} {'DoRA adds':>10s} {'ms/call':>8s} {'ms, new step':>13s}")
    for name, r in results.items():
        print(f"{name:20s} {r['events']:7d} {r['events_added']:10d} {r['ms']:8.3f} {r['ms_first_of_step']:13.3f}")
    for dropout in (0.1, 0.0):
        peft, tlf = results[f"peft, dropout {dropout}"], results[f"tlf, dropout {dropout}"]
        print(f"dropout {dropout}: tlf / PEFT time per call {tlf['ms'] / peft['ms']:.2f}x; events DoRA adds per call: "
              f"PEFT {peft['events_added']}, tlf {tlf['events_added']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
