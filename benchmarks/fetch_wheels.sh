#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu_bench.sh installs on a lent GPU machine (Python 3.12,
# x86-64, PyTorch present, no network) into .whl/ (git-ignored through .git/info/exclude).
# Versions are the ones requirements/cpu-lock.txt pins; liger-kernel is extra (GPU only).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pin() { grep -i "^$1==" requirements/cpu-lock.txt; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  llamafactory==0.9.5 liger-kernel==0.8.5 \
  "$(pin transformers)" "$(pin tokenizers)" "$(pin peft)" "$(pin trl)" "$(pin accelerate)" "$(pin datasets)" \
  "$(pin dill)" "$(pin multiprocess)" "$(pin fsspec)" "$(pin omegaconf)" "$(pin nltk)" "$(pin jsonlines)" \
  "$(pin rouge-chinese)" "$(pin fire)" "$(pin termcolor)" "$(pin tyro)" "$(pin shtab)" "$(pin docstring_parser)"
python3 -m pip wheel -q --no-deps -w .whl "$(pin jieba)"   # jieba is published as an sdist only
du -sh .whl
