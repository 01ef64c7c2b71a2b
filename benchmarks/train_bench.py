"""Training throughput through the real LLaMA-Factory: the blog's flags as written against tlf's
`speed: fast` profile (same effective batch 64 and hyper-parameters) and its parts, and what
DoRA costs.

    python benchmarks/train_bench.py --shape gemma-2b --steps 20 --precision bf16 --peak-tflops 790  # a GPU
    python benchmarks/train_bench.py --shape tiny --steps 6                                          # CPU smoke
    bash benchmarks/gpu_bench.sh     # both GPU benchmarks on a machine without LLaMA-Factory installed

`gemma-2b` is a random-weight model with gemma-2b's exact shape (vocab 256000, hidden 2048,
18 layers, 8 heads, 1 KV head, head_dim 256, intermediate 16384): nothing is downloaded.
Rows are synthetic telecom rows in the blog's prompt; tokens are non-padding tokens of tlf's
test tokenizer. Each variant is rendered by `tlf render` and trained by LLaMA-Factory's
`run_exp` (benchmarks/timed_lf.py); the first quarter of the steps is left out of the timing.
MFU counts LoRA training as ~4 x parameters FLOP per token (forward, backward through frozen
weights, no weight gradients) against --peak-tflops. Prints a table and writes
benchmarks/train_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
# Module form, so that the script also runs where the console scripts are not installed.
TLF = [sys.executable, "-m", "telecom_lf.cli"]
SHAPES = {
    "gemma-2b": dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
                     num_key_value_heads=1, head_dim=256, vocab_size=256000),
    # gemma-2b's depth and head layout at tiny widths: compute is negligible, so the time per
    # micro-batch is the framework's fixed cost (Python, dispatch, PEFT, checkpointing).
    "gemma-2b-thin": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=18, num_attention_heads=8,
                          num_key_value_heads=1, head_dim=8, vocab_size=768),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=1, head_dim=16, vocab_size=768),
}
BLOG_TRAIN = {"finetuning_type": "lora", "lora_target": "q_proj,v_proj,k_proj", "lora_alpha": 256, "lora_rank": 128,
              "lora_dropout": 0.1, "loraplus_lr_ratio": 1.0, "loraplus_lr_embedding": 1.0e-6, "use_rslora": True,
              "use_dora": True, "create_new_adapter": True, "per_device_train_batch_size": 8,
              "gradient_accumulation_steps": 8, "lr_scheduler_type": "cosine", "learning_rate": 5.0e-5,
              "num_train_epochs": 5.0, "include_num_input_tokens_seen": True}


def build_model(shape: str, out: Path) -> tuple[Path, int]:
    import torch
    from transformers import AutoModelForCausalLM, GemmaConfig

    from telecom_lf import tiny

    tokenizer = tiny._train_tokenizer(tiny.TinySpec(vocab_size=768))
    dims = SHAPES[shape]
    config = GemmaConfig(**dims, max_position_embeddings=8192, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device("meta"):
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    saved = GemmaConfig.from_pretrained(out) if (out / "config.json").is_file() else None
    if saved and all(getattr(saved, key) == value for key, value in dims.items()):
        return out, n_params  # built by an earlier benchmark in the same session (--model-dir)
    # Random weights are drawn on the GPU when there is one: 2.5 B on a CPU takes minutes.
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if shape == "gemma-2b" else torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, n_params


def prepare_data(root: Path) -> Path:
    from telecom_lf import data

    return data.prepare_synthetic(root, mode="blog")


class RunFailed(Exception):
    """A LLaMA-Factory run of a benchmark failed; the message is its output's tail."""


def render_and_time(spec: dict, root: Path, config_name: str, *overrides: str,
                    profile: Path | None = None) -> tuple[dict, dict]:
    """Write SPEC, `tlf render` it under root/runs, and run its rendered CONFIG_NAME through
    timed_lf.py with OVERRIDES (and torch.profiler tables to PROFILE). Returns the rendered
    config and the step clock."""
    name = spec["name"]
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    subprocess.run([*TLF, "render", str(path), "--out", str(root / "runs")], check=True, capture_output=True)
    config_path = next((root / "runs" / name).glob(f"*/{config_name}"))
    clock_path = root / f"{name}.clock.json"
    done = subprocess.run(
        [sys.executable, str(HERE / "timed_lf.py"), str(config_path), str(clock_path), *overrides],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **({"TIMED_LF_PROFILE": str(profile)} if profile else {})},
    )
    if done.returncode != 0:
        raise RunFailed((done.stdout[-1500:] + done.stderr[-2500:]).strip())
    return yaml.safe_load(config_path.read_text()), json.loads(clock_path.read_text())


def precision_args(precision: str | None) -> dict:
    return {precision: True} if precision else {}


def variant_spec(name: str, model: Path, data_dir: Path, variant: dict, precision) -> dict:
    train = {**variant["train"], **precision_args(precision), "save_strategy": "no"}
    # The card's memory reaches the fast profile through a cluster profile (`gpu_memory_gb`);
    # precision stays --precision's.
    card = ({"cluster": "nvidia", "slurm": {"gpu_memory_gb": variant["card_gb"], "precision": None}}
            if "card_gb" in variant else {})
    return {"name": name, "model": str(model), "data": {"dir": str(data_dir), "train": "telecom_train_5000"},
            "prompt": "blog", "template": "default", "speed": variant["speed"], "train": train, **card,
            **{key: variant[key] for key in ("micro_batch", "dora_kernel") if key in variant}}


def run_variant(spec: dict, root: Path, steps: int, warmup: int, profile: Path | None = None) -> dict:
    try:
        config, clock = render_and_time(spec, root, "train.yaml", f"max_steps={steps}", "overwrite_output_dir=true",
                                        "logging_steps=1", "report_to=none",
                                        "include_num_input_tokens_seen=non_padding", profile=profile)
    except RunFailed as failure:
        return {"error": str(failure)}
    first, last = clock["steps"][warmup - 1], clock["steps"][-1]
    seconds = last["time"] - first["time"]
    steps_timed = last["step"] - first["step"]
    micro_batches = steps_timed * config["gradient_accumulation_steps"]
    rows = micro_batches * config["per_device_train_batch_size"]
    tokens = last["tokens"] - first["tokens"]
    return {"samples_per_s": round(rows / seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1) if tokens else None,
            "tokens_per_row": round(tokens / rows, 1) if tokens else None,
            "peak_mem_gb": clock["peak_mem_gb"], "measured_steps": steps_timed,
            "micro_batch": config["per_device_train_batch_size"], "accumulation": config["gradient_accumulation_steps"],
            "seconds": round(seconds, 3),
            "ms_per_micro_batch": round(1000 * seconds / micro_batches, 1)}


# Every variant keeps the blog's hyper-parameters and effective batch 64 except where its name
# says otherwise (DoRA off). Fast variants render for an 80 GB card unless named otherwise: on
# a 16 GB card the fast profile takes Liger kernels when installed, else 32 x GA 2.
BIG, SMALL = {"speed": "fast", "card_gb": 80}, {"speed": "fast", "card_gb": 16}
VARIANTS = {
    "written": {"label": "blog flags as written", "train": BLOG_TRAIN, "speed": "as-written"},
    "fast": {"label": "tlf speed: fast", "train": BLOG_TRAIN, **BIG},
    "fast-16gb": {"label": "fast, 16 GB card", "train": BLOG_TRAIN, **SMALL},
    "fast-liger": {"label": "fast, Liger", "train": {**BLOG_TRAIN, "enable_liger_kernel": True}, **BIG},
    "fast-micro32": {"label": "fast, micro 32 x GA 2", "train": BLOG_TRAIN, **BIG, "micro_batch": 32},
    "fast-no-ckpt": {"label": "fast, no grad. ckpt", "train": {**BLOG_TRAIN, "disable_gradient_checkpointing": True},
                     **BIG},
    # With PEFT's DoRA forward this gained nothing on the CPU machine: it breaks the graph
    # (peft/utils/integrations.py, `str.startswith` in dequantize_module_weight); tlf's does not.
    "fast-compile": {"label": "fast, torch.compile", "train": {**BLOG_TRAIN, "torch_compile": True}, **BIG},
    "fast-peft-dora-compile": {"label": "fast, PEFT's DoRA, torch.compile",
                               "train": {**BLOG_TRAIN, "torch_compile": True}, **BIG, "dora_kernel": "peft"},
    "written-no-dora": {"label": "blog flags, DoRA off", "train": {**BLOG_TRAIN, "use_dora": False},
                        "speed": "as-written"},
    "fast-no-dora": {"label": "fast, DoRA off", "train": {**BLOG_TRAIN, "use_dora": False}, **BIG},
    # `speed: fast` uses tlf's DoRA forward (telecom_lf/dora.py); this is fast with PEFT's own.
    "fast-peft-dora": {"label": "fast, PEFT's DoRA", "train": BLOG_TRAIN, **BIG, "dora_kernel": "peft"},
    # The blog's best configuration has dropout 0: PEFT's DoRA then reuses the base result, while
    # with dropout it multiplies the frozen weight with the dropped-out input once more.
    "fast-d0": {"label": "fast, dropout 0", "train": {**BLOG_TRAIN, "lora_dropout": 0.0}, **BIG},
    "fast-peft-dora-d0": {"label": "fast, PEFT's DoRA, dropout 0", "train": {**BLOG_TRAIN, "lora_dropout": 0.0},
                          **BIG, "dora_kernel": "peft"},
    "fast-no-dora-d0": {"label": "fast, DoRA off, dropout 0",
                        "train": {**BLOG_TRAIN, "lora_dropout": 0.0, "use_dora": False}, **BIG},
}
DEFAULT_VARIANTS = ["written", "fast", "fast-16gb", "written-no-dora", "fast-no-dora"]


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def print_table(shape: str, n_params: int, steps: int, warmup: int, results: dict) -> None:
    print(f"shape {shape} ({n_params / 1e9:.2f} B parameters) on {device_name()}; {steps} optimiser steps of 64 rows, "
          f"timed over steps {warmup}..{steps}")
    print(f"{'variant':22s} {'samples/s':>10s} {'tokens/s':>10s} {'tok/row':>8s} {'micro x GA':>11s} "
          f"{'ms/micro':>9s} {'peak GB':>8s} {'MFU %':>6s}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:22s} FAILED: {r['error'].splitlines()[-1] if r['error'] else '?'}")
            continue
        print(f"{name:22s} {r['samples_per_s']:10.2f} {r['tokens_per_s'] or 0:10.1f} {r['tokens_per_row'] or 0:8.1f} "
              f"{str(r['micro_batch']) + ' x ' + str(r['accumulation']):>11s} {r['ms_per_micro_batch']:9.1f} "
              f"{r['peak_mem_gb'] or 0:8.2f} "
              f"{r.get('mfu_percent', '-')!s:>6s}")
    ok = {name: r for name, r in results.items() if "error" not in r}
    for name, base_name, label in (("tlf speed: fast", "blog flags as written", "fast / as written"),
                                   ("blog flags, DoRA off", "blog flags as written", "DoRA off / DoRA on, as written"),
                                   ("fast, DoRA off", "tlf speed: fast", "DoRA off / DoRA on, fast"),
                                   ("tlf speed: fast", "fast, PEFT's DoRA", "tlf's DoRA forward / PEFT's, fast"),
                                   ("fast, dropout 0", "fast, PEFT's DoRA, dropout 0",
                                    "tlf's DoRA forward / PEFT's, fast, dropout 0")):
        if name in ok and base_name in ok:
            print(f"samples/s, {label}: {ok[name]['samples_per_s'] / ok[base_name]['samples_per_s']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=None, help="steps left out of the timing (default steps // 4)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16/fp16 peak")
    parser.add_argument("--precision", choices=["bf16", "fp16"], default=None)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=DEFAULT_VARIANTS)
    parser.add_argument("--profile", nargs="*", choices=sorted(VARIANTS), default=[],
                        help="variants to profile (torch.profiler, two steps inside the warm-up): "
                             "tables in profile-<variant>.txt beside --json")
    parser.add_argument("--model-dir", type=Path, default=None, help="keep (or reuse) the random model here")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else max(1, args.steps // 4)
    if not 1 <= warmup < args.steps:
        parser.error("--warmup must be at least 1 and less than --steps")
    if args.profile and warmup < 5:
        parser.error("--profile needs --warmup 5 or more: steps 3..5 are profiled and must not be timed")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, n_params = build_model(args.shape, args.model_dir or root / "model")
        data_dir = prepare_data(root)
        for index, key in enumerate(args.variants):
            name = VARIANTS[key]["label"]
            spec = variant_spec(f"v{index}", model, data_dir, VARIANTS[key], args.precision)
            profile = args.json.parent / f"profile-{key}.txt" if key in args.profile else None
            results[name] = run_variant(spec, root, args.steps, warmup, profile)
            if args.peak_tflops and results[name].get("tokens_per_s"):
                flops = results[name]["tokens_per_s"] * 4 * n_params
                results[name]["mfu_percent"] = round(100 * flops / (args.peak_tflops * 1e12), 1)
            print(
                f"[{name}] {results[name] if 'error' not in results[name] else 'FAILED'}", file=sys.stderr, flush=True
            )
    print_table(args.shape, n_params, args.steps, warmup, results)
    args.json.write_text(json.dumps({"shape": args.shape, "parameters": n_params, "device": device_name(),
                                     "steps": args.steps, "warmup": warmup, "precision": args.precision,
                                     "peak_tflops": args.peak_tflops, "results": results}, indent=2) + "\n")
    failed = [name for name, r in results.items() if "error" in r]
    for name in failed:
        print(f"--- {name} failed:\n{results[name]['error']}", file=sys.stderr)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
