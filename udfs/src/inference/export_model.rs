//! `export_model(model) → bytea`: a model version's TorchScript module, as stored.
//!
//! A trained model's module has its preprocessing inside: it takes the float32 tensor
//! `[rows, inputs]` of raw values (a category as its index in the training vocabulary,
//! which `runbase.models.spec` lists) and returns logits `[rows, classes]` or values
//! `[rows]`, so `torch.jit.load` in Python gives what `predict` gives.

use std::sync::Arc;

use datafusion::arrow::array::BinaryBuilder;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{Inference, block_on, constant_text};
use crate::train::function::engine_err;

/// The `export_model` scalar function.
#[derive(Debug)]
pub struct ExportModel {
    inference: Arc<Inference>,
    signature: Signature,
}

impl ExportModel {
    /// The function, reading through `inference`.
    pub fn new(inference: Arc<Inference>) -> Self {
        Self {
            inference,
            signature: Signature::user_defined(Volatility::Volatile),
        }
    }
}

impl PartialEq for ExportModel {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inference, &other.inference)
    }
}

impl Eq for ExportModel {}

impl std::hash::Hash for ExportModel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "export_model".hash(state);
    }
}

impl ScalarUDFImpl for ExportModel {
    fn name(&self) -> &str {
        "export_model"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Binary)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        if arg_types.len() != 1 {
            return Err(DataFusionError::Plan(format!(
                "export_model takes 1 argument (model), got {}",
                arg_types.len()
            )));
        }
        Ok(vec![DataType::Utf8])
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let reference = constant_text("export_model", "model", &args.args[0])?;
        let inference = self.inference.clone();
        let blob = block_on(async move {
            let (version, _) = inference.resolve(&reference)?;
            let db = inference.database()?;
            Ok::<_, crate::Error>(db.tracking().model_blob(&version).await?)
        })
        .and_then(|r| r)
        .map_err(engine_err)?;
        let mut out = BinaryBuilder::with_capacity(args.number_rows, blob.len());
        for _ in 0..args.number_rows {
            out.append_value(&blob);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
