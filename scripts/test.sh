#!/usr/bin/env bash
# Installs what is needed, then runs every test: unit tests, sqllogictest files (embedded
# and over the wire) and the end-to-end tests against the real server, psql included.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup.sh"
# shellcheck source=env.sh
source "$here/env.sh"
cd "$here/.."
# `cargo test --workspace` also builds the `runbase` binary (the server crate has
# integration tests), which the end-to-end tests in tests/ start.
cargo test --workspace "$@"
