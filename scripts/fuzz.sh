#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted bytes (fuzz/, cargo-fuzz + libFuzzer).
#
#   scripts/fuzz.sh build                 # instrumented build (nightly toolchain, own target dir)
#   scripts/fuzz.sh run [SECONDS] [TARGET...]   # each target for SECONDS (default 300)
#   scripts/fuzz.sh cmin [TARGET...]      # minimise the kept corpus
#
# The corpus grows in fuzz/corpus/<target>; a crash lands in fuzz/artifacts/<target>. Fix it,
# then move the crashing input to fuzz/regressions/<target>: `cargo test` replays both
# (tests/tests/fuzz_corpus.rs). Needs the `nightly` toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`); `--sanitizer none` keeps the libtorch and RocksDB links plain.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=env.sh
source scripts/env.sh
TARGETS=(pg_frontend http copy_text copy_csv copy_binary sql text_argument options)
FUZZ_TARGET_DIR="${RUNBASE_FUZZ_TARGET_DIR:-$RUNBASE_CACHE/fuzz-target}"
# RocksDB's C++ takes a quarter of an hour to build: link the one the main build made.
if [ -z "${ROCKSDB_LIB_DIR:-}" ]; then
  lib="$(find "$CARGO_TARGET_DIR/debug/build" -path '*librocksdb-sys-*/out/librocksdb.a' 2>/dev/null | head -n1)"
  if [ -n "$lib" ]; then
    export ROCKSDB_LIB_DIR="$(dirname "$lib")" ROCKSDB_STATIC=1
  fi
fi
fuzz() { (cd fuzz && cargo +nightly fuzz "$@"); }
common=(--dev --sanitizer none --target-dir "$FUZZ_TARGET_DIR")
cmd="${1:-run}"
shift || true
case "$cmd" in
  build)
    fuzz build "${common[@]}" "$@"
    ;;
  run)
    secs="${1:-300}"
    shift || true
    [ "$#" -gt 0 ] && TARGETS=("$@")
    fuzz build "${common[@]}"
    for t in "${TARGETS[@]}"; do
      mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
      echo "== $t: ${secs}s"
      fuzz run "${common[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -max_len=65536 -timeout=20 -rss_limit_mb=8192 -print_final_stats=1 \
        2>&1 | tail -n 25 || echo "== $t: stopped on a crash, its input is in fuzz/artifacts/$t"
    done
    ;;
  cmin)
    [ "$#" -gt 0 ] && TARGETS=("$@")
    for t in "${TARGETS[@]}"; do
      fuzz cmin "${common[@]}" "$t" "corpus/$t"
    done
    ;;
  *)
    echo "usage: $0 build | run [SECONDS] [TARGET...] | cmin [TARGET...]" >&2
    exit 2
    ;;
esac
