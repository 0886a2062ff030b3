//! What serving a model version needs besides its TorchScript module: which columns it
//! takes, what its output means, and where it wants to run.
//!
//! A trained model's spec is the [`ModelSpec`] TRAIN stored (preprocessing happens inside
//! the module). An imported model's spec is the one `import_model` was given, stored with
//! `"source": "import"`: plain float32 inputs, in order.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, StringArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field};
use runbase_engine::tracking::models::ModelVersion;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::train::features::{InputColumn, ModelSpec, TargetSpec};
use crate::train::options::invalid_argument;
use crate::{Error, Result};

/// Most inputs an imported model may take.
pub const MAX_IMPORTED_INPUTS: usize = 100_000;

/// The spec `import_model` takes, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSpec {
    /// The input columns, in the order the module's input tensor holds them.
    pub inputs: Vec<String>,
    /// `regression`, `classification` or `tensor`.
    pub output: String,
    /// Class labels in the order of the module's logits (classification only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<Value>>,
    /// Where to run it: `cpu` (default) or `cuda` / `cuda:N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl ImportSpec {
    /// Parses and checks `import_model`'s spec argument.
    pub fn parse(json: &str) -> Result<Self> {
        let spec: ImportSpec = serde_json::from_str(json).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                crate::train::options::invalid_text(format!("spec_json is not valid JSON: {e}"))
            } else {
                invalid_argument(format!(
                    "invalid model spec: {e}; expected {{\"inputs\": [column, …], \"output\": \"regression\" | \"classification\" | \"tensor\", \"classes\": [label, …], \"device\": \"cpu\" | \"cuda\"}}"
                ))
            }
        })?;
        if spec.inputs.is_empty() {
            return Err(invalid_argument(
                "invalid model spec: \"inputs\" must name at least one column".into(),
            ));
        }
        if spec.inputs.len() > MAX_IMPORTED_INPUTS {
            return Err(invalid_argument(format!(
                "invalid model spec: at most {MAX_IMPORTED_INPUTS} inputs"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for name in &spec.inputs {
            if name.is_empty() || !seen.insert(name.to_ascii_lowercase()) {
                return Err(invalid_argument(format!(
                    "invalid model spec: input column \"{name}\" is empty or named twice"
                )));
            }
        }
        match (spec.output.as_str(), &spec.classes) {
            ("classification", Some(classes)) => {
                if classes.len() < 2 {
                    return Err(invalid_argument(
                        "invalid model spec: a classifier needs at least two \"classes\"".into(),
                    ));
                }
                if classes
                    .iter()
                    .any(|c| c.is_null() || c.is_array() || c.is_object())
                {
                    return Err(invalid_argument(
                        "invalid model spec: \"classes\" must be strings, numbers or booleans"
                            .into(),
                    ));
                }
            }
            ("classification", None) => {
                return Err(invalid_argument(
                    "invalid model spec: \"output\": \"classification\" needs \"classes\" (the labels, in the order of the module's logits)".into(),
                ));
            }
            ("regression" | "tensor", None) => {}
            ("regression" | "tensor", Some(_)) => {
                return Err(invalid_argument(format!(
                    "invalid model spec: \"classes\" is only for \"output\": \"classification\", not \"{}\"",
                    spec.output
                )));
            }
            (other, _) => {
                return Err(invalid_argument(format!(
                    "invalid model spec: \"output\" must be \"regression\", \"classification\" or \"tensor\", not \"{other}\""
                )));
            }
        }
        if let Some(device) = &spec.device {
            crate::train::options::parse_device(device)?;
        }
        Ok(spec)
    }
}

/// What a model's output means.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Logits `[rows, classes]`; the prediction is the label with the highest one.
    Classification {
        /// Labels, in the order of the logits.
        classes: Vec<Value>,
    },
    /// Values `[rows]` or `[rows, 1]`.
    Regression,
    /// Any `[rows, k]` tensor, returned as `double precision[]`.
    Tensor,
}

/// Everything needed to serve a model version besides its module.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingSpec {
    /// The input columns in the order the module takes them; imported models' are all
    /// `Numeric` (passed through as float32).
    pub inputs: Vec<InputColumn>,
    /// What the output means.
    pub output: Output,
    /// The device the spec asks for, if any.
    pub device: Option<String>,
    /// The column a trained model predicts (evaluate's default target).
    pub target: Option<String>,
}

impl ServingSpec {
    /// The serving spec of a registered version.
    pub fn of(model: &ModelVersion) -> Result<Self> {
        let spec = &model.model.spec;
        let corrupt = |e: serde_json::Error| {
            Error::Engine(runbase_engine::Error::Corrupt {
                what: format!("spec of model {}@{}", model.model.name, model.version),
                detail: e.to_string(),
            })
        };
        if spec.get("source").and_then(Value::as_str) == Some("import") {
            let mut spec = spec.clone();
            if let Some(o) = spec.as_object_mut() {
                o.remove("source");
            }
            let s: ImportSpec = serde_json::from_value(spec).map_err(corrupt)?;
            return Ok(Self::imported(&s));
        }
        let s: ModelSpec = serde_json::from_value(spec.clone()).map_err(corrupt)?;
        Ok(ServingSpec {
            inputs: s.inputs,
            output: match s.output {
                TargetSpec::Classification { classes } => Output::Classification { classes },
                TargetSpec::Regression { .. } => Output::Regression,
            },
            device: None,
            target: Some(s.target),
        })
    }

    /// The serving spec of an imported model.
    pub fn imported(s: &ImportSpec) -> Self {
        ServingSpec {
            inputs: s
                .inputs
                .iter()
                .map(|name| InputColumn::Numeric {
                    name: name.clone(),
                    mean: 0.0,
                    std: 1.0,
                })
                .collect(),
            output: match (s.output.as_str(), &s.classes) {
                ("classification", Some(classes)) => Output::Classification {
                    classes: classes.clone(),
                },
                ("regression", _) => Output::Regression,
                _ => Output::Tensor,
            },
            device: s.device.clone(),
            target: None,
        }
    }

    /// Raw float32 slots per row: the width of the module's input.
    pub fn raw_width(&self) -> usize {
        self.inputs.iter().map(InputColumn::raw_width).sum()
    }

    /// The type of the `prediction` column.
    pub fn prediction_type(&self) -> DataType {
        match &self.output {
            Output::Classification { classes } => label_type(classes),
            Output::Regression => DataType::Float64,
            Output::Tensor => list_of_doubles(),
        }
    }

    /// The labels as an Arrow array of [`ServingSpec::prediction_type`] (classification).
    pub fn label_array(&self) -> Option<ArrayRef> {
        let Output::Classification { classes } = &self.output else {
            return None;
        };
        Some(match label_type(classes) {
            DataType::Boolean => {
                Arc::new(BooleanArray::from_iter(classes.iter().map(Value::as_bool)))
            }
            DataType::Int64 => Arc::new(Int64Array::from_iter(classes.iter().map(Value::as_i64))),
            DataType::Float64 => {
                Arc::new(Float64Array::from_iter(classes.iter().map(Value::as_f64)))
            }
            _ => Arc::new(StringArray::from_iter_values(
                classes.iter().map(label_text),
            )),
        })
    }
}

/// A label as the text the target column's values cast to.
pub fn label_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The type labels come back as: the target's own type, as far as JSON keeps it.
fn label_type(classes: &[Value]) -> DataType {
    if classes.iter().all(Value::is_boolean) {
        DataType::Boolean
    } else if classes.iter().all(|c| c.is_i64()) {
        DataType::Int64
    } else if classes.iter().all(Value::is_number) {
        DataType::Float64
    } else {
        DataType::Utf8
    }
}

/// `double precision[]`.
pub fn list_of_doubles() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
}

/// `values` (row-major `[rows, width]`) as a `double precision[]` column.
pub fn list_array(values: Vec<f64>, rows: usize, width: usize) -> Result<ArrayRef> {
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(width, rows));
    ListArray::try_new(
        Arc::new(Field::new_list_field(DataType::Float64, true)),
        offsets,
        Arc::new(Float64Array::from(values)),
        None,
    )
    .map(|a| Arc::new(a) as ArrayRef)
    .map_err(|e| Error::Engine(runbase_engine::Error::DataFusion(e.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_specs_are_checked() {
        let ok = ImportSpec::parse(
            r#"{"inputs": ["a", "b"], "output": "classification", "classes": ["x", "y"]}"#,
        )
        .expect("valid");
        let s = ServingSpec::imported(&ok);
        assert_eq!(s.raw_width(), 2);
        assert_eq!(s.prediction_type(), DataType::Utf8);
        for bad in [
            r#"{"inputs": [], "output": "regression"}"#,
            r#"{"inputs": ["a", "A"], "output": "regression"}"#,
            r#"{"inputs": ["a"], "output": "classification"}"#,
            r#"{"inputs": ["a"], "output": "classification", "classes": [1]}"#,
            r#"{"inputs": ["a"], "output": "regression", "classes": [1, 2]}"#,
            r#"{"inputs": ["a"], "output": "ranking"}"#,
            r#"{"inputs": ["a"], "output": "regression", "device": "tpu"}"#,
            r#"{"inputs": ["a"], "output": "regression", "extra": 1}"#,
            r#"{"inputs": ["a"], "#,
        ] {
            assert!(ImportSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_keep_the_targets_type() {
        let spec = |classes: Vec<Value>| ServingSpec {
            inputs: vec![],
            output: Output::Classification { classes },
            device: None,
            target: None,
        };
        assert_eq!(
            spec(vec![Value::from(0), Value::from(2)]).prediction_type(),
            DataType::Int64
        );
        assert_eq!(
            spec(vec![Value::from(false), Value::from(true)]).prediction_type(),
            DataType::Boolean
        );
        let labels = spec(vec![Value::from(0.5), Value::from(2)])
            .label_array()
            .expect("labels");
        assert_eq!(labels.data_type(), &DataType::Float64);
    }
}
