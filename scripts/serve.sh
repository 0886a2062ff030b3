#!/usr/bin/env bash
# Builds and starts the runbase server on its defaults (127.0.0.1:5433, ./runbase-data).
# Extra arguments go to `runbase serve`, e.g. --listen 127.0.0.1:6000.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup.sh"
# shellcheck source=env.sh
source "$here/env.sh"
cd "$here/.."
# Whole-workspace builds share compiled dependencies with `scripts/test.sh`.
cargo build --workspace --bins
exec "$CARGO_TARGET_DIR/debug/runbase" serve "$@"
