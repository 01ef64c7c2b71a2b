"""Training throughput through the real LLaMA-Factory: the blog's flags as written, tlf's
`speed: fast` profile (same effective batch 64 and hyper-parameters), and DoRA off.

    python benchmarks/train_bench.py --shape gemma-2b --steps 30 --peak-tflops 800   # a GPU
    python benchmarks/train_bench.py --shape tiny --steps 6                           # CPU smoke

`gemma-2b` is a random-weight model with gemma-2b's exact shape (vocab 256000, hidden 2048,
18 layers, 8 heads, 1 KV head, head_dim 256, intermediate 16384): nothing is downloaded.
Rows are synthetic telecom rows; the table reports tokens per row. MFU counts LoRA training
as ~4 x parameters FLOP per token (forward, backward through frozen weights, no weight
gradients) against --peak-tflops; without a peak it is left out. Prints a table and
writes benchmarks/train_bench.json.
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

BIN = Path(sys.executable).parent
SHAPES = {
    "gemma-2b": dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
                     num_key_value_heads=1, head_dim=256, vocab_size=256000),
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
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if shape != "tiny" else torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, n_params


def prepare_data(root: Path) -> Path:
    from telecom_lf import data

    return data.prepare_synthetic(root, mode="blog")


def variant_spec(root: Path, name: str, model: Path, data_dir: Path, train: dict, speed: str, precision) -> Path:
    if precision:
        train = {**train, precision: True}
    spec = {"name": name, "model": str(model), "data": {"dir": str(data_dir), "train": "telecom_train_5000"},
            "prompt": "blog", "template": "default", "speed": speed, "train": {**train, "save_strategy": "no"}}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_variant(spec: Path, out: Path, steps: int) -> dict:
    subprocess.run([str(BIN / "tlf"), "render", str(spec), "--out", str(out)], check=True, capture_output=True)
    train_yaml = next(out.glob(f"{spec.stem}/*/train.yaml"))
    env = {**os.environ, "RECORD_VRAM": "1", "HF_HUB_OFFLINE": "1"}
    # Warm-up: the first call tokenizes (and, for `fast`, caches the tokenized set).
    for _attempt in ("warm-up", "measured"):
        done = subprocess.run([str(BIN / "tlf-lf"), "train", str(train_yaml), f"max_steps={steps}",
                               "overwrite_output_dir=true", "logging_steps=1"], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{spec.stem} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    config = yaml.safe_load(train_yaml.read_text())
    train_dir = Path(config["output_dir"])
    results = json.loads((train_dir / "train_results.json").read_text())
    log = [json.loads(line) for line in (train_dir / "trainer_log.jsonl").read_text().splitlines()]
    tokens = max((e.get("total_tokens", 0) for e in log), default=0)
    samples = steps * config["per_device_train_batch_size"] * config["gradient_accumulation_steps"]
    return {"samples_per_s": round(samples / results["train_runtime"], 2),
            "tokens_per_s": round(tokens / results["train_runtime"], 1) if tokens else None,
            "tokens_per_row": round(tokens / samples, 1) if tokens else None,
            "peak_mem_gb": max((e.get("vram_allocated", 0) for e in log), default=0) or None,
            "micro_batch": config["per_device_train_batch_size"], "accumulation": config["gradient_accumulation_steps"],
            "runtime_s": results["train_runtime"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16/fp16 peak")
    parser.add_argument("--precision", choices=["bf16", "fp16"], default=None)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, n_params = build_model(args.shape, root / "model")
        data_dir = prepare_data(root)
        variants = {
            "blog flags as written": (BLOG_TRAIN, "as-written"),
            "tlf speed: fast": (BLOG_TRAIN, "fast"),
            "blog flags, DoRA off": ({**BLOG_TRAIN, "use_dora": False}, "as-written"),
        }
        results = {}
        for index, (name, (train, speed)) in enumerate(variants.items()):
            spec = variant_spec(root, f"v{index}", model, data_dir, train, speed, args.precision)
            results[name] = run_variant(spec, root / "runs", args.steps)
            if args.peak_tflops and results[name]["tokens_per_s"]:
                flops = results[name]["tokens_per_s"] * 4 * n_params
                results[name]["mfu_percent"] = round(100 * flops / (args.peak_tflops * 1e12), 1)
    print(f"shape {args.shape} ({n_params / 1e9:.2f} B parameters), {args.steps} optimiser steps of 64 rows")
    print(f"{'variant':26s} {'samples/s':>10s} {'tokens/s':>10s} {'tok/row':>8s} {'micro x GA':>11s} {'peak GB':>8s} {'MFU %':>6s}")
    for name, r in results.items():
        print(f"{name:26s} {r['samples_per_s']:10.2f} {r['tokens_per_s'] or 0:10.1f} {r['tokens_per_row'] or 0:8.1f} "
              f"{str(r['micro_batch']) + ' x ' + str(r['accumulation']):>11s} {r['peak_mem_gb'] or 0:8.2f} "
              f"{r.get('mfu_percent', '-')!s:>6s}")
    base, fast = results["blog flags as written"], results["tlf speed: fast"]
    no_dora = results["blog flags, DoRA off"]
    print(f"samples/s, fast / as written: {fast['samples_per_s'] / base['samples_per_s']:.2f}x; "
          f"DoRA off / DoRA on: {no_dora['samples_per_s'] / base['samples_per_s']:.2f}x")
    args.json.write_text(json.dumps({"shape": args.shape, "parameters": n_params, "steps": args.steps,
                                     "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
