//! The crash loop: writers of every kind run at once — `log_metric` calls, COPY into
//! `runbase.metrics`, INSERT, COPY and UPDATE on user tables, TRAIN, `import_model`,
//! artifacts — and the server dies at a random moment: by SIGKILL (even cycles), or at a
//! failpoint between two steps that must be atomic together (odd cycles: the Parquet
//! files / the Delta commit / the catalog and the ack; the blob / the model record; the
//! RocksDB batch / the ack; the fsync). After each restart every acknowledged write is
//! there exactly once, nothing unacknowledged is half there (no torn COPY, no model
//! version without its blob), every table in the catalog reads, and the server started
//! within a bound.
//!
//! `RUNBASE_CRASH_CYCLES` (default 4) sets the cycles, `RUNBASE_CRASH_SEED` replays a run
//! (the seed is printed first). The long run:
//! `RUNBASE_CRASH_CYCLES=100 cargo test --test crash_loop -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use runbase_tests::client::{load_csv, scalar};
use runbase_tests::server::TestServer;
use tokio_postgres::Client;

/// How long a restart may take (a debug build, a busy machine).
const START_BOUND: Duration = Duration::from_secs(60);

/// Rows per COPY into `batches`, and points per COPY into `runbase.metrics`.
const COPY_ROWS: i64 = 100;
const COPY_POINTS: i64 = 50;

/// The points a kill cycle aborts at.
const KILL_POINTS: [&str; 7] = [
    "delta.commit",
    "delta.commit.after",
    "object_store.put",
    "object_store.put.after",
    "kv.write",
    "kv.write.after",
    "fsync",
];

const IMPORT_SPEC: &str = r#"{"inputs": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "output": "classification", "classes": ["setosa", "versicolor", "virginica"]}"#;

/// xorshift64*: enough randomness to pick moments and points, and replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What was tried and what was acknowledged, by writer, over all cycles.
#[derive(Default)]
struct Ledger {
    /// `(run_id, step)` of `log_metric` calls.
    metric_tried: BTreeSet<(String, i64)>,
    metric_acked: BTreeSet<(String, i64)>,
    /// `(run_id, batch)` of COPYs into `runbase.metrics`.
    copied_tried: BTreeSet<(String, i64)>,
    copied_acked: BTreeSet<(String, i64)>,
    /// `seq` of INSERTs into `rows`.
    rows_tried: BTreeSet<i64>,
    rows_acked: BTreeSet<i64>,
    /// `batch` of COPYs into `batches`.
    batches_tried: BTreeSet<i64>,
    batches_acked: BTreeSet<i64>,
    /// Values the counter was set to.
    counter_tried: BTreeSet<i64>,
    counter_acked: BTreeSet<i64>,
    /// Versions of the trained and the imported model.
    trained: BTreeSet<i64>,
    imported: BTreeSet<i64>,
    /// `(run_id, path)` of artifacts; the bytes are the path's.
    artifacts_acked: BTreeSet<(String, String)>,
    /// Statement errors other than a lost connection.
    errors: Vec<String>,
}

type Shared = Arc<Mutex<Ledger>>;

fn note(ledger: &Shared, f: impl FnOnce(&mut Ledger)) {
    f(&mut ledger.lock().expect("ledger"));
}

/// Whether a writer goes on after `result`: an acknowledged write (`true`), the server
/// gone (`false`), or a statement error, which no writer here should get (recorded).
fn went_through<T>(ledger: &Shared, what: &str, result: Result<T, tokio_postgres::Error>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => {
            if let Some(code) = e.code() {
                note(ledger, |l| {
                    l.errors.push(format!(
                        "{what}: {} {}",
                        code.code(),
                        e.as_db_error().map_or("", |d| d.message())
                    ))
                });
            }
            false
        }
    }
}

async fn copy_in(client: &Client, sql: &str, data: String) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in(sql).await?;
    futures::pin_mut!(sink);
    sink.send(Bytes::from(data)).await?;
    sink.finish().await
}

/// One cycle's writers, each on its own connection, until the server goes.
async fn writers(
    server_conn: String,
    cycle: u64,
    run: String,
    seq_base: i64,
    model_blob: Arc<Vec<u8>>,
    ledger: Shared,
) {
    let connect = || {
        let conn = server_conn.clone();
        async move {
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .ok()?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Some(client)
        }
    };
    let mut tasks = tokio::task::JoinSet::new();

    // log_metric, one point per call.
    if let Some(c) = connect().await {
        let (ledger, run) = (ledger.clone(), run.clone());
        tasks.spawn(async move {
            for step in 0.. {
                note(&ledger, |l| {
                    l.metric_tried.insert((run.clone(), step));
                });
                let r = c
                    .execute(
                        "SELECT log_metric($1::text, 'm', $2::float8, $3)",
                        &[&run, &(step as f64), &step],
                    )
                    .await;
                if !went_through(&ledger, "log_metric", r) {
                    break;
                }
                note(&ledger, |l| {
                    l.metric_acked.insert((run.clone(), step));
                });
            }
        });
    }
    // COPY into runbase.metrics, COPY_POINTS points per COPY.
    if let Some(c) = connect().await {
        let (ledger, run) = (ledger.clone(), run.clone());
        tasks.spawn(async move {
            for batch in 0.. {
                let data: String = (0..COPY_POINTS)
                    .map(|i| format!("{run}\tcopied\t{batch}\t{}\n", batch * COPY_POINTS + i))
                    .collect();
                note(&ledger, |l| {
                    l.copied_tried.insert((run.clone(), batch));
                });
                let r = copy_in(
                    &c,
                    "COPY runbase.metrics (run_id, key, value, step) FROM STDIN",
                    data,
                )
                .await;
                if !went_through(&ledger, "COPY runbase.metrics", r) {
                    break;
                }
                note(&ledger, |l| {
                    l.copied_acked.insert((run.clone(), batch));
                });
            }
        });
    }
    // INSERT, one row per statement.
    if let Some(c) = connect().await {
        let ledger = ledger.clone();
        tasks.spawn(async move {
            for seq in seq_base.. {
                note(&ledger, |l| {
                    l.rows_tried.insert(seq);
                });
                let r = c
                    .execute(
                        "INSERT INTO rows VALUES ($1, $2, 'payload')",
                        &[&(cycle as i64), &seq],
                    )
                    .await;
                if !went_through(&ledger, "INSERT", r) {
                    break;
                }
                note(&ledger, |l| {
                    l.rows_acked.insert(seq);
                });
            }
        });
    }
    // COPY into a user table, COPY_ROWS rows per COPY.
    if let Some(c) = connect().await {
        let ledger = ledger.clone();
        tasks.spawn(async move {
            for batch in seq_base.. {
                let data: String = (0..COPY_ROWS).map(|i| format!("{batch},{i}\n")).collect();
                note(&ledger, |l| {
                    l.batches_tried.insert(batch);
                });
                let r = copy_in(&c, "COPY batches FROM STDIN WITH (FORMAT csv)", data).await;
                if !went_through(&ledger, "COPY batches", r) {
                    break;
                }
                note(&ledger, |l| {
                    l.batches_acked.insert(batch);
                });
            }
        });
    }
    // UPDATE of one row, to ever larger values.
    if let Some(c) = connect().await {
        let ledger = ledger.clone();
        tasks.spawn(async move {
            for v in seq_base.. {
                note(&ledger, |l| {
                    l.counter_tried.insert(v);
                });
                let r = c
                    .execute("UPDATE counter SET v = $1 WHERE id = 1", &[&v])
                    .await;
                if !went_through(&ledger, "UPDATE", r) {
                    break;
                }
                note(&ledger, |l| {
                    l.counter_acked.insert(v);
                });
            }
        });
    }
    // TRAIN, then import_model, then artifacts, in turn.
    if let Some(c) = connect().await {
        let (ledger, run) = (ledger.clone(), run.clone());
        tasks.spawn(async move {
            for i in 0.. {
                let r = c
                    .query_one(
                        "SELECT version FROM train('crash', 'SELECT * FROM iris', 'species', '{\"epochs\": 2, \"seed\": 1}')",
                        &[],
                    )
                    .await;
                let version = match r {
                    Ok(row) => row.get::<_, i64>(0),
                    Err(e) => {
                        went_through::<()>(&ledger, "TRAIN", Err(e));
                        break;
                    }
                };
                note(&ledger, |l| {
                    l.trained.insert(version);
                });
                let blob: &[u8] = &model_blob;
                let r = c
                    .query_one(
                        "SELECT import_model('imported', $1, $2)",
                        &[&blob, &IMPORT_SPEC],
                    )
                    .await;
                let version = match r {
                    Ok(row) => row.get::<_, i64>(0),
                    Err(e) => {
                        went_through::<()>(&ledger, "import_model", Err(e));
                        break;
                    }
                };
                note(&ledger, |l| {
                    l.imported.insert(version);
                });
                let path = format!("cycle-{cycle}/artifact-{i}.txt");
                let r = c
                    .execute(
                        "SELECT log_artifact($1::text, $2, $3)",
                        &[&run, &path, &path.as_bytes()],
                    )
                    .await;
                if !went_through(&ledger, "log_artifact", r) {
                    break;
                }
                note(&ledger, |l| {
                    l.artifacts_acked.insert((run.clone(), path));
                });
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// `values` (what the server holds) against what was tried and acknowledged.
fn check_set<T: Ord + std::fmt::Debug + Clone>(
    what: &str,
    found: &BTreeSet<T>,
    tried: &BTreeSet<T>,
    acked: &BTreeSet<T>,
    failures: &mut Vec<String>,
) {
    let lost: Vec<_> = acked.difference(found).cloned().collect();
    if !lost.is_empty() {
        failures.push(format!("{what}: acknowledged but lost: {lost:?}"));
    }
    let invented: Vec<_> = found.difference(tried).cloned().collect();
    if !invented.is_empty() {
        failures.push(format!("{what}: present but never written: {invented:?}"));
    }
}

/// Everything the restarted server must hold.
async fn verify(c: &Client, ledger: &Ledger) -> Vec<String> {
    let mut failures = Vec::new();
    let q = |sql: &'static str| async move {
        c.query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };

    // log_metric: each point once.
    let mut points = BTreeMap::new();
    for r in
        q("SELECT run_id::text, step, count(*) FROM runbase.metrics WHERE key = 'm' GROUP BY 1, 2")
            .await
    {
        points.insert(
            (r.get::<_, String>(0), r.get::<_, i64>(1)),
            r.get::<_, i64>(2),
        );
    }
    let twice: Vec<_> = points.iter().filter(|(_, n)| **n != 1).collect();
    if !twice.is_empty() {
        failures.push(format!(
            "log_metric points stored more than once: {twice:?}"
        ));
    }
    let found = points.into_keys().collect();
    check_set(
        "log_metric",
        &found,
        &ledger.metric_tried,
        &ledger.metric_acked,
        &mut failures,
    );

    // COPY into runbase.metrics: whole batches.
    let mut batches = BTreeMap::new();
    for r in q("SELECT run_id::text, (step / 50)::bigint, count(*) FROM runbase.metrics WHERE key = 'copied' GROUP BY 1, 2").await {
        batches.insert((r.get::<_, String>(0), r.get::<_, i64>(1)), r.get::<_, i64>(2));
    }
    let torn: Vec<_> = batches.iter().filter(|(_, n)| **n != COPY_POINTS).collect();
    if !torn.is_empty() {
        failures.push(format!(
            "torn COPYs into runbase.metrics (batch: points): {torn:?}"
        ));
    }
    let found = batches.into_keys().collect();
    check_set(
        "COPY runbase.metrics",
        &found,
        &ledger.copied_tried,
        &ledger.copied_acked,
        &mut failures,
    );

    // INSERT: each row once.
    let mut rows = BTreeMap::new();
    for r in q("SELECT seq, count(*) FROM rows GROUP BY seq").await {
        rows.insert(r.get::<_, i64>(0), r.get::<_, i64>(1));
    }
    let twice: Vec<_> = rows.iter().filter(|(_, n)| **n != 1).collect();
    if !twice.is_empty() {
        failures.push(format!("rows stored more than once: {twice:?}"));
    }
    let found = rows.into_keys().collect();
    check_set(
        "INSERT",
        &found,
        &ledger.rows_tried,
        &ledger.rows_acked,
        &mut failures,
    );

    // COPY into a user table: whole batches.
    let mut copies = BTreeMap::new();
    for r in q("SELECT batch, count(*) FROM batches GROUP BY batch").await {
        copies.insert(r.get::<_, i64>(0), r.get::<_, i64>(1));
    }
    let torn: Vec<_> = copies.iter().filter(|(_, n)| **n != COPY_ROWS).collect();
    if !torn.is_empty() {
        failures.push(format!("torn COPYs (batch: rows): {torn:?}"));
    }
    let found = copies.into_keys().collect();
    check_set(
        "COPY",
        &found,
        &ledger.batches_tried,
        &ledger.batches_acked,
        &mut failures,
    );

    // UPDATE: at least the last acknowledged value, and one that was written.
    let v: i64 = scalar(c, "SELECT v FROM counter WHERE id = 1", &[]).await;
    let last_acked = ledger.counter_acked.last().copied().unwrap_or(0);
    if v < last_acked || (v != 0 && !ledger.counter_tried.contains(&v)) {
        failures.push(format!(
            "counter is {v}: the last acknowledged value was {last_acked}"
        ));
    }

    // Models: every acknowledged version is there, and every version there scores.
    for (name, acked) in [("crash", &ledger.trained), ("imported", &ledger.imported)] {
        let versions: BTreeSet<i64> = c
            .query(
                "SELECT version FROM runbase.models WHERE name = $1",
                &[&name],
            )
            .await
            .expect("models")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let lost: Vec<_> = acked.difference(&versions).collect();
        if !lost.is_empty() {
            failures.push(format!(
                "model {name}: acknowledged versions lost: {lost:?}"
            ));
        }
        for version in versions {
            let sql =
                format!("SELECT count(*) FROM predict('{name}@{version}', 'SELECT * FROM iris')");
            match c.query_one(sql.as_str(), &[]).await {
                Ok(row) if row.get::<_, i64>(0) == 150 => {}
                Ok(row) => failures.push(format!("{sql}: {} rows", row.get::<_, i64>(0))),
                Err(e) => failures.push(format!("model {name}@{version} does not score: {e}")),
            }
        }
    }

    // Artifacts: every acknowledged one reads back.
    for (run, path) in &ledger.artifacts_acked {
        match c
            .query_one("SELECT artifact($1::text, $2)", &[run, path])
            .await
        {
            Ok(row) if row.get::<_, Vec<u8>>(0) == path.as_bytes() => {}
            Ok(_) => failures.push(format!("artifact {path} of {run}: other bytes")),
            Err(e) => failures.push(format!("artifact {path} of {run}: {e}")),
        }
    }

    // The catalog and the tables agree: every table reads at its catalog version.
    for r in q("SELECT name, version FROM runbase.tables").await {
        let (name, version): (String, i64) = (r.get(0), r.get(1));
        let sql = format!("SELECT count(*) FROM table_at('{name}', {version})");
        if let Err(e) = c.query_one(sql.as_str(), &[]).await {
            failures.push(format!(
                "table {name} at its catalog version {version}: {e}"
            ));
        }
        let sql = format!("SELECT count(*) FROM \"{name}\"");
        if let Err(e) = c.query_one(sql.as_str(), &[]).await {
            failures.push(format!("table {name}: {e}"));
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_every_crash_and_nothing_is_half_there() {
    let cycles: u64 = std::env::var("RUNBASE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("RUNBASE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("crash loop: {cycles} cycles, RUNBASE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start(dir.path());
    let model_blob = {
        let c = server.connect().await;
        c.batch_execute(
            "CREATE TABLE rows (writer bigint, seq bigint, payload text); \
             CREATE TABLE batches (batch bigint, i bigint); \
             CREATE TABLE counter (id int, v bigint); \
             INSERT INTO counter VALUES (1, 0)",
        )
        .await
        .expect("tables");
        load_csv(&c, "iris", "iris", "species", "text").await;
        c.query_one(
            "SELECT version FROM train('seedling', 'SELECT * FROM iris', 'species', '{\"epochs\": 2}')",
            &[],
        )
        .await
        .expect("train the model to import");
        let blob: Vec<u8> = scalar(&c, "SELECT export_model('seedling')", &[]).await;
        Arc::new(blob)
    };

    let ledger: Shared = Arc::default();
    let mut starts = Vec::new();
    let mut aborted_at = BTreeMap::<&str, u32>::new();
    let mut killed = 0;
    for cycle in 0..cycles {
        let c = server.connect().await;
        let run: String = scalar(&c, "SELECT start_run('crash-loop')::text", &[]).await;
        let writing = tokio::spawn(writers(
            server.conn_str(),
            cycle,
            run,
            (cycle as i64 + 1) * 1_000_000,
            model_blob.clone(),
            ledger.clone(),
        ));
        let point =
            (cycle % 2 == 1).then(|| KILL_POINTS[rng.below(KILL_POINTS.len() as u64) as usize]);
        if let Some(point) = point {
            // Let the writers get going, then abort at the point's Nth pass.
            tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
            let actions = format!("{}*off->return(kill)", rng.below(20));
            c.query_one("SELECT runbase_failpoint($1, $2)", &[&point, &actions])
                .await
                .ok();
            let deadline = Instant::now() + Duration::from_secs(20);
            while server.exited().is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if server.exited().is_some() {
                *aborted_at.entry(point).or_default() += 1;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(300 + rng.below(2_500))).await;
            killed += 1;
        }
        server.kill9();
        drop(c);
        writing.await.expect("writers");

        let started = Instant::now();
        server = TestServer::start(dir.path());
        let took = started.elapsed();
        starts.push(took);
        assert!(took < START_BOUND, "the restart took {took:?}");
        let c = server.connect().await;
        // The writers are done: check the ledger outside its lock, then put it back.
        let snapshot = std::mem::take(&mut *ledger.lock().expect("ledger"));
        let failures = verify(&c, &snapshot).await;
        assert!(
            snapshot.errors.is_empty(),
            "cycle {cycle} (seed {seed}): writers got errors: {:#?}",
            snapshot.errors
        );
        *ledger.lock().expect("ledger") = snapshot;
        assert!(
            failures.is_empty(),
            "cycle {cycle} (seed {seed}, point {point:?}): {failures:#?}"
        );
    }

    let ledger = ledger.lock().expect("ledger");
    let acked = ledger.metric_acked.len()
        + ledger.copied_acked.len() * COPY_POINTS as usize
        + ledger.rows_acked.len()
        + ledger.batches_acked.len() * COPY_ROWS as usize
        + ledger.counter_acked.len()
        + ledger.trained.len()
        + ledger.imported.len()
        + ledger.artifacts_acked.len();
    let slowest = starts.iter().max().copied().unwrap_or_default();
    println!(
        "crash loop: {cycles} cycles survived ({killed} SIGKILLs, aborts at failpoints {aborted_at:?}); \
         {acked} acknowledged writes verified (points {}, copied points {}, rows {}, copied rows {}, \
         updates {}, trained versions {}, imported versions {}, artifacts {}); slowest restart {slowest:?}",
        ledger.metric_acked.len(),
        ledger.copied_acked.len() * COPY_POINTS as usize,
        ledger.rows_acked.len(),
        ledger.batches_acked.len() * COPY_ROWS as usize,
        ledger.counter_acked.len(),
        ledger.trained.len(),
        ledger.imported.len(),
        ledger.artifacts_acked.len(),
    );
    // Every simple writer got writes through (a writer that stops at once tests nothing).
    for (writer, n) in [
        ("log_metric", ledger.metric_acked.len()),
        ("COPY runbase.metrics", ledger.copied_acked.len()),
        ("INSERT", ledger.rows_acked.len()),
        ("COPY", ledger.batches_acked.len()),
        ("UPDATE", ledger.counter_acked.len()),
    ] {
        assert!(
            n > 0,
            "{writer}: no write was acknowledged in {cycles} cycles"
        );
    }
}
