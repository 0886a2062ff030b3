#!/usr/bin/env bash
# Installs what building and testing runbase needs, once; later runs return at once.
#   - Debian packages: libclang-dev (RocksDB's bindings), postgresql-client (psql, for tests)
#   - PyTorch 2.11.0 in a venv under $RUNBASE_CACHE, the libtorch that tch links against
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

torch_ok() {
  "$RUNBASE_TORCH_VENV/bin/python3" -c 'import torch, sys; sys.exit(0 if torch.__version__.split("+")[0] == "2.11.0" else 1)' >/dev/null 2>&1
}
if ! torch_ok; then
  echo "setup: installing PyTorch 2.11.0 into $RUNBASE_TORCH_VENV (about 2 minutes)" >&2
  mkdir -p "$RUNBASE_CACHE"
  python3 -m venv "$RUNBASE_TORCH_VENV"
  "$RUNBASE_TORCH_VENV/bin/pip" install -q --disable-pip-version-check torch==2.11.0
  torch_ok
fi

# Python clients the end-to-end tests drive (psycopg 3, as a training script would use).
if ! "$RUNBASE_TORCH_VENV/bin/python3" -c 'import psycopg' >/dev/null 2>&1; then
  echo "setup: installing psycopg into $RUNBASE_TORCH_VENV" >&2
  "$RUNBASE_TORCH_VENV/bin/pip" install -q --disable-pip-version-check 'psycopg[binary]==3.2.*'
fi
