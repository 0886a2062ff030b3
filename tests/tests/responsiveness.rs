//! Synced tracking writes wait for the disk off the async workers: while many clients log
//! metrics as fast as they can (every call synced), another client's `SELECT 1` keeps
//! answering promptly, and every acknowledged point is stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use runbase_tests::server::TestServer;

const WRITERS: usize = 16;
const LOAD: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn select_1_answers_within_50_ms_while_16_clients_log_synced_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    // As many query threads as a small CI machine has cores.
    let server = TestServer::start_with(dir.path(), &["--query-threads", "2"]);
    let setup = server.connect().await;
    let run_id: String = setup
        .query_one("SELECT start_run('load', 'writers')", &[])
        .await
        .expect("start_run")
        .get(0);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = server.connect().await;
        let stop = stop.clone();
        let acked = acked.clone();
        let run_id = run_id.clone();
        writers.push(tokio::spawn(async move {
            let statement = client
                .prepare("SELECT log_metric($1, $2, $3)")
                .await
                .expect("prepare log_metric");
            let key = format!("w{w}");
            let mut value = 0.0_f64;
            while !stop.load(Ordering::Relaxed) {
                client
                    .query_one(&statement, &[&run_id, &key, &value])
                    .await
                    .expect("log_metric");
                acked.fetch_add(1, Ordering::Relaxed);
                value += 1.0;
            }
        }));
    }

    // Let the writers get going, then probe.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = server.connect().await;
    let select = probe.prepare("SELECT 1").await.expect("prepare");
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < LOAD {
        let t = Instant::now();
        let one: i64 = probe
            .query_one(&select, &[])
            .await
            .expect("SELECT 1")
            .get(0);
        assert_eq!(one, 1);
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }

    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let (p50, p95, max) = (pct(0.5), pct(0.95), pct(1.0));
    let writes = acked.load(Ordering::Relaxed);
    eprintln!(
        "SELECT 1 under {WRITERS} synced log_metric clients: {} probes, p50 {p50:?}, p95 {p95:?}, max {max:?}; {writes} log_metric calls acknowledged",
        latencies.len()
    );
    assert!(writes > 0, "the writers logged nothing");
    assert!(
        p95 < Duration::from_millis(50),
        "SELECT 1 stalled behind synced writes: p50 {p50:?}, p95 {p95:?}, max {max:?}"
    );

    // Every acknowledged call is stored.
    let stored: i64 = setup
        .query_one(
            "SELECT count(*) FROM runbase.metrics WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored as u64, writes);
}
