//! The HTTP front end (axum over HTTP/1.1), JSON in and out.
//!
//! # Layout
//! - this module: the [`router`] (`GET /health`, `GET /ready`, `GET /metrics`; anything
//!   else is a 404 with a JSON body) and [`serve`], the listener with graceful shutdown.
//! - `api`: the JSON API under `/api/v1/` (experiments, runs, metric series, models,
//!   jobs, tables, the query box).
//! - `events`: the live event stream (Server-Sent Events) the pages follow.
//! - `dashboard`: the pages and their embedded assets.
//! - `mlflow`: MLflow's tracking REST API and artifact proxy, for the stock client.
//! - [`auth`]: who a request acts as (open access, or a login with a session cookie).
//! - [`error`]: engine errors → HTTP statuses and JSON error bodies.

mod api;
pub mod auth;
mod dashboard;
pub mod error;
mod events;
mod mlflow;
mod scoring;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runbase_engine::Database;
use runbase_engine::error::ErrorCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::supervisor::Shutdown;

pub use auth::ApiAccess;
pub use error::ApiError;

/// What every handler reaches.
#[derive(Clone)]
struct AppState {
    db: Database,
    shutdown: Shutdown,
    api: ApiAccess,
    sessions: auth::SharedSessions,
    /// Model serving (`PREDICT`'s), for online scoring; `None` without it.
    inference: Option<Arc<runbase_udfs::inference::Inference>>,
}

/// What the HTTP front end serves besides the database.
#[derive(Clone, Default)]
pub struct HttpServices {
    /// Model serving, for online scoring (`/invocations`).
    pub inference: Option<Arc<runbase_udfs::inference::Inference>>,
}

/// The routes of the HTTP front end over `db`; `/ready` fails once `shutdown` is signaled.
/// `secure`: HTTP is served over TLS (session cookies get `Secure`).
pub fn router(
    db: Database,
    shutdown: Shutdown,
    api: ApiAccess,
    secure: bool,
    services: HttpServices,
) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/invocations", post(scoring::invocations))
        .route("/api/v1/models/{reference}/predict", post(scoring::predict))
        .merge(api::routes())
        .merge(mlflow::routes())
        .merge(dashboard::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(AppState {
            db,
            shutdown,
            api,
            sessions: std::sync::Arc::new(auth::Sessions::new(secure)),
            inference: services.inference,
        })
}

/// `GET /health`: the server is up and serving.
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: the database is open and accepting writes (200), or why not (503): the
/// server is shutting down, or RocksDB reports a background error or a write stop.
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.shutdown.is_triggered() {
        return Err(ApiError::new(
            ErrorCode::Io,
            "the server is shutting down".to_string(),
        ));
    }
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || db.ready())
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("readiness check: {e}")))??;
    Ok(Json(json!({ "status": "ready" })))
}

/// The content type of the OpenMetrics text format, which Prometheus asks for.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`: every counter in the OpenMetrics text format, for Prometheus.
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stats = state.db.stats().clone();
    // The collectors read RocksDB's properties and /proc: blocking work.
    let text = tokio::task::spawn_blocking(move || stats.encode())
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("encoding metrics: {e}")))??;
    let mut response = (StatusCode::OK, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    Ok(response)
}

/// Any path the router does not know: 404, with the usual JSON error body; a bare 404
/// under MLflow's prefixes (its client reads that as "no such endpoint" and falls back).
async fn no_route(method: Method, uri: Uri) -> Response {
    if mlflow::is_mlflow_path(uri.path()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    ApiError::new(
        ErrorCode::ObjectNotFound,
        format!("no such endpoint: {method} {}", uri.path()),
    )
    .into_response()
}

/// A known path asked with the wrong method: 405, with the usual JSON error body.
async fn method_not_allowed(method: Method, uri: Uri) -> (axum::http::StatusCode, ApiError) {
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        ApiError::new(
            ErrorCode::Unsupported,
            format!("{} does not take {method}", uri.path()),
        ),
    )
}

/// Serves HTTP clients on `listener` (over TLS with `tls`) until `shutdown` resolves; then
/// stops accepting (closing the listener), closes idle connections, lets requests in
/// flight finish for up to `grace`, and returns.
pub async fn serve(
    db: Database,
    listener: TcpListener,
    shutdown: Shutdown,
    grace: Duration,
    api: ApiAccess,
    tls: Option<tokio_rustls::TlsAcceptor>,
    services: HttpServices,
) -> std::io::Result<()> {
    let app = router(db, shutdown.clone(), api, tls.is_some(), services);
    match tls {
        Some(acceptor) => {
            let listener = tls::TlsListener::new(listener, acceptor)?;
            drain(listener, app, shutdown, grace).await
        }
        None => drain(listener, app, shutdown, grace).await,
    }
}

/// Serves `app` on `listener` until it finishes draining after `shutdown`, or `grace`
/// after it.
async fn drain<L>(
    listener: L,
    app: Router,
    shutdown: Shutdown,
    grace: Duration,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.signaled());
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = async {
            shutdown.signaled().await;
            info!("HTTP: no new connections");
            tokio::time::sleep(grace).await;
        } => {
            // Connections still busy are dropped when the process exits.
            warn!("HTTP: requests still running after the grace period are abandoned");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// Sends `request` to `addr` over a plain socket; returns the whole response.
    fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
    }

    /// `exchange` off the async workers: `GET path`, connection closed after.
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tokio::task::spawn_blocking(move || exchange(addr, &request))
            .await
            .expect("request")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_ready_metrics_unknown_routes_and_shutdown() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::open_dir(dir.path()).await.expect("open");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, shutdown) = crate::supervisor::shutdown_channel();
        let server = tokio::spawn(serve(
            db.clone(),
            listener,
            shutdown,
            Duration::from_secs(5),
            ApiAccess::Open,
            None,
            HttpServices::default(),
        ));

        let ok = get(addr, "/health").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("application/json"), "{ok}");
        assert!(ok.ends_with(r#"{"status":"ok"}"#), "{ok}");

        let missing = get(addr, "/nope").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        assert!(
            missing.contains(r#""error_code":"object_not_found""#),
            "{missing}"
        );

        let wrong = tokio::task::spawn_blocking(move || {
            exchange(addr, "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        })
        .await
        .expect("request");
        assert!(wrong.starts_with("HTTP/1.1 405"), "{wrong}");
        assert!(wrong.contains(r#""error_code":"unsupported""#), "{wrong}");

        let ready = get(addr, "/ready").await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        assert!(ready.ends_with(r#"{"status":"ready"}"#), "{ready}");

        // A statement run through the engine shows in the metrics text.
        db.session().query("SELECT 1").await.expect("query");
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("content-type: application/openmetrics-text"),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"runbase_statements_total{kind="select",result="ok"} 1"#),
            "{metrics}"
        );
        assert!(
            metrics.contains("runbase_rocksdb_sst_files_size_bytes"),
            "{metrics}"
        );
        assert!(metrics.ends_with("# EOF\n"), "{metrics}");

        stop.trigger();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops promptly")
            .expect("task")
            .expect("serve");
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "listener closed"
        );
    }
}
