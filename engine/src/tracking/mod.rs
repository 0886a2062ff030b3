//! Experiment tracking: experiments, runs, params, metrics, tags, lineage and artifacts.
//!
//! Records live in RocksDB column families laid out so the common reads are range scans
//! (see [`keys`]); artifact blobs live on the object store. Every write is one RocksDB
//! write batch, so a call stores all of its values or none, and is synced to the WAL before
//! it returns when the database runs with synchronous commits (the default).
//!
//! Layout:
//! - [`keys`]: key encodings.
//! - `tables`: the `runbase.*` tracking tables, with filter push-down into range scans.
//! - `functions`: `start_run`, `log_metric`, … as SQL functions.

pub(crate) mod functions;
pub mod keys;
pub mod models;
pub(crate) mod tables;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::object_store::ObjectStoreExt;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
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
        plain(crate::auth::CF_USERS),
    ]
}

/// An experiment: a named group of runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Its id.
    pub id: i64,
    /// Its unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Creation time, microseconds since the epoch.
    pub created_at_us: i64,
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    /// Still logging.
    Running,
    /// Ended normally.
    Finished,
    /// Ended with an error.
    Failed,
    /// Stopped from outside.
    Killed,
}

impl RunStatus {
    /// The status as SQL shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }

    /// Parses a status name (any case).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "RUNNING" => Ok(RunStatus::Running),
            "FINISHED" => Ok(RunStatus::Finished),
            "FAILED" => Ok(RunStatus::Failed),
            "KILLED" => Ok(RunStatus::Killed),
            _ => Err(Error::InvalidArgument(format!(
                "invalid run status \"{s}\": expected RUNNING, FINISHED, FAILED or KILLED"
            ))),
        }
    }
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Its id.
    pub run_id: Uuid,
    /// Id of its experiment.
    pub experiment_id: i64,
    /// Name of its experiment.
    pub experiment: String,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: RunStatus,
    /// The run it belongs to (a trial of a search, say).
    pub parent_run_id: Option<Uuid>,
    /// Who made it: `external` for runs logged by clients, `train` for TRAIN's.
    pub kind: String,
    /// Start time, microseconds since the epoch.
    pub started_at_us: i64,
    /// End time, once ended.
    pub ended_at_us: Option<i64>,
    /// The database user that started it.
    pub user_name: Option<String>,
    /// The client program that started it (`application_name`).
    pub source: Option<String>,
}

/// What [`Tracking::start_run`] needs besides the experiment.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    /// Run name; generated when absent.
    pub name: Option<String>,
    /// Parent run.
    pub parent_run_id: Option<Uuid>,
    /// `external` when absent.
    pub kind: Option<String>,
    /// Database user.
    pub user_name: Option<String>,
    /// Client program.
    pub source: Option<String>,
    /// Params to log with the start.
    pub params: Vec<(String, String)>,
}

/// One metric value to log.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// The run.
    pub run: Uuid,
    /// The metric's name.
    pub key: String,
    /// The step; `None` logs at one past the run's latest step of this key (0 at first).
    pub step: Option<i64>,
    /// Microseconds since the epoch; `None` is now.
    pub ts_us: Option<i64>,
    /// The value; NaN and infinities are kept.
    pub value: f64,
}

/// An artifact's record; its bytes are on the object store at `uri`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Size in bytes.
    pub size_bytes: i64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Where the bytes are.
    pub uri: String,
    /// Object-store path, relative to the store's root.
    pub location: String,
}

/// The tracking store. Cheap to clone.
#[derive(Clone)]
pub struct Tracking {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<DB>,
    root: ObjectStoreRoot,
    write: WriteOptions,
    /// Makes metric keys unique when two points share run, key, step and time.
    seq: AtomicU64,
    /// Serializes the read-check-write updates (experiments, run state, params).
    lock: std::sync::Mutex<()>,
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

/// Checks a param, metric or tag key.
pub fn validate_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{what} key must not be empty"
        )));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::ValueTooLong(format!(
            "{what} key is {} bytes long; the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    if key.contains('\0') {
        return Err(Error::InvalidText(format!(
            "{what} key must not contain NUL"
        )));
    }
    Ok(())
}

fn validate_value(what: &str, key: &str, value: &str) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::ValueTooLong(format!(
            "{what} \"{key}\" is {} bytes long; the limit is {MAX_VALUE_LEN}",
            value.len()
        )));
    }
    Ok(())
}

/// Parses a run id.
pub fn parse_run_id(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s.trim())
        .map_err(|_| Error::InvalidText(format!("invalid run id \"{s}\": expected a UUID")))
}

/// Checks an artifact path: relative, `/`-separated, no `.` or `..` segments.
pub fn validate_artifact_path(path: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "invalid artifact path \"{path}\": {why}"
        )))
    };
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return Err(Error::ValueTooLong(format!(
            "artifact path is {} bytes long; the limit is {MAX_PATH_LEN}",
            path.len()
        )));
    }
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return bad("it must be relative, with / between segments");
    }
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return bad("empty, . and .. segments are not allowed");
    }
    Ok(())
}

/// Params from a JSON object: strings as they are, other values as JSON text.
pub fn params_from_json(json: &str) -> Result<Vec<(String, String)>> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Error::InvalidText(format!("invalid JSON for params: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(Error::InvalidText(
            "params must be a JSON object of key: value".into(),
        ));
    };
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect())
}

pub(crate) fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Tracking {
    pub(crate) fn new(db: Arc<DB>, root: ObjectStoreRoot, synchronous: bool) -> Self {
        let mut write = WriteOptions::default();
        write.set_sync(synchronous);
        let start =
            u64::try_from(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0);
        Self {
            inner: Arc::new(Inner {
                db,
                root,
                write,
                seq: AtomicU64::new(start),
                lock: std::sync::Mutex::new(()),
                run_experiments: std::sync::RwLock::new(HashMap::new()),
            }),
        }
    }

    /// A handle that does not keep the store open.
    pub(crate) fn downgrade(&self) -> TrackingRef {
        TrackingRef(Arc::downgrade(&self.inner))
    }

    pub(crate) fn db(&self) -> &DB {
        &self.inner.db
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.inner.db.cf_handle(name).ok_or_else(|| {
            Error::corrupt("tracking store", format!("column family {name} is missing"))
        })
    }

    fn commit(&self, batch: WriteBatch) -> Result<()> {
        self.inner.db.write_opt(batch, &self.inner.write)?;
        Ok(())
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- experiments ----

    /// The experiment called `name`.
    pub fn experiment(&self, name: &str) -> Result<Option<Experiment>> {
        let Some(v) = self
            .db()
            .get_cf(self.cf(CF_EXPERIMENTS)?, name.as_bytes())?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| Error::corrupt(format!("experiment {name}"), e))
    }

    /// Every experiment, by name.
    pub fn experiments(&self) -> Result<Vec<Experiment>> {
        let mut out = Vec::new();
        for item in self
            .db()
            .iterator_cf(self.cf(CF_EXPERIMENTS)?, rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            out.push(serde_json::from_slice(&v).map_err(|e| {
                Error::corrupt(format!("experiment {}", String::from_utf8_lossy(&k)), e)
            })?);
        }
        Ok(out)
    }

    /// Creates an experiment; an error if the name is taken.
    pub fn create_experiment(&self, name: &str, description: Option<&str>) -> Result<Experiment> {
        let _guard = self.lock();
        if self.experiment(name)?.is_some() {
            return Err(Error::UniqueViolation(format!(
                "experiment \"{name}\" already exists"
            )));
        }
        self.insert_experiment(name, description)
    }

    fn insert_experiment(&self, name: &str, description: Option<&str>) -> Result<Experiment> {
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "experiment name must not be empty".into(),
            ));
        }
        validate_value("experiment name", name, name)?;
        let id = match self.db().get(NEXT_EXPERIMENT_ID)? {
            Some(v) => keys::dec_i64(&v)
                .ok_or_else(|| Error::corrupt("experiment id counter", "not 8 bytes"))?,
            None => 1,
        };
        let exp = Experiment {
            id,
            name: name.to_string(),
            description: description.map(str::to_string),
            created_at_us: now_us(),
        };
        let mut batch = WriteBatch::default();
        batch.put(NEXT_EXPERIMENT_ID, keys::enc_i64(id + 1));
        batch.put_cf(
            self.cf(CF_EXPERIMENTS)?,
            name.as_bytes(),
            serde_json::to_vec(&exp).map_err(|e| Error::corrupt("experiment", e))?,
        );
        self.commit(batch)?;
        Ok(exp)
    }

    // ---- runs ----

    /// The run `run`, if it exists.
    pub fn run(&self, run: &Uuid) -> Result<Option<Run>> {
        let Some(v) = self.db().get_cf(self.cf(CF_RUNS)?, run.as_bytes())? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| Error::corrupt(format!("run {run}"), e))
    }

    /// The name of the experiment `run` belongs to, if the run exists.
    pub fn experiment_of_run(&self, run: &Uuid) -> Result<Option<Arc<str>>> {
        if let Some(e) = self
            .inner
            .run_experiments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(run)
        {
            return Ok(Some(e.clone()));
        }
        let Some(r) = self.run(run)? else {
            return Ok(None);
        };
        let name: Arc<str> = r.experiment.into();
        self.inner
            .run_experiments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*run, name.clone());
        Ok(Some(name))
    }

    fn existing_run(&self, run: &Uuid) -> Result<Run> {
        self.run(run)?
            .ok_or_else(|| Error::ObjectNotFound(format!("run \"{run}\" does not exist")))
    }

    fn running_run(&self, run: &Uuid) -> Result<Run> {
        let r = self.existing_run(run)?;
        if r.status != RunStatus::Running {
            return Err(Error::InvalidState(format!(
                "run \"{run}\" has ended ({}); it takes no more values",
                r.status.as_str()
            )));
        }
        Ok(r)
    }

    /// Ids of the runs of the experiment called `name`, in id order.
    pub fn runs_of_experiment(&self, name: &str) -> Result<Vec<Uuid>> {
        let Some(exp) = self.experiment(name)? else {
            return Ok(vec![]);
        };
        let prefix = keys::enc_i64(exp.id);
        let mut out = Vec::new();
        let mut it = self.db().raw_iterator_cf(self.cf(CF_RUNS_BY_EXPERIMENT)?);
        it.seek(prefix);
        while let Some(k) = it.key() {
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(run) = keys::decode_run(&k[8..]) {
                out.push(run);
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Starts a run in `experiment`, creating the experiment if it does not exist.
    pub fn start_run(&self, experiment: &str, new: NewRun) -> Result<Run> {
        for (k, v) in &new.params {
            validate_key("param", k)?;
            validate_value("param", k, v)?;
        }
        let _guard = self.lock();
        let exp = match self.experiment(experiment)? {
            Some(e) => e,
            None => self.insert_experiment(experiment, None)?,
        };
        if let Some(parent) = &new.parent_run_id {
            self.existing_run(parent)?;
        }
        let run_id = Uuid::new_v4();
        let name = match new.name {
            Some(n) if !n.is_empty() => n,
            _ => format!("run-{}", &run_id.simple().to_string()[..8]),
        };
        let run = Run {
            run_id,
            experiment_id: exp.id,
            experiment: exp.name,
            name,
            status: RunStatus::Running,
            parent_run_id: new.parent_run_id,
            kind: new.kind.unwrap_or_else(|| "external".to_string()),
            started_at_us: now_us(),
            ended_at_us: None,
            user_name: new.user_name,
            source: new.source,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_RUNS)?, run_id.as_bytes(), self.encode_run(&run)?);
        batch.put_cf(
            self.cf(CF_RUNS_BY_EXPERIMENT)?,
            keys::experiment_run_key(exp.id, &run_id),
            [],
        );
        let params = self.cf(CF_PARAMS)?;
        for (k, v) in &new.params {
            batch.put_cf(params, keys::run_key(&run_id, k), v.as_bytes());
        }
        self.commit(batch)?;
        Ok(run)
    }

    fn encode_run(&self, run: &Run) -> Result<Vec<u8>> {
        serde_json::to_vec(run).map_err(|e| Error::corrupt("run", e))
    }

    /// Ends a running run with `status`.
    pub fn end_run(&self, run: &Uuid, status: RunStatus) -> Result<Run> {
        if status == RunStatus::Running {
            return Err(Error::InvalidArgument(
                "a run ends as FINISHED, FAILED or KILLED".into(),
            ));
        }
        let _guard = self.lock();
        let mut r = self.running_run(run)?;
        r.status = status;
        r.ended_at_us = Some(now_us());
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_RUNS)?, run.as_bytes(), self.encode_run(&r)?);
        self.commit(batch)?;
        Ok(r)
    }

    // ---- params and tags ----

    /// Logs params of a running run. A key logged before with the same value is a no-op;
    /// with another value it is an error and nothing is logged.
    pub fn log_params(&self, run: &Uuid, params: &[(String, String)]) -> Result<usize> {
        for (k, v) in params {
            validate_key("param", k)?;
            validate_value("param", k, v)?;
        }
        let _guard = self.lock();
        self.running_run(run)?;
        let cf = self.cf(CF_PARAMS)?;
        let mut batch = WriteBatch::default();
        let mut pending: HashMap<&str, &str> = HashMap::new();
        for (k, v) in params {
            let existing = match pending.get(k.as_str()) {
                Some(p) => Some(p.as_bytes().to_vec()),
                None => self.db().get_cf(cf, keys::run_key(run, k))?,
            };
            match existing {
                Some(old) if old == v.as_bytes() => {}
                Some(old) => {
                    return Err(Error::UniqueViolation(format!(
                        "param \"{k}\" of run \"{run}\" is already \"{}\"; params are write-once (tried \"{v}\")",
                        String::from_utf8_lossy(&old)
                    )));
                }
                None => {
                    batch.put_cf(cf, keys::run_key(run, k), v.as_bytes());
                    pending.insert(k, v);
                }
            }
        }
        self.commit(batch)?;
        Ok(params.len())
    }

    /// Sets tags of a run (running or not); a tag is overwritten by a later value.
    pub fn set_tags(&self, tags: &[(Uuid, String, String)]) -> Result<()> {
        let cf = self.cf(CF_TAGS)?;
        let mut batch = WriteBatch::default();
        let mut checked = HashSet::new();
        for (run, k, v) in tags {
            validate_key("tag", k)?;
            validate_value("tag", k, v)?;
            if !checked.contains(run) {
                self.existing_run(run)?;
                checked.insert(*run);
            }
            batch.put_cf(cf, keys::run_key(run, k), v.as_bytes());
        }
        self.commit(batch)
    }

    /// Records that `run` read version `version` of `table`.
    pub fn log_input(&self, run: &Uuid, table: &str, version: i64) -> Result<()> {
        if table.is_empty() || table.contains('\0') {
            return Err(Error::InvalidArgument(
                "table name must not be empty".into(),
            ));
        }
        self.running_run(run)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_INPUTS)?,
            keys::input_key(run, table, version),
            [],
        );
        self.commit(batch)
    }

    /// The params of `run`, by key.
    pub fn params(&self, run: &Uuid) -> Result<Vec<(String, String)>> {
        self.run_strings(CF_PARAMS, run)
    }

    /// The tags of `run`, by key.
    pub fn tags(&self, run: &Uuid) -> Result<Vec<(String, String)>> {
        self.run_strings(CF_TAGS, run)
    }

    /// The table versions `run` read, by table name.
    pub fn inputs(&self, run: &Uuid) -> Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        for item in self
            .db()
            .prefix_iterator_cf(self.cf(CF_INPUTS)?, run.as_bytes())
        {
            let (k, _) = item?;
            if !k.starts_with(run.as_bytes()) {
                break;
            }
            if let Some((_, table, version)) = keys::decode_input_key(&k) {
                out.push((table.to_string(), version));
            }
        }
        Ok(out)
    }

    fn run_strings(&self, cf: &str, run: &Uuid) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for item in self.db().prefix_iterator_cf(self.cf(cf)?, run.as_bytes()) {
            let (k, v) = item?;
            if !k.starts_with(run.as_bytes()) {
                break;
            }
            if let Some((_, key)) = keys::decode_run_key(&k) {
                out.push((key.to_string(), String::from_utf8_lossy(&v).into_owned()));
            }
        }
        Ok(out)
    }

    // ---- metrics ----

    /// Logs metric points, all or none; returns the step each point was logged at.
    pub fn log_metrics(&self, points: &[MetricPoint]) -> Result<Vec<i64>> {
        let mut batch = WriteBatch::default();
        let steps = self.stage_metrics(points, &mut batch)?;
        self.commit(batch)?;
        Ok(steps)
    }

    /// Adds metric points to `batch` after checking them; returns their steps.
    fn stage_metrics(&self, points: &[MetricPoint], batch: &mut WriteBatch) -> Result<Vec<i64>> {
        let metrics = self.cf(CF_METRICS)?;
        let latest = self.cf(CF_LATEST)?;
        let mut runs: HashSet<Uuid> = HashSet::new();
        let mut next_step: HashMap<(Uuid, &str), i64> = HashMap::new();
        let mut newest: HashMap<(Uuid, &str), (i64, i64, f64)> = HashMap::new();
        let mut steps = Vec::with_capacity(points.len());
        let now = now_us();
        let mut last_key: Option<&str> = None;
        for p in points {
            if last_key != Some(p.key.as_str()) {
                validate_key("metric", &p.key)?;
                last_key = Some(&p.key);
            }
            if !runs.contains(&p.run) {
                self.running_run(&p.run)?;
                runs.insert(p.run);
            }
            let step = match p.step {
                Some(s) => s,
                None => match next_step.get(&(p.run, p.key.as_str())) {
                    Some(s) => *s,
                    None => match self.latest(&p.run, &p.key)? {
                        Some((s, _, _)) => s.saturating_add(1),
                        None => 0,
                    },
                },
            };
            let entry = next_step.entry((p.run, p.key.as_str())).or_insert(step);
            *entry = (*entry).max(step.saturating_add(1));
            let ts = p.ts_us.unwrap_or(now);
            let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
            batch.put_cf(
                metrics,
                keys::metric_key(&p.run, &p.key, step, ts, seq),
                p.value.to_bits().to_le_bytes(),
            );
            // One merge per run and key per batch: the newest point of the batch.
            match newest.entry((p.run, p.key.as_str())) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((step, ts, p.value));
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let (s, t, _) = *o.get();
                    if (step, ts) >= (s, t) {
                        o.insert((step, ts, p.value));
                    }
                }
            }
            steps.push(step);
        }
        for ((run, key), (step, ts, value)) in newest {
            batch.merge_cf(
                latest,
                keys::run_key(&run, key),
                keys::latest_value(step, ts, value),
            );
        }
        Ok(steps)
    }

    /// The latest (step, ts, value) of one metric of one run.
    pub fn latest(&self, run: &Uuid, key: &str) -> Result<Option<(i64, i64, f64)>> {
        let v = self
            .db()
            .get_cf(self.cf(CF_LATEST)?, keys::run_key(run, key))?;
        Ok(v.and_then(|v| keys::decode_latest(&v)))
    }

    // ---- artifacts ----

    /// Stores `data` as the artifact `path` of a running run; returns its record.
    pub async fn log_artifact(&self, run: &Uuid, path: &str, data: Vec<u8>) -> Result<Artifact> {
        use sha2::Digest;
        validate_artifact_path(path)?;
        self.running_run(run)?;
        let sha256 = hex(&sha2::Sha256::digest(&data));
        let location = format!("artifacts/{run}/{path}");
        let object = self.inner.root.object_path(&location)?;
        let size_bytes = i64::try_from(data.len()).unwrap_or(i64::MAX);
        self.inner.root.store.put(&object, data.into()).await?;
        let uri = self
            .inner
            .root
            .url
            .join(&location)
            .map(|u| u.to_string())
            .unwrap_or(location.clone());
        let artifact = Artifact {
            size_bytes,
            sha256,
            uri,
            location,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_ARTIFACTS)?,
            keys::run_key(run, path),
            serde_json::to_vec(&artifact).map_err(|e| Error::corrupt("artifact", e))?,
        );
        self.commit(batch)?;
        Ok(artifact)
    }

    /// The record of artifact `path` of `run`.
    pub fn artifact_record(&self, run: &Uuid, path: &str) -> Result<Artifact> {
        let v = self
            .db()
            .get_cf(self.cf(CF_ARTIFACTS)?, keys::run_key(run, path))?
            .ok_or_else(|| {
                Error::ObjectNotFound(format!("run \"{run}\" has no artifact \"{path}\""))
            })?;
        serde_json::from_slice(&v).map_err(|e| Error::corrupt(format!("artifact {path}"), e))
    }

    /// The bytes of artifact `path` of `run`.
    pub async fn artifact(&self, run: &Uuid, path: &str) -> Result<Vec<u8>> {
        let record = self.artifact_record(run, path)?;
        let object = self.inner.root.object_path(&record.location)?;
        let bytes = self.inner.root.store.get(&object).await?.bytes().await?;
        Ok(bytes.to_vec())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
