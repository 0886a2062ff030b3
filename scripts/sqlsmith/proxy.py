#!/usr/bin/env python3
"""A PostgreSQL wire proxy for sqlsmith runs (scripts/sqlsmith.sh).

sqlsmith reads the catalog with queries runbase cannot answer yet (docs/reliability.md:
information_schema.tables.is_insertable_into, a correlated select-list subquery over pg_proc,
unnest of proargtypes, an oidvector). This proxy rewrites those, and only those, into
equivalent queries runbase answers;
every generated query passes through unchanged and is logged with its outcome to
$SQLSMITH_LOG (JSON lines: query, seconds, error fields). Usage:
  proxy.py LISTEN_PORT UPSTREAM_PORT [--drop-void]
"""
import asyncio, re, struct, sys

LPORT, UPORT = int(sys.argv[1]), int(sys.argv[2])
DROP_VOID = "--drop-void" in sys.argv
import os
OUT = os.environ.get("SQLSMITH_OUT", ".")
LOG = open(os.path.join(OUT, "proxy.log"), "a")

TABLES_PREFIX = "select table_name, table_schema, is_insertable_into, table_type from information_schema.tables"
TABLES_NEW = ("select table_name, table_schema, case when table_type = 'BASE TABLE' then 'YES' else 'NO' end, "
              "table_type from information_schema.tables")
PROC_OLD = "select (select nspname from pg_namespace where oid = pronamespace), oid, prorettype, proname from pg_proc where"
PROC_NEW = ("select coalesce(n.nspname, 'information_schema'), p.oid, p.prorettype, p.proname from pg_proc p "
            "left join pg_namespace n on n.oid = p.pronamespace where")
ARGS_RE = re.compile(r"^select unnest\(proargtypes\) from pg_proc\s+where oid = '(\d+)'$")


def rewrite(q: str) -> str:
    s = q.strip()
    if s.startswith(TABLES_PREFIX):
        return TABLES_NEW
    if s.startswith(PROC_OLD):
        out = PROC_NEW + s[len(PROC_OLD):]
        if DROP_VOID:
            out += " and p.prorettype <> 0"
        return out
    m = ARGS_RE.match(s)
    if m:
        return ("select cast(x as int) from (select unnest(string_to_array(proargtypes, ' ')) as x "
                f"from pg_proc where oid = {m.group(1)}) s where x <> ''")
    return q


QLOG = open(os.path.join(OUT, "queries.jsonl"), "a")
import json, time


async def pipe_client(reader, writer, state):
    # startup message: untyped
    hdr = await reader.readexactly(4)
    (n,) = struct.unpack("!I", hdr)
    writer.write(hdr + await reader.readexactly(n - 4))
    await writer.drain()
    while True:
        t = await reader.readexactly(1)
        hdr = await reader.readexactly(4)
        (n,) = struct.unpack("!I", hdr)
        body = await reader.readexactly(n - 4)
        if t == b"Q":
            q = body[:-1].decode()
            nq = rewrite(q)
            if nq != q:
                LOG.write(f"REWROTE: {q[:80]}\n")
                LOG.flush()
            state["q"] = nq
            state["t"] = time.time()
            body = nq.encode() + b"\0"
            hdr = struct.pack("!I", len(body) + 4)
        writer.write(t + hdr + body)
        await writer.drain()


async def pipe_server(reader, writer, state):
    first = True
    while True:
        if first:
            # possible single-byte answer to SSLRequest is not expected (sslmode=disable)
            first = False
        t = await reader.readexactly(1)
        hdr = await reader.readexactly(4)
        (n,) = struct.unpack("!I", hdr)
        body = await reader.readexactly(n - 4)
        if t in (b"E", b"Z"):
            if t == b"E":
                fields = {}
                for part in body.split(b"\0"):
                    if part:
                        fields[chr(part[0])] = part[1:].decode(errors="replace")
                state.setdefault("errs", []).append(fields)
            else:
                q = state.get("q")
                if q and q.strip() not in ("ROLLBACK;", "BEGIN;"):
                    errs = state.get("errs", [])
                    QLOG.write(json.dumps({"q": q, "secs": round(time.time() - state.get("t", 0), 3),
                                           "err": errs[0] if errs else None}) + "\n")
                    QLOG.flush()
                state["errs"] = []
                state["q"] = None
        writer.write(t + hdr + body)
        await writer.drain()


async def handle(creader, cwriter):
    sreader, swriter = await asyncio.open_connection("127.0.0.1", UPORT)
    state = {}
    t1 = asyncio.create_task(pipe_client(creader, swriter, state))
    t2 = asyncio.create_task(pipe_server(sreader, cwriter, state))
    await asyncio.wait([t1, t2], return_when=asyncio.FIRST_COMPLETED)
    for t in (t1, t2):
        t.cancel()
    for w in (cwriter, swriter):
        try:
            w.close()
        except Exception:
            pass


async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", LPORT)
    async with srv:
        await srv.serve_forever()

asyncio.run(main())
