//! Shared set-up for runbase's benchmarks: data generation and database fixtures.
//!
//! # Layout
//! - [`data`]: deterministic data generation shared by the comparisons.
//! - [`peers`]: runbase and PostgreSQL started locally for side-by-side runs.
//! - [`report`]: the side-by-side table with medians and ratios.
//! - [`metrics_insert_sql`]: a multi-row `INSERT` of synthetic training metrics.
//! - [`fixture`]: a database in a temporary directory with a filled `metrics` table.
//! - [`ProcStatus`]: a server process's `/proc/<pid>/status` figures (memory, threads).
//!
//! # Example
//! ```no_run
//! # async fn demo() {
//! let (db, _dir) = runbase_bench::fixture(1_000).await;
//! let _ = db.session().query("SELECT count(*) FROM metrics").await;
//! # }
//! ```

pub mod data;
pub mod peers;
pub mod report;

use runbase_engine::Database;

/// `INSERT INTO metrics` of `rows` synthetic (run, step, loss) rows starting at `first_step`.
pub fn metrics_insert_sql(rows: usize, first_step: usize) -> String {
    let mut sql = String::from("INSERT INTO metrics VALUES ");
    for i in 0..rows {
        let step = first_step + i;
        if i > 0 {
            sql.push(',');
        }
        let loss = 1.0 / (step as f64 + 1.0);
        sql.push_str(&format!("({}, {step}, {loss})", step % 10));
    }
    sql
}

/// A database in a fresh temporary directory with `rows` metric rows in one version.
pub async fn fixture(rows: usize) -> (Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_dir(dir.path()).await.expect("open database");
    let session = db.session();
    session
        .sql("CREATE TABLE metrics (run_id bigint, step bigint, loss double precision)")
        .await
        .expect("create metrics");
    if rows > 0 {
        session
            .sql(&metrics_insert_sql(rows, 0))
            .await
            .expect("fill metrics");
    }
    (db, dir)
}

/// A process's `/proc/<pid>/status`, read once; empty if the process is gone.
#[derive(Debug)]
pub struct ProcStatus(String);

impl ProcStatus {
    /// Reads the status of process `pid`.
    pub fn read(pid: u32) -> Self {
        Self(std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default())
    }

    /// The number a field (`"VmRSS:"`, `"Threads:"`) holds, without its `kB` unit; 0 if
    /// it is missing.
    pub fn field(&self, name: &str) -> u64 {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    }
}
