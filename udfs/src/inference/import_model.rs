//! `import_model(name, torchscript, spec_json) → version`: registers a TorchScript module
//! made elsewhere (PyTorch's `torch.jit.script` / `torch.jit.trace` + `save`).
//!
//! Before anything is stored the module is loaded and run on a `[2, len(inputs)]` float32
//! tensor of zeros, and its output checked against the spec: a blob that is not
//! TorchScript, or a spec that does not match the module, is an error and registers
//! nothing.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Builder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use runbase_engine::tracking::models::{NewModelVersion, validate_model_name};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::spec::{ImportSpec, ServingSpec};
use super::{Inference, block_on, prediction_columns, torch_error};
use crate::Result;
use crate::train::function::engine_err;
use crate::train::options::invalid_argument;

/// Checks `blob` against `spec` and registers it as the next version of `name`.
pub async fn import(
    inference: &Inference,
    name: &str,
    blob: Vec<u8>,
    spec_json: &str,
) -> Result<i64> {
    validate_model_name(name)?;
    let spec = ImportSpec::parse(spec_json)?;
    let serving = ServingSpec::imported(&spec);
    // The blob goes to the check and comes back, not copied.
    let blob = tokio::task::spawn_blocking(move || check_module(&blob, &serving).map(|()| blob))
        .await
        .map_err(|e| {
            crate::Error::Engine(runbase_engine::Error::Internal(format!(
                "import_model's check failed: {e}"
            )))
        })??;
    let mut stored = serde_json::to_value(&spec)
        .map_err(|e| crate::Error::Engine(runbase_engine::Error::Internal(e.to_string())))?;
    if let Some(o) = stored.as_object_mut() {
        o.insert("source".into(), Value::from("import"));
    }
    let db = inference.database()?;
    let version = db
        .tracking()
        .register_model(
            NewModelVersion {
                name: name.to_string(),
                run_id: None,
                task: spec.output.clone(),
                target: None,
                input_columns: spec.inputs.clone(),
                metrics: Value::Object(Default::default()),
                format: "torchscript".into(),
                spec: stored,
            },
            blob,
        )
        .await?;
    Ok(version.version)
}

/// Loads `blob` and runs it on two rows of zeros: it must be TorchScript and its output
/// must have the shape `spec` says.
fn check_module(blob: &[u8], spec: &ServingSpec) -> Result<()> {
    let mut module = tch::CModule::load_data_on_device(&mut &blob[..], Device::Cpu)
        .map_err(|e| torch_error("the blob is not a TorchScript module", e))?;
    module.set_eval();
    let width = spec.raw_width() as i64;
    let zeros = Tensor::zeros([2, width], (Kind::Float, Device::Cpu));
    let out = tch::no_grad(|| module.forward_ts(&[zeros])).map_err(|e| {
        torch_error(
            &format!(
                "the spec does not match the module: it failed on a [2, {width}] float32 tensor"
            ),
            e,
        )
    })?;
    prediction_columns(spec, &out, 2, true)
        .map_err(|e| invalid_argument(format!("the spec does not match the module: {e}")))?;
    Ok(())
}

/// The `import_model` scalar function.
#[derive(Debug)]
pub struct ImportModel {
    inference: Arc<Inference>,
    signature: Signature,
}

impl ImportModel {
    /// The function, registering through `inference`.
    pub fn new(inference: Arc<Inference>) -> Self {
        Self {
            inference,
            signature: Signature::user_defined(Volatility::Volatile),
        }
    }
}

impl PartialEq for ImportModel {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inference, &other.inference)
    }
}

impl Eq for ImportModel {}

impl std::hash::Hash for ImportModel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "import_model".hash(state);
    }
}

impl ScalarUDFImpl for ImportModel {
    fn name(&self) -> &str {
        "import_model"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        if arg_types.len() != 3 {
            return Err(DataFusionError::Plan(format!(
                "import_model takes 3 arguments (name, torchscript bytea, spec_json), got {}",
                arg_types.len()
            )));
        }
        Ok(vec![DataType::Utf8, DataType::Binary, DataType::Utf8])
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = cast(&arrays[0], &DataType::Utf8)?;
        let blobs = cast(&arrays[1], &DataType::Binary)?;
        let specs = cast(&arrays[2], &DataType::Utf8)?;
        let (names, blobs, specs) = (
            names.as_string::<i32>(),
            blobs.as_binary::<i32>(),
            specs.as_string::<i32>(),
        );
        let mut out = Int64Builder::with_capacity(rows);
        for i in 0..rows {
            let (i_name, i_blob, i_spec) = (
                i.min(names.len().saturating_sub(1)),
                i.min(blobs.len().saturating_sub(1)),
                i.min(specs.len().saturating_sub(1)),
            );
            if names.is_null(i_name) || blobs.is_null(i_blob) || specs.is_null(i_spec) {
                return Err(runbase_engine::Error::NullValue(
                    "import_model: name, torchscript and spec_json must not be NULL".into(),
                )
                .into());
            }
            let name = names.value(i_name).to_string();
            let blob = blobs.value(i_blob).to_vec();
            let spec = specs.value(i_spec).to_string();
            let inference = self.inference.clone();
            let version = block_on(async move { import(&inference, &name, blob, &spec).await })
                .and_then(|r| r)
                .map_err(engine_err)?;
            out.append_value(version);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
