//! Arrow record batches as the JSON the API answers: `{"columns": [{"name", "type"}],
//! "rows": [[…], …]}`, column order kept. Integers and floats are JSON numbers (NaN and
//! infinities `null`, as JSON has neither), booleans are booleans, everything else is the
//! text PostgreSQL clients would show.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use runbase_engine::error::ErrorCode;
use serde_json::{Value, json};

use super::ApiError;

fn arrow_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("encoding rows: {e}"))
}

/// The cells of one column, as JSON values.
fn column_values(array: &dyn Array) -> Result<Vec<Value>, ApiError> {
    let n = array.len();
    let dt = array.data_type();
    if dt.is_integer() {
        let a = cast(array, &DataType::Int64).map_err(arrow_err)?;
        let a = a.as_primitive::<Int64Type>();
        return Ok((0..n)
            .map(|i| {
                if a.is_null(i) {
                    Value::Null
                } else {
                    json!(a.value(i))
                }
            })
            .collect());
    }
    if dt.is_floating() || matches!(dt, DataType::Decimal128(..) | DataType::Decimal256(..)) {
        let a = cast(array, &DataType::Float64).map_err(arrow_err)?;
        let a = a.as_primitive::<Float64Type>();
        return Ok((0..n)
            .map(|i| {
                let v = a.value(i);
                if a.is_null(i) || !v.is_finite() {
                    Value::Null
                } else {
                    json!(v)
                }
            })
            .collect());
    }
    if *dt == DataType::Boolean {
        let a = array.as_boolean();
        return Ok((0..n)
            .map(|i| {
                if a.is_null(i) {
                    Value::Null
                } else {
                    json!(a.value(i))
                }
            })
            .collect());
    }
    let options = FormatOptions::default().with_null("");
    let f = ArrayFormatter::try_new(array, &options).map_err(arrow_err)?;
    Ok((0..n)
        .map(|i| {
            if array.is_null(i) {
                Value::Null
            } else {
                Value::String(f.value(i).to_string())
            }
        })
        .collect())
}

/// `batches` (of `schema`) as `{"columns", "rows"}`.
pub(super) fn rows_json(schema: &Schema, batches: &[RecordBatch]) -> Result<Value, ApiError> {
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let mut rows = Vec::new();
    for batch in batches {
        let cols = batch
            .columns()
            .iter()
            .map(|c| column_values(c.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..batch.num_rows() {
            rows.push(Value::Array(cols.iter().map(|c| c[i].clone()).collect()));
        }
    }
    Ok(json!({ "columns": columns, "rows": rows }))
}
