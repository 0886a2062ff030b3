//! A real `runbase serve` process for tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the `runbase` binary: `$RUNBASE_BIN`, else next to the test executable.
pub fn runbase_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RUNBASE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug/runbase
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    dir.join("runbase")
}

/// Runs `runbase sql <sql>` against `data_dir` (the server must not be running on it):
/// how tests create users before a `--auth scram` server starts. Panics if it fails.
pub fn runbase_sql(data_dir: &Path, sql: &str) {
    let out = Command::new(runbase_bin())
        .arg("sql")
        .arg("--data-dir")
        .arg(data_dir)
        .arg(sql)
        .output()
        .expect("run runbase sql");
    assert!(
        out.status.success(),
        "runbase sql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `N` distinct free loopback ports (each listener is held until all are chosen, so the
/// system cannot hand out one port twice).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    std::array::from_fn(|i| {
        listeners[i]
            .local_addr()
            .map(|a| a.port())
            .expect("a free loopback port")
    })
}

/// One HTTP/1.1 request to `addr` on a fresh connection (`Connection: close`): `headers` are
/// extra header lines, each ending in CRLF. Answers the status and the body (lossily UTF-8).
pub fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the HTTP front end");
    // A bound on a request that hangs; generous, as a first scoring request loads a model.
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Whether `extra` sets the PostgreSQL address itself.
fn sets_pg_listen(extra: &[&str]) -> bool {
    extra.iter().any(|a| {
        ["--listen", "--pg-listen"]
            .iter()
            .any(|f| a == f || a.starts_with(&format!("{f}=")))
    })
}

/// Whether `extra` sets the HTTP address itself.
fn sets_http_listen(extra: &[&str]) -> bool {
    extra
        .iter()
        .any(|a| *a == "--http-listen" || a.starts_with("--http-listen="))
}

/// A running server over a data directory.
pub struct TestServer {
    child: Option<Child>,
    /// The port it listens on for PostgreSQL clients.
    pub port: u16,
    /// The port its HTTP front end listens on (or would, under `--no-http`): a free one,
    /// so that servers of tests running in parallel do not collide on the default.
    pub http_port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl TestServer {
    /// Starts a server on `data_dir` and waits until it accepts connections.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Runs `runbase serve` on free loopback ports (PostgreSQL and HTTP, unless `extra`
    /// names them) with `extra` arguments and returns its output, for a server expected
    /// to refuse to start.
    pub fn refuses_to_start(data_dir: &Path, extra: &[&str]) -> std::process::Output {
        Self::refuses_to_start_with_env(data_dir, extra, &[])
    }

    /// [`TestServer::refuses_to_start`] with environment variables `env` set.
    pub fn refuses_to_start_with_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> std::process::Output {
        let [pg_port, http_port] = free_ports::<2>();
        let mut cmd = Command::new(runbase_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn");
        if !sets_pg_listen(extra) {
            cmd.arg("--listen").arg(format!("127.0.0.1:{pg_port}"));
        }
        if !sets_http_listen(extra) {
            cmd.arg("--http-listen")
                .arg(format!("127.0.0.1:{http_port}"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn runbase");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("wait for runbase").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("runbase did not exit within 60 s (it was expected to refuse to start)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("runbase output")
    }

    /// Starts a server on `data_dir` with `extra` command-line arguments. It listens on
    /// free loopback ports: `port` for PostgreSQL clients, `http_port` for HTTP (passed as
    /// `--http-listen` unless `extra` sets it, when `http_port` is not used; with
    /// `--no-http` in `extra` nothing listens there).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// [`TestServer::start_with`] with environment variables `env` set (`AWS_*`, …).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        // Both front ends bind port 0 and the server names the ports it got in its ready
        // file: ports picked here and bound later could be taken by a server of a test
        // running alongside in the meantime. `http_port` stays a free port under
        // `--no-http`, where nothing listens.
        let [http_port] = free_ports::<1>();
        let ready = tempfile::tempdir().expect("tempdir for the ready file");
        let ready_file = ready.path().join("ready");
        let bin = runbase_bin();
        assert!(
            bin.exists(),
            "runbase binary not found at {} (build it with `cargo build -p runbase-server`, or set RUNBASE_BIN)",
            bin.display()
        );
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--ready-file")
            .arg(&ready_file);
        if !sets_http_listen(extra) {
            cmd.arg("--http-listen").arg("127.0.0.1:0");
        }
        let child = cmd
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn runbase");
        let mut server = Self {
            child: Some(child),
            port: 0,
            http_port,
            data_dir: data_dir.to_path_buf(),
        };
        server.wait_ready(&ready_file);
        server
    }

    /// Waits for the server's ready file (written once every front end listens) and takes
    /// its ports from it.
    fn wait_ready(&mut self, ready_file: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(text) = std::fs::read_to_string(ready_file) {
                for line in text.lines() {
                    let port = |addr: &str| {
                        addr.parse::<std::net::SocketAddr>()
                            .map(|a| a.port())
                            .unwrap_or_else(|e| panic!("ready file line {line:?}: {e}"))
                    };
                    if let Some(addr) = line.strip_prefix("postgres=") {
                        self.port = port(addr);
                    } else if let Some(addr) = line.strip_prefix("http=") {
                        self.http_port = port(addr);
                    }
                }
                assert_ne!(self.port, 0, "ready file without a postgres line: {text:?}");
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("wait for runbase"))
            {
                panic!("runbase exited with {status} before listening (its stderr is above)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("runbase did not write its ready file within 60 s (its stderr is above)");
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// The HTTP front end's address.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// The libpq connection string.
    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=runbase dbname=runbase",
            self.port
        )
    }

    /// The libpq connection string for `user` with `password`.
    pub fn conn_str_as(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=runbase",
            self.port
        )
    }

    /// Connects with tokio-postgres as `user` with `password`.
    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.conn_str_as(user, password), tokio_postgres::NoTls)
                .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Connects with tokio-postgres.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.conn_str(), tokio_postgres::NoTls)
            .await
            .expect("connect to runbase");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// Runs `psql` with `args` (after the connection options) and returns its output.
    pub fn psql(&self, args: &[&str]) -> std::process::Output {
        self.psql_command(args)
            .output()
            .expect("run psql (install postgresql-client)")
    }

    /// The `psql` command with the connection options and `args`, to spawn.
    pub fn psql_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("psql");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "runbase",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// Whether the server process has exited (on its own: a failpoint's abort, a crash).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("wait for runbase"))
    }

    /// Kills the server with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL runbase");
            child.wait().expect("reap runbase");
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for runbase") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "runbase ignored SIGTERM for 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
