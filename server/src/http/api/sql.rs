//! The endpoints answered by SQL over a read-only session: the query box
//! (`/api/v1/query`), running trainings (`/api/v1/jobs`) and user tables
//! (`/api/v1/tables`). The session is the read-only role whoever asks, so nothing said
//! here can change the database; cancelling a training is its own endpoint.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use futures::StreamExt;
use runbase_engine::error::ErrorCode;
use runbase_engine::users::Role;
use runbase_engine::{Database, Identity, QueryOutput};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::rows::rows_json;
use super::{ApiError, AppState, Viewer, parse_run};

/// Rows the query box returns when the request does not say.
const DEFAULT_ROWS: usize = 10_000;
/// Most rows one answer holds.
const MAX_ROWS: usize = 100_000;
/// How long one query may run.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Rows a table preview shows.
const PREVIEW_ROWS: usize = 100;

/// Runs one read-only query; returns its rows as JSON, at most `limit` of them, and
/// whether more were left out.
pub(super) async fn read_only_query(
    db: &Database,
    user: &str,
    sql: &str,
    limit: usize,
) -> Result<Value, ApiError> {
    let session = db.session_for(&Identity {
        user: user.to_string(),
        role: Role::Readonly,
        application: Some("runbase dashboard".into()),
    });
    let mut statements = session.parse(sql)?;
    if statements.len() != 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("expected one statement, found {}", statements.len()),
        ));
    }
    let run = async {
        let prepared = session.prepare(statements.remove(0)).await?;
        if !prepared.returns_rows() {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "only queries that return rows run here; use psql for anything else",
            ));
        }
        let QueryOutput::Rows(mut stream) = session.execute(&prepared, None).await? else {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "only queries that return rows run here",
            ));
        };
        let schema = stream.schema();
        let (mut batches, mut rows, mut truncated) = (Vec::new(), 0usize, false);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(runbase_engine::Error::from)?;
            if rows + batch.num_rows() > limit {
                batches.push(batch.slice(0, limit - rows));
                truncated = true;
                break;
            }
            rows += batch.num_rows();
            batches.push(batch);
        }
        let mut body = rows_json(&schema, &batches)?;
        body["truncated"] = json!(truncated);
        Ok(body)
    };
    tokio::time::timeout(QUERY_TIMEOUT, run)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Timeout,
                format!("the query ran longer than {} s", QUERY_TIMEOUT.as_secs()),
            )
        })?
}

/// The body (or query string) of [`query`].
#[derive(Debug, Deserialize)]
pub(super) struct QueryRequest {
    sql: String,
    limit: Option<usize>,
}

async fn answer(
    state: &AppState,
    viewer: &Viewer,
    request: QueryRequest,
) -> Result<Json<Value>, ApiError> {
    let limit = request.limit.unwrap_or(DEFAULT_ROWS).clamp(1, MAX_ROWS);
    Ok(Json(
        read_only_query(&state.db, &viewer.user, &request.sql, limit).await?,
    ))
}

/// `POST /api/v1/query` with `{"sql": "…", "limit": n}`: one read-only query's rows.
pub(super) async fn query_post(
    State(state): State<AppState>,
    viewer: Viewer,
    body: Result<Json<QueryRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = body?;
    answer(&state, &viewer, request).await
}

/// `GET /api/v1/query?sql=…[&limit=n]`: the same, for links and `curl`.
pub(super) async fn query_get(
    State(state): State<AppState>,
    viewer: Viewer,
    params: Result<Query<QueryRequest>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(request) = params?;
    answer(&state, &viewer, request).await
}

/// `GET /api/v1/jobs`: the trainings running or queued now (`runbase.jobs`).
pub(super) async fn jobs(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        read_only_query(
            &state.db,
            &viewer.user,
            "SELECT * FROM runbase.jobs ORDER BY started_at",
            MAX_ROWS,
        )
        .await?,
    ))
}

/// `POST /api/v1/jobs/{run_id}/cancel`: cancels that training at its next batch.
pub(super) async fn cancel_job(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    viewer.writer()?;
    let run: Uuid = parse_run(&run_id)?;
    let tracking = state.db.tracking().clone();
    if !tracking.cancel_training(&run) {
        return Err(ApiError::new(
            ErrorCode::ObjectNotFound,
            format!("no training of run {run} is going on"),
        ));
    }
    Ok(Json(json!({ "run_id": run, "cancelled": true })))
}

/// `s` as an SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `s` as an SQL identifier.
fn identifier(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `GET /api/v1/tables`: the user tables (`runbase.tables`).
pub(super) async fn tables(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        read_only_query(
            &state.db,
            &viewer.user,
            "SELECT * FROM runbase.tables ORDER BY table_schema, name",
            MAX_ROWS,
        )
        .await?,
    ))
}

/// The query string of [`table`].
#[derive(Debug, Deserialize)]
pub(super) struct TableParams {
    /// Preview this version instead of the latest.
    version: Option<i64>,
}

/// `GET /api/v1/tables/{name}[?version=N]`: the table's versions
/// (`runbase.table_versions`), newest first, and its first rows (at version `N`).
pub(super) async fn table(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    params: Result<Query<TableParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params?;
    let versions = read_only_query(
        &state.db,
        &viewer.user,
        &format!(
            "SELECT * FROM runbase.table_versions WHERE table_name = {} ORDER BY version DESC",
            literal(&name)
        ),
        MAX_ROWS,
    )
    .await?;
    let preview = read_only_query(
        &state.db,
        &viewer.user,
        &match params.version {
            Some(v) => format!(
                "SELECT * FROM table_at({}, {v}) LIMIT {PREVIEW_ROWS}",
                literal(&name)
            ),
            None => format!("SELECT * FROM {} LIMIT {PREVIEW_ROWS}", identifier(&name)),
        },
        PREVIEW_ROWS,
    )
    .await?;
    Ok(Json(json!({
        "name": name,
        "version": params.version,
        "versions": versions,
        "preview": preview,
    })))
}
