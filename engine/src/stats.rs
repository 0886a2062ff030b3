//! [`Stats`]: the database's counters, kept in one `prometheus-client` registry.
//!
//! Both front ends and an embedding program report through the same [`Stats`] (one per
//! [`crate::Database`]), so `GET /metrics` and `SELECT * FROM runbase.stats` cannot
//! disagree: the system table is parsed from the very text `/metrics` serves.
//!
//! What is counted here: connections (open, accepted, refused by reason), statements by
//! kind and result class with a latency histogram, rows returned, tracking points
//! written, COPY rows; read at scrape time, RocksDB's sizes and write stalls and the
//! process's memory. Crates on top register families or collectors of their own
//! ([`Stats::register`], [`Stats::register_collector`]).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::error::{Error, ErrorClass, Result};
use crate::kv::WeakKv;
use crate::system::SystemTable;

/// The front end a connection came through.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontEndLabels {
    front_end: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    front_end: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatementLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type Latencies = Family<KindLabels, Histogram, fn() -> Histogram>;

/// Statement latency buckets: 100 µs to ~26 s, ×4 apart.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// The database's counters. Shared (`Arc`) by the database, its sessions and the front ends.
#[derive(Debug)]
pub struct Stats {
    registry: Mutex<Registry>,
    connections_open: Family<FrontEndLabels, Gauge>,
    connections_accepted: Family<FrontEndLabels, Counter>,
    connections_refused: Family<RefusedLabels, Counter>,
    statements: Family<StatementLabels, Counter>,
    statement_seconds: Latencies,
    rows_returned: Counter,
    tracking_points: Counter,
    copy_rows: Counter,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Fresh counters, registered under the `runbase_` prefix, with the process
    /// collector (resident memory).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("runbase");
        let mut stats = Self {
            connections_open: Family::default(),
            connections_accepted: Family::default(),
            connections_refused: Family::default(),
            statements: Family::default(),
            statement_seconds: Family::new_with_constructor(latency_histogram),
            rows_returned: Counter::default(),
            tracking_points: Counter::default(),
            copy_rows: Counter::default(),
            registry: Mutex::default(),
        };
        registry.register(
            "connections_open",
            "Client connections open now, by front end",
            stats.connections_open.clone(),
        );
        registry.register(
            "connections_accepted",
            "Client connections accepted, by front end",
            stats.connections_accepted.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections refused, by front end and reason (too_many_connections, tls_required, authentication_failed)",
            stats.connections_refused.clone(),
        );
        registry.register(
            "statements",
            "Statements run, by kind and result (ok, or the error's class)",
            stats.statements.clone(),
        );
        registry.register_with_unit(
            "statement_duration",
            "Statement latency from execution to the last row read, by kind",
            Unit::Seconds,
            stats.statement_seconds.clone(),
        );
        registry.register(
            "rows_returned",
            "Rows returned to clients by queries",
            stats.rows_returned.clone(),
        );
        registry.register(
            "tracking_points_written",
            "Metric points committed to the tracking store",
            stats.tracking_points.clone(),
        );
        registry.register(
            "copy_rows",
            "Rows committed by COPY FROM STDIN",
            stats.copy_rows.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        stats.registry = Mutex::new(registry);
        stats
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a metric of a crate on top (named without the `runbase_` prefix).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// Registers a collector read at every scrape (device memory, …).
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.registry().register_collector(collector);
    }

    /// Reports RocksDB's figures at every scrape, while `kv` is open.
    pub(crate) fn watch_kv(&self, kv: WeakKv) {
        self.register_collector(Box::new(KvCollector(kv)));
    }

    /// A connection was accepted through `front_end`; it counts as open until the guard
    /// is dropped.
    pub fn connection_opened(self: &Arc<Self>, front_end: &'static str) -> ConnectionGuard {
        let labels = FrontEndLabels { front_end };
        self.connections_accepted.get_or_create(&labels).inc();
        self.connections_open.get_or_create(&labels).inc();
        ConnectionGuard {
            stats: self.clone(),
            front_end,
        }
    }

    /// A connection through `front_end` was refused for `reason`.
    pub fn connection_refused(&self, front_end: &'static str, reason: &'static str) {
        self.connections_refused
            .get_or_create(&RefusedLabels { front_end, reason })
            .inc();
    }

    /// Starts timing a statement of `kind`; the timer records when finished or dropped.
    pub fn statement_started(self: &Arc<Self>, kind: &'static str) -> StatementTimer {
        StatementTimer {
            stats: self.clone(),
            kind,
            started: Instant::now(),
            rows: 0,
            failed: None,
            recorded: false,
        }
    }

    /// Counts a statement that ended (or was refused) with `result`, without a duration.
    pub fn statement_refused(&self, kind: &'static str, class: ErrorClass) {
        self.statements
            .get_or_create(&StatementLabels {
                kind,
                result: class.as_str(),
            })
            .inc();
    }

    fn statement_finished(
        &self,
        kind: &'static str,
        result: &'static str,
        seconds: f64,
        rows: u64,
    ) {
        self.statements
            .get_or_create(&StatementLabels { kind, result })
            .inc();
        self.statement_seconds
            .get_or_create(&KindLabels { kind })
            .observe(seconds);
        self.rows_returned.inc_by(rows);
    }

    /// `points` metric points were committed.
    pub fn tracking_points_written(&self, points: u64) {
        self.tracking_points.inc_by(points);
    }

    /// A `COPY FROM STDIN` committed `rows` rows.
    pub fn copy_rows_loaded(&self, rows: u64) {
        self.copy_rows.inc_by(rows);
    }

    /// Every metric in the OpenMetrics text format (what `GET /metrics` serves). Reads the
    /// collectors, RocksDB's among them: call it off the async workers.
    pub fn encode(&self) -> Result<String> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry())
            .map_err(|e| Error::Internal(format!("encoding the metrics: {e}")))?;
        Ok(out)
    }

    /// Every sample of [`Stats::encode`] as (name, labels, value): the rows of
    /// `runbase.stats`.
    pub fn samples(&self) -> Result<Vec<Sample>> {
        Ok(parse_samples(&self.encode()?))
    }
}

/// One sample of the metrics text.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's full name (`runbase_statements_total`).
    pub name: String,
    /// Its labels as written between the braces (`kind="select",result="ok"`), or empty.
    pub labels: String,
    /// The value.
    pub value: f64,
}

/// The samples of an OpenMetrics text: every line that is not a comment.
fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse::<f64>().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}').unwrap_or(rest)),
                None => (series, ""),
            };
            Some(Sample {
                name: name.to_string(),
                labels: labels.to_string(),
                value,
            })
        })
        .collect()
}

/// Counts a connection as open while it lives.
#[derive(Debug)]
pub struct ConnectionGuard {
    stats: Arc<Stats>,
    front_end: &'static str,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.stats
            .connections_open
            .get_or_create(&FrontEndLabels {
                front_end: self.front_end,
            })
            .dec();
    }
}

/// Times one statement; records it once: when finished, or — as failed or cancelled —
/// when dropped.
#[derive(Debug)]
pub struct StatementTimer {
    stats: Arc<Stats>,
    kind: &'static str,
    started: Instant,
    rows: u64,
    failed: Option<ErrorClass>,
    recorded: bool,
}

impl StatementTimer {
    /// Adds `rows` returned rows.
    pub fn rows(&mut self, rows: u64) {
        self.rows += rows;
    }

    /// Marks the statement failed with `class` (the first failure counts).
    pub fn failed(&mut self, class: ErrorClass) {
        self.failed.get_or_insert(class);
    }

    /// Records the statement now.
    pub fn finish(mut self) {
        self.record(true);
    }

    fn record(&mut self, finished: bool) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        // Dropped before it finished, without an error: cancelled (a timeout, a cancel
        // request, a closed connection, rows the client stopped reading).
        let result = match (self.failed, finished) {
            (Some(class), _) => class.as_str(),
            (None, true) => "ok",
            (None, false) => ErrorClass::Canceled.as_str(),
        };
        self.stats.statement_finished(
            self.kind,
            result,
            self.started.elapsed().as_secs_f64(),
            self.rows,
        );
    }
}

impl Drop for StatementTimer {
    fn drop(&mut self) {
        self.record(false);
    }
}

/// Writes one gauge sample per value into `encoder`.
fn encode_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> std::fmt::Result {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, unit, gauge.metric_type())?;
    gauge.encode(metric)
}

/// The process's resident memory, read from `/proc/self/status` at each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return Ok(());
        };
        for (field, name, help) in [
            (
                "VmRSS:",
                "process_resident_memory",
                "Resident memory of the process",
            ),
            (
                "VmHWM:",
                "process_peak_resident_memory",
                "Peak resident memory of the process",
            ),
        ] {
            if let Some(kb) = proc_status_kb(&status, field) {
                encode_gauge(
                    &mut encoder,
                    name,
                    help,
                    Some(&Unit::Bytes),
                    kb.saturating_mul(1024),
                )?;
            }
        }
        Ok(())
    }
}

/// A `Field:   123 kB` line of `/proc/<pid>/status`.
fn proc_status_kb(status: &str, field: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// RocksDB's own figures (summed over column families), read at each scrape.
#[derive(Debug)]
struct KvCollector(WeakKv);

impl Collector for KvCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(kv) = self.0.upgrade() else {
            return Ok(());
        };
        let bytes = Some(&Unit::Bytes);
        for (property, name, help, unit) in [
            (
                "rocksdb.total-sst-files-size",
                "rocksdb_sst_files_size",
                "Size of RocksDB's SST files",
                bytes,
            ),
            (
                "rocksdb.cur-size-all-mem-tables",
                "rocksdb_memtables_size",
                "Size of RocksDB's memtables",
                bytes,
            ),
            (
                "rocksdb.estimate-num-keys",
                "rocksdb_estimated_keys",
                "RocksDB's estimate of the keys it holds",
                None,
            ),
            (
                "rocksdb.estimate-pending-compaction-bytes",
                "rocksdb_pending_compaction",
                "Bytes RocksDB estimates compaction has to rewrite",
                bytes,
            ),
        ] {
            let value = kv.property_sum(property);
            encode_gauge(&mut encoder, name, help, unit, saturating_i64(value))?;
        }
        for (property, name, help) in [
            (
                "rocksdb.num-running-compactions",
                "rocksdb_running_compactions",
                "Compactions running now",
            ),
            (
                "rocksdb.is-write-stopped",
                "rocksdb_write_stopped",
                "1 while RocksDB stops writes (a write stall)",
            ),
            (
                "rocksdb.actual-delayed-write-rate",
                "rocksdb_delayed_write_rate",
                "The rate RocksDB slows writes to (bytes/s), 0 when it does not",
            ),
            (
                "rocksdb.background-errors",
                "rocksdb_background_errors",
                "Background errors RocksDB has met (flushes, compactions)",
            ),
        ] {
            let value = kv.property(property);
            encode_gauge(&mut encoder, name, help, None, saturating_i64(value))?;
        }
        Ok(())
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `runbase.stats`: every sample of `/metrics` as a row (name, labels, value).
#[derive(Debug)]
pub struct StatsTable {
    stats: Arc<Stats>,
    schema: SchemaRef,
}

impl StatsTable {
    /// The system table over `stats`.
    pub fn new(stats: Arc<Stats>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("labels", DataType::Utf8, false),
            Field::new("value", DataType::Float64, false),
        ]));
        Self { stats, schema }
    }
}

#[async_trait]
impl SystemTable for StatsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        let stats = self.stats.clone();
        // Reading RocksDB's properties and /proc is blocking work.
        let samples = tokio::task::spawn_blocking(move || stats.samples())
            .await
            .map_err(|e| Error::Internal(format!("reading the metrics: {e}")))??;
        let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        let labels: Vec<&str> = samples.iter().map(|s| s.labels.as_str()).collect();
        let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(StringArray::from(labels)),
                Arc::new(Float64Array::from(values)),
            ],
        )
        .map_err(|e| Error::DataFusion(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(stats: &Stats, name: &str, labels: &str) -> Option<f64> {
        stats
            .samples()
            .expect("samples")
            .into_iter()
            .find(|s| s.name == name && s.labels == labels)
            .map(|s| s.value)
    }

    #[test]
    fn statements_are_counted_once_with_their_result() {
        let stats = Arc::new(Stats::new());
        let mut ok = stats.statement_started("select");
        ok.rows(3);
        ok.rows(2);
        ok.finish();
        let mut failed = stats.statement_started("select");
        failed.failed(ErrorClass::NotFound);
        failed.failed(ErrorClass::Internal);
        drop(failed);
        drop(stats.statement_started("select"));
        stats.statement_refused("unknown", ErrorClass::InvalidInput);

        assert_eq!(
            value(
                &stats,
                "runbase_statements_total",
                r#"kind="select",result="ok""#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &stats,
                "runbase_statements_total",
                r#"kind="select",result="not_found""#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &stats,
                "runbase_statements_total",
                r#"kind="unknown",result="invalid_input""#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &stats,
                "runbase_statements_total",
                r#"kind="select",result="canceled""#
            ),
            Some(1.0),
            "dropped before it finished"
        );
        assert_eq!(value(&stats, "runbase_rows_returned_total", ""), Some(5.0));
        assert_eq!(
            value(
                &stats,
                "runbase_statement_duration_seconds_count",
                r#"kind="select""#
            ),
            Some(3.0)
        );
    }

    #[test]
    fn connections_open_until_dropped() {
        let stats = Arc::new(Stats::new());
        let a = stats.connection_opened("pg");
        let b = stats.connection_opened("pg");
        drop(a);
        stats.connection_refused("pg", "too_many_connections");
        assert_eq!(
            value(&stats, "runbase_connections_open", r#"front_end="pg""#),
            Some(1.0)
        );
        assert_eq!(
            value(
                &stats,
                "runbase_connections_accepted_total",
                r#"front_end="pg""#
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &stats,
                "runbase_connections_refused_total",
                r#"front_end="pg",reason="too_many_connections""#
            ),
            Some(1.0)
        );
        drop(b);
        assert_eq!(
            value(&stats, "runbase_connections_open", r#"front_end="pg""#),
            Some(0.0)
        );
    }

    #[test]
    fn text_is_openmetrics_and_parses_back() {
        let stats = Stats::new();
        stats.tracking_points_written(7);
        let text = stats.encode().expect("encode");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE runbase_tracking_points_written counter"),
            "{text}"
        );
        assert_eq!(
            value(&stats, "runbase_tracking_points_written_total", ""),
            Some(7.0)
        );
        if cfg!(target_os = "linux") {
            let rss = value(&stats, "runbase_process_resident_memory_bytes", "");
            assert!(rss.is_some_and(|v| v > 0.0), "{text}");
        }
        assert_eq!(
            parse_samples("a{x=\"1\"} 2.5\n# c\nb 3\n"),
            vec![
                Sample {
                    name: "a".into(),
                    labels: "x=\"1\"".into(),
                    value: 2.5
                },
                Sample {
                    name: "b".into(),
                    labels: String::new(),
                    value: 3.0
                }
            ]
        );
    }
}
