//! TRAIN's successive-halving search against its grid search over the same space, side by
//! side: epochs trained, wall time, and the best validation metric each reached.
//!
//! The data is scikit-learn's breast cancer set shipped in `tests/data/` (569 rows × 30
//! features, two classes). Both searches run in the same server over the same table, with the
//! same seed, epochs and space; the grid trains every combination all its epochs, halving
//! (`eta` 3) continues the best third at each rung. The "peer" column is the grid search.
//!
//! ```sh
//! source scripts/env.sh
//! cargo build --release --workspace --bins
//! $CARGO_TARGET_DIR/release/compare_search            # 27 candidates × 81 epochs
//! $CARGO_TARGET_DIR/release/compare_search --quick    # 9 candidates × 27 epochs
//! ```

use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use futures::SinkExt;
use runbase_bench::peers::Runbase;
use runbase_bench::report::{Row, Table};

/// Sizes of the comparison.
#[derive(Debug, Parser)]
struct Args {
    /// Epochs each trial may train (the grid trains them all).
    #[arg(long, default_value_t = 81)]
    epochs: u32,
    /// Small sizes for a quick run: 9 candidates, 27 epochs.
    #[arg(long)]
    quick: bool,
}

/// What one search produced.
#[derive(Debug)]
struct Searched {
    seconds: f64,
    epochs_trained: f64,
    val_loss: f64,
    accuracy: f64,
}

async fn search(client: &tokio_postgres::Client, model: &str, options: &str) -> Searched {
    let sql = format!(
        "SELECT run_id, metrics FROM train('{model}', 'SELECT * FROM cancer', 'diagnosis', '{options}')"
    );
    let start = Instant::now();
    let row = client
        .query_one(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let seconds = start.elapsed().as_secs_f64();
    let run: String = row.get(0);
    let metrics: serde_json::Value =
        serde_json::from_str(&row.get::<_, String>(1)).expect("metrics JSON");
    let epochs_trained: f64 = client
        .query_one(
            "SELECT value FROM runbase.metrics WHERE run_id = $1 AND key = 'search_epochs_trained'",
            &[&run],
        )
        .await
        .expect("search_epochs_trained")
        .get(0);
    let s = Searched {
        seconds,
        epochs_trained,
        val_loss: metrics["val_loss"].as_f64().unwrap_or(f64::NAN),
        accuracy: metrics["accuracy"].as_f64().unwrap_or(f64::NAN),
    };
    eprintln!("  {model}: {s:?}");
    s
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    let dropouts = if args.quick {
        args.epochs = 27;
        "[0.0]"
    } else {
        "[0.0, 0.1, 0.3]"
    };
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/breast_cancer.csv"
    ))
    .expect("read tests/data/breast_cancer.csv");
    let header = text.lines().next().expect("header");
    let columns: Vec<String> = header
        .split(',')
        .map(|c| {
            if c == "diagnosis" {
                format!("{c} text")
            } else {
                format!("{c} double precision")
            }
        })
        .collect();

    let (_server, client) = Runbase::start_with(
        true,
        &[(
            "RUNBASE_TORCH_THREADS",
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .to_string(),
        )],
    )
    .await;
    client
        .batch_execute(&format!("CREATE TABLE cancer ({})", columns.join(", ")))
        .await
        .expect("create");
    let sink = client
        .copy_in("COPY cancer FROM STDIN WITH (FORMAT csv, HEADER true)")
        .await
        .expect("copy");
    futures::pin_mut!(sink);
    sink.send(Bytes::from(text)).await.expect("send");
    sink.finish().await.expect("finish");

    let space = format!(
        r#""space": {{"learning_rate": [0.0003, 0.003, 0.03], "hidden_layers": [[16], [64], [64, 32]], "dropout": {dropouts}}}"#
    );
    let common = format!(r#""epochs": {}, "seed": 7, "device": "cpu""#, args.epochs);
    let grid = search(
        &client,
        "grid",
        &format!(r#"{{{common}, "search": {{"method": "grid", {space}}}}}"#),
    )
    .await;
    let halving = search(
        &client,
        "halving",
        &format!(r#"{{{common}, "search": {{"method": "halving", "eta": 3, {space}}}}}"#),
    )
    .await;
    let candidates = if args.quick { 9 } else { 27 };
    let mut table = Table::new(
        "grid search",
        &format!(
            "TRAIN search: halving (eta 3) vs grid, {candidates} candidates × {} epochs on breast_cancer (569 rows × 30 features), one run each",
            args.epochs
        ),
    );
    table.push(Row::lower_better(
        "epochs trained by the whole search",
        halving.epochs_trained,
        grid.epochs_trained,
    ));
    table.push(Row::lower_better(
        "wall time of the search (s)",
        halving.seconds,
        grid.seconds,
    ));
    table.push(Row::lower_better(
        "best val_loss reached",
        halving.val_loss,
        grid.val_loss,
    ));
    table.push(Row::higher_better(
        "accuracy of the kept model",
        halving.accuracy,
        grid.accuracy,
    ));
    println!("{}", table.markdown());
}
