#!/usr/bin/env bash
# The README's two commands, each self-installing and idempotent:
#   ./dev.sh demo   -> builds .venv if needed, then runs `tlf demo` (the blog's study in miniature)
#   ./dev.sh test   -> builds .venv if needed, starts the local Slurm, runs the whole test suite
# Other verbs: setup (only install), tracking (setup plus the optional MLflow/TensorBoard extra),
# shell-env (print `source` line).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="${TLF_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

stamp_of() { cat dev.sh pyproject.toml requirements/cpu-lock.txt requirements/tracking-lock.txt | sha256sum | cut -c1-16; }

setup() {
  local stamp; stamp=$(stamp_of)
  if [[ -x "$PY" && -f "$VENV/.tlf-stamp" && "$(cat "$VENV/.tlf-stamp")" == "$stamp" ]]; then
    return 0
  fi
  local base=${PYTHON:-python3}
  "$base" -c 'import sys; assert sys.version_info >= (3, 11), "tlf needs Python >= 3.11"'
  [[ -x "$PY" ]] || "$base" -m venv "$VENV"
  local log="$VENV/install.log"
  pip() {  # quiet pip; the whole output goes to $log and is shown only when a step fails
    "$PY" -m pip install --disable-pip-version-check "$@" >>"$log" 2>&1 \
      || { tail -n 40 "$log" >&2; echo "[tlf] install failed; full log: $log" >&2; return 1; }
  }
  echo "[tlf] installing into $VENV (first run only; ~2 min; log: $log)" >&2
  # 1. torch first. On this CPU-only machine: the local CPU build. On a cluster, install your
  #    own ROCm/DTK or CUDA build into the venv before running this script: it is kept.
  if ! "$PY" -c 'import torch' 2>/dev/null; then pip "torch==2.13.0"; fi
  # 2. LLaMA-Factory without its hard pins on torchvision/gradio/modelscope/av (unused for
  #    text SFT and predict; torchvision would replace the CPU torch with a CUDA build).
  pip --no-deps "llamafactory==0.9.5"
  pip -r requirements/cpu-lock.txt
  # 3. llamafactory/data/mm_plugin.py imports torchaudio at import time. PyPI's torchaudio
  #    is built against CUDA torch; its compiled extension cannot load beside the CPU torch.
  #    torchaudio treats a missing extension as "not built" (its pex path), and text SFT
  #    never calls it, so keep the Python part only.
  if ! "$PY" -c 'import torchaudio' 2>/dev/null; then
    pip --no-deps "torchaudio==2.11.0"
    "$PY" - <<'PYEOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("torchaudio")
lib = pathlib.Path(spec.origin).parent / "lib"
for so in lib.glob("*.so"):
    so.unlink()
PYEOF
  fi
  # 4. tlf itself, editable, with the test runner; and the blog-era LLaMA-Factory wheel
  #    (llmtuner 0.6.3, never installed: a test reads its template code to compare token ids).
  pip --no-deps -e .
  pip "pytest>=8,<10" "ruff==0.17.6"
  "$PY" -m pip download --disable-pip-version-check --no-deps "llmtuner==0.6.3" -d "$VENV/blog-era" >>"$log" 2>&1
  "$PY" -c 'import llamafactory.data.mm_plugin, telecom_lf.cli' >/dev/null
  echo "$stamp" > "$VENV/.tlf-stamp"
}

tracking() {
  # The optional extra `.[tracking]` (MLflow, TensorBoard), pinned: the tests of `tracking:` need it;
  # `./dev.sh demo` does not.
  setup
  local stamp; stamp=$(stamp_of)
  [[ -f "$VENV/.tlf-tracking-stamp" && "$(cat "$VENV/.tlf-tracking-stamp")" == "$stamp" ]] && return 0
  echo "[tlf] installing the tracking extra (mlflow, tensorboard) for the tests (first run only)" >&2
  "$PY" -m pip install --disable-pip-version-check -r requirements/tracking-lock.txt >>"$VENV/install.log" 2>&1 \
    || { tail -n 40 "$VENV/install.log" >&2; echo "[tlf] installing the tracking extra failed" >&2; return 1; }
  "$PY" -c 'import mlflow, tensorboard' >/dev/null
  echo "$stamp" > "$VENV/.tlf-tracking-stamp"
}

browser() {
  # Debian's Chromium (and a CJK font, so screenshots show the Chinese questions) for the test
  # that opens report.html in a real browser; with TLF_REQUIRE_BROWSER=1 that test fails, not
  # skips, without it.
  command -v chromium >/dev/null && return 0
  [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null || { echo "[tlf] no chromium, and no root apt-get to install it" >&2; return 0; }
  echo "[tlf] installing Debian's chromium for the report's browser test (first run only)" >&2
  local packages=(chromium fonts-wqy-zenhei)
  local -x DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${packages[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${packages[@]}" >/dev/null; } \
    || echo "[tlf] installing chromium failed: the browser test will fail" >&2
}

run_tests() {
  setup
  tracking
  browser
  export TLF_REQUIRE_BROWSER=1
  local slurm_started=0
  if [[ "${TLF_SKIP_SLURM:-0}" != 1 ]]; then
    # The slurm-marked tests submit real jobs; with TLF_REQUIRE_SLURM=1 they fail (not skip)
    # when Slurm is missing, so a broken set-up cannot pass as a green run.
    slurm/start-slurm.sh
    slurm_started=1
    source "${TLF_SLURM_DIR:-/tmp/tlf-slurm}/env.sh"
    export TLF_REQUIRE_SLURM=1
  fi
  set +e
  local rc=0
  # The linter first (pyproject.toml's [tool.ruff]): a finding fails the run, as a test would.
  "$VENV/bin/ruff" check --no-cache . || rc=$?
  "$PY" -m pytest "$@"
  local tests_rc=$?
  [[ $rc == 0 ]] && rc=$tests_rc
  set -e
  if [[ $slurm_started == 1 ]]; then slurm/stop-slurm.sh >&2 || true; fi
  return $rc
}

case "${1:-}" in
  setup) setup ;;
  tracking) tracking ;;
  demo) shift; setup; exec "$VENV/bin/tlf" demo "$@" ;;
  test) shift; run_tests "$@" ;;
  shell-env) echo "source $VENV/bin/activate" ;;
  *) echo "usage: ./dev.sh {demo|test|setup|tracking|shell-env} [args]" >&2; exit 2 ;;
esac
