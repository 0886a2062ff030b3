#!/usr/bin/env bash
# Every comparison against runbase's peers, side by side, in one command:
#
#   ./scripts/bench.sh            # release build, full sizes (~15 min on 2 cores); writes
#                                 # the tables into docs/benchmarks.md
#   ./scripts/bench.sh --quick    # small sizes on the debug build (~2 min): checks that
#                                 # every comparison runs; prints, writes nothing
#
# Each comparison starts its peers on loopback (runbase, PostgreSQL 15, an MLflow server,
# Python PyTorch), alternates runbase and the peer, and prints a markdown table of medians
# with the runbase/peer ratio (bench/src/bin/compare_*.rs); this script folds them into one.
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

# MLflow 3.17.2 (its server and client) and psycopg in a venv of their own, for the logging
# comparison; both sides of it run under that venv's Python.
mlflow_ok() {
  "$RUNBASE_MLFLOW_VENV/bin/python3" -c 'import mlflow, psycopg, sys; sys.exit(0 if mlflow.__version__ == "3.17.2" else 1)' >/dev/null 2>&1
}
if ! mlflow_ok; then
  echo "bench: installing mlflow 3.17.2 into $RUNBASE_MLFLOW_VENV (about 2 minutes)" >&2
  mkdir -p "$RUNBASE_CACHE"
  python3 -m venv "$RUNBASE_MLFLOW_VENV"
  "$RUNBASE_MLFLOW_VENV/bin/pip" install -q --disable-pip-version-check mlflow==3.17.2 'psycopg[binary]==3.2.*'
  mlflow_ok
fi

comparisons=(compare_tracking compare_mlflow compare_train compare_search compare_predict compare_durability compare_load compare_dashboard compare_scoring)

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
for comparison in "${comparisons[@]}"; do
  echo "bench: $comparison ${args[*]:-}" >&2
  started=$SECONDS
  RUNBASE_BIN="$bin/runbase" "$bin/$comparison" "${args[@]}" >"$out/$comparison.md"
  echo "bench: $comparison took $((SECONDS - started)) s" >&2
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
  echo "PostgreSQL $(/usr/lib/postgresql/15/bin/postgres --version | awk '{print $3}'),"
  echo "MLflow $("$RUNBASE_MLFLOW_VENV/bin/python3" -c 'import mlflow; print(mlflow.__version__)')."
  echo "Medians of alternating runs; above 1 in the last column, runbase is better."
  echo
  # One table: every comparison's rows under one header...
  first=true
  for comparison in "${comparisons[@]}"; do
    if $first; then
      grep -m2 -E '^\| peer \||^\|---' "$out/$comparison.md"
      first=false
    fi
    grep -E '^\| ' "$out/$comparison.md" | grep -v -E '^\| peer \||^\|---'
  done
  # ...then what each comparison measured, and its notes.
  echo
  echo "What each comparison runs (details in the sections below and in bench/src/bin/):"
  echo
  for comparison in "${comparisons[@]}"; do
    grep -v -E '^\| |^\|---|^$' "$out/$comparison.md" | sed -e 's/^### \(.*\)/- `'"$comparison"'`: \1/' -e 's/^\([^-]\)/  \1/'
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
