//! The JSON API under `/api/v1/` that the dashboard's pages (and scripts) read:
//! experiments, the runs table (`runs`), one run, one metric's history downsampled for a
//! chart, artifacts, models, and the SQL-backed endpoints (`sql`: the query box, jobs,
//! tables). Every handler takes a [`Viewer`], so each refuses requests without a login
//! when the server checks passwords.
//!
//! Every read touches RocksDB, so each handler does its work on the blocking pool.

mod rows;
mod runs;
mod sql;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runbase_engine::error::ErrorCode;
use runbase_engine::tracking::Tracking;
use runbase_engine::tracking::series::{SeriesAxis, SeriesQuery};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::{self, Viewer};
use super::{ApiError, AppState};

/// Buckets a series gets when the request does not say (about a chart's width).
const DEFAULT_POINTS: usize = 1_000;

/// The `/api/v1/` routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/login", post(auth::login))
        .route("/api/v1/logout", post(auth::logout))
        .route("/api/v1/whoami", get(auth::whoami))
        .route("/api/v1/experiments", get(experiments))
        .route("/api/v1/experiments/{name}/runs", get(runs::runs))
        .route("/api/v1/experiments/{name}/keys", get(runs::keys))
        .route("/api/v1/runs/{run_id}", get(run))
        .route("/api/v1/runs/{run_id}/metric", get(metric))
        .route("/api/v1/runs/{run_id}/artifacts/{*path}", get(artifact))
        .route("/api/v1/models", get(models))
        .route(
            "/api/v1/models/{name}/versions/{version}/export",
            get(export_model),
        )
        .route("/api/v1/jobs", get(sql::jobs))
        .route("/api/v1/jobs/{run_id}/cancel", post(sql::cancel_job))
        .route("/api/v1/tables", get(sql::tables))
        .route("/api/v1/tables/{name}", get(sql::table))
        .route("/api/v1/query", get(sql::query_get).post(sql::query_post))
        .route("/api/v1/events", get(super::events::events))
}

/// Runs `f` over the tracking store on the blocking pool.
async fn blocking<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Tracking) -> Result<T, ApiError> + Send + 'static,
{
    let tracking = state.db.tracking().clone();
    tokio::task::spawn_blocking(move || f(&tracking))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("reading tracking: {e}")))?
}

pub(super) fn parse_run(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!("invalid run id \"{id}\": expected a UUID"),
        )
    })
}

/// The query string of [`experiments`].
#[derive(Debug, Deserialize)]
struct ExperimentsParams {
    /// A metric whose best latest value over each experiment's runs to add.
    metric: Option<String>,
    /// `min` (the default) or `max`.
    mode: Option<String>,
}

/// `GET /api/v1/experiments[?metric=K&mode=min|max]`: every experiment with its run count,
/// running count and last activity (the latest start or end of one of its runs), newest
/// activity first; with `metric`, also `best`: the lowest (or highest) latest value of
/// that metric over the experiment's runs.
async fn experiments(
    State(state): State<AppState>,
    _viewer: Viewer,
    params: Result<Query<ExperimentsParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params?;
    let highest = match params.mode.as_deref() {
        None | Some("min") => false,
        Some("max") => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("invalid mode \"{other}\": expected min or max"),
            ));
        }
    };
    let metric = params.metric.filter(|m| !m.is_empty());
    blocking(&state, move |t| {
        let mut out = Vec::new();
        for e in t.experiments()? {
            let (mut runs, mut running, mut last) = (0u64, 0u64, e.created_at_us);
            let mut best: Option<f64> = None;
            for r in t.experiment_runs(&e.name)? {
                runs += 1;
                if r.status == runbase_engine::tracking::RunStatus::Running {
                    running += 1;
                }
                last = last.max(r.ended_at_us.unwrap_or(r.started_at_us));
                if let Some(key) = &metric
                    && let Some((_, _, v)) = t.latest(&r.run_id, key)?
                    && v.is_finite()
                {
                    best = Some(match best {
                        Some(b) if highest => b.max(v),
                        Some(b) => b.min(v),
                        None => v,
                    });
                }
            }
            let mut item = json!({
                "experiment_id": e.id,
                "name": e.name,
                "description": e.description,
                "created_at_us": e.created_at_us,
                "run_count": runs,
                "running_count": running,
                "last_activity_us": last,
            });
            if metric.is_some() {
                item["best"] = json!(best);
            }
            out.push(item);
        }
        out.sort_by_key(|e| std::cmp::Reverse(e["last_activity_us"].as_i64()));
        Ok(Json(json!({ "experiments": out })))
    })
    .await
}

/// `GET /api/v1/runs/{run_id}`: the run with its params, tags, the table versions it read,
/// the latest value of each metric and its child runs.
async fn run(
    State(state): State<AppState>,
    _viewer: Viewer,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_run(&run_id)?;
    blocking(&state, move |t| {
        let run = t
            .run(&id)?
            .ok_or_else(|| ApiError::new(ErrorCode::ObjectNotFound, format!("no run {id}")))?;
        let metrics: Vec<Value> = t
            .latest_metrics(&id)?
            .into_iter()
            .map(|(key, p)| {
                let value = if p.value.is_finite() {
                    json!(p.value)
                } else {
                    Value::Null
                };
                json!({ "key": key, "step": p.step, "ts_us": p.ts_us, "value": value })
            })
            .collect();
        let children: Vec<Value> = t
            .experiment_runs(&run.experiment)?
            .into_iter()
            .filter(|c| c.parent_run_id == Some(id))
            .map(|c| json!({ "run_id": c.run_id, "name": c.name, "status": c.status }))
            .collect();
        let params: serde_json::Map<String, Value> = t
            .params(&id)?
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let tags: serde_json::Map<String, Value> = t
            .tags(&id)?
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let inputs: Vec<Value> = t
            .inputs(&id)?
            .into_iter()
            .map(|(table, version)| json!({ "table": table, "version": version }))
            .collect();
        let artifacts: Vec<Value> = t
            .artifacts(&id)?
            .into_iter()
            .map(
                |(path, a)| json!({ "path": path, "size_bytes": a.size_bytes, "sha256": a.sha256 }),
            )
            .collect();
        let models: Vec<Value> = t
            .models()?
            .into_iter()
            .filter(|m| m.model.run_id == Some(id))
            .map(|m| json!({ "name": m.model.name, "version": m.version }))
            .collect();
        // Alert events are few (each rule fires once per run): a scan is cheap.
        let alerts: Vec<Value> = t
            .alert_events()?
            .into_iter()
            .filter(|e| e.run_id == id)
            .map(|e| {
                json!({
                    "alert": e.alert,
                    "kind": e.kind,
                    "message": e.message,
                    "value": e.value.filter(|v| v.is_finite()),
                    "action": e.action,
                    "fired_at_us": e.fired_at_us,
                })
            })
            .collect();
        Ok(Json(json!({
            "run": run,
            "params": params,
            "tags": tags,
            "inputs": inputs,
            "metrics": metrics,
            "children": children,
            "artifacts": artifacts,
            "models": models,
            "alerts": alerts,
            "stopped_by": t.stopped_by(&id),
        })))
    })
    .await
}

/// The query string of [`metric`].
#[derive(Debug, Deserialize)]
struct MetricParams {
    key: String,
    points: Option<usize>,
    x: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    format: Option<String>,
}

/// `GET /api/v1/runs/{run_id}/metric?key=K[&points=N][&x=step|time][&from=A][&to=B][&format=csv]`:
/// metric `K`'s points with x in `[A, B]`, downsampled with M4 to about `N` buckets (1,000
/// when absent) as JSON columns; with `format=csv`, every point in the range, not downsampled.
async fn metric(
    State(state): State<AppState>,
    _viewer: Viewer,
    Path(run_id): Path<String>,
    params: Result<Query<MetricParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_run(&run_id)?;
    let Query(params) = params?;
    let axis = SeriesAxis::parse(params.x.as_deref().unwrap_or("step"))?;
    let query = SeriesQuery {
        axis,
        from: params.from,
        to: params.to,
        buckets: params.points.unwrap_or(DEFAULT_POINTS),
    };
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("invalid format \"{other}\": expected json or csv"),
            ));
        }
    };
    let key = params.key;
    blocking(&state, move |t| {
        if t.run(&id)?.is_none() {
            return Err(ApiError::new(
                ErrorCode::ObjectNotFound,
                format!("no run {id}"),
            ));
        }
        if csv {
            let points = t.metric_points(&id, &key, &query)?;
            let mut body = String::with_capacity(32 * points.len() + 32);
            body.push_str("step,timestamp_us,value\n");
            for p in points {
                body.push_str(&format!("{},{},{}\n", p.step, p.ts_us, p.value));
            }
            let response = attachment(
                body.into_response(),
                "text/csv; charset=utf-8",
                &format!("{key}.csv"),
            );
            return Ok(response);
        }
        let series = t.metric_series(&id, &key, &query)?;
        let (mut step, mut ts, mut value) = (Vec::new(), Vec::new(), Vec::new());
        for p in &series.points {
            step.push(p.step);
            ts.push(p.ts_us);
            // JSON has no NaN or infinity: those go out as null.
            value.push(if p.value.is_finite() {
                json!(p.value)
            } else {
                Value::Null
            });
        }
        Ok(Json(json!({
            "run_id": id,
            "key": key,
            "x": axis,
            "total": series.total,
            "downsampled": series.downsampled,
            "step": step,
            "ts_us": ts,
            "value": value,
        }))
        .into_response())
    })
    .await
}

/// `GET /api/v1/runs/{run_id}/artifacts/{path}`: the artifact's bytes, as a download.
async fn artifact(
    State(state): State<AppState>,
    _viewer: Viewer,
    Path((run_id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_run(&run_id)?;
    let tracking = state.db.tracking().clone();
    let bytes = tracking.artifact(&id, &path).await?;
    Ok(download(bytes, path.rsplit('/').next().unwrap_or(&path)))
}

/// `bytes` as an attachment called `name`.
fn download(bytes: Vec<u8>, name: &str) -> Response {
    attachment(bytes.into_response(), "application/octet-stream", name)
}

/// `response` as a download of type `content_type` called `name` (characters other than
/// letters, digits, `.`, `-` and `_` become `_`).
fn attachment(mut response: Response, content_type: &'static str, name: &str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// `GET /api/v1/models`: every registered model version (newest first within a name),
/// and the aliases.
async fn models(State(state): State<AppState>, _viewer: Viewer) -> Result<Json<Value>, ApiError> {
    blocking(&state, |t| {
        let mut versions = t.models()?;
        versions.sort_by(|a, b| {
            a.model
                .name
                .cmp(&b.model.name)
                .then(b.version.cmp(&a.version))
        });
        let aliases = t.model_aliases()?;
        Ok(Json(json!({ "models": versions, "aliases": aliases })))
    })
    .await
}

/// `GET /api/v1/models/{name}/versions/{version}/export`: the version's TorchScript file.
async fn export_model(
    State(state): State<AppState>,
    _viewer: Viewer,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let version: i64 = version.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!("invalid version \"{version}\": expected a number"),
        )
    })?;
    let n = name.clone();
    let model = blocking(&state, move |t| Ok(t.model_version(&n, version)?)).await?;
    let bytes = state.db.tracking().model_blob(&model).await?;
    Ok(download(bytes, &format!("{name}-v{version}.pt")))
}

#[cfg(test)]
mod tests;
