//! The stock `mlflow` client (3.17.2, from PyPI) against the real server, unchanged:
//! `tests/python/mlflow_client.py` drives the fluent API and `MlflowClient` through a
//! training script's whole life (see the script for every check). Here: what it logs is
//! runbase's own data (read back over SQL), a run logged over SQL is an MLflow run, the
//! same script gives the same answers from a real `mlflow server`, MLflow's error
//! answers, and basic auth under `--auth scram`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runbase_tests::client::{describe, sqlstate};
use runbase_tests::server::{TestServer, free_ports, runbase_sql};

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/python/mlflow_client.py")
}

/// Runs the client script in `mode` against `uri` with `args`; its stdout.
fn client(mode: &str, uri: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(script())
        .arg(mode)
        .arg("--uri")
        .arg(uri)
        .args(args)
        // The client's own retries would turn a failure into minutes of waiting.
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .expect("run python3 (scripts/setup.sh installs mlflow-skinny)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mlflow client ({mode}) against {uri} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// The workflow's normalized summary, as JSON.
fn workflow(uri: &str, out: &Path, extra: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let path = out.to_str().expect("utf-8 path");
    let mut args = vec!["--out", path];
    args.extend_from_slice(extra);
    let stdout = client("workflow", uri, &args);
    let ids: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .expect("the script prints the ids"),
    )
    .expect("ids JSON");
    let summary = serde_json::from_str(&std::fs::read_to_string(out).expect("summary"))
        .expect("summary JSON");
    (summary, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_mlflow_client_logs_into_runbase_and_sees_runs_logged_over_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"));
    let pg = server.connect().await;

    // A run logged over SQL, for the client to find.
    let sql_run: String = pg
        .query_one(
            "SELECT start_run('sql-side', 'from-sql', '{\"source\": \"sql\"}')",
            &[],
        )
        .await
        .expect("start_run")
        .get(0);
    for (step, loss) in [(0i64, 0.9f64), (1, 0.5), (2, 0.25)] {
        pg.execute(
            "SELECT log_metric($1, 'loss', $2, $3)",
            &[&sql_run, &loss, &step],
        )
        .await
        .expect("log_metric");
    }
    pg.execute("SELECT end_run($1)", &[&sql_run])
        .await
        .expect("end_run");

    let uri = format!("http://{}", server.http_addr());
    let (summary, ids) = workflow(
        &uri,
        &dir.path().join("runbase.json"),
        &["--sql-run", &sql_run, "--sql-experiment", "sql-side"],
    );
    assert_eq!(summary["parent"]["status"], "FINISHED", "{summary}");

    // What the client logged is runbase's own data: in the SQL tables at once.
    // MLflow writes run ids as 32 hex digits, SQL with hyphens.
    let hex = ids["parent_run_id"].as_str().expect("parent id");
    assert_eq!(hex.len(), 32, "{hex}");
    let parent = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    let parent = parent.as_str();
    let points: i64 = pg
        .query_one(
            "SELECT count(*) FROM runbase.metrics WHERE run_id = $1 AND key = 'loss'",
            &[&parent],
        )
        .await
        .expect("metrics")
        .get(0);
    assert_eq!(points, 50);
    let asynchronous: i64 = pg
        .query_one(
            "SELECT count(*) FROM runbase.metrics WHERE run_id = $1 AND key LIKE 'async_%'",
            &[&parent],
        )
        .await
        .expect("metrics")
        .get(0);
    assert_eq!(asynchronous, 80, "every asynchronous batch landed");
    let retried: i64 = pg
        .query_one(
            "SELECT count(*) FROM runbase.metrics WHERE run_id = $1 AND key = 'retry'",
            &[&parent],
        )
        .await
        .expect("metrics")
        .get(0);
    assert_eq!(retried, 1, "a retried batch is stored once");
    let lr: String = pg
        .query_one(
            "SELECT value FROM runbase.params WHERE run_id = $1 AND key = 'lr'",
            &[&parent],
        )
        .await
        .expect("params")
        .get(0);
    assert_eq!(lr, "0.01");
    let artifacts: Vec<String> = pg
        .query(
            "SELECT path FROM runbase.artifacts WHERE run_id = $1 ORDER BY path",
            &[&parent],
        )
        .await
        .expect("artifacts")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        artifacts,
        ["notes.txt", "plots/a.csv", "plots/deep/b.bin"],
        "the proxied files are the run's artifacts"
    );
    let children: i64 = pg
        .query_one(
            "SELECT count(*) FROM runbase.runs WHERE parent_run_id = $1",
            &[&parent],
        )
        .await
        .expect("runs")
        .get(0);
    assert_eq!(children, 1, "nested runs keep their parent");

    // The TorchScript model registered through MLflow, imported by its URI, is served by
    // PREDICT and over HTTP with the answer PyTorch gave.
    let version: i64 = pg
        .query_one(
            "SELECT import_model('rb_linear', mlflow_model_file('models:/rb-linear@champion'), \
             '{\"inputs\": [\"a\", \"b\", \"c\", \"d\"], \"output\": \"regression\"}')",
            &[],
        )
        .await
        .expect("import the MLflow model")
        .get(0);
    assert_eq!(version, 1);
    let want = ids["model_output"].as_f64().expect("model output");
    let got: f64 = pg
        .query_one(
            "SELECT prediction FROM predict('rb_linear', 'SELECT 1.0 AS a, 2.0 AS b, 3.0 AS c, 4.0 AS d')",
            &[],
        )
        .await
        .expect("predict")
        .get(0);
    assert!((got - want).abs() < 1e-5, "PREDICT {got}, PyTorch {want}");
    let bad = pg
        .query_one("SELECT mlflow_model_file('models:/rb-linear@nope')", &[])
        .await
        .expect_err("an unknown alias");
    assert_eq!(sqlstate(&bad), "42704", "{}", describe(&bad));
    assert!(describe(&bad).contains("alias"), "{}", describe(&bad));

    // Errors as MLflow answers them, and the server still serves.
    client("errors", &uri, &[]);
    let alive: i64 = pg
        .query_one("SELECT count(*) FROM runbase.runs", &[])
        .await
        .expect("still serving")
        .get(0);
    assert!(alive >= 7, "{alive}");
}

#[test]
fn basic_auth_under_scram_checks_users_and_the_read_only_role_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    for sql in [
        "CREATE USER writer WITH READWRITE PASSWORD 'Writer-Secret-1'",
        "CREATE USER viewer WITH READONLY PASSWORD 'Viewer-Secret-1'",
    ] {
        runbase_sql(&data, sql);
    }
    let server = TestServer::start_with(&data, &["--auth", "scram"]);
    client("auth", &format!("http://{}", server.http_addr()), &[]);
}

/// The Python that has the full `mlflow` (its server), installed by scripts/setup.sh.
fn mlflow_venv_python() -> PathBuf {
    let venv = std::env::var("RUNBASE_MLFLOW_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/runbase/mlflow-venv",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    PathBuf::from(venv).join("bin/python3")
}

/// A real `mlflow server` (SQLite store, artifacts proxied to a local directory).
struct MlflowServer {
    child: Child,
    port: u16,
}

impl MlflowServer {
    fn start(dir: &Path) -> Self {
        let [port] = free_ports::<1>();
        let python = mlflow_venv_python();
        assert!(
            python.exists(),
            "{} is missing: scripts/setup.sh installs mlflow there",
            python.display()
        );
        let child = Command::new(&python)
            .args([
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--workers",
                "1",
            ])
            .arg("--port")
            .arg(port.to_string())
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mlflow server");
        let mut server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ = s.write_all(
                    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                );
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") {
                    return server;
                }
            }
            if let Some(status) = server.child.try_wait().expect("wait") {
                panic!("mlflow server exited with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "mlflow server did not start in 120 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_same_script_gets_the_same_answers_from_runbase_and_from_mlflow_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference_dir = dir.path().join("mlflow");
    std::fs::create_dir_all(&reference_dir).expect("mkdir");
    let reference = MlflowServer::start(&reference_dir);
    let (expected, _) = workflow(
        &format!("http://127.0.0.1:{}", reference.port),
        &dir.path().join("mlflow.json"),
        &[],
    );
    drop(reference);

    let server = TestServer::start(&dir.path().join("data"));
    let (got, _) = workflow(
        &format!("http://{}", server.http_addr()),
        &dir.path().join("runbase.json"),
        &[],
    );
    assert_eq!(
        got,
        expected,
        "runbase answered differently from mlflow server:\nrunbase: {}\nmlflow:  {}",
        serde_json::to_string_pretty(&got).unwrap_or_default(),
        serde_json::to_string_pretty(&expected).unwrap_or_default()
    );
}
