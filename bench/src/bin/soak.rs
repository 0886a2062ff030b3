//! The soak run: many concurrent clients against one `runbase serve` for a fixed time,
//! mixing metric logging, reads, COPY, PREDICT, a TRAIN every few seconds and connection
//! churn, on loopback only. Every second it samples the server's resident memory, open
//! file descriptors and threads. At the end it reports each operation's latency
//! percentiles, the samples at the start (after a warm-up) and at the end, and every
//! unexpected error. It exits non-zero on any error, or if memory keeps growing (the last
//! quarter's RSS above the second quarter's by more than 25%).
//!
//! ```sh
//! source scripts/env.sh
//! cargo build --workspace --bins
//! $CARGO_TARGET_DIR/debug/soak                       # 64 clients, 10 minutes
//! $CARGO_TARGET_DIR/debug/soak --clients 16 --seconds 30   # a smoke run
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::SinkExt;
use runbase_bench::peers::Runbase;
use tokio_postgres::Client;

/// The run's shape.
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long the clients run.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
}

/// One resource sample of the server process.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at: f64,
    rss_mb: f64,
    fds: usize,
    threads: usize,
}

fn sample(pid: u32, at: f64) -> Sample {
    let status = runbase_bench::ProcStatus::read(pid);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    Sample {
        at,
        rss_mb: status.field("VmRSS:") as f64 / 1024.0,
        fds,
        threads: status.field("Threads:") as usize,
    }
}

/// Latencies (µs) by operation, and unexpected errors.
#[derive(Default)]
struct Results {
    latencies: BTreeMap<&'static str, Vec<u64>>,
    errors: BTreeMap<String, usize>,
}

type Shared = Arc<Mutex<Results>>;

/// Times `op` and records its latency or its error.
async fn timed<T>(
    results: &Shared,
    name: &'static str,
    op: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Option<T> {
    let started = Instant::now();
    let r = op.await;
    let us = started.elapsed().as_micros() as u64;
    let mut results = results.lock().expect("results");
    match r {
        Ok(v) => {
            results.latencies.entry(name).or_default().push(us);
            Some(v)
        }
        Err(e) => {
            let code = e.code().map_or("no code", |c| c.code()).to_string();
            let message = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string());
            *results
                .errors
                .entry(format!("{name}: {code} {message:.120}"))
                .or_default() += 1;
            None
        }
    }
}

async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn copy_in(client: &Client, sql: &str, data: String) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in(sql).await?;
    futures::pin_mut!(sink);
    sink.send(Bytes::from(data)).await?;
    sink.finish().await
}

/// One client's loop until `stop`: its kind is `id % 6`.
async fn client_loop(id: usize, conn: String, run: String, stop: Arc<AtomicBool>, r: Shared) {
    let kind = id % 6;
    let Ok(c) = connect(&conn).await else {
        *r.lock()
            .expect("results")
            .errors
            .entry("connect".into())
            .or_default() += 1;
        return;
    };
    let mut step: i64 = (id as i64) * 1_000_000_000;
    while !stop.load(Ordering::Relaxed) {
        match kind {
            0 => {
                step += 1;
                timed(
                    &r,
                    "log_metric",
                    c.execute(
                        "SELECT log_metric($1::text, 'loss', $2::float8, $3)",
                        &[&run, &(step as f64), &step],
                    ),
                )
                .await;
            }
            1 => {
                timed(
                    &r,
                    "read metrics",
                    c.query(
                        "SELECT key, count(*), avg(value) FROM runbase.metrics WHERE run_id = $1 GROUP BY key",
                        &[&run],
                    ),
                )
                .await;
                timed(
                    &r,
                    "read table",
                    c.query("SELECT * FROM events ORDER BY id DESC LIMIT 100", &[]),
                )
                .await;
            }
            2 => {
                let data: String = (0..200)
                    .map(|i| {
                        step += 1;
                        format!("{run}\tcopied\t{i}\t{step}\n")
                    })
                    .collect();
                timed(
                    &r,
                    "COPY runbase.metrics (200 points)",
                    copy_in(
                        &c,
                        "COPY runbase.metrics (run_id, key, value, step) FROM STDIN",
                        data,
                    ),
                )
                .await;
                let data: String = (0..500)
                    .map(|i| {
                        step += 1;
                        format!("{step},{id},payload {i}\n")
                    })
                    .collect();
                timed(
                    &r,
                    "COPY events (500 rows)",
                    copy_in(&c, "COPY events FROM STDIN WITH (FORMAT csv)", data),
                )
                .await;
            }
            3 => {
                timed(
                    &r,
                    "predict (20 rows)",
                    c.query(
                        "SELECT prediction FROM predict('soak', 'SELECT * FROM iris LIMIT 20')",
                        &[],
                    ),
                )
                .await;
            }
            4 => {
                // Connection churn: connect, one query, disconnect.
                let started = Instant::now();
                match connect(&conn).await {
                    Ok(other) => {
                        if timed(&r, "churn: SELECT 1", other.query_one("SELECT 1", &[]))
                            .await
                            .is_some()
                        {
                            r.lock()
                                .expect("results")
                                .latencies
                                .entry("churn: connect + SELECT 1")
                                .or_default()
                                .push(started.elapsed().as_micros() as u64);
                        }
                    }
                    Err(e) => {
                        *r.lock()
                            .expect("results")
                            .errors
                            .entry(format!("churn connect: {e}"))
                            .or_default() += 1;
                    }
                }
            }
            _ => {
                step += 1;
                timed(
                    &r,
                    "INSERT",
                    c.execute(
                        "INSERT INTO events VALUES ($1, $2, 'inserted')",
                        &[&step, &(id as i64)],
                    ),
                )
                .await;
                timed(
                    &r,
                    "count at a past version",
                    c.query_one("SELECT count(*) FROM table_at('events', 1)", &[]),
                )
                .await;
            }
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (server, admin) = Runbase::start(true).await;
    let pid = server.pid();
    let iris = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/iris.csv"
    ))
    .expect("tests/data/iris.csv");
    admin
        .batch_execute(
            "CREATE TABLE iris (sepal_length float8, sepal_width float8, petal_length float8, petal_width float8, species text); \
             CREATE TABLE events (id bigint, client bigint, note text)",
        )
        .await
        .expect("tables");
    copy_in(
        &admin,
        "COPY iris FROM STDIN WITH (FORMAT csv, HEADER true)",
        iris,
    )
    .await
    .expect("iris");
    admin
        .batch_execute("INSERT INTO events VALUES (0, 0, 'first')")
        .await
        .expect("events");
    admin
        .query_one(
            "SELECT version FROM train('soak', 'SELECT * FROM iris', 'species', '{\"epochs\": 3}')",
            &[],
        )
        .await
        .expect("first model");
    let run: String = admin
        .query_one("SELECT start_run('soak')::text", &[])
        .await
        .expect("run")
        .get(0);

    let results: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..args.clients {
        tasks.spawn(client_loop(
            id,
            server.conn_str(),
            run.clone(),
            stop.clone(),
            results.clone(),
        ));
    }
    // A TRAIN every few seconds, on its own connection.
    {
        let (conn, stop, r) = (server.conn_str(), stop.clone(), results.clone());
        tasks.spawn(async move {
            let Ok(c) = connect(&conn).await else { return };
            while !stop.load(Ordering::Relaxed) {
                timed(
                    &r,
                    "TRAIN (iris, 3 epochs)",
                    c.query_one(
                        "SELECT version FROM train('soak', 'SELECT * FROM iris', 'species', '{\"epochs\": 3}')",
                        &[],
                    ),
                )
                .await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    let total = Duration::from_secs(args.seconds);
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(sample(pid, started.elapsed().as_secs_f64()));
    }
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let after = sample(pid, started.elapsed().as_secs_f64());
    drop(admin);
    drop(server);

    let results = results.lock().expect("results");
    println!(
        "soak: {} clients for {} s against the debug or release runbase next to this binary",
        args.clients, args.seconds
    );
    println!();
    println!("| operation | count | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, lat) in &results.latencies {
        let mut lat = lat.clone();
        lat.sort_unstable();
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0)
        );
    }
    let quarter = |q: usize| {
        let n = samples.len();
        let part = &samples[(n * q / 4).min(n.saturating_sub(1))..(n * (q + 1) / 4).max(1).min(n)];
        part.iter().map(|s| s.rss_mb).sum::<f64>() / part.len().max(1) as f64
    };
    let warm = samples.get(samples.len() / 10).copied().unwrap_or_default();
    let last = samples.last().copied().unwrap_or_default();
    let max = |f: fn(&Sample) -> f64| samples.iter().map(f).fold(0.0, f64::max);
    println!();
    println!(
        "| server | after warm-up ({:.0} s) | end ({:.0} s) | max | after the clients stop |",
        warm.at, last.at
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| RSS MB | {:.0} | {:.0} | {:.0} | {:.0} |",
        warm.rss_mb,
        last.rss_mb,
        max(|s| s.rss_mb),
        after.rss_mb
    );
    println!(
        "| open fds | {} | {} | {:.0} | {} |",
        warm.fds,
        last.fds,
        max(|s| s.fds as f64),
        after.fds
    );
    println!(
        "| threads | {} | {} | {:.0} | {} |",
        warm.threads,
        last.threads,
        max(|s| s.threads as f64),
        after.threads
    );
    let (second, fourth) = (quarter(1), quarter(3));
    println!();
    println!("mean RSS: second quarter {second:.0} MB, last quarter {fourth:.0} MB");
    let errors: usize = results.errors.values().sum();
    println!("unexpected errors: {errors}");
    for (e, n) in &results.errors {
        println!("  {n} × {e}");
    }
    let growing = fourth > second * 1.25;
    if growing {
        println!("memory kept growing: the last quarter's mean RSS is over 125% of the second's");
    }
    if errors > 0 || growing {
        std::process::exit(1);
    }
}
