//! Online scoring: `POST /api/v1/models/{ref}/predict` and MLflow's `POST /invocations`
//! (the model named by `?model=` or the `X-Runbase-Model` header), answered by the same
//! cached inference path as SQL's `PREDICT` — the same model cache, the same inference
//! pool, the same tensors — so an answer over HTTP is the answer `PREDICT` gives.
//!
//! Bodies as MLflow's scoring server takes them: JSON with `dataframe_split`
//! (`{"columns": […], "data": [[…]]}`), `dataframe_records` (`[{col: v}]`), `inputs` or
//! `instances` (records, rows in the model's input order, or `{col: [values]}`), or CSV
//! with a header row (`Content-Type: text/csv`). The answer is `{"predictions": […]}`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, ListBuilder, RecordBatch, StringBuilder,
};
use datafusion::arrow::datatypes::{Field, Schema};
use runbase_engine::error::ErrorCode;
use runbase_udfs::inference::Inference;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::{ApiError, AppState};

/// Most rows one request may score.
const MAX_ROWS: usize = 1_000_000;

/// The query string of [`invocations`].
#[derive(Debug, Deserialize)]
pub(super) struct ModelParam {
    model: Option<String>,
}

/// `POST /api/v1/models/{reference}/predict`: scores the rows of the body with the model
/// `reference` (`name`, `name@3`, `name@alias`).
pub(super) async fn predict(
    State(state): State<AppState>,
    _caller: Caller,
    Path(reference): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    score(&state, &reference, &headers, &body).await
}

/// `POST /invocations?model=<reference>` (or header `X-Runbase-Model`): MLflow's
/// scoring route.
pub(super) async fn invocations(
    State(state): State<AppState>,
    _caller: Caller,
    Query(param): Query<ModelParam>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let reference = param
        .model
        .or_else(|| {
            headers
                .get("x-runbase-model")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                "name the model: POST /invocations?model=<name[@version|@alias]>, or the \
                 X-Runbase-Model header",
            )
        })?;
    score(&state, &reference, &headers, &body).await
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, message)
}

async fn score(
    state: &AppState,
    reference: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let inference: Arc<Inference> = state.inference.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unsupported,
            "this server was started without model serving",
        )
    })?;
    // Resolving reads the registry (RocksDB): off the async workers.
    let resolver = inference.clone();
    let owned = reference.to_string();
    let (version, spec) = tokio::task::spawn_blocking(move || resolver.resolve(&owned))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("resolving the model: {e}")))?
        .map_err(udfs_error)?;
    // JSON or CSV only: neither is a type a page of another site can POST without a
    // CORS preflight (which this server never grants).
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let csv = content_type.starts_with("text/csv");
    if !csv && !content_type.starts_with("application/json") {
        return Err(bad(
            "send the rows as Content-Type: application/json or text/csv",
        ));
    }
    let names: Vec<String> = spec.inputs.iter().map(|i| i.name().to_string()).collect();
    let table = if csv {
        Table::from_csv(body)?
    } else {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
        Table::from_json(value, &names)?
    };
    if table.rows.len() > MAX_ROWS {
        return Err(bad(format!(
            "{} rows in one request; at most {MAX_ROWS}",
            table.rows.len()
        )));
    }
    let batch = table.batch()?;
    let label = format!("{}@{}", version.model.name, version.version);
    // A column the rows lack is a bad request here (not a missing object).
    let indices = runbase_udfs::inference::bind_columns(&spec, &batch.schema(), &label)
        .map_err(|e| bad(udfs_error(e).message))?;
    let columns = runbase_udfs::inference::pick(&batch, &indices);
    let device = runbase_udfs::inference::device_for(&spec, None).map_err(udfs_error)?;
    let model = inference
        .load(&version, &spec, device)
        .await
        .map_err(udfs_error)?;
    let out = inference
        .predict(model, columns, false)
        .await
        .map_err(udfs_error)?;
    let prediction = out
        .first()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the model gave no prediction"))?;
    Ok(Json(json!({
        "predictions": values_json(prediction)?,
        "model": label,
    })))
}

/// An error of the inference path as an API error.
fn udfs_error(e: runbase_udfs::Error) -> ApiError {
    match e {
        runbase_udfs::Error::Engine(e) => ApiError::from(e),
        other => ApiError::new(ErrorCode::InvalidArgument, other.to_string()),
    }
}

/// An array's values as JSON (numbers, strings, lists), via Arrow's JSON writer.
fn values_json(array: &ArrayRef) -> Result<Vec<Value>, ApiError> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "p",
        array.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema, vec![array.clone()])
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let mut buf = Vec::new();
    {
        let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut buf);
        writer
            .write(&batch)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        writer
            .finish()
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    }
    if buf.is_empty() {
        return Ok(vec![]);
    }
    let rows: Vec<Map<String, Value>> = serde_json::from_slice(&buf)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    Ok(rows
        .into_iter()
        .map(|mut r| r.remove("p").unwrap_or(Value::Null))
        .collect())
}

/// Rows to score: column names and one value per column per row.
#[derive(Debug, Default, PartialEq)]
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl Table {
    /// From MLflow's JSON shapes; `inputs` names the model's columns in order (for rows
    /// given as bare lists).
    fn from_json(value: Value, inputs: &[String]) -> Result<Self, ApiError> {
        let Value::Object(mut body) = value else {
            return Err(bad(
                "expected a JSON object with dataframe_split, dataframe_records, inputs or instances",
            ));
        };
        if let Some(split) = body.remove("dataframe_split") {
            let columns: Vec<String> = split
                .get("columns")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("dataframe_split needs \"columns\""))?
                .iter()
                .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string))
                .collect();
            let data = split
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("dataframe_split needs \"data\""))?;
            let rows = data
                .iter()
                .map(|row| match row {
                    Value::Array(values) if values.len() == columns.len() => Ok(values.clone()),
                    _ => Err(bad(format!(
                        "each row of dataframe_split.data must be a list of {} values",
                        columns.len()
                    ))),
                })
                .collect::<Result<_, _>>()?;
            return Ok(Table { columns, rows });
        }
        if let Some(records) = body.remove("dataframe_records") {
            return Self::records(records, inputs);
        }
        if let Some(instances) = body.remove("inputs").or_else(|| body.remove("instances")) {
            if let Value::Object(columnar) = instances {
                let columns: Vec<String> = columnar.keys().cloned().collect();
                let lists: Vec<&Vec<Value>> = columnar
                    .values()
                    .map(|v| {
                        v.as_array()
                            .ok_or_else(|| bad("each input column must be a list"))
                    })
                    .collect::<Result<_, _>>()?;
                let n = lists.first().map_or(0, |l| l.len());
                if lists.iter().any(|l| l.len() != n) {
                    return Err(bad("every input column must have as many values"));
                }
                let rows = (0..n)
                    .map(|i| lists.iter().map(|l| l[i].clone()).collect())
                    .collect();
                return Ok(Table { columns, rows });
            }
            return Self::records(instances, inputs);
        }
        Err(bad(
            "expected dataframe_split, dataframe_records, inputs or instances",
        ))
    }

    /// A list of rows: objects (by column name) or lists (in the model's input order).
    fn records(records: Value, inputs: &[String]) -> Result<Self, ApiError> {
        let Value::Array(records) = records else {
            return Err(bad("expected a list of rows"));
        };
        let mut columns: Vec<String> = Vec::new();
        if records.iter().all(Value::is_array) {
            let rows = records
                .into_iter()
                .map(|r| match r {
                    Value::Array(values) if values.len() == inputs.len() => Ok(values),
                    _ => Err(bad(format!(
                        "a row given as a list must hold the model's {} inputs ({})",
                        inputs.len(),
                        inputs.join(", ")
                    ))),
                })
                .collect::<Result<_, _>>()?;
            return Ok(Table {
                columns: inputs.to_vec(),
                rows,
            });
        }
        let objects: Vec<Map<String, Value>> = records
            .into_iter()
            .map(|r| match r {
                Value::Object(m) => Ok(m),
                _ => Err(bad("rows must all be objects or all be lists")),
            })
            .collect::<Result<_, _>>()?;
        for o in &objects {
            for k in o.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
        let rows = objects
            .iter()
            .map(|o| {
                columns
                    .iter()
                    .map(|c| o.get(c).cloned().unwrap_or(Value::Null))
                    .collect()
            })
            .collect();
        Ok(Table { columns, rows })
    }

    /// From CSV with a header row; fields that parse as numbers are numbers.
    fn from_csv(body: &[u8]) -> Result<Self, ApiError> {
        let text = std::str::from_utf8(body).map_err(|_| bad("the CSV is not UTF-8"))?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines
            .next()
            .ok_or_else(|| bad("the CSV has no header row"))?;
        let columns: Vec<String> = split_csv(header)?.into_iter().collect();
        let rows = lines
            .map(|line| {
                let fields = split_csv(line)?;
                if fields.len() != columns.len() {
                    return Err(bad(format!(
                        "a CSV row has {} fields; the header has {}",
                        fields.len(),
                        columns.len()
                    )));
                }
                Ok(fields
                    .into_iter()
                    .map(|f| {
                        if f.is_empty() {
                            Value::Null
                        } else {
                            f.parse::<f64>().map_or(Value::String(f), |x| json!(x))
                        }
                    })
                    .collect())
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(Table { columns, rows })
    }

    /// The rows as one Arrow batch, each column typed by its first non-null value
    /// (numbers → float64, booleans, text, lists of numbers).
    fn batch(&self) -> Result<RecordBatch, ApiError> {
        let mut fields = Vec::with_capacity(self.columns.len());
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (i, name) in self.columns.iter().enumerate() {
            let values = self.rows.iter().map(|r| &r[i]);
            let first = self.rows.iter().map(|r| &r[i]).find(|v| !v.is_null());
            let wrong = |v: &Value| {
                bad(format!(
                    "column \"{name}\" mixes types: {v} among {}",
                    first.map_or("nulls".to_string(), |f| f.to_string())
                ))
            };
            let array: ArrayRef = match first {
                Some(Value::Bool(_)) => {
                    let mut b = BooleanBuilder::with_capacity(self.rows.len());
                    for v in values {
                        match v {
                            Value::Bool(x) => b.append_value(*x),
                            Value::Null => b.append_null(),
                            other => return Err(wrong(other)),
                        }
                    }
                    Arc::new(b.finish())
                }
                Some(Value::String(_)) => {
                    let mut b = StringBuilder::new();
                    for v in values {
                        match v {
                            Value::String(s) => b.append_value(s),
                            Value::Null => b.append_null(),
                            other => b.append_value(other.to_string()),
                        }
                    }
                    Arc::new(b.finish())
                }
                Some(Value::Array(_)) => {
                    let mut b = ListBuilder::new(Float64Builder::new());
                    for v in values {
                        match v {
                            Value::Array(xs) => {
                                for x in xs {
                                    b.values().append_option(x.as_f64());
                                }
                                b.append(true);
                            }
                            Value::Null => b.append(false),
                            other => return Err(wrong(other)),
                        }
                    }
                    Arc::new(b.finish())
                }
                Some(Value::Object(_)) => {
                    return Err(bad(format!("column \"{name}\" holds objects")));
                }
                // Numbers, and columns of nulls only.
                _ => {
                    let mut b = Float64Builder::with_capacity(self.rows.len());
                    for v in values {
                        match v {
                            Value::Number(n) => b.append_option(n.as_f64()),
                            Value::Null => b.append_null(),
                            Value::String(s) if s == "NaN" => b.append_value(f64::NAN),
                            other => return Err(wrong(other)),
                        }
                    }
                    Arc::new(b.finish())
                }
            };
            fields.push(Field::new(name, array.data_type().clone(), true));
            arrays.push(array);
        }
        if arrays.is_empty() {
            return Err(bad("no columns to score"));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| bad(format!("the rows do not form a table: {e}")))
    }
}

/// One CSV line's fields (RFC 4180 quoting: `"a,b"`, `""` for a quote).
fn split_csv(line: &str) -> Result<Vec<String>, ApiError> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return Err(bad("a CSV field's quote is not closed"));
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mlflow_shape_becomes_the_same_table() {
        let inputs = vec!["a".to_string(), "b".to_string()];
        let want = Table {
            columns: inputs.clone(),
            rows: vec![vec![json!(1.0), json!(2.0)], vec![json!(3.0), json!(4.0)]],
        };
        for body in [
            json!({"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0], [3.0, 4.0]]}}),
            json!({"dataframe_records": [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]}),
            json!({"inputs": [[1.0, 2.0], [3.0, 4.0]]}),
            json!({"instances": [{"a": 1.0, "b": 2.0}, {"b": 4.0, "a": 3.0}]}),
            json!({"inputs": {"a": [1.0, 3.0], "b": [2.0, 4.0]}}),
        ] {
            assert_eq!(
                Table::from_json(body.clone(), &inputs).expect("table"),
                want,
                "{body}"
            );
        }
        let csv = Table::from_csv(b"a,b\n1,2\r\n3,4\n").expect("csv");
        assert_eq!(csv, want);
        for bad_body in [
            json!([1, 2]),
            json!({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}),
            json!({"inputs": [[1.0]]}),
            json!({"inputs": {"a": [1.0], "b": []}}),
            json!({"nothing": 1}),
        ] {
            assert!(
                Table::from_json(bad_body.clone(), &inputs).is_err(),
                "{bad_body}"
            );
        }
    }

    #[test]
    fn columns_are_typed_by_their_values() {
        let t = Table {
            columns: vec!["x".into(), "c".into(), "v".into(), "f".into()],
            rows: vec![
                vec![json!(1), json!("red"), json!([1.0, 2.0]), json!(true)],
                vec![Value::Null, Value::Null, Value::Null, json!(false)],
            ],
        };
        let b = t.batch().expect("batch");
        let types: Vec<String> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(types[0], "Float64");
        assert_eq!(types[1], "Utf8");
        assert!(types[2].starts_with("List"), "{}", types[2]);
        assert_eq!(types[3], "Boolean");
        let mixed = Table {
            columns: vec!["x".into()],
            rows: vec![vec![json!(1)], vec![json!({"a": 1})]],
        };
        assert!(mixed.batch().is_err());
        assert_eq!(
            split_csv(r#"a,"b,c","d""e""#).expect("csv"),
            ["a", "b,c", "d\"e"]
        );
        assert!(split_csv(r#"a,"b"#).is_err());
    }
}
