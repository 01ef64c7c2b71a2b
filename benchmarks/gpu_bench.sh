#!/usr/bin/env bash
# The GPU benchmarks as one script, for a lent machine that has PyTorch but not LLaMA-Factory
# and no network. The wheels it needs travel in .whl/ (see benchmarks/RESULTS.md for the
# `pip download` line); results and logs go to $OUT (or benchmarks/gpu-out).
#   bash benchmarks/gpu_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/gpu-out}
mkdir -p "$OUT"
PRECISION=${PRECISION-bf16}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TLF_CACHE_DIR=/tmp/tlf-cache
WHEELS=${WHEELS:-.whl}
if [ -d "$WHEELS" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import importlib.metadata as m; print(*(f"{n} {m.version(n)}" for n in ("torch", "transformers", "peft",
"llamafactory", "liger-kernel") if __import__("importlib.util").util.find_spec(n.replace("-", "_"))), sep=", ")' \
  | tee -a "$OUT/gpu.txt"
date -u | tee -a "$OUT/gpu.txt"
timeout "${TRAIN_LIMIT:-330}" python3 benchmarks/train_bench.py --shape "${SHAPE:-gemma-2b}" --steps "${TRAIN_STEPS:-20}" --variants ${TRAIN_VARIANTS:-written fast written-no-dora fast-no-dora} ${PRECISION:+--precision $PRECISION} \
  --peak-tflops "${PEAK_TFLOPS:-790}" --model-dir "/tmp/tlf-bench-model-${SHAPE:-gemma-2b}" --json "$OUT/train_bench.json" 2>"$OUT/train.err" \
  | tee "$OUT/train.txt"
tail -c 3000 "$OUT/train.err"
timeout "${PREDICT_LIMIT:-170}" python3 benchmarks/predict_bench.py --shape "${SHAPE:-gemma-2b}" --rows "${PREDICT_ROWS:-100}" --batch "${PREDICT_BATCH:-32}" ${PRECISION:+--precision $PRECISION} \
  --model-dir "/tmp/tlf-bench-model-${SHAPE:-gemma-2b}" --json "$OUT/predict_bench.json" 2>"$OUT/predict.err" | tee "$OUT/predict.txt"
tail -c 1500 "$OUT/predict.err"
cat "$OUT/train.txt" "$OUT/predict.txt"
