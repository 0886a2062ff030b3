#!/usr/bin/env python3
"""Summarises a sqlsmith run: the queries.jsonl the proxy wrote, by SQLSTATE and message."""
import json, re, collections, sys
rows=[json.loads(l) for l in open(sys.argv[1])]
# drop schema-phase queries
def schema(q):
    s=q.strip().lower()
    return s.startswith(("select cast(x as int) from (select unnest","select coalesce(n.nspname","select case when t.typnamespace","select table_name, table_schema","select attname, atttypid","select conname from pg_class","select oprname","select version()","show server_version_num")) or s.startswith("set ")
d=[r for r in rows if not schema(r["q"])]
print("dut queries:", len(d), "ok:", sum(1 for r in d if not r["err"]), "slow>1s:", sum(1 for r in d if r["secs"]>1))
def cls(m):
    m=re.sub(r'"[^"]*"','"X"',m)
    m=re.sub(r"function \S+ does not exist","function X does not exist",m)
    m=re.sub(r"Unsupported SQL type .*","Unsupported SQL type X",m)
    m=re.sub(r"found: .*","found: X",m)
    m=re.sub(r"\d+","N",m)
    return m[:110]
c=collections.Counter(); st=collections.Counter(); ex={}
for r in d:
    if r["err"]:
        k=(r["err"].get("C"), cls(r["err"].get("M","")))
        c[k]+=1; ex.setdefault(k, r["q"])
for k,v in c.most_common(40): print(v, k[0], k[1])
