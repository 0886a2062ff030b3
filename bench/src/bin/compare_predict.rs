//! PREDICT against the two other ways to score a table, side by side.
//!
//! 1M rows × 32 features, one MLP (32 → 128 → 64 → 2, trained by runbase, then exported):
//! - runbase: `SELECT id, prediction FROM predict('bench_mlp', 'SELECT * FROM data')`,
//!   timed as a client sees it, every row read over the wire;
//! - the Python job: psycopg 3 fetches `id, f0 … f31`, PyTorch runs the same exported
//!   TorchScript module in the same chunks, labels picked with argmax;
//! - the floor: that module's forward pass alone over an in-memory float32 tensor of the
//!   same shape, in the same chunks — nothing scores these rows faster on this machine.
//!
//! Same libtorch threads on every side. Runs alternate; medians are reported.
//!
//! ```sh
//! source scripts/env.sh
//! cargo build --release --workspace --bins
//! $CARGO_TARGET_DIR/release/compare_predict            # 1M rows
//! $CARGO_TARGET_DIR/release/compare_predict --quick    # 20k rows, a smoke run
//! ```

use std::path::Path;
use std::time::Instant;

use clap::Parser;
use futures::TryStreamExt;
use runbase_bench::data::scoring_table_sql;
use runbase_bench::peers::{Runbase, python_json};
use runbase_bench::report::{Row, Table, median};

/// Sizes of the comparison.
#[derive(Debug, Parser)]
struct Args {
    /// Rows to score.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Feature columns.
    #[arg(long, default_value_t = 32)]
    features: usize,
    /// libtorch threads on every side (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Repetitions (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Small sizes for a quick run.
    #[arg(long)]
    quick: bool,
}

/// Rows per forward pass: DataFusion's batch size, which runbase scores batch by batch.
const CHUNK: usize = 8192;

fn run_python(mode: &str, model: &Path, conninfo: &str, args: &Args, threads: usize) -> f64 {
    let (features, rows, threads, chunk) = (
        args.features.to_string(),
        args.rows.to_string(),
        threads.to_string(),
        CHUNK.to_string(),
    );
    let out = python_json(
        "predict_job.py",
        &[
            mode.as_ref(),
            model.as_os_str(),
            "--conninfo".as_ref(),
            conninfo.as_ref(),
            "--features".as_ref(),
            features.as_ref(),
            "--rows".as_ref(),
            rows.as_ref(),
            "--threads".as_ref(),
            threads.as_ref(),
            "--chunk".as_ref(),
            chunk.as_ref(),
        ],
    );
    assert_eq!(out["rows"].as_u64(), Some(args.rows as u64), "{out}");
    let seconds = out["seconds"].as_f64().expect("seconds");
    eprintln!("  python {mode}: {seconds:.3} s");
    seconds
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.rows = 20_000;
        args.reps = 1;
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (server, client) =
        Runbase::start_with(false, &[("RUNBASE_TORCH_THREADS", threads.to_string())]).await;
    let start = Instant::now();
    client
        .batch_execute(&scoring_table_sql("data", args.rows, args.features))
        .await
        .expect("create data");
    eprintln!(
        "data: {} rows in {:.1} s",
        args.rows,
        start.elapsed().as_secs_f64()
    );
    let features: Vec<String> = (0..args.features).map(|k| format!("f{k}")).collect();
    let train = format!(
        "SELECT metrics FROM train('bench_mlp', 'SELECT {}, label FROM data WHERE id <= 20000', 'label', \
         '{{\"hidden_layers\": [128, 64], \"epochs\": 3, \"seed\": 1, \"device\": \"cpu\"}}')",
        features.join(", ")
    );
    let metrics: String = client.query_one(&train, &[]).await.expect("train").get(0);
    eprintln!("model: {metrics}");
    let blob: Vec<u8> = client
        .query_one("SELECT export_model('bench_mlp')", &[])
        .await
        .expect("export")
        .get(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("bench_mlp.pt");
    std::fs::write(&model, blob).expect("write model");

    let sql = "SELECT id, prediction FROM predict('bench_mlp', 'SELECT * FROM data')";
    let (mut ours, mut job, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..args.reps {
        eprintln!("rep {}/{}", rep + 1, args.reps);
        let start = Instant::now();
        let rows: Vec<tokio_postgres::Row> = client
            .query_raw(sql, std::iter::empty::<i64>())
            .await
            .expect("predict")
            .try_collect()
            .await
            .expect("rows");
        let seconds = start.elapsed().as_secs_f64();
        assert_eq!(rows.len(), args.rows);
        eprintln!("  runbase: {seconds:.3} s");
        ours.push(seconds);
        job.push(run_python(
            "job",
            &model,
            &server.conn_str(),
            &args,
            threads,
        ));
        floor.push(run_python("floor", &model, "", &args, threads));
    }
    // Where runbase's time goes: the same rows over the wire without a model, and the
    // scoring without the wire.
    let (mut wire, mut scoring) = (Vec::new(), Vec::new());
    for _ in 0..args.reps {
        let start = Instant::now();
        let rows: Vec<tokio_postgres::Row> = client
            .query_raw("SELECT id, label FROM data", std::iter::empty::<i64>())
            .await
            .expect("read")
            .try_collect()
            .await
            .expect("rows");
        assert_eq!(rows.len(), args.rows);
        wire.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        client
            .query_one(
                "SELECT count(*) FROM predict('bench_mlp', 'SELECT * FROM data')",
                &[],
            )
            .await
            .expect("count");
        scoring.push(start.elapsed().as_secs_f64());
    }
    eprintln!(
        "reference: {} rows of (id, label) over the wire without a model {:.3} s; predict without the wire (count(*)) {:.3} s",
        args.rows,
        median(&wire),
        median(&scoring)
    );
    let rate = |s: &[f64]| args.rows as f64 / median(s);
    let mut table = Table::new(
        "psycopg 3 + PyTorch job",
        &format!(
            "PREDICT: score {} rows × {} features with an MLP 128-64, {threads} libtorch threads (rows/s, median of {})",
            args.rows, args.features, args.reps
        ),
    );
    table.push(Row::higher_better(
        "PREDICT: score rows, read over the wire (rows/s)",
        rate(&ours),
        rate(&job),
    ));
    table.push(
        Row::higher_better(
            "PREDICT: score rows, read over the wire (rows/s)",
            rate(&ours),
            rate(&floor),
        )
        .against("raw libtorch forward (floor)"),
    );
    println!("{}", table.markdown());
    println!(
        "runbase {:.0} rows/s, Python job {:.0} rows/s, floor {:.0} rows/s; runbase is {:.2}× the Python job and takes {:.2}× the floor's time",
        rate(&ours),
        rate(&job),
        rate(&floor),
        median(&job) / median(&ours),
        median(&ours) / median(&floor)
    );
}
