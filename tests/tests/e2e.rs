//! End to end against the real `runbase` binary: tokio-postgres (simple and extended
//! protocol), psql's meta-commands, SIGKILL durability and SIGTERM shutdown.

use runbase_tests::server::TestServer;

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "psql failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE metrics (run_id bigint NOT NULL, step int, loss double precision, tag text)")
        .await
        .expect("create");

    // Extended protocol: a prepared INSERT executed with parameters, one version each.
    let insert = client
        .prepare("INSERT INTO metrics VALUES ($1, $2, $3, $4)")
        .await
        .expect("prepare insert");
    for step in 0..5i32 {
        let n = client
            .execute(
                &insert,
                &[
                    &7i64,
                    &step,
                    &(1.0 / f64::from(step + 1)),
                    &format!("s{step}"),
                ],
            )
            .await
            .expect("insert");
        assert_eq!(n, 1);
    }
    // Simple protocol: a multi-row insert.
    client
        .simple_query("INSERT INTO metrics VALUES (8, 0, 0.5, 'b'), (8, 1, 0.25, 'b')")
        .await
        .expect("multi-row insert");

    let rows = client
        .query(
            "SELECT step, loss FROM metrics WHERE run_id = $1 ORDER BY step",
            &[&7i64],
        )
        .await
        .expect("parameterized select");
    assert_eq!(rows.len(), 5);
    let loss: f64 = rows[1].get(1);
    assert!((loss - 0.5).abs() < 1e-12);

    server.kill9();
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    let rows = client
        .query(
            "SELECT run_id, step, loss, tag FROM metrics ORDER BY run_id, step",
            &[],
        )
        .await
        .expect("select after restart");
    assert_eq!(rows.len(), 7, "every acknowledged row is back");
    let tags: Vec<String> = rows.iter().map(|r| r.get(3)).collect();
    assert_eq!(tags, ["s0", "s1", "s2", "s3", "s4", "b", "b"]);
    let versions = client
        .query(
            "SELECT version, operation, rows_added FROM runbase.table_versions WHERE table_name = 'metrics' ORDER BY version",
            &[],
        )
        .await
        .expect("versions");
    // CREATE TABLE, five single-row inserts, one two-row insert.
    assert_eq!(versions.len(), 7);
    let added: Vec<i64> = versions.iter().map(|r| r.get(2)).collect();
    assert_eq!(added, [0, 1, 1, 1, 1, 1, 2]);
    for (i, row) in versions.iter().enumerate() {
        assert_eq!(row.get::<_, i64>(0), i as i64);
    }
    let old = client
        .query("SELECT count(*) FROM table_at('metrics', 3)", &[])
        .await
        .expect("table_at");
    assert_eq!(old[0].get::<_, i64>(0), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    stdout(&server.psql(&[
        "-c",
        "CREATE TABLE experiments (id bigint NOT NULL, name text, features double precision[])",
    ]));
    stdout(&server.psql(&[
        "-c",
        "INSERT INTO experiments VALUES (1, 'iris', [5.1, 3.5])",
    ]));

    let dt = stdout(&server.psql(&["-c", "\\dt"]));
    assert!(dt.contains("experiments"), "\\dt lists the table:\n{dt}");

    let d = stdout(&server.psql(&["-c", "\\d experiments"]));
    for needle in ["id", "bigint", "name", "text", "features"] {
        assert!(d.contains(needle), "\\d shows {needle}:\n{d}");
    }

    let dn = stdout(&server.psql(&["-c", "\\dn"]));
    assert!(
        dn.contains("public") && dn.contains("runbase"),
        "\\dn:\n{dn}"
    );

    let l = stdout(&server.psql(&["-c", "\\l"]));
    assert!(l.contains("runbase"), "\\l:\n{l}");

    let v = stdout(&server.psql(&["-At", "-c", "SELECT version()"]));
    assert!(v.contains("runbase"), "version(): {v}");

    let rows = stdout(&server.psql(&["-At", "-c", "SELECT id, name FROM experiments"]));
    assert_eq!(rows.trim(), "1|iris");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_statements_keep_the_connection_and_server_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    for (sql, code) in [
        ("SELECT * FROM nowhere", "42P01"),
        ("SELEC 1", "42601"),
        ("SELECT nosuchfn()", "42883"),
        ("SELECT 'x'::int", "22P02"),
    ] {
        let err = client.simple_query(sql).await.expect_err(sql);
        let db = err.as_db_error().expect("a database error");
        assert_eq!(db.code().code(), code, "{sql}: {}", db.message());
    }
    // Extended protocol errors too.
    let err = client
        .prepare("SELECT * FROM nowhere")
        .await
        .expect_err("prepare");
    assert_eq!(err.as_db_error().expect("db error").code().code(), "42P01");
    let rows = client
        .query("SELECT 1 + $1::int", &[&41i32])
        .await
        .expect("still usable");
    // DataFusion types `1 + int4` as int8.
    assert_eq!(rows[0].get::<_, i64>(0), 42);
    // A second client sees nothing of the first one's settings.
    client
        .batch_execute("SET datafusion.execution.batch_size = 7")
        .await
        .expect("set");
    let other = server.connect().await;
    let v = other
        .simple_query("SHOW datafusion.execution.batch_size")
        .await
        .expect("show");
    let value = v.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(1).map(str::to_string),
        _ => None,
    });
    assert_ne!(value.as_deref(), Some("7"), "SET leaked across sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .expect("create");
    drop(client);
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    let rows = client
        .query("SELECT count(*) FROM t", &[])
        .await
        .expect("table is back");
    assert_eq!(rows[0].get::<_, i64>(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_each_get_a_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let setup = server.connect().await;
    setup
        .batch_execute("CREATE TABLE points (writer int, i int)")
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for writer in 0..4i32 {
        let client = server.connect().await;
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare("INSERT INTO points VALUES ($1, $2)")
                .await
                .expect("prepare");
            for i in 0..5i32 {
                client
                    .execute(&insert, &[&writer, &i])
                    .await
                    .expect("insert");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let rows = setup
        .query("SELECT count(*), count(DISTINCT writer) FROM points", &[])
        .await
        .expect("count");
    assert_eq!(rows[0].get::<_, i64>(0), 20);
    assert_eq!(rows[0].get::<_, i64>(1), 4);
    let versions = setup
        .query(
            "SELECT max(version), count(*) FROM runbase.table_versions WHERE table_name = 'points'",
            &[],
        )
        .await
        .expect("versions");
    // CREATE TABLE plus one version per acknowledged INSERT, numbered without gaps.
    assert_eq!(versions[0].get::<_, i64>(0), 20);
    assert_eq!(versions[0].get::<_, i64>(1), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_warns_that_it_undoes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let out = server.psql(&[
        "-c",
        "CREATE TABLE r (x int)",
        "-c",
        "BEGIN",
        "-c",
        "INSERT INTO r VALUES (1)",
        "-c",
        "ROLLBACK",
        "-At",
        "-c",
        "SELECT count(*) FROM r",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARNING") && stderr.contains("ROLLBACK did not undo"),
        "{stderr}"
    );
    // The insert was acknowledged, so it stays.
    assert!(stdout(&out).trim_end().ends_with('1'));
}
