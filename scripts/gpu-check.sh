#!/usr/bin/env bash
# TRAIN and PREDICT on CUDA and on the CPU over the same data: the losses of every epoch
# must agree within 1%, the predicted labels must be the same and the probabilities within
# 1e-4; prints epochs/s and rows/s for each device (bench/src/bin/predict_cuda.rs). On a
# machine without a GPU it says so and exits 0.
#
#   ./scripts/gpu-check.sh                  # release binaries, built here if missing
#   ./scripts/gpu-check.sh --rows 200000    # arguments go to predict_cuda
#   RUNBASE_BIN_DIR=dir ./scripts/gpu-check.sh   # prebuilt `runbase` and `predict_cuda`
#
# libtorch comes from the torch venv (scripts/env.sh) or, where there is none (a GPU
# machine with its own PyTorch 2.11), from `python3 -c 'import torch'`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no GPU on this machine (nvidia-smi finds none); nothing to check"
  exit 0
fi
nvidia-smi -L

# shellcheck source=env.sh
source "$here/env.sh"
if [ -z "${RUNBASE_TORCH_LIB:-}" ]; then
  RUNBASE_TORCH_LIB="$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  export LD_LIBRARY_PATH="$RUNBASE_TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "gpu-check: libtorch from $RUNBASE_TORCH_LIB"

bin="${RUNBASE_BIN_DIR:-$CARGO_TARGET_DIR/release}"
if [ ! -x "$bin/runbase" ] || [ ! -x "$bin/predict_cuda" ]; then
  cargo build --release -p runbase-server -p runbase-bench --bin runbase --bin predict_cuda
  bin="$CARGO_TARGET_DIR/release"
fi
RUNBASE_BIN="$bin/runbase" "$bin/predict_cuda" "$@"
