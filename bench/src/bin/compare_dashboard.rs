//! The dashboard's reads, runbase against an MLflow tracking server, side by side, plus
//! what a browser sees of runbase's dashboard.
//!
//! Both hold the same data: an experiment of `--runs` finished runs (params lr, layers; a
//! metric loss) and one run with a `--points`-point metric. Measured, median of `--reps`:
//! - one page of the runs table (50 rows) sorted by loss, as each UI asks for it: runbase's
//!   `GET /api/v1/experiments/{name}/runs`, MLflow's `POST runs/search` with `order_by`;
//! - the long series for a 1,000-pixel chart: runbase's M4-downsampled
//!   `GET /api/v1/runs/{id}/metric?points=1000` (every spike kept), MLflow's
//!   `get-history-bulk-interval` with `max_results=1000` (what its UI's charts use; it
//!   samples, so spikes can vanish).
//!
//! runbase alone, the many-keys case: `--wide-runs` runs with `--wide-keys` metric keys each
//! (1,000 × 1,000): the column picker's keys and a page sorted by one of those keys.
//!
//! In headless Chromium (runbase only; bench/python/dashboard_load.py): first paint of the
//! runs table, draw time of the long series' chart, and live latency from `log_metric`
//! returning to the point on the chart.
//!
//! ```sh
//! source scripts/env.sh
//! cargo build --release --workspace --bins
//! $CARGO_TARGET_DIR/release/compare_dashboard            # 10,000 runs, 1,000,000 points
//! $CARGO_TARGET_DIR/release/compare_dashboard --quick    # small sizes, a smoke run
//! ```

use std::ffi::OsStr;

use clap::Parser;
use runbase_bench::peers::{Mlflow, Runbase, free_port, python_json, python_json_with};
use runbase_bench::report::{Row, Table};

/// Sizes of the comparison.
#[derive(Debug, Clone, Parser)]
struct Args {
    /// Runs in the experiment whose table is read.
    #[arg(long, default_value_t = 10_000)]
    runs: usize,
    /// Points of the long series.
    #[arg(long, default_value_t = 1_000_000)]
    points: usize,
    /// Repetitions (medians are reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Runs of the many-keys experiment (runbase only).
    #[arg(long, default_value_t = 1_000)]
    wide_runs: usize,
    /// Metric keys of each of its runs.
    #[arg(long, default_value_t = 1_000)]
    wide_keys: usize,
    /// Small sizes for a quick run.
    #[arg(long)]
    quick: bool,
}

fn run(python: Option<&std::path::Path>, argv: &[&str]) -> serde_json::Value {
    let argv: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
    match python {
        Some(p) => python_json_with(p, "dashboard_load.py", &argv),
        None => python_json("dashboard_load.py", &argv),
    }
}

fn secs(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("dashboard_load.py: no {key} in {v}"))
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.runs = args.runs.min(200);
        args.points = args.points.min(20_000);
        args.reps = 1;
        args.wide_runs = args.wide_runs.min(20);
        args.wide_keys = args.wide_keys.min(100);
    }
    let http = format!("127.0.0.1:{}", free_port());
    let (runbase, _client) =
        Runbase::start_with(true, &[("RUNBASE_HTTP_LISTEN", http.clone())]).await;
    let http = format!("http://{http}");
    let mlflow = Mlflow::start(1);
    let python = mlflow.python();
    let (conninfo, uri) = (runbase.conn_str(), mlflow.uri());
    let (runs, points, reps) = (
        args.runs.to_string(),
        args.points.to_string(),
        args.reps.to_string(),
    );
    let (wide_runs, wide_keys) = (args.wide_runs.to_string(), args.wide_keys.to_string());
    let sizes = [
        "--runs",
        runs.as_str(),
        "--points",
        points.as_str(),
        "--wide-runs",
        wide_runs.as_str(),
        "--wide-keys",
        wide_keys.as_str(),
    ];

    run(
        Some(&python),
        &[&["fill-runbase", "--conninfo", &conninfo][..], &sizes].concat(),
    );
    run(
        Some(&python),
        &[&["fill-mlflow", "--uri", &uri][..], &sizes].concat(),
    );
    let ours = run(
        Some(&python),
        &[
            &["read-runbase", "--http", &http, "--reps", &reps][..],
            &sizes,
        ]
        .concat(),
    );
    let theirs = run(
        Some(&python),
        &[&["read-mlflow", "--uri", &uri, "--reps", &reps][..], &sizes].concat(),
    );
    // The browser side runs under the test venv (selenium), runbase only.
    let browser = run(
        None,
        &[
            &[
                "browser",
                "--http",
                &http,
                "--conninfo",
                &conninfo,
                "--reps",
                &reps,
            ][..],
            &sizes,
        ]
        .concat(),
    );

    let mut table = Table::new(
        &format!("MLflow {}", mlflow.version()),
        &format!(
            "Dashboard reads: runbase's /api/v1 vs MLflow {}'s REST API (what its UI calls), median of {}",
            mlflow.version(),
            args.reps
        ),
    );
    table.push(Row::lower_better(
        &format!(
            "runs table: one page of 50 of {} runs, sorted by a metric (ms)",
            args.runs
        ),
        secs(&ours, "runs_page") * 1e3,
        secs(&theirs, "runs_page") * 1e3,
    ));
    table.push(Row::lower_better(
        &format!(
            "{}-point series for a 1,000-pixel chart (ms; runbase M4 {} points, MLflow sampled {})",
            args.points, ours["series_points"], theirs["series_points"]
        ),
        secs(&ours, "series") * 1e3,
        secs(&theirs, "series") * 1e3,
    ));
    println!("{}", table.markdown());
    println!(
        "runbase alone, {} runs with {} metric keys each: the column picker's keys in {:.0} ms; \
         a page of 50 sorted by one of the keys in {:.0} ms.",
        args.wide_runs,
        args.wide_keys,
        secs(&ours, "wide_keys") * 1e3,
        secs(&ours, "wide_page") * 1e3,
    );
    println!(
        "runbase's dashboard in headless Chromium: runs table of {} runs first painted {:.0} ms after navigation; \
         the {}-point chart drawn in {:.1} ms; live latency (log_metric returned → point on the chart) median {:.0} ms, worst {:.0} ms.",
        args.runs,
        secs(&browser, "first_paint") * 1e3,
        args.points,
        secs(&browser, "draw") * 1e3,
        secs(&browser, "live") * 1e3,
        secs(&browser, "live_worst") * 1e3,
    );
}
