//! What syncing user-table writes costs: runbase with every Parquet file, Delta commit
//! and directory fsynced before the acknowledgement (the default) against runbase with
//! `--synchronous-commit false` (object_store's LocalFileSystem as it is, no fsync: the
//! behaviour before the synced store) and against PostgreSQL 15 with its default
//! `synchronous_commit = on`, on the same disk.
//!
//! Two workloads on a user table `t (id bigint, label text, score double precision)`:
//! sequential single-row `INSERT`s (each its own commit, each acknowledged), and one `COPY`
//! of many rows. Runs alternate between the systems and report medians.
//!
//! ```sh
//! source scripts/env.sh
//! cargo build --release --workspace --bins
//! $CARGO_TARGET_DIR/release/compare_durability            # full sizes
//! $CARGO_TARGET_DIR/release/compare_durability --quick    # small sizes, a smoke run
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::SinkExt;
use runbase_bench::peers::{Postgres, Runbase};
use runbase_bench::report::{Row, Table, median};
use tokio_postgres::Client;

/// Sizes of the comparison.
#[derive(Debug, Parser)]
struct Args {
    /// Sequential single-row INSERTs per repetition.
    #[arg(long, default_value_t = 200)]
    inserts: usize,
    /// Rows per COPY.
    #[arg(long, default_value_t = 500_000)]
    copy_rows: usize,
    /// Repetitions of each measurement (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Small sizes for a quick run.
    #[arg(long)]
    quick: bool,
}

const SCHEMA: &str = "CREATE TABLE t (id bigint, label text, score double precision)";

/// Rows per second of `n` single-row INSERTs.
async fn inserts(client: &Client, n: usize, first: usize) -> f64 {
    let insert = client
        .prepare("INSERT INTO t VALUES ($1, $2, $3)")
        .await
        .expect("prepare insert");
    let start = Instant::now();
    for i in first..first + n {
        let id = i as i64;
        client
            .execute(
                &insert,
                &[&id, &format!("label{}", i % 7), &(i as f64 * 0.5)],
            )
            .await
            .expect("insert");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Rows per second of one COPY of `n` rows.
async fn copy(client: &Client, n: usize) -> f64 {
    let mut text = String::with_capacity(n * 24);
    for i in 0..n {
        text.push_str(&format!("{i}\tlabel{}\t{}\n", i % 7, i as f64 * 0.5));
    }
    let start = Instant::now();
    let sink = client.copy_in("COPY t FROM STDIN").await.expect("copy in");
    futures::pin_mut!(sink);
    sink.send(Bytes::from(text)).await.expect("send");
    sink.finish().await.expect("finish copy");
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.inserts = 20;
        args.copy_rows = 5_000;
        args.reps = 1;
    }
    let (_synced, synced) = Runbase::start(true).await;
    let (_unsynced, unsynced) = Runbase::start(false).await;
    let (_pg, pg) = Postgres::start(true).await;
    let pg_version = Postgres::short_version(&pg).await;
    for client in [&synced, &unsynced, &pg] {
        client.batch_execute(SCHEMA).await.expect("create table");
    }
    let clients = [&synced, &unsynced, &pg];
    let mut insert_rates = [vec![], vec![], vec![]];
    let mut copy_rates = [vec![], vec![], vec![]];
    for rep in 0..args.reps {
        for (i, client) in clients.iter().enumerate() {
            insert_rates[i].push(inserts(client, args.inserts, rep * args.inserts).await);
        }
        for (i, client) in clients.iter().enumerate() {
            copy_rates[i].push(copy(client, args.copy_rows).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m: Vec<[f64; 3]> = [&insert_rates, &copy_rates]
        .iter()
        .map(|r| [median(&r[0]), median(&r[1]), median(&r[2])])
        .collect();
    let mut table = Table::new(
        "runbase, no fsync",
        "Durable user-table writes: synced (default) against unsynced and PostgreSQL",
    );
    let insert_name = format!(
        "{} single-row INSERTs into a user table (rows/s)",
        args.inserts
    );
    let copy_name = format!("COPY {} rows into a user table (rows/s)", args.copy_rows);
    table.push(Row::higher_better(&insert_name, m[0][0], m[0][1]));
    table.push(Row::higher_better(&copy_name, m[1][0], m[1][1]));
    table.push(
        Row::higher_better(&insert_name, m[0][0], m[0][2])
            .against(&format!("PostgreSQL {pg_version}")),
    );
    table.push(
        Row::higher_better(&copy_name, m[1][0], m[1][2])
            .against(&format!("PostgreSQL {pg_version}")),
    );
    println!("{}", table.markdown());
    println!(
        "The runbase column is always the synced default. Against \"runbase, no fsync\" the \
         ratio is what durability costs (below 1: slower); each INSERT syncs one Parquet \
         file, one commit file and their directories."
    );
}
