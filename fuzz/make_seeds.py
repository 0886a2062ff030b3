#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into fuzz/seeds/<target>/.

Seeds are well-formed inputs (and a few near misses) the fuzzer mutates from; the grown
corpus lives in fuzz/corpus/. Run from anywhere: python3 fuzz/make_seeds.py
"""
import os
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SEEDS = ROOT / "seeds"


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def msg(tag, body):
    return tag + struct.pack("!i", len(body) + 4) + body


def startup(user=b"runbase", extra=b""):
    body = struct.pack("!i", 196608) + b"user\0" + user + b"\0database\0runbase\0" + extra + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def cstr(s):
    return s + b"\0"


# pg_frontend: client byte streams.
q = lambda s: msg(b"Q", cstr(s))
write("pg_frontend", "simple_query", startup() + q(b"SELECT 1") + msg(b"X", b""))
write("pg_frontend", "ssl_then_startup", struct.pack("!ii", 8, 80877103) + startup() + q(b"SELECT 'a'"))
write("pg_frontend", "gss_then_startup", struct.pack("!ii", 8, 80877104) + startup())
write("pg_frontend", "cancel", struct.pack("!iiii", 16, 80877102, 1234, 5678))
parse = msg(b"P", cstr(b"s1") + cstr(b"SELECT $1::int, $2") + struct.pack("!h", 2) + struct.pack("!ii", 23, 25))
bind = msg(
    b"B",
    cstr(b"") + cstr(b"s1") + struct.pack("!hh", 1, 0) + struct.pack("!h", 2)
    + struct.pack("!i", 1) + b"7" + struct.pack("!i", -1) + struct.pack("!hh", 1, 1),
)
extended = parse + bind + msg(b"D", b"P\0") + msg(b"E", cstr(b"") + struct.pack("!i", 0)) + msg(b"S", b"")
write("pg_frontend", "extended", startup() + extended)
write("pg_frontend", "close_flush", startup() + parse + msg(b"C", b"S" + cstr(b"s1")) + msg(b"H", b""))
copy = q(b"COPY t FROM STDIN") + msg(b"d", b"1\tone\n2\ttwo\n") + msg(b"c", b"")
write("pg_frontend", "copy_in", startup() + copy + msg(b"f", cstr(b"client gave up")))
first = b"n,,n=,r=abc"
sasl_initial = msg(b"p", cstr(b"SCRAM-SHA-256") + struct.pack("!i", len(first)) + first)
final = b"c=biws,r=abcdef,p=" + b"A" * 44
write("pg_frontend", "scram", startup() + sasl_initial + msg(b"p", final))
write("pg_frontend", "password", startup() + msg(b"p", cstr(b"secret")))
write("pg_frontend", "bind_short", startup() + msg(b"B", b"\0\0\0\0\0\x05"))

# http: first line METHOD /path, then the body.
ml = "/api/2.0/mlflow"
http = {
    "exp_create": f"POST {ml}/experiments/create\n{{\"name\": \"fuzz\", \"tags\": [{{\"key\": \"k\", \"value\": \"v\"}}]}}",
    "exp_get_by_name": f"GET {ml}/experiments/get-by-name?experiment_name=fuzz\n",
    "exp_search": f"POST {ml}/experiments/search\n{{\"max_results\": 10, \"filter\": \"name LIKE 'f%'\"}}",
    "run_create": f"POST {ml}/runs/create\n{{\"experiment_id\": \"0\", \"run_name\": \"r\", \"start_time\": 1700000000000}}",
    "log_batch": f"POST {ml}/runs/log-batch\n{{\"run_id\": \"00000000-0000-0000-0000-000000000000\", "
    "\"metrics\": [{\"key\": \"loss\", \"value\": 0.5, \"timestamp\": 1, \"step\": 2}], "
    "\"params\": [{\"key\": \"lr\", \"value\": \"0.1\"}], \"tags\": [{\"key\": \"t\", \"value\": \"v\"}]}",
    "log_metric": f"POST {ml}/runs/log-metric\n{{\"run_id\": \"x\", \"key\": \"acc\", \"value\": 1e308, \"timestamp\": 0}}",
    "runs_search": f"POST {ml}/runs/search\n{{\"experiment_ids\": [\"0\"], \"filter\": \"metrics.loss < 1 and params.lr = '0.1'\", "
    "\"order_by\": [\"metrics.loss DESC\"], \"max_results\": 5}",
    "history": f"GET {ml}/metrics/get-history?run_id=x&metric_key=loss\n",
    "registered_create": f"POST {ml}/registered-models/create\n{{\"name\": \"m\"}}",
    "version_create": f"POST {ml}/model-versions/create\n{{\"name\": \"m\", \"source\": \"runs:/x/model\"}}",
    "logged_model": f"POST {ml}/logged-models\n{{\"experiment_id\": \"0\", \"name\": \"lm\"}}",
    "query_get": "GET /api/v1/query?sql=SELECT%201\n",
    "query_post": "POST /api/v1/query\n{\"sql\": \"SELECT name FROM runbase.experiments\", \"limit\": 5}",
    "experiments": "GET /api/v1/experiments\n",
    "runs": "GET /api/v1/experiments/Default/runs?limit=5\n",
    "keys": "GET /api/v1/experiments/Default/keys\n",
    "run": "GET /api/v1/runs/00000000-0000-0000-0000-000000000000\n",
    "metric": "GET /api/v1/runs/x/metric?key=loss&points=100\n",
    "tables": "GET /api/v1/tables\n",
    "models": "GET /api/v1/models\n",
    "jobs": "GET /api/v1/jobs\n",
    "login": "POST /api/v1/login\n{\"user\": \"u\", \"password\": \"p\"}",
    "invocations": "POST /invocations\n{\"dataframe_split\": {\"columns\": [\"a\"], \"data\": [[1.0]]}}",
    "predict": "POST /api/v1/models/m@1/predict\n{\"rows\": [{\"a\": 1}]}",
    "metrics_page": "GET /metrics\n",
    "ready": "GET /ready\n",
    "dashboard": "GET /\n",
}
for name, text in http.items():
    write("http", name, text)

# sql: the bad-input corpus's statements and a few good ones.
tsv = ROOT.parent / "tests" / "bad_input" / "sql.tsv"
n = 0
for line in tsv.read_text().splitlines():
    if line.startswith("#") or "\t" not in line:
        continue
    write("sql", f"corpus_{n:03}", line.split("\t", 1)[1])
    n += 1
for i, s in enumerate([
    "SELECT run_id, key, max(value) FROM runbase.metrics WHERE key = 'loss' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5",
    "WITH r AS (SELECT * FROM runbase.runs) SELECT count(*) FROM r JOIN runbase.experiments e USING (experiment_id)",
    "CREATE TABLE t (a int PRIMARY KEY, b text DEFAULT 'x', c float8[]); INSERT INTO t VALUES (1, 'y', ARRAY[1.5])",
    "COPY t (a, b) FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER ';', NULL 'NA')",
    "CREATE USER alice PASSWORD 'pw' ROLE readonly; ALTER USER alice PASSWORD 'x'; DROP USER alice",
    "VACUUM t; ANALYZE t; CHECKPOINT",
    "SELECT * FROM TRAIN('m', 'SELECT * FROM t', 'label', '{\"epochs\": 3}')",
    "SELECT format('%I.%L %s', 'a', 'b', 3), $1::text, to_char(now(), 'YYYY')",
    "UPDATE t SET b = b || '!' WHERE a IN (SELECT a FROM t WHERE a > 0) RETURNING *",
    "BEGIN; SAVEPOINT s; ROLLBACK TO s; COMMIT; LISTEN c; NOTIFY c, 'x'; SET statement_timeout = '5s'",
]):
    write("sql", f"good_{i:02}", s)

# copy: rows of the fuzz table (13 columns: bool, int2, int4, int8, float4, float8, text,
# date, timestamptz, bytea, text[], int8[], numeric(10,2)); the first byte is the options.
row_text = "t\t1\t2\t3\t1.5\t2.5\thello\\tworld\t2024-01-02\t2024-01-02 03:04:05+00\t\\\\x0102\t{a,\"b c\",NULL}\t{1,2}\t1.25\n"
null_row = "\\N\t\\N\t\\N\t4\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n"
write("copy_text", "rows", b"\x00" + (row_text + null_row + "\\.\n").encode())
write("copy_text", "chunked", b"\xc0" + (row_text * 3).encode())
row_csv = "true,1,2,3,1.5,2.5,\"a,\"\"b\"\"\",2024-01-02,2024-01-02T03:04:05Z,\\x01,\"{a,b}\",\"{1,2}\",1.25\n"
write("copy_csv", "rows", b"\x00" + row_csv.encode() * 2)
write("copy_csv", "header_semicolon", b"\x23" + ("b;i16\n" + row_csv.replace(",", ";")).encode())
write("copy_csv", "null_quote", b"\x14" + b",,,3,,,'x',,,,,,\n")


def binary_copy(rows):
    out = b"PGCOPY\n\xff\r\n\0" + struct.pack("!ii", 0, 0)
    for fields in rows:
        out += struct.pack("!h", len(fields))
        for f in fields:
            out += struct.pack("!i", -1) if f is None else struct.pack("!i", len(f)) + f
    return out + struct.pack("!h", -1)


fields = [b"\x01", struct.pack("!h", 1), struct.pack("!i", 2), struct.pack("!q", 3), struct.pack("!f", 1.5),
          struct.pack("!d", 2.5), b"text", struct.pack("!i", 8767), struct.pack("!q", 757_000_000_000_000),
          b"\x00\xff", None, None, None]
write("copy_binary", "rows", b"\x00" + binary_copy([fields, [None, None, None, struct.pack("!q", 9)] + [None] * 9]))

# text_argument: the first byte picks the parser.
for i, (which, text) in enumerate([
    (0, "churn"), (0, "churn@3"), (0, "churn@champion"), (0, "a@b@c"),
    (1, "diverged\n{\"kind\": \"not_finite\", \"metric\": \"loss\"}"),
    (1, "slow\n{\"kind\": \"plateau\", \"experiment\": \"mnist\", \"metric\": \"val_loss\", \"steps\": 5, \"action\": \"stop\"}"),
    (1, "crashed\n{\"kind\": \"hung\", \"seconds\": 600, \"mark_failed_after\": 300}"),
    (1, "t\n{\"kind\": \"threshold\", \"metric\": \"loss\", \"above\": 10, \"webhook\": \"http://127.0.0.1:1/x\"}"),
    (2, "8f0e4c5e-58d8-4a5b-9b3c-2a1f0e6d7c8b"), (3, "finished"), (4, "step"), (5, "readonly"),
    (6, "5s"), (6, "1.5min"), (6, "250ms"),
]):
    write("text_argument", f"seed_{i:02}", bytes([which]) + text.encode())

# options: TRAIN options (0), import specs (1), devices (2).
for i, (which, text) in enumerate([
    (0, "{\"epochs\": 50}"),
    (0, "{\"epochs\": 5, \"hidden_layers\": [32, 16], \"learning_rate\": 0.01, \"batch_size\": 64, \"seed\": 7, "
        "\"device\": \"cpu\", \"validation\": 0.2, \"early_stopping\": {\"patience\": 3}}"),
    (0, "{\"epochs\": 50, \"search\": {\"space\": {\"learning_rate\": [0.001, 0.01], \"hidden_layers\": [[32], [64, 32]]}}}"),
    (0, "{\"epochs\": 27, \"search\": {\"method\": \"halving\", \"eta\": 3, \"min_epochs\": 1, "
        "\"space\": {\"learning_rate\": [0.0003, 0.003, 0.03]}}}"),
    (1, "{\"inputs\": [\"a\", \"b\"], \"output\": \"regression\"}"),
    (1, "{\"inputs\": [\"a\"], \"output\": \"classification\", \"classes\": [\"x\", \"y\"], \"device\": \"cuda:1\"}"),
    (2, "cpu"), (2, "cuda"), (2, "cuda:3"), (2, "auto"),
]):
    write("options", f"seed_{i:02}", bytes([which]) + text.encode())
