//! Experiment tracking: experiments, runs, params, metrics, tags, lineage and artifacts.
//!
//! Records live in RocksDB column families laid out so the common reads are range scans
//! (see [`keys`]); artifact blobs live on the object store. Every write is one RocksDB
//! write batch, so a call stores all of its values or none, and is synced to the WAL before
//! it returns when the database runs with synchronous commits (the default).
//!
//! Layout:
//! - this file: [`Tracking`] (the store's handle), its column families and locks;
//! - `types`: the records ([`Run`], [`Experiment`], …) and the checks on logged values;
//! - `experiments`, `runs`, `params` (params, tags, lineage), `metrics`, `artifacts`:
//!   the store's operations, one file per kind of record;
//! - [`models`]: the model registry;
//! - [`alerts`]: alert rules, evaluated as records are written, and their events;
//! - [`keys`]: key encodings.
//! - [`series`]: one metric's history for a chart, downsampled with M4;
//! - [`rollup`]: per-block summaries of metric histories, kept as points are written;
//! - [`mlflow`]: records only MLflow clients make (dataset inputs, logged models, …);
//! - [`events`]: what changed, published as it commits (the dashboard's live stream);
//! - [`search`]: the runs of an experiment as a table, filtered, sorted and paged;
//! - `tables`: the `runbase.*` tracking tables, with filter push-down into range scans.
//! - `functions`: `start_run`, `log_metric`, … as SQL functions.

pub mod alerts;
mod artifacts;
use artifacts::hex;
pub mod events;
mod experiments;
pub(crate) mod functions;
pub mod keys;
mod metrics;
pub mod mlflow;
pub mod models;
mod params;
pub mod rollup;
mod runs;
pub mod search;
pub mod series;
pub(crate) mod tables;
mod types;

pub use artifacts::{
    ArtifactEntry, MLFLOW_ARTIFACTS, mlflow_run_artifact, validate_mlflow_artifact_path,
};
pub use experiments::DEFAULT_EXPERIMENT;
pub use runs::RunUpdate;
pub use types::*;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteBatch};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::kv::{Durability, Kv};
use crate::stats::Stats;
use crate::storage::ObjectStoreRoot;

/// Longest key (param, metric or tag name), in bytes — as in MLflow.
pub const MAX_KEY_LEN: usize = 250;
/// Longest param or tag value, in bytes.
pub const MAX_VALUE_LEN: usize = 8000;
/// Longest artifact path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

pub(crate) const CF_EXPERIMENTS: &str = "experiments";
pub(crate) const CF_RUNS: &str = "runs";
pub(crate) const CF_RUNS_BY_EXPERIMENT: &str = "runs_by_experiment";
pub(crate) const CF_PARAMS: &str = "params";
pub(crate) const CF_TAGS: &str = "tags";
pub(crate) const CF_METRICS: &str = "metrics";
pub(crate) const CF_LATEST: &str = "latest_metrics";
pub(crate) const CF_INPUTS: &str = "run_inputs";
pub(crate) const CF_ARTIFACTS: &str = "artifacts";
pub(crate) const CF_MODELS: &str = "models";
pub(crate) const CF_MODEL_ALIASES: &str = "model_aliases";
pub(crate) const CF_ALERTS: &str = "alerts";
pub(crate) const CF_ROLLUPS: &str = "metric_rollups";
pub(crate) const CF_MLFLOW: &str = "mlflow";

const NEXT_EXPERIMENT_ID: &[u8] = b"meta/next_experiment_id";

/// The column families tracking keeps, with their options.
pub(crate) fn column_families() -> Vec<ColumnFamilyDescriptor> {
    let plain = |name: &str| {
        let mut opts = Options::default();
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        ColumnFamilyDescriptor::new(name, opts)
    };
    let mut latest = Options::default();
    latest.set_merge_operator_associative("runbase.latest_metric", keys::merge_latest);
    // Fold a key's merge operands on write once a few pile up in the memtable, so reading
    // the latest value never has to apply thousands of them.
    latest.set_max_successive_merges(8);
    let mut rollups = Options::default();
    rollups.set_compression_type(rocksdb::DBCompressionType::Lz4);
    rollups.set_merge_operator_associative("runbase.metric_rollup", rollup::merge_rollups);
    rollups.set_max_successive_merges(8);
    vec![
        plain(CF_EXPERIMENTS),
        plain(CF_RUNS),
        plain(CF_RUNS_BY_EXPERIMENT),
        plain(CF_PARAMS),
        plain(CF_TAGS),
        plain(CF_METRICS),
        ColumnFamilyDescriptor::new(CF_LATEST, latest),
        plain(CF_INPUTS),
        plain(CF_ARTIFACTS),
        plain(CF_MODELS),
        plain(CF_MODEL_ALIASES),
        plain(CF_ALERTS),
        ColumnFamilyDescriptor::new(CF_ROLLUPS, rollups),
        plain(CF_MLFLOW),
    ]
}

/// The tracking store. Cheap to clone.
#[derive(Clone)]
pub struct Tracking {
    inner: Arc<Inner>,
}

/// Lock stripes for per-run read-check-write updates (run state, params).
const RUN_LOCK_STRIPES: usize = 64;

struct Inner {
    kv: Kv,
    root: ObjectStoreRoot,
    /// Counts the points committed.
    stats: Arc<Stats>,
    /// Alert rules and what they remember per run.
    alerts: alerts::Alerts,
    /// Points and run changes as they commit, for live views.
    events: events::Events,
    /// Where alert events are announced (`LISTEN runbase_alerts`).
    notifications: Arc<crate::notify::Notifications>,
    /// Makes metric keys unique when two points share run, key, step and time.
    seq: AtomicU64,
    /// Serializes creating experiments (names are unique, ids come from one counter).
    experiments_lock: std::sync::Mutex<()>,
    /// Serializes the read-check-write updates of one run (its state, its params);
    /// runs hash onto stripes, so updates of different runs rarely wait for each other.
    run_locks: Vec<std::sync::Mutex<()>>,
    /// Serializes model-registry changes (versions are numbered, aliases unique).
    models_lock: std::sync::Mutex<()>,
    /// Run → experiment name; a run never changes experiment, so this never goes stale.
    run_experiments: std::sync::RwLock<HashMap<Uuid, Arc<str>>>,
}

/// A handle that does not keep the store open: functions and tables hold this, so the
/// RocksDB instance closes as soon as the [`crate::Database`] is dropped, even while the
/// session states that mention them linger on other threads.
#[derive(Clone)]
pub(crate) struct TrackingRef(std::sync::Weak<Inner>);

impl std::fmt::Debug for TrackingRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackingRef").finish_non_exhaustive()
    }
}

impl TrackingRef {
    /// The store, while the database is open.
    pub(crate) fn get(&self) -> Result<Tracking> {
        self.0
            .upgrade()
            .map(|inner| Tracking { inner })
            .ok_or_else(|| Error::InvalidState("the database has been closed".into()))
    }
}

impl std::fmt::Debug for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracking").finish_non_exhaustive()
    }
}

pub(crate) fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Tracking {
    pub(crate) fn new(
        kv: Kv,
        root: ObjectStoreRoot,
        stats: Arc<Stats>,
        notifications: Arc<crate::notify::Notifications>,
    ) -> Self {
        let start =
            u64::try_from(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0);
        Self {
            inner: Arc::new(Inner {
                kv,
                root,
                stats,
                alerts: alerts::Alerts::default(),
                events: events::Events::default(),
                notifications,
                seq: AtomicU64::new(start),
                experiments_lock: std::sync::Mutex::new(()),
                run_locks: (0..RUN_LOCK_STRIPES)
                    .map(|_| std::sync::Mutex::new(()))
                    .collect(),
                models_lock: std::sync::Mutex::new(()),
                run_experiments: std::sync::RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Points and run changes as they commit: what live views follow.
    pub fn events(&self) -> &events::Events {
        &self.inner.events
    }

    /// A handle that does not keep the store open.
    pub(crate) fn downgrade(&self) -> TrackingRef {
        TrackingRef(Arc::downgrade(&self.inner))
    }

    pub(crate) fn db(&self) -> &DB {
        self.inner.kv.db()
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.inner.kv.cf(name)
    }

    /// Writes `batch` with the database's commit durability (see [`crate::kv`]).
    fn commit(&self, batch: WriteBatch) -> Result<()> {
        self.inner.kv.write(batch, Durability::Commit)
    }

    fn lock_experiments(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .experiments_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn lock_run(&self, run: &Uuid) -> std::sync::MutexGuard<'_, ()> {
        let stripe = (run.as_u128() % RUN_LOCK_STRIPES as u128) as usize;
        self.inner.run_locks[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_models(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .models_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}
