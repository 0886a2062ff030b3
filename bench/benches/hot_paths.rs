//! Micro-benchmarks of the hot paths: Arrow ↔ tensor conversion (PREDICT's per-batch
//! work), metric key encoding and the RocksDB write path (every `log_metric`), COPY text
//! parsing, and encoding result rows for the wire.
//!
//! Run with `cargo bench --workspace --bench hot_paths` (`--workspace`, so the build shares
//! the release build's compiled dependencies).

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use runbase_bench::data::Rng;
use runbase_engine::QueryOutput;
use runbase_engine::datafusion;
use runbase_engine::tracking::{MetricPoint, keys};
use runbase_udfs::inference::{Output, ServingSpec, prediction_columns};
use runbase_udfs::train::features::{InputColumn, raw_rows_of};
use tch::{Device, Kind, Tensor};

const ROWS: usize = 8192;
const FEATURES: usize = 32;

fn numeric_inputs(n: usize) -> Vec<InputColumn> {
    (0..n)
        .map(|k| InputColumn::Numeric {
            name: format!("f{k}"),
            mean: 0.0,
            std: 1.0,
        })
        .collect()
}

fn arrow_tensor(c: &mut Criterion) {
    let mut rng = Rng::new(7);
    let columns: Vec<ArrayRef> = (0..FEATURES)
        .map(|_| {
            Arc::new(Float64Array::from_iter_values(
                (0..ROWS).map(|_| rng.next_f64()),
            )) as ArrayRef
        })
        .collect();
    let inputs = numeric_inputs(FEATURES);
    let mut g = c.benchmark_group("arrow_tensor");
    g.throughput(Throughput::Elements((ROWS * FEATURES) as u64));
    g.bench_function("arrow_to_tensor_8192x32_f64", |b| {
        b.iter(|| raw_rows_of(&inputs, &columns).expect("tensor"))
    });
    let classes = ServingSpec {
        inputs: vec![],
        output: Output::Classification {
            classes: vec!["a".into(), "b".into(), "c".into()],
        },
        device: None,
        target: None,
    };
    let logits = Tensor::randn([ROWS as i64, 3], (Kind::Float, Device::Cpu));
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function(
        "tensor_to_arrow_8192_rows_3_classes_with_probabilities",
        |b| b.iter(|| prediction_columns(&classes, &logits, ROWS, true).expect("columns")),
    );
    let regression = ServingSpec {
        output: Output::Regression,
        ..classes.clone()
    };
    let values = Tensor::randn([ROWS as i64], (Kind::Float, Device::Cpu));
    g.bench_function("tensor_to_arrow_8192_values", |b| {
        b.iter(|| prediction_columns(&regression, &values, ROWS, false).expect("columns"))
    });
    g.finish();
}

fn metrics(c: &mut Criterion) {
    let run = uuid::Uuid::new_v4();
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("encode_1000_metric_keys", |b| {
        b.iter(|| {
            (0..1000i64)
                .map(|step| keys::metric_key(&run, "val_loss", step, 1_700_000_000_000_000, 0))
                .map(|k| k.len())
                .sum::<usize>()
        })
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = runbase_engine::DatabaseOptions::new(dir.path());
    options.synchronous_commit = false;
    let db = rt
        .block_on(runbase_engine::Database::open(options))
        .expect("open");
    let tracking = db.tracking();
    let run = tracking
        .start_run("bench", Default::default())
        .expect("run")
        .run_id;
    let mut step = 0i64;
    g.bench_function("log_1000_points_one_write_batch", |b| {
        b.iter(|| {
            let points: Vec<MetricPoint> = (0..1000)
                .map(|i| MetricPoint {
                    run,
                    key: "loss".into(),
                    step: Some(step + i),
                    ts_us: None,
                    value: 0.5,
                })
                .collect();
            step += 1000;
            tracking.log_metrics(&points).expect("log")
        })
    });
    g.finish();
}

fn copy_parse(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = rt
        .block_on(runbase_engine::Database::open_dir(dir.path()))
        .expect("open");
    let session = db.session();
    rt.block_on(
        session
            .sql("CREATE TABLE points (run text, key text, step bigint, value double precision)"),
    )
    .expect("create");
    let mut rng = Rng::new(3);
    let mut data = String::new();
    for step in 0..10_000 {
        data.push_str(&format!(
            "0b6c9a1e-6f4c-4d2a-9f43-2c1d7e8a9b10\tloss\t{step}\t{:.6}\n",
            rng.next_f64()
        ));
    }
    let mut g = c.benchmark_group("copy");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("parse_10k_text_lines", |b| {
        b.iter_batched(
            || {
                let mut out = rt
                    .block_on(session.sql("COPY points FROM STDIN"))
                    .expect("copy");
                match out.pop() {
                    Some(QueryOutput::CopyIn(copy)) => copy,
                    _ => panic!("COPY FROM STDIN did not start a copy"),
                }
            },
            |mut copy| {
                copy.push(data.as_bytes());
                copy
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn wire(c: &mut Criterion) {
    use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
    use pgwire::api::portal::Format;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Float64, true),
        Field::new("label", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..ROWS as i64)),
            Arc::new(Float64Array::from_iter_values(
                (0..ROWS).map(|i| i as f64 * 0.5),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..ROWS).map(|i| if i % 2 == 0 { "setosa" } else { "virginica" }),
            )),
        ],
    )
    .expect("batch");
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(ROWS as u64));
    for (name, format) in [
        ("encode_8192_rows_binary", Format::UnifiedBinary),
        ("encode_8192_rows_text", Format::UnifiedText),
    ] {
        let fields = Arc::new(arrow_schema_to_pg_fields(&schema, &format, None).expect("fields"));
        g.bench_function(name, |b| {
            b.iter(|| encode_recordbatch(fields.clone(), batch.clone()).count())
        });
    }
    g.finish();
}

criterion_group!(benches, arrow_tensor, metrics, copy_parse, wire);
criterion_main!(benches);
