//! The dashboard in a real browser: Debian's headless Chromium driven by Selenium
//! (`tests/python/dashboard_browser.py`) against the real server, with data and a TRAIN
//! sent over pgwire by psycopg. The script asserts on page state; see it for the checks.
//! `RUNBASE_SCREENSHOTS=<dir>` also saves screenshots there.

use std::process::Command;

use runbase_tests::server::{TestServer, runbase_sql};

/// Runs the browser script's `scenario` against `server`; fails the test if it fails.
fn browse(server: &TestServer, scenario: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/dashboard_browser.py");
    // Under scram the script adds each user and password to this.
    let pg = if scenario == "trust" {
        server.conn_str()
    } else {
        format!("host=127.0.0.1 port={} dbname=runbase", server.port)
    };
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(scenario)
        .arg("--http")
        .arg(format!("http://{}", server.http_addr()))
        .arg("--pg")
        .arg(pg);
    if let Ok(dir) = std::env::var("RUNBASE_SCREENSHOTS") {
        cmd.arg("--screenshots").arg(dir);
    }
    let out = cmd
        .output()
        .expect("run python3 (scripts/setup.sh installs selenium)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "dashboard browser checks ({scenario}) failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn dashboard_in_chromium_sorts_filters_compares_draws_a_million_points_and_follows_a_train_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    browse(&server, "trust");
}

#[test]
fn dashboard_under_scram_needs_a_login_and_the_read_only_user_cannot_cancel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    for sql in [
        "CREATE USER admin WITH SUPERUSER PASSWORD 'Admin-Secret-1'",
        "CREATE USER viewer WITH READONLY PASSWORD 'Viewer-Secret-1'",
        "CREATE USER writer WITH READWRITE PASSWORD 'Writer-Secret-1'",
    ] {
        runbase_sql(&data, sql);
    }
    let server = TestServer::start_with(&data, &["--auth", "scram"]);
    browse(&server, "scram");
}
