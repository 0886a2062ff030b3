//! Other engines read runbase's tables where they live — no export, no lock-in: Python
//! `deltalake`, `polars.read_delta`, DuckDB's delta extension and pysail (the Spark API
//! on DataFusion) read a table of several versions, latest and pinned, from the local
//! store and from S3 (moto); and a distributed training (torchrun, two gloo workers)
//! reads a pinned version and logs to runbase over the PostgreSQL protocol.
//!
//! The readers and the training script are `tests/python/read_delta_tables.py` and
//! `tests/python/ddp_train.py`, run with the test venv's Python (`scripts/setup.sh`).

use std::path::PathBuf;
use std::process::Command;

use runbase_tests::client::scalar;
use runbase_tests::s3::{AWS_ENV, MotoServer};
use runbase_tests::server::TestServer;
use serde_json::{Value, json};
use tokio_postgres::Client;

fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var("RUNBASE_TORCH_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/runbase/torch-venv",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    PathBuf::from(venv).join("bin").join(name)
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// The rows of `from` as JSON values (the expected side, read back through runbase;
/// the timestamp as text, which the script puts in one canonical form).
async fn rows(c: &Client, from: &str) -> Vec<Value> {
    let sql = format!("SELECT id, x, s, b, CAST(ts AS text) FROM {from}");
    c.query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            json!([
                r.get::<_, Option<i64>>(0),
                r.get::<_, Option<f64>>(1),
                r.get::<_, Option<String>>(2),
                r.get::<_, Option<bool>>(3),
                r.get::<_, Option<String>>(4),
            ])
        })
        .collect()
}

/// Writes a table of four versions through runbase, then checks that every reader sees
/// each version as runbase does.
async fn readers_agree_with_runbase(server: &TestServer, moto: Option<&MotoServer>) {
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE shared (id bigint, x double precision, s text, b boolean, ts timestamp);
         INSERT INTO shared VALUES (1, 1.5, 'a', true, '2026-01-01 00:00:00'), (2, NULL, NULL, NULL, NULL);
         INSERT INTO shared VALUES (3, 3.5, 'c', false, '2026-01-02 03:04:05.25');",
    )
    .await
    .expect("fill");
    c.batch_execute("INSERT INTO shared SELECT id + 10, x * 2, s, b, ts FROM shared")
        .await
        .expect("insert select");
    let uri: String = scalar(
        &c,
        "SELECT uri FROM runbase.tables WHERE name = 'shared'",
        &[],
    )
    .await;
    let version: i64 = scalar(
        &c,
        "SELECT version FROM runbase.tables WHERE name = 'shared'",
        &[],
    )
    .await;
    let reader: i64 = scalar(
        &c,
        "SELECT min_reader_version FROM runbase.tables WHERE name = 'shared'",
        &[],
    )
    .await;
    let writer: i64 = scalar(
        &c,
        "SELECT min_writer_version FROM runbase.tables WHERE name = 'shared'",
        &[],
    )
    .await;
    assert_eq!(version, 3);
    assert!(
        reader <= 3 && writer <= 7,
        "protocol {reader}/{writer} stays readable by common Delta readers"
    );
    let mut versions = serde_json::Map::new();
    for v in 0..=version {
        versions.insert(
            v.to_string(),
            json!({"rows": rows(&c, &format!("table_at('shared', {v})")).await}),
        );
    }
    let expected = json!({
        "columns": ["id", "x", "s", "b", "ts"],
        "latest": {"version": version, "rows": rows(&c, "shared").await},
        "versions": versions,
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let expect = dir.path().join("expected.json");
    std::fs::write(&expect, expected.to_string()).expect("write expected");

    let mut cmd = Command::new(venv_bin("python3"));
    cmd.arg(script("read_delta_tables.py"))
        .arg("--uri")
        .arg(&uri)
        .arg("--expect")
        .arg(&expect);
    if let Some(moto) = moto {
        cmd.arg("--s3-endpoint").arg(moto.endpoint()).envs(AWS_ENV);
    }
    let out = cmd.output().expect("run read_delta_tables.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "readers disagree with runbase on {uri}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for reader in ["deltalake", "polars", "duckdb", "pysail"] {
        for v in ["latest", "0", "1", "2", "3"] {
            assert!(
                stdout.contains(&format!("ok reader={reader} version={v} ")),
                "{reader} read version {v}:\n{stdout}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_engines_read_runbase_tables_from_the_local_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    readers_agree_with_runbase(&server, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_engines_read_runbase_tables_from_the_bucket() {
    let moto = MotoServer::start();
    moto.create_bucket("lake");
    let dir = tempfile::tempdir().expect("tempdir");
    let args = moto.server_args("lake", "runbase");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = TestServer::start_with_env(dir.path(), &args, &AWS_ENV);
    readers_agree_with_runbase(&server, Some(&moto)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torchrun_workers_train_on_a_pinned_version_and_log_to_runbase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let c = server.connect().await;
    // Version 1: y = 2·x1 − 3·x2 + 0.5. Version 2 adds rows no worker may see.
    c.batch_execute(
        "CREATE TABLE d (x1 double precision, x2 double precision, y double precision);
         INSERT INTO d SELECT i / 100.0, (i % 7) / 7.0, 2 * (i / 100.0) - 3 * ((i % 7) / 7.0) + 0.5
           FROM generate_series(1, 200) AS g(i);
         INSERT INTO d SELECT i / 100.0, 1.0, -100.0 FROM generate_series(1, 50) AS g(i);",
    )
    .await
    .expect("fill");
    let uri: String = scalar(&c, "SELECT uri FROM runbase.tables WHERE name = 'd'", &[]).await;
    let run: String = scalar(&c, "SELECT start_run('ddp')", &[]).await;
    let dsn = format!(
        "host=127.0.0.1 port={} user=runbase dbname=runbase",
        server.port
    );
    let out = Command::new(venv_bin("torchrun"))
        .args(["--standalone", "--nproc_per_node=2"])
        .arg(script("ddp_train.py"))
        .args([
            "--table-uri",
            &uri,
            "--version",
            "1",
            "--dsn",
            &dsn,
            "--run-id",
            &run,
        ])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run torchrun");
    assert!(
        out.status.success(),
        "torchrun failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: Vec<(String, i64)> = c
        .query(
            "SELECT key, count(*) FROM runbase.metrics WHERE run_id = $1 GROUP BY key ORDER BY key",
            &[&run],
        )
        .await
        .expect("metrics")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        counts,
        [
            ("loss".to_string(), 20),
            ("loss_rank0".to_string(), 20),
            ("loss_rank1".to_string(), 20)
        ]
    );
    let last: f64 = scalar(
        &c,
        "SELECT value FROM runbase.latest_metrics WHERE run_id = $1 AND key = 'loss'",
        &[&run],
    )
    .await;
    // Trained on version 1 only: the rows of version 2 would keep the loss near 1000.
    assert!(last < 0.1, "final loss {last}");
}
