//! The HTTP front end of the real server, over plain sockets: `GET /health`, `/ready`
//! and `/metrics` (read back through a real Prometheus and `runbase.stats`), `--no-http`,
//! refusing to start when a front end cannot bind, and one SIGTERM stopping both front
//! ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use runbase_tests::server::TestServer;

/// One response: status line, headers (lower-cased names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET path` on `stream` (HTTP/1.1, keep-alive) and reads one response, by its
/// Content-Length, leaving the connection open.
fn get_on(stream: &mut TcpStream, path: &str) -> Response {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("send request");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("header");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("body");
    Response {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the HTTP front end");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

fn get(addr: SocketAddr, path: &str) -> Response {
    get_on(&mut connect(addr), path)
}

fn closed(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
}

#[test]
fn health_is_json_and_unknown_routes_are_json_404s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let health = get(server.http_addr(), "/health");
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&health.body).expect("JSON body");
    assert_eq!(json, serde_json::json!({"status": "ok"}));

    let missing = get(server.http_addr(), "/no/such/thing");
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&missing.body).expect("JSON body");
    assert_eq!(json["error_code"], "object_not_found");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("/no/such/thing")),
        "{json}"
    );
}

#[tokio::test]
async fn no_http_leaves_the_port_closed_and_pg_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(dir.path(), &["--no-http"]);
    let client = server.connect().await;
    let one: i64 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(one, 1);
    assert!(
        closed(server.http_addr()),
        "--no-http, yet the HTTP port answers"
    );
}

#[test]
fn sigterm_stops_both_front_ends_promptly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A long grace period: the server must not need it with only idle connections open.
    let mut server = TestServer::start_with(dir.path(), &["--shutdown-grace-secs", "20"]);
    // An idle keep-alive HTTP connection is closed by the drain, not waited on.
    let mut keep_alive = connect(server.http_addr());
    assert_eq!(get_on(&mut keep_alive, "/health").status, 200);
    let (pg, http) = (
        SocketAddr::from(([127, 0, 0, 1], server.port)),
        server.http_addr(),
    );
    let started = Instant::now();
    let status = server.terminate();
    let took = started.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        took < Duration::from_secs(10),
        "SIGTERM took {took:?} to stop the server"
    );
    assert!(closed(pg), "the PostgreSQL port still answers");
    assert!(closed(http), "the HTTP port still answers");
    let mut rest = Vec::new();
    let read = keep_alive.read_to_end(&mut rest).map_err(|e| e.kind());
    assert!(
        matches!(read, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "the idle HTTP connection was not closed: {read:?}"
    );
}

#[test]
fn a_front_end_that_cannot_bind_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let out = TestServer::refuses_to_start(dir.path(), &["--http-listen", &addr]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot listen for HTTP clients") && stderr.contains(&addr),
        "{stderr}"
    );
}

#[test]
fn non_loopback_http_needs_scram() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = TestServer::refuses_to_start(dir.path(), &["--http-listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--auth scram"), "{stderr}");
}

/// The value of the sample `name{labels}` in a metrics text.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn ready_metrics_and_runbase_stats_agree_and_prometheus_scrapes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let addr = server.http_addr();

    let ready = get(addr, "/ready");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ready.body).expect("JSON"),
        serde_json::json!({"status": "ready"})
    );

    // Statements over psql: two that succeed, one refused while planning, one that
    // does not parse.
    let ok = server.psql(&[
        "-c",
        "CREATE TABLE t (x int)",
        "-c",
        "INSERT INTO t VALUES (1), (2)",
        "-c",
        "SELECT * FROM t",
    ]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        !server
            .psql(&["-c", "SELECT * FROM missing"])
            .status
            .success()
    );
    assert!(!server.psql(&["-c", "SELEC 1"]).status.success());

    let metrics = get(addr, "/metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        metrics.headers
    );
    let text = &metrics.body;
    let count = |name: &str, labels: &str| sample(text, name, labels);
    assert_eq!(
        count("runbase_statements_total", r#"kind="insert",result="ok""#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        count("runbase_statements_total", r#"kind="ddl",result="ok""#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        count(
            "runbase_statements_total",
            r#"kind="select",result="not_found""#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        count(
            "runbase_statements_total",
            r#"kind="unknown",result="invalid_input""#
        ),
        Some(1.0),
        "{text}"
    );
    // The three psql runs (the harness waits for the server's ready file, not a connect).
    assert_eq!(
        count("runbase_connections_accepted_total", r#"front_end="pg""#),
        Some(3.0),
        "{text}"
    );

    assert!(
        count("runbase_rows_returned_total", "").is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert!(
        count(
            "runbase_statement_duration_seconds_count",
            r#"kind="select""#
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        count("runbase_rocksdb_sst_files_size_bytes", "").is_some(),
        "{text}"
    );
    assert!(
        count("runbase_process_resident_memory_bytes", "").is_some_and(|n| n > 1e6),
        "{text}"
    );
    // CREATE TABLE and INSERT wrote the table's files through the object store.
    assert!(
        count(
            "runbase_object_store_requests_total",
            r#"op="put",result="ok""#
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert!(
        count(
            "runbase_device_memory_bytes",
            r#"device="cpu",kind="total""#
        )
        .is_some_and(|n| n > 1e8),
        "{text}"
    );
    assert_eq!(
        count("runbase_train_jobs", r#"state="queued""#),
        Some(0.0),
        "{text}"
    );

    // The same counter through SQL.
    let stats = server.psql(&[
        "-At",
        "-c",
        r#"SELECT value FROM runbase.stats WHERE name = 'runbase_statements_total' AND labels = 'kind="insert",result="ok"'"#,
    ]);
    assert!(stats.status.success(), "{stats:?}");
    assert_eq!(String::from_utf8_lossy(&stats.stdout).trim(), "1");

    // A real Prometheus scraping the server every second, asked through its query API.
    let [prom_port] = runbase_tests::server::free_ports::<1>();
    let prom_dir = tempfile::tempdir().expect("tempdir");
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: runbase\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .expect("write the scrape config");
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start prometheus (scripts/setup.sh installs Debian's prometheus)");
    let prom: SocketAddr = format!("127.0.0.1:{prom_port}").parse().expect("address");
    let query =
        "/api/v1/query?query=runbase_statements_total%7Bkind%3D%22insert%22%2Cresult%3D%22ok%22%7D";
    let deadline = Instant::now() + Duration::from_secs(90);
    let answer = loop {
        let body = TcpStream::connect_timeout(&prom, Duration::from_secs(1))
            .ok()
            .map(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("read timeout");
                get_on(&mut s, query)
            })
            .filter(|r| r.status == 200)
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok());
        if let Some(json) = &body
            && json["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        {
            break json.clone();
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the metric: {body:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let result = &answer["data"]["result"][0];
    assert_eq!(result["metric"]["job"], "runbase", "{answer}");
    assert_eq!(result["metric"]["instance"], addr.to_string(), "{answer}");
    assert_eq!(result["value"][1], "1", "{answer}");
}
