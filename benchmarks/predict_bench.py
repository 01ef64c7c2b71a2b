"""Predict throughput through the real LLaMA-Factory: the blog's batch-1 predict vs batched
greedy predict on the same rows, with the outputs checked to be the same.

    python benchmarks/predict_bench.py --shape gemma-2b --rows 100 --batch 64     # a GPU
    python benchmarks/predict_bench.py --shape tiny --rows 32 --batch 16           # CPU smoke

Prints a table and writes benchmarks/predict_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from train_bench import BIN, SHAPES, build_model, prepare_data


def predict(root: Path, model: Path, data_dir: Path, batch: int, rows: int, precision) -> tuple[float, list[str]]:
    spec = {"name": f"b{batch}", "model": str(model), "prompt": "blog", "template": "default",
            "data": {"dir": str(data_dir), "predict": ["telecom_test_100"]}, "decoding": "greedy",
            "predict": {"per_device_eval_batch_size": batch, "max_samples": rows, "max_new_tokens": 16,
                        **({precision: True} if precision else {})}}
    path = root / f"b{batch}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    subprocess.run([str(BIN / "tlf"), "render", str(path), "--out", str(root / "runs")], check=True, capture_output=True)
    config_path = next((root / "runs" / f"b{batch}").glob("*/predict-telecom_test_100.yaml"))
    done = subprocess.run([str(BIN / "tlf-lf"), "train", str(config_path)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    out = Path(yaml.safe_load(config_path.read_text())["output_dir"])
    metrics = json.loads((out / "predict_results.json").read_text())
    predictions = [json.loads(l)["predict"] for l in (out / "generated_predictions.jsonl").read_text().splitlines()]
    return metrics["predict_samples_per_second"], predictions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", choices=["bf16", "fp16"], default=None)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, n_params = build_model(args.shape, root / "model")
        data_dir = prepare_data(root)
        one, one_out = predict(root, model, data_dir, 1, args.rows, args.precision)
        many, many_out = predict(root, model, data_dir, args.batch, args.rows, args.precision)
    same = sum(a == b for a, b in zip(one_out, many_out))
    print(f"shape {args.shape}, {args.rows} rows, greedy, 16 new tokens at most")
    print(f"{'predict':24s} {'rows/s':>8s}")
    print(f"{'batch 1 (the blog)':24s} {one:8.2f}")
    print(f"{'batch ' + str(args.batch):24s} {many:8.2f}")
    print(f"speed-up {many / one:.1f}x; identical outputs: {same}/{len(one_out)}")
    args.json.write_text(json.dumps({"shape": args.shape, "rows": args.rows, "batch": args.batch,
                                     "batch1_rows_per_s": one, "batched_rows_per_s": many,
                                     "identical_outputs": same}, indent=2) + "\n")


if __name__ == "__main__":
    main()
