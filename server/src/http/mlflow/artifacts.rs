//! The artifact proxy `/api/2.0/mlflow-artifacts/artifacts/…`: files the client uploads
//! (PUT), lists and downloads (GET), on runbase's object store under `mlflow-artifacts/`.
//! A file under `<experiment>/<run>/artifacts/` is also recorded as the run's artifact,
//! so `runbase.artifacts` and the dashboard show it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::AppState;
use super::super::auth::Caller;
use super::{Fields, MlflowError};

/// Largest file one PUT takes (held in memory while it is stored).
pub(super) const MAX_ARTIFACT_BYTES: usize = 1 << 30;

/// `PUT artifacts/<path>` with the file's bytes as the body.
pub(super) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let tracking = state.db.tracking().clone();
    let record = tracking.put_mlflow_artifact(&path, body).await?;
    if let Some((run, file, artifact)) = record {
        tokio::task::spawn_blocking(move || {
            tracking.record_mlflow_artifact(&run, &file, &artifact)
        })
        .await
        .map_err(|e| MlflowError::invalid(format!("recording the artifact: {e}")))??;
    }
    Ok(Json(json!({})))
}

/// `GET artifacts/<path>`: the file's bytes.
pub(super) async fn download(
    State(state): State<AppState>,
    _caller: Caller,
    Path(path): Path<String>,
) -> Result<Response, MlflowError> {
    let bytes = state.db.tracking().get_mlflow_artifact(&path).await?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// `GET artifacts?path=<dir>` → `{"files": [{path, is_dir, file_size}]}` (names within
/// the directory), or `{}` when it is empty or missing.
pub(super) async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let path = fields.text("path")?.unwrap_or_default();
    let entries = state.db.tracking().list_mlflow_artifacts(&path).await?;
    if entries.is_empty() {
        return Ok(Json(json!({})));
    }
    let files: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut f = json!({ "path": e.name, "is_dir": e.is_dir });
            if let Some(size) = e.size_bytes {
                f["file_size"] = json!(size);
            }
            f
        })
        .collect();
    Ok(Json(json!({ "files": files })))
}
