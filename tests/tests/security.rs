//! Who gets in and what they may do: SCRAM-SHA-256 logins against users in the catalog,
//! read-only users, TLS (required, and never a silent fallback), the connection limit,
//! trust only on loopback, cancel and statement_timeout, and the server's own files out
//! of reach of SQL.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use runbase_tests::client::{scalar, sqlstate};
use runbase_tests::server::{TestServer, runbase_sql};

fn login_error(result: Result<tokio_postgres::Client, tokio_postgres::Error>) -> String {
    match result {
        Ok(_) => "logged in".to_string(),
        Err(e) => sqlstate(&e),
    }
}

/// Every file under `dir`, read whole.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(all_bytes(&path));
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.extend(bytes);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn scram_logins_users_and_read_only_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Bootstrap: the first superuser is created in-process, before the server runs.
    runbase_sql(
        &data,
        "CREATE USER admin WITH SUPERUSER PASSWORD 'Admin-Secret-1'",
    );
    let server = TestServer::start_with(&data, &["--auth", "scram"]);

    let admin = server
        .connect_as("admin", "Admin-Secret-1")
        .await
        .expect("admin logs in");
    assert_eq!(
        login_error(server.connect_as("admin", "wrong").await),
        "28P01"
    );
    assert_eq!(
        login_error(server.connect_as("nobody", "Admin-Secret-1").await),
        "28P01",
        "an unknown user fails like a wrong password"
    );
    admin
        .batch_execute(
            "CREATE TABLE scores (id bigint, score double precision);
             INSERT INTO scores VALUES (1, 0.5), (2, 0.75);
             CREATE USER bi WITH PASSWORD 'Dashboards-Only-7' IN ROLE pg_read_all_data;
             CREATE USER writer PASSWORD 'Writer-Pass-3'",
        )
        .await
        .expect("admin creates users");
    let dup = admin
        .batch_execute("CREATE USER bi PASSWORD 'x'")
        .await
        .expect_err("duplicate user");
    assert_eq!(sqlstate(&dup), "42710");

    // The read-only user reads everything...
    let bi = server
        .connect_as("bi", "Dashboards-Only-7")
        .await
        .expect("bi logs in");
    let total: f64 = scalar(&bi, "SELECT sum(score) FROM scores", &[]).await;
    assert_eq!(total, 1.25);
    let _: i64 = scalar(&bi, "SELECT count(*) FROM runbase.runs", &[]).await;
    let out: Vec<bytes::Bytes> = bi
        .copy_out("COPY scores TO STDOUT")
        .await
        .expect("COPY TO")
        .try_collect()
        .await
        .expect("copy data");
    assert_eq!(out.concat(), b"1\t0.5\n2\t0.75\n");
    // ...and changes nothing.
    for sql in [
        "CREATE TABLE mine (x int)",
        "INSERT INTO scores VALUES (3, 1.0)",
        "UPDATE scores SET score = 0",
        "DELETE FROM scores",
        "TRUNCATE scores",
        "OPTIMIZE scores",
        "VACUUM scores RETAIN 0 HOURS",
        "SELECT backup('/tmp/nowhere')",
        "DROP TABLE scores",
        "SELECT start_run('e')",
        "SELECT log_metric('00000000-0000-0000-0000-000000000000', 'loss', 1.0)",
        "SELECT * FROM train('m', 'SELECT * FROM scores', '{\"target\": \"score\"}')",
        "SELECT import_model('m', '\\x00'::bytea, '{}')",
        "SELECT set_model_alias('m', 'prod', 1)",
        "CREATE USER sneaky PASSWORD 'x'",
        "ALTER USER bi SUPERUSER",
        "DROP USER admin",
    ] {
        let err = bi.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
    }
    let err = bi
        .copy_in::<_, bytes::Bytes>("COPY scores FROM STDIN")
        .await
        .err()
        .expect("COPY FROM refused");
    assert_eq!(sqlstate(&err), "42501");
    let n: i64 = scalar(&admin, "SELECT count(*) FROM scores", &[]).await;
    assert_eq!(n, 2, "nothing the read-only user tried was stored");

    // Anyone may change their own password; only a superuser manages users.
    bi.batch_execute("ALTER USER bi PASSWORD 'New-Dashboard-Pass-8'")
        .await
        .expect("own password");
    assert_eq!(
        login_error(server.connect_as("bi", "Dashboards-Only-7").await),
        "28P01"
    );
    let bi = server
        .connect_as("bi", "New-Dashboard-Pass-8")
        .await
        .expect("new password works");
    let writer = server
        .connect_as("writer", "Writer-Pass-3")
        .await
        .expect("writer logs in");
    writer
        .batch_execute("CREATE TABLE w (x int); INSERT INTO w VALUES (1)")
        .await
        .expect("a read-write user writes");
    let err = writer
        .batch_execute("CREATE USER other PASSWORD 'x'")
        .await
        .expect_err("not a superuser");
    assert_eq!(sqlstate(&err), "42501");

    // Roles change for new sessions; dropped users cannot log in.
    admin
        .batch_execute("ALTER USER bi READWRITE; DROP USER writer")
        .await
        .expect("alter and drop");
    drop(bi);
    let bi = server
        .connect_as("bi", "New-Dashboard-Pass-8")
        .await
        .expect("bi again");
    bi.batch_execute("INSERT INTO scores VALUES (3, 1.0)")
        .await
        .expect("now read-write");
    assert_eq!(
        login_error(server.connect_as("writer", "Writer-Pass-3").await),
        "28P01"
    );

    // The catalog keeps SCRAM verifiers, never the passwords.
    let stored = all_bytes(&data);
    for password in [
        "Admin-Secret-1",
        "Dashboards-Only-7",
        "New-Dashboard-Pass-8",
        "Writer-Pass-3",
    ] {
        assert!(
            !contains(&stored, password.as_bytes()),
            "{password} is in the data directory"
        );
    }
    assert!(contains(&stored, b"SCRAM-SHA-256$4096:"));
}

#[tokio::test]
async fn concurrent_logins_do_not_mix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    runbase_sql(
        &data,
        "CREATE USER alice PASSWORD 'alice-pw'; CREATE USER bob PASSWORD 'bob-pw'",
    );
    let server = TestServer::start_with(&data, &["--auth", "scram"]);
    let server = std::sync::Arc::new(server);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let (user, password, good) = match i % 4 {
                0 => ("alice", "alice-pw", true),
                1 => ("bob", "bob-pw", true),
                2 => ("alice", "bob-pw", false),
                _ => ("bob", "alice-pw", false),
            };
            let result = server.connect_as(user, password).await;
            match (result, good) {
                (Ok(client), true) => {
                    let who: String = scalar(&client, "SELECT current_user", &[]).await;
                    assert_eq!(who, user);
                }
                (Err(e), false) => assert_eq!(sqlstate(&e), "28P01"),
                (Ok(_), false) => panic!("{user} logged in with the wrong password"),
                (Err(e), true) => panic!("{user} could not log in: {e}"),
            }
        }));
    }
    for t in tasks {
        t.await.expect("login task");
    }
}

fn make_certificate(dir: &Path) -> (String, String) {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl")
        .status;
    assert!(status.success(), "openssl failed");
    (cert.display().to_string(), key.display().to_string())
}

fn psql_conninfo(conninfo: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-X", "-At", "-d", conninfo, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql")
}

#[test]
fn tls_required_and_never_a_plaintext_fallback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = make_certificate(dir.path());
    // A TLS configuration that does not load stops the server: no plaintext fallback.
    let bad = TestServer::refuses_to_start(
        &dir.path().join("data0"),
        &["--tls-cert", "/nonexistent/cert.pem", "--tls-key", &key],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("TLS certificate"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let swapped = TestServer::refuses_to_start(
        &dir.path().join("data1"),
        &["--tls-cert", &key, "--tls-key", &cert],
    );
    assert!(!swapped.status.success(), "a key given as the certificate");

    let server = TestServer::start_with(
        &dir.path().join("data"),
        &["--tls-cert", &cert, "--tls-key", &key, "--require-tls"],
    );
    let base = format!(
        "host=127.0.0.1 port={} user=runbase dbname=runbase",
        server.port
    );
    let plain = psql_conninfo(&format!("{base} sslmode=disable"), "SELECT 1");
    assert!(!plain.status.success(), "plaintext accepted");
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("requires TLS"), "{stderr}");
    let tls = psql_conninfo(&format!("{base} sslmode=require"), "SELECT 41 + 1");
    assert!(
        tls.status.success(),
        "{}",
        String::from_utf8_lossy(&tls.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&tls.stdout).trim(), "42");
    let info = Command::new("psql")
        .args([
            "-X",
            "-d",
            &format!("{base} sslmode=require"),
            "-c",
            "\\conninfo",
        ])
        .output()
        .expect("psql");
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("SSL connection"),
        "{}",
        String::from_utf8_lossy(&info.stdout)
    );
}

#[test]
fn trust_is_only_allowed_on_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = TestServer::refuses_to_start(dir.path(), &["--listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--auth scram"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn connection_limit_refuses_with_53300() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(dir.path(), &["--max-connections", "2"]);
    let a = server.connect().await;
    let b = server.connect().await;
    let err = tokio_postgres::connect(&server.conn_str(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("a third connection is refused");
    assert_eq!(sqlstate(&err), "53300");
    let message = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("too many clients"), "{err:?}");
    // psql over the limit gets the message too.
    let out = server.psql(&["-c", "SELECT 1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("too many clients"));
    // The connected ones are unaffected; a slot frees when one leaves.
    let _: i64 = scalar(&a, "SELECT 1::bigint", &[]).await;
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_postgres::connect(&server.conn_str(), tokio_postgres::NoTls).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no slot after a client left: {e}"),
        }
    }
}

#[tokio::test]
async fn cancel_stops_a_streaming_query_and_statement_timeout_ends_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    // Cancel while rows are streaming.
    let rows = client
        .query_raw(
            "SELECT value FROM generate_series(1, 2000000000) AS t(value)",
            Vec::<i64>::new(),
        )
        .await
        .expect("start streaming");
    futures::pin_mut!(rows);
    for _ in 0..1000 {
        rows.next().await.expect("a row").expect("row ok");
    }
    client
        .cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel");
    let started = Instant::now();
    let err = loop {
        match rows.next().await {
            Some(Ok(_)) => assert!(
                started.elapsed() < Duration::from_secs(30),
                "still streaming 30 s after the cancel"
            ),
            Some(Err(e)) => break e,
            None => panic!("the query ended without an error"),
        }
    };
    assert_eq!(sqlstate(&err), "57014", "{err}");
    let one: i64 = scalar(&client, "SELECT 1::bigint", &[]).await;
    assert_eq!(one, 1, "the connection is usable after a cancel");

    // The same over the simple protocol (psql's Ctrl-C), in a batch whose later
    // statement must not run.
    client
        .batch_execute("CREATE TABLE after_cancel (x bigint)")
        .await
        .expect("create");
    let messages = client
        .simple_query_raw(
            "SELECT value FROM generate_series(1, 2000000000) AS t(value); \
             INSERT INTO after_cancel VALUES (1)",
        )
        .await
        .expect("start streaming");
    futures::pin_mut!(messages);
    let mut seen = 0;
    while seen < 1000 {
        if let tokio_postgres::SimpleQueryMessage::Row(_) =
            messages.next().await.expect("a row").expect("row ok")
        {
            seen += 1;
        }
    }
    client
        .cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel");
    let started = Instant::now();
    let err = loop {
        match messages.next().await {
            Some(Ok(_)) => assert!(
                started.elapsed() < Duration::from_secs(30),
                "still streaming 30 s after the cancel"
            ),
            Some(Err(e)) => break e,
            None => panic!("the query ended without an error"),
        }
    };
    assert_eq!(sqlstate(&err), "57014", "{err}");
    let inserted: i64 = scalar(&client, "SELECT count(*) FROM after_cancel", &[]).await;
    assert_eq!(inserted, 0, "the statement after the canceled one ran");

    // statement_timeout, while computing and while streaming.
    client
        .batch_execute("SET statement_timeout = 300")
        .await
        .expect("SET statement_timeout");
    let started = Instant::now();
    let err = client
        .query("SELECT count(*) FROM generate_series(1, 20000000000)", &[])
        .await
        .expect_err("times out");
    assert_eq!(sqlstate(&err), "57014");
    let message = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("statement timeout"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let err = client
        .query(
            "SELECT value FROM generate_series(1, 2000000000) AS t(value)",
            &[],
        )
        .await
        .expect_err("times out while streaming");
    assert_eq!(sqlstate(&err), "57014");
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .expect("reset");
    let n: i64 = scalar(
        &client,
        "SELECT count(*) FROM generate_series(1, 1000)",
        &[],
    )
    .await;
    assert_eq!(n, 1000);
}

#[tokio::test]
async fn server_files_are_out_of_reach() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = TestServer::start(&data);
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE t (line text)")
        .await
        .expect("create");
    for (sql, code) in [
        ("COPY t FROM '/etc/passwd'", "0A000"),
        ("COPY t TO '/tmp/runbase-leak'", "0A000"),
        ("SELECT * FROM '/etc/passwd'", "42P01"),
        ("SELECT pg_read_file('/etc/passwd')", "42883"),
    ] {
        let err = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err), code, "{sql}: {err}");
    }
    for sql in [
        "CREATE EXTERNAL TABLE pw (line text) STORED AS CSV LOCATION '/etc/passwd'",
        "CREATE EXTERNAL TABLE pw STORED AS CSV LOCATION '/etc/'",
    ] {
        client.batch_execute(sql).await.expect_err(sql);
    }
    let err = client
        .query("SELECT * FROM pw", &[])
        .await
        .expect_err("no table pw");
    assert_eq!(sqlstate(&err), "42P01");
    assert!(!Path::new("/tmp/runbase-leak").exists());

    // Names cannot climb out of their prefix on the object store.
    client
        .batch_execute(
            "CREATE TABLE \"../../escaped\" (x int); INSERT INTO \"../../escaped\" VALUES (1)",
        )
        .await
        .expect("a table may have any name");
    let n: i64 = scalar(&client, "SELECT count(*) FROM \"../../escaped\"", &[]).await;
    assert_eq!(n, 1);
    assert!(!dir.path().join("escaped").exists());
    assert!(!data.join("escaped").exists());
    let run: String = scalar(&client, "SELECT start_run('paths')", &[]).await;
    for path in ["../outside", "a/../../b", "/etc/passwd"] {
        let err = client
            .query(
                "SELECT log_artifact($1, $2, '\\x00'::bytea)",
                &[&run, &path],
            )
            .await
            .expect_err(path);
        assert_eq!(sqlstate(&err), "22023", "{path}: {err}");
    }
    let err = client
        .query("SELECT set_model_alias('../m', 'prod', 1)", &[])
        .await
        .expect_err("model name with ..");
    assert!(
        ["22023", "42704"].contains(&sqlstate(&err).as_str()),
        "{err}"
    );
}

/// `curl` with `args`; returns (exit success, stdout with headers).
fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn https_serves_the_api_and_login_cookies_are_secure_over_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = make_certificate(dir.path());
    let data = dir.path().join("data");
    runbase_sql(
        &data,
        "CREATE USER viewer WITH READONLY PASSWORD 'Viewer-1'",
    );
    let server = TestServer::start_with(
        &data,
        &["--tls-cert", &cert, "--tls-key", &key, "--auth", "scram"],
    );
    // The certificate is self-signed for localhost: --cacert trusts exactly it, and
    // --resolve points localhost at the server.
    let port = server.http_addr().port();
    let base = format!("https://localhost:{port}");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let cert = &cert;
    let curl = |args: &[&str]| {
        let mut all = vec!["--resolve", resolve.as_str()];
        all.extend_from_slice(args);
        curl(&all)
    };
    let (ok, health) = curl(&["--cacert", cert, &format!("{base}/health")]);
    assert!(ok && health.contains(r#"{"status":"ok"}"#), "{health}");
    // Plain HTTP on the TLS port gets no answer.
    let (_, plain) = curl(&[&format!("http://{}/health", server.http_addr())]);
    assert!(!plain.contains(r#""status":"ok""#), "{plain}");
    // The API needs a login; the login cookie is HttpOnly, SameSite=Strict and Secure.
    let (_, refused) = curl(&["--cacert", cert, &format!("{base}/api/v1/experiments")]);
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let (_, wrong) = curl(&[
        "--cacert",
        cert,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"user": "viewer", "password": "nope"}"#,
        &format!("{base}/api/v1/login"),
    ]);
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let (_, login) = curl(&[
        "--cacert",
        cert,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"user": "viewer", "password": "Viewer-1"}"#,
        &format!("{base}/api/v1/login"),
    ]);
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    let cookie = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {login}"));
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "runbase_session="] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(login.contains(r#""role":"readonly""#), "{login}");
    let session = cookie
        .split_once("runbase_session=")
        .and_then(|(_, v)| v.split(';').next())
        .expect("session value");
    let (_, listed) = curl(&[
        "--cacert",
        cert,
        "-b",
        &format!("runbase_session={session}"),
        &format!("{base}/api/v1/experiments"),
    ]);
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    // The read-only session's query box cannot write.
    let (_, write) = curl(&[
        "--cacert",
        cert,
        "-b",
        &format!("runbase_session={session}"),
        &format!("{base}/api/v1/query?sql=CREATE%20TABLE%20t%20(a%20int)"),
    ]);
    assert!(
        write.starts_with("HTTP/1.1 403") || write.starts_with("HTTP/1.1 400"),
        "{write}"
    );
}
