//! `TRAIN`: trains a libtorch model on a query's result, tracked as a run, stored as the
//! next version of a model.
//!
//! One training, start to end ([`Trainer::run`]):
//! 1. The query is planned with every user table pinned to its current version (or, for
//!    `reproduce`, to the versions a run recorded), and a run (`kind = 'train'`) is started
//!    with the query, target, options and seed as params and the versions as inputs.
//! 2. The rows are read, then training runs on a blocking thread, bounded by a permit pool,
//!    off the async workers. Every epoch's metrics are logged as they happen (other
//!    connections see them at once) and reported as NOTICEs and in `runbase.jobs`.
//! 3. The model, preprocessing included, is traced to TorchScript, stored on the object
//!    store and registered as the next version of its name; the run ends FINISHED.
//!
//! Cancelling (a dropped result stream: cancel request, closed connection) stops training
//! at the next batch and ends the run KILLED with no model stored; an error ends it FAILED
//! with the message in the `error` tag.
//!
//! Layout: [`options`] (the JSON options), [`features`] (Arrow → tensors, preprocessing),
//! [`trainer`] (the loop and the export), [`metrics`], [`jobs`] (`runbase.jobs`),
//! [`function`] (the `train` and `reproduce` table functions).

pub mod features;
pub mod function;
pub mod jobs;
pub mod metrics;
pub mod options;
pub mod rng;
pub mod trainer;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use datafusion::arrow::compute::concat_batches;
use futures::TryStreamExt;
use runbase_engine::tracking::models::{NewModelVersion, validate_model_name};
use runbase_engine::tracking::{MetricPoint, NewRun, RunStatus, Tracking};
use runbase_engine::{ClientIdentity, Notices, WeakDatabase};
use serde_json::Value;
use uuid::Uuid;

use self::features::DatasetOptions;
use self::jobs::{Job, Jobs};
use self::metrics::Metrics;
use self::options::{ModelKind, Settings, TrainOptions};
use self::trainer::{EpochSink, Outcome};
use crate::{Error, Result};

/// One TRAIN (or reproduce) call.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// Model name; the trained model becomes its next version.
    pub model: String,
    /// The training query.
    pub query: String,
    /// The label column.
    pub target: String,
    /// Options as given.
    pub options: TrainOptions,
    /// Table versions to read (empty: the latest).
    pub pins: HashMap<String, i64>,
    /// The run this one reproduces.
    pub reproduces: Option<Uuid>,
    /// Who asked.
    pub identity: ClientIdentity,
    /// Where progress messages go.
    pub notices: Option<Arc<Notices>>,
}

/// TRAIN's result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The run.
    pub run_id: Uuid,
    /// Model name.
    pub model: String,
    /// The version stored.
    pub version: i64,
    /// classification | regression.
    pub task: String,
    /// Where it trained.
    pub device: String,
    /// Epochs run (of the kept trial).
    pub epochs: u32,
    /// The epoch whose weights were kept.
    pub best_epoch: u32,
    /// Wall time of the whole call.
    pub duration_seconds: f64,
    /// Validation metrics of the kept epoch.
    pub metrics: Value,
}

/// Runs trainings for every session of one database.
#[derive(Debug)]
pub struct Trainer {
    db: WeakDatabase,
    jobs: Arc<Jobs>,
    permits: Arc<tokio::sync::Semaphore>,
    counters: crate::stats::TrainCounters,
}

impl Trainer {
    /// A trainer for `db` running at most `concurrency` trainings at once (others queue).
    pub fn new(db: WeakDatabase, concurrency: usize) -> Self {
        Self {
            db,
            jobs: Arc::new(Jobs::default()),
            permits: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
            counters: Default::default(),
        }
    }

    /// Trainings ended and epochs trained, for the metrics.
    pub fn counters(&self) -> &crate::stats::TrainCounters {
        &self.counters
    }

    /// The registry behind `runbase.jobs`.
    pub fn jobs(&self) -> &Arc<Jobs> {
        &self.jobs
    }

    /// Builds the request that re-runs `run_id` from what it recorded.
    pub fn reproduce_request(
        &self,
        run_id: &str,
        identity: ClientIdentity,
        notices: Option<Arc<Notices>>,
    ) -> Result<TrainRequest> {
        let db = self.db.upgrade()?;
        let tracking = db.tracking();
        let id = runbase_engine::tracking::parse_run_id(run_id)?;
        if tracking.run(&id)?.is_none() {
            return Err(Error::Engine(runbase_engine::Error::ObjectNotFound(
                format!("run \"{run_id}\" does not exist"),
            )));
        }
        let params: HashMap<String, String> = tracking.params(&id)?.into_iter().collect();
        let get = |k: &str| {
            params.get(k).cloned().ok_or_else(|| {
                options::invalid_argument(format!(
                    "run \"{run_id}\" is not a TRAIN run: it has no \"{k}\" param"
                ))
            })
        };
        Ok(TrainRequest {
            model: get("model_name")?,
            query: get("query")?,
            target: get("target")?,
            options: TrainOptions::parse(Some(&get("options")?))?,
            pins: tracking.inputs(&id)?.into_iter().collect(),
            reproduces: Some(id),
            identity,
            notices,
        })
    }

    fn count_finished(&self, status: RunStatus) {
        self.counters
            .finished
            .get_or_create(&crate::stats::StatusLabels {
                status: status.as_str(),
            })
            .inc();
    }

    /// Runs one training to the end; see the module docs.
    pub async fn run(&self, req: TrainRequest, cancel: Arc<AtomicBool>) -> Result<Summary> {
        let started = Instant::now();
        let db = self.db.upgrade()?;
        validate_model_name(&req.model)?;
        let session = db.session();
        session.set_client(req.identity.user.clone(), req.identity.application.clone());
        // One partition: rows arrive in the same order every time, so a seed reproduces.
        session
            .context()
            .state_ref()
            .write()
            .config_mut()
            .options_mut()
            .execution
            .target_partitions = 1;
        let pinned = session.plan_pinned(&req.query, &req.pins).await?;
        let tracking = db.tracking().clone();
        let seed = req.options.seed.unwrap_or_else(random_seed);
        let recorded = TrainOptions {
            seed: Some(seed),
            ..req.options.clone()
        };
        let experiment = req
            .options
            .experiment
            .clone()
            .unwrap_or_else(|| req.model.clone());
        let base_params = vec![
            ("model_name".to_string(), req.model.clone()),
            ("query".to_string(), req.query.clone()),
            ("target".to_string(), req.target.clone()),
            ("options".to_string(), recorded.to_json()),
            ("seed".to_string(), seed.to_string()),
        ];
        let run = tracking.start_run(
            &experiment,
            NewRun {
                name: Some(format!("train-{}", req.model)),
                parent_run_id: None,
                kind: Some("train".into()),
                user_name: req.identity.user.clone(),
                source: req.identity.application.clone(),
                params: base_params.clone(),
                ..NewRun::default()
            },
        )?;
        let run_id = run.run_id;
        // A stopping alert on the run cancels the training at its next batch.
        tracking.watch_stop(&run_id, cancel.clone());
        let mut guard = RunGuard {
            tracking: tracking.clone(),
            run: run_id,
            done: false,
        };
        let job = self
            .jobs
            .start(run_id, &req.model, req.identity.user.clone());
        let notify = |m: String| {
            if let Some(n) = &req.notices {
                n.push(m);
            }
        };
        notify(format!(
            "TRAIN {}: run {run_id} in experiment \"{experiment}\"",
            req.model
        ));
        let result = async {
            for (table, version) in &pinned.inputs {
                tracking.log_input(&run_id, table, *version)?;
            }
            let mut tags = vec![
                (
                    run_id,
                    "runbase.version".to_string(),
                    env!("CARGO_PKG_VERSION").to_string(),
                ),
                (
                    run_id,
                    "libtorch.version".to_string(),
                    crate::LIBTORCH_VERSION.to_string(),
                ),
            ];
            if let Some(r) = req.reproduces {
                tags.push((run_id, "reproduces".to_string(), r.to_string()));
            }
            tracking.set_tags(&tags)?;
            let _permit = self.permits.acquire().await.map_err(|_| {
                Error::Engine(runbase_engine::Error::InvalidState(
                    "the trainer has shut down".into(),
                ))
            })?;
            job.job.set_state("loading");
            let stream = session.run_query(pinned.plan).await?;
            let schema = stream.schema();
            let batches: Vec<_> = stream
                .try_collect()
                .await
                .map_err(|e| Error::Engine(e.into()))?;
            let batch = concat_batches(&schema, &batches)
                .map_err(|e| Error::Engine(runbase_engine::Error::DataFusion(e.into())))?;
            job.job.set_state("training");
            let ctx = BlockingCtx {
                tracking: tracking.clone(),
                epochs: self.counters.epochs.clone(),
                run: run_id,
                experiment: experiment.clone(),
                job: job.job.clone(),
                notices: req.notices.clone(),
                cancel: cancel.clone(),
                base_params: base_params.clone(),
                identity: req.identity.clone(),
                model: req.model.clone(),
            };
            let options = req.options.clone();
            let target = req.target.clone();
            let trained = tokio::task::spawn_blocking(move || {
                train_blocking(&ctx, &batch, &target, &options, seed)
            })
            .await
            .map_err(|e| {
                Error::Engine(runbase_engine::Error::Internal(format!(
                    "training failed: {}",
                    panic_message(e)
                )))
            })??;
            job.job.set_state("saving");
            let spec_json = serde_json::to_value(&trained.spec)
                .map_err(|e| options::invalid_argument(e.to_string()))?;
            let metrics = metrics_json(&trained.outcome.metrics);
            let model = tracking
                .register_model(
                    NewModelVersion {
                        name: req.model.clone(),
                        run_id: Some(run_id),
                        task: trained.spec.output.task().as_str().to_string(),
                        target: Some(trained.spec.target.clone()),
                        input_columns: trained
                            .spec
                            .inputs
                            .iter()
                            .map(|i| i.name().to_string())
                            .collect(),
                        metrics: metrics.clone(),
                        format: "torchscript".into(),
                        spec: spec_json,
                    },
                    trained.outcome.torchscript.clone(),
                )
                .await?;
            Ok::<_, Error>((trained, model, metrics))
        }
        .await;
        match result {
            Ok((trained, model, metrics)) => {
                tracking.set_tags(&[
                    (run_id, "runbase.model".into(), model.model.name.clone()),
                    (
                        run_id,
                        "runbase.model_version".into(),
                        model.version.to_string(),
                    ),
                ])?;
                tracking.end_run(&run_id, RunStatus::Finished)?;
                guard.done = true;
                self.count_finished(RunStatus::Finished);
                notify(format!(
                    "TRAIN {}: stored version {} (best epoch {} of {})",
                    req.model,
                    model.version,
                    trained.outcome.best_epoch,
                    trained.outcome.epochs_run
                ));
                Ok(Summary {
                    run_id,
                    model: model.model.name,
                    version: model.version,
                    task: model.model.task,
                    device: trained.device,
                    epochs: trained.outcome.epochs_run,
                    best_epoch: trained.outcome.best_epoch,
                    duration_seconds: started.elapsed().as_secs_f64(),
                    metrics,
                })
            }
            Err(e) => {
                let e = stopped_by_alert(&tracking, run_id, e);
                self.count_finished(end_with_error(&tracking, run_id, &e));
                guard.done = true;
                Err(e)
            }
        }
    }
}

/// Ends its run KILLED if dropped before the run ended (the call was cancelled while it
/// waited on something).
struct RunGuard {
    tracking: Tracking,
    run: Uuid,
    done: bool,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if !self.done {
            end_with_error(
                &self.tracking,
                self.run,
                &Error::Engine(runbase_engine::Error::Canceled(
                    "canceling statement due to user request".into(),
                )),
            );
        }
    }
}

/// `e`, or — when it is the cancel a stopping alert on `run` caused — an error that names
/// the alert (still a cancel: the run ends KILLED).
fn stopped_by_alert(tracking: &Tracking, run: Uuid, e: Error) -> Error {
    match (&e, tracking.stopped_by(&run)) {
        (Error::Engine(runbase_engine::Error::Canceled(_)), Some(alert)) => {
            Error::Engine(runbase_engine::Error::Canceled(format!(
                "training stopped by alert \"{alert}\" (run {run} ended KILLED; no model stored)"
            )))
        }
        _ => e,
    }
}

/// Ends `run` after `e`: KILLED if it was cancelled, else FAILED (returned); the message
/// goes in the run's `error` tag.
fn end_with_error(tracking: &Tracking, run: Uuid, e: &Error) -> RunStatus {
    let status = if matches!(e, Error::Engine(runbase_engine::Error::Canceled(_))) {
        RunStatus::Killed
    } else {
        RunStatus::Failed
    };
    let _ = tracking.set_tags(&[(run, "error".into(), truncate(&e.to_string()))]);
    let _ = tracking.end_run(&run, status);
    status
}

/// The first line of a training thread's panic (libtorch errors carry a C++ backtrace).
fn panic_message(e: tokio::task::JoinError) -> String {
    let text = if e.is_panic() {
        let payload = e.into_panic();
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the training thread panicked".into())
    } else {
        e.to_string()
    };
    let text = text.replace("\\n", "\n");
    text.lines().next().unwrap_or_default().to_string()
}

fn truncate(s: &str) -> String {
    let max = runbase_engine::tracking::MAX_VALUE_LEN;
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn random_seed() -> u64 {
    Uuid::new_v4().as_u64_pair().0 % (1 << 31)
}

fn metrics_json(m: &Metrics) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number),
                )
            })
            .collect(),
    )
}

/// What the blocking part needs.
struct BlockingCtx {
    tracking: Tracking,
    /// Counts every epoch trained.
    epochs: prometheus_client::metrics::counter::Counter,
    run: Uuid,
    experiment: String,
    job: Arc<Job>,
    notices: Option<Arc<Notices>>,
    cancel: Arc<AtomicBool>,
    base_params: Vec<(String, String)>,
    identity: ClientIdentity,
    model: String,
}

/// What the blocking part produced.
struct Trained {
    outcome: Outcome,
    spec: features::ModelSpec,
    device: String,
}

/// The params that describe resolved settings.
fn settings_params(s: &Settings, o: &TrainOptions, device: &str) -> Vec<(String, String)> {
    let mut p = vec![
        ("task".to_string(), s.task.as_str().to_string()),
        (
            "architecture".to_string(),
            json_name(&if s.hidden.is_empty() {
                ModelKind::Linear
            } else {
                ModelKind::Mlp
            }),
        ),
        (
            "hidden_layers".to_string(),
            Value::from(s.hidden.clone()).to_string(),
        ),
        ("activation".to_string(), json_name(&s.activation)),
        ("dropout".to_string(), s.dropout.to_string()),
        ("epochs".to_string(), s.epochs.to_string()),
        ("batch_size".to_string(), s.batch_size.to_string()),
        ("optimizer".to_string(), json_name(&s.optimizer)),
        ("learning_rate".to_string(), s.learning_rate.to_string()),
        ("weight_decay".to_string(), s.weight_decay.to_string()),
        (
            "validation_fraction".to_string(),
            o.validation_fraction.unwrap_or(0.2).to_string(),
        ),
        ("device".to_string(), device.to_string()),
    ];
    if let Some(es) = &s.early_stopping {
        p.push((
            "early_stopping".to_string(),
            serde_json::to_string(es).unwrap_or_default(),
        ));
    }
    if let Some(ms) = s.max_seconds {
        p.push(("max_seconds".to_string(), ms.to_string()));
    }
    p
}

fn json_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Logs each epoch to a run, the job and the client.
struct RunSink<'a> {
    ctx: &'a BlockingCtx,
    run: Uuid,
    label: String,
    last_notice: std::sync::Mutex<Option<Instant>>,
}

impl EpochSink for RunSink<'_> {
    fn epoch(&self, epoch: u32, epochs: u32, metrics: &Metrics) -> Result<()> {
        let points: Vec<MetricPoint> = metrics
            .iter()
            .map(|(k, v)| MetricPoint {
                run: self.run,
                key: k.clone(),
                step: Some(i64::from(epoch)),
                ts_us: None,
                value: *v,
            })
            .collect();
        self.ctx.tracking.log_metrics(&points)?;
        self.ctx.epochs.inc();
        let val_loss = metrics
            .iter()
            .find(|(k, _)| k == "val_loss")
            .map_or(f64::NAN, |(_, v)| *v);
        self.ctx.job.end_epoch(epoch, val_loss);
        if let Some(n) = &self.ctx.notices {
            let mut last = self.last_notice.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed().as_secs_f64() >= 1.0) || epoch == epochs;
            if due {
                *last = Some(Instant::now());
                let shown: Vec<String> =
                    metrics.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
                n.push(format!(
                    "{}epoch {epoch}/{epochs}: {}",
                    self.label,
                    shown.join(" ")
                ));
            }
        }
        Ok(())
    }
}

/// Prepares the data and trains (every trial of a search); runs on a blocking thread.
fn train_blocking(
    ctx: &BlockingCtx,
    batch: &datafusion::arrow::array::RecordBatch,
    target: &str,
    options: &TrainOptions,
    seed: u64,
) -> Result<Trained> {
    let ds = features::prepare(
        batch,
        &DatasetOptions {
            target,
            task: options.task,
            validation_fraction: options.validation_fraction.unwrap_or(0.2),
            split: options.split,
            seed,
        },
    )?;
    let device = options::resolve_device(options::parse_device(
        options.device.as_deref().unwrap_or("auto"),
    )?)?;
    let device_name = options::device_name(device);
    ctx.job.set_device(device_name.clone());
    let task = ds.spec.output.task();
    let binary = ds.spec.output.binary();
    let outputs = match &ds.spec.output {
        features::TargetSpec::Classification { classes } => format!("{} classes", classes.len()),
        features::TargetSpec::Regression { .. } => "a value".to_string(),
    };
    if let Some(n) = &ctx.notices {
        n.push(format!(
            "TRAIN {}: {} on {device_name}: {} training rows, {} validation rows, {} input columns ({} network inputs) → {outputs}",
            ctx.model,
            task.as_str(),
            ds.train.len(),
            ds.val.len(),
            ds.spec.inputs.len(),
            ds.spec.encoded_width(),
        ));
    }
    ctx.tracking.set_tags(&[
        (ctx.run, "runbase.device".into(), device_name.clone()),
        (
            ctx.run,
            "runbase.rows_train".into(),
            ds.train.len().to_string(),
        ),
        (
            ctx.run,
            "runbase.rows_validation".into(),
            ds.val.len().to_string(),
        ),
    ])?;
    let trials = options.trials(seed)?;
    if trials.is_empty() {
        let settings = Settings::resolve(options, task, seed, binary)?;
        ctx.tracking
            .log_params(&ctx.run, &settings_params(&settings, options, &device_name))?;
        ctx.job.start_trial(1, 1, settings.epochs);
        let sink = RunSink {
            ctx,
            run: ctx.run,
            label: String::new(),
            last_notice: Default::default(),
        };
        let outcome = trainer::train(&ds, &settings, device, &sink, &ctx.cancel)?;
        return Ok(Trained {
            outcome,
            spec: ds.spec,
            device: device_name,
        });
    }
    // A search: one child run per trial; keep the best by the monitored metric.
    let search = options
        .search
        .as_ref()
        .ok_or_else(|| Error::Engine(runbase_engine::Error::Internal("no search".into())))?;
    let data = trainer::TrainData::new(&ds, device)?;
    let searcher = Search {
        ctx,
        data: &data,
        trials: &trials,
        seed,
        device_name: &device_name,
        monitor: Settings::resolve(&trials[0], task, seed, binary)?
            .monitor()
            .to_string(),
    };
    let settings: Vec<Settings> = trials
        .iter()
        .map(|t| Settings::resolve(t, task, seed, binary))
        .collect::<Result<_>>()?;
    let (winner, n, outcome, epochs_trained) = match search.method {
        options::SearchMethod::Halving => {
            let eta = search.eta.unwrap_or(options::DEFAULT_ETA);
            let rungs =
                options::halving_rungs(trials.len(), settings[0].epochs, eta, search.min_epochs);
            let budgets: Vec<u32> = rungs.iter().map(|r| r.epochs).collect();
            ctx.tracking.log_params(
                &ctx.run,
                &[
                    ("search_method".into(), "halving".into()),
                    ("eta".into(), eta.to_string()),
                    ("rungs".into(), Value::from(budgets).to_string()),
                ],
            )?;
            searcher.halving(&settings, &rungs)?
        }
        method => {
            ctx.tracking
                .log_params(&ctx.run, &[("search_method".into(), json_name(&method))])?;
            searcher.one_by_one(&settings)?
        }
    };
    ctx.tracking.set_tags(&[
        (ctx.run, "best_trial_run_id".into(), winner.to_string()),
        (ctx.run, "best_trial".into(), n.to_string()),
    ])?;
    ctx.tracking.log_params(
        &ctx.run,
        &[
            ("task".into(), task.as_str().into()),
            ("trials".into(), trials.len().to_string()),
            ("device".into(), device_name.clone()),
        ],
    )?;
    let mut final_points: Vec<MetricPoint> = outcome
        .metrics
        .iter()
        .map(|(k, v)| MetricPoint {
            run: ctx.run,
            key: k.clone(),
            step: Some(i64::from(outcome.best_epoch)),
            ts_us: None,
            value: *v,
        })
        .collect();
    final_points.push(MetricPoint {
        run: ctx.run,
        key: "search_epochs_trained".into(),
        step: Some(0),
        ts_us: None,
        value: f64::from(epochs_trained),
    });
    ctx.tracking.log_metrics(&final_points)?;
    Ok(Trained {
        outcome,
        spec: ds.spec,
        device: device_name,
    })
}

/// A search's trials over one dataset: each a child run of the TRAIN run.
struct Search<'a> {
    ctx: &'a BlockingCtx,
    data: &'a trainer::TrainData<'a>,
    trials: &'a [TrainOptions],
    seed: u64,
    device_name: &'a str,
    /// The metric that ranks trials (the same for every trial: it is not searchable).
    monitor: String,
}

/// What a search keeps: the winner's run, its number (from 1), its outcome, and the epochs
/// every trial trained together.
type SearchResult = (Uuid, u32, Outcome, u32);

/// A trial in progress.
struct Trial<'a> {
    n: u32,
    run: Uuid,
    training: trainer::Training<'a>,
    sink: RunSink<'a>,
}

impl<'a> Search<'a> {
    /// Starts trial `n` (from 1): its child run and a fresh model.
    fn start(&self, n: u32, settings: &Settings) -> Result<Trial<'a>> {
        let ctx = self.ctx;
        let trial = &self.trials[n as usize - 1];
        let recorded = TrainOptions {
            seed: Some(self.seed),
            ..trial.clone()
        };
        let mut params: Vec<(String, String)> = ctx
            .base_params
            .iter()
            .filter(|(k, _)| k != "options")
            .cloned()
            .collect();
        params.push(("options".into(), recorded.to_json()));
        params.extend(settings_params(settings, trial, self.device_name));
        let child = ctx.tracking.start_run(
            &ctx.experiment,
            NewRun {
                name: Some(format!("train-{}-trial-{n}", ctx.model)),
                parent_run_id: Some(ctx.run),
                kind: Some("train".into()),
                user_name: ctx.identity.user.clone(),
                source: ctx.identity.application.clone(),
                params,
                ..NewRun::default()
            },
        )?;
        ctx.tracking.watch_stop(&child.run_id, ctx.cancel.clone());
        let training = match trainer::Training::new(self.data, settings) {
            Ok(t) => t,
            Err(e) => {
                end_with_error(&ctx.tracking, child.run_id, &e);
                return Err(e);
            }
        };
        Ok(Trial {
            n,
            run: child.run_id,
            training,
            sink: RunSink {
                ctx,
                run: child.run_id,
                label: format!("trial {n}/{} ", self.trials.len()),
                last_notice: Default::default(),
            },
        })
    }

    /// Trains `trial` until `epochs`; an error ends its run (and is returned).
    fn advance(&self, trial: &mut Trial<'a>, epochs: u32) -> Result<()> {
        let ctx = self.ctx;
        ctx.job
            .start_trial(trial.n, self.trials.len() as u32, epochs.max(1));
        trial
            .training
            .run(epochs, &trial.sink, &ctx.cancel)
            .map_err(|e| {
                let e = stopped_by_alert(&ctx.tracking, trial.run, e);
                end_with_error(&ctx.tracking, trial.run, &e);
                e
            })
    }

    /// Ends `trial`'s run FINISHED: its rung and why it stopped go on the child run and, as
    /// `trial_*` metrics at step n and a `search.trial_n` tag, on the TRAIN run.
    fn end(&self, trial: &Trial<'a>, rung: usize, why: &str) -> Result<()> {
        let ctx = self.ctx;
        let n = i64::from(trial.n);
        ctx.tracking.set_tags(&[
            (trial.run, "search.rung".into(), rung.to_string()),
            (trial.run, "search.stopped".into(), why.to_string()),
            (ctx.run, format!("search.trial_{n}"), why.to_string()),
        ])?;
        ctx.tracking.end_run(&trial.run, RunStatus::Finished)?;
        let point = |key: String, value: f64| MetricPoint {
            run: ctx.run,
            key,
            step: Some(n),
            ts_us: None,
            value,
        };
        ctx.tracking.log_metrics(&[
            point(
                format!("trial_{}", self.monitor),
                trial.training.monitored(),
            ),
            point("trial_rung".into(), rung as f64),
            point(
                "trial_epochs".into(),
                f64::from(trial.training.epochs_run()),
            ),
        ])?;
        Ok(())
    }

    /// Whether `a`'s monitored value beats `b`'s (NaN never does).
    fn beats(&self, a: f64, b: f64) -> bool {
        if b.is_nan() {
            return !a.is_nan();
        }
        if options::higher_is_better(&self.monitor) {
            a > b
        } else {
            a < b
        }
    }

    /// Grid and random search: each trial trains all its epochs, one after another.
    fn one_by_one(&self, settings: &[Settings]) -> Result<SearchResult> {
        let mut best: Option<Trial<'a>> = None;
        let mut epochs_trained = 0;
        for (i, s) in settings.iter().enumerate() {
            let mut trial = self.start(i as u32 + 1, s)?;
            self.advance(&mut trial, s.epochs)?;
            epochs_trained += trial.training.epochs_run();
            let why = match trial.training.stopped_early() {
                Some(reason) => format!("{reason} after {} epochs", trial.training.epochs_run()),
                None => format!("trained all {} epochs", trial.training.epochs_run()),
            };
            self.end(&trial, 1, &why)?;
            let better = best
                .as_ref()
                .is_none_or(|b| self.beats(trial.training.monitored(), b.training.monitored()));
            if better {
                best = Some(trial);
            }
        }
        let best = best.ok_or_else(|| {
            Error::Engine(runbase_engine::Error::Internal(
                "the search ran no trial".into(),
            ))
        })?;
        let (run, n) = (best.run, best.n);
        Ok((run, n, best.training.finish()?, epochs_trained))
    }

    /// Successive halving: all trials train to the first rung's epochs; the best `keep` go on
    /// to the next rung, the others end there; the last rung's best is kept.
    fn halving(&self, settings: &[Settings], rungs: &[options::Rung]) -> Result<SearchResult> {
        let mut alive: Vec<Trial<'a>> = Vec::with_capacity(settings.len());
        let result = (|| -> Result<SearchResult> {
            for (i, s) in settings.iter().enumerate() {
                alive.push(self.start(i as u32 + 1, s)?);
            }
            let mut epochs_trained = 0;
            let last = rungs.len().saturating_sub(1);
            for (k, rung) in rungs.iter().enumerate() {
                for trial in alive.iter_mut() {
                    let before = trial.training.epochs_run();
                    self.advance(trial, rung.epochs)?;
                    epochs_trained += trial.training.epochs_run() - before;
                }
                // Best first; NaN last; ties keep the earlier trial.
                alive.sort_by(|a, b| {
                    let (x, y) = (a.training.monitored(), b.training.monitored());
                    if self.beats(x, y) {
                        std::cmp::Ordering::Less
                    } else if self.beats(y, x) {
                        std::cmp::Ordering::Greater
                    } else {
                        a.n.cmp(&b.n)
                    }
                });
                let keep = if k == last { 1 } else { rung.keep.max(1) };
                let ranked = alive.len();
                let stopped = alive.split_off(keep.min(ranked));
                for (r, trial) in stopped.iter().enumerate() {
                    let early = trial
                        .training
                        .stopped_early()
                        .map(|e| {
                            format!(
                                " (its own {e} ended it after {} epochs)",
                                trial.training.epochs_run()
                            )
                        })
                        .unwrap_or_default();
                    let why = format!(
                        "halving: ranked {} of {ranked} by {} = {} at rung {} ({} epochs); the best {keep} went on{early}",
                        keep + r + 1,
                        self.monitor,
                        trial.training.monitored(),
                        k + 1,
                        rung.epochs,
                    );
                    self.end(trial, k + 1, &why)?;
                }
                if k == last {
                    let winner = &alive[0];
                    let why = format!(
                        "halving: the best of {ranked} by {} = {} at the last rung ({} epochs)",
                        self.monitor,
                        winner.training.monitored(),
                        rung.epochs,
                    );
                    self.end(winner, k + 1, &why)?;
                }
            }
            let winner = alive.pop().ok_or_else(|| {
                Error::Engine(runbase_engine::Error::Internal(
                    "the search ran no trial".into(),
                ))
            })?;
            let (run, n) = (winner.run, winner.n);
            Ok((run, n, winner.training.finish()?, epochs_trained))
        })();
        if let Err(e) = &result {
            // Trials still open when the search failed end with it.
            for trial in &alive {
                if run_is_open(&self.ctx.tracking, trial.run) {
                    end_with_error(&self.ctx.tracking, trial.run, e);
                }
            }
        }
        result
    }
}

/// Whether `run` has not ended yet.
fn run_is_open(tracking: &Tracking, run: Uuid) -> bool {
    tracking
        .run(&run)
        .ok()
        .flatten()
        .is_some_and(|r| r.status == RunStatus::Running)
}
