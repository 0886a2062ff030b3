//! From a query's Arrow result to tensors: feature columns, the target, the split, and the
//! preprocessing every model carries with it.
//!
//! Each input row becomes a *raw* row of `f32` slots: a number (NaN when missing), a
//! boolean as 0/1, a category as its index in the training vocabulary (the vocabulary's
//! length for missing or unseen values), or a fixed-length array's elements. [`Encoder`]
//! turns raw rows into the network's input — imputing missing numbers with the training
//! mean, standardizing, one-hot encoding categories — with tensor operations only, so the
//! very same code runs in training and inside the exported TorchScript module.

use std::collections::{BTreeSet, HashMap};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, GenericListArray, OffsetSizeTrait, RecordBatch,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type, Schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::options::{SplitKind, Task, invalid_argument};
use super::rng::Rng;
use crate::{Error, Result};

/// Most distinct values a text column (or classification target) may have.
pub const MAX_CATEGORIES: usize = 1000;

/// One input column and what was learned about it from the training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputColumn {
    /// A number: missing → `mean`, then `(x - mean) / std`.
    Numeric {
        /// Column name.
        name: String,
        /// Training mean.
        mean: f64,
        /// Training standard deviation (1 when zero).
        std: f64,
    },
    /// A boolean as 0/1, then treated as a number.
    Boolean {
        /// Column name.
        name: String,
        /// Training mean.
        mean: f64,
        /// Training standard deviation.
        std: f64,
    },
    /// Text, one-hot over the training vocabulary plus one slot for missing/unseen.
    Categorical {
        /// Column name.
        name: String,
        /// Values seen in training, sorted.
        vocabulary: Vec<String>,
    },
    /// A fixed-length numeric array, element-wise like `Numeric`.
    Vector {
        /// Column name.
        name: String,
        /// Per-element training means.
        mean: Vec<f64>,
        /// Per-element training standard deviations.
        std: Vec<f64>,
    },
}

impl InputColumn {
    /// The column name.
    pub fn name(&self) -> &str {
        match self {
            InputColumn::Numeric { name, .. }
            | InputColumn::Boolean { name, .. }
            | InputColumn::Categorical { name, .. }
            | InputColumn::Vector { name, .. } => name,
        }
    }

    /// Raw slots this column takes.
    pub fn raw_width(&self) -> usize {
        match self {
            InputColumn::Vector { mean, .. } => mean.len(),
            _ => 1,
        }
    }

    /// Network inputs this column becomes.
    pub fn encoded_width(&self) -> usize {
        match self {
            InputColumn::Categorical { vocabulary, .. } => vocabulary.len() + 1,
            other => other.raw_width(),
        }
    }
}

/// What the model predicts and how its output maps back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum TargetSpec {
    /// Logits over `classes`, in this order.
    Classification {
        /// Labels in the target's own type, sorted.
        classes: Vec<Value>,
    },
    /// A value: the network predicts `(y - mean) / std`.
    Regression {
        /// Training mean of the target.
        mean: f64,
        /// Training standard deviation of the target.
        std: f64,
    },
}

impl TargetSpec {
    /// The task.
    pub fn task(&self) -> Task {
        match self {
            TargetSpec::Classification { .. } => Task::Classification,
            TargetSpec::Regression { .. } => Task::Regression,
        }
    }

    /// Network outputs.
    pub fn outputs(&self) -> i64 {
        match self {
            TargetSpec::Classification { classes } => classes.len() as i64,
            TargetSpec::Regression { .. } => 1,
        }
    }

    /// Whether this is a two-class problem.
    pub fn binary(&self) -> bool {
        matches!(self, TargetSpec::Classification { classes } if classes.len() == 2)
    }
}

/// Everything a model needs besides its weights: stored with each model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The target column.
    pub target: String,
    /// Input columns in raw-slot order.
    pub inputs: Vec<InputColumn>,
    /// The output.
    pub output: TargetSpec,
}

impl ModelSpec {
    /// Raw slots per row.
    pub fn raw_width(&self) -> usize {
        self.inputs.iter().map(InputColumn::raw_width).sum()
    }

    /// Network inputs per row.
    pub fn encoded_width(&self) -> usize {
        self.inputs.iter().map(InputColumn::encoded_width).sum()
    }
}

/// A training set ready for the network.
#[derive(Debug)]
pub struct Dataset {
    /// Preprocessing and output description.
    pub spec: ModelSpec,
    /// Raw rows, `[rows, raw_width]`, on the CPU.
    pub raw: Tensor,
    /// Targets: class indices (`Int64`) or standardized values (`Float`), `[rows]`.
    pub y: Tensor,
    /// Training row numbers.
    pub train: Vec<i64>,
    /// Validation row numbers.
    pub val: Vec<i64>,
}

/// The index of column `wanted` in `schema`: the exact name, else the one column whose name
/// matches ignoring case.
pub fn column_index(schema: &Schema, wanted: &str) -> Option<usize> {
    if let Ok(i) = schema.index_of(wanted) {
        return Some(i);
    }
    let matches: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name().eq_ignore_ascii_case(wanted))
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [i] => Some(*i),
        _ => None,
    }
}

/// `schema`'s column names, comma-separated, for error messages.
pub fn column_names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds the target column `wanted` among the result's columns (see [`column_index`]).
fn find_column(batch: &RecordBatch, wanted: &str) -> Result<usize> {
    let schema = batch.schema();
    column_index(&schema, wanted).ok_or_else(|| {
        Error::Engine(runbase_engine::Error::ColumnNotFound(format!(
            "target column \"{wanted}\" does not exist in the query's result; its columns are {}",
            column_names(&schema)
        )))
    })
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric()
}

fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

/// The task a target column's type implies.
fn infer_task(t: &DataType) -> Option<Task> {
    match t {
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Some(Task::Regression),
        t if t.is_integer() || is_text(t) || *t == DataType::Boolean => Some(Task::Classification),
        _ => None,
    }
}

fn arrow_err(e: datafusion::arrow::error::ArrowError) -> Error {
    Error::Engine(runbase_engine::Error::DataFusion(e.into()))
}

/// `arr` as `f32`s, with NaN where it is NULL.
fn f32_column(arr: &ArrayRef) -> Result<Tensor> {
    let f = cast(arr, &DataType::Float32).map_err(arrow_err)?;
    let f = f.as_primitive::<Float32Type>();
    let t = Tensor::from_slice(f.values().as_ref());
    if f.null_count() == 0 {
        return Ok(t);
    }
    let nulls: Vec<bool> = (0..f.len()).map(|i| f.is_null(i)).collect();
    Ok(t.masked_fill(&Tensor::from_slice(&nulls), f64::NAN))
}

/// The elements of a list column as `[rows, len]` `f32`s (NaN rows where NULL).
fn vector_column(name: &str, arr: &ArrayRef, len: Option<usize>) -> Result<(Tensor, usize)> {
    let (values, offsets): (ArrayRef, Vec<(usize, usize)>) = match arr.data_type() {
        DataType::List(_) => list_parts(arr.as_list::<i32>()),
        DataType::LargeList(_) => list_parts(arr.as_list::<i64>()),
        DataType::FixedSizeList(_, n) => {
            let l = arr.as_fixed_size_list();
            let n = *n as usize;
            (
                l.values().clone(),
                (0..l.len()).map(|i| (i * n, n)).collect(),
            )
        }
        other => {
            return Err(invalid_argument(format!(
                "column \"{name}\" of type {other} is not an array"
            )));
        }
    };
    let len = match len {
        Some(l) => l,
        None => (0..arr.len())
            .find(|i| arr.is_valid(*i))
            .map(|i| offsets[i].1)
            .ok_or_else(|| {
                invalid_argument(format!("array column \"{name}\" is NULL in every row"))
            })?,
    };
    if len == 0 {
        return Err(invalid_argument(format!(
            "array column \"{name}\" holds empty arrays"
        )));
    }
    let flat = cast(&values, &DataType::Float32).map_err(arrow_err)?;
    let flat = flat.as_primitive::<Float32Type>();
    let mut out = vec![f32::NAN; arr.len() * len];
    for (row, (start, n)) in offsets.into_iter().enumerate() {
        if arr.is_null(row) {
            continue;
        }
        if n != len {
            return Err(invalid_argument(format!(
                "array column \"{name}\" must have the same length in every row: row {} has {n} elements, expected {len}",
                row + 1
            )));
        }
        for (j, slot) in out[row * len..(row + 1) * len].iter_mut().enumerate() {
            let k = start + j;
            *slot = if flat.is_null(k) {
                f32::NAN
            } else {
                flat.value(k)
            };
        }
    }
    Ok((
        Tensor::from_slice(&out).view([arr.len() as i64, len as i64]),
        len,
    ))
}

/// A list array's values and each row's (start, length) in them.
fn list_parts<O: OffsetSizeTrait>(l: &GenericListArray<O>) -> (ArrayRef, Vec<(usize, usize)>) {
    let offsets = l
        .value_offsets()
        .windows(2)
        .map(|w| (w[0].as_usize(), (w[1] - w[0]).as_usize()))
        .collect();
    (l.values().clone(), offsets)
}

/// The text of each row of a text-like column (`None` where NULL).
fn text_column(arr: &ArrayRef) -> Result<Vec<Option<String>>> {
    let s = cast(arr, &DataType::Utf8).map_err(arrow_err)?;
    let s = s.as_string::<i32>();
    Ok(s.iter().map(|v| v.map(str::to_string)).collect())
}

/// Mean and standard deviation of the finite values of `x[rows]` per column.
fn fit_stats(x: &Tensor, rows: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let x = x.index_select(0, rows).to_kind(Kind::Double);
    let finite = x.isfinite();
    let zeros = x.zeros_like();
    let xs = x.where_self(&finite, &zeros);
    let count = finite
        .to_kind(Kind::Double)
        .sum_dim_intlist(0, false, Kind::Double);
    let count_safe = count.clamp_min(1.0);
    let mean = xs.sum_dim_intlist(0, false, Kind::Double) / &count_safe;
    let dev = (&x - &mean).where_self(&finite, &zeros);
    let var = (&dev * &dev).sum_dim_intlist(0, false, Kind::Double) / &count_safe;
    let std = var.sqrt();
    let mean: Vec<f64> = Vec::try_from(&mean).unwrap_or_default();
    let std: Vec<f64> = Vec::try_from(&std).unwrap_or_default();
    let std = std
        .into_iter()
        .map(|s| if s.is_finite() && s > 1e-12 { s } else { 1.0 })
        .collect();
    let mean = mean
        .into_iter()
        .map(|m| if m.is_finite() { m } else { 0.0 })
        .collect();
    (mean, std)
}

/// How to build a [`Dataset`].
#[derive(Debug, Clone)]
pub struct DatasetOptions<'a> {
    /// Target column.
    pub target: &'a str,
    /// Forced task, else inferred.
    pub task: Option<Task>,
    /// Validation fraction.
    pub validation_fraction: f64,
    /// Split kind, else stratified for classification.
    pub split: Option<SplitKind>,
    /// Seed of the split.
    pub seed: u64,
}

/// Builds the training set from the query's rows.
pub fn prepare(batch: &RecordBatch, o: &DatasetOptions<'_>) -> Result<Dataset> {
    let rows = batch.num_rows();
    if rows == 0 {
        return Err(invalid_argument(
            "the training query returned no rows".into(),
        ));
    }
    let ti = find_column(batch, o.target)?;
    let target_name = batch.schema().field(ti).name().clone();
    let target = batch.column(ti);
    let inferred = infer_task(target.data_type()).ok_or_else(|| {
        invalid_argument(format!(
            "target column \"{target_name}\" has type {}, which is neither a label nor a number",
            target.data_type()
        ))
    })?;
    let task = o.task.unwrap_or(inferred);
    if target.null_count() > 0 {
        return Err(invalid_argument(format!(
            "target column \"{target_name}\" is NULL in {} of {rows} rows; filter them out (WHERE {target_name} IS NOT NULL)",
            target.null_count()
        )));
    }
    if rows < 2 {
        return Err(invalid_argument(
            "the training query returned 1 row; training needs at least 2 (one to validate on)"
                .into(),
        ));
    }
    // The target.
    let (output, y, labels): (TargetSpec, Tensor, Option<Vec<i64>>) = match task {
        Task::Classification => {
            if !(target.data_type().is_integer()
                || is_text(target.data_type())
                || *target.data_type() == DataType::Boolean
                || is_numeric(target.data_type()))
            {
                return Err(invalid_argument(format!(
                    "target column \"{target_name}\" of type {} cannot be a class label",
                    target.data_type()
                )));
            }
            if target.data_type().is_floating() {
                check_finite_target(&target_name, target)?;
            }
            let text = text_column(target)?;
            let distinct: BTreeSet<&str> = text.iter().flatten().map(String::as_str).collect();
            let mut classes: Vec<&str> = distinct.into_iter().collect();
            if classes.iter().all(|c| c.parse::<f64>().is_ok()) {
                classes.sort_by(|a, b| {
                    let (a, b) = (
                        a.parse::<f64>().unwrap_or(0.0),
                        b.parse::<f64>().unwrap_or(0.0),
                    );
                    a.total_cmp(&b)
                });
            }
            if classes.len() < 2 {
                return Err(invalid_argument(format!(
                    "target column \"{target_name}\" has only one class ({}); classification needs at least two",
                    classes.first().copied().unwrap_or("")
                )));
            }
            if classes.len() > MAX_CATEGORIES {
                return Err(invalid_argument(format!(
                    "target column \"{target_name}\" has {} distinct values, more than the {MAX_CATEGORIES} classes TRAIN supports; for a number use \"task\": \"regression\"",
                    classes.len()
                )));
            }
            let index: HashMap<&str, i64> = classes
                .iter()
                .enumerate()
                .map(|(i, c)| (*c, i as i64))
                .collect();
            let labels: Vec<i64> = text
                .iter()
                .map(|v| v.as_deref().map_or(0, |v| index[v]))
                .collect();
            let dt = target.data_type();
            let class_values = classes
                .iter()
                .map(|c| label_value(c, dt))
                .collect::<Vec<_>>();
            (
                TargetSpec::Classification {
                    classes: class_values,
                },
                Tensor::from_slice(&labels),
                Some(labels),
            )
        }
        Task::Regression => {
            if !is_numeric(target.data_type()) {
                return Err(invalid_argument(format!(
                    "target column \"{target_name}\" of type {} is not a number, so it cannot be a regression target",
                    target.data_type()
                )));
            }
            check_finite_target(&target_name, target)?;
            // Standardized below, once the split is known.
            (
                TargetSpec::Regression {
                    mean: 0.0,
                    std: 1.0,
                },
                f32_column(target)?,
                None,
            )
        }
    };
    if o.split == Some(SplitKind::Stratified) && task == Task::Regression {
        return Err(invalid_argument(
            "a stratified split needs a classification task".into(),
        ));
    }
    let (train, val) = split(
        rows,
        labels.as_deref(),
        o.split.unwrap_or(match task {
            Task::Classification => SplitKind::Stratified,
            Task::Regression => SplitKind::Random,
        }),
        o.validation_fraction,
        o.seed,
    );
    if train.is_empty() || val.is_empty() {
        return Err(invalid_argument(format!(
            "{rows} rows cannot be split into training and validation rows with validation_fraction {}",
            o.validation_fraction
        )));
    }
    let train_t = Tensor::from_slice(&train);
    let (output, y) = match output {
        TargetSpec::Regression { .. } => {
            let (m, s) = fit_stats(&y.view([-1, 1]), &train_t);
            let (mean, std) = (m[0], s[0]);
            (
                TargetSpec::Regression { mean, std },
                ((y.to_kind(Kind::Double) - mean) / std).to_kind(Kind::Float),
            )
        }
        c => (c, y),
    };

    // The features.
    let mut inputs = Vec::new();
    let mut raws = Vec::new();
    for (i, field) in batch.schema().fields().iter().enumerate() {
        if i == ti {
            continue;
        }
        let name = field.name().clone();
        let col = batch.column(i);
        let dt = col.data_type();
        if *dt == DataType::Boolean || is_numeric(dt) {
            let t = f32_column(col)?.view([-1, 1]);
            let (m, s) = fit_stats(&t, &train_t);
            inputs.push(if *dt == DataType::Boolean {
                InputColumn::Boolean {
                    name,
                    mean: m[0],
                    std: s[0],
                }
            } else {
                InputColumn::Numeric {
                    name,
                    mean: m[0],
                    std: s[0],
                }
            });
            raws.push(t);
        } else if is_text(dt) {
            let text = text_column(col)?;
            let vocab: BTreeSet<&str> = train
                .iter()
                .filter_map(|r| text[*r as usize].as_deref())
                .collect();
            if vocab.len() > MAX_CATEGORIES {
                return Err(invalid_argument(format!(
                    "text column \"{name}\" has {} distinct values, more than the {MAX_CATEGORIES} TRAIN one-hot encodes; leave it out of the query or map it to fewer values",
                    vocab.len()
                )));
            }
            let vocabulary: Vec<String> = vocab.into_iter().map(str::to_string).collect();
            raws.push(category_slots(&vocabulary, &text).view([-1, 1]));
            inputs.push(InputColumn::Categorical { name, vocabulary });
        } else if matches!(
            dt,
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
                if is_numeric(f.data_type())
        ) {
            let (t, _) = vector_column(&name, col, None)?;
            let (mean, std) = fit_stats(&t, &train_t);
            inputs.push(InputColumn::Vector { name, mean, std });
            raws.push(t);
        } else {
            return Err(invalid_argument(format!(
                "column \"{name}\" has type {dt}, which TRAIN cannot use as a feature; cast it to a number or text in the query, or leave it out"
            )));
        }
    }
    if inputs.is_empty() {
        return Err(invalid_argument(format!(
            "the training query has no feature columns besides the target \"{target_name}\""
        )));
    }
    Ok(Dataset {
        spec: ModelSpec {
            target: target_name,
            inputs,
            output,
        },
        raw: Tensor::cat(&raws, 1),
        y,
        train,
        val,
    })
}

fn check_finite_target(name: &str, target: &ArrayRef) -> Result<()> {
    let f = cast(target, &DataType::Float64).map_err(arrow_err)?;
    let bad = f
        .as_primitive::<Float64Type>()
        .iter()
        .flatten()
        .filter(|v| !v.is_finite())
        .count();
    if bad > 0 {
        return Err(invalid_argument(format!(
            "target column \"{name}\" has {bad} NaN or infinite values; filter them out (WHERE {name} <> 'NaN')"
        )));
    }
    Ok(())
}

/// A class label in the target's own type, as JSON.
fn label_value(text: &str, dt: &DataType) -> Value {
    if dt.is_integer() {
        text.parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(text))
    } else if *dt == DataType::Boolean {
        Value::Bool(text == "true")
    } else if dt.is_numeric() {
        text.parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::from(text), Value::Number)
    } else {
        Value::from(text)
    }
}

/// Category indices; missing and unseen values get `vocabulary.len()`.
pub fn category_slots(vocabulary: &[String], text: &[Option<String>]) -> Tensor {
    let index: HashMap<&str, f32> = vocabulary
        .iter()
        .enumerate()
        .map(|(i, v)| (v.as_str(), i as f32))
        .collect();
    let other = vocabulary.len() as f32;
    let slots: Vec<f32> = text
        .iter()
        .map(|v| {
            v.as_deref()
                .and_then(|v| index.get(v).copied())
                .unwrap_or(other)
        })
        .collect();
    Tensor::from_slice(&slots)
}

/// Raw rows for already-fitted inputs (what inference does with new rows), reading each
/// input from the batch column of its name.
pub fn raw_rows(inputs: &[InputColumn], batch: &RecordBatch) -> Result<Tensor> {
    let columns = inputs
        .iter()
        .map(|input| {
            batch.column_by_name(input.name()).cloned().ok_or_else(|| {
                Error::Engine(runbase_engine::Error::ColumnNotFound(format!(
                    "input column \"{}\" is missing",
                    input.name()
                )))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    raw_rows_of(inputs, &columns)
}

/// Raw rows `[rows, raw_width]` from one column per input, in the inputs' order.
pub fn raw_rows_of(inputs: &[InputColumn], columns: &[ArrayRef]) -> Result<Tensor> {
    let mut raws = Vec::with_capacity(inputs.len());
    for (input, col) in inputs.iter().zip(columns) {
        raws.push(match input {
            InputColumn::Numeric { .. } | InputColumn::Boolean { .. } => {
                f32_column(col)?.view([-1, 1])
            }
            InputColumn::Categorical { vocabulary, .. } => {
                category_slots(vocabulary, &text_column(col)?).view([-1, 1])
            }
            InputColumn::Vector { name, mean, .. } => vector_column(name, col, Some(mean.len()))?.0,
        });
    }
    if raws.len() == 1 {
        return Ok(raws
            .pop()
            .unwrap_or_else(|| Tensor::zeros([0, 0], (Kind::Float, Device::Cpu))));
    }
    Ok(Tensor::cat(&raws, 1))
}

/// Whether a column of type `t` can feed `input`.
pub fn accepts(input: &InputColumn, t: &DataType) -> bool {
    match input {
        InputColumn::Numeric { .. } | InputColumn::Boolean { .. } => {
            is_numeric(t) || *t == DataType::Boolean || *t == DataType::Null
        }
        InputColumn::Categorical { .. } => is_text(t) || *t == DataType::Null,
        InputColumn::Vector { .. } => {
            matches!(
                t,
                DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
                    if is_numeric(f.data_type())
            ) || *t == DataType::Null
        }
    }
}

/// What type of column `input` takes, for error messages.
pub fn expected_type(input: &InputColumn) -> &'static str {
    match input {
        InputColumn::Numeric { .. } | InputColumn::Boolean { .. } => "a number or boolean",
        InputColumn::Categorical { .. } => "text",
        InputColumn::Vector { .. } => "an array of numbers",
    }
}

/// Raw rows → network inputs, with tensor operations only (see the module docs).
#[derive(Debug)]
pub struct Encoder {
    numeric: Option<(Tensor, Tensor, Tensor)>,
    categorical: Vec<(i64, i64)>,
    /// Whether the numeric slots are exactly the first slots, in order (no gather needed).
    all_numeric: bool,
}

impl Encoder {
    /// The encoder of `inputs`, its constants on `device`.
    pub fn new(inputs: &[InputColumn], device: Device) -> Self {
        let mut slots = Vec::new();
        let mut means = Vec::new();
        let mut stds = Vec::new();
        let mut categorical = Vec::new();
        let mut at = 0i64;
        for input in inputs {
            match input {
                InputColumn::Numeric { mean, std, .. } | InputColumn::Boolean { mean, std, .. } => {
                    slots.push(at);
                    means.push(*mean as f32);
                    stds.push(*std as f32);
                }
                InputColumn::Vector { mean, std, .. } => {
                    for (j, (m, s)) in mean.iter().zip(std).enumerate() {
                        slots.push(at + j as i64);
                        means.push(*m as f32);
                        stds.push(*s as f32);
                    }
                }
                InputColumn::Categorical { vocabulary, .. } => {
                    categorical.push((at, vocabulary.len() as i64 + 1));
                }
            }
            at += input.raw_width() as i64;
        }
        let all_numeric = categorical.is_empty();
        let numeric = (!slots.is_empty()).then(|| {
            (
                Tensor::from_slice(&slots).to_device(device),
                Tensor::from_slice(&means).to_device(device),
                Tensor::from_slice(&stds).to_device(device),
            )
        });
        Self {
            numeric,
            categorical,
            all_numeric,
        }
    }

    /// Encodes raw rows `[rows, raw_width]`.
    pub fn encode(&self, raw: &Tensor) -> Tensor {
        let mut parts = Vec::with_capacity(1 + self.categorical.len());
        if let Some((slots, mean, std)) = &self.numeric {
            let x = if self.all_numeric {
                raw.shallow_clone()
            } else {
                raw.index_select(1, slots)
            };
            let x = x.where_self(&x.isfinite(), mean);
            parts.push((x - mean) / std);
        }
        for (slot, size) in &self.categorical {
            let idx = raw
                .select(1, *slot)
                .nan_to_num((*size - 1) as f64, None, None)
                .clamp(0.0, (*size - 1) as f64)
                .to_kind(Kind::Int64);
            parts.push(idx.one_hot(*size).to_kind(Kind::Float));
        }
        if parts.len() == 1 {
            parts.pop().unwrap_or_else(|| raw.shallow_clone())
        } else {
            Tensor::cat(&parts, 1)
        }
    }
}

/// Train and validation row numbers.
fn split(
    rows: usize,
    labels: Option<&[i64]>,
    kind: SplitKind,
    fraction: f64,
    seed: u64,
) -> (Vec<i64>, Vec<i64>) {
    let mut rng = Rng::new(seed ^ 0x5_9117);
    let take = |n: usize| -> usize {
        if n < 2 {
            return 0;
        }
        ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
    };
    let (mut train, mut val) = (Vec::new(), Vec::new());
    match (kind, labels) {
        (SplitKind::Stratified, Some(labels)) => {
            let mut by_class: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
            for (r, l) in labels.iter().enumerate() {
                by_class.entry(*l).or_default().push(r as i64);
            }
            for (_, mut members) in by_class {
                rng.shuffle(&mut members);
                let k = take(members.len());
                val.extend_from_slice(&members[..k]);
                train.extend_from_slice(&members[k..]);
            }
        }
        _ => {
            let mut all: Vec<i64> = (0..rows as i64).collect();
            rng.shuffle(&mut all);
            let k = take(rows);
            val.extend_from_slice(&all[..k]);
            train.extend_from_slice(&all[k..]);
        }
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}
