//! `predict(model, column, …)` as a scalar function: `SELECT id, predict('iris', a, b, c, d)
//! FROM t`. The arguments after the model feed its inputs in order; the result is the
//! prediction alone (the label for a classifier, a number for a regressor, an array for a
//! tensor model). The model must be a constant string; the model's own `device` applies.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{Inference, block_on, check_type, constant_text};
use crate::train::function::engine_err;

/// The scalar `predict`.
#[derive(Debug)]
pub struct PredictScalar {
    inference: Arc<Inference>,
    signature: Signature,
}

impl PredictScalar {
    /// The function, serving from `inference`.
    pub fn new(inference: Arc<Inference>) -> Self {
        Self {
            inference,
            signature: Signature::variadic_any(Volatility::Volatile),
        }
    }
}

impl PartialEq for PredictScalar {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inference, &other.inference)
    }
}

impl Eq for PredictScalar {}

impl std::hash::Hash for PredictScalar {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "predict".hash(state);
    }
}

impl ScalarUDFImpl for PredictScalar {
    fn name(&self) -> &str {
        "predict"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Err(DataFusionError::Internal(
            "predict's type comes from return_field_from_args".into(),
        ))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let model = match args.scalar_arguments.first() {
            Some(Some(
                ScalarValue::Utf8(Some(m))
                | ScalarValue::Utf8View(Some(m))
                | ScalarValue::LargeUtf8(Some(m)),
            )) => m.clone(),
            _ => {
                return Err(DataFusionError::Plan(
                    "predict(model, column, …): the model must be a string literal such as 'iris' or 'iris@production'".into(),
                ));
            }
        };
        let (_, spec) = self.inference.resolve(&model).map_err(engine_err)?;
        let inputs = &args.arg_fields[1..];
        if inputs.len() != spec.inputs.len() {
            return Err(DataFusionError::Plan(format!(
                "predict: model {model} takes {} inputs ({}), got {}",
                spec.inputs.len(),
                spec.inputs
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                inputs.len()
            )));
        }
        for (input, field) in spec.inputs.iter().zip(inputs) {
            check_type(input, field.data_type(), &model).map_err(engine_err)?;
        }
        Ok(Arc::new(Field::new(
            "predict",
            spec.prediction_type(),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let model = constant_text("predict", "model", &args.args[0])?;
        if rows == 0 {
            return Ok(ColumnarValue::Array(
                datafusion::arrow::array::new_empty_array(args.return_field.data_type()),
            ));
        }
        let (version, spec) = self.inference.resolve(&model).map_err(engine_err)?;
        if &spec.prediction_type() != args.return_field.data_type() {
            return Err(runbase_engine::Error::InvalidState(format!(
                "predict: {model} now names a model with another output type; run the query again"
            ))
            .into());
        }
        let columns = ColumnarValue::values_to_arrays(&args.args[1..])?;
        let columns: Vec<_> = columns
            .into_iter()
            .map(|c| {
                if c.len() == rows {
                    c
                } else {
                    // A constant argument: as many rows as the batch.
                    ScalarValue::try_from_array(&c, 0)
                        .and_then(|s| s.to_array_of_size(rows))
                        .unwrap_or(c)
                }
            })
            .collect();
        let inference = self.inference.clone();
        let predicted = block_on(async move {
            let device = super::device_for(&spec, None)?;
            let model = inference.load(&version, &spec, device).await?;
            inference.predict(model, columns, false).await
        })
        .and_then(|r| r)
        .map_err(engine_err)?;
        let prediction = predicted.into_iter().next().ok_or_else(|| {
            DataFusionError::Internal("predict produced no prediction column".into())
        })?;
        Ok(ColumnarValue::Array(prediction))
    }
}
