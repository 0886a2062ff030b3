//! Entry points for fuzzing what the front ends read off the network.
//!
//! As in `runbase_engine::fuzzing`: arbitrary bytes in, whether they were accepted out, and
//! never a panic. [`frontend`] is a PostgreSQL client's byte stream as the listener reads
//! it (the frame guard, then pgwire's decoder, then the SCRAM messages runbase parses);
//! [`http`] is one HTTP request through the real router over a real database. Driven by the
//! targets in `fuzz/` and replayed by `tests/tests/fuzz_corpus.rs`.

use std::sync::OnceLock;

use bytes::BytesMut;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};
use tokio::io::AsyncReadExt;

use crate::pg::frames::{Guarded, check_sasl_initial};

/// What the decoder expects next, as pgwire's server codec tracks it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Negotiation,
    Startup,
    Messages,
}

/// Reads `data` as a client's stream (startup packet first) through the frame guard and
/// pgwire's decoder, and passes password messages to runbase's SASL and SCRAM parsing.
/// Whether the whole stream was accepted.
pub fn frontend(data: &[u8]) -> bool {
    let mut guarded = Guarded::new(data, BytesMut::new());
    let mut passed = BytesMut::new();
    let refused = futures::executor::block_on(async {
        let mut buf = [0u8; 509];
        loop {
            match guarded.read(&mut buf).await {
                Ok(0) => return false,
                Ok(n) => passed.extend_from_slice(&buf[..n]),
                Err(_) => return true,
            }
        }
    });
    let mut phase = Phase::Negotiation;
    let mut ctx = DecodeContext::new(ProtocolVersion::default());
    let mut sasl_started = false;
    loop {
        ctx.awaiting_frontend_ssl = phase == Phase::Negotiation;
        ctx.awaiting_frontend_startup = phase != Phase::Messages;
        let message = match PgWireFrontendMessage::decode(&mut passed, &ctx) {
            Ok(Some(m)) => m,
            Ok(None) => return !refused && passed.is_empty(),
            Err(_) => return false,
        };
        match message {
            PgWireFrontendMessage::SslNegotiation(_) => phase = Phase::Startup,
            PgWireFrontendMessage::Startup(_) => phase = Phase::Messages,
            PgWireFrontendMessage::CancelRequest(_) => return !refused,
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                if !sasl_started {
                    sasl_started = true;
                    if let pgwire::messages::startup::PasswordMessageFamily::Raw(body) = &msg
                        && check_sasl_initial(body).is_err()
                    {
                        return false;
                    }
                    match msg.into_sasl_initial_response() {
                        Ok(initial) => {
                            let data = initial.data.unwrap_or_default();
                            if crate::pg::startup::client_first_nonce(&data).is_err() {
                                return false;
                            }
                        }
                        Err(_) => return false,
                    }
                } else {
                    match msg.into_sasl_response() {
                        Ok(response) => {
                            let _ = crate::pg::startup::client_final(
                                &response.data,
                                verifier(),
                                "n=u,r=abc,r=abcdef,s=c2FsdA==,i=4096",
                                "abcdef",
                            );
                        }
                        Err(_) => return false,
                    }
                }
            }
            _ => {}
        }
    }
}

/// A fixed SCRAM verifier to check fuzzed client-final-messages against (derived once:
/// it is thousands of hash rounds).
fn verifier() -> &'static runbase_engine::scram::Verifier {
    static VERIFIER: OnceLock<runbase_engine::scram::Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        runbase_engine::scram::Verifier::with_salt("secret", b"salt".to_vec(), 4096)
    })
}

/// A database and the HTTP router over it, opened once in a temporary directory.
struct HttpTarget {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    /// The open-access CSRF token, sent with every request so state changes are reached.
    csrf: String,
    _dir: tempfile::TempDir,
}

fn http_target() -> &'static HttpTarget {
    static TARGET: OnceLock<HttpTarget> = OnceLock::new();
    TARGET.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the HTTP fuzz target");
        let dir = tempfile::tempdir().expect("a temporary data directory");
        let db = runtime
            .block_on(runbase_engine::Database::open_dir(dir.path()))
            .expect("the database opens");
        let (trigger, shutdown) = crate::supervisor::shutdown_channel();
        // Never triggered: the target serves until the process ends.
        std::mem::forget(trigger);
        let router = crate::http::router(
            db,
            shutdown,
            crate::http::ApiAccess::Open,
            false,
            crate::http::HttpServices::default(),
        );
        let csrf = runtime.block_on(async {
            use tower::ServiceExt;
            let request = axum::http::Request::get("/api/v1/whoami")
                .header("host", "127.0.0.1")
                .body(axum::body::Body::empty())
                .expect("a request");
            let response = router.clone().oneshot(request).await.expect("infallible");
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("whoami's body");
            serde_json::from_slice::<serde_json::Value>(&body).expect("whoami's JSON")["csrf_token"]
                .as_str()
                .expect("a CSRF token")
                .to_string()
        });
        HttpTarget {
            runtime,
            router,
            csrf,
            _dir: dir,
        }
    })
}

/// Sends `data` as one HTTP request to the router over a real database: the first line is
/// `METHOD /path?query`, the rest the JSON body. Whether the answer was a success (2xx);
/// a 5xx for a request the server could parse is reported as a panic, as it is a bug.
pub fn http(data: &[u8]) -> bool {
    use tower::ServiceExt;
    let text = String::from_utf8_lossy(data);
    let (line, body) = text.split_once('\n').unwrap_or((&text, ""));
    let (method, uri) = line.split_once(' ').unwrap_or(("GET", line));
    let Ok(method) = axum::http::Method::from_bytes(method.as_bytes()) else {
        return false;
    };
    let target = http_target();
    let Ok(request) = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("x-csrf-token", &target.csrf)
        .body(axum::body::Body::from(body.to_string()))
    else {
        return false;
    };
    let router = target.router.clone();
    let status = target.runtime.block_on(async move {
        let response = router
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        // Read the body (a bounded while: the event stream never ends).
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            axum::body::to_bytes(response.into_body(), 1 << 24),
        )
        .await;
        status
    });
    // 500 is an internal error: a bug, whatever the request (503 and 507 are the
    // database's state, not the request's).
    assert_ne!(
        status,
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "{line} answered {status}"
    );
    status.is_success()
}
