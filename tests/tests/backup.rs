//! Backups and restores end to end: a server on the local store fills tables, runs,
//! metrics, models and artifacts; backs itself up to S3 (moto) while a writer keeps
//! logging; backs up again, uploading only what changed; then the data directory is
//! wiped, `runbase restore` rebuilds it from the bucket alone, and everything is back —
//! every table version, run, metric point, model version and alias, with the same
//! predictions.

use std::path::Path;
use std::process::{Command, Output};

use runbase_tests::client::{load_csv, scalar};
use runbase_tests::s3::{AWS_ENV, MotoServer};
use runbase_tests::server::{TestServer, runbase_bin};
use tokio_postgres::Client;

/// Everything the test compares before and after the restore, as text rows.
async fn snapshot(c: &Client) -> Vec<String> {
    let queries = [
        "SELECT table_name, version, operation, rows_added FROM runbase.table_versions ORDER BY table_name, version",
        "SELECT run_id, name, status FROM runbase.runs ORDER BY run_id",
        "SELECT count(*), sum(value), count(DISTINCT run_id) FROM runbase.metrics",
        "SELECT name, version FROM runbase.models ORDER BY name, version",
        "SELECT name, alias, version FROM runbase.model_aliases ORDER BY name, alias",
        "SELECT id, label FROM labels ORDER BY id",
        "SELECT count(*) FROM table_at('labels', 1)",
        "SELECT prediction FROM predict('flowers@production', 'SELECT * FROM iris')",
    ];
    let mut out = Vec::new();
    for q in queries {
        for msg in c
            .simple_query(q)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"))
        {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
                let cells: Vec<&str> = (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL"))
                    .collect();
                out.push(format!("{q} => {}", cells.join("|")));
            }
        }
    }
    out
}

fn runbase(args: &[&str]) -> Output {
    Command::new(runbase_bin())
        .args(args)
        .envs(AWS_ENV)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run runbase")
}

fn report(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "runbase failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

async fn backup(c: &Client, url: &str) -> serde_json::Value {
    let json: String = scalar(c, &format!("SELECT backup('{url}')"), &[]).await;
    serde_json::from_str(&json).expect("backup report")
}

fn s3_flags(moto: &MotoServer) -> Vec<String> {
    vec![
        "--s3-endpoint".into(),
        moto.endpoint(),
        "--s3-allow-http".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_in_the_bucket_rebuilds_a_wiped_data_directory() {
    let moto = MotoServer::start();
    moto.create_bucket("backups");
    let url = "s3://backups/nightly";
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let flags = s3_flags(&moto);
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut server = TestServer::start_with_env(&data, &flag_refs, &AWS_ENV);
    let c = server.connect().await;

    c.batch_execute(
        "CREATE TABLE labels (id bigint, label text);
         INSERT INTO labels VALUES (1, 'cat'), (2, 'dog');
         INSERT INTO labels VALUES (3, 'bird');",
    )
    .await
    .expect("labels");
    load_csv(&c, "iris", "iris", "species", "text").await;
    for version in 1..=2 {
        let v: i64 = scalar(
            &c,
            &format!(
                "SELECT version FROM train('flowers', 'SELECT * FROM iris', 'species', '{{\"epochs\": 3, \"seed\": {version}}}')"
            ),
            &[],
        )
        .await;
        assert_eq!(v, version);
    }
    c.batch_execute("SELECT set_model_alias('flowers', 'production', 1)")
        .await
        .expect("alias");
    let run: String = scalar(&c, "SELECT start_run('external')", &[]).await;
    c.execute(
        "SELECT log_metric($1, 'loss', CAST(step AS double precision) / 10, step) FROM generate_series(1, 500) AS t(step)",
        &[&run],
    )
    .await
    .expect("metrics");
    scalar::<String>(
        &c,
        "SELECT log_artifact($1, 'plots/loss.txt', 'curve'::bytea)",
        &[&run],
    )
    .await;

    // Online: a writer keeps logging while the backup runs, and its points all land.
    let writer = {
        let conn = server.conn_str();
        let run = run.clone();
        tokio::spawn(async move {
            let (w, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(connection);
            for step in 1000..1100i64 {
                w.execute("SELECT log_metric($1, 'live', 1.0, $2)", &[&run, &step])
                    .await
                    .expect("log during backup");
            }
        })
    };
    let first = backup(&c, url).await;
    writer.await.expect("writer");
    let files = first["files"].as_u64().expect("files");
    assert!(files > 5, "{first}");
    assert_eq!(
        first["uploaded"], first["files"],
        "a first backup uploads all"
    );

    // A second backup after a small change uploads only what changed.
    c.batch_execute("INSERT INTO labels VALUES (4, 'fish')")
        .await
        .expect("insert");
    let second = backup(&c, url).await;
    let uploaded = second["uploaded"].as_u64().expect("uploaded");
    assert!(
        uploaded < second["files"].as_u64().expect("files") / 2,
        "incremental: {second}"
    );
    let before = snapshot(&c).await;
    assert!(
        before
            .iter()
            .any(|r| r.starts_with("SELECT id, label") && r.ends_with("=> 4|fish")),
        "{before:#?}"
    );
    assert_eq!(
        before.iter().filter(|r| r.contains("predict(")).count(),
        150
    );
    drop(c);
    server.terminate();

    // A restore into a directory that holds data refuses.
    let mut args = vec!["restore", "--from", url, "--data-dir"];
    let data_str = data.to_string_lossy().to_string();
    args.push(&data_str);
    args.extend(flag_refs.iter().copied());
    let out = runbase(&args);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The data directory is lost; the bucket alone brings it back.
    std::fs::remove_dir_all(&data).expect("wipe");
    let restored = report(&runbase(&args));
    assert_eq!(restored["id"], second["id"], "the newest backup");
    assert_eq!(restored["object_store"], "local");
    let server = TestServer::start_with_env(&data, &flag_refs, &AWS_ENV);
    let c = server.connect().await;
    assert_eq!(snapshot(&c).await, before, "everything is back");
    let data_back: Vec<u8> = scalar(&c, "SELECT artifact($1, 'plots/loss.txt')", &[&run]).await;
    assert_eq!(data_back, b"curve");
    let live: i64 = scalar(
        &c,
        "SELECT count(*) FROM runbase.metrics WHERE key = 'live'",
        &[],
    )
    .await;
    assert_eq!(
        live, 100,
        "points logged during the first backup are in the second"
    );

    // The restored server keeps working: a write, and a backup of its own.
    c.batch_execute("INSERT INTO labels VALUES (5, 'owl')")
        .await
        .expect("write after restore");
    let third = backup(&c, url).await;
    assert!(
        third["uploaded"].as_u64().expect("uploaded") < third["files"].as_u64().expect("files")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_backs_up_a_stopped_directory_and_points_a_running_one_at_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let target = dir.path().join("backups");
    let mut server = TestServer::start(&data);
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE t (x bigint); INSERT INTO t VALUES (1), (2)")
        .await
        .expect("table");

    // Running: the directory is locked, and the error says what to do instead.
    let data_str = data.to_string_lossy().to_string();
    let target_str = target.to_string_lossy().to_string();
    let out = runbase(&["backup", "--to", &target_str, "--data-dir", &data_str]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SELECT backup("), "{stderr}");
    drop(c);
    server.terminate();

    // Stopped: the CLI backs it up into a local directory, and restores from it.
    let made = report(&runbase(&[
        "backup",
        "--to",
        &target_str,
        "--data-dir",
        &data_str,
    ]));
    assert!(made["files"].as_u64().expect("files") > 0);
    let copy = dir.path().join("copy");
    let copy_str = copy.to_string_lossy().to_string();
    report(&runbase(&[
        "restore",
        "--from",
        &target_str,
        "--data-dir",
        &copy_str,
    ]));
    let server = TestServer::start(&copy);
    let c = server.connect().await;
    let n: i64 = scalar(&c, "SELECT count(*) FROM t", &[]).await;
    assert_eq!(n, 2);

    // A backup whose manifest is missing (it stopped half-way) is never restored.
    for entry in std::fs::read_dir(target.join("manifests")).expect("manifests") {
        std::fs::remove_file(entry.expect("entry").path()).expect("remove manifest");
    }
    let empty = dir.path().join("empty");
    let out = runbase(&[
        "restore",
        "--from",
        &target_str,
        "--data-dir",
        &empty.to_string_lossy(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no finished backup"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!Path::new(&empty).join("catalog").exists());
}

/// With the tables on S3, a backup holds the catalog and tracking records only (the
/// tables are in their bucket already); the restored directory names the store it needs
/// and opens only with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_of_an_s3_database_reattaches_to_its_bucket() {
    let moto = MotoServer::start();
    moto.create_bucket("data");
    moto.create_bucket("backups");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let args = moto.server_args("data", "db");
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = TestServer::start_with_env(&data, &arg_refs, &AWS_ENV);
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE t (x bigint); INSERT INTO t VALUES (1), (2)")
        .await
        .expect("table");
    let run: String = scalar(&c, "SELECT start_run('s3')", &[]).await;
    c.execute("SELECT log_metric($1, 'loss', 0.5, 1)", &[&run])
        .await
        .expect("metric");
    let made = backup(&c, "s3://backups/db").await;
    assert!(made["files"].as_u64().expect("files") > 0);
    drop(c);
    server.terminate();
    assert!(
        !moto
            .list("backups", "db/")
            .iter()
            .any(|k| k.starts_with("db/objects/")),
        "tables on S3 are not copied into the backup"
    );

    std::fs::remove_dir_all(&data).expect("wipe");
    let data_str = data.to_string_lossy().to_string();
    let flags = s3_flags(&moto);
    let mut restore_args = vec![
        "restore",
        "--from",
        "s3://backups/db",
        "--data-dir",
        &data_str,
    ];
    restore_args.extend(flags.iter().map(String::as_str));
    let out = runbase(&restore_args);
    let restored = report(&out);
    assert_eq!(restored["object_store"], "s3://data/db/");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--object-store s3://data/db"),
        "the restore says which store to start with"
    );
    // Without the store it was made with, the directory refuses to open.
    let out = TestServer::refuses_to_start(&data, &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keeps its tables in s3://data/db/"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = TestServer::start_with_env(&data, &arg_refs, &AWS_ENV);
    let c = server.connect().await;
    let n: i64 = scalar(&c, "SELECT count(*) FROM t", &[]).await;
    assert_eq!(n, 2);
    let points: i64 = scalar(
        &c,
        "SELECT count(*) FROM runbase.metrics WHERE run_id = $1",
        &[&run],
    )
    .await;
    assert_eq!(points, 1);
}

/// `serve --backup-to … --backup-interval-secs 1`: the server backs itself up on its own,
/// each backup a whole one (a manifest), and the newest restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_run_on_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let target = dir.path().join("scheduled");
    let target_str = target.to_string_lossy().to_string();
    let mut server = TestServer::start_with(
        &data,
        &["--backup-to", &target_str, "--backup-interval-secs", "1"],
    );
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE t (x bigint); INSERT INTO t VALUES (1), (2), (3)")
        .await
        .expect("table");
    let manifests = || {
        std::fs::read_dir(target.join("manifests"))
            .map(|d| d.filter_map(Result::ok).count())
            .unwrap_or(0)
    };
    // Two more backups after the write: the second started after it had returned.
    let wanted = manifests() + 2;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while manifests() < wanted {
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled backups within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(c);
    server.terminate();
    let copy = dir.path().join("copy");
    report(&runbase(&[
        "restore",
        "--from",
        &target_str,
        "--data-dir",
        &copy.to_string_lossy(),
    ]));
    let server = TestServer::start(&copy);
    let c = server.connect().await;
    let n: i64 = scalar(&c, "SELECT count(*) FROM t", &[]).await;
    assert_eq!(n, 3);
}
