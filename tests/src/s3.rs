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
    /// Starts moto on a free loopback port and waits until it answers.
    pub fn start() -> Self {
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
            if server.request("GET", "/", &[]).is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("moto_server exited with {status} before listening");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer within 60 s"
            );
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
