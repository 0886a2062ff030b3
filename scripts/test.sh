#!/usr/bin/env bash
# Installs what is needed, then runs every test: unit tests, sqllogictest files (embedded
# and over the wire) and the end-to-end tests against the real server, psql included.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup.sh"
# shellcheck source=env.sh
source "$here/env.sh"
cd "$here/.."
# The end-to-end tests start the real binary; build it first.
cargo build -p runbase-server --bin runbase
export RUNBASE_BIN="$CARGO_TARGET_DIR/debug/runbase"
cargo test --workspace "$@"
