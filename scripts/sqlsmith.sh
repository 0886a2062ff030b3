#!/usr/bin/env bash
# sqlsmith (Debian's package) against a fresh runbase server: random queries over user tables
# and runbase's tracking tables; the server must not exit, panic or answer XX000.
#
#   scripts/sqlsmith.sh [QUERIES] [SEED]      # default 10000 queries, seed 1
#
# Writes its output to $SQLSMITH_OUT (default target dir/sqlsmith): the server's log,
# sqlsmith's report, queries.jsonl (every query and its error) and summary.txt. Exits non-zero
# if the server died, logged a panic, or answered any query with XX000. sqlsmith talks to the
# server through scripts/sqlsmith/proxy.py, which passes everything through and logs each
# query with its outcome.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=env.sh
source scripts/env.sh
queries="${1:-10000}"
seed="${2:-1}"
out="${SQLSMITH_OUT:-$CARGO_TARGET_DIR/sqlsmith}"
rm -rf "$out" && mkdir -p "$out"
export SQLSMITH_OUT="$out"
command -v sqlsmith >/dev/null || { echo "sqlsmith is missing: apt-get install sqlsmith" >&2; exit 2; }
bin="${RUNBASE_BIN:-$CARGO_TARGET_DIR/debug/runbase}"
base="${SQLSMITH_PORT_BASE:-16543}"
pg=$base http=$((base + 1)) proxy=$((base + 2))
"$bin" serve --data-dir "$out/data" --pg-listen "127.0.0.1:$pg" --http-listen "127.0.0.1:$http" \
  >"$out/server.log" 2>&1 &
server=$!
python3 scripts/sqlsmith/proxy.py "$proxy" "$pg" >"$out/proxy.out" 2>&1 &
proxy_pid=$!
trap 'kill $proxy_pid 2>/dev/null || true; kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  psql -h 127.0.0.1 -p "$pg" -U runbase runbase -c 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.2
done
psql -q -h 127.0.0.1 -p "$pg" -U runbase runbase >/dev/null <<'SQL'
CREATE TABLE t (a int, b text, c float8);
INSERT INTO t VALUES (1, 'x', 1.5), (2, NULL, -0.5);
CREATE TABLE u (id bigint, name text, flag boolean, ts timestamp, v float8[]);
INSERT INTO u VALUES (1, 'a', true, '2024-01-01', ARRAY[1.0, 2.0]), (2, NULL, false, NULL, NULL);
SELECT start_run('e1', 'r1');
SELECT log_metric(run_id, 'loss', 0.5, 1), log_param(run_id, 'lr', '0.1') FROM runbase.runs;
SQL
start=$(date +%s)
smith=0
sqlsmith --target="host=127.0.0.1 port=$proxy user=runbase dbname=runbase sslmode=disable" \
  --exclude-catalog --max-queries="$queries" --seed="$seed" --verbose >"$out/sqlsmith.out" 2>"$out/sqlsmith.err" &
smith_pid=$!
# sqlsmith reconnects forever to a server that is gone: stop it if the server exits.
( while kill -0 "$server" 2>/dev/null && kill -0 "$smith_pid" 2>/dev/null; do sleep 1; done
  kill "$smith_pid" 2>/dev/null || true ) &
wait "$smith_pid" || smith=$?
echo "sqlsmith: $queries queries in $(( $(date +%s) - start )) s, exit status $smith" | tee "$out/summary.txt"
python3 scripts/sqlsmith/summarize.py "$out/queries.jsonl" | tee -a "$out/summary.txt"
status=0
if [ "$smith" != 0 ]; then tail -n 3 "$out/sqlsmith.err" | tee -a "$out/summary.txt"; status=1; fi
if ! kill -0 "$server" 2>/dev/null; then echo "the server exited" | tee -a "$out/summary.txt"; status=1; fi
panics=$(grep -c panicked "$out/server.log" || true)
# XX000 answers, but for the DataFusion bugs scripts/sqlsmith/known_internal.txt lists
# (docs/reliability.md): each line a message prefix.
python3 - "$out/queries.jsonl" scripts/sqlsmith/known_internal.txt >"$out/internal.txt" <<'PY'
import json, sys
known = [l.rstrip("\n") for l in open(sys.argv[2]) if l.strip() and not l.startswith("#")]
for line in open(sys.argv[1]):
    r = json.loads(line)
    e = r["err"]
    if e and e.get("C") == "XX000":
        tag = "known" if any(e.get("M", "").startswith(k) for k in known) else "NEW"
        print(tag, e.get("M", "").splitlines()[0], "|", r["q"].replace("\n", " ")[:2000])
PY
internal=$(grep -c '^NEW' "$out/internal.txt" || true)
known=$(grep -c '^known' "$out/internal.txt" || true)
echo "panics: $panics, XX000 answers: $internal (and $known of known DataFusion bugs)" | tee -a "$out/summary.txt"
grep '^NEW' "$out/internal.txt" | head -n 5 | tee -a "$out/summary.txt" || true
[ "$panics" = 0 ] && [ "$internal" = 0 ] || status=1
exit $status
