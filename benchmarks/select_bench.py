"""What checkpoint selection (select: in a spec) costs next to the training it selects from.

    python benchmarks/select_bench.py [--train telecom_train_400] [--epochs 5] [--dev-rows 200]

Builds the tiny Gemma and the synthetic data (as the tests do), renders one run with
`select: {on: telecom_dev_<N>, every: epoch}`, and times, through the real CLI and the real
LLaMA-Factory: `tlf step RUN train`, then `tlf step RUN select` (one process predicts the dev
set with every checkpoint, batched and greedy). Prints a table and writes select_bench.json,
including the projection of the same ratio onto the GPU rates measured in RESULTS.md (arithmetic
on measured rates, not a GPU measurement).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
# benchmarks/RESULTS.md, one H100 (2026-11-28): training samples/s with the blog's flags, and
# batched predict rows/s for the whole predict call (model load and tokenisation included).
H100_TRAIN_AS_WRITTEN = 37.0
H100_TRAIN_FAST = 241.0
H100_PREDICT_BATCHED = 36.8


def _timed(*args: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([str(BIN / "tlf"), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"tlf {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.monotonic() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", default="telecom_train_400")
    parser.add_argument("--epochs", type=float, default=5.0)
    parser.add_argument("--dev-rows", type=int, default=200)
    parser.add_argument("--work", type=Path, default=None, help="Work directory (default: a temporary one).")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    from telecom_lf import data, tiny

    work = args.work or Path(tempfile.mkdtemp(prefix="tlf-select-bench-"))
    model = tiny.cached(work / "models", tiny.TinySpec(arch="gemma"))
    data_dir = work / "data"
    if not (data_dir / data.MANIFEST).exists():
        data.prepare_synthetic(work)
    dev = f"telecom_dev_{args.dev_rows}"
    if dev != f"telecom_dev_{data.DEV_SIZE}":
        raise SystemExit(f"--dev-rows: the synthetic split cuts telecom_dev_{data.DEV_SIZE}")
    spec = work / "bench.yaml"
    spec.write_text(f"""name: select-bench
model: {model}
data: {{dir: {data_dir}, train: {args.train}, predict: [telecom_test_100]}}
template: default
train: {{lora_rank: 8, num_train_epochs: {args.epochs}, learning_rate: 5.0e-3, cutoff_len: 128,
        per_device_train_batch_size: 16}}
select: {{on: {dev}, every: epoch}}
predict: {{max_new_tokens: 16, per_device_eval_batch_size: 32}}
""", encoding="utf-8")
    runs = work / f"runs-{args.train}-{args.epochs:g}"
    shutil.rmtree(runs, ignore_errors=True)      # a measurement starts from nothing trained
    _timed("render", str(spec), "--out", str(runs))
    run = runs / "select-bench" / "select-bench"
    train_s, _ = _timed("step", str(run), "train")
    select_s, said = _timed("step", str(run), "select")
    record = json.loads((run / "selection.json").read_text())
    checkpoints = len(record["checkpoints"])
    rows = json.loads((data_dir / f"{args.train}.json").read_text(encoding="utf-8"))
    result = {
        "train_set": args.train, "train_rows": len(rows), "epochs": args.epochs, "dev_rows": args.dev_rows,
        "checkpoints": checkpoints, "train_s": round(train_s, 1), "select_s": round(select_s, 1),
        "select_per_checkpoint_s": round(select_s / checkpoints, 2), "select_over_train": round(select_s / train_s, 3),
        "chosen_step": record["chosen"]["step"], "pruned_bytes": record["pruned_bytes"],
        "h100_projection": _projection(checkpoints=5, dev_rows=args.dev_rows),
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"tiny Gemma, {args.train} ({len(rows)} rows) x {args.epochs:g} epochs, select on {dev} every epoch "
          f"(CPU, this machine)\n")
    print(f"{'phase':58s} {'seconds':>8s}")
    print(f"{'tlf step train':58s} {train_s:8.1f}")
    print(
        f"{f'tlf step select: {checkpoints} checkpoints x {args.dev_rows} dev rows, one process':58s} {select_s:8.1f}"
    )
    print(f"{'  per checkpoint':58s} {select_s / checkpoints:8.2f}")
    print(f"\nselection / training: {select_s / train_s:.2f}   ({said.strip().splitlines()[-1]})")
    projection = result["h100_projection"]
    print(f"\nProjected on one H100 at RESULTS.md's rates (arithmetic, not measured): 5000 rows x 5 epochs, "
          f"5 checkpoints x {args.dev_rows} dev rows at {H100_PREDICT_BATCHED} rows/s = "
          f"{projection['select_s']:.0f} s of predict; training {projection['train_as_written_s']:.0f} s as written "
          f"({projection['over_as_written']:.0%}), {projection['train_fast_s']:.0f} s under speed: fast "
          f"({projection['over_fast']:.0%})")
    print(f"\nwrote {args.json}")


def _projection(checkpoints: int, dev_rows: int) -> dict:
    train_samples = 5000 * 5
    select_s = checkpoints * dev_rows / H100_PREDICT_BATCHED
    as_written, fast = train_samples / H100_TRAIN_AS_WRITTEN, train_samples / H100_TRAIN_FAST
    return {"select_s": round(select_s, 1), "train_as_written_s": round(as_written, 1), "train_fast_s": round(fast, 1),
            "over_as_written": round(select_s / as_written, 3), "over_fast": round(select_s / fast, 3)}


if __name__ == "__main__":
    main()
