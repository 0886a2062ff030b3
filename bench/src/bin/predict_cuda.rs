//! TRAIN and PREDICT on a GPU: the same work on CPU and CUDA, checked to agree, with epochs/s
//! and rows/s (`scripts/gpu-check.sh` runs it).
//!
//! Starts a server and creates the scoring table (`--rows`, default 1M). TRAIN: the same MLP,
//! seed and rows trained with `"device": "cpu"` and `"device": "cuda"`; every epoch's
//! `train_loss` and `val_loss` must agree within 1% (float sums run in another order on a
//! GPU). PREDICT: the CPU-trained model scores every row with `SET runbase.device = 'cpu'`
//! and again with `'cuda'`; the predicted labels must be identical (bar rows whose two
//! probabilities are within float noise) and the probabilities within 1e-4. On a machine
//! where libtorch sees no CUDA device it says so and exits successfully.
//!
//! ```sh
//! source scripts/env.sh
//! cargo build --release --workspace --bins
//! $CARGO_TARGET_DIR/release/predict_cuda
//! ```

use std::time::Instant;

use clap::Parser;
use futures::TryStreamExt;
use runbase_bench::data::scoring_table_sql;
use runbase_bench::peers::Runbase;

/// Sizes of the check.
#[derive(Debug, Parser)]
struct Args {
    /// Rows to score.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Feature columns.
    #[arg(long, default_value_t = 32)]
    features: usize,
    /// Rows TRAIN trains on.
    #[arg(long, default_value_t = 50_000)]
    train_rows: usize,
    /// Epochs TRAIN trains.
    #[arg(long, default_value_t = 5)]
    epochs: u32,
}

/// Trains `model` on `device`; returns each epoch's (train_loss, val_loss) and epochs/s.
async fn train_on(
    client: &tokio_postgres::Client,
    args: &Args,
    model: &str,
    device: &str,
) -> (Vec<(f64, f64)>, f64) {
    let features: Vec<String> = (0..args.features).map(|k| format!("f{k}")).collect();
    let start = Instant::now();
    let run: String = client
        .query_one(
            &format!(
                "SELECT run_id FROM train('{model}', 'SELECT {}, label FROM data WHERE id <= {}', 'label', \
                 '{{\"hidden_layers\": [128, 64], \"epochs\": {}, \"batch_size\": 256, \"seed\": 1, \"device\": \"{device}\"}}')",
                features.join(", "),
                args.train_rows,
                args.epochs,
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("train on {device}: {e}"))
        .get(0);
    let seconds = start.elapsed().as_secs_f64();
    let rows = client
        .query(
            "SELECT t.value, v.value FROM runbase.metrics t JOIN runbase.metrics v \
             ON v.run_id = t.run_id AND v.step = t.step AND v.key = 'val_loss' \
             WHERE t.run_id = $1 AND t.key = 'train_loss' ORDER BY t.step",
            &[&run],
        )
        .await
        .expect("losses");
    let losses: Vec<(f64, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    (losses, f64::from(args.epochs) / seconds)
}

type Scored = Vec<(i64, i64, Vec<f64>)>;

async fn score(client: &tokio_postgres::Client, device: &str) -> (Scored, f64) {
    client
        .batch_execute(&format!("SET runbase.device = '{device}'"))
        .await
        .expect("set device");
    let sql = "SELECT id, prediction, probabilities FROM predict('gpu_mlp', 'SELECT * FROM data') ORDER BY id";
    // Once to load the model on the device, then timed.
    let _ = client
        .query_one(
            "SELECT count(*) FROM predict('gpu_mlp', 'SELECT * FROM data WHERE id <= 10')",
            &[],
        )
        .await
        .expect("warm up");
    let start = Instant::now();
    let rows: Vec<tokio_postgres::Row> = client
        .query_raw(sql, std::iter::empty::<i64>())
        .await
        .unwrap_or_else(|e| panic!("predict on {device}: {e}"))
        .try_collect()
        .await
        .expect("rows");
    let seconds = start.elapsed().as_secs_f64();
    (
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
        seconds,
    )
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (_server, client) = Runbase::start_with(false, &[]).await;
    let gpus: i64 = client
        .query_one(
            "SELECT count(*) FROM runbase.devices WHERE kind = 'cuda'",
            &[],
        )
        .await
        .expect("devices")
        .get(0);
    if gpus == 0 {
        println!(
            "no GPU: libtorch sees no CUDA device on this machine (runbase.devices lists only the CPU); nothing to check"
        );
        return;
    }
    let name: String = client
        .query_one(
            "SELECT name FROM runbase.devices WHERE kind = 'cuda' ORDER BY device LIMIT 1",
            &[],
        )
        .await
        .expect("device name")
        .get(0);
    client
        .batch_execute(&scoring_table_sql("data", args.rows, args.features))
        .await
        .expect("create data");
    let (cpu_losses, cpu_eps) = train_on(&client, &args, "gpu_train_cpu", "cpu").await;
    let (gpu_losses, gpu_eps) = train_on(&client, &args, "gpu_train_cuda", "cuda").await;
    assert_eq!(cpu_losses.len(), args.epochs as usize);
    assert_eq!(gpu_losses.len(), args.epochs as usize);
    let mut worst_loss = 0.0f64;
    for (c, g) in cpu_losses.iter().zip(&gpu_losses) {
        for (a, b) in [(c.0, g.0), (c.1, g.1)] {
            worst_loss = worst_loss.max((a - b).abs() / a.abs().max(1e-12));
        }
    }
    println!(
        "TRAIN: cpu {cpu_eps:.2} epochs/s; cuda ({name}) {gpu_eps:.2} epochs/s ({} rows, MLP 128-64, batch 256); largest relative loss difference {worst_loss:.2e}",
        args.train_rows
    );
    assert!(
        worst_loss < 1e-2,
        "CPU and GPU training losses differ by {worst_loss:.2e} (relative): {cpu_losses:?} vs {gpu_losses:?}"
    );
    let features: Vec<String> = (0..args.features).map(|k| format!("f{k}")).collect();
    client
        .query_one(
            &format!(
                "SELECT * FROM train('gpu_mlp', 'SELECT {}, label FROM data WHERE id <= 20000', 'label', \
                 '{{\"hidden_layers\": [128, 64], \"epochs\": 3, \"seed\": 1, \"device\": \"cpu\"}}')",
                features.join(", ")
            ),
            &[],
        )
        .await
        .expect("train");
    let (cpu, cpu_s) = score(&client, "cpu").await;
    let (gpu, gpu_s) = score(&client, "cuda").await;
    assert_eq!(cpu.len(), args.rows);
    assert_eq!(gpu.len(), args.rows);
    let mut worst = 0.0f64;
    let mut label_diffs = 0usize;
    for (c, g) in cpu.iter().zip(&gpu) {
        assert_eq!(c.0, g.0);
        label_diffs += usize::from(c.1 != g.1);
        for (a, b) in c.2.iter().zip(&g.2) {
            worst = worst.max((a - b).abs());
        }
    }
    println!(
        "PREDICT: cpu {:.0} rows/s; cuda ({name}) {:.0} rows/s; largest probability difference {worst:.2e}; labels differing {label_diffs}",
        args.rows as f64 / cpu_s,
        args.rows as f64 / gpu_s
    );
    assert!(worst < 1e-4, "CPU and GPU probabilities differ by {worst}");
    // A row whose two probabilities are within float noise may flip; nothing else.
    assert!(
        label_diffs <= args.rows / 100_000,
        "{label_diffs} labels differ between CPU and GPU"
    );
    println!("OK: CPU and GPU agree on TRAIN and PREDICT");
}
