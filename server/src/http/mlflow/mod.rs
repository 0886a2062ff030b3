//! MLflow's tracking REST API, so the stock `mlflow` client logs into runbase unchanged
//! (`MLFLOW_TRACKING_URI=http://127.0.0.1:5480`).
//!
//! Routes under `/api/2.0/mlflow/` (and the same under `/ajax-api/2.0/mlflow/`), and the
//! artifact proxy under `/api/2.0/mlflow-artifacts/`. An MLflow run is a runbase run (same
//! id, written as 32 hex digits), its params, metrics and tags runbase's own, so a run
//! logged here is at once in `runbase.metrics` and the dashboard, and a TRAIN run is seen
//! by `MlflowClient.search_runs`. Wire format as MLflow's: protobuf JSON, times in
//! milliseconds, NaN and infinities as the strings `"NaN"`, `"Infinity"`,
//! `"-Infinity"`, errors as `{"error_code", "message"}` with MLflow's statuses.
//!
//! - this file: the routes, the request fields and the JSON shapes of runs and
//!   experiments;
//! - `experiments`, `runs` (logging, history, search), `artifacts` (the proxy),
//!   `models` (logged models and the model registry).

mod artifacts;
mod experiments;
mod models;
mod runs;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runbase_engine::tracking::{Experiment, Run, RunStatus, Tracking};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::MlflowError;

/// Most bytes of one JSON request (MLflow's log-batch limit is 1 MB of payload).
const MAX_JSON_BYTES: usize = 4 << 20;

/// The MLflow routes, each under both prefixes MLflow serves.
pub(super) fn routes() -> Router<AppState> {
    let api = Router::new()
        .route("/experiments/create", post(experiments::create))
        .route("/experiments/get", get(experiments::get))
        .route("/experiments/get-by-name", get(experiments::get_by_name))
        .route(
            "/experiments/search",
            post(experiments::search).get(experiments::search),
        )
        .route(
            "/experiments/set-experiment-tag",
            post(experiments::set_tag),
        )
        .route("/runs/create", post(runs::create))
        .route("/runs/get", get(runs::get))
        .route("/runs/update", post(runs::update))
        .route("/runs/delete", post(runs::delete))
        .route("/runs/restore", post(runs::restore))
        .route("/runs/search", post(runs::search))
        .route("/runs/log-metric", post(runs::log_metric))
        .route("/runs/log-parameter", post(runs::log_parameter))
        .route("/runs/set-tag", post(runs::set_tag))
        .route("/runs/log-batch", post(runs::log_batch))
        .route("/runs/log-inputs", post(runs::log_inputs))
        .route("/runs/outputs", post(runs::log_outputs))
        .route("/metrics/get-history", get(runs::history))
        .route("/logged-models", post(models::create_logged))
        .route("/logged-models/search", post(models::search_logged))
        .route(
            "/logged-models/{id}",
            get(models::get_logged)
                .patch(models::finalize_logged)
                .delete(models::delete_logged),
        )
        .route(
            "/logged-models/{id}/tags",
            axum::routing::patch(models::tag_logged),
        )
        .route("/registered-models/create", post(models::create_registered))
        .route("/registered-models/get", get(models::get_registered))
        .route("/registered-models/search", get(models::search_registered))
        .route(
            "/registered-models/alias",
            post(models::set_alias)
                .get(models::get_by_alias)
                .delete(models::delete_alias),
        )
        .route(
            "/registered-models/get-latest-versions",
            post(models::latest_versions).get(models::latest_versions),
        )
        .route("/model-versions/create", post(models::create_version))
        .route("/model-versions/get", get(models::get_version))
        .route("/model-versions/search", get(models::search_versions))
        .route(
            "/model-versions/get-download-uri",
            get(models::download_uri),
        )
        .route("/model-versions/set-tag", post(models::set_version_tag));
    let artifacts = Router::new()
        .route("/artifacts", get(artifacts::list))
        .route(
            "/artifacts/{*path}",
            get(artifacts::download).put(artifacts::upload).layer(
                axum::extract::DefaultBodyLimit::max(artifacts::MAX_ARTIFACT_BYTES),
            ),
        );
    Router::new()
        .nest("/api/2.0/mlflow", api.clone())
        .nest("/ajax-api/2.0/mlflow", api)
        .nest("/api/2.0/mlflow-artifacts", artifacts.clone())
        .nest("/ajax-api/2.0/mlflow-artifacts", artifacts)
}

/// Whether `path` is under one of MLflow's prefixes: unknown routes there are a bare 404,
/// which the client reads as "endpoint not found" and falls back from.
pub(super) fn is_mlflow_path(path: &str) -> bool {
    ["/api/2.0/mlflow", "/ajax-api/", "/api/3.0/mlflow"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// A request's fields: the JSON object of a POST, PATCH or DELETE (which must be
/// `application/json`, as MLflow requires), the query string of a GET.
#[derive(Debug, Default)]
pub(super) struct Fields(Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            let query = req.uri().query().unwrap_or("");
            let mut map = Map::new();
            for (k, v) in url_pairs(query) {
                map.insert(k, Value::String(v));
            }
            return Ok(Fields(map));
        }
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if body.is_empty() {
            return Ok(Fields::default());
        }
        if !json {
            return Err(MlflowError {
                status: axum::http::StatusCode::BAD_REQUEST,
                code: "BAD_REQUEST",
                message: "the body must be JSON, sent as Content-Type: application/json".into(),
            }
            .into_response());
        }
        if body.len() > MAX_JSON_BYTES {
            return Err(MlflowError::invalid(format!(
                "the body is {} bytes; at most {MAX_JSON_BYTES}",
                body.len()
            ))
            .into_response());
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => Ok(Fields(map)),
            Ok(_) => Err(MlflowError::invalid("the body must be a JSON object").into_response()),
            Err(e) => Err(MlflowError::invalid(format!("invalid JSON body: {e}")).into_response()),
        }
    }
}

/// The pairs of a query string, percent-decoded.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decodes `s` (`+` is a space, as in forms); bad escapes stay as they are.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high * 16 + low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

impl Fields {
    /// Field `key` as text, if present and not null (numbers as their text, as int64s
    /// come); an object, array or boolean is a 400.
    fn text(&self, key: &str) -> Result<Option<String>, MlflowError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => scalar_text(v).map(Some).ok_or_else(|| {
                MlflowError::invalid(format!("parameter '{key}' must be a string, got {v}"))
            }),
        }
    }

    /// Field `key` as text; a 400 when it is missing, as MLflow words it.
    fn required(&self, key: &str) -> Result<String, MlflowError> {
        self.text(key)?.ok_or_else(|| {
            MlflowError::invalid(format!("Missing value for required parameter '{key}'."))
        })
    }

    /// Field `key` as an integer (int64 may come as a JSON number or a string).
    fn int(&self, key: &str) -> Result<Option<i64>, MlflowError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => int_of(v).map(Some).ok_or_else(|| {
                MlflowError::invalid(format!("parameter '{key}' must be an integer, got {v}"))
            }),
        }
    }

    /// The run the request names, as `run_id` or `run_uuid`.
    fn run(&self) -> Result<Uuid, MlflowError> {
        let id = self
            .text("run_id")?
            .filter(|s| !s.is_empty())
            .or(self.text("run_uuid")?)
            .ok_or_else(|| {
                MlflowError::invalid("Missing value for required parameter 'run_id'.")
            })?;
        parse_run(&id)
    }

    /// Field `key` as a list of texts (numbers as their text; absent: empty).
    fn texts(&self, key: &str) -> Result<Vec<String>, MlflowError> {
        self.list(key)?
            .iter()
            .map(|v| {
                scalar_text(v).ok_or_else(|| {
                    MlflowError::invalid(format!("parameter '{key}' must list strings, got {v}"))
                })
            })
            .collect()
    }

    /// Field `key` as an array (absent: empty).
    fn list(&self, key: &str) -> Result<Vec<Value>, MlflowError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(v) => Err(MlflowError::invalid(format!(
                "parameter '{key}' must be a list, got {v}"
            ))),
        }
    }
}

/// A string field's value: a string, or a number (int64s and ids come either way); `None`
/// for an object, array, boolean or null, which MLflow refuses.
pub(super) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An int64 as protobuf JSON writes it: a number or a string of digits.
fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A double as protobuf JSON writes it: a number, or "NaN", "Infinity", "-Infinity".
fn double_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.trim() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

/// A double as MLflow answers it: NaN and infinities as strings.
fn double_json(x: f64) -> Value {
    if x.is_nan() {
        json!("NaN")
    } else if x == f64::INFINITY {
        json!("Infinity")
    } else if x == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(x)
    }
}

/// A run id in either form (32 hex digits, or hyphenated).
fn parse_run(id: &str) -> Result<Uuid, MlflowError> {
    Uuid::try_parse(id.trim())
        .map_err(|_| MlflowError::missing(format!("Run with id={id} not found")))
}

/// An experiment id: a string of digits.
fn parse_experiment_id(id: &str) -> Result<i64, MlflowError> {
    id.trim().parse().map_err(|_| {
        MlflowError::invalid(format!(
            "invalid experiment id \"{id}\": expected an integer"
        ))
    })
}

/// Runs `f` over the tracking store on the blocking pool (every call reads or writes
/// RocksDB).
async fn blocking<T, F>(state: &AppState, f: F) -> Result<T, MlflowError>
where
    T: Send + 'static,
    F: FnOnce(&Tracking) -> Result<T, MlflowError> + Send + 'static,
{
    let tracking = state.db.tracking().clone();
    tokio::task::spawn_blocking(move || f(&tracking))
        .await
        .map_err(|e| {
            MlflowError::from(super::ApiError::new(
                runbase_engine::error::ErrorCode::Internal,
                format!("tracking call: {e}"),
            ))
        })?
}

/// Now, in milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds from microseconds.
fn ms(us: i64) -> i64 {
    us.div_euclid(1000)
}

/// The experiment as MLflow shows it.
fn experiment_json(e: &Experiment) -> Value {
    let tags: Vec<Value> = e
        .tags
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect();
    let mut out = json!({
        "experiment_id": e.id.to_string(),
        "name": e.name,
        "artifact_location": format!("mlflow-artifacts:/{}", e.id),
        "lifecycle_stage": "active",
        "creation_time": ms(e.created_at_us),
        "last_update_time": ms(e.created_at_us),
        "tags": tags,
    });
    if let Some(d) = &e.description {
        out["tags"]
            .as_array_mut()
            .expect("tags is an array")
            .push(json!({ "key": "mlflow.note.content", "value": d }));
    }
    out
}

/// A run's status as MLflow names it.
fn status_name(s: RunStatus) -> &'static str {
    s.as_str()
}

/// The `info` of a run as MLflow shows it.
fn run_info(r: &Run) -> Value {
    let id = r.run_id.simple().to_string();
    let mut info = json!({
        "run_uuid": id,
        "run_id": id,
        "run_name": r.name,
        "experiment_id": r.experiment_id.to_string(),
        "user_id": r.user_name.clone().unwrap_or_default(),
        "status": status_name(r.status),
        "start_time": ms(r.started_at_us),
        "artifact_uri": format!("mlflow-artifacts:/{}/{id}/artifacts", r.experiment_id),
        "lifecycle_stage": if r.deleted { "deleted" } else { "active" },
    });
    if let Some(end) = r.ended_at_us {
        info["end_time"] = json!(ms(end));
    }
    info
}

/// A whole run as MLflow shows it: info, data (latest metrics, params, tags), inputs and
/// outputs.
fn run_json(t: &Tracking, r: &Run) -> Result<Value, MlflowError> {
    let metrics: Vec<Value> = t
        .latest_metrics(&r.run_id)?
        .into_iter()
        .map(|(key, p)| {
            json!({
                "key": key,
                "value": double_json(p.value),
                "timestamp": ms(p.ts_us),
                "step": p.step,
            })
        })
        .collect();
    let pairs = |list: Vec<(String, String)>| -> Vec<Value> {
        list.into_iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect()
    };
    let mut tags = t.tags(&r.run_id)?;
    if !tags.iter().any(|(k, _)| k == "mlflow.runName") {
        tags.push(("mlflow.runName".into(), r.name.clone()));
    }
    if let Some(parent) = r.parent_run_id
        && !tags.iter().any(|(k, _)| k == "mlflow.parentRunId")
    {
        tags.push(("mlflow.parentRunId".into(), parent.simple().to_string()));
    }
    let inputs: Vec<Value> = t
        .mlflow_records(&runs::input_prefix(&r.run_id))?
        .into_iter()
        .map(|(_, doc)| doc)
        .collect();
    let outputs: Vec<Value> = t
        .mlflow_records(&runs::output_prefix(&r.run_id))?
        .into_iter()
        .map(|(_, doc)| doc)
        .collect();
    Ok(json!({
        "info": run_info(r),
        "data": {
            "metrics": metrics,
            "params": pairs(t.params(&r.run_id)?),
            "tags": pairs(tags),
        },
        "inputs": { "dataset_inputs": inputs },
        "outputs": { "model_outputs": outputs },
    }))
}

/// The experiment with id `id`, or MLflow's 404.
fn experiment_by_id(t: &Tracking, id: &str) -> Result<Experiment, MlflowError> {
    let n = parse_experiment_id(id)?;
    t.experiment_by_id(n)?
        .ok_or_else(|| MlflowError::missing(format!("No Experiment with id={id} exists")))
}

/// The run `id`, or MLflow's 404.
fn existing_run(t: &Tracking, id: &Uuid) -> Result<Run, MlflowError> {
    t.run(id)?
        .ok_or_else(|| MlflowError::missing(format!("Run with id={} not found", id.simple())))
}

/// Adds `next_page_token` to a search answer when rows from `next` on remain of `total`.
fn set_next_page(out: &mut Value, next: usize, total: usize) {
    if next < total {
        out["next_page_token"] = json!(next.to_string());
    }
}

/// The JSON object answer `{}` of MLflow's logging calls.
fn empty() -> axum::Json<Value> {
    axum::Json(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            url_pairs("experiment_name=a%20b+c&x=%zz&y"),
            vec![
                ("experiment_name".to_string(), "a b c".to_string()),
                ("x".to_string(), "%zz".to_string()),
                ("y".to_string(), String::new()),
            ]
        );
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("a%4"), "a%4");
        assert_eq!(decode("%C3%A9"), "é");
    }

    #[test]
    fn doubles_and_ints_as_protobuf_json_has_them() {
        assert!(double_of(&json!("NaN")).is_some_and(f64::is_nan));
        assert_eq!(double_of(&json!("-Infinity")), Some(f64::NEG_INFINITY));
        assert_eq!(double_of(&json!(1.5)), Some(1.5));
        assert_eq!(double_of(&json!({})), None);
        assert_eq!(double_json(f64::NAN), json!("NaN"));
        assert_eq!(double_json(f64::INFINITY), json!("Infinity"));
        assert_eq!(int_of(&json!("123")), Some(123));
        assert_eq!(int_of(&json!(7)), Some(7));
        assert_eq!(int_of(&json!("x")), None);
        assert_eq!(ms(-1), -1);
    }
}
