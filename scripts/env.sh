# Sourced by the other scripts: where the build cache and libtorch live.
# shellcheck shell=bash
RUNBASE_CACHE="${RUNBASE_CACHE:-$HOME/.cache/runbase}"
export RUNBASE_CACHE
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RUNBASE_CACHE/target}"
export RUNBASE_TORCH_VENV="${RUNBASE_TORCH_VENV:-$RUNBASE_CACHE/torch-venv}"
# MLflow, the benchmark harness's tracking peer (scripts/bench.sh installs it; tests don't use it).
export RUNBASE_MLFLOW_VENV="${RUNBASE_MLFLOW_VENV:-$RUNBASE_CACHE/mlflow-venv}"
# tch finds libtorch through the venv's PyTorch (pinned to 2.11.0 in setup.sh).
export PATH="$RUNBASE_TORCH_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
if [ -x "$RUNBASE_TORCH_VENV/bin/python3" ]; then
  RUNBASE_TORCH_LIB="$("$RUNBASE_TORCH_VENV/bin/python3" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null || true)"
  export RUNBASE_TORCH_LIB
  export LD_LIBRARY_PATH="$RUNBASE_TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
