#!/usr/bin/env bash
# Every comparison against runbase's peers, side by side, in one command:
#
#   ./scripts/bench.sh            # release build, full sizes (~15 min on 2 cores); writes
#                                 # the tables into docs/benchmarks.md
#   ./scripts/bench.sh --quick    # small sizes on the debug build (~1 min): checks that
#                                 # every comparison runs; prints, writes nothing
#
# Each comparison starts its peers on loopback, alternates runbase and the peer, and prints
# a markdown table of medians with the runbase/peer ratio (bench/src/bin/compare_*.rs).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup.sh"
# shellcheck source=env.sh
source "$here/env.sh"
cd "$here/.."

quick=false
[ "${1:-}" = "--quick" ] && quick=true

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# PostgreSQL 15's server, for the tracking comparison (a throwaway cluster in a temp dir).
if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  echo "bench: installing postgresql-15" >&2
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
fi

if $quick; then
  cargo build --workspace --bins
  bin="$CARGO_TARGET_DIR/debug"
  args=(--quick)
else
  cargo build --release --workspace --bins
  bin="$CARGO_TARGET_DIR/release"
  args=()
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for comparison in compare_tracking compare_train compare_predict; do
  echo "bench: $comparison ${args[*]:-}" >&2
  RUNBASE_BIN="$bin/runbase" "$bin/$comparison" "${args[@]}" >"$out/$comparison.md"
done

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
memory="$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
{
  echo "<!-- harness:begin (written by ./scripts/bench.sh; edits here are overwritten) -->"
  echo "## Latest harness run"
  echo
  echo "\`./scripts/bench.sh\` on $(date -u +%Y-%m-%d): $(nproc) cores ($cpu), $memory memory;"
  echo "runbase $(cargo pkgid -p runbase-server | sed 's/.*[#@]//'), $(rustc --version | cut -d' ' -f1-2),"
  echo "PyTorch $(python3 -c 'import torch; print(torch.__version__)'),"
  echo "PostgreSQL $(/usr/lib/postgresql/15/bin/postgres --version | awk '{print $3}')."
  echo "Above 1 in the last column, runbase is better."
  for comparison in compare_tracking compare_train compare_predict; do
    echo
    sed 's/^### /### /' "$out/$comparison.md"
  done
  echo "<!-- harness:end -->"
} >"$out/report.md"

if $quick; then
  cat "$out/report.md"
  exit 0
fi

python3 - "$out/report.md" docs/benchmarks.md <<'EOF'
import re, sys
report = open(sys.argv[1]).read().rstrip() + "\n"
path = sys.argv[2]
doc = open(path).read()
pattern = re.compile(r"<!-- harness:begin.*?<!-- harness:end -->\n", re.S)
if pattern.search(doc):
    doc = pattern.sub(lambda _: report, doc)
else:
    # After the introduction, before the first section.
    at = doc.find("\n## ")
    doc = doc[: at + 1] + report + "\n" + doc[at + 1 :] if at >= 0 else doc + "\n" + report
open(path, "w").write(doc)
EOF
cat "$out/report.md"
echo "bench: wrote docs/benchmarks.md" >&2
