//! The HTTP front end (axum over HTTP/1.1), JSON in and out.
//!
//! # Layout
//! - this module: the [`router`] (`GET /health`; anything else is a 404 with a JSON
//!   body) and [`serve`], the listener with graceful shutdown.
//! - [`error`]: engine errors → HTTP statuses and JSON error bodies.

pub mod error;

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::http::{Method, Uri};
use axum::routing::get;
use runbase_engine::error::ErrorCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::supervisor::Shutdown;

pub use error::ApiError;

/// The routes of the HTTP front end.
pub fn router() -> Router {
    Router::new()
        .route("/health", get(health))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
}

/// `GET /health`: the server is up and serving.
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Any path the router does not know: 404, with the usual JSON error body.
async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::ObjectNotFound,
        format!("no such endpoint: {method} {}", uri.path()),
    )
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

/// Serves HTTP clients on `listener` until `shutdown` resolves; then stops accepting
/// (closing the listener), closes idle connections, lets requests in flight finish for up
/// to `grace`, and returns.
pub async fn serve(
    listener: TcpListener,
    shutdown: Shutdown,
    grace: Duration,
) -> std::io::Result<()> {
    let server = axum::serve(listener, router()).with_graceful_shutdown(shutdown.signaled());
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_unknown_routes_and_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, shutdown) = crate::supervisor::shutdown_channel();
        let server = tokio::spawn(serve(listener, shutdown, Duration::from_secs(5)));

        let ok = tokio::task::spawn_blocking(move || {
            exchange(
                addr,
                "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
        })
        .await
        .expect("request");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("application/json"), "{ok}");
        assert!(ok.ends_with(r#"{"status":"ok"}"#), "{ok}");

        let missing = tokio::task::spawn_blocking(move || {
            exchange(
                addr,
                "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
        })
        .await
        .expect("request");
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
