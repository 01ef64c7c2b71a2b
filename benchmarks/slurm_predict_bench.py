"""A sweep on Slurm: its predictions in each array task (predict_mode: per-run) against one predict
job after the array with the base read once (predict_mode: shared).

    source /tmp/tlf-slurm/env.sh    # the local Slurm of slurm/start-slurm.sh (or a real cluster's)
    python benchmarks/slurm_predict_bench.py [--runs 4] [--rows 50] [--cluster local-test]

Submits the same sweep of N LoRA runs on the tiny Gemma (train_100, 2 sets to predict) twice with
`tlf submit`, once per mode, each into its own --out, and waits for the report job. Per mode: the
wall time from submit to the report job's end, the job-seconds that held a card (every array task
and the predict job, from scontrol's StartTime/EndTime: what a cluster bills), the base reads
(transformers' "loading weights file" lines in the predict logs) and whether every run's
predictions are byte-identical across the modes. Prints a table and writes slurm_predict_bench.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

BIN = Path(sys.executable).parent
SETS = ("telecom_train_100", "telecom_test_100")
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"}


def _spec(work: Path, model: Path, data_dir: Path, runs: int, rows: int, cluster: str) -> Path:
    spec = work / "bench.yaml"
    spec.write_text(f"""name: slurm-predict-bench
model: {model}
data: {{dir: {data_dir}, train: telecom_train_100, predict: [{", ".join(SETS)}]}}
template: default
decoding: greedy
cluster: {cluster}
train: {{num_train_epochs: 1.0, learning_rate: 5.0e-3, cutoff_len: 128, per_device_train_batch_size: 16}}
sweep: {{grid: {{lora_rank: {[2 ** (i + 1) for i in range(runs)]}}}}}
predict: {{max_samples: {rows}, max_new_tokens: 16, per_device_eval_batch_size: 16}}
""", encoding="utf-8")
    return spec


def _jobs(job: str) -> list[dict]:
    """scontrol's record of a job (every task of an array), one dict per job or task."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True).stdout
    return [dict(field.split("=", 1) for field in line.split() if "=" in field) for line in out.splitlines()]


def _seconds(job: dict) -> float:
    start, end = (datetime.fromisoformat(job[key]) for key in ("StartTime", "EndTime"))
    return (end - start).total_seconds()


def _submit_and_wait(spec: Path, out: Path, mode: str) -> dict:
    started = time.monotonic()
    done = subprocess.run([str(BIN / "tlf"), "submit", str(spec), "--out", str(out), "--set", f"predict_mode={mode}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"tlf submit failed:\n{done.stdout}{done.stderr}")
    root = out / "slurm-predict-bench"
    record = json.loads((root / "jobs.json").read_text())[-1]
    while not all(job.get("JobState") in FINAL for job in _jobs(record["report"])):
        time.sleep(0.5)
    wall = time.monotonic() - started
    carded = [job for key in ("array", "predict") if key in record for job in _jobs(record[key])]
    states = {job["JobState"] for key in ("array", "predict", "report") if key in record for job in _jobs(record[key])}
    logs = sorted(root.glob("*/logs/predict-*.log"))
    return {"mode": mode, "jobs": len(carded) + 1, "wall_s": round(wall, 1),
            "card_job_s": sum(_seconds(job) for job in carded), "states": sorted(states),
            "base_reads": sum(len(re.findall(r"loading weights file ", p.read_text(errors="replace"))) for p in logs),
            "predict_logs": len(logs)}


def _outputs(root: Path) -> dict[str, bytes]:
    found = sorted(root.glob("*/predict-*/generated_predictions.jsonl"))
    return {str(p.relative_to(root)): p.read_bytes() for p in found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--rows", type=int, default=50, help="rows predicted per set")
    parser.add_argument("--cluster", default="local-test")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("slurm_predict_bench.json"))
    args = parser.parse_args()
    from telecom_lf import data, tiny

    with tempfile.TemporaryDirectory(prefix="tlf-slurm-bench-") as scratch:
        work = Path(scratch)
        model = tiny.cached(work / "models", tiny.TinySpec(arch="gemma"))
        data_dir = data.prepare_synthetic(work / "data")
        spec = _spec(work, model, data_dir, args.runs, args.rows, args.cluster)
        results = [_submit_and_wait(spec, work / mode, mode) for mode in ("per-run", "shared")]
        outputs = [_outputs(work / r["mode"] / "slurm-predict-bench") for r in results]
    identical = outputs[0] == outputs[1] and len(outputs[0]) == 2 * args.runs
    print(f"{args.runs} runs x {len(SETS)} sets of {args.rows} rows, cluster {args.cluster}; "
          f"predictions identical across modes: {identical}")
    print(f"{'predict_mode':14s} {'jobs':>5s} {'wall s':>8s} {'card job-s':>11s} {'base reads':>11s}  states")
    for r in results:
        print(f"{r['mode']:14s} {r['jobs']:5d} {r['wall_s']:8.1f} {r['card_job_s']:11.0f} {r['base_reads']:11d}  "
              f"{','.join(r['states'])}")
    per_run, shared = results
    print(f"shared / per-run: wall {shared['wall_s'] / per_run['wall_s']:.2f}x, "
          f"card job-seconds {shared['card_job_s'] / max(per_run['card_job_s'], 1):.2f}x")
    args.json.write_text(json.dumps({"runs": args.runs, "rows": args.rows, "cluster": args.cluster,
                                     "identical": identical, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
