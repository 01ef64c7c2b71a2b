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
# Liger on a tiny gemma first: if it cannot run here, take it out so that `speed: fast` renders
# without it instead of every fast variant failing.
if [ -d /tmp/site/liger_kernel ] && ! python3 - <<'PY' 2>&1 | tail -n 5 | tee -a "$OUT/gpu.txt"
import torch
from liger_kernel.transformers import apply_liger_kernel_to_gemma
from transformers import GemmaConfig, GemmaForCausalLM
apply_liger_kernel_to_gemma()
config = GemmaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=1, head_dim=16, vocab_size=512)
model = GemmaForCausalLM(config).to("cuda", torch.bfloat16)
ids = torch.randint(0, 512, (2, 16), device="cuda")
model(input_ids=ids, labels=ids).loss.backward()
print("liger-kernel: runs on this card")
PY
then
  echo "liger-kernel removed: it failed on a tiny gemma" | tee -a "$OUT/gpu.txt"
  rm -rf /tmp/site/liger_kernel*
fi
# The card's dense bf16 rate, measured (an 8192^3 product), for MFU unless PEAK_TFLOPS is given.
PEAK_TFLOPS=${PEAK_TFLOPS:-$(python3 - <<'PY'
import time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(5): a @ b
torch.cuda.synchronize(); start = time.perf_counter()
for _ in range(50): a @ b
torch.cuda.synchronize()
print(round(2 * 8192**3 * 50 / (time.perf_counter() - start) / 1e12))
PY
)}
echo "measured dense bf16 peak: $PEAK_TFLOPS TFLOP/s" | tee -a "$OUT/gpu.txt"
timeout "${TRAIN_LIMIT:-330}" python3 benchmarks/train_bench.py --shape "${SHAPE:-gemma-2b}" --steps "${TRAIN_STEPS:-20}" --variants ${TRAIN_VARIANTS:-written fast fast-16gb fast-no-ckpt fast-micro32} --profile ${PROFILE-fast} ${PRECISION:+--precision $PRECISION} \
  --peak-tflops "$PEAK_TFLOPS" --model-dir "/tmp/tlf-bench-model-${SHAPE:-gemma-2b}" --json "$OUT/train_bench.json" 2>"$OUT/train.err" \
  | tee "$OUT/train.txt"
tail -c 3000 "$OUT/train.err"
head -n 3 "$OUT"/profile-*.txt 2>/dev/null
timeout "${PREDICT_LIMIT:-170}" python3 benchmarks/predict_bench.py --shape "${SHAPE:-gemma-2b}" --rows "${PREDICT_ROWS:-100}" --batched-rows "${PREDICT_BATCHED_ROWS:-512}" --batch "${PREDICT_BATCH:-32}" ${PRECISION:+--precision $PRECISION} \
  --model-dir "/tmp/tlf-bench-model-${SHAPE:-gemma-2b}" --json "$OUT/predict_bench.json" 2>"$OUT/predict.err" | tee "$OUT/predict.txt"
tail -c 1500 "$OUT/predict.err"
cat "$OUT/train.txt" "$OUT/predict.txt"
