#!/usr/bin/env python3
"""Read a Delta table written by runbase with independent Delta readers and
check that every reader sees the expected contents, at the latest version and
at pinned (time-travel) versions.

Readers (all in-process, no network besides the table's own storage):

  deltalake  python deltalake: DeltaTable(uri, version=v).to_pyarrow_table()
  polars     polars.read_delta(uri, version=v)
  duckdb     DuckDB + delta extension: delta_scan('uri', version => v)
             (extensions are LOADed from the duckdb-extension-* wheels' files,
             never downloaded)
  pysail     Sail (Spark on DataFusion): an in-process Spark Connect server and
             a pyspark-client session, spark.read.format("delta")
             .option("versionAsOf", v).load(uri)

Usage:

  read_tables.py --uri URI --expect FILE.json [--version V ...]
                 [--s3-endpoint http://127.0.0.1:PORT]
                 [--readers deltalake,polars,duckdb,pysail]

URI is a table location: a local path, file:///abs/path/, or
s3://bucket/prefix/. For S3, credentials come from AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY / AWS_REGION (default us-east-1); --s3-endpoint points
every reader at an S3-compatible server (moto, MinIO) with path-style URLs
(default: $AWS_ENDPOINT_URL); http:// endpoints are allowed.

FILE.json:

  {
    "columns": ["id", "x", "s", "b", "ts"],          # default for every snapshot
    "latest":  {"version": 2, "rows": [[1, 1.5, "a", true, "2026-01-01 00:00:00"], ...]},
    "versions": {"0": {"rows": []},
                 "1": {"rows": [...], "columns": [...]}}   # "columns" optional
  }

"latest" is compared with a read without a version; its "version" (optional)
is checked against the version deltalake reports. Without --version every
entry of "versions" is checked; with --version only those (each must be in
"versions"). "columns" is checked in order; rows are compared as multisets
(order-insensitive, duplicates count).

Value normalization (applied to expected and actual values alike):
  * null/None, booleans, numbers and strings compare as themselves; an int and
    a float compare equal when numerically equal (2 == 2.0); bool never
    equals a number; NaN equals NaN.
  * Timestamps are compared as ISO strings in one canonical form,
    "YYYY-MM-DD HH:MM:SS.ffffff" (always 6 fractional digits, space separator).
    Readers return datetime objects; expected JSON holds strings such as
    "2026-01-01 00:00:00", "2026-01-01T00:00:00" or "2026-01-02 03:04:05.5".
    Any string that looks like a timestamp (on either side) is put into the
    canonical form, so a TEXT value that happens to be timestamp-shaped is
    normalized the same way -- harmless, since both sides get it.
    Timezone-aware values (timestamptz columns) are converted to UTC and get a
    "+00:00" suffix; naive ones (timestamp_ntz, what runbase writes for
    TIMESTAMP) get none, so the two never compare equal by accident.
  * Dates become "YYYY-MM-DD"; Decimals become floats; bytes become hex.

Output: one line per reader and version,
  ok reader=deltalake version=2 rows=3 secs=0.012
  ok reader=deltalake version=latest rows=3 secs=0.010
and on a mismatch a FAIL line followed by the diff. Exit status: 0 when every
check passed, 1 when any check failed (or a reader raised), 2 on bad usage.
"""

import argparse
import collections
import datetime as dt
import decimal
import json
import math
import os
import re
import sys
import time
import urllib.parse

ALL_READERS = ["deltalake", "polars", "duckdb", "pysail"]


# --------------------------------------------------------------------------
# Value normalization
# --------------------------------------------------------------------------

_TS_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?$"
)


def _canon_datetime(value):
    """A datetime as 'YYYY-MM-DD HH:MM:SS.ffffff' (+ '+00:00' when aware)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="microseconds") + "+00:00"
    return value.isoformat(sep=" ", timespec="microseconds")


def _canon_ts_string(text):
    """Parse a timestamp-shaped string and return its canonical form."""
    s = text.replace("T", " ", 1)
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    # datetime.fromisoformat (3.11) takes at most 6 fractional digits.
    m = re.match(r"^(.*\.\d{6})\d+(.*)$", s)
    if m:
        s = m.group(1) + m.group(2)
    return _canon_datetime(dt.datetime.fromisoformat(s))


def canon(value):
    """Map one cell to a tagged, totally ordered, comparable tuple."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return (3, "NaN")
        return (2, value)
    if isinstance(value, dt.datetime):
        return (4, _canon_datetime(value))
    if isinstance(value, dt.date):
        return (4, value.isoformat())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return (4, bytes(value).hex())
    if isinstance(value, str):
        if _TS_RE.match(value):
            try:
                return (4, _canon_ts_string(value))
            except ValueError:
                pass
        return (4, value)
    # Anything else (lists, structs, ...) by its repr; not used by runbase yet.
    return (5, repr(value))


def show(tagged):
    """Back from a tagged cell to a readable value (for diffs)."""
    if tagged[0] == 0:
        return None
    return tagged[1]


def canon_rows(rows):
    return sorted(tuple(canon(v) for v in row) for row in rows)


# --------------------------------------------------------------------------
# Readers. Each returns (column_names, list_of_row_tuples).
# --------------------------------------------------------------------------


def is_s3(uri):
    return uri.startswith(("s3://", "s3a://"))


def local_path(uri):
    """file:///abs/path/ or a relative/absolute path -> absolute local path."""
    if uri.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(uri).path)
    return os.path.abspath(uri)


class S3Config:
    """S3 settings from the environment plus --s3-endpoint."""

    def __init__(self, endpoint):
        # --s3-endpoint, else AWS_ENDPOINT_URL (as runbase itself reads it).
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.key_id = os.environ.get("AWS_ACCESS_KEY_ID", "")
        self.secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        self.region = os.environ.get("AWS_REGION") or os.environ.get(
            "AWS_DEFAULT_REGION", "us-east-1"
        )

    def storage_options(self):
        """object_store options for deltalake and polars (both use delta-rs)."""
        opts = {
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_REGION": self.region,
        }
        if os.environ.get("AWS_SESSION_TOKEN"):
            opts["AWS_SESSION_TOKEN"] = os.environ["AWS_SESSION_TOKEN"]
        if self.endpoint:
            opts["AWS_ENDPOINT_URL"] = self.endpoint
            opts["AWS_ALLOW_HTTP"] = "true"
            # delta-rs switches to path-style when an endpoint is set; say so
            # anyway, moto/MinIO want it.
            opts["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
        return opts


class DeltalakeReader:
    name = "deltalake"

    def __init__(self, uri, s3):
        self.uri = uri if is_s3(uri) else local_path(uri)
        self.opts = s3.storage_options() if is_s3(uri) else None

    def read(self, version):
        from deltalake import DeltaTable

        table = DeltaTable(self.uri, version=version, storage_options=self.opts)
        self.last_version = table.version()
        data = table.to_pyarrow_table()
        return data.column_names, [tuple(r.values()) for r in data.to_pylist()]

    def close(self):
        pass


class PolarsReader:
    name = "polars"

    def __init__(self, uri, s3):
        self.uri = uri if is_s3(uri) else local_path(uri)
        self.opts = s3.storage_options() if is_s3(uri) else None

    def read(self, version):
        import polars as pl

        df = pl.read_delta(self.uri, version=version, storage_options=self.opts)
        return df.columns, df.rows()

    def close(self):
        pass


def _wheel_extension(module_name, ext_name):
    """Path of a DuckDB extension shipped inside a duckdb-extension-* wheel."""
    import duckdb
    import importlib

    mod = importlib.import_module(module_name)
    path = os.path.join(
        os.path.dirname(mod.__file__),
        "extensions",
        "v" + duckdb.__version__,
        ext_name + ".duckdb_extension",
    )
    if not os.path.exists(path):
        raise RuntimeError(
            f"{path} missing: install {module_name.replace('_', '-')}=={duckdb.__version__}"
        )
    return path


class DuckdbReader:
    name = "duckdb"

    def __init__(self, uri, s3):
        import duckdb

        # Never reach out to extensions.duckdb.org: everything is LOADed from
        # the wheel files. The wheel-shipped extensions are signed, so
        # allow_unsigned_extensions is not needed.
        self.con = duckdb.connect(
            config={
                "autoinstall_known_extensions": "false",
                "autoload_known_extensions": "false",
            }
        )
        if is_s3(uri):
            self.uri = uri
            self.con.execute(
                "LOAD '%s'" % _wheel_extension("duckdb_extension_httpfs", "httpfs")
            )
        else:
            self.uri = local_path(uri)
        self.con.execute(
            "LOAD '%s'" % _wheel_extension("duckdb_extension_delta", "delta")
        )
        if is_s3(uri):
            parts = [
                "TYPE s3",
                "KEY_ID " + _sql_str(s3.key_id),
                "SECRET " + _sql_str(s3.secret),
                "REGION " + _sql_str(s3.region),
            ]
            if os.environ.get("AWS_SESSION_TOKEN"):
                parts.append("SESSION_TOKEN " + _sql_str(os.environ["AWS_SESSION_TOKEN"]))
            if s3.endpoint:
                u = urllib.parse.urlparse(s3.endpoint)
                # ENDPOINT is host:port without a scheme; the scheme decides SSL.
                parts += [
                    "ENDPOINT " + _sql_str(u.netloc),
                    "URL_STYLE 'path'",
                    "USE_SSL " + ("true" if u.scheme == "https" else "false"),
                ]
            # CREATE SECRET takes no prepared parameters, hence quoted literals.
            sql = "CREATE SECRET runbase_interop (" + ", ".join(parts) + ")"
            self.con.execute(sql)

    def read(self, version):
        sql = "SELECT * FROM delta_scan(%s" % _sql_str(self.uri)
        if version is not None:
            sql += ", version => %d" % int(version)
        sql += ")"
        cur = self.con.execute(sql)
        cols = [d[0] for d in cur.description]
        return cols, cur.fetchall()

    def close(self):
        self.con.close()


def _sql_str(s):
    return "'" + str(s).replace("'", "''") + "'"


class PysailReader:
    name = "pysail"

    def __init__(self, uri, s3):
        # The Sail server runs in this process and builds its S3 object store
        # from the environment (object_store's AmazonS3Builder::from_env plus
        # the AWS SDK credential chain), so configure it through os.environ
        # before the server starts. AWS_ALLOW_HTTP is required for an http://
        # endpoint (without it every request fails with "HTTP error: builder
        # error").
        os.environ.setdefault("RUST_LOG", "error")  # Sail logs INFO/WARN to stderr
        if is_s3(uri):
            os.environ.setdefault("AWS_REGION", s3.region)
            if s3.endpoint:
                os.environ["AWS_ENDPOINT_URL"] = s3.endpoint
                os.environ["AWS_ALLOW_HTTP"] = "true"
                os.environ["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
            self.uri = uri
        else:
            self.uri = "file://" + urllib.parse.quote(local_path(uri))

        try:
            from pysail.spark import SparkConnectServer
            from pyspark.sql import SparkSession
        except ImportError as e:
            raise RuntimeError(
                f"{e}; pysail needs a Spark Connect client: "
                "pip install 'pysail==0.7.*' 'pyspark-client==4.2.0'"
            ) from e

        t0 = time.monotonic()
        self.server = SparkConnectServer("127.0.0.1", 0)
        self.server.start(background=True)
        host, port = self.server.listening_address
        self.spark = SparkSession.builder.remote(f"sc://{host}:{port}").getOrCreate()
        self.startup_secs = time.monotonic() - t0

    def read(self, version):
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", str(int(version)))
        df = reader.load(self.uri)
        # toArrow() keeps timestamps as Arrow values (naive for timestamp_ntz,
        # UTC for timestamptz) instead of pyspark's local-time conversion.
        data = df.toArrow()
        return data.column_names, [tuple(r.values()) for r in data.to_pylist()]

    def close(self):
        try:
            self.spark.stop()
        finally:
            self.server.stop()


READER_CLASSES = {
    c.name: c for c in (DeltalakeReader, PolarsReader, DuckdbReader, PysailReader)
}


# --------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------


def diff(expected_cols, expected_rows, cols, rows):
    """Human-readable differences, or [] when equal."""
    out = []
    if list(cols) != list(expected_cols):
        out.append(f"  columns: expected {list(expected_cols)}, got {list(cols)}")
    exp = collections.Counter(canon_rows(expected_rows))
    got = collections.Counter(canon_rows(rows))
    if exp != got:
        out.append(f"  rows: expected {sum(exp.values())}, got {sum(got.values())}")
        for row in sorted((exp - got).elements()):
            out.append("  - missing   " + json.dumps([show(v) for v in row]))
        for row in sorted((got - exp).elements()):
            out.append("  + unexpected " + json.dumps([show(v) for v in row]))
    return out


def load_expect(path):
    with open(path) as f:
        spec = json.load(f)
    default_cols = spec.get("columns")
    snaps = {}
    if "latest" in spec:
        snaps[None] = spec["latest"]
    for key, snap in spec.get("versions", {}).items():
        snaps[int(key)] = snap
    for key, snap in snaps.items():
        snap.setdefault("columns", default_cols)
        if snap["columns"] is None or "rows" not in snap:
            raise ValueError(f"expected snapshot {key}: needs 'rows' and 'columns'")
    return spec, snaps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uri", required=True, help="table location")
    ap.add_argument("--expect", required=True, help="JSON file with expected contents")
    ap.add_argument(
        "--version",
        type=int,
        nargs="+",
        action="extend",
        default=None,
        help="versions to check (default: all in the expect file's 'versions')",
    )
    ap.add_argument("--s3-endpoint", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    ap.add_argument(
        "--readers",
        default=",".join(ALL_READERS),
        help="comma-separated subset of " + ",".join(ALL_READERS),
    )
    args = ap.parse_args()

    try:
        spec, snaps = load_expect(args.expect)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot use --expect {args.expect}: {e}", file=sys.stderr)
        return 2
    readers = [r.strip() for r in args.readers.split(",") if r.strip()]
    unknown = [r for r in readers if r not in READER_CLASSES]
    if unknown:
        print(f"error: unknown readers {unknown}", file=sys.stderr)
        return 2
    if args.version is None:
        versions = sorted(k for k in snaps if k is not None)
    else:
        versions = args.version
        missing = [v for v in versions if v not in snaps]
        if missing:
            print(f"error: versions {missing} not in {args.expect}", file=sys.stderr)
            return 2
    checks = ([None] if None in snaps else []) + versions
    expected_latest = spec.get("latest", {}).get("version")

    s3 = S3Config(args.s3_endpoint)
    failures = 0
    passes = 0
    t_all = time.monotonic()
    for name in readers:
        t0 = time.monotonic()
        try:
            reader = READER_CLASSES[name](args.uri, s3)
        except Exception as e:  # a reader that cannot start fails every check
            print(f"FAIL reader={name} setup error: {type(e).__name__}: {e}")
            failures += len(checks)
            continue
        if hasattr(reader, "startup_secs"):
            print(f"info reader={name} startup_secs={reader.startup_secs:.3f}")
        try:
            for version in checks:
                label = "latest" if version is None else str(version)
                snap = snaps[version]
                t1 = time.monotonic()
                try:
                    cols, rows = reader.read(version)
                except Exception as e:
                    print(
                        f"FAIL reader={name} version={label} error: "
                        f"{type(e).__name__}: {str(e).strip()[:2000]}"
                    )
                    failures += 1
                    continue
                secs = time.monotonic() - t1
                problems = diff(snap["columns"], snap["rows"], cols, rows)
                # The latest read must also be at the expected version number;
                # only deltalake reports it.
                if (
                    version is None
                    and expected_latest is not None
                    and getattr(reader, "last_version", expected_latest) != expected_latest
                ):
                    problems.insert(
                        0,
                        f"  latest version: expected {expected_latest}, "
                        f"got {reader.last_version}",
                    )
                if problems:
                    print(f"FAIL reader={name} version={label} rows={len(rows)}")
                    print("\n".join(problems))
                    failures += 1
                else:
                    print(f"ok reader={name} version={label} rows={len(rows)} secs={secs:.3f}")
                    passes += 1
        finally:
            try:
                reader.close()
            except Exception:
                pass
        print(f"info reader={name} total_secs={time.monotonic() - t0:.3f}")

    status = "FAILED" if failures else "OK"
    print(
        f"{status}: {passes} ok, {failures} failed, readers={','.join(readers)}, "
        f"secs={time.monotonic() - t_all:.2f}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
