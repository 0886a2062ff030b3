//! `runbase.jobs`: the trainings running now, with their epoch and progress.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use runbase_engine::SystemTable;
use uuid::Uuid;

/// One running training.
#[derive(Debug)]
pub struct Job {
    /// The TRAIN run.
    pub run_id: Uuid,
    /// Model name.
    pub model: String,
    /// Who started it.
    pub user_name: Option<String>,
    /// Start time, µs since the epoch.
    pub started_at_us: i64,
    state: Mutex<&'static str>,
    device: Mutex<String>,
    trial: AtomicU32,
    trials: AtomicU32,
    epoch: AtomicU32,
    epochs: AtomicU32,
    val_loss: AtomicU64,
}

impl Job {
    /// Sets the state: `queued`, `loading`, `training`, `saving`.
    pub fn set_state(&self, state: &'static str) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Sets the device.
    pub fn set_device(&self, device: String) {
        *self.device.lock().unwrap_or_else(|p| p.into_inner()) = device;
    }

    /// Trial `trial` (from 1) of `trials` is starting.
    pub fn start_trial(&self, trial: u32, trials: u32, epochs: u32) {
        self.trial.store(trial, Ordering::Relaxed);
        self.trials.store(trials, Ordering::Relaxed);
        self.epochs.store(epochs, Ordering::Relaxed);
        self.epoch.store(0, Ordering::Relaxed);
    }

    /// An epoch ended.
    pub fn end_epoch(&self, epoch: u32, val_loss: f64) {
        self.epoch.store(epoch, Ordering::Relaxed);
        self.val_loss.store(val_loss.to_bits(), Ordering::Relaxed);
    }

    fn progress(&self) -> f64 {
        let trials = self.trials.load(Ordering::Relaxed).max(1) as f64;
        let trial = self.trial.load(Ordering::Relaxed).max(1) as f64;
        let epochs = self.epochs.load(Ordering::Relaxed).max(1) as f64;
        let epoch = self.epoch.load(Ordering::Relaxed) as f64;
        ((trial - 1.0) + epoch / epochs) / trials
    }
}

/// The registry of running trainings.
#[derive(Debug, Default)]
pub struct Jobs {
    running: Mutex<BTreeMap<Uuid, Arc<Job>>>,
}

/// Removes its job from the registry when dropped.
#[derive(Debug)]
pub struct JobGuard {
    jobs: Arc<Jobs>,
    /// The job.
    pub job: Arc<Job>,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        self.jobs
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.job.run_id);
    }
}

impl Jobs {
    /// Registers a job; it is listed until the guard drops.
    pub fn start(
        self: &Arc<Self>,
        run_id: Uuid,
        model: &str,
        user_name: Option<String>,
    ) -> JobGuard {
        let job = Arc::new(Job {
            run_id,
            model: model.to_string(),
            user_name,
            started_at_us: chrono_now_us(),
            state: Mutex::new("queued"),
            device: Mutex::new(String::new()),
            trial: AtomicU32::new(1),
            trials: AtomicU32::new(1),
            epoch: AtomicU32::new(0),
            epochs: AtomicU32::new(0),
            val_loss: AtomicU64::new(f64::NAN.to_bits()),
        });
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id, job.clone());
        JobGuard {
            jobs: self.clone(),
            job,
        }
    }

    /// The state of every job now.
    pub fn states(&self) -> Vec<&'static str> {
        self.snapshot()
            .iter()
            .map(|j| *j.state.lock().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    fn snapshot(&self) -> Vec<Arc<Job>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

fn chrono_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The `runbase.jobs` system table.
#[derive(Debug)]
pub struct JobsTable {
    jobs: Arc<Jobs>,
    schema: SchemaRef,
}

impl JobsTable {
    /// The table over `jobs`.
    pub fn new(jobs: Arc<Jobs>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("run_id", DataType::Utf8, false),
            Field::new("model", DataType::Utf8, false),
            Field::new("user_name", DataType::Utf8, true),
            Field::new("state", DataType::Utf8, false),
            Field::new("device", DataType::Utf8, true),
            Field::new("trial", DataType::Int64, false),
            Field::new("trials", DataType::Int64, false),
            Field::new("epoch", DataType::Int64, false),
            Field::new("epochs", DataType::Int64, false),
            Field::new("progress", DataType::Float64, false),
            Field::new("val_loss", DataType::Float64, true),
            Field::new(
                "started_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("elapsed_seconds", DataType::Float64, false),
        ]));
        Self { jobs, schema }
    }
}

#[async_trait]
impl SystemTable for JobsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self) -> runbase_engine::Result<RecordBatch> {
        let jobs = self.jobs.snapshot();
        let now = chrono_now_us();
        let n = |f: &dyn Fn(&Job) -> i64| Int64Array::from_iter_values(jobs.iter().map(|j| f(j)));
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    jobs.iter().map(|j| j.run_id.to_string()),
                )),
                Arc::new(StringArray::from_iter_values(
                    jobs.iter().map(|j| j.model.as_str()),
                )),
                Arc::new(StringArray::from_iter(
                    jobs.iter().map(|j| j.user_name.as_deref()),
                )),
                Arc::new(StringArray::from_iter_values(
                    jobs.iter()
                        .map(|j| *j.state.lock().unwrap_or_else(|p| p.into_inner())),
                )),
                Arc::new(StringArray::from_iter(jobs.iter().map(|j| {
                    let d = j.device.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    (!d.is_empty()).then_some(d)
                }))),
                Arc::new(n(&|j| j.trial.load(Ordering::Relaxed).into())),
                Arc::new(n(&|j| j.trials.load(Ordering::Relaxed).into())),
                Arc::new(n(&|j| j.epoch.load(Ordering::Relaxed).into())),
                Arc::new(n(&|j| j.epochs.load(Ordering::Relaxed).into())),
                Arc::new(Float64Array::from_iter_values(
                    jobs.iter().map(|j| j.progress()),
                )),
                Arc::new(Float64Array::from_iter(jobs.iter().map(|j| {
                    let v = f64::from_bits(j.val_loss.load(Ordering::Relaxed));
                    (!v.is_nan()).then_some(v)
                }))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        jobs.iter().map(|j| j.started_at_us),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from_iter_values(
                    jobs.iter()
                        .map(|j| (now - j.started_at_us).max(0) as f64 / 1e6),
                )),
            ],
        )
        .map_err(|e| runbase_engine::Error::DataFusion(e.into()))
    }
}
