#!/usr/bin/env python3
"""Summarises a sqlsmith run from the proxy's queries.jsonl: the generated queries (sqlsmith's
catalog reads and session settings left out), how many ran, and the errors by SQLSTATE and
message shape.

Usage: summarize.py queries.jsonl
"""
import collections
import json
import re
import sys

SCHEMA_PHASE = (
    "select version()",
    "show server_version_num",
    "select case typnamespace",
    "select table_name, table_schema",
    "select attname, atttypid",
    "select conname from pg_class",
    "select oprname",
    "select (select nspname from pg_namespace",
    "select unnest(proargtypes)",
    "set ",
    "begin",
    "rollback",
)


def shape(message):
    """The message with names and numbers taken out, so like errors group together."""
    message = re.sub(r'"[^"]*"', '"X"', message)
    message = re.sub(r"function \S+ does not exist", "function X does not exist", message)
    message = re.sub(r"Unsupported SQL type .*", "Unsupported SQL type X", message)
    message = re.sub(r"found: .*", "found: X", message)
    message = re.sub(r"\d+", "N", message)
    return message[:110]


rows = [json.loads(line) for line in open(sys.argv[1])]
generated = [r for r in rows if not r["q"].strip().lower().startswith(SCHEMA_PHASE)]
ok = sum(1 for r in generated if not r["err"])
print(f"generated queries: {len(generated)}, ran: {ok}, slower than 1 s: "
      f"{sum(1 for r in generated if r['secs'] > 1)}")
counts = collections.Counter()
for r in generated:
    if r["err"]:
        counts[(r["err"].get("C"), shape(r["err"].get("M", "")))] += 1
for (code, message), n in counts.most_common(40):
    print(n, code, message)
