//! sqlsmith (Debian's package) against a fresh server, through `scripts/sqlsmith.sh`: a short
//! run with a fixed seed in every test run (the long one is documented in
//! docs/reliability.md). The server must not exit or panic, and no query may get XX000 but
//! for the DataFusion bugs `scripts/sqlsmith/known_internal.txt` lists. sqlsmith reads
//! runbase's catalog itself, so this also checks that `pg_catalog` describes what runbase
//! has: a type or function it lists but lacks makes sqlsmith abort.

use std::path::Path;
use std::process::Command;

use runbase_tests::server::runbase_bin;

#[test]
fn sqlsmith_finds_no_crash_panic_or_internal_error() {
    let out = tempfile::tempdir().expect("temp dir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let queries = std::env::var("RUNBASE_SQLSMITH_QUERIES").unwrap_or_else(|_| "1000".into());
    let run = Command::new(repo.join("scripts/sqlsmith.sh"))
        .args([queries.as_str(), "1"])
        .env("RUNBASE_BIN", runbase_bin())
        .env("SQLSMITH_OUT", out.path())
        .output()
        .expect("run scripts/sqlsmith.sh");
    let report = String::from_utf8_lossy(&run.stdout);
    let summary = std::fs::read_to_string(out.path().join("summary.txt")).unwrap_or_default();
    assert!(
        run.status.success(),
        "{report}\n{}\n{summary}",
        String::from_utf8_lossy(&run.stderr)
    );
    // sqlsmith ran its queries against the server, and a fair share of them ran.
    let ran: usize = summary
        .lines()
        .find_map(|l| l.split("ran: ").nth(1))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("the summary's count of queries that ran");
    assert!(
        ran * 10 >= queries.parse::<usize>().expect("a number"),
        "{summary}"
    );
    eprintln!("{summary}");
}
