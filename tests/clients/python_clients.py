"""The client matrix, Python side: one real driver per run, each with its normal settings.

usage: python_clients.py psycopg|psycopg2|asyncpg|sqlalchemy|pandas|duckdb|pgcli CONNINFO_PORT

Every driver does the same checklist against a running runbase (the Rust test starts it):
create and fill a table with parameterized inserts (the extended protocol), read it back
with the right Python types (bool, int2/4/8, float4/8, numeric, text, date, timestamp,
timestamptz, bytea, float8[], and a row of NULLs), use a prepared statement twice, COPY
FROM STDIN and TO STDOUT where the driver has COPY, get the right SQLSTATE for an error,
and read the runbase system tables. Prints "ok <driver>" at the end; any failure raises.
"""

import asyncio
import datetime
import decimal
import io
import sys

DRIVER = sys.argv[1]
PORT = int(sys.argv[2])
TABLE = f"matrix_{DRIVER}"
UTC = datetime.timezone.utc

COLUMNS = (
    "b boolean, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision, "
    "n numeric(10,2), s text, d date, ts timestamp, tz timestamptz, by bytea, arr float8[]"
)
ROW = (
    True,
    -2,
    40_000,
    2**40,
    1.5,
    2.25,
    decimal.Decimal("12.34"),
    "héllo, 'world'",
    datetime.date(2024, 2, 29),
    datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
    datetime.datetime(2024, 2, 29, 13, 14, 15, 654321, tzinfo=UTC),
    b"\x00\x01\xff",
    [1.0, -2.5, 3.25],
)
NULLS = (None,) * len(ROW)
COPY_TEXT = "7\tseven\n8\t\\N\n"


def check_row(got, want=ROW):
    got = tuple(got)
    assert len(got) == len(want), (got, want)
    for g, w, name in zip(got, want, [c.split()[0] for c in COLUMNS.split(", ")], strict=False):
        if isinstance(w, datetime.datetime) and w.tzinfo is not None:
            assert g is not None and g.tzinfo is not None, (name, g)
            assert g.astimezone(UTC) == w, (name, g, w)
        elif isinstance(w, bytes):
            assert bytes(g) == w, (name, g, w)
        elif isinstance(w, list):
            assert list(g) == w, (name, g, w)
        else:
            assert g == w and type(g) is type(w), (name, g, type(g), w, type(w))


def expect_sqlstate(code, fn):
    try:
        fn()
    except Exception as e:  # each driver has its own error class; all carry the SQLSTATE
        got = (
            getattr(e, "sqlstate", None)
            or getattr(e, "pgcode", None)
            or getattr(getattr(e, "orig", None), "sqlstate", None)
            or getattr(getattr(e, "orig", None), "pgcode", None)
        )
        assert got == code, (code, got, e)
        return
    raise AssertionError(f"expected SQLSTATE {code}")


def fill_and_read_back(conn, cur):
    """The table part of the checklist through a DB-API connection (psycopg, psycopg2):
    create, two parameterized inserts (every type, then NULLs), commit, read back."""
    cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
    cur.execute(f"CREATE TABLE {TABLE} ({COLUMNS})")
    placeholders = ", ".join(["%s"] * len(ROW))
    cur.execute(f"INSERT INTO {TABLE} VALUES ({placeholders})", ROW)
    cur.execute(f"INSERT INTO {TABLE} VALUES ({placeholders})", NULLS)
    conn.commit()
    cur.execute(f"SELECT * FROM {TABLE} ORDER BY i4 NULLS LAST")
    rows = cur.fetchall()
    check_row(rows[0])
    assert rows[1] == NULLS, rows[1]


def psycopg3():
    import psycopg

    # Normal settings: autocommit off, so the driver wraps statements in BEGIN ... COMMIT.
    conn = psycopg.connect(f"host=127.0.0.1 port={PORT} user=matrix dbname=runbase")
    cur = conn.cursor()
    fill_and_read_back(conn, cur)
    # Prepared server-side and used twice (prepare=True forces it on the first use).
    for want in (1, 2):
        cur.execute("SELECT %s::bigint + 0", (want,), prepare=True)
        assert cur.fetchone()[0] == want
    cur.execute(f"DROP TABLE IF EXISTS {TABLE}_copy")
    cur.execute(f"CREATE TABLE {TABLE}_copy (id bigint, name text)")
    with cur.copy(f"COPY {TABLE}_copy FROM STDIN") as copy:
        copy.write(COPY_TEXT)
    conn.commit()
    out = io.StringIO()
    with cur.copy(f"COPY (SELECT * FROM {TABLE}_copy ORDER BY id) TO STDOUT") as copy:
        for data in copy:
            out.write(bytes(data).decode())
    assert out.getvalue() == COPY_TEXT, out.getvalue()
    expect_sqlstate("42P01", lambda: cur.execute("SELECT * FROM no_such_table"))
    conn.rollback()
    cur.execute("SELECT count(*) FROM runbase.experiments")
    assert cur.fetchone()[0] >= 0
    conn.close()


def psycopg2_():
    import psycopg2
    import psycopg2.extras

    conn = psycopg2.connect(host="127.0.0.1", port=PORT, user="matrix", dbname="runbase")
    cur = conn.cursor()
    fill_and_read_back(conn, cur)
    # psycopg2 interpolates on the client; PREPARE/EXECUTE is its way to prepare.
    cur.execute("PREPARE twice AS SELECT $1::bigint * 2")
    for v in (3, 4):
        cur.execute("EXECUTE twice (%s)", (v,))
        assert cur.fetchone()[0] == v * 2
    cur.execute(f"DROP TABLE IF EXISTS {TABLE}_copy")
    cur.execute(f"CREATE TABLE {TABLE}_copy (id bigint, name text)")
    cur.copy_expert(f"COPY {TABLE}_copy FROM STDIN", io.StringIO(COPY_TEXT))
    conn.commit()
    out = io.StringIO()
    cur.copy_expert(f"COPY (SELECT * FROM {TABLE}_copy ORDER BY id) TO STDOUT", out)
    assert out.getvalue() == COPY_TEXT, out.getvalue()
    expect_sqlstate("42P01", lambda: cur.execute("SELECT * FROM no_such_table"))
    conn.rollback()
    cur.execute("SELECT name FROM runbase.experiments")
    cur.fetchall()
    conn.close()


def asyncpg_():
    import asyncpg

    async def main():
        conn = await asyncpg.connect(
            host="127.0.0.1", port=PORT, user="matrix", database="runbase"
        )
        # asyncpg decodes arrays other than text[]/oid[] only after looking their types
        # up with its pg_type introspection query (a recursive CTE, $1::oid[], and
        # array_agg of oids): float8[] here exercises that query.
        await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await conn.execute(f"CREATE TABLE {TABLE} ({COLUMNS})")
        placeholders = ", ".join(f"${i + 1}" for i in range(len(ROW)))
        insert = f"INSERT INTO {TABLE} VALUES ({placeholders})"
        await conn.execute(insert, *ROW)
        await conn.execute(insert, *NULLS)
        rows = await conn.fetch(f"SELECT * FROM {TABLE} ORDER BY i4 NULLS LAST")
        check_row(rows[0])
        assert tuple(rows[1]) == NULLS, rows[1]
        ints = await conn.fetchval("SELECT $1::bigint[]", [1, None, 3])
        assert ints == [1, None, 3], ints
        stmt = await conn.prepare("SELECT $1::bigint + 1")
        assert await stmt.fetchval(1) == 2
        assert await stmt.fetchval(41) == 42
        await conn.execute(f"DROP TABLE IF EXISTS {TABLE}_copy")
        await conn.execute(f"CREATE TABLE {TABLE}_copy (id bigint, name text)")
        await conn.copy_to_table(
            f"{TABLE}_copy", source=io.BytesIO(COPY_TEXT.encode()), format="text"
        )
        out = io.BytesIO()
        await conn.copy_from_query(f"SELECT * FROM {TABLE}_copy ORDER BY id", output=out)
        assert out.getvalue().decode() == COPY_TEXT, out.getvalue()
        # Binary COPY: copy_records_to_table (every type, NULLs), then a binary copy out
        # fed back in.
        await conn.execute(f"DROP TABLE IF EXISTS {TABLE}_bin")
        await conn.execute(f"CREATE TABLE {TABLE}_bin ({COLUMNS})")
        status = await conn.copy_records_to_table(f"{TABLE}_bin", records=[ROW, NULLS])
        assert status == "COPY 2", status
        rows = await conn.fetch(f"SELECT * FROM {TABLE}_bin ORDER BY i4 NULLS LAST")
        check_row(rows[0])
        assert tuple(rows[1]) == NULLS, rows[1]
        binary = io.BytesIO()
        await conn.copy_from_table(f"{TABLE}_bin", output=binary, format="binary")
        assert binary.getvalue().startswith(b"PGCOPY\n\xff\r\n\0"), binary.getvalue()[:20]
        binary.seek(0)
        await conn.copy_to_table(f"{TABLE}_bin", source=binary, format="binary")
        rows = await conn.fetch(f"SELECT * FROM {TABLE}_bin ORDER BY i4 NULLS LAST")
        assert len(rows) == 4, rows
        check_row(rows[1])
        try:
            await conn.fetch("SELECT * FROM no_such_table")
            raise AssertionError("expected 42P01")
        except asyncpg.PostgresError as e:
            assert e.sqlstate == "42P01", e.sqlstate
        async with conn.transaction():
            await conn.fetch("SELECT * FROM runbase.runs")
        await conn.close()

    asyncio.run(main())


def sqlalchemy_():
    import sqlalchemy as sa

    for url in (
        f"postgresql+psycopg://matrix@127.0.0.1:{PORT}/runbase",
        f"postgresql+psycopg2://matrix@127.0.0.1:{PORT}/runbase",
    ):
        engine = sa.create_engine(url)
        meta = sa.MetaData()
        table = sa.Table(
            TABLE,
            meta,
            sa.Column("id", sa.BigInteger),
            sa.Column("name", sa.Text),
            sa.Column("score", sa.Float),
            sa.Column("at", sa.DateTime(timezone=True)),
        )
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {TABLE}"))
        meta.create_all(engine)
        at = datetime.datetime(2024, 1, 1, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(
                table.insert(),
                [
                    {"id": 1, "name": "a", "score": 0.5, "at": at},
                    {"id": 2, "name": None, "score": None, "at": None},
                ],
            )
        inspector = sa.inspect(engine)
        assert TABLE in inspector.get_table_names(), inspector.get_table_names()
        assert "runbase" in inspector.get_schema_names(), inspector.get_schema_names()
        cols = {c["name"]: c["type"] for c in inspector.get_columns(TABLE)}
        assert list(cols) == ["id", "name", "score", "at"], cols
        assert isinstance(cols["id"], sa.BigInteger), cols
        assert isinstance(cols["at"], sa.DateTime) and cols["at"].timezone, cols
        runs = {c["name"] for c in inspector.get_columns("runs", schema="runbase")}
        assert {"run_id", "status"} <= runs, runs
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(table.c.id, table.c.name).where(table.c.id >= 1).order_by(table.c.id)
            ).all()
            assert [tuple(r) for r in rows] == [(1, "a"), (2, None)], rows
            got = conn.execute(sa.select(table.c.at).where(table.c.id == 1)).scalar_one()
            assert got == at, got
            try:
                conn.execute(sa.text("SELECT * FROM no_such_table"))
                raise AssertionError("expected 42P01")
            except sa.exc.ProgrammingError as e:
                code = getattr(e.orig, "sqlstate", None) or getattr(e.orig, "pgcode", None)
                assert code == "42P01", code
        engine.dispose()


def pandas_():
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(f"postgresql+psycopg2://matrix@127.0.0.1:{PORT}/runbase")
    df = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "name": ["a", None, "c"],
            "score": [0.5, None, 2.0],
            "ok": [True, False, True],
            "at": pd.to_datetime(["2024-01-01", "2024-01-02", None], utc=True),
        }
    )
    df.to_sql(TABLE, engine, index=False, if_exists="replace")
    # A second to_sql with if_exists="append" goes through has_table (pg_catalog).
    df.to_sql(TABLE, engine, index=False, if_exists="append")
    back = pd.read_sql(f"SELECT * FROM {TABLE} ORDER BY id", engine)
    assert len(back) == 6, back
    assert list(back.columns) == ["id", "name", "score", "ok", "at"], back.columns
    assert back["id"].tolist() == [1, 1, 2, 2, 3, 3], back
    assert back["name"].isna().sum() == 2 and back["score"].isna().sum() == 2, back
    assert str(back["at"].dtype).startswith("datetime64") and back["at"].dt.tz is not None, back.dtypes
    metrics = pd.read_sql("SELECT * FROM runbase.metrics LIMIT 5", engine)
    assert "value" in metrics.columns
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=PORT, user="matrix", dbname="runbase")
    through_dbapi = pd.read_sql("SELECT id, score FROM " + TABLE + " WHERE id = %(id)s", conn, params={"id": 3})
    assert through_dbapi["score"].tolist() == [2.0, 2.0], through_dbapi
    conn.close()
    engine.dispose()


def duckdb_():
    """DuckDB's postgres extension (from its PyPI wheel, loaded offline) attaching runbase."""
    import glob
    import os

    import duckdb
    import duckdb_extension_postgres_scanner as ext
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=PORT, user="matrix", dbname="runbase", autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id bigint, name text, score double precision)")
        conn.execute(f"INSERT INTO {TABLE} VALUES (1, 'a', 0.5), (2, NULL, 1.5)")
        run = conn.execute("SELECT start_run('duck', 'r1')").fetchone()[0]
        conn.execute("SELECT log_metric(%s, 'loss', 0.25, 0)", (run,))
    path = glob.glob(os.path.join(os.path.dirname(ext.__file__), "extensions", "**", "*.duckdb_extension"), recursive=True)[0]
    con = duckdb.connect()
    con.execute(f"LOAD '{path}'")
    # runbase has no ctid: DuckDB's parallel scan by ctid ranges is turned off.
    con.execute("SET pg_use_ctid_scan = false")
    con.execute(f"ATTACH 'host=127.0.0.1 port={PORT} user=matrix dbname=runbase' AS rb (TYPE postgres, READ_ONLY)")
    rows = con.execute(f"SELECT id, name, score FROM rb.public.{TABLE} ORDER BY id").fetchall()
    assert rows == [(1, "a", 0.5), (2, None, 1.5)], rows
    metrics = con.execute("SELECT key, value FROM rb.runbase.metrics WHERE run_id = ?", [str(run)]).fetchall()
    assert metrics == [("loss", 0.25)], metrics
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'rb'").fetchall()}
    assert TABLE in tables and "runs" in tables, tables


def pgcli_():
    """pgcli (newest venv only): starts, loads its completions, completes table and column
    names, and runs a query."""
    import os
    import subprocess
    import tempfile

    import psycopg
    from pgcli.completion_refresher import CompletionRefresher
    from pgcli.pgcompleter import PGCompleter
    from pgcli.pgexecute import PGExecute
    from prompt_toolkit.document import Document

    with psycopg.connect(host="127.0.0.1", port=PORT, user="matrix", dbname="runbase", autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id bigint, label text)")
        conn.execute(f"INSERT INTO {TABLE} VALUES (7, 'seven')")

    # The command line as a user runs it (its config goes to a throwaway HOME). On start-up
    # it sets the session's time zone (`SET TIME ZONE "Etc/UTC"`) and reads the catalog.
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=home, PAGER="cat")
        pgcli = os.path.join(os.path.dirname(sys.executable), "pgcli")
        out = subprocess.run(
            [pgcli, "-h", "127.0.0.1", "-p", str(PORT), "-U", "matrix", "-w", "runbase",
             "--less-chatty", "-c", f"SELECT id, label FROM {TABLE}"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
        assert "seven" in out.stdout and "SELECT 1" in out.stdout, out.stdout

    # Completion: every metadata query pgcli refreshes with must run (a failing one leaves
    # its completions empty without a word), then names complete.
    executor = PGExecute(database="runbase", user="matrix", password=None, host="127.0.0.1", port=PORT, dsn=None)
    completer = PGCompleter(smart_completion=True)
    for name, refresh in CompletionRefresher.refreshers.items():
        try:
            refresh(completer, executor)
        except Exception as e:  # noqa: BLE001 (report which one)
            raise AssertionError(f"pgcli's {name} refresher failed: {e}") from e

    def complete(text):
        return [c.text for c in completer.get_completions(Document(text, len(text)), None)]

    assert TABLE in complete("SELECT * FROM matrix_pg"), complete("SELECT * FROM matrix_pg")
    assert "metrics" in complete("SELECT * FROM runbase."), complete("SELECT * FROM runbase.")
    assert "label" in complete(f"SELECT * FROM {TABLE} WHERE "), complete(f"SELECT * FROM {TABLE} WHERE ")
    assert any(f.lower().startswith("log_metric(") for f in complete("SELECT log_m")), complete("SELECT log_m")


DRIVERS = {
    "pgcli": pgcli_,
    "duckdb": duckdb_,
    "psycopg": psycopg3,
    "psycopg2": psycopg2_,
    "asyncpg": asyncpg_,
    "sqlalchemy": sqlalchemy_,
    "pandas": pandas_,
}

if __name__ == "__main__":
    DRIVERS[DRIVER]()
    print(f"ok {DRIVER}")
