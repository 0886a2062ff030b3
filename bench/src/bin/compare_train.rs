//! TRAIN against the same training written in Python PyTorch, side by side.
//!
//! Both train the same MLP (inputs → 128 → 64 → 2, ReLU, Adam, cross-entropy) on the same
//! deterministic synthetic data for the same epochs and batch size, with the same libtorch
//! thread count, and both compute the validation loss and accuracy after every epoch.
//! runbase's time is the whole `SELECT * FROM train(…)` statement as a client sees it:
//! reading the table, preprocessing, training, logging every epoch's metrics (synced),
//! tracing and storing the model. Python's is its training loop over tensors already in
//! memory (standardization included). Runs alternate; medians are reported.
//!
//! ```sh
//! source scripts/env.sh
//! cargo build --release --workspace --bins
//! $CARGO_TARGET_DIR/release/compare_train            # full sizes
//! $CARGO_TARGET_DIR/release/compare_train --quick    # small sizes, a smoke run
//! ```

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use futures::SinkExt;
use runbase_bench::data::Rng;
use runbase_bench::peers::{Runbase, python_json};
use runbase_bench::report::{Row, Table, median};

/// Sizes of the comparison.
#[derive(Debug, Parser)]
struct Args {
    /// Rows of training data (80% train, 20% validation).
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Feature columns.
    #[arg(long, default_value_t = 32)]
    features: usize,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// libtorch threads on both sides (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Repetitions (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Small sizes for a quick run.
    #[arg(long)]
    quick: bool,
}

/// Writes `rows` rows of a noisy linear two-class problem as CSV (`f0, …, label`).
fn write_data(path: &Path, rows: usize, features: usize) -> String {
    let mut rng = Rng::new(20_261_130);
    let weights: Vec<f64> = (0..features).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
    let mut header: Vec<String> = (0..features).map(|i| format!("f{i}")).collect();
    header.push("label".into());
    let mut text = header.join(",") + "\n";
    for _ in 0..rows {
        let x: Vec<f64> = (0..features).map(|_| rng.next_f64() * 4.0 - 2.0).collect();
        let score: f64 =
            x.iter().zip(&weights).map(|(a, b)| a * b).sum::<f64>() + rng.next_f64() - 0.5;
        for v in &x {
            text.push_str(&format!("{v:.6},"));
        }
        text.push_str(if score > 0.0 { "1\n" } else { "0\n" });
    }
    let mut f = std::fs::File::create(path).expect("create csv");
    f.write_all(text.as_bytes()).expect("write csv");
    text
}

fn run_python(csv: &Path, args: &Args, threads: usize) -> f64 {
    let (epochs, batch_size, threads) = (
        args.epochs.to_string(),
        args.batch_size.to_string(),
        threads.to_string(),
    );
    let out = python_json(
        "train_loop.py",
        &[
            csv.as_os_str(),
            "--hidden".as_ref(),
            "128,64".as_ref(),
            "--epochs".as_ref(),
            epochs.as_ref(),
            "--batch-size".as_ref(),
            batch_size.as_ref(),
            "--lr".as_ref(),
            "0.001".as_ref(),
            "--threads".as_ref(),
            threads.as_ref(),
        ],
    );
    let seconds = out["seconds"].as_f64().expect("seconds");
    eprintln!("  python: {seconds:.3} s  {out}");
    seconds
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.rows = 5_000;
        args.epochs = 3;
        args.reps = 1;
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("train.csv");
    let text = write_data(&csv, args.rows, args.features);

    let (_server, client) =
        Runbase::start_with(true, &[("RUNBASE_TORCH_THREADS", threads.to_string())]).await;
    let columns: Vec<String> = (0..args.features)
        .map(|i| format!("f{i} double precision"))
        .chain(std::iter::once("label int".to_string()))
        .collect();
    client
        .batch_execute(&format!("CREATE TABLE data ({})", columns.join(", ")))
        .await
        .expect("create");
    let sink = client
        .copy_in("COPY data FROM STDIN WITH (FORMAT csv, HEADER true)")
        .await
        .expect("copy");
    futures::pin_mut!(sink);
    sink.send(Bytes::from(text)).await.expect("send");
    sink.finish().await.expect("finish");
    let sql = format!(
        "SELECT metrics FROM train('bench_mlp', 'SELECT * FROM data', 'label', \
         '{{\"hidden_layers\": [128, 64], \"epochs\": {}, \"batch_size\": {}, \"learning_rate\": 0.001, \
         \"optimizer\": \"adam\", \"split\": \"random\", \"seed\": 1, \"device\": \"cpu\"}}')",
        args.epochs, args.batch_size
    );

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for rep in 0..args.reps {
        eprintln!("rep {}/{}", rep + 1, args.reps);
        let start = Instant::now();
        let row = client.query_one(&sql, &[]).await.expect("train");
        let seconds = start.elapsed().as_secs_f64();
        eprintln!("  runbase: {seconds:.3} s  {}", row.get::<_, String>(0));
        ours.push(seconds);
        theirs.push(run_python(&csv, &args, threads));
    }
    let (r, p) = (median(&ours), median(&theirs));
    let mut table = Table::new(
        "PyTorch 2.11 training loop",
        &format!(
            "TRAIN vs Python PyTorch 2.11 ({} rows × {} features, MLP 128-64, {} epochs, batch {}, {threads} threads; seconds, median of {})",
            args.rows, args.features, args.epochs, args.batch_size, args.reps
        ),
    );
    table.push(Row::lower_better(
        &format!(
            "TRAIN: an MLP on {} rows × {}, {} epochs (s)",
            args.rows, args.features, args.epochs
        ),
        r,
        p,
    ));
    println!("{}", table.markdown());
    println!(
        "runbase/Python time ratio: {:.3} ({:+.1}% over the Python loop)",
        r / p,
        (r / p - 1.0) * 100.0
    );
}
