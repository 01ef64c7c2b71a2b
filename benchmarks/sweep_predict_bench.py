"""A sweep's predictions: the base model read once (predict_mode: shared) against once per predict.

    python benchmarks/sweep_predict_bench.py [--runs 6] [--rows 100] [--shape tiny]

Trains a sweep of N LoRA runs (ranks and dropouts) on the tiny Gemma and the synthetic data (as
the tests build them), untimed, then times the same 2N predict configs (train_100 and test_100
per run) three ways, through the real LLaMA-Factory:

- one process per predict (what a Slurm job per step does today): 2N processes;
- one process for all (``tlf-lf serve``, what ``tlf run`` does), each predict reading the base;
- one process for all with the base read once (``predict_mode: shared``).

Base reads are counted from transformers' own "loading weights file" lines in the predict logs,
and every way's predictions are compared byte for byte. Prints a table and writes
sweep_predict_bench.json. The shape ``gemma-2b-thin`` (train_bench.py's) makes the base's
read a larger share, as gemma-2b's is on a GPU node.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
SETS = ("telecom_train_100", "telecom_test_100")
RANKS, DROPOUTS = (2, 4, 8, 16, 32), (0.0, 0.1)


def _model(work: Path, shape: str) -> Path:
    from telecom_lf import tiny

    if shape == "tiny":
        return tiny.cached(work / "models", tiny.TinySpec(arch="gemma"))
    sys.path.insert(0, str(Path(__file__).parent))
    from train_bench import build_model

    return build_model(shape, work / "models" / shape)[0]


def _spec(work: Path, model: Path, data_dir: Path, runs: int, rows: int) -> Path:
    grid = [(r, d) for d in DROPOUTS for r in RANKS][:runs]
    spec = work / "bench.yaml"
    spec.write_text(f"""name: sweep-predict-bench
model: {model}
data: {{dir: {data_dir}, train: telecom_train_100, predict: [{", ".join(SETS)}]}}
template: default
decoding: greedy
train: {{num_train_epochs: 1.0, learning_rate: 5.0e-3, cutoff_len: 128, per_device_train_batch_size: 16}}
sweep:
  zip:
    - lora_rank: {[r for r, _ in grid]}
      lora_dropout: {[d for _, d in grid]}
predict: {{max_samples: {rows}, max_new_tokens: 16, per_device_eval_batch_size: 16}}
""", encoding="utf-8")
    return spec


def _configs(root: Path) -> list[tuple[Path, Path]]:
    from telecom_lf import rundir

    runs = sorted(p for p in root.iterdir() if (p / rundir.MANIFEST).is_file())
    return [(run / f"predict-{s}.yaml", run / "logs" / f"bench-predict-{s}.log") for run in runs for s in SETS]


def _outputs(configs) -> dict[str, bytes]:
    return {str(c): (c.parent / c.stem / "generated_predictions.jsonl").read_bytes() for c, _ in configs}


def _reads(configs) -> int:
    return sum(len(re.findall(r"loading weights file ", log.read_text(errors="replace"))) for _, log in configs)


def _fresh_logs(configs) -> None:
    for _, log in configs:
        log.unlink(missing_ok=True)


def _time_processes(configs) -> float:
    started = time.monotonic()
    for config, log in configs:
        with open(log, "ab") as handle:
            done = subprocess.run([str(BIN / "tlf-lf"), "train", str(config)], stdout=handle, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise SystemExit(f"predict {config} failed; log: {log}")
    return time.monotonic() - started


def _time_worker(configs, share_base: bool) -> float:
    from telecom_lf import processes

    started = time.monotonic()
    with processes.Worker(share_base) as worker:
        if not worker.run(configs):
            raise SystemExit(f"a predict failed; logs: {configs[0][1].parent}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=6, help=f"sweep runs (at most {len(RANKS) * len(DROPOUTS)})")
    parser.add_argument("--rows", type=int, default=100, help="rows predicted per set")
    parser.add_argument("--shape", default="tiny", help="tiny, or a train_bench.py shape such as gemma-2b-thin")
    parser.add_argument("--work", type=Path, default=None, help="Work directory (default: a temporary one).")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    from telecom_lf import data

    work = args.work or Path(tempfile.mkdtemp(prefix="tlf-sweep-predict-bench-"))
    model = _model(work, args.shape)
    if not (work / "data" / data.MANIFEST).exists():
        data.prepare_synthetic(work)
    spec = _spec(work, model, work / "data", args.runs, args.rows)
    out = work / "runs"
    shutil.rmtree(out, ignore_errors=True)
    trained = subprocess.run([str(BIN / "tlf"), "run", str(spec), "--out", str(out)], capture_output=True, text=True)
    if trained.returncode != 0:
        raise SystemExit(f"tlf run failed:\n{trained.stdout[-3000:]}\n{trained.stderr[-3000:]}")
    configs = _configs(out / "sweep-predict-bench")

    ways = [("one process per predict", lambda: _time_processes(configs), len(configs)),
            ("one process, base read per predict", lambda: _time_worker(configs, False), 1),
            ("one process, base read once (shared)", lambda: _time_worker(configs, True), 1)]
    results, outputs = {}, {}
    for name, timed, started in ways:
        _fresh_logs(configs)
        seconds = timed()
        results[name] = {"processes": started, "base_reads": _reads(configs), "seconds": round(seconds, 2)}
        outputs[name] = _outputs(configs)
    first = outputs[ways[0][0]]
    identical = all(o == first for o in outputs.values())
    slowest = results[ways[0][0]]["seconds"]
    for result in results.values():
        result["speed_up"] = round(slowest / result["seconds"], 2)
    summary = {"shape": args.shape, "runs": args.runs, "sets": list(SETS), "rows_per_set": args.rows,
               "predicts": len(configs), "identical_outputs": identical, "results": results}
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.shape} Gemma, {args.runs} LoRA runs x {len(SETS)} sets x {args.rows} rows = {len(configs)} "
          f"predicts, greedy, batch 16 (CPU, this machine)\n")
    print(f"{'how':40s} {'processes':>9s} {'base reads':>10s} {'seconds':>8s} {'speed-up':>8s}")
    for name, result in results.items():
        print(f"{name:40s} {result['processes']:9d} {result['base_reads']:10d} {result['seconds']:8.1f} "
              f"{result['speed_up']:7.2f}x")
    print(f"\npredictions identical byte for byte in all three: {identical}")
    print(f"wrote {args.json}")
    if not identical:
        raise SystemExit("the predictions differ between the ways: a bug")


if __name__ == "__main__":
    main()
