//! Peers started locally for side-by-side comparisons: the `runbase` server itself, a
//! throwaway PostgreSQL 15 cluster and an MLflow tracking server, each on a free loopback
//! port, each stopped on drop.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `bench/python/<script>` with `args` under the venv's `python3` (put first on `PATH`
/// by scripts/env.sh) and parses the JSON line it prints; panics with its stderr if it fails.
pub fn python_json(script: &str, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    python_json_with(Path::new("python3"), script, args)
}

/// [`python_json`] under another interpreter (a peer's own venv).
pub fn python_json_with(
    python: &Path,
    script: &str,
    args: &[&std::ffi::OsStr],
) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .expect("run python3 (source scripts/env.sh for the venv with torch)");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The JSON is the last line: libraries may print before it (MLflow prints run links).
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{script} printed {text}: {e}"))
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_for(conn: &str, what: &str) -> tokio_postgres::Client {
    let start = Instant::now();
    loop {
        match tokio_postgres::connect(conn, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                return client;
            }
            Err(e) if start.elapsed() > Duration::from_secs(60) => {
                panic!("{what} did not accept connections within 60 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A `runbase serve` process on a fresh data directory.
pub struct Runbase {
    child: Child,
    port: u16,
    synchronous_commit: bool,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

/// The `runbase` binary: `$RUNBASE_BIN`, else next to this executable.
pub fn runbase_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RUNBASE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("own path");
    exe.parent().expect("bin directory").join("runbase")
}

impl Runbase {
    /// Starts the server; `synchronous_commit` as its flag of that name.
    pub async fn start(synchronous_commit: bool) -> (Self, tokio_postgres::Client) {
        Self::start_with(synchronous_commit, &[]).await
    }

    /// Starts the server with extra environment variables.
    pub async fn start_with(
        synchronous_commit: bool,
        env: &[(&str, String)],
    ) -> (Self, tokio_postgres::Client) {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let child = Self::spawn(dir.path(), port, synchronous_commit, &env);
        let me = Self {
            child,
            port,
            synchronous_commit,
            env,
            dir,
        };
        let client = wait_for(&me.conn_str(), "runbase").await;
        (me, client)
    }

    fn spawn(dir: &Path, port: u16, synchronous_commit: bool, env: &[(String, String)]) -> Child {
        // Most comparisons speak PostgreSQL only: no HTTP port to collide on, unless the
        // caller names one in RUNBASE_HTTP_LISTEN.
        let http = env.iter().any(|(k, _)| k == "RUNBASE_HTTP_LISTEN");
        Command::new(runbase_bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
                &dir.display().to_string(),
                "--synchronous-commit",
                &synchronous_commit.to_string(),
            ])
            .args(if http { None } else { Some("--no-http") })
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", runbase_bin().display()))
    }

    /// Kills the server (SIGKILL: no shutdown code runs) and starts it again on the same
    /// data directory; returns a client once it accepts connections.
    pub async fn restart(&mut self) -> tokio_postgres::Client {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(
            self.dir.path(),
            self.port,
            self.synchronous_commit,
            &self.env,
        );
        wait_for(&self.conn_str(), "runbase").await
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The connection string.
    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=bench dbname=runbase",
            self.port
        )
    }
}

impl Drop for Runbase {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET path` on loopback `port` answers 200 (within 5 s).
pub fn answers_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.split_whitespace().nth(1) == Some("200")
}

/// Ends the process group `child` leads (spawned with `process_group(0)`): TERM, then
/// KILL half a second later; `--` so the negative group id is not read as an option.
pub fn stop_group(child: &mut Child) {
    for signal in ["-TERM", "-KILL"] {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", child.id())])
            .status();
        if signal == "-TERM" {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A PostgreSQL 15 cluster in a temporary directory (Debian's server binaries).
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// The server options `pg_ctl start` passes.
    opts: String,
    dir: tempfile::TempDir,
}

fn as_postgres_user(cmd: &Path) -> Command {
    // initdb refuses to run as root; run the server as the `postgres` user then.
    // SAFETY-free check of the effective user: `id -u`.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(cmd);
        c
    } else {
        Command::new(cmd)
    }
}

impl Postgres {
    /// `initdb` and start a cluster with default durability (`fsync`, `synchronous_commit`
    /// on) unless `synchronous_commit` is false.
    pub async fn start(synchronous_commit: bool) -> (Self, tokio_postgres::Client) {
        let bin = PathBuf::from(
            std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let status = as_postgres_user(&bin.join("initdb"))
            .args([
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb (apt install postgresql-15)");
        assert!(status.success(), "initdb failed");
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c shared_buffers=512MB -c max_wal_size=8GB -c synchronous_commit={}",
            dir.path().display(),
            if synchronous_commit { "on" } else { "off" }
        );
        let me = Self {
            bin,
            data,
            port,
            opts,
            dir,
        };
        me.pg_ctl_start();
        let client = wait_for(&me.conn_str(), "postgres").await;
        (me, client)
    }

    fn pg_ctl_start(&self) {
        let status = as_postgres_user(&self.bin.join("pg_ctl"))
            .args([
                "-D",
                &self.data.display().to_string(),
                "-o",
                &self.opts,
                "-l",
            ])
            .arg(self.dir.path().join("log"))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(status.success(), "pg_ctl start failed");
    }

    fn pg_ctl_stop_immediate(&self) {
        let _ = as_postgres_user(&self.bin.join("pg_ctl"))
            .args([
                "-D",
                &self.data.display().to_string(),
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Stops the server the hard way (`pg_ctl -m immediate`: no checkpoint, crash
    /// recovery at the next start) and starts it again; returns a client.
    pub async fn restart(&mut self) -> tokio_postgres::Client {
        self.pg_ctl_stop_immediate();
        self.pg_ctl_start();
        wait_for(&self.conn_str(), "postgres").await
    }

    /// The connection string.
    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The server's version number alone (`15.18`), for table headings.
    pub async fn short_version(client: &tokio_postgres::Client) -> String {
        Self::version(client)
            .await
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// `SELECT version()`.
    pub async fn version(client: &tokio_postgres::Client) -> String {
        client
            .query_one("SHOW server_version", &[])
            .await
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.pg_ctl_stop_immediate();
    }
}

/// An MLflow tracking server (`mlflow server`, SQLite backend store, local artifact root)
/// from the venv at `$RUNBASE_MLFLOW_VENV` (installed by scripts/bench.sh).
pub struct Mlflow {
    child: Child,
    port: u16,
    venv: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mlflow {
    /// The venv holding `mlflow` (and psycopg, so both sides run under one interpreter).
    pub fn venv() -> PathBuf {
        std::env::var_os("RUNBASE_MLFLOW_VENV")
            .map(PathBuf::from)
            .expect("RUNBASE_MLFLOW_VENV (source scripts/env.sh; scripts/bench.sh installs it)")
    }

    /// Starts the server with `workers` uvicorn workers (its default is 4) on a fresh SQLite
    /// database and waits until `/health` answers (workers import for ~20 s on 2 cores).
    pub fn start(workers: usize) -> Self {
        let venv = Self::venv();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new(venv.join("bin").join("mlflow"))
            .arg("server")
            .arg("--backend-store-uri")
            .arg(format!(
                "sqlite:///{}",
                dir.path().join("mlflow.db").display()
            ))
            .arg("--default-artifact-root")
            .arg(dir.path().join("artifacts"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--workers", &workers.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop ends the uvicorn workers too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start mlflow from {}: {e}", venv.display()));
        let mut me = Self {
            child,
            port,
            venv,
            _dir: dir,
        };
        let start = Instant::now();
        while !me.healthy() {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("mlflow server exited: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "mlflow server did not answer /health within 180 s"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        me
    }

    fn healthy(&self) -> bool {
        answers_ok(self.port, "/health")
    }

    /// The tracking URI.
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The venv's interpreter.
    pub fn python(&self) -> PathBuf {
        self.venv.join("bin").join("python3")
    }

    /// `mlflow --version`'s number.
    pub fn version(&self) -> String {
        Command::new(self.venv.join("bin").join("mlflow"))
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .rsplit(' ')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default()
    }
}

impl Drop for Mlflow {
    fn drop(&mut self) {
        // `mlflow server` runs uvicorn and its workers as children: end the whole group.
        stop_group(&mut self.child);
    }
}
