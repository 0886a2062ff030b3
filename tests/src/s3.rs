//! A real S3-compatible server on loopback for tests: moto's server (`moto[server]` from
//! PyPI, installed by `scripts/setup.sh` into the test venv).
//!
//! moto keeps objects in memory, answers conditional PUTs (`If-None-Match: *`) and
//! multipart uploads, and accepts any credentials. One server per test; each test makes
//! its own bucket.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Credentials and region moto accepts (any would do), as the server's environment.
pub const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

/// Path of `moto_server`: in the test venv (`$RUNBASE_TORCH_VENV/bin`), else on `PATH`.
fn moto_bin() -> PathBuf {
    if let Ok(venv) = std::env::var("RUNBASE_TORCH_VENV") {
        let bin = PathBuf::from(venv).join("bin").join("moto_server");
        if bin.exists() {
            return bin;
        }
    }
    PathBuf::from("moto_server")
}

/// A running moto server.
pub struct MotoServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl MotoServer {
    /// Starts moto on a free loopback port and waits until it answers as S3 does. The port
    /// is picked before moto binds it, so a server of a test running alongside may take it
    /// first: then moto exits (or another server answers), and it starts again on another.
    pub fn start() -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::try_start() {
                return server;
            }
        }
        panic!("moto_server did not start on any of 5 ports");
    }

    fn try_start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let child = Command::new(moto_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server (run scripts/setup.sh to install moto[server])");
        let mut server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // moto's answer to ListBuckets, not whatever else may listen there.
            if let Ok((200, body)) = server.request("GET", "/", &[])
                && body.contains("ListAllMyBucketsResult")
            {
                return Some(server);
            }
            if let Ok(Some(_)) = server.child.try_wait() {
                return None;
            }
            if Instant::now() > deadline {
                // Dropping the server kills its child.
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The endpoint URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self
            .request("PUT", &format!("/{bucket}"), &[])
            .expect("create bucket");
        assert!(
            status == 200,
            "creating bucket {bucket}: HTTP {status}: {body}"
        );
    }

    /// Keys of the objects in `bucket` under `prefix` (one ListObjectsV2 page, up to
    /// 1000 keys: enough for tests).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self
            .request(
                "GET",
                &format!("/{bucket}?list-type=2&prefix={prefix}"),
                &[],
            )
            .expect("list objects");
        assert_eq!(status, 200, "listing {bucket}/{prefix}: {body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|part| part.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// The `--object-store` and S3 flags for a server keeping its data in `bucket/prefix`.
    pub fn server_args(&self, bucket: &str, prefix: &str) -> Vec<String> {
        vec![
            "--object-store".into(),
            format!("s3://{bucket}/{prefix}"),
            "--s3-endpoint".into(),
            self.endpoint(),
            "--s3-allow-http".into(),
        ]
    }

    /// One plain HTTP/1.1 request (moto checks no signatures); returns status and body.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text}")))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a [`FaultyProxy`] does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards to the server.
    None,
    /// Closes every connection at once (the store is unreachable).
    Refuse,
    /// Answers every request `403 AccessDenied`, as S3 does for bad credentials.
    Deny,
    /// Answers every request `503 SlowDown`, as S3 does when it throttles.
    Throttle,
}

/// A loopback TCP proxy in front of an S3 server that injects faults on demand: point
/// runbase at [`FaultyProxy::endpoint`] and switch with [`FaultyProxy::set`]. A switch
/// closes open connections at their next read, so it takes effect on the next request.
pub struct FaultyProxy {
    port: u16,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
}

impl FaultyProxy {
    /// A proxy forwarding to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU8, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let port = listener.local_addr().expect("proxy addr").port();
        let mode = Arc::new(AtomicU8::new(0));
        let shared = mode.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let mode = shared.clone();
                std::thread::spawn(move || match mode.load(Ordering::SeqCst) {
                    0 => {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            return;
                        };
                        pump_both(client, server, mode);
                    }
                    status @ (2 | 3) => {
                        let mut buf = [0u8; 65536];
                        let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
                        let _ = client.read(&mut buf);
                        let (line, code, message) = if status == 2 {
                            ("403 Forbidden", "AccessDenied", "Access Denied")
                        } else {
                            (
                                "503 Slow Down",
                                "SlowDown",
                                "Please reduce your request rate.",
                            )
                        };
                        let body = format!(
                            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
                        );
                        let _ = write!(
                            client,
                            "HTTP/1.1 {line}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    _ => drop(client),
                });
            }
        });
        Self { port, mode }
    }

    /// The endpoint URL to give runbase.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the fault.
    pub fn set(&self, fault: Fault) {
        let v = match fault {
            Fault::None => 0,
            Fault::Refuse => 1,
            Fault::Deny => 2,
            Fault::Throttle => 3,
        };
        self.mode.store(v, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies bytes both ways until either side closes or the proxy's mode changes.
fn pump_both(
    client: TcpStream,
    server: TcpStream,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
) {
    let pump = |mut from: TcpStream,
                mut to: TcpStream,
                mode: std::sync::Arc<std::sync::atomic::AtomicU8>| {
        let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = [0u8; 65536];
        loop {
            if mode.load(std::sync::atomic::Ordering::SeqCst) != 0 {
                break;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = from.shutdown(std::net::Shutdown::Both);
        let _ = to.shutdown(std::net::Shutdown::Both);
    };
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let m2 = mode.clone();
    let up = std::thread::spawn(move || pump(client, server, mode));
    pump(s2, c2, m2);
    let _ = up.join();
}
