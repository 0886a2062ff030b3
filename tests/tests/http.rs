//! The HTTP front end of the real server, over plain sockets: `GET /health`, `--no-http`,
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
