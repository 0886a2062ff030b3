//! Experiment logging, runbase against an MLflow tracking server, side by side.
//!
//! MLflow 3.17.2 runs as users run it locally: `mlflow server` with a SQLite backend store
//! on loopback, driven by its own client (`MlflowClient`), in its best set-up for one
//! sequential client: one worker (with its default 4, a `log_metric` call took 66 ms
//! instead of 19 ms here) and a warm-up round first (each worker's first requests open its
//! store: seconds). runbase
//! runs with default durability and is driven by psycopg 3 from the same Python
//! interpreter doing the same logical work (bench/python/tracking_log.py): one run's
//! bookkeeping (start, 10 params, a tag, end), single synchronous `log_metric` calls,
//! `log_batch` of 1,000 metrics per call (MLflow's limit) against one
//! `INSERT INTO runbase.metrics … unnest(…)` per 1,000 points, and reading one metric's
//! history back. Runs alternate between the two; medians are reported.
//!
//! A second table keeps the client the same: MLflow's own client against runbase's MLflow
//! REST API (`MLFLOW_TRACKING_URI` pointed at runbase's HTTP port) and against the MLflow
//! server, adding `search_runs` over `--search-runs` runs and `get_metric_history` of a
//! `--history-points`-point metric.
//!
//! ```sh
//! source scripts/env.sh          # RUNBASE_MLFLOW_VENV: scripts/bench.sh installs mlflow there
//! cargo build --release --workspace --bins
//! $CARGO_TARGET_DIR/release/compare_mlflow            # full sizes
//! $CARGO_TARGET_DIR/release/compare_mlflow --quick    # small sizes, a smoke run
//! ```

use std::ffi::OsStr;

use clap::Parser;
use runbase_bench::peers::{Mlflow, Runbase, python_json_with};
use runbase_bench::report::{Row, Table, median};

/// Sizes of the comparison.
#[derive(Debug, Clone, Parser)]
struct Args {
    /// Sequential single `log_metric` calls.
    #[arg(long, default_value_t = 500)]
    single: usize,
    /// Points logged in batches.
    #[arg(long, default_value_t = 50_000)]
    batch_points: usize,
    /// Points per batch (MLflow accepts at most 1,000 metrics per `log_batch`).
    #[arg(long, default_value_t = 1_000)]
    batch_size: usize,
    /// Repetitions (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// MLflow server workers.
    #[arg(long, default_value_t = 1)]
    mlflow_workers: usize,
    /// Untimed warm-up rounds (small sizes) before the measured ones, on both sides.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Runs searched by `search_runs` (same-client table).
    #[arg(long, default_value_t = 10_000)]
    search_runs: usize,
    /// Points of the metric read back by `get_metric_history` (same-client table).
    #[arg(long, default_value_t = 100_000)]
    history_points: usize,
    /// Small sizes for a quick run.
    #[arg(long)]
    quick: bool,
}

/// One repetition's seconds per phase.
struct Phases {
    run: f64,
    single: f64,
    batch: f64,
    history: f64,
    /// Same-client runs only.
    history_long: f64,
    search: f64,
}

/// One run of the client script; `extra`: also the search and long-history phases.
fn log(
    python: &std::path::Path,
    system: &str,
    target: (&str, &str),
    args: &Args,
    extra: bool,
) -> Phases {
    let (single, points, size) = (
        args.single.to_string(),
        args.batch_points.to_string(),
        args.batch_size.to_string(),
    );
    let (runs, history) = (
        args.search_runs.to_string(),
        args.history_points.to_string(),
    );
    let mut argv = vec![
        system,
        target.0,
        target.1,
        "--single",
        &single,
        "--batch-points",
        &points,
        "--batch-size",
        &size,
    ];
    if extra {
        argv.extend(["--search-runs", &runs, "--history-points", &history]);
    }
    let argv: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
    let out = python_json_with(python, "tracking_log.py", &argv);
    let get = |k: &str| {
        out[k]
            .as_f64()
            .unwrap_or_else(|| panic!("tracking_log.py: no {k} in {out}"))
    };
    Phases {
        run: get("run"),
        single: get("single"),
        batch: get("batch"),
        history: get("history"),
        history_long: if extra { get("history_long") } else { 0.0 },
        search: if extra { get("search") } else { 0.0 },
    }
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.single = args.single.min(20);
        args.batch_points = args.batch_points.min(2_000);
        args.search_runs = args.search_runs.min(100);
        args.history_points = args.history_points.min(2_000);
        args.reps = 1;
        args.warmup = 0;
    }
    let http = format!("127.0.0.1:{}", runbase_bench::peers::free_port());
    let (runbase, _client) =
        Runbase::start_with(true, &[("RUNBASE_HTTP_LISTEN", http.clone())]).await;
    let mlflow = Mlflow::start(args.mlflow_workers);
    let python = mlflow.python();
    let conninfo = runbase.conn_str();
    let uri = mlflow.uri();
    let runbase_uri = format!("http://{http}");

    let warmup = Args {
        single: 10,
        batch_points: 2 * args.batch_size,
        ..args.clone()
    };
    for _ in 0..args.warmup {
        log(
            &python,
            "runbase",
            ("--conninfo", &conninfo),
            &warmup,
            false,
        );
        log(&python, "mlflow", ("--uri", &uri), &warmup, false);
        log(&python, "mlflow", ("--uri", &runbase_uri), &warmup, false);
    }

    // 0: runbase over SQL, 1: MLflow server, 2: the MLflow client against runbase.
    let mut phases: [Vec<Phases>; 3] = [vec![], vec![], vec![]];
    for rep in 0..args.reps {
        // Rotate which goes first.
        let mut order = [0, 1, 2];
        order.rotate_left(rep % 3);
        for which in order {
            let p = match which {
                0 => log(&python, "runbase", ("--conninfo", &conninfo), &args, false),
                1 => log(&python, "mlflow", ("--uri", &uri), &args, true),
                _ => log(&python, "mlflow", ("--uri", &runbase_uri), &args, true),
            };
            phases[which].push(p);
        }
    }
    let med = |which: usize, f: fn(&Phases) -> f64| {
        median(&phases[which].iter().map(f).collect::<Vec<_>>())
    };

    let mut table = Table::new(
        &format!("MLflow {}", mlflow.version()),
        &format!(
            "Logging: runbase (psycopg 3) vs MLflow {} (SQLite backend, its client), median of {}",
            mlflow.version(),
            args.reps
        ),
    );
    table.push(Row::lower_better(
        "one run's bookkeeping: start, 10 params, a tag, end (ms)",
        med(0, |p| p.run) * 1e3,
        med(1, |p| p.run) * 1e3,
    ));
    table.push(Row::higher_better(
        &format!("{} single log_metric calls (calls/s)", args.single),
        args.single as f64 / med(0, |p| p.single),
        args.single as f64 / med(1, |p| p.single),
    ));
    table.push(Row::higher_better(
        &format!(
            "{} points by log_batch of {} / one INSERT per {} (points/s)",
            args.batch_points, args.batch_size, args.batch_size
        ),
        args.batch_points as f64 / med(0, |p| p.batch),
        args.batch_points as f64 / med(1, |p| p.batch),
    ));
    table.push(Row::lower_better(
        &format!("history of one metric, {} points (ms)", args.single),
        med(0, |p| p.history) * 1e3,
        med(1, |p| p.history) * 1e3,
    ));
    println!("{}", table.markdown());

    let mut same = Table::new(
        &format!("MLflow {} (same client)", mlflow.version()),
        &format!(
            "The same MLflow client (MlflowClient): runbase's MLflow API vs MLflow {} (SQLite backend), median of {}",
            mlflow.version(),
            args.reps
        ),
    );
    same.push(Row::higher_better(
        &format!("{} single log_metric calls (calls/s)", args.single),
        args.single as f64 / med(2, |p| p.single),
        args.single as f64 / med(1, |p| p.single),
    ));
    same.push(Row::higher_better(
        &format!(
            "{} points by log_batch of {} (points/s)",
            args.batch_points, args.batch_size
        ),
        args.batch_points as f64 / med(2, |p| p.batch),
        args.batch_points as f64 / med(1, |p| p.batch),
    ));
    same.push(Row::lower_better(
        &format!(
            "search_runs over {} runs: acc > 0.5, best first, every page (ms)",
            args.search_runs
        ),
        med(2, |p| p.search) * 1e3,
        med(1, |p| p.search) * 1e3,
    ));
    same.push(Row::lower_better(
        &format!("get_metric_history of {} points (ms)", args.history_points),
        med(2, |p| p.history_long) * 1e3,
        med(1, |p| p.history_long) * 1e3,
    ));
    println!("{}", same.markdown());
}
