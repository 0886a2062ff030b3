//! The `runbase` binary's command line: `--help`, and `runbase sql` run embedded.

use std::process::Command;

fn runbase() -> Command {
    Command::new(env!("CARGO_BIN_EXE_runbase"))
}

#[test]
fn help_lists_the_subcommands_and_env_vars() {
    let out = runbase().arg("--help").output().expect("run runbase");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("serve") && text.contains("sql"), "{text}");
    let out = runbase()
        .args(["serve", "--help"])
        .output()
        .expect("run runbase");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "RUNBASE_LISTEN",
        "127.0.0.1:5433",
        "RUNBASE_DATA_DIR",
        "./runbase-data",
        "--pg-listen",
        "--listen",
        "--http-listen",
        "RUNBASE_HTTP_LISTEN",
        "127.0.0.1:5480",
        "--no-http",
        "RUNBASE_NO_HTTP",
        "RUNBASE_TORCH_THREADS",
        "RUNBASE_TRAINING_CONCURRENCY",
        "RUNBASE_INFERENCE_CONCURRENCY",
        "RUNBASE_MODEL_CACHE_BYTES",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn sql_runs_statements_embedded_and_reports_sqlstate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let out = runbase()
        .args(["sql", "--data-dir", data])
        .arg(
            "CREATE TABLE t (x int); INSERT INTO t VALUES (41), (1); SELECT sum(x) AS total FROM t",
        )
        .output()
        .expect("run runbase sql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("CREATE TABLE"), "{stdout}");
    assert!(stdout.contains("INSERT 0 2"), "{stdout}");
    assert!(stdout.contains("42"), "{stdout}");
    // The data is there for the next invocation.
    let out = runbase()
        .args(["sql", "--data-dir", data, "SELECT count(*) FROM t"])
        .output()
        .expect("run runbase sql");
    assert!(String::from_utf8_lossy(&out.stdout).contains('2'));
    // Errors go to stderr with their SQLSTATE and a non-zero exit.
    let out = runbase()
        .args(["sql", "--data-dir", data, "SELECT * FROM nope"])
        .output()
        .expect("run runbase sql");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("42P01"), "{stderr}");
}
