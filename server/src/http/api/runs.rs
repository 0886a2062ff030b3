//! `GET /api/v1/experiments/{name}/runs`: the runs table, filtered, sorted and paged on
//! the server; `GET /api/v1/experiments/{name}/keys`: the columns it can show.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use runbase_engine::error::ErrorCode;
use runbase_engine::tracking::search::{
    MAX_PAGE, RunColumns, RunFilter, check_filter, search_runs,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rows::rows_json;
use super::{ApiError, AppState, Viewer, blocking};

/// Rows a page has when the request does not say.
const DEFAULT_LIMIT: usize = 50;
/// How long one search may take.
const SEARCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Most params, metrics and tags one request may show (each is read for every run).
const MAX_COLUMNS: usize = 256;

/// The query string of [`runs`].
#[derive(Debug, Deserialize)]
pub(super) struct RunsParams {
    /// Comma-separated `params.x`, `metrics.x`, `tags.x` columns to show.
    columns: Option<String>,
    filter: Option<String>,
    order: Option<String>,
    desc: Option<bool>,
    offset: Option<usize>,
    limit: Option<usize>,
}

fn missing_experiment(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ObjectNotFound,
        format!("experiment \"{name}\" does not exist"),
    )
}

/// `GET /api/v1/experiments/{name}/runs?columns=&filter=&order=&desc=&offset=&limit=`:
/// one page of the experiment's runs, with the params, metrics and tags asked for (and
/// those the filter and the sort use), and how many runs match in all.
pub(super) async fn runs(
    State(state): State<AppState>,
    _viewer: Viewer,
    Path(name): Path<String>,
    params: Result<Query<RunsParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params?;
    let mut columns = RunColumns::default();
    for c in params.columns.as_deref().unwrap_or("").split(',') {
        columns.add(c.trim());
    }
    let filter = params.filter.filter(|f| !f.trim().is_empty());
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
    if let Some(order) = &params.order {
        columns.add(order);
    }
    let asked = columns.params.len() + columns.metrics.len() + columns.tags.len();
    if asked > MAX_COLUMNS {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("{asked} columns asked for; at most {MAX_COLUMNS} at once"),
        ));
    }
    let search = RunFilter {
        filter,
        order_by: params.order,
        descending: params.desc.unwrap_or(true),
        offset: params.offset.unwrap_or(0),
        limit: params.limit.unwrap_or(DEFAULT_LIMIT),
    };
    let handle = tokio::runtime::Handle::current();
    blocking(&state, move |t| {
        if t.experiment(&name)?.is_none() {
            return Err(missing_experiment(&name));
        }
        let frame = t.runs_frame(&name, &columns)?;
        // A few thousand rows in memory: sorted here, off the async workers, within a
        // time limit (the filter is only comparisons, but the table may be large).
        let page = handle
            .block_on(async {
                tokio::time::timeout(SEARCH_TIMEOUT, search_runs(frame, &search)).await
            })
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::Timeout,
                    format!(
                        "the runs search ran longer than {} s",
                        SEARCH_TIMEOUT.as_secs()
                    ),
                )
            })??;
        let mut body = rows_json(&page.rows.schema(), &[page.rows])?;
        body["total"] = json!(page.total);
        body["offset"] = json!(search.offset);
        body["limit"] = json!(search.limit.clamp(1, MAX_PAGE));
        body["experiment"] = json!(name);
        Ok(Json(body))
    })
    .await
}

/// `GET /api/v1/experiments/{name}/keys`: the param, metric and tag keys of the
/// experiment's newest runs, for a column picker.
pub(super) async fn keys(
    State(state): State<AppState>,
    _viewer: Viewer,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(&state, move |t| {
        if t.experiment(&name)?.is_none() {
            return Err(missing_experiment(&name));
        }
        let keys = t.experiment_keys(&name)?;
        Ok(Json(json!({
            "params": keys.params,
            "metrics": keys.metrics,
            "tags": keys.tags,
        })))
    })
    .await
}
