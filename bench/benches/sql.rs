//! Engine SQL benchmarks: one committed INSERT (a Delta commit), and scans.
//!
//! Run with `cargo bench --workspace --bench sql`.

use criterion::{Criterion, criterion_group, criterion_main};
use runbase_bench::{fixture, metrics_insert_sql};

fn insert(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (db, _dir) = rt.block_on(fixture(0));
    let session = db.session();
    let mut step = 0;
    c.bench_function("insert_100_rows_one_commit", |b| {
        b.iter(|| {
            let sql = metrics_insert_sql(100, step);
            step += 100;
            rt.block_on(session.sql(&sql)).expect("insert");
        });
    });
}

fn scan(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (db, _dir) = rt.block_on(fixture(10_000));
    let session = db.session();
    c.bench_function("aggregate_10k_rows", |b| {
        b.iter(|| {
            rt.block_on(session.query("SELECT run_id, min(loss) FROM metrics GROUP BY run_id"))
                .expect("query")
        });
    });
}

criterion_group!(benches, insert, scan);
criterion_main!(benches);
