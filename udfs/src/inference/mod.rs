//! Serving models: `predict`, `evaluate`, `import_model`, `export_model` and the cache of
//! loaded models they share.
//!
//! One path serves trained and imported models alike: a reference (`name`, `name@3`,
//! `name@alias`) resolves to a registered version; its TorchScript module is loaded once
//! into a bounded, least-recently-used [`ModelCache`] shared by every connection; each
//! Arrow batch becomes one float32 tensor `[rows, inputs]` (column by column, no per-value
//! work in Rust), goes through the module under `no_grad` on a blocking thread behind a
//! semaphore, and the output tensor becomes Arrow columns again.
//!
//! # Layout
//! - [`spec`]: what a version's inputs and output are ([`ServingSpec`]).
//! - [`cache`]: [`ModelCache`] and `runbase.loaded_models`.
//! - [`predict`]: the `predict(model, query)` table function.
//! - [`predict_scalar`]: the `predict(model, col, …)` scalar function.
//! - [`evaluate`]: the `evaluate(model, query, target)` table function.
//! - [`import_model`] and [`export_model`]: TorchScript in and out of the registry.

pub mod cache;
pub mod evaluate;
pub mod export_model;
pub mod import_model;
pub mod predict;
pub mod predict_scalar;
pub mod spec;

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session;
use runbase_engine::tracking::models::ModelVersion;
use runbase_engine::{SessionVariables, WeakDatabase};
use tch::{Device, Kind, Tensor};
use tokio::sync::Semaphore;

pub use cache::{LoadedModel, ModelCache};
pub use spec::{Output, ServingSpec};

use crate::train::features::{self, InputColumn};
use crate::train::options::{DeviceChoice, invalid_argument, parse_device, resolve_device};
use crate::{Error, Result};

/// The session setting that picks the device inference runs on.
pub const DEVICE_SETTING: &str = "runbase.device";

/// Rows per forward pass on a GPU: batches are coalesced up to this so the device stays
/// busy (on the CPU each query batch goes through as it comes).
pub const GPU_BATCH_ROWS: usize = 65_536;

/// The serving side: model resolution, the shared cache and the inference pool.
#[derive(Debug)]
pub struct Inference {
    db: WeakDatabase,
    cache: ModelCache,
    permits: Arc<Semaphore>,
    counters: crate::stats::InferenceCounters,
}

impl Inference {
    /// Serves the models of `db`, with a cache of `cache_bytes` and at most `concurrency`
    /// forward passes at once.
    pub fn new(db: WeakDatabase, cache_bytes: u64, concurrency: usize) -> Self {
        Self {
            db,
            cache: ModelCache::new(cache_bytes),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            counters: Default::default(),
        }
    }

    /// Rows and batches scored, for the metrics.
    pub fn counters(&self) -> &crate::stats::InferenceCounters {
        &self.counters
    }

    /// The cache of loaded models.
    pub fn cache(&self) -> &ModelCache {
        &self.cache
    }

    /// The database.
    pub fn database(&self) -> Result<runbase_engine::Database> {
        Ok(self.db.upgrade()?)
    }

    /// The version `reference` names now, and its serving spec.
    pub fn resolve(&self, reference: &str) -> Result<(ModelVersion, ServingSpec)> {
        let db = self.database()?;
        let version = db.tracking().resolve_model(reference)?;
        if version.model.format != "torchscript" {
            return Err(invalid_argument(format!(
                "model {}@{} is stored as {}, which runbase cannot run",
                version.model.name, version.version, version.model.format
            )));
        }
        let spec = ServingSpec::of(&version)?;
        Ok((version, spec))
    }

    /// The device to run `spec` on for a session: `SET runbase.device`, else the spec's
    /// `device`, else the CPU.
    pub fn device(&self, spec: &ServingSpec, session: &dyn Session) -> Result<Device> {
        let setting = session
            .config()
            .get_extension::<SessionVariables>()
            .and_then(|v| v.get(DEVICE_SETTING));
        device_for(spec, setting.as_deref())
    }

    /// The loaded module of `version` on `device`, from the cache or the object store.
    pub async fn load(
        &self,
        version: &ModelVersion,
        spec: &ServingSpec,
        device: Device,
    ) -> Result<Arc<LoadedModel>> {
        if let Some(hit) = self.cache.get(version, device) {
            return Ok(hit);
        }
        let db = self.database()?;
        let blob = db.tracking().model_blob(version).await?;
        let loaded = run_blocking(move || {
            tch::CModule::load_data_on_device(&mut blob.as_slice(), device)
                .map_err(|e| torch_error("the stored model does not load", e))
        })
        .await?;
        let model = Arc::new(LoadedModel::new(
            version.clone(),
            spec.clone(),
            device,
            loaded,
        ));
        self.cache.insert(model.clone());
        Ok(model)
    }

    /// Runs `model` on one column per input (in the spec's order): the module's output, on
    /// the CPU. On the inference pool, off the caller's thread.
    pub async fn forward(&self, model: Arc<LoadedModel>, columns: Vec<ArrayRef>) -> Result<Tensor> {
        let _permit = self.permits.clone().acquire_owned().await.map_err(|_| {
            Error::Engine(runbase_engine::Error::Internal(
                "inference pool closed".into(),
            ))
        })?;
        let rows = columns.first().map_or(0, |c| c.len());
        let out = run_blocking(move || model.forward(&columns)).await?;
        self.counters.batches.inc();
        self.counters
            .rows
            .inc_by(u64::try_from(rows).unwrap_or(u64::MAX));
        Ok(out)
    }

    /// `forward`, then the output as `prediction` (and, when `probabilities` is set,
    /// `probabilities` for a classifier).
    pub async fn predict(
        &self,
        model: Arc<LoadedModel>,
        columns: Vec<ArrayRef>,
        probabilities: bool,
    ) -> Result<Vec<ArrayRef>> {
        let rows = columns.first().map_or(0, |c| c.len());
        let spec = model.spec.clone();
        let out = self.forward(model, columns).await?;
        prediction_columns(&spec, &out, rows, probabilities)
    }
}

/// The device to run `spec` on: `setting` (a `runbase.device` value) unless it is unset or
/// `default`, else the spec's `device`, else the CPU.
pub fn device_for(spec: &ServingSpec, setting: Option<&str>) -> Result<Device> {
    let setting = setting.filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("default"));
    let choice = match setting.or(spec.device.as_deref()) {
        Some(d) => parse_device(d)?,
        None => DeviceChoice::Cpu,
    };
    resolve_device(choice)
}

/// Runs CPU-heavy `f` on tokio's blocking pool.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::Engine(runbase_engine::Error::Internal(format!(
            "inference thread failed: {e}"
        )))
    })?
}

/// A libtorch error as one line, without the C++ backtrace.
pub fn torch_error(context: &str, e: tch::TchError) -> Error {
    let text = e.to_string();
    let first = text
        .split("Exception raised from")
        .next()
        .unwrap_or_default()
        .replace("\\n", "\n");
    let line = first
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown error");
    invalid_argument(format!("{context}: {line}"))
}

/// Finds each input of `spec` among `schema`'s columns (exactly, else case-insensitively)
/// and checks its type: the column index per input.
pub fn bind_columns(spec: &ServingSpec, schema: &SchemaRef, model: &str) -> Result<Vec<usize>> {
    spec.inputs
        .iter()
        .map(|input| {
            let name = input.name();
            let Some(index) = features::column_index(schema, name) else {
                return Err(Error::Engine(runbase_engine::Error::ColumnNotFound(format!(
                    "model {model} takes column \"{name}\", which the query does not return; its columns are {}",
                    features::column_names(schema)
                ))));
            };
            check_type(input, schema.field(index).data_type(), model)?;
            Ok(index)
        })
        .collect()
}

/// Checks that a column of type `t` can feed `input`.
pub fn check_type(input: &InputColumn, t: &DataType, model: &str) -> Result<()> {
    if features::accepts(input, t) {
        Ok(())
    } else {
        Err(Error::Engine(runbase_engine::Error::DatatypeMismatch(
            format!(
                "model {model} takes {} for column \"{}\", got {t}",
                features::expected_type(input),
                input.name()
            ),
        )))
    }
}

/// The module's output `[rows, …]` as the `prediction` column (and, if `probabilities` is
/// set, the `probabilities` of a classifier: softmax over the logits in class order).
pub fn prediction_columns(
    spec: &ServingSpec,
    out: &Tensor,
    rows: usize,
    probabilities: bool,
) -> Result<Vec<ArrayRef>> {
    let shape = out.size();
    let mismatch = |expected: String| {
        invalid_argument(format!(
            "the model returned a tensor of shape {shape:?} for {rows} rows; expected {expected}"
        ))
    };
    if shape.first().copied() != Some(rows as i64) {
        return Err(mismatch(format!("[{rows}, …]")));
    }
    match &spec.output {
        Output::Regression => {
            if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
                return Err(mismatch(format!("[{rows}] or [{rows}, 1]")));
            }
            let values = tensor_f64(&out.reshape([-1]))?;
            Ok(vec![Arc::new(
                datafusion::arrow::array::Float64Array::from(values),
            )])
        }
        Output::Classification { classes } => {
            let k = classes.len();
            if shape.len() != 2 || shape[1] != k as i64 {
                return Err(mismatch(format!("[{rows}, {k}] (one logit per class)")));
            }
            let best: Vec<i64> = Vec::try_from(&out.argmax(1, false))
                .map_err(|e| torch_error("reading predictions", e))?;
            let labels = spec
                .label_array()
                .ok_or_else(|| invalid_argument("a classifier without classes".into()))?;
            let index = datafusion::arrow::array::UInt32Array::from_iter_values(
                best.iter().map(|i| u32::try_from(*i).unwrap_or(0)),
            );
            let prediction = take(labels.as_ref(), &index, None)
                .map_err(|e| Error::Engine(runbase_engine::Error::DataFusion(e.into())))?;
            if !probabilities {
                return Ok(vec![prediction]);
            }
            let p = out.to_kind(Kind::Double).softmax(1, Kind::Double);
            Ok(vec![
                prediction,
                spec::list_array(tensor_f64(&p)?, rows, k)?,
            ])
        }
        Output::Tensor => {
            let width = match shape.as_slice() {
                [_] => 1,
                [_, w] => usize::try_from(*w).unwrap_or(0),
                _ => return Err(mismatch(format!("[{rows}] or [{rows}, k]"))),
            };
            Ok(vec![spec::list_array(tensor_f64(out)?, rows, width)?])
        }
    }
}

/// A tensor's values as `f64`s, row-major.
fn tensor_f64(t: &Tensor) -> Result<Vec<f64>> {
    let t = t.to_kind(Kind::Double).contiguous().reshape([-1]);
    Vec::try_from(&t).map_err(|e| torch_error("reading the model's output", e))
}

/// Columns `indices` of `batch`.
pub fn pick(batch: &RecordBatch, indices: &[usize]) -> Vec<ArrayRef> {
    indices.iter().map(|i| batch.column(*i).clone()).collect()
}

/// How many rows of inputs to send per forward pass on `device`.
pub fn batch_rows(device: Device) -> usize {
    match device {
        Device::Cpu => 0,
        _ => GPU_BATCH_ROWS,
    }
}

/// The device name shown to users.
pub fn device_label(d: Device) -> String {
    crate::train::options::device_name(d)
}

/// Checks that `t` is a batch of rows the module can take: `[rows, width]` float32.
pub fn input_tensor(spec: &ServingSpec, columns: &[ArrayRef]) -> Result<Tensor> {
    let raw = features::raw_rows_of(&spec.inputs, columns)?;
    if raw.size().get(1).copied() != Some(spec.raw_width() as i64) {
        return Err(invalid_argument(format!(
            "built a [{:?}] input tensor, expected {} columns",
            raw.size(),
            spec.raw_width()
        )));
    }
    Ok(raw)
}

/// Runs `fut` to completion from inside a scalar function call, which DataFusion makes on
/// the engine's (multi-threaded) CPU runtime.
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> Result<F::Output> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(fut)))
        }
        _ => Err(Error::Engine(runbase_engine::Error::Internal(
            "a model function was called outside the query runtime".into(),
        ))),
    }
}

/// The text of a constant string argument of a scalar function call.
pub(crate) fn constant_text(
    function: &str,
    what: &str,
    value: &datafusion::logical_expr::ColumnarValue,
) -> datafusion::error::Result<String> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::ColumnarValue;
    match value {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
        ) => Ok(s.clone()),
        ColumnarValue::Scalar(s) if s.is_null() => Err(runbase_engine::Error::NullValue(format!(
            "{function}: {what} must not be NULL"
        ))
        .into()),
        _ => Err(datafusion::error::DataFusionError::Plan(format!(
            "{function}: {what} must be a constant string"
        ))),
    }
}
