"""Predict throughput through the real LLaMA-Factory: the blog's batch-1 predict vs batched
greedy predict on the same rows, with the outputs checked to be the same.

    python benchmarks/predict_bench.py --shape gemma-2b --rows 100 --batched-rows 512 --batch 64 --precision bf16  # GPU
    python benchmarks/predict_bench.py --shape tiny --rows 32 --batch 16                         # CPU smoke

Two rates per run: LLaMA-Factory's own `predict_samples_per_second` (the whole predict call,
BLEU/ROUGE of the predictions included: what a user waits for) and generation alone after the
first batch (benchmarks/timed_lf.py stamps each batch). A vLLM variant is not here: vLLM is
installable neither on the CPU machine nor, within its 64 MiB carry limit, on the lent GPU.
Prints a table and writes benchmarks/predict_bench.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from train_bench import SHAPES, RunFailed, build_model, device_name, precision_args, prepare_data, render_and_time

# Rows of the training set (5000), so that batched predict can run on more rows than the blog's
# 100-row test set: with 100 rows, a batch of 32 leaves three timed batches.
PREDICT_SET = "telecom_train_5000"


def predict(root: Path, model: Path, data_dir: Path, batch: int, rows: int, precision) -> dict:
    spec = {"name": f"b{batch}", "model": str(model), "prompt": "blog", "template": "default",
            "data": {"dir": str(data_dir), "predict": [PREDICT_SET]}, "decoding": "greedy",
            "predict": {"per_device_eval_batch_size": batch, "max_samples": rows, "max_new_tokens": 16,
                        **precision_args(precision)}}
    try:
        config, clock = render_and_time(spec, root, f"predict-{PREDICT_SET}.yaml")
    except RunFailed as failure:
        raise SystemExit(str(failure)) from None
    out = Path(config["output_dir"])
    metrics = json.loads((out / "predict_results.json").read_text())
    predictions = [json.loads(x)["predict"] for x in (out / "generated_predictions.jsonl").read_text().splitlines()]
    stamps = clock["predict_batches"]
    # Generation alone, first batch (CUDA warm-up) left out: rows after it over the time they took.
    steady = (len(predictions) - batch) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    return {"whole_rows_per_s": metrics["predict_samples_per_second"], "generate_rows_per_s": steady,
            "predictions": predictions}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batched-rows", type=int, default=None,
                        help="rows for the batched predict (default --rows); outputs are compared on the first --rows")
    parser.add_argument("--precision", choices=["bf16", "fp16"], default=None)
    parser.add_argument("--model-dir", type=Path, default=None, help="keep (or reuse) the random model here")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    batched_rows = max(args.rows, args.batched_rows or 0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, n_params = build_model(args.shape, args.model_dir or root / "model")
        data_dir = prepare_data(root)
        one = predict(root, model, data_dir, 1, args.rows, args.precision)
        many = predict(root, model, data_dir, args.batch, batched_rows, args.precision)
    same = sum(a == b for a, b in zip(one.pop("predictions"), many.pop("predictions")))
    print(f"shape {args.shape} on {device_name()}, {args.rows} rows at batch 1 and {batched_rows} batched (the first "
          f"{args.rows} compared), greedy, 16 new tokens at most")
    print(f"{'predict':20s} {'rows/s, whole run':>18s} {'rows/s, generation':>19s}")
    for label, r in (("batch 1 (the blog)", one), (f"batch {args.batch}", many)):
        steady = f"{r['generate_rows_per_s']:.2f}" if r["generate_rows_per_s"] else "-"
        print(f"{label:20s} {r['whole_rows_per_s']:18.2f} {steady:>19s}")
    ratio = (f"{many['generate_rows_per_s'] / one['generate_rows_per_s']:.1f}x"
             if many["generate_rows_per_s"] and one["generate_rows_per_s"] else "-")
    print(f"speed-up: whole run {many['whole_rows_per_s'] / one['whole_rows_per_s']:.1f}x, generation {ratio}; "
          f"identical outputs: {same}/{args.rows}")
    args.json.write_text(json.dumps({"shape": args.shape, "device": device_name(), "precision": args.precision,
                                     "rows": args.rows, "batched_rows": batched_rows, "batch": args.batch,
                                     "batch1": one, "batched": many, "identical_outputs": same}, indent=2) + "\n")

if __name__ == "__main__":
    main()
