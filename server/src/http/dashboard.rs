//! The dashboard: HTML pages and their assets, embedded in the binary (nothing is
//! fetched from elsewhere, at build or run time). Every page has its own URL and is the
//! same HTML shell: `app.js` reads the path, fetches what the page shows from `/api/v1/`
//! and follows `/api/v1/events` for live updates. Navigation is by ordinary links.
//!
//! Pages: `/` (experiments), `/experiments/{name}` (runs), `/runs/{id}`, `/compare?runs=`,
//! `/models`, `/jobs`, `/tables`, `/tables/{name}`, `/query`, `/login`.
//!
//! Pages and assets go out with a strict Content-Security-Policy (`default-src 'self'`),
//! which also shows that nothing is loaded from a CDN.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const INDEX: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");
const UPLOT_JS: &str = include_str!("../../assets/vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/vendor/uplot/uPlot.min.css");
const FAVICON: &str = include_str!("../../assets/favicon.svg");
const UPLOT_LICENSE: &str = include_str!("../../assets/vendor/uplot/LICENSE");

/// The shell with the version stamped into asset URLs, so a new binary's assets are
/// never mistaken for a cached old one.
static PAGE: LazyLock<String> =
    LazyLock::new(|| INDEX.replace("{{VERSION}}", env!("CARGO_PKG_VERSION")));

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

/// The dashboard's routes: pages and `/assets/…`.
pub(super) fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for path in [
        "/",
        "/experiments/{name}",
        "/runs/{id}",
        "/compare",
        "/models",
        "/jobs",
        "/tables",
        "/tables/{name}",
        "/query",
        "/login",
    ] {
        router = router.route(path, get(page));
    }
    router
        .route(
            "/assets/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/favicon.svg",
            get(|| asset(FAVICON, "image/svg+xml")),
        )
        .route(
            "/assets/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/assets/uPlot.iife.min.js",
            get(|| asset(UPLOT_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/uPlot.min.css",
            get(|| asset(UPLOT_CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/assets/uPlot.LICENSE.txt",
            get(|| asset(UPLOT_LICENSE, "text/plain; charset=utf-8")),
        )
}

fn secured(mut response: Response, content_type: &'static str, cache: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Any page: the shell (the script renders the page the path names).
async fn page() -> Response {
    secured(
        (StatusCode::OK, PAGE.as_str()).into_response(),
        "text/html; charset=utf-8",
        "no-cache",
    )
}

/// An embedded asset; its URL carries the version, so it may be cached for long.
async fn asset(body: &'static str, content_type: &'static str) -> Response {
    secured(
        (StatusCode::OK, body).into_response(),
        content_type,
        "public, max-age=86400",
    )
}
