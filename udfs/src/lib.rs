//! libtorch-backed SQL functions and system tables for runbase.
//!
//! This crate sits on top of `runbase-engine` and is the only one that links libtorch
//! (through `tch`). It registers what it provides through the engine's hooks.
//!
//! # Layout
//! - [`devices`]: the `runbase.devices` system table — the CPU and every CUDA device
//!   libtorch sees, i.e. where training can run.
//! - [`train`]: the `train` and `reproduce` table functions and `runbase.jobs`.
//! - [`stats`]: TRAIN, inference, model-cache and device-memory figures in the metrics.
//! - [`inference`]: `predict` (table and scalar), `evaluate`, `import_model`,
//!   `export_model`, the shared cache of loaded models and `runbase.loaded_models`.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let db = runbase_engine::Database::open_dir("./runbase-data").await?;
//! runbase_udfs::register(&db, runbase_udfs::UdfsOptions::default())?;
//! let rows = db.session().query("SELECT device, kind FROM runbase.devices").await?;
//! # let _ = rows;
//! # Ok(())
//! # }
//! ```

pub mod devices;
pub mod fuzzing;
pub mod inference;
pub mod stats;
pub mod train;

use std::sync::Arc;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] runbase_engine::Error),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the functions of this crate use the machine. The server fills it from its
/// configuration (`--torch-threads`, …); [`UdfsOptions::default`] is what it uses when
/// nothing is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdfsOptions {
    /// libtorch's intra-op threads, for all trainings; `None`: libtorch's default (one
    /// per physical core).
    pub torch_threads: Option<usize>,
    /// How many trainings run at once; more wait their turn (`queued` in `runbase.jobs`).
    pub training_concurrency: usize,
    /// How many forward passes run at once.
    pub inference_concurrency: usize,
    /// Bytes of loaded models the model cache keeps.
    pub model_cache_bytes: u64,
}

impl Default for UdfsOptions {
    /// libtorch's threads; one training per four cores (at least one: libtorch already
    /// spreads one training over every core); one forward pass per core; a 1 GiB model
    /// cache.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            torch_threads: None,
            training_concurrency: (cores / 4).max(1),
            inference_concurrency: cores.max(1),
            model_cache_bytes: 1 << 30,
        }
    }
}

/// The services [`register`] starts, for front ends that reach them directly (a jobs view
/// that lists and cancels trainings, online scoring over HTTP).
#[derive(Clone)]
pub struct Services {
    /// The training runner and its jobs (`runbase.jobs`).
    pub trainer: Arc<train::Trainer>,
    /// Model loading and scoring, with the shared model cache.
    pub inference: Arc<inference::Inference>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// Registers every function and system table of this crate with `db`; returns the
/// services behind them.
pub fn register(db: &runbase_engine::Database, options: UdfsOptions) -> Result<Services> {
    // libtorch's intra-op threads, for all trainings.
    if let Some(n) = options.torch_threads.filter(|n| *n > 0) {
        tch::set_num_threads(i32::try_from(n).unwrap_or(i32::MAX));
    }
    db.register_system_table("devices", Arc::new(devices::Devices::new()))?;
    let trainer = Arc::new(train::Trainer::new(
        db.downgrade(),
        options.training_concurrency.max(1),
    ));
    db.register_system_table(
        "jobs",
        Arc::new(train::jobs::JobsTable::new(trainer.jobs().clone())),
    )?;
    let inference = Arc::new(inference::Inference::new(
        db.downgrade(),
        options.model_cache_bytes,
        options.inference_concurrency.max(1),
    ));
    db.register_system_table(
        "loaded_models",
        Arc::new(inference::cache::LoadedModelsTable::new(&inference)),
    )?;
    stats::register(db, trainer.counters(), &inference, trainer.jobs());
    for writes in ["train", "reproduce", "import_model"] {
        db.register_writing_function(writes);
    }
    db.register_query_argument("train", 1);
    db.register_query_argument("predict", 1);
    db.register_query_argument("evaluate", 1);
    db.configure(|ctx| {
        use datafusion::logical_expr::ScalarUDF;
        ctx.register_udtf(
            "predict",
            Arc::new(inference::predict::PredictFunction::new(inference.clone())),
        );
        ctx.register_udtf(
            "evaluate",
            Arc::new(inference::evaluate::EvaluateFunction::new(
                inference.clone(),
            )),
        );
        ctx.register_udf(ScalarUDF::new_from_impl(
            inference::predict_scalar::PredictScalar::new(inference.clone()),
        ));
        ctx.register_udf(ScalarUDF::new_from_impl(
            inference::import_model::ImportModel::new(inference.clone()),
        ));
        ctx.register_udf(ScalarUDF::new_from_impl(
            inference::export_model::ExportModel::new(inference.clone()),
        ));
        ctx.register_udtf(
            "train",
            Arc::new(train::function::TrainFunction::new(trainer.clone())),
        );
        ctx.register_udtf(
            "reproduce",
            Arc::new(train::function::ReproduceFunction::new(trainer.clone())),
        );
        Ok(())
    })?;
    document(db);
    Ok(Services { trainer, inference })
}

/// Documents this crate's functions for the catalog (`pg_proc`, psql's `\df`).
fn document(db: &runbase_engine::Database) {
    use runbase_engine::functions::FunctionDoc;
    for doc in [
        FunctionDoc::new(
            "train",
            &[
                ("model_name", "text"),
                ("query", "text"),
                ("target", "text"),
                ("options_json", "text"),
            ],
            3,
            "TABLE(model text, version bigint, run_id text, metrics text)",
        ),
        FunctionDoc::new("reproduce", &[("run_id", "text")], 1, "TABLE(like train)"),
        FunctionDoc::new(
            "predict",
            &[("model", "text"), ("query", "text")],
            2,
            "TABLE(query columns, prediction, probabilities)",
        ),
        FunctionDoc::new(
            "predict",
            &[("model", "text"), ("VARIADIC columns", "anyelement[]")],
            2,
            "anyelement",
        ),
        FunctionDoc::new(
            "evaluate",
            &[("model", "text"), ("query", "text"), ("target", "text")],
            2,
            "TABLE(metric text, value double precision)",
        ),
        FunctionDoc::new(
            "import_model",
            &[
                ("name", "text"),
                ("torchscript", "bytea"),
                ("spec_json", "text"),
            ],
            3,
            "bigint",
        ),
        FunctionDoc::new("export_model", &[("model", "text")], 1, "bytea"),
    ] {
        db.document_function(doc);
    }
}

/// The libtorch version this crate was built against.
pub const LIBTORCH_VERSION: &str = "2.11.0";
