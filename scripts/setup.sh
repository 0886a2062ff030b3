#!/usr/bin/env bash
# Installs what building and testing runbase needs, once; later runs return at once.
#   - Debian packages: libclang-dev (RocksDB's bindings), postgresql-client (psql, for tests),
#     a JDK with libpostgresql-jdbc-java, Node.js with npm, openssl (the client matrix and
#     TLS tests), prometheus (the monitoring test)
#   - PyTorch 2.11.0 in a venv under $RUNBASE_CACHE, the libtorch that tch links against,
#     plus the Python drivers the tests use, moto (a local S3), the Delta readers and
#     mlflow-skinny; the full mlflow 3.17.2 in a venv of its own;
#     node-postgres under tests/clients/node
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
# The client matrix (tests/tests/clients.rs): Java with Debian's pgjdbc, Node.js with npm.
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The monitoring test scrapes the server with a real Prometheus.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# The dashboard's browser tests drive Debian's headless Chromium through its ChromeDriver.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)
# Random SQL against the server (tests/tests/sqlsmith.rs, scripts/sqlsmith.sh).
command -v sqlsmith >/dev/null 2>&1 || missing+=(sqlsmith)
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

# Python clients the end-to-end tests drive: psycopg 3 (as a training script would use)
# and the rest of the client matrix.
if ! "$RUNBASE_TORCH_VENV/bin/python3" -c 'import psycopg, psycopg2, asyncpg, sqlalchemy, pandas' >/dev/null 2>&1; then
  echo "setup: installing the Python clients into $RUNBASE_TORCH_VENV" >&2
  "$RUNBASE_TORCH_VENV/bin/pip" install -q --disable-pip-version-check \
    'psycopg[binary]==3.2.*' 'psycopg2-binary==2.9.*' 'asyncpg==0.30.*' \
    'sqlalchemy==2.0.*' 'pandas==2.2.*'
fi

# The storage tests: moto's S3 server (tests/src/s3.rs), and the Delta readers that read
# runbase's tables from the local store and the bucket (tests/tests/interop.rs): deltalake,
# polars, DuckDB with its delta and httpfs extensions (loaded from the wheels, offline) and
# pysail with the Spark Connect client it talks to.
if ! "$RUNBASE_TORCH_VENV/bin/python3" -c 'import moto, deltalake, polars, duckdb, duckdb_extension_delta, duckdb_extension_httpfs, duckdb_extension_postgres_scanner, pysail, pyspark, pyarrow' >/dev/null 2>&1; then
  echo "setup: installing moto and the Delta readers into $RUNBASE_TORCH_VENV" >&2
  "$RUNBASE_TORCH_VENV/bin/pip" install -q --disable-pip-version-check \
    'moto[server]==5.2.*' 'deltalake==1.6.*' 'polars==1.44.*' 'pyarrow==26.*' \
    'duckdb==1.5.5' 'duckdb-extension-delta==1.5.5' 'duckdb-extension-httpfs==1.5.5' \
    'duckdb-extension-postgres-scanner==1.5.5' \
    'pysail==0.7.2' 'pyspark-client==4.2.0'
fi

# Selenium for the dashboard's browser tests (tests/tests/dashboard.rs); it is pointed at
# /usr/bin/chromedriver, so Selenium Manager never downloads a driver.
if ! "$RUNBASE_TORCH_VENV/bin/python3" -c 'import selenium' >/dev/null 2>&1; then
  echo "setup: installing Selenium into $RUNBASE_TORCH_VENV" >&2
  "$RUNBASE_TORCH_VENV/bin/pip" install -q --disable-pip-version-check 'selenium==4.*'
fi

# MLflow for tests/tests/mlflow.rs: the stock client (mlflow-skinny, with PyTorch for the
# model it logs) in the test venv, and the full mlflow (its server, the reference the same
# script is compared against) in a venv of its own, which the benchmarks use too.
if ! "$RUNBASE_TORCH_VENV/bin/python3" -c 'import mlflow, sys; sys.exit(0 if mlflow.__version__ == "3.17.2" else 1)' >/dev/null 2>&1; then
  echo "setup: installing mlflow-skinny 3.17.2 into $RUNBASE_TORCH_VENV" >&2
  "$RUNBASE_TORCH_VENV/bin/pip" install -q --disable-pip-version-check 'mlflow-skinny==3.17.2'
fi
if ! "$RUNBASE_MLFLOW_VENV/bin/python3" -c 'import mlflow, psycopg, sys; sys.exit(0 if mlflow.__version__ == "3.17.2" else 1)' >/dev/null 2>&1; then
  echo "setup: installing mlflow 3.17.2 into $RUNBASE_MLFLOW_VENV (about 2 minutes)" >&2
  mkdir -p "$RUNBASE_CACHE"
  python3 -m venv "$RUNBASE_MLFLOW_VENV"
  "$RUNBASE_MLFLOW_VENV/bin/pip" install -q --disable-pip-version-check mlflow==3.17.2 'psycopg[binary]==3.2.*'
fi

# schemathesis for tests/tests/openapi.rs: requests generated from the HTTP API's OpenAPI
# document, in a venv of its own (its hypothesis pins stay out of the test venv).
schemathesis_venv="${RUNBASE_SCHEMATHESIS_VENV:-$RUNBASE_CACHE/schemathesis-venv}"
if ! "$schemathesis_venv/bin/python3" -c 'import schemathesis, sys; sys.exit(0 if schemathesis.__version__ == "4.32.5" else 1)' >/dev/null 2>&1; then
  echo "setup: installing schemathesis 4.32.5 into $schemathesis_venv" >&2
  mkdir -p "$RUNBASE_CACHE"
  python3 -m venv "$schemathesis_venv"
  "$schemathesis_venv/bin/pip" install -q --disable-pip-version-check 'schemathesis==4.32.5' 'hypothesis==6.170.27'
fi

# The newest releases of the Python clients, unpinned, for the client matrix's "newest"
# row (tests/tests/clients.rs): what a user installing today gets. Refreshed once a day.
newest="$RUNBASE_CACHE/clients-newest"
if [ ! -x "$newest/bin/python3" ] || [ -n "$(find "$newest" -maxdepth 0 -mtime +0 2>/dev/null)" ]; then
  echo "setup: installing the newest Python clients into $newest" >&2
  python3 -m venv "$newest"
  "$newest/bin/pip" install -q --disable-pip-version-check --upgrade \
    'psycopg[binary]' psycopg2-binary asyncpg sqlalchemy pandas pgcli \
    'duckdb==1.5.5' 'duckdb-extension-postgres-scanner==1.5.5'
  touch "$newest"
fi

# node-postgres for the client matrix, pinned by tests/clients/node/package-lock.json.
if [ ! -d "$here/../tests/clients/node/node_modules/pg" ]; then
  echo "setup: installing node-postgres (npm ci)" >&2
  (cd "$here/../tests/clients/node" && npm ci --no-audit --no-fund --silent)
fi
