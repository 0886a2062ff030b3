//! Experiment tracking end to end against the real `runbase` binary: logging through
//! tokio-postgres (extended protocol with typed parameters), live visibility from another
//! connection, COPY in and out, durability across SIGKILL, EXPLAIN of the range scans, and
//! a Python training script on psycopg.

use std::process::Command;

use bytes::Bytes;
use futures::{SinkExt, TryStreamExt};
use runbase_tests::client::sqlstate;
use runbase_tests::server::TestServer;

async fn one_text(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_logged_over_the_wire_is_visible_live_and_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start(dir.path());
    let logger = server.connect().await;
    let watcher = server.connect().await;

    let run_id: String = logger
        .query_one(
            "SELECT start_run($1, $2, $3)",
            &[&"wire", &"r1", &r#"{"lr": 0.01}"#],
        )
        .await
        .expect("start_run")
        .get(0);
    let log = logger
        .prepare("SELECT log_metric($1, $2, $3, $4)")
        .await
        .expect("prepare log_metric");
    // The server names the parameter types, so a driver binds typed values.
    let types: Vec<String> = log.params().iter().map(|t| t.name().to_string()).collect();
    assert_eq!(types, ["text", "text", "float8", "int8"]);
    // The result column is named after the function, as PostgreSQL names it.
    assert_eq!(log.columns()[0].name(), "log_metric");
    for step in 0..50i64 {
        let value = 1.0 / (step as f64 + 1.0);
        let row = logger
            .query_one(&log, &[&run_id, &"loss", &value, &step])
            .await
            .expect("log_metric");
        assert_eq!(row.get::<_, i64>(0), step);
        if step == 24 {
            // Another connection sees the value as soon as the call returned.
            let latest = watcher
                .query_one(
                    "SELECT step, value FROM runbase.latest_metrics WHERE run_id = $1 AND key = 'loss'",
                    &[&run_id],
                )
                .await
                .expect("latest");
            assert_eq!(latest.get::<_, i64>(0), 24);
            assert_eq!(latest.get::<_, f64>(1), 1.0 / 25.0);
        }
    }
    // NaN and infinities come back as such, in binary and in text.
    for (step, v) in [
        (100i64, f64::NAN),
        (101, f64::INFINITY),
        (102, f64::NEG_INFINITY),
    ] {
        logger
            .query_one(&log, &[&run_id, &"odd", &v, &step])
            .await
            .expect("log odd");
    }
    let odd = watcher
        .query(
            "SELECT value FROM runbase.metrics WHERE run_id = $1 AND key = 'odd' ORDER BY step",
            &[&run_id],
        )
        .await
        .expect("odd values");
    let odd: Vec<f64> = odd.iter().map(|r| r.get(0)).collect();
    assert!(odd[0].is_nan() && odd[1] == f64::INFINITY && odd[2] == f64::NEG_INFINITY);
    let rows = watcher
        .simple_query(&format!(
            "SELECT value FROM runbase.metrics WHERE run_id = '{run_id}' AND key = 'odd' ORDER BY step"
        ))
        .await
        .expect("text values");
    let values: Vec<&str> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["NaN", "Infinity", "-Infinity"]);

    // Errors name the problem, carry the SQLSTATE, and the connection goes on.
    let err = logger
        .query_one(
            &log,
            &[
                &"00000000-0000-0000-0000-000000000000",
                &"loss",
                &1.0f64,
                &0i64,
            ],
        )
        .await
        .expect_err("unknown run");
    assert_eq!(sqlstate(&err), "42704", "{err:?}");
    let err = logger
        .query_one("SELECT log_param($1, 'lr', '0.1')", &[&run_id])
        .await
        .expect_err("param change");
    assert_eq!(sqlstate(&err), "23505", "{err:?}");

    // Acknowledged values survive SIGKILL.
    drop(logger);
    drop(watcher);
    server.kill9();
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM runbase.metrics WHERE run_id = $1 AND key = 'loss'",
            &[&run_id],
        )
        .await
        .expect("count after restart")
        .get(0);
    assert_eq!(n, 50);
    let latest: i64 = client
        .query_one(
            "SELECT step FROM runbase.latest_metrics WHERE run_id = $1 AND key = 'loss'",
            &[&run_id],
        )
        .await
        .expect("latest after restart")
        .get(0);
    assert_eq!(latest, 49);
    let lr: String = client
        .query_one(
            "SELECT value FROM runbase.params WHERE run_id = $1 AND key = 'lr'",
            &[&run_id],
        )
        .await
        .expect("param after restart")
        .get(0);
    assert_eq!(lr, "0.01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_of_metrics_and_user_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    let run_id = one_text(&client, "SELECT start_run('copy', 'bulk')").await;

    // COPY … FROM STDIN in text format, sent in odd-sized pieces.
    let mut data = String::new();
    for step in 0..10_000 {
        data.push_str(&format!(
            "{run_id}\tloss\t{step}\t{}\n",
            1.0 / f64::from(step + 1)
        ));
    }
    let sink = client
        .copy_in("COPY runbase.metrics (run_id, key, step, value) FROM STDIN")
        .await
        .expect("copy in");
    futures::pin_mut!(sink);
    for piece in data.as_bytes().chunks(7_777) {
        sink.send(Bytes::copy_from_slice(piece))
            .await
            .expect("send");
    }
    let n = sink.finish().await.expect("finish copy");
    assert_eq!(n, 10_000);
    let latest = one_text(
        &client,
        &format!(
            "SELECT step FROM runbase.latest_metrics WHERE run_id = '{run_id}' AND key = 'loss'"
        ),
    )
    .await;
    assert_eq!(latest, "9999");

    // A COPY with one bad line stores none of its rows; the error names line and column.
    let sink = client
        .copy_in("COPY runbase.metrics (run_id, key, step, value) FROM STDIN")
        .await
        .expect("copy in");
    futures::pin_mut!(sink);
    let bad = format!("{run_id}\tacc\t0\t0.5\n{run_id}\tacc\t1\tnot-a-number\n");
    sink.send(Bytes::from(bad)).await.expect("send");
    let err = sink.finish().await.expect_err("bad line");
    assert_eq!(sqlstate(&err), "22P02", "{err:?}");
    let msg = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("line 2, column value"), "{msg}");
    let acc = one_text(
        &client,
        &format!("SELECT count(*) FROM runbase.metrics WHERE run_id = '{run_id}' AND key = 'acc'"),
    )
    .await;
    assert_eq!(acc, "0");

    // User tables, CSV with a header, in and out.
    client
        .batch_execute(
            "CREATE TABLE points (id bigint, label text, x double precision, ok boolean)",
        )
        .await
        .expect("create");
    let sink = client
        .copy_in("COPY points FROM STDIN WITH (FORMAT csv, HEADER true)")
        .await
        .expect("copy csv");
    futures::pin_mut!(sink);
    sink.send(Bytes::from_static(
        b"id,label,x,ok\n1,\"a, b\",1.5,true\n2,,NaN,false\n3,\"say \"\"hi\"\"\",,t\n",
    ))
    .await
    .expect("send csv");
    assert_eq!(sink.finish().await.expect("finish csv"), 3);
    let out = client
        .copy_out("COPY points TO STDOUT WITH (FORMAT csv, HEADER true)")
        .await
        .expect("copy out");
    let chunks: Vec<Bytes> = out.try_collect().await.expect("read copy out");
    let text = String::from_utf8(chunks.concat()).expect("utf-8");
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.remove(0), "id,label,x,ok");
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["1,\"a, b\",1.5,t", "2,,NaN,f", "3,\"say \"\"hi\"\"\",,t"]
    );

    // Text format out, then back in: the same rows.
    let out = client
        .copy_out("COPY (SELECT id, label, x, ok FROM points ORDER BY id) TO STDOUT")
        .await
        .expect("copy out text");
    let chunks: Vec<Bytes> = out.try_collect().await.expect("read copy out");
    let dump = chunks.concat();
    client
        .batch_execute(
            "CREATE TABLE points2 (id bigint, label text, x double precision, ok boolean)",
        )
        .await
        .expect("create 2");
    let sink = client
        .copy_in("COPY points2 FROM STDIN")
        .await
        .expect("copy in 2");
    futures::pin_mut!(sink);
    sink.send(Bytes::from(dump)).await.expect("send dump");
    assert_eq!(sink.finish().await.expect("finish dump"), 3);
    let same = one_text(
        &client,
        "SELECT count(*) FROM (SELECT * FROM points EXCEPT SELECT * FROM points2) d",
    )
    .await;
    assert_eq!(same, "0");

    // COPY to or from the server's files is refused; the other runbase tables refuse COPY.
    let err = client
        .batch_execute("COPY points FROM '/etc/passwd'")
        .await
        .expect_err("server file");
    assert_eq!(sqlstate(&err), "0A000", "{err:?}");
    let err = client
        .batch_execute("COPY runbase.params FROM STDIN")
        .await
        .expect_err("params");
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    assert_eq!(one_text(&client, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_filters_become_range_scans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    let plan = |sql: &str| {
        let sql = format!("EXPLAIN {sql}");
        let client = &client;
        async move {
            let rows = client.query(&sql, &[]).await.expect("explain");
            rows.iter()
                .map(|r| r.get::<_, String>(1))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let p = plan("SELECT step, value FROM runbase.metrics WHERE run_id = '00000000-0000-0000-0000-000000000001' AND key = 'loss' AND step BETWEEN 10 AND 20").await;
    assert!(
        p.contains("TrackingScanExec: table=metrics, run_id=[00000000-0000-0000-0000-000000000001], key=[loss], step=[10, 20]"),
        "{p}"
    );
    assert!(
        !p.contains("FilterExec"),
        "filters are applied in the scan: {p}"
    );
    let p =
        plan("SELECT run_id, key, value FROM runbase.latest_metrics WHERE experiment = 'e1'").await;
    assert!(
        p.contains("TrackingScanExec: table=latest_metrics, experiment=[e1]"),
        "{p}"
    );
    let p = plan("SELECT key, value FROM runbase.params WHERE run_id IN ('00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002')").await;
    assert!(p.contains("table=params, run_id=[00000000-0000-0000-0000-000000000001, 00000000-0000-0000-0000-000000000002]"), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_training_script_logs_through_psycopg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/training_script.py");
    // `python3` is the test venv's (scripts/env.sh puts it first on PATH; setup installs psycopg).
    let out = tokio::task::spawn_blocking({
        let conn = server.conn_str();
        move || {
            Command::new("python3")
                .args([script, &conn, "300"])
                .output()
                .expect("run python3")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "training script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: 300 steps logged"));
}
