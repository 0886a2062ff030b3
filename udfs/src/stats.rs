//! The `udfs` figures in the database's metrics (`GET /metrics`, `runbase.stats`):
//! TRAIN jobs and epochs, inference rows and batches, the model cache, and each device's
//! memory. Counters are kept where the work happens ([`TrainCounters`],
//! [`InferenceCounters`]); the rest is read at scrape time (`UdfsCollector`).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;
use runbase_engine::Database;

use crate::inference::Inference;
use crate::train::jobs::Jobs;

/// The status a training ended with.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// `FINISHED`, `FAILED` or `KILLED`.
    pub status: &'static str,
}

/// What TRAIN counts as it runs.
#[derive(Debug, Clone, Default)]
pub struct TrainCounters {
    /// Trainings that ended, by status.
    pub finished: Family<StatusLabels, Counter>,
    /// Epochs trained (over every trial).
    pub epochs: Counter,
}

/// What inference counts as it runs.
#[derive(Debug, Clone, Default)]
pub struct InferenceCounters {
    /// Forward passes (one per batch of rows).
    pub batches: Counter,
    /// Rows scored.
    pub rows: Counter,
}

/// Registers the `udfs` figures in `db`'s metrics.
pub fn register(
    db: &Database,
    train: &TrainCounters,
    inference: &Arc<Inference>,
    jobs: &Arc<Jobs>,
) {
    let stats = db.stats();
    stats.register(
        "train_runs_finished",
        "TRAIN trainings that ended, by status",
        train.finished.clone(),
    );
    stats.register(
        "train_epochs",
        "Epochs trained by TRAIN",
        train.epochs.clone(),
    );
    stats.register(
        "inference_batches",
        "Forward passes of predict and evaluate (one per batch of rows)",
        inference.counters().batches.clone(),
    );
    stats.register(
        "inference_rows",
        "Rows scored by predict and evaluate",
        inference.counters().rows.clone(),
    );
    stats.register_collector(Box::new(UdfsCollector {
        jobs: jobs.clone(),
        inference: Arc::downgrade(inference),
    }));
}

/// The figures read at scrape time.
#[derive(Debug)]
struct UdfsCollector {
    jobs: Arc<Jobs>,
    inference: std::sync::Weak<Inference>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    device: String,
    kind: &'static str,
}

impl Collector for UdfsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        // TRAIN jobs by state: queued (waiting for a training slot), loading, training,
        // saving.
        let states = self.jobs.states();
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "train_jobs",
            "TRAIN jobs now, by state (queued jobs wait for a training slot)",
            None,
            gauge.metric_type(),
        )?;
        for state in ["queued", "loading", "training", "saving"] {
            let n = states.iter().filter(|s| **s == state).count();
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                .encode(family.encode_family(&StateLabels { state })?)?;
        }
        if let Some(inference) = self.inference.upgrade() {
            let cache = inference.cache();
            for (name, help, unit, value) in [
                (
                    "model_cache",
                    "Bytes of model blobs loaded in the cache",
                    Some(&Unit::Bytes),
                    cache.bytes(),
                ),
                (
                    "model_cache_models",
                    "Models loaded in the cache",
                    None,
                    cache.len(),
                ),
            ] {
                let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
                g.encode(encoder.encode_descriptor(name, help, unit, g.metric_type())?)?;
            }
            for (name, help, value) in [
                (
                    "model_cache_hits",
                    "Model lookups the cache answered",
                    cache.hits(),
                ),
                (
                    "model_cache_loads",
                    "Models loaded from the object store (cache misses)",
                    cache.loads(),
                ),
            ] {
                let c = ConstCounter::new(value);
                c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
            }
        }
        // Memory of each device libtorch can run on: the host's, and each CUDA device's.
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "device_memory",
            "Memory of each device (kind: total or used)",
            Some(&Unit::Bytes),
            gauge.metric_type(),
        )?;
        for d in crate::devices::memory() {
            for (kind, value) in [("total", d.total), ("used", d.used)] {
                if let Some(v) = value {
                    ConstGauge::new(v).encode(family.encode_family(&DeviceLabels {
                        device: d.device.clone(),
                        kind,
                    })?)?;
                }
            }
        }
        Ok(())
    }
}
