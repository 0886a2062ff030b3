// The client matrix, Node.js side (`pg`, node-postgres): the same checklist as
// python_clients.py with the driver's normal settings. usage: node matrix.js PORT
"use strict";
const assert = require("assert");
const { Client } = require("pg");
const { from: copyFrom, to: copyTo } = require("pg-copy-streams");
const { pipeline } = require("stream/promises");
const { Readable, Writable } = require("stream");

async function main() {
  const client = new Client({ host: "127.0.0.1", port: Number(process.argv[2]), user: "matrix", database: "runbase" });
  await client.connect();
  await client.query("DROP TABLE IF EXISTS matrix_node");
  await client.query(
    "CREATE TABLE matrix_node (b boolean, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision, " +
      "n numeric(10,2), s text, d date, ts timestamp, tz timestamptz, by bytea, arr float8[])"
  );
  const tz = new Date(Date.UTC(2024, 1, 29, 13, 14, 15, 654));
  const row = [true, -2, 40000, "1099511627776", 1.5, 2.25, "12.34", "héllo, 'world'", "2024-02-29",
    "2024-02-29 13:14:15.123456", tz, Buffer.from([0, 1, 255]), [1.0, -2.5, 3.25]];
  const insert = "INSERT INTO matrix_node VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)";
  await client.query("BEGIN");
  await client.query(insert, row);
  await client.query(insert, row.map(() => null));
  await client.query("COMMIT");
  const res = await client.query("SELECT * FROM matrix_node ORDER BY i4 NULLS LAST");
  const r = res.rows[0];
  assert.strictEqual(r.b, true);
  assert.strictEqual(r.i2, -2);
  assert.strictEqual(r.i4, 40000);
  assert.strictEqual(r.i8, "1099511627776"); // int8 comes back as a string in pg, by design
  assert.strictEqual(r.f4, 1.5);
  assert.strictEqual(r.f8, 2.25);
  assert.strictEqual(r.n, "12.34");
  assert.strictEqual(r.s, "héllo, 'world'");
  assert.ok(r.d instanceof Date && r.d.getFullYear() === 2024 && r.d.getMonth() === 1 && r.d.getDate() === 29, String(r.d));
  assert.ok(r.ts instanceof Date, String(r.ts));
  assert.strictEqual(r.tz.getTime(), tz.getTime());
  assert.deepStrictEqual([...r.by], [0, 1, 255]);
  assert.deepStrictEqual(r.arr, [1.0, -2.5, 3.25]);
  const types = Object.fromEntries(res.fields.map((f) => [f.name, f.dataTypeID]));
  assert.strictEqual(types.tz, 1184, "timestamptz oid");
  assert.strictEqual(types.ts, 1114, "timestamp oid");
  assert.ok(Object.values(res.rows[1]).every((v) => v === null), JSON.stringify(res.rows[1]));
  // A named prepared statement, used twice.
  for (const v of [3, 4]) {
    const p = await client.query({ name: "twice", text: "SELECT $1::bigint * 2 AS x", values: [v] });
    assert.strictEqual(p.rows[0].x, String(v * 2));
  }
  await client.query("CREATE TABLE matrix_node_copy (id bigint, name text)");
  const text = "7\tseven\n8\t\\N\n";
  await pipeline(Readable.from([text]), client.query(copyFrom("COPY matrix_node_copy FROM STDIN")));
  let out = "";
  await pipeline(
    client.query(copyTo("COPY (SELECT * FROM matrix_node_copy ORDER BY id) TO STDOUT")),
    new Writable({ write(chunk, _enc, cb) { out += chunk.toString(); cb(); } })
  );
  assert.strictEqual(out, text);
  await assert.rejects(client.query("SELECT * FROM no_such_table"), (e) => e.code === "42P01");
  const sys = await client.query("SELECT run_id, status FROM runbase.runs");
  assert.ok(Array.isArray(sys.rows));
  await client.end();
  console.log("ok node");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
