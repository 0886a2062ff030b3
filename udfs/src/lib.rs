//! libtorch-backed SQL functions and system tables for runbase.
//!
//! This crate sits on top of `runbase-engine` and is the only one that links libtorch
//! (through `tch`). It registers what it provides through the engine's hooks.
//!
//! # Layout
//! - [`devices`]: the `runbase.devices` system table — the CPU and every CUDA device
//!   libtorch sees, i.e. where training can run.
//! - [`train`]: the `train` and `reproduce` table functions and `runbase.jobs`.
//! - [`inference`]: `predict` (table and scalar), `evaluate`, `import_model`,
//!   `export_model`, the shared cache of loaded models and `runbase.loaded_models`.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let db = runbase_engine::Database::open_dir("./runbase-data").await?;
//! runbase_udfs::register(&db)?;
//! let rows = db.session().query("SELECT device, kind FROM runbase.devices").await?;
//! # let _ = rows;
//! # Ok(())
//! # }
//! ```

pub mod devices;
pub mod inference;
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

/// Registers every function and system table of this crate with `db`.
pub fn register(db: &runbase_engine::Database) -> Result<()> {
    // libtorch's intra-op threads (default: one per physical core), for all trainings.
    if let Some(n) = std::env::var("RUNBASE_TORCH_THREADS")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|n| *n > 0)
    {
        tch::set_num_threads(n);
    }
    db.register_system_table("devices", Arc::new(devices::Devices::new()))?;
    let trainer = Arc::new(train::Trainer::new(db.downgrade(), training_concurrency()));
    db.register_system_table(
        "jobs",
        Arc::new(train::jobs::JobsTable::new(trainer.jobs().clone())),
    )?;
    let inference = Arc::new(inference::Inference::new(
        db.downgrade(),
        inference::model_cache_bytes(),
        inference::inference_concurrency(),
    ));
    db.register_system_table(
        "loaded_models",
        Arc::new(inference::cache::LoadedModelsTable::new(&inference)),
    )?;
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
    Ok(())
}

/// How many trainings run at once; more wait their turn (`queued` in `runbase.jobs`).
/// `RUNBASE_TRAINING_CONCURRENCY`, else one per four cores (at least one): libtorch
/// already spreads one training over every core.
fn training_concurrency() -> usize {
    std::env::var("RUNBASE_TRAINING_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() / 4))
        .max(1)
}

/// The libtorch version this crate was built against.
pub const LIBTORCH_VERSION: &str = "2.11.0";
