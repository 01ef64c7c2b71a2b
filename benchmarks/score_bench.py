"""tlf score vs LLaMA-Factory's own metric code (ComputeSimilarity) on the same 10k rows.

    python benchmarks/score_bench.py [--rows 10000]

Prints a table (seconds, rows/s, the four metrics from each) and writes benchmarks/score_bench.json.
Predictions mimic a half-trained adapter: exact answers, partial item lists, wrong ids, empty.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path


def rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    from telecom_lf import synth

    rng = random.Random(seed)
    pairs = []
    for row in synth.generate(min(n, synth.MAX_ROWS), seed):
        label = row.answer
        roll = rng.random()
        if roll < 0.4:
            predict = label
        elif roll < 0.7:
            predict = "|".join(label.split("|")[: max(1, label.count("|"))])
        elif roll < 0.95:
            predict = f"{label.split('_')[0]}_{rng.randrange(60, 160)}"
        else:
            predict = ""
        pairs.append((predict, label + "\n"))  # 0.9.5 labels end in a newline
    while len(pairs) < n:
        pairs.extend(pairs[: n - len(pairs)])
    return pairs


def upstream(pairs) -> dict:
    from telecom_lf import score

    return score.llamafactory_similarity(pairs)


def ours(pairs) -> dict:
    from telecom_lf import score

    return score.score_rows([score.Row(i, p, x) for i, (p, x) in enumerate(pairs)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    pairs = rows(args.rows)
    import jieba

    jieba.setLogLevel(60)
    jieba.initialize()  # dictionary load, once, outside both timings
    results = {}
    for name, function in (("llamafactory ComputeSimilarity", upstream), ("tlf score", ours)):
        started = time.perf_counter()
        metrics = function(pairs)
        elapsed = time.perf_counter() - started
        results[name] = {"seconds": round(elapsed, 3), "rows_per_s": round(len(pairs) / elapsed),
                         **{k: round(float(metrics[k]), 4) for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l")}}
    print(
        f"{'implementation':32s} {'seconds':>8s} {'rows/s':>8s} "
        f"{'bleu-4':>9s} {'rouge-1':>9s} {'rouge-2':>9s} {'rouge-l':>9s}"
    )
    for name, r in results.items():
        print(f"{name:32s} {r['seconds']:8.3f} {r['rows_per_s']:8d} {r['bleu-4']:9.4f} {r['rouge-1']:9.4f} "
              f"{r['rouge-2']:9.4f} {r['rouge-l']:9.4f}")
    a, b = results.values()
    same = all(abs(a[k] - b[k]) < 1e-4 for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l"))
    print(f"rows: {len(pairs)}; same numbers: {same}; speed-up: {a['seconds'] / b['seconds']:.1f}x")
    args.json.write_text(json.dumps({"rows": len(pairs), "results": results, "same": same}, indent=2) + "\n")


if __name__ == "__main__":
    main()
