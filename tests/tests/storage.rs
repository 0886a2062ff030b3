//! The object store end to end, on the local directory and on S3 (a real moto server on
//! loopback): tables, versions and time travel, COPY, TRAIN storing a model and PREDICT
//! loading it, artifacts — all surviving `kill -9` — plus S3's start-up checks, a data
//! directory that keeps its store, and a commit from a stale table handle.

use std::path::Path;

use bytes::Bytes;
use futures::SinkExt;
use runbase_engine::datafusion::arrow::array::{Int64Array, RecordBatch};
use runbase_engine::datafusion::arrow::datatypes::{DataType, Field, Schema};
use runbase_engine::storage::{ObjectStoreRoot, S3Options};
use runbase_tests::client::{load_csv, scalar};
use runbase_tests::s3::{AWS_ENV, MotoServer};
use runbase_tests::server::TestServer;
use tokio_postgres::Client;

/// Where a test server keeps its objects.
enum Store {
    Local,
    S3 { moto: MotoServer, bucket: String },
}

impl Store {
    fn s3(bucket: &str) -> Self {
        let moto = MotoServer::start();
        moto.create_bucket(bucket);
        Store::S3 {
            moto,
            bucket: bucket.to_string(),
        }
    }

    fn start(&self, dir: &Path) -> TestServer {
        match self {
            Store::Local => TestServer::start(dir),
            Store::S3 { moto, bucket } => {
                let args = moto.server_args(bucket, "team/runbase");
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                TestServer::start_with_env(dir, &args, &AWS_ENV)
            }
        }
    }
}

async fn copy_in(client: &Client, sql: &str, data: &str) {
    let sink = client.copy_in(sql).await.expect("copy in");
    futures::pin_mut!(sink);
    sink.send(Bytes::from(data.to_string()))
        .await
        .expect("send");
    sink.finish().await.expect("finish copy");
}

/// What every store must keep: writes of each kind, then the checks after a SIGKILL.
async fn tables_models_and_artifacts_survive_kill9(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = store.start(dir.path());
    let c = server.connect().await;

    // A table with four versions: CREATE, INSERT, COPY, INSERT.
    c.batch_execute("CREATE TABLE labels (id bigint, label text)")
        .await
        .expect("create");
    c.batch_execute("INSERT INTO labels VALUES (1, 'cat'), (2, 'dog')")
        .await
        .expect("insert");
    copy_in(
        &c,
        "COPY labels FROM STDIN WITH (FORMAT csv)",
        "3,cat\n4,bird\n5,dog\n",
    )
    .await;
    c.batch_execute("INSERT INTO labels VALUES (6, 'fish')")
        .await
        .expect("insert");

    // A model trained, stored and scored; an artifact logged.
    load_csv(&c, "iris", "iris", "species", "text").await;
    let version: i64 = scalar(
        &c,
        "SELECT version FROM train('flowers', 'SELECT * FROM iris', 'species', '{\"epochs\": 5, \"seed\": 7}')",
        &[],
    )
    .await;
    assert_eq!(version, 1);
    let predicted = predictions(&c).await;
    assert_eq!(predicted.len(), 150);
    let run: String = scalar(&c, "SELECT start_run('storage')", &[]).await;
    let uri: String = scalar(
        &c,
        "SELECT log_artifact($1, 'notes/readme.txt', 'kept'::bytea)",
        &[&run],
    )
    .await;
    assert!(uri.contains("notes/readme.txt"), "{uri}");

    server.kill9();
    let server = store.start(dir.path());
    let c = server.connect().await;
    let ids: Vec<i64> = c
        .query("SELECT id FROM labels ORDER BY id", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6], "every acknowledged row is back");
    let versions: Vec<(i64, i64)> = c
        .query(
            "SELECT version, rows_added FROM runbase.table_versions WHERE table_name = 'labels' ORDER BY version",
            &[],
        )
        .await
        .expect("versions")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(versions, [(0, 0), (1, 2), (2, 3), (3, 1)]);
    for (version, rows) in [(0, 0i64), (1, 2), (2, 5), (3, 6)] {
        let n: i64 = scalar(
            &c,
            &format!("SELECT count(*) FROM table_at('labels', {version})"),
            &[],
        )
        .await;
        assert_eq!(n, rows, "labels at version {version}");
    }
    assert_eq!(
        predictions(&c).await,
        predicted,
        "the stored model scores as before"
    );
    let data: Vec<u8> = scalar(&c, "SELECT artifact($1, 'notes/readme.txt')", &[&run]).await;
    assert_eq!(data, b"kept");

    // runbase.tables says where each table lives: in the bucket for S3.
    let uri: String = scalar(
        &c,
        "SELECT uri FROM runbase.tables WHERE name = 'labels'",
        &[],
    )
    .await;
    let version: i64 = scalar(
        &c,
        "SELECT version FROM runbase.tables WHERE name = 'labels'",
        &[],
    )
    .await;
    assert_eq!(version, 3);
    match &store {
        Store::Local => {
            assert!(uri.starts_with("file:///"), "{uri}");
            assert!(
                dir.path().join("objects").join("tables").is_dir(),
                "tables under the data directory"
            );
        }
        Store::S3 { moto, bucket } => {
            assert!(
                uri.starts_with(&format!("s3://{bucket}/team/runbase/tables/")),
                "{uri}"
            );
            let keys = moto.list(bucket, "team/runbase/");
            let table_key = uri
                .trim_start_matches(&format!("s3://{bucket}/"))
                .to_string();
            assert!(
                keys.iter()
                    .any(|k| k.starts_with(&table_key) && k.ends_with(".parquet")),
                "the table's Parquet files are in the bucket: {keys:?}"
            );
            assert!(
                keys.iter().any(|k| k.contains("notes/readme.txt")),
                "the artifact is in the bucket: {keys:?}"
            );
            assert!(
                !dir.path().join("objects").exists(),
                "nothing is kept in the local objects directory"
            );
        }
    }
}

/// `(prediction)` of every iris row, in order.
async fn predictions(c: &Client) -> Vec<String> {
    c.query(
        "SELECT prediction FROM predict('flowers', 'SELECT * FROM iris')",
        &[],
    )
    .await
    .expect("predict")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_keeps_tables_models_and_artifacts_across_kill9() {
    tables_models_and_artifacts_survive_kill9(Store::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_keeps_tables_models_and_artifacts_across_kill9() {
    tables_models_and_artifacts_survive_kill9(Store::s3("experiments")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_start_up_checks_the_bucket_and_the_data_directory_keeps_its_store() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().expect("tempdir");

    // A bucket that does not exist: the server says which store and does not start.
    let args = moto.server_args("missing", "x");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = TestServer::refuses_to_start_with_env(dir.path(), &args, &AWS_ENV);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("object store s3://missing/x/ is not reachable"),
        "{stderr}"
    );

    // An endpoint nobody listens on: the same, within the client's bounded retries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let out = TestServer::refuses_to_start_with_env(
        dir.path(),
        &[
            "--object-store",
            "s3://b/p",
            "--s3-endpoint",
            &format!("http://127.0.0.1:{closed}"),
            "--s3-allow-http",
        ],
        &AWS_ENV,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not reachable"), "{stderr}");

    // A data directory created on the local store refuses to open on S3 (its tables
    // would all vanish), and the other way round.
    let mut server = TestServer::start(dir.path());
    server.terminate();
    moto.create_bucket("other");
    let args = moto.server_args("other", "p");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = TestServer::refuses_to_start_with_env(dir.path(), &args, &AWS_ENV);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("keeps its tables in local, not s3://other/p/"),
        "{stderr}"
    );
    let mut server = TestServer::start(dir.path());
    server.terminate();
}

fn batch(values: &[i64]) -> RecordBatch {
    let schema = Schema::new(vec![Field::new("v", DataType::Int64, true)]);
    RecordBatch::try_new(
        std::sync::Arc::new(schema),
        vec![std::sync::Arc::new(Int64Array::from(values.to_vec()))],
    )
    .expect("batch")
}

/// A commit from a handle that has not seen the latest version: the conditional PUT of
/// its commit file loses (412), deltalake retries it as the next version, and no version
/// is lost or overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_handle_commit_on_s3_is_retried_never_lost() {
    let moto = MotoServer::start();
    moto.create_bucket("race");
    let options = S3Options {
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        allow_http: true,
        virtual_hosted_style: false,
        credentials: Some(("testing".into(), "testing".into())),
    };
    let root = ObjectStoreRoot::s3("s3://race/db", &options).expect("store");
    root.check_reachable().await.expect("reachable");
    root.create_with_data("tables/t", vec![batch(&[1])])
        .await
        .expect("create");
    let stale = root.open_table("tables/t", None).await.expect("open");
    let fresh = root.open_table("tables/t", None).await.expect("open");
    assert_eq!(stale.version(), Some(0));
    let fresh = fresh
        .write(vec![batch(&[2])])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .await
        .expect("fresh append");
    assert_eq!(fresh.version(), Some(1));
    // The stale handle still believes version 0 is the latest.
    let after = stale
        .write(vec![batch(&[3])])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .await
        .expect("stale append is retried");
    assert_eq!(after.version(), Some(2), "committed as the next version");
    let history = root.history("tables/t").await.expect("history");
    let versions: Vec<i64> = history.iter().map(|v| v.version).collect();
    assert_eq!(versions, [0, 1, 2]);
    let added: i64 = history.iter().map(|v| v.rows_added).sum();
    assert_eq!(added, 3, "every append's rows are in some version");
}

/// Faults of the store: an unreachable store, a 403 and throttling (503, retried by the
/// client first) fail the statement with a clear error, commit nothing, leave the server serving, and writes resume once the fault
/// clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_faults_fail_statements_cleanly_and_commit_nothing() {
    use runbase_tests::client::sqlstate;
    use runbase_tests::s3::{Fault, FaultyProxy};

    let moto = MotoServer::start();
    moto.create_bucket("flaky");
    let proxy = FaultyProxy::start(moto.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = proxy.endpoint();
    let server = TestServer::start_with_env(
        dir.path(),
        &[
            "--object-store",
            "s3://flaky/db",
            "--s3-endpoint",
            &endpoint,
            "--s3-allow-http",
        ],
        &AWS_ENV,
    );
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE t (x bigint); INSERT INTO t VALUES (1)")
        .await
        .expect("table");

    for (fault, code, words) in [
        (Fault::Refuse, "58030", "object store"),
        (Fault::Deny, "42501", "privileges"),
        (Fault::Throttle, "58030", "object store"),
    ] {
        proxy.set(fault);
        let err = c
            .batch_execute("INSERT INTO t VALUES (2)")
            .await
            .expect_err("the store is failing");
        assert_eq!(sqlstate(&err), code, "{fault:?}: {err:?}");
        let message = runbase_tests::client::describe(&err);
        assert!(message.contains(words), "{fault:?}: {message}");
        // The server still serves what needs no store.
        let one: i64 = scalar(&c, "SELECT 1", &[]).await;
        assert_eq!(one, 1);
        proxy.set(Fault::None);
        // Nothing was committed, and writes resume.
        let versions: i64 = scalar(
            &c,
            "SELECT count(*) FROM runbase.table_versions WHERE table_name = 't'",
            &[],
        )
        .await;
        assert_eq!(versions, 2, "{fault:?}: no version from the failed INSERT");
        eprintln!("{fault:?}: {message}");
    }
    c.batch_execute("INSERT INTO t VALUES (3)")
        .await
        .expect("writes resume");
    let xs: Vec<i64> = c
        .query("SELECT x FROM t ORDER BY x", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(xs, [1, 3]);
}
