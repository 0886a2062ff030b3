//! The client matrix: real drivers and tools against a real server, each with its normal
//! settings (tests/clients/: python_clients.py, jdbc/Matrix.java, node/matrix.js). Each
//! creates and fills a table with parameterized inserts, reads every type back (NULLs
//! too), uses a prepared statement twice, runs COPY FROM STDIN and TO STDOUT, checks an
//! error's SQLSTATE and reads the runbase system tables. Also here: psql's
//! meta-commands and Ctrl-C, the catalog queries BI tools send, and per-session `SET`.
//!
//! What each needs is installed by scripts/setup.sh (the README's test command).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runbase_tests::client::{scalar, sqlstate};
use runbase_tests::server::TestServer;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Runs `cmd` and checks that it succeeds and prints `ok <what>`.
fn expect_ok(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run the {what} client: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("ok {what}")),
        "{what} client failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn python_client(driver: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    // `python3` is the test venv's (scripts/env.sh puts it first on PATH).
    let mut cmd = Command::new("python3");
    cmd.arg(clients_dir().join("python_clients.py"))
        .arg(driver)
        .arg(server.port.to_string());
    expect_ok(cmd, driver);
}

/// The newest releases of the Python clients (scripts/setup.sh installs them, unpinned,
/// in a venv of their own), driven by the same checks.
fn newest_python_client(driver: &str) {
    let venv = std::env::var("RUNBASE_CLIENTS_NEWEST_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/runbase/clients-newest",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let mut cmd = Command::new(PathBuf::from(venv).join("bin/python3"));
    cmd.arg(clients_dir().join("python_clients.py"))
        .arg(driver)
        .arg(server.port.to_string());
    expect_ok(cmd, driver);
}

#[test]
fn psycopg3() {
    python_client("psycopg");
}

#[test]
fn duckdb_postgres_extension_attaches_and_reads_user_and_tracking_tables() {
    python_client("duckdb");
}

#[test]
fn newest_python_clients_and_pgcli() {
    for driver in [
        "psycopg",
        "psycopg2",
        "asyncpg",
        "sqlalchemy",
        "pandas",
        "duckdb",
        "pgcli",
    ] {
        newest_python_client(driver);
    }
}

#[test]
fn psycopg2() {
    python_client("psycopg2");
}

#[test]
fn asyncpg() {
    python_client("asyncpg");
}

#[test]
fn sqlalchemy_engine_inspect_and_core() {
    python_client("sqlalchemy");
}

#[test]
fn pandas_read_sql_and_to_sql() {
    python_client("pandas");
}

/// Debian's pgjdbc (libpostgresql-jdbc-java).
const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

#[test]
fn jdbc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let classes = dir.path().join("classes");
    let status = Command::new("javac")
        .args(["-d"])
        .arg(&classes)
        .args(["-cp", JDBC_JAR])
        .arg(clients_dir().join("jdbc").join("Matrix.java"))
        .status()
        .expect("run javac (scripts/setup.sh installs a JDK and libpostgresql-jdbc-java)");
    assert!(status.success(), "javac failed");
    let server = TestServer::start(&dir.path().join("data"));
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(format!("{JDBC_JAR}:{}", classes.display()))
        .arg("Matrix")
        .arg(server.port.to_string());
    expect_ok(cmd, "jdbc");
}

#[test]
fn node_pg() {
    let node_dir = clients_dir().join("node");
    assert!(
        node_dir.join("node_modules").join("pg").exists(),
        "node_modules missing: scripts/setup.sh runs `npm ci` in {}",
        node_dir.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let mut cmd = Command::new("node");
    cmd.arg(node_dir.join("matrix.js"))
        .arg(server.port.to_string())
        .current_dir(&node_dir);
    expect_ok(cmd, "node");
}

fn psql_ok(server: &TestServer, args: &[&str]) -> String {
    let out = server.psql(args);
    assert!(
        out.status.success(),
        "psql {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn psql_meta_commands_expanded_output_and_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    psql_ok(
        &server,
        &[
            "-c",
            "CREATE TABLE points (id bigint, label text, at timestamptz)",
        ],
    );
    let dt = psql_ok(&server, &["-c", "\\dt"]);
    assert!(dt.contains("points") && dt.contains("runbase"), "{dt}");
    let d = psql_ok(&server, &["-c", "\\d points"]);
    assert!(
        d.contains("bigint") && d.contains("timestamp with time zone"),
        "{d}"
    );
    let dn = psql_ok(&server, &["-c", "\\dn"]);
    assert!(dn.contains("public") && dn.contains("runbase"), "{dn}");
    // \df lists runbase's own functions, with their arguments and results.
    let df = psql_ok(&server, &["-c", "\\df"]);
    assert!(df.contains("List of functions"), "{df}");
    for expected in [
        "log_metric",
        "run_id text, key text, value double precision, step bigint DEFAULT NULL",
        "start_run",
        "train",
        "model_name text, query text, target text, options_json text DEFAULT NULL",
        "predict",
        "import_model",
        "mlflow_model_file",
        "table_at",
    ] {
        assert!(df.contains(expected), "\\df lacks {expected}: {df}");
    }
    let dfs = psql_ok(&server, &["-c", "\\df log_*"]);
    assert!(
        dfs.contains("log_param") && !dfs.contains("start_run"),
        "{dfs}"
    );
    let x = psql_ok(&server, &["-c", "\\x", "-c", "SELECT 1 AS a, 'two' AS b"]);
    assert!(x.contains("-[ RECORD 1 ]") && x.contains("b | two"), "{x}");
    // \copy: client-side files through COPY FROM STDIN / TO STDOUT.
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "1,one,2024-01-01 00:00:00+00\n2,,\n").expect("write csv");
    let out = dir.path().join("out.csv");
    psql_ok(
        &server,
        &[
            "-c",
            &format!("\\copy points FROM '{}' WITH (FORMAT csv)", csv.display()),
            "-c",
            &format!(
                "\\copy (SELECT id, label FROM points ORDER BY id) TO '{}' WITH (FORMAT csv)",
                out.display()
            ),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&out).expect("read out.csv"),
        "1,one\n2,\n"
    );
    let wrong = server.psql(&["-c", "SELECT * FROM nowhere"]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("relation \"nowhere\" does not exist"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

#[test]
fn psql_ctrl_c_cancels_a_streaming_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let mut psql = server
        .psql_command(&[
            "-c",
            "SELECT value FROM generate_series(1, 2000000000) AS t(value)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psql");
    // Let the rows start streaming, then press Ctrl-C.
    std::thread::sleep(Duration::from_secs(2));
    let status = Command::new("kill")
        .args(["-INT", &psql.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let started = Instant::now();
    let exited = loop {
        if let Some(status) = psql.try_wait().expect("wait for psql") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = psql.kill();
            panic!("psql still running 30 s after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = psql.stderr.take() {
        e.read_to_string(&mut stderr).expect("read stderr");
    }
    assert!(!exited.success());
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    // The server is still there for the next client.
    let after = psql_ok(&server, &["-At", "-c", "SELECT 41 + 1"]);
    assert_eq!(after.trim(), "42");
}

#[tokio::test]
async fn binary_copy_both_ways() {
    use futures::{SinkExt, TryStreamExt};
    use tokio_postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutStream};
    use tokio_postgres::types::Type;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE b (id bigint, name text, x double precision, v float8[])")
        .await
        .expect("create");
    // tokio-postgres's own binary COPY writer, an implementation independent of ours.
    let types = [Type::INT8, Type::TEXT, Type::FLOAT8, Type::FLOAT8_ARRAY];
    let sink = client
        .copy_in("COPY b FROM STDIN (FORMAT binary)")
        .await
        .expect("copy in");
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for i in 0..3000i64 {
        let name = (i % 3 != 0).then(|| format!("row {i}"));
        let v = vec![i as f64, -0.5];
        writer
            .as_mut()
            .write(&[&i, &name, &(i as f64 / 4.0), &v])
            .await
            .expect("write row");
    }
    assert_eq!(writer.finish().await.expect("finish"), 3000);
    let stats: (i64, i64, f64) = {
        let row = client
            .query_one("SELECT count(*), count(name), sum(x) FROM b", &[])
            .await
            .expect("stats");
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(stats, (3000, 2000, (0..3000).map(|i| i as f64 / 4.0).sum()));

    let stream = client
        .copy_out("COPY (SELECT * FROM b ORDER BY id) TO STDOUT (FORMAT binary)")
        .await
        .expect("copy out");
    let rows: Vec<_> = BinaryCopyOutStream::new(stream, &types)
        .try_collect()
        .await
        .expect("read binary copy");
    assert_eq!(rows.len(), 3000);
    assert_eq!(rows[4].get::<i64>(0), 4);
    assert_eq!(rows[4].get::<Option<&str>>(1), Some("row 4"));
    assert_eq!(rows[3].get::<Option<&str>>(1), None);
    assert_eq!(rows[4].get::<f64>(2), 1.0);
    assert_eq!(rows[4].get::<Vec<f64>>(3), vec![4.0, -0.5]);
    let stream = client
        .copy_out("COPY (SELECT * FROM b WHERE id < 0) TO STDOUT (FORMAT binary)")
        .await
        .expect("copy out no rows");
    let none: Vec<_> = BinaryCopyOutStream::new(stream, &types)
        .try_collect()
        .await
        .expect("read an empty binary copy");
    assert!(none.is_empty());
    // An empty CSV copy still has its header line.
    let stream = client
        .copy_out("COPY (SELECT id, name FROM b WHERE id < 0) TO STDOUT (FORMAT csv, HEADER)")
        .await
        .expect("copy out csv");
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("read csv copy");
    assert_eq!(chunks.concat(), b"id,name\n");

    // Malformed data is refused with PostgreSQL's codes, and nothing of it is stored.
    for (data, code) in [
        (&b"not a binary copy"[..], "22P04"),
        (&b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0\0\x01\0\0\0\x02ab\xff\xff"[..], "22P04"),
        (
            &b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0\0\x04\0\0\0\x02ab\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..],
            "22P03",
        ),
    ] {
        let sink = client
            .copy_in::<_, bytes::Bytes>("COPY b FROM STDIN (FORMAT binary)")
            .await
            .expect("copy in");
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(data)).await.expect("send");
        let err = sink.finish().await.expect_err("malformed binary copy");
        assert_eq!(sqlstate(&err), code, "{err:?}");
    }
    let n: i64 = scalar(&client, "SELECT count(*) FROM b", &[]).await;
    assert_eq!(n, 3000);
    let err = client
        .batch_execute("COPY b FROM STDIN (FORMAT binary, DELIMITER ',')")
        .await
        .expect_err("binary with a delimiter");
    assert_eq!(sqlstate(&err), "42601");
}

#[tokio::test]
async fn schema_discovery_queries_answer_like_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE sales (id bigint, amount double precision, day date)")
        .await
        .expect("create");
    let tables: Vec<String> = client
        .query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
            &[],
        )
        .await
        .expect("information_schema.tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, vec!["sales".to_string()]);
    let columns: Vec<(String, String)> = client
        .query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'sales' ORDER BY ordinal_position",
            &[],
        )
        .await
        .expect("information_schema.columns")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(columns.len(), 3, "{columns:?}");
    assert_eq!(columns[0].0, "id");
    // pg_class / pg_attribute / pg_type / pg_namespace joined as BI tools do.
    let rows = client
        .query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON a.attrelid = c.oid \
             JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid \
             WHERE c.relname = 'sales' AND n.nspname = 'public' AND a.attnum > 0 \
             ORDER BY a.attnum",
            &[],
        )
        .await
        .expect("pg_attribute join");
    let described: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        described,
        vec![
            ("id".to_string(), "bigint".to_string()),
            ("amount".to_string(), "double precision".to_string()),
            ("day".to_string(), "date".to_string()),
        ]
    );
    let types: i64 = scalar(
        &client,
        "SELECT count(*) FROM pg_catalog.pg_type WHERE typname IN ('int8', 'text', 'float8')",
        &[],
    )
    .await;
    assert_eq!(types, 3);
    let schema: String = scalar(&client, "SELECT current_schema()", &[]).await;
    assert_eq!(schema, "public");
    let version: String = scalar(&client, "SELECT current_setting('server_version')", &[]).await;
    assert!(version.starts_with("16"), "{version}");
    let missing: Option<String> = scalar(
        &client,
        "SELECT current_setting('no.such_setting', true)",
        &[],
    )
    .await;
    assert_eq!(missing, None);
    let err = client
        .query("SELECT current_setting('no_such_setting')", &[])
        .await
        .expect_err("unknown setting");
    assert_eq!(sqlstate(&err), "42704");
    let expr: Option<String> = scalar(&client, "SELECT pg_get_expr(NULL, 0)", &[]).await;
    assert_eq!(expr, None);
    for (setting, want) in [
        ("server_version_num", "160000"),
        ("standard_conforming_strings", "on"),
        ("client_encoding", "UTF8"),
        ("TimeZone", "UTC"),
        ("transaction isolation level", "read committed"),
        ("search_path", "\"$user\", public"),
    ] {
        let rows = client
            .simple_query(&format!("SHOW {setting}"))
            .await
            .unwrap_or_else(|e| panic!("SHOW {setting}: {e}"));
        let value = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(value.as_deref(), Some(want), "SHOW {setting}");
    }
    let regtype: Option<i32> = scalar(&client, "SELECT to_regtype('hstore')", &[]).await;
    assert_eq!(regtype, None);
    // Oid columns and arrays are described as PostgreSQL describes them: an oid cast to
    // text is text, and arrays of oids (a parameter, an aggregate) are oid[].
    let described = client
        .prepare(
            "SELECT t.typelem::text AS elem, array_agg(t.oid) AS oids, $1::oid[] AS wanted \
             FROM pg_catalog.pg_type t WHERE t.oid = any($1::oid[]) GROUP BY t.typelem",
        )
        .await
        .expect("prepare oid[] query");
    let types: Vec<&tokio_postgres::types::Type> =
        described.columns().iter().map(|c| c.type_()).collect();
    assert_eq!(
        types,
        vec![
            &tokio_postgres::types::Type::TEXT,
            &tokio_postgres::types::Type::OID_ARRAY,
            &tokio_postgres::types::Type::OID_ARRAY,
        ]
    );
    assert_eq!(
        described.params(),
        &[tokio_postgres::types::Type::OID_ARRAY]
    );
    let wanted: Vec<u32> = vec![1022, 1028];
    let rows = client
        .query(&described, &[&wanted])
        .await
        .expect("run oid[] query");
    let mut elems: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    elems.sort();
    assert_eq!(elems, vec!["26".to_string(), "701".to_string()]);
    let oids: Vec<u32> = rows.iter().flat_map(|r| r.get::<_, Vec<u32>>(1)).collect();
    assert_eq!(oids.len(), 2, "{oids:?}");
    // An oid shown as a regtype is the type's name, as PostgreSQL prints it.
    let names = client
        .query_one(
            "SELECT typelem::regtype::text, oid::regtype::text FROM pg_catalog.pg_type \
             WHERE oid = 1022",
            &[],
        )
        .await
        .expect("regtype names");
    assert_eq!(names.get::<_, String>(0), "double precision");
    assert_eq!(names.get::<_, String>(1), "double precision[]");
}

async fn batch_size(c: &tokio_postgres::Client) -> String {
    let v: Option<String> = scalar(
        c,
        "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'",
        &[],
    )
    .await;
    v.unwrap_or_default()
}

async fn show(c: &tokio_postgres::Client, name: &str) -> String {
    let rows = c.simple_query(&format!("SHOW {name}")).await.expect("SHOW");
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn set_affects_only_its_own_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let a = server.connect().await;
    let b = server.connect().await;
    a.batch_execute("SET application_name = 'dashboard'; SET statement_timeout = '5s'; SET datafusion.execution.batch_size = 1024")
        .await
        .expect("SET");
    assert_eq!(show(&a, "application_name").await, "dashboard");
    assert_eq!(show(&b, "application_name").await, "");
    assert_eq!(show(&a, "statement_timeout").await, "5s");
    assert_eq!(show(&b, "statement_timeout").await, "0");
    assert_eq!(batch_size(&a).await, "1024");
    assert_eq!(batch_size(&b).await, "8192");
}

#[tokio::test]
async fn transactions_are_accepted_and_autocommit_off_drivers_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let mut client = server.connect().await;
    client
        .batch_execute("CREATE TABLE t (x bigint)")
        .await
        .expect("create");
    // What a driver in autocommit-off mode sends: BEGIN … COMMIT, savepoints inside.
    let mut tx = client.transaction().await.expect("BEGIN");
    tx.execute("INSERT INTO t VALUES (1)", &[])
        .await
        .expect("insert");
    {
        let sp = tx.savepoint("inner").await.expect("SAVEPOINT");
        sp.execute("INSERT INTO t VALUES (2)", &[])
            .await
            .expect("insert in savepoint");
        sp.commit().await.expect("RELEASE");
    }
    tx.commit().await.expect("COMMIT");
    let n: i64 = scalar(&client, "SELECT count(*) FROM t", &[]).await;
    assert_eq!(n, 2);
    // ROLLBACK is accepted but cannot undo: each statement committed when it ran, and
    // the client is told so with a WARNING.
    let tx = client.transaction().await.expect("BEGIN");
    tx.execute("INSERT INTO t VALUES (3)", &[])
        .await
        .expect("insert");
    tx.rollback().await.expect("ROLLBACK");
    let n: i64 = scalar(&client, "SELECT count(*) FROM t", &[]).await;
    assert_eq!(n, 3, "the insert before ROLLBACK stays");
}
