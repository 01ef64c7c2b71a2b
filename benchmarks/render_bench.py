"""Cold vs warm `tlf render` of the whole blog study (experiments/blog/*.yaml), as a user runs it.

    python benchmarks/render_bench.py [--repeat 3]

Cold: an empty tlf cache, so LLaMA-Factory's argument dataclasses are imported and read.
Warm: the cache written by the cold run. Each is a fresh `tlf render` process per spec.
Prints a table and writes benchmarks/render_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TLF = str(Path(sys.executable).parent / "tlf")


def prepare(root: Path) -> tuple[Path, Path]:
    from telecom_lf import data, tiny

    data_dir = data.prepare_synthetic(root, mode="blog")
    return tiny.build(root / "model", tiny.TinySpec()), data_dir


def render_all(model: Path, data_dir: Path, out: Path, cache: Path) -> float:
    env = {**os.environ, "TLF_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    for spec in sorted((REPO / "experiments" / "blog").glob("*.yaml")):
        subprocess.run([TLF, "render", str(spec), "--out", str(out), f"--set=model={model}",
                        f"--set=data.dir={data_dir}"], check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, data_dir = prepare(root)
        cold, warm = [], []
        for i in range(args.repeat):
            cache = root / f"cache{i}"
            cold.append(render_all(model, data_dir, root / f"cold{i}", cache))
            warm.append(render_all(model, data_dir, root / f"warm{i}", cache))
            shutil.rmtree(cache)
        runs = sum(1 for _ in (root / "warm0").glob("*/*/manifest.json"))
    result = {"specs": 5, "runs": runs, "cold_s": round(statistics.median(cold), 2),
              "warm_s": round(statistics.median(warm), 2)}
    print(
        f"{'render of the blog study':28s} {'specs':>5s} {'runs':>5s} "
        f"{'seconds (median of ' + str(args.repeat) + ')':>24s}"
    )
    print(f"{'cold (no cache)':28s} {5:5d} {runs:5d} {result['cold_s']:24.2f}")
    print(f"{'warm (cached LF arguments)':28s} {5:5d} {runs:5d} {result['warm_s']:24.2f}")
    print(f"warm is {result['cold_s'] / result['warm_s']:.1f}x faster; {result['warm_s'] / 5:.2f} s per spec")
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
