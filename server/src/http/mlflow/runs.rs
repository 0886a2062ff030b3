//! `runs/*` and `metrics/get-history`: creating, reading, updating and searching runs,
//! and logging params, metrics, tags, dataset inputs and model outputs to them.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use datafusion::arrow::array::Array;
use runbase_engine::error::ErrorCode;
use runbase_engine::tracking::search::{RunColumns, RunFilter, RunIds, check_filter, search_runs};
use runbase_engine::tracking::{LogMode, MetricPoint, NewRun, Run, RunStatus, RunUpdate, Tracking};
use serde_json::{Value, json};
use uuid::Uuid;

use super::super::AppState;
use super::super::auth::Caller;
use super::experiments::tag_pairs;
use super::{
    Fields, MlflowError, blocking, double_json, double_of, empty, existing_run, experiment_by_id,
    int_of, ms, parse_run, run_info, run_json, set_next_page,
};

/// Longest param value MLflow keeps; longer values are cut to it.
const MAX_PARAM_CHARS: usize = 6000;
/// log-batch limits, as MLflow's.
const MAX_BATCH_METRICS: usize = 1000;
const MAX_BATCH_PARAMS: usize = 100;
const MAX_BATCH_TAGS: usize = 100;
const MAX_BATCH_ITEMS: usize = 1000;
/// Points one get-history page holds when the client does not say.
const HISTORY_PAGE: usize = 25_000;
/// Longest a runs search may take.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The key prefix of a run's dataset inputs in the `mlflow` records.
pub(super) fn input_prefix(run: &Uuid) -> String {
    format!("input/{}/", run.simple())
}

/// The key prefix of a run's model outputs in the `mlflow` records.
pub(super) fn output_prefix(run: &Uuid) -> String {
    format!("output/{}/", run.simple())
}

/// A page token: the offset of the page's first row, as text.
pub(super) fn page_offset(token: Option<&str>) -> Result<usize, MlflowError> {
    match token.map(str::trim) {
        None | Some("") => Ok(0),
        Some(t) => t
            .parse()
            .map_err(|_| MlflowError::invalid(format!("Invalid page token \"{t}\""))),
    }
}

/// `POST runs/create {experiment_id, user_id, start_time, run_name, tags}` → `{"run"}`.
/// A `mlflow.parentRunId` tag makes it a child run.
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let experiment = fields.text("experiment_id")?.unwrap_or_else(|| "0".into());
    let mut tags = tag_pairs(&fields.list("tags")?)?;
    let start = fields.int("start_time")?;
    let tag = |k: &str| {
        tags.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let name = fields
        .text("run_name")?
        .filter(|n| !n.is_empty())
        .or_else(|| tag("mlflow.runName"));
    let parent = tag("mlflow.parentRunId").and_then(|p| Uuid::try_parse(p.trim()).ok());
    let user_id = fields.text("user_id")?.filter(|u| !u.is_empty());
    let user = caller
        .user
        .clone()
        .or(user_id)
        .or_else(|| tag("mlflow.user"));
    for (_, v) in &mut tags {
        truncate(v, runbase_engine::tracking::MAX_VALUE_LEN);
    }
    blocking(&state, move |t| {
        let e = experiment_by_id(t, &experiment)?;
        let parent = match parent {
            Some(p) if t.run(&p)?.is_some() => Some(p),
            _ => None,
        };
        let mut run = t.start_run(
            &e.name,
            NewRun {
                name,
                parent_run_id: parent,
                kind: None,
                user_name: user,
                source: Some("mlflow".into()),
                started_at_us: start.map(|s| s.saturating_mul(1000)),
                tags,
                ..NewRun::default()
            },
        )?;
        if t.tags(&run.run_id)?
            .iter()
            .all(|(k, _)| k != "mlflow.runName")
        {
            t.set_tags(&[(run.run_id, "mlflow.runName".into(), run.name.clone())])?;
            run = existing_run(t, &run.run_id)?;
        }
        Ok(Json(json!({ "run": run_json(t, &run)? })))
    })
    .await
}

/// `GET runs/get?run_id=R` → `{"run"}`.
pub(super) async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let run = fields.run()?;
    blocking(&state, move |t| {
        let r = existing_run(t, &run)?;
        Ok(Json(json!({ "run": run_json(t, &r)? })))
    })
    .await
}

/// `POST runs/update {run_id, status, end_time, run_name}` → `{"run_info"}`. RUNNING
/// reopens an ended run (the client's `start_run(run_id=…)`).
pub(super) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let run = fields.run()?;
    let status = match fields.text("status")? {
        Some(s) if s.eq_ignore_ascii_case("SCHEDULED") => Some(RunStatus::Running),
        Some(s) => Some(RunStatus::parse(&s)?),
        None => None,
    };
    let update = RunUpdate {
        status,
        ended_at_us: fields.int("end_time")?.map(|e| e.saturating_mul(1000)),
        name: fields.text("run_name")?,
    };
    blocking(&state, move |t| {
        existing_run(t, &run)?;
        let renamed = update.name.clone().filter(|n| !n.is_empty());
        let r = t.update_run(&run, update)?;
        if let Some(name) = renamed {
            t.set_tags(&[(run, "mlflow.runName".into(), name)])?;
        }
        Ok(Json(json!({ "run_info": run_info(&r) })))
    })
    .await
}

/// `POST runs/delete {run_id}`: hides the run from searches; it can be restored.
pub(super) async fn delete(
    state: State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    set_deleted(state, caller, fields, true).await
}

/// `POST runs/restore {run_id}`.
pub(super) async fn restore(
    state: State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    set_deleted(state, caller, fields, false).await
}

async fn set_deleted(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
    deleted: bool,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let run = fields.run()?;
    blocking(&state, move |t| {
        existing_run(t, &run)?;
        t.set_run_deleted(&run, deleted)?;
        Ok(empty())
    })
    .await
}

/// One metric of a request: `{key, value, timestamp, step}`.
fn metric_point(run: Uuid, m: &Value) -> Result<MetricPoint, MlflowError> {
    let field = |k: &str| m.get(k).filter(|v| !v.is_null());
    let key = field("key")
        .and_then(Value::as_str)
        .ok_or_else(|| MlflowError::invalid("Missing value for required parameter 'key'."))?;
    let value = field("value")
        .ok_or_else(|| MlflowError::invalid("Missing value for required parameter 'value'."))
        .and_then(|v| {
            double_of(v).ok_or_else(|| {
                MlflowError::invalid(format!("Invalid value {v} for parameter 'value'"))
            })
        })?;
    let timestamp = field("timestamp")
        .ok_or_else(|| MlflowError::invalid("Missing value for required parameter 'timestamp'."))
        .and_then(|v| {
            int_of(v).ok_or_else(|| {
                MlflowError::invalid(format!("Invalid value {v} for parameter 'timestamp'"))
            })
        })?;
    let step = match field("step") {
        None => 0,
        Some(v) => int_of(v).ok_or_else(|| {
            MlflowError::invalid(format!("Invalid value {v} for parameter 'step'"))
        })?,
    };
    Ok(MetricPoint {
        run,
        key: key.to_string(),
        step: Some(step),
        ts_us: Some(timestamp.saturating_mul(1000)),
        value,
    })
}

/// Cuts `s` to at most `max` characters (on a character boundary).
fn truncate(s: &mut String, max: usize) {
    if let Some((at, _)) = s.char_indices().nth(max) {
        s.truncate(at);
    }
}

/// `[{key, value}]` params, values cut to MLflow's 6000 characters.
fn param_pairs(list: &[Value]) -> Result<Vec<(String, String)>, MlflowError> {
    let mut pairs = tag_pairs(list)?;
    for (_, v) in &mut pairs {
        truncate(v, MAX_PARAM_CHARS);
    }
    Ok(pairs)
}

/// Logs params; a key logged before with another value is MLflow's 400
/// INVALID_PARAMETER_VALUE.
fn log_params(t: &Tracking, run: &Uuid, params: &[(String, String)]) -> Result<(), MlflowError> {
    match t.log_params_in(run, params, LogMode::Mlflow) {
        Ok(_) => Ok(()),
        Err(e) if e.code() == ErrorCode::UniqueViolation => {
            Err(MlflowError::invalid(e.client_message()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Sets tags; `mlflow.runName` renames the run too.
fn set_tags(t: &Tracking, run: &Uuid, tags: Vec<(String, String)>) -> Result<(), MlflowError> {
    if tags.is_empty() {
        return Ok(());
    }
    let rename = tags
        .iter()
        .rev()
        .find(|(k, _)| k == "mlflow.runName")
        .map(|(_, v)| v.clone());
    let r = existing_run(t, run)?;
    if r.deleted {
        return Err(MlflowError::invalid(format!(
            "The run {} must be in the 'active' state. Current state is deleted.",
            run.simple()
        )));
    }
    t.set_tags(
        &tags
            .into_iter()
            .map(|(k, mut v)| {
                truncate(&mut v, runbase_engine::tracking::MAX_VALUE_LEN);
                (*run, k, v)
            })
            .collect::<Vec<_>>(),
    )?;
    if let Some(name) = rename.filter(|n| !n.is_empty()) {
        t.update_run(
            run,
            RunUpdate {
                name: Some(name),
                ..RunUpdate::default()
            },
        )?;
    }
    Ok(())
}

/// `POST runs/log-metric {run_id, key, value, timestamp, step}`. A point logged again
/// (a retry) is stored once.
pub(super) async fn log_metric(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let run = fields.run()?;
    let point = metric_point(run, &Value::Object(fields.0.clone()))?;
    blocking(&state, move |t| {
        existing_run(t, &run)?;
        t.log_metrics_in(&[point], LogMode::Mlflow)?;
        Ok(empty())
    })
    .await
}

/// `POST runs/log-parameter {run_id, key, value}`: params are write-once.
pub(super) async fn log_parameter(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let run = fields.run()?;
    let key = fields.required("key")?;
    let mut value = fields.text("value")?.unwrap_or_default();
    truncate(&mut value, MAX_PARAM_CHARS);
    blocking(&state, move |t| {
        existing_run(t, &run)?;
        log_params(t, &run, &[(key, value)])?;
        Ok(empty())
    })
    .await
}

/// `POST runs/set-tag {run_id, key, value}`: a later value wins.
pub(super) async fn set_tag(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let run = fields.run()?;
    let key = fields.required("key")?;
    let value = fields.text("value")?.unwrap_or_default();
    blocking(&state, move |t| {
        set_tags(t, &run, vec![(key, value)])?;
        Ok(empty())
    })
    .await
}

/// `POST runs/log-batch {run_id, metrics, params, tags}` with MLflow's limits (1000
/// metrics, 100 params, 100 tags, 1000 items). Retried batches add nothing twice;
/// concurrent batches (the client's asynchronous logging) all land.
pub(super) async fn log_batch(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let run = fields.run()?;
    let metrics = fields.list("metrics")?;
    let params = fields.list("params")?;
    let tags = fields.list("tags")?;
    for (what, n, max) in [
        ("metrics", metrics.len(), MAX_BATCH_METRICS),
        ("params", params.len(), MAX_BATCH_PARAMS),
        ("tags", tags.len(), MAX_BATCH_TAGS),
        (
            "items",
            metrics.len() + params.len() + tags.len(),
            MAX_BATCH_ITEMS,
        ),
    ] {
        if n > max {
            return Err(MlflowError::invalid(format!(
                "A batch logging request can contain at most {max} {what}. Got {n} {what}."
            )));
        }
    }
    let points = metrics
        .iter()
        .map(|m| metric_point(run, m))
        .collect::<Result<Vec<_>, _>>()?;
    let params = param_pairs(&params)?;
    let tags = tag_pairs(&tags)?;
    blocking(&state, move |t| {
        existing_run(t, &run)?;
        if !params.is_empty() {
            log_params(t, &run, &params)?;
        }
        if !points.is_empty() {
            t.log_metrics_in(&points, LogMode::Mlflow)?;
        }
        set_tags(t, &run, tags)?;
        Ok(empty())
    })
    .await
}

/// `POST runs/log-inputs {run_id, datasets: [{tags, dataset: {name, digest, …}}]}`: kept
/// as given and shown in the run's `inputs.dataset_inputs`.
pub(super) async fn log_inputs(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let run = fields.run()?;
    let datasets = fields.list("datasets")?;
    let mut changes = Vec::with_capacity(datasets.len());
    for input in datasets {
        let dataset = input.get("dataset").cloned().unwrap_or(Value::Null);
        let name = dataset.get("name").and_then(Value::as_str);
        let digest = dataset.get("digest").and_then(Value::as_str);
        let (Some(name), Some(digest)) = (name, digest) else {
            return Err(MlflowError::invalid(
                "a dataset input needs dataset.name and dataset.digest",
            ));
        };
        changes.push((
            format!("{}{digest}/{name}", input_prefix(&run)),
            Some(input.clone()),
        ));
    }
    blocking(&state, move |t| {
        let r = existing_run(t, &run)?;
        if r.deleted {
            return Err(MlflowError::invalid("the run is deleted"));
        }
        t.put_mlflow_records(&changes)?;
        Ok(empty())
    })
    .await
}

/// `POST runs/outputs {run_id, models: [{model_id, step}]}`: the logged models a run
/// produced, shown in its `outputs.model_outputs`.
pub(super) async fn log_outputs(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let run = fields.run()?;
    let mut changes = Vec::new();
    for m in fields.list("models")? {
        let Some(id) = m
            .get("model_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
        else {
            return Err(MlflowError::invalid("a model output needs a model_id"));
        };
        let step = match m.get("step") {
            None | Some(Value::Null) => 0,
            Some(v) => int_of(v).ok_or_else(|| {
                MlflowError::invalid(format!("a model output's step must be an integer, got {v}"))
            })?,
        };
        changes.push((
            format!("{}{id}", output_prefix(&run)),
            Some(json!({ "model_id": id, "step": step })),
        ));
    }
    blocking(&state, move |t| {
        existing_run(t, &run)?;
        t.put_mlflow_records(&changes)?;
        Ok(empty())
    })
    .await
}

/// `GET metrics/get-history?run_id=R&metric_key=K&max_results=N&page_token=T` →
/// `{"metrics": [{key, value, timestamp, step}], "next_page_token"}`, in step order.
pub(super) async fn history(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let run = fields.run()?;
    let key = fields.required("metric_key")?;
    let limit = match fields.int("max_results")? {
        None => HISTORY_PAGE,
        Some(n) if n >= 1 => usize::try_from(n).unwrap_or(HISTORY_PAGE).min(1_000_000),
        Some(n) => {
            return Err(MlflowError::invalid(format!(
                "Invalid value {n} for parameter 'max_results'"
            )));
        }
    };
    let after = match fields.text("page_token")?.filter(|t| !t.is_empty()) {
        None => None,
        Some(token) => Some(
            unhex(&token)
                .ok_or_else(|| MlflowError::invalid(format!("Invalid page token \"{token}\"")))?,
        ),
    };
    blocking(&state, move |t| {
        existing_run(t, &run)?;
        let (points, next) = t.metric_history_page(&run, &key, after.as_deref(), limit)?;
        let metrics: Vec<Value> = points
            .iter()
            .map(|p| {
                json!({
                    "key": key,
                    "value": double_json(p.value),
                    "timestamp": ms(p.ts_us),
                    "step": p.step,
                })
            })
            .collect();
        let mut out = json!({ "metrics": metrics });
        if let Some(next) = next {
            out["next_page_token"] = json!(hex(&next));
        }
        Ok(Json(out))
    })
    .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Which runs a search sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ViewType {
    Active,
    Deleted,
    All,
}

/// The column an `order_by` clause names, and whether it sorts descending.
fn order_column(clause: &str) -> Result<(String, bool), MlflowError> {
    let clause = clause.trim();
    let (expr, descending) = match clause.rsplit_once(char::is_whitespace) {
        Some((e, dir)) if dir.eq_ignore_ascii_case("desc") => (e.trim(), true),
        Some((e, dir)) if dir.eq_ignore_ascii_case("asc") => (e.trim(), false),
        _ => (clause, false),
    };
    let checked = check_filter(expr)?;
    let name = checked
        .sql
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .filter(|s| !s.contains('"'))
        .ok_or_else(|| MlflowError::invalid(format!("Invalid order_by clause '{clause}'")))?;
    Ok((name.to_string(), descending))
}

/// `POST runs/search {experiment_ids, filter, run_view_type, max_results, order_by,
/// page_token}` → `{"runs", "next_page_token"}`. The filter is MLflow's language (or
/// SQL); the first `order_by` clause sorts (default: newest first).
pub(super) async fn search(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let experiments = fields.texts("experiment_ids")?;
    let view = match fields.text("run_view_type")?.as_deref() {
        None | Some("ACTIVE_ONLY") | Some("1") => ViewType::Active,
        Some("DELETED_ONLY") | Some("2") => ViewType::Deleted,
        Some("ALL") | Some("3") => ViewType::All,
        Some(other) => {
            return Err(MlflowError::invalid(format!(
                "Invalid run_view_type \"{other}\""
            )));
        }
    };
    let max = fields.int("max_results")?.unwrap_or(1000);
    if !(1..=50_000).contains(&max) {
        return Err(MlflowError::invalid(format!(
            "Invalid value {max} for parameter 'max_results' supplied. It must be at most 50000"
        )));
    }
    let offset = page_offset(fields.text("page_token")?.as_deref())?;
    let filter = fields.text("filter")?.filter(|f| !f.trim().is_empty());
    let mut columns = RunColumns::default();
    if let Some(f) = &filter {
        let checked = check_filter(f)?;
        for (prefix, keys) in [
            ("params", &checked.columns.params),
            ("metrics", &checked.columns.metrics),
            ("tags", &checked.columns.tags),
        ] {
            for k in keys {
                columns.add(&format!("{prefix}.{k}"));
            }
        }
    }
    let order = match fields.list("order_by")?.first().and_then(Value::as_str) {
        Some(clause) => Some(order_column(clause)?),
        None => None,
    };
    if let Some((column, _)) = &order {
        columns.add(column);
    }
    let limit = usize::try_from(max)
        .unwrap_or(1000)
        .min(runbase_engine::tracking::search::MAX_PAGE);
    let search = RunFilter {
        filter,
        order_by: order.as_ref().map(|(c, _)| c.clone()),
        descending: order.as_ref().is_none_or(|(_, d)| *d),
        offset,
        limit,
    };
    let handle = tokio::runtime::Handle::current();
    blocking(&state, move |t| {
        let mut runs: HashMap<Uuid, Run> = HashMap::new();
        for id in &experiments {
            let e = experiment_by_id(t, id)?;
            for r in t.experiment_runs(&e.name)? {
                let keep = match view {
                    ViewType::Active => !r.deleted,
                    ViewType::Deleted => r.deleted,
                    ViewType::All => true,
                };
                if keep {
                    runs.insert(r.run_id, r);
                }
            }
        }
        let frame = t.frame_of_runs(runs.values().cloned().collect(), &columns, RunIds::Simple)?;
        let page = handle
            .block_on(async {
                tokio::time::timeout(SEARCH_TIMEOUT, search_runs(frame, &search)).await
            })
            .map_err(|_| {
                MlflowError::from(super::super::ApiError::new(
                    ErrorCode::Timeout,
                    format!(
                        "the runs search ran longer than {} s",
                        SEARCH_TIMEOUT.as_secs()
                    ),
                ))
            })??;
        let ids = page
            .rows
            .column_by_name("run_id")
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<datafusion::arrow::array::StringArray>()
            })
            .ok_or_else(|| MlflowError::invalid("the runs table lost its run_id column"))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids.iter().flatten() {
            let id = parse_run(id)?;
            if let Some(r) = runs.get(&id) {
                out.push(run_json(t, r)?);
            }
        }
        let mut body = json!({ "runs": out });
        set_next_page(&mut body, offset + ids.len(), page.total);
        Ok(Json(body))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by_clauses_name_columns() {
        assert_eq!(
            order_column("metrics.`val loss` DESC").expect("order"),
            ("metrics.val loss".to_string(), true)
        );
        assert_eq!(
            order_column("attributes.start_time").expect("order"),
            ("start_time".to_string(), false)
        );
        assert_eq!(
            order_column("params.lr asc").expect("order"),
            ("params.lr".to_string(), false)
        );
        assert!(order_column("1 + 1").is_err());
    }

    #[test]
    fn tokens_and_truncation() {
        assert_eq!(unhex(&hex(&[0, 255, 16])), Some(vec![0, 255, 16]));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
        assert_eq!(page_offset(Some("20")).expect("offset"), 20);
        assert!(page_offset(Some("x")).is_err());
        let mut s = "é".repeat(7000);
        truncate(&mut s, MAX_PARAM_CHARS);
        assert_eq!(s.chars().count(), MAX_PARAM_CHARS);
    }
}
