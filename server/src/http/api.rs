//! The JSON API under `/api/v1/` that the dashboard's pages (and scripts) read:
//! experiments, one run, and one metric's history downsampled for a chart.
//!
//! Every read touches RocksDB, so each handler does its work on the blocking pool.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use runbase_engine::error::ErrorCode;
use runbase_engine::tracking::Tracking;
use runbase_engine::tracking::series::{SeriesAxis, SeriesQuery};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiAccess, ApiError, AppState};

/// Buckets a series gets when the request does not say (about a chart's width).
const DEFAULT_POINTS: usize = 1_000;

/// The `/api/v1/` routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/experiments", get(experiments))
        .route("/api/v1/runs/{run_id}", get(run))
        .route("/api/v1/runs/{run_id}/metric", get(metric))
}

/// Runs `f` over the tracking store on the blocking pool, when the API is open.
async fn blocking<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Tracking) -> Result<T, ApiError> + Send + 'static,
{
    if state.api == ApiAccess::Closed {
        return Err(ApiError::new(
            ErrorCode::AuthenticationFailed,
            "the /api/v1 endpoints have no login yet and are closed while the server checks \
             passwords (--auth other than trust); query the runbase.* tables over PostgreSQL",
        ));
    }
    let tracking = state.db.tracking().clone();
    tokio::task::spawn_blocking(move || f(&tracking))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("reading tracking: {e}")))?
}

fn parse_run(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!("invalid run id \"{id}\": expected a UUID"),
        )
    })
}

/// `GET /api/v1/experiments`: every experiment with its run count, running count and last
/// activity (the latest start or end of one of its runs), newest activity first.
async fn experiments(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    blocking(&state, |t| {
        let mut out = Vec::new();
        for e in t.experiments()? {
            let (mut runs, mut running, mut last) = (0u64, 0u64, e.created_at_us);
            for id in t.runs_of_experiment(&e.name)? {
                let Some(r) = t.run(&id)? else { continue };
                runs += 1;
                if r.status == runbase_engine::tracking::RunStatus::Running {
                    running += 1;
                }
                last = last.max(r.ended_at_us.unwrap_or(r.started_at_us));
            }
            out.push(json!({
                "experiment_id": e.id,
                "name": e.name,
                "description": e.description,
                "created_at_us": e.created_at_us,
                "run_count": runs,
                "running_count": running,
                "last_activity_us": last,
            }));
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
        let mut children = Vec::new();
        for child in t.runs_of_experiment(&run.experiment)? {
            if let Some(c) = t.run(&child)?
                && c.parent_run_id == Some(id)
            {
                children.push(json!({ "run_id": c.run_id, "name": c.name, "status": c.status }));
            }
        }
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
        Ok(Json(json!({
            "run": run,
            "params": params,
            "tags": tags,
            "inputs": inputs,
            "metrics": metrics,
            "children": children,
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
    Path(run_id): Path<String>,
    params: Result<Query<MetricParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_run(&run_id)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
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
            let mut response = body.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use runbase_engine::Database;
    use runbase_engine::tracking::{MetricPoint, NewRun};

    /// `GET path` from `addr` over a plain socket, off the async workers: (status line, body).
    async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream.write_all(request.as_bytes()).expect("send");
            let mut response = String::new();
            stream.read_to_string(&mut response).expect("read");
            let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
            let status = head.lines().next().unwrap_or_default().to_string();
            (status, body.to_string())
        })
        .await
        .expect("request")
    }

    fn json(body: &str) -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn experiments_run_and_downsampled_series_with_csv_and_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::open_dir(dir.path()).await.expect("open");
        let t = db.tracking().clone();
        let run = tokio::task::spawn_blocking(move || {
            t.create_experiment("exp", None).expect("experiment");
            let run = t
                .start_run(
                    "exp",
                    NewRun {
                        name: Some("r1".into()),
                        params: vec![("lr".into(), "0.1".into())],
                        ..Default::default()
                    },
                )
                .expect("run");
            // 20,000 points of a ramp with one spike the downsampling must keep.
            let points: Vec<MetricPoint> = (0..20_000)
                .map(|i| MetricPoint {
                    run: run.run_id,
                    key: "train/loss".into(),
                    step: Some(i),
                    ts_us: Some(1_000_000 + i),
                    value: if i == 12_345 {
                        99.0
                    } else {
                        1.0 / (1.0 + i as f64)
                    },
                })
                .collect();
            t.log_metrics(&points).expect("log");
            run.run_id
        })
        .await
        .expect("setup");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, shutdown) = crate::supervisor::shutdown_channel();
        let server = tokio::spawn(super::super::serve(
            db.clone(),
            listener,
            shutdown,
            std::time::Duration::from_secs(5),
            super::super::ApiAccess::Open,
        ));

        let (status, body) = get(addr, "/api/v1/experiments").await;
        assert!(status.contains("200"), "{status} {body}");
        let e = json(&body);
        assert_eq!(e["experiments"][0]["name"], "exp");
        assert_eq!(e["experiments"][0]["run_count"], 1);
        assert_eq!(e["experiments"][0]["running_count"], 1);

        let (status, body) = get(addr, &format!("/api/v1/runs/{run}")).await;
        assert!(status.contains("200"), "{status} {body}");
        let r = json(&body);
        assert_eq!(r["run"]["name"], "r1");
        assert_eq!(r["params"]["lr"], "0.1");
        assert_eq!(r["metrics"][0]["key"], "train/loss");
        assert_eq!(r["metrics"][0]["step"], 19_999);

        let path = format!("/api/v1/runs/{run}/metric?key=train/loss&points=100");
        let (status, body) = get(addr, &path).await;
        assert!(status.contains("200"), "{status} {body}");
        let s = json(&body);
        assert_eq!(s["total"], 20_000);
        assert_eq!(s["downsampled"], true);
        let values = s["value"].as_array().expect("values");
        assert!(
            values.len() <= 400 && values.len() >= 100,
            "{}",
            values.len()
        );
        assert!(values.iter().any(|v| v == 99.0), "the spike survives");

        // A zoomed range comes back at full resolution.
        let path =
            format!("/api/v1/runs/{run}/metric?key=train/loss&points=100&from=12300&to=12399");
        let s = json(&get(addr, &path).await.1);
        assert_eq!(s["total"], 100);
        assert_eq!(s["downsampled"], false);
        assert_eq!(s["step"][0], 12_300);

        let path = format!("/api/v1/runs/{run}/metric?key=train/loss&format=csv&from=0&to=2");
        let (status, body) = get(addr, &path).await;
        assert!(status.contains("200"), "{status} {body}");
        assert_eq!(
            body,
            "step,timestamp_us,value\n0,1000000,1\n1,1000001,0.5\n2,1000002,0.3333333333333333\n"
        );

        for (path, code, error) in [
            ("/api/v1/runs/nope".to_string(), "400", "invalid_argument"),
            (
                format!("/api/v1/runs/{}", uuid::Uuid::nil()),
                "404",
                "object_not_found",
            ),
            (
                format!("/api/v1/runs/{run}/metric"),
                "400",
                "invalid_argument",
            ),
            (
                format!("/api/v1/runs/{run}/metric?key=k&points=0"),
                "400",
                "invalid_argument",
            ),
            (
                format!("/api/v1/runs/{run}/metric?key=k&x=epoch"),
                "400",
                "invalid_argument",
            ),
            (
                format!("/api/v1/runs/{run}/metric?key=k&points=x"),
                "400",
                "invalid_argument",
            ),
        ] {
            let (status, body) = get(addr, &path).await;
            assert!(status.contains(code), "{path}: {status} {body}");
            assert_eq!(json(&body)["error_code"], error, "{path}");
        }

        stop.trigger();
        server.await.expect("task").expect("serve");

        // With passwords checked, the API stays closed (there is no HTTP login yet).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, shutdown) = crate::supervisor::shutdown_channel();
        let server = tokio::spawn(super::super::serve(
            db.clone(),
            listener,
            shutdown,
            std::time::Duration::from_secs(5),
            super::super::ApiAccess::Closed,
        ));
        let (status, body) = get(addr, &format!("/api/v1/runs/{run}")).await;
        assert!(status.contains("401"), "{status} {body}");
        assert_eq!(json(&body)["error_code"], "authentication_failed");
        stop.trigger();
        server.await.expect("task").expect("serve");
    }
}
