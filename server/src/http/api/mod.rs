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
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))?;
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
            for id in t.runs_of_experiment(&e.name)? {
                let Some(r) = t.run(&id)? else { continue };
                runs += 1;
                if r.status == runbase_engine::tracking::RunStatus::Running {
                    running += 1;
                }
                last = last.max(r.ended_at_us.unwrap_or(r.started_at_us));
                if let Some(key) = &metric
                    && let Some((_, _, v)) = t.latest(&id, key)?
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
            let name: String = key
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.csv\"")) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_DISPOSITION, v);
            }
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
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
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
mod tests {
    use std::io::{Read, Write};

    use runbase_engine::Database;
    use runbase_engine::tracking::{MetricPoint, NewRun};

    /// `GET path` from `addr` over a plain socket, off the async workers: (status line, body).
    async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:5480\r\nConnection: close\r\n\r\n");
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

    /// `method path` with `headers` and a JSON `body`: (status line, response headers, body).
    async fn send(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (String, String, String) {
        let host = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map_or("127.0.0.1:5480", |(_, v)| *v);
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
        {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream.write_all(request.as_bytes()).expect("send");
            let mut response = String::new();
            stream.read_to_string(&mut response).expect("read");
            let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
            let status = head.lines().next().unwrap_or_default().to_string();
            (status, head.to_string(), body.to_string())
        })
        .await
        .expect("request")
    }

    /// Starts the HTTP front end over `db` with `access` on a free port.
    async fn start(
        db: &Database,
        access: super::super::ApiAccess,
    ) -> (
        std::net::SocketAddr,
        crate::supervisor::ShutdownTrigger,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
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
            access,
            None,
        ));
        (addr, stop, server)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_table_filters_sorts_pages_and_events_stream_live_points() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::open_dir(dir.path()).await.expect("open");
        let t = db.tracking().clone();
        let runs = tokio::task::spawn_blocking(move || {
            let mut runs = Vec::new();
            for i in 0..30i64 {
                let run = t
                    .start_run(
                        "sweep",
                        NewRun {
                            name: Some(format!("trial-{i:02}")),
                            params: vec![(
                                "lr".into(),
                                ["0.1", "0.01", "0.001"][i as usize % 3].into(),
                            )],
                            ..Default::default()
                        },
                    )
                    .expect("run");
                t.log_metrics(&[MetricPoint {
                    run: run.run_id,
                    key: "loss".into(),
                    step: Some(0),
                    ts_us: None,
                    value: 1.0 - i as f64 / 100.0,
                }])
                .expect("log");
                runs.push(run.run_id);
            }
            runs
        })
        .await
        .expect("setup");
        let (addr, stop, server) = start(&db, super::super::ApiAccess::Open).await;

        // Sorted by the metric ascending, second page of 10, filtered in MLflow syntax.
        let (status, body) = get(
            addr,
            "/api/v1/experiments/sweep/runs?columns=params.lr&order=metrics.loss&desc=false\
             &limit=5&offset=5&filter=params.lr%20%3D%20%270.1%27",
        )
        .await;
        assert!(status.contains("200"), "{status} {body}");
        let page = json(&body);
        assert_eq!(page["total"], 10, "{page}");
        let names: Vec<&str> = page["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        let (li, ni) = (
            names
                .iter()
                .position(|n| *n == "metrics.loss")
                .expect("loss column"),
            names
                .iter()
                .position(|n| *n == "name")
                .expect("name column"),
        );
        let rows = page["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 5);
        let losses: Vec<f64> = rows.iter().map(|r| r[li].as_f64().expect("loss")).collect();
        assert!(losses.windows(2).all(|w| w[0] <= w[1]), "{losses:?}");
        // lr = 0.1 are trials 0, 3, …, 27; highest i = lowest loss; the second page of 5
        // starts at the sixth lowest: trial-12.
        assert_eq!(rows[0][ni], "trial-12", "{page}");

        let (status, body) = get(addr, "/api/v1/experiments/sweep/keys").await;
        assert!(status.contains("200"), "{status} {body}");
        assert_eq!(json(&body)["metrics"][0], "loss");

        for (path, code) in [
            (
                "/api/v1/experiments/sweep/runs?filter=lr%20%3D%20%3D",
                "400",
            ),
            (
                "/api/v1/experiments/sweep/runs?filter=1%3B%20DROP%20TABLE%20x",
                "400",
            ),
            ("/api/v1/experiments/sweep/runs?order=nope", "400"),
            (
                "/api/v1/experiments/sweep/runs?filter=nope%20%3E%201",
                "400",
            ),
            ("/api/v1/experiments/none/runs", "404"),
            ("/api/v1/experiments?mode=avg", "400"),
            ("/api/v1/events?runs=nope", "400"),
            ("/api/v1/events?kinds=params", "400"),
        ] {
            let (status, body) = get(addr, path).await;
            assert!(status.contains(code), "{path}: {status} {body}");
            assert!(json(&body)["error_code"].is_string(), "{path}: {body}");
        }

        // The best value per experiment.
        let (_, body) = get(addr, "/api/v1/experiments?metric=loss&mode=min").await;
        assert!(
            (json(&body)["experiments"][0]["best"]
                .as_f64()
                .expect("best")
                - 0.71)
                .abs()
                < 1e-9
        );

        // The query box: rows, and no writes; one statement only.
        let (status, body) = get(
            addr,
            "/api/v1/query?sql=SELECT%201%20AS%20x%2C%20%27a%27%20AS%20y",
        )
        .await;
        assert!(status.contains("200"), "{status} {body}");
        let q = json(&body);
        assert_eq!(q["rows"], serde_json::json!([[1, "a"]]));
        assert_eq!(q["columns"][1]["name"], "y");
        let (status, body) = get(addr, "/api/v1/query?sql=CREATE%20TABLE%20t%20(a%20int)").await;
        assert!(status.contains("403"), "{status} {body}");
        let (status, body) = get(addr, "/api/v1/query?sql=SELECT%201%3B%20SELECT%202").await;
        assert!(status.contains("400"), "{status} {body}");

        // State-changing requests need the CSRF token, even with open access.
        let (status, _, body) = send(
            addr,
            "POST",
            &format!("/api/v1/jobs/{}/cancel", runs[0]),
            &[],
            "",
        )
        .await;
        assert!(status.contains("403"), "{status} {body}");
        let (_, body) = get(addr, "/api/v1/whoami").await;
        let csrf = json(&body)["csrf_token"]
            .as_str()
            .expect("token")
            .to_string();
        let (status, _, body) = send(
            addr,
            "POST",
            &format!("/api/v1/jobs/{}/cancel", runs[0]),
            &[("X-CSRF-Token", &csrf)],
            "",
        )
        .await;
        assert!(
            status.contains("404"),
            "no training of that run: {status} {body}"
        );

        // Open access answers requests addressed to this machine only (DNS rebinding).
        let (status, _, body) = send(
            addr,
            "GET",
            "/api/v1/whoami",
            &[("Host", "evil.example")],
            "",
        )
        .await;
        assert!(status.contains("403"), "{status} {body}");

        // Live events: a stream for one run gets its points as they commit.
        let run = runs[1];
        let path = format!("/api/v1/events?runs={run}");
        let (subscribed, ready) = std::sync::mpsc::channel();
        let reader = tokio::task::spawn_blocking(move || {
            use std::io::{BufRead, BufReader};
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .expect("timeout");
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:5480\r\n\r\n"
            )
            .expect("send");
            let mut lines = BufReader::new(stream).lines();
            let mut seen = Vec::new();
            while let Some(Ok(line)) = lines.next() {
                if line == "event: ready" {
                    let _ = subscribed.send(());
                }
                let done = line.starts_with("data: ") && line.contains(r#""type":"metrics""#);
                seen.push(line);
                if done {
                    break;
                }
            }
            seen
        });
        // Logged once the stream is subscribed (its `ready` event).
        tokio::task::spawn_blocking(move || ready.recv_timeout(std::time::Duration::from_secs(10)))
            .await
            .expect("wait")
            .expect("the stream said ready");
        let t = db.tracking().clone();
        let other = runs[2];
        tokio::task::spawn_blocking(move || {
            for (r, v) in [(other, 5.0), (run, 7.5)] {
                t.log_metrics(&[MetricPoint {
                    run: r,
                    key: "loss".into(),
                    step: Some(1),
                    ts_us: Some(42),
                    value: v,
                }])
                .expect("log");
            }
        })
        .await
        .expect("log");
        let seen = reader.await.expect("reader").join("\n");
        assert!(seen.contains("content-type: text/event-stream"), "{seen}");
        assert!(seen.contains("event: ready"), "{seen}");
        assert!(seen.contains("event: metrics"), "{seen}");
        assert!(seen.contains(r#""value":[7.5]"#), "{seen}");
        assert!(
            !seen.contains(r#""value":[5.0]"#),
            "the other run's point is filtered out: {seen}"
        );

        stop.trigger();
        server.await.expect("task").expect("serve");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn login_sessions_and_the_read_only_role() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::open_dir(dir.path()).await.expect("open");
        db.session()
            .sql("CREATE USER viewer WITH READONLY PASSWORD 'v-secret'")
            .await
            .expect("user");
        let (addr, stop, server) = start(&db, super::super::ApiAccess::Login).await;

        let (status, body) = get(addr, "/api/v1/experiments").await;
        assert!(status.contains("401"), "{status} {body}");
        // Pages and assets load without a login (the page then asks for one).
        let (status, body) = get(addr, "/experiments/x").await;
        assert!(
            status.contains("200") && body.contains("/assets/app.js"),
            "{status}"
        );
        let (status, _) = get(addr, "/assets/uPlot.iife.min.js").await;
        assert!(status.contains("200"), "{status}");

        for bad in [
            r#"{"user": "viewer", "password": "wrong"}"#,
            r#"{"user": "nobody", "password": "v-secret"}"#,
        ] {
            let (status, _, body) = send(addr, "POST", "/api/v1/login", &[], bad).await;
            assert!(status.contains("401"), "{status} {body}");
        }
        let (status, _, body) = send(addr, "POST", "/api/v1/login", &[], "{").await;
        assert!(status.contains("400"), "{status} {body}");
        let (status, head, body) = send(
            addr,
            "POST",
            "/api/v1/login",
            &[],
            r#"{"user": "viewer", "password": "v-secret"}"#,
        )
        .await;
        assert!(status.contains("200"), "{status} {body}");
        let cookie_line = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie"))
            .expect("cookie");
        assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"));
        assert!(!cookie_line.contains("Secure"), "not over plain HTTP");
        let session = cookie_line
            .split_once("runbase_session=")
            .and_then(|(_, v)| v.split(';').next())
            .expect("session")
            .to_string();
        let cookie = format!("runbase_session={session}");
        let login = json(&body);
        assert_eq!(login["role"], "readonly");
        let csrf = login["csrf_token"].as_str().expect("csrf").to_string();

        let (status, _, body) = send(
            addr,
            "GET",
            "/api/v1/experiments",
            &[("Cookie", &cookie)],
            "",
        )
        .await;
        assert!(status.contains("200"), "{status} {body}");
        // A read-only user cannot cancel, even with the token.
        let (status, _, body) = send(
            addr,
            "POST",
            &format!("/api/v1/jobs/{}/cancel", uuid::Uuid::nil()),
            &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
            "",
        )
        .await;
        assert!(status.contains("403"), "{status} {body}");
        // A role change applies at once; a password change ends the session.
        db.session()
            .sql("ALTER USER viewer READWRITE")
            .await
            .expect("alter role");
        let (_, _, body) = send(addr, "GET", "/api/v1/whoami", &[("Cookie", &cookie)], "").await;
        assert_eq!(json(&body)["role"], "readwrite", "{body}");
        db.session()
            .sql("ALTER USER viewer PASSWORD 'other-secret'")
            .await
            .expect("alter password");
        let (status, ..) = send(addr, "GET", "/api/v1/whoami", &[("Cookie", &cookie)], "").await;
        assert!(status.contains("401"), "{status}");
        let (status, head, body) = send(
            addr,
            "POST",
            "/api/v1/login",
            &[],
            r#"{"user": "viewer", "password": "other-secret"}"#,
        )
        .await;
        assert!(status.contains("200"), "{status} {body}");
        let cookie = format!(
            "runbase_session={}",
            head.split_once("runbase_session=")
                .and_then(|(_, v)| v.split(';').next())
                .expect("session")
        );
        let csrf = json(&body)["csrf_token"]
            .as_str()
            .expect("csrf")
            .to_string();

        // A live stream of this session ends when the session does.
        let (subscribed, ready) = std::sync::mpsc::channel();
        let stream_cookie = cookie.clone();
        let stream = tokio::task::spawn_blocking(move || {
            use std::io::{BufRead, BufReader};
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .expect("timeout");
            write!(
                stream,
                "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {stream_cookie}\r\n\
                 Connection: close\r\n\r\n"
            )
            .expect("send");
            let mut lines = BufReader::new(stream).lines();
            let mut ended = false;
            loop {
                match lines.next() {
                    Some(Ok(line)) => {
                        if line == "event: ready" {
                            let _ = subscribed.send(());
                        }
                    }
                    // The server closed the stream.
                    None => {
                        ended = true;
                        break;
                    }
                    Some(Err(_)) => break,
                }
            }
            ended
        });
        tokio::task::spawn_blocking(move || ready.recv_timeout(std::time::Duration::from_secs(10)))
            .await
            .expect("wait")
            .expect("the stream said ready");

        // A made-up session is refused; logout ends the real one.
        let (status, ..) = send(
            addr,
            "GET",
            "/api/v1/whoami",
            &[("Cookie", "runbase_session=forged")],
            "",
        )
        .await;
        assert!(status.contains("401"), "{status}");
        let (status, ..) = send(
            addr,
            "POST",
            "/api/v1/logout",
            &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
            "",
        )
        .await;
        assert!(status.contains("200"), "{status}");
        let (status, ..) = send(addr, "GET", "/api/v1/whoami", &[("Cookie", &cookie)], "").await;
        assert!(status.contains("401"), "{status}");
        assert!(
            stream.await.expect("stream reader"),
            "the stream closed after logout, well before its 20 s read timeout"
        );

        stop.trigger();
        server.await.expect("task").expect("serve");
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
            None,
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

        // With passwords checked, the API needs a login.
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
            super::super::ApiAccess::Login,
            None,
        ));
        let (status, body) = get(addr, &format!("/api/v1/runs/{run}")).await;
        assert!(status.contains("401"), "{status} {body}");
        assert_eq!(json(&body)["error_code"], "authentication_failed");
        stop.trigger();
        server.await.expect("task").expect("serve");
    }
}
