//! Experiment tracking, runbase against PostgreSQL 15, side by side.
//!
//! Both servers run locally on loopback, with default durability (every commit synced),
//! and are driven by the same client library (tokio-postgres) doing the same logical work:
//! COPY of metric points, sequential single-point logging, and the four tracking reads
//! over a large history. PostgreSQL gets the same schema: `metrics` indexed on
//! `(run_id, key, step)` as MLflow's SQL store does, and a `latest_metrics` table kept on
//! write by a statement-level trigger (one upsert per statement, as MLflow does per batch). Runs alternate between the two and report medians.
//!
//! ```sh
//! source scripts/env.sh
//! cargo build --release --workspace --bins
//! $CARGO_TARGET_DIR/release/compare_tracking            # full sizes
//! $CARGO_TARGET_DIR/release/compare_tracking --quick    # small sizes, a smoke run
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::SinkExt;
use runbase_bench::data::{MetricRows, Rng};
use runbase_bench::peers::{Postgres, Runbase};
use runbase_bench::report::{Row, Table, median};
use tokio_postgres::Client;

/// Sizes of the comparison.
#[derive(Debug, Parser)]
struct Args {
    /// Points per COPY.
    #[arg(long, default_value_t = 1_000_000)]
    copy_points: usize,
    /// Sequential single-point calls.
    #[arg(long, default_value_t = 10_000)]
    single_calls: usize,
    /// Runs in the read data set.
    #[arg(long, default_value_t = 1_000)]
    runs: usize,
    /// Metric keys per run in the read data set.
    #[arg(long, default_value_t = 10)]
    keys: usize,
    /// Steps per key in the read data set (runs × keys × steps points).
    #[arg(long, default_value_t = 1_000)]
    steps: usize,
    /// Repetitions of each measurement (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Repetitions of each read query.
    #[arg(long, default_value_t = 20)]
    query_reps: usize,
    /// Small sizes for a quick run.
    #[arg(long)]
    quick: bool,
    /// Run both servers without syncing each commit (runbase `--synchronous-commit false`,
    /// PostgreSQL `synchronous_commit = off`).
    #[arg(long)]
    no_sync: bool,
}

const PG_SCHEMA: &str = r#"
CREATE TABLE experiments (experiment_id bigserial PRIMARY KEY, name text UNIQUE NOT NULL, description text, created_at timestamptz DEFAULT now());
CREATE TABLE runs (run_id uuid PRIMARY KEY, experiment text NOT NULL, name text, status text, parent_run_id uuid, kind text, started_at timestamptz DEFAULT now(), ended_at timestamptz, user_name text, source text);
CREATE INDEX runs_experiment ON runs (experiment);
CREATE TABLE params (run_id uuid, key text, value text, PRIMARY KEY (run_id, key));
CREATE TABLE metrics (run_id uuid NOT NULL, key text NOT NULL, step bigint NOT NULL, ts timestamptz NOT NULL DEFAULT now(), value double precision NOT NULL);
CREATE INDEX metrics_run_key_step ON metrics (run_id, key, step);
CREATE TABLE latest_metrics (run_id uuid, key text, step bigint, ts timestamptz, value double precision, PRIMARY KEY (run_id, key));
CREATE FUNCTION keep_latest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO latest_metrics
  SELECT DISTINCT ON (run_id, key) run_id, key, step, ts, value FROM new_rows
  ORDER BY run_id, key, step DESC, ts DESC
  ON CONFLICT (run_id, key) DO UPDATE SET step = EXCLUDED.step, ts = EXCLUDED.ts, value = EXCLUDED.value
  WHERE (EXCLUDED.step, EXCLUDED.ts) >= (latest_metrics.step, latest_metrics.ts);
  RETURN NULL;
END $$;
CREATE TRIGGER metrics_latest AFTER INSERT ON metrics REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION keep_latest();
"#;

#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    Runbase,
    Postgres,
}

async fn start_run(client: &Client, system: System, experiment: &str, name: &str) -> String {
    match system {
        System::Runbase => client
            .query_one(
                "SELECT start_run($1, $2, '{\"lr\": 0.01, \"batch\": 32}')",
                &[&experiment, &name],
            )
            .await
            .expect("start_run")
            .get(0),
        System::Postgres => {
            let id = uuid::Uuid::new_v4().to_string();
            client
                .execute(
                    "INSERT INTO runs (run_id, experiment, name, status, kind) VALUES ($1::text::uuid, $2, $3, 'RUNNING', 'external')",
                    &[&id, &experiment, &name],
                )
                .await
                .expect("insert run");
            client
                .execute(
                    "INSERT INTO params VALUES ($1::text::uuid, 'lr', '0.01'), ($1::text::uuid, 'batch', '32')",
                    &[&id],
                )
                .await
                .expect("insert params");
            id
        }
    }
}

fn copy_sql(system: System) -> &'static str {
    match system {
        System::Runbase => "COPY runbase.metrics (run_id, key, step, value) FROM STDIN",
        System::Postgres => "COPY metrics (run_id, key, step, value) FROM STDIN",
    }
}

/// Sends `rows` by COPY in 256 KiB pieces; returns the elapsed time.
async fn copy_points(client: &Client, system: System, rows: MetricRows<'_>) -> Duration {
    let start = Instant::now();
    let sink = client.copy_in(copy_sql(system)).await.expect("copy in");
    futures::pin_mut!(sink);
    let mut buf = Vec::with_capacity(256 * 1024 + 256);
    for line in rows {
        buf.extend_from_slice(line.as_bytes());
        if buf.len() >= 256 * 1024 {
            sink.send(Bytes::from(std::mem::take(&mut buf)))
                .await
                .expect("copy data");
        }
    }
    if !buf.is_empty() {
        sink.send(Bytes::from(buf)).await.expect("copy data");
    }
    sink.finish().await.expect("copy finish");
    start.elapsed()
}

async fn single_calls(client: &Client, system: System, run: &str, n: usize) -> Duration {
    let sql = match system {
        System::Runbase => "SELECT log_metric($1, 'loss', $2, $3)",
        System::Postgres => {
            "INSERT INTO metrics (run_id, key, step, value) VALUES ($1::text::uuid, 'loss', $3, $2)"
        }
    };
    let stmt = client.prepare(sql).await.expect("prepare single call");
    let mut rng = Rng::new(7);
    let start = Instant::now();
    for step in 0..n as i64 {
        let v = rng.next_f64();
        client
            .execute(&stmt, &[&run, &v, &step])
            .await
            .expect("single call");
    }
    start.elapsed()
}

struct Queries {
    history: &'static str,
    latest: &'static str,
    best: &'static str,
    pivot: &'static str,
}

fn queries(system: System) -> Queries {
    match system {
        System::Runbase => Queries {
            history: "SELECT step, value FROM runbase.metrics WHERE run_id = $1 AND key = 'k0' ORDER BY step",
            latest: "SELECT run_id, key, step, value FROM runbase.latest_metrics WHERE experiment = 'reads'",
            best: "SELECT run_id, value FROM runbase.latest_metrics WHERE experiment = 'reads' AND key = 'k0' ORDER BY value DESC LIMIT 1",
            pivot: "SELECT r.run_id, max(CASE WHEN p.key = 'lr' THEN p.value END) AS lr, max(CASE WHEN p.key = 'batch' THEN p.value END) AS batch, \
                    max(CASE WHEN l.key = 'k0' THEN l.value END) AS k0, max(CASE WHEN l.key = 'k1' THEN l.value END) AS k1 \
                    FROM runbase.runs r \
                    LEFT JOIN runbase.params p ON p.run_id = r.run_id AND p.experiment = 'reads' \
                    LEFT JOIN runbase.latest_metrics l ON l.run_id = r.run_id AND l.experiment = 'reads' AND l.key IN ('k0', 'k1') \
                    WHERE r.experiment = 'reads' GROUP BY r.run_id",
        },
        System::Postgres => Queries {
            history: "SELECT step, value FROM metrics WHERE run_id = $1::text::uuid AND key = 'k0' ORDER BY step",
            latest: "SELECT l.run_id, l.key, l.step, l.value FROM latest_metrics l JOIN runs r USING (run_id) WHERE r.experiment = 'reads'",
            best: "SELECT l.run_id, l.value FROM latest_metrics l JOIN runs r USING (run_id) WHERE r.experiment = 'reads' AND l.key = 'k0' ORDER BY l.value DESC LIMIT 1",
            pivot: "SELECT r.run_id, max(CASE WHEN p.key = 'lr' THEN p.value END) AS lr, max(CASE WHEN p.key = 'batch' THEN p.value END) AS batch, \
                    max(CASE WHEN l.key = 'k0' THEN l.value END) AS k0, max(CASE WHEN l.key = 'k1' THEN l.value END) AS k1 \
                    FROM runs r LEFT JOIN params p ON p.run_id = r.run_id \
                    LEFT JOIN latest_metrics l ON l.run_id = r.run_id AND l.key IN ('k0', 'k1') \
                    WHERE r.experiment = 'reads' GROUP BY r.run_id",
        },
    }
}

async fn time_query(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    expect_rows: usize,
) -> Duration {
    let stmt = client
        .prepare(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let start = Instant::now();
    let rows = client
        .query(&stmt, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let took = start.elapsed();
    assert_eq!(rows.len(), expect_rows, "{sql}");
    took
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.copy_points = 100_000;
        args.single_calls = 1_000;
        args.runs = 100;
        args.steps = 100;
        args.reps = 1;
        args.query_reps = 5;
    }
    let sync = !args.no_sync;
    let (_rb, rb) = Runbase::start(sync).await;
    let (_pg, pg) = Postgres::start(sync).await;
    pg.batch_execute(PG_SCHEMA).await.expect("postgres schema");
    let pg_version = Postgres::version(&pg).await;
    let systems = [(System::Runbase, &rb), (System::Postgres, &pg)];
    let short = format!(
        "PostgreSQL {}",
        pg_version.split_whitespace().next().unwrap_or_default()
    );
    let mut table = Table::new(
        &short,
        &format!(
            "runbase vs PostgreSQL {pg_version}, synchronous commit {}",
            if sync { "on" } else { "off" }
        ),
    );

    // COPY of metric points into a fresh run, alternating.
    let mut copy = [Vec::new(), Vec::new()];
    for rep in 0..args.reps {
        for (i, (system, client)) in systems.iter().enumerate() {
            let run = start_run(client, *system, "copy", &format!("copy-{rep}")).await;
            let rows = MetricRows::new(std::slice::from_ref(&run), &["loss"], args.copy_points, 42);
            let took = copy_points(client, *system, rows).await;
            copy[i].push(args.copy_points as f64 / took.as_secs_f64());
        }
    }
    table.push(Row::higher_better(
        &format!("COPY {} points (points/s)", args.copy_points),
        median(&copy[0]),
        median(&copy[1]),
    ));

    // Sequential single-point calls, one client, each acknowledged (synced) before the next.
    let mut single = [Vec::new(), Vec::new()];
    for rep in 0..args.reps {
        for (i, (system, client)) in systems.iter().enumerate() {
            let run = start_run(client, *system, "single", &format!("single-{rep}")).await;
            let took = single_calls(client, *system, &run, args.single_calls).await;
            single[i].push(args.single_calls as f64 / took.as_secs_f64());
        }
    }
    table.push(Row::higher_better(
        &format!("{} single log_metric calls (calls/s)", args.single_calls),
        median(&single[0]),
        median(&single[1]),
    ));

    // The read data set: runs × keys × steps points in one experiment, loaded by COPY.
    let total = args.runs * args.keys * args.steps;
    let keys: Vec<String> = (0..args.keys).map(|k| format!("k{k}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut load = [0.0f64; 2];
    let mut run_ids = [Vec::new(), Vec::new()];
    for (i, (system, client)) in systems.iter().enumerate() {
        for r in 0..args.runs {
            run_ids[i].push(start_run(client, *system, "reads", &format!("r{r}")).await);
        }
        // One COPY per group of runs of at most about a million points, as a loader would.
        let runs_per_copy = (1_000_000 / (args.keys * args.steps).max(1)).max(1);
        let mut took = Duration::ZERO;
        for (g, group) in run_ids[i].chunks(runs_per_copy).enumerate() {
            let rows = MetricRows::new(group, &key_refs, args.steps, g as u64 + 1);
            took += copy_points(client, *system, rows).await;
        }
        load[i] = total as f64 / took.as_secs_f64();
        if *system == System::Postgres {
            client.batch_execute("ANALYZE").await.expect("analyze");
        }
    }
    table.push(Row::higher_better(
        &format!(
            "load {total} points in {} runs by COPY (points/s)",
            args.runs
        ),
        load[0],
        load[1],
    ));

    let probe = args.runs / 2;
    let q = [queries(System::Runbase), queries(System::Postgres)];
    let mut lat = vec![[Vec::new(), Vec::new()]; 4];
    for _ in 0..args.query_reps {
        for (i, (_, client)) in systems.iter().enumerate() {
            let run: &(dyn tokio_postgres::types::ToSql + Sync) = &run_ids[i][probe];
            lat[0][i].push(time_query(client, q[i].history, &[run], args.steps).await);
            lat[1][i].push(time_query(client, q[i].latest, &[], args.runs * args.keys).await);
            lat[2][i].push(time_query(client, q[i].best, &[], 1).await);
            lat[3][i].push(time_query(client, q[i].pivot, &[], args.runs).await);
        }
    }
    let ms =
        |d: &Vec<Duration>| median(&d.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>());
    let names = [
        format!(
            "history of one metric of one run, {} points (ms)",
            args.steps
        ),
        format!(
            "latest value of every metric of every run, {} rows (ms)",
            args.runs * args.keys
        ),
        "best run of the experiment by a metric (ms)".to_string(),
        format!("pivot of params and final metrics, {} runs (ms)", args.runs),
    ];
    for (name, l) in names.iter().zip(&lat) {
        table.push(Row::lower_better(name, ms(&l[0]), ms(&l[1])));
    }
    println!("{}", table.markdown());
}
