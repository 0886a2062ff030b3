//! `GET /api/v1/events`: the live stream a dashboard page follows (Server-Sent Events).
//!
//! One stream per page, filtered on the server to what the page shows:
//! `?runs=<id>,<id>` (those runs), `?experiment=<name>` (that experiment's runs),
//! `?kinds=run,metrics` (which kinds). Events:
//! - `ready`: first, with the id of the newest event so far, so a reconnect resumes from
//!   here even if nothing happened yet;
//! - `metrics`: points of one run as committed (`{"run_id", "experiment", "series":
//!   [{"key", "step", "ts_us", "value", "truncated"}]}`);
//! - `run`: a run started or changed status (`{"run": {…}}`);
//! - `reset`: events were missed (the client was away too long, or fell behind): fetch
//!   again, then keep following.
//!
//! Every event has an `id:`; a browser's `EventSource` reconnects with `Last-Event-ID`
//! and gets what it missed. A comment every 15 s keeps proxies from closing the stream.
//! Streams end when the server shuts down, and when their login session ends.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use runbase_engine::error::ErrorCode;
use runbase_engine::tracking::events::{Event, Subscription};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::auth::Viewer;
use super::{ApiError, AppState};

/// The query string of [`events`].
#[derive(Debug, Deserialize)]
pub(super) struct EventParams {
    runs: Option<String>,
    experiment: Option<String>,
    kinds: Option<String>,
    /// For clients that cannot set the `Last-Event-ID` header.
    last_event_id: Option<u64>,
}

/// What a stream lets through.
#[derive(Debug, Default)]
struct Filter {
    runs: HashSet<Uuid>,
    experiment: Option<String>,
    metrics: bool,
    run: bool,
}

impl Filter {
    fn admits(&self, e: &Event) -> bool {
        let kind = match e.name() {
            "metrics" => self.metrics,
            _ => self.run,
        };
        kind && (self.runs.is_empty() || self.runs.contains(&e.run_id()))
            && self
                .experiment
                .as_deref()
                .is_none_or(|x| x == e.experiment())
    }
}

fn sse(e: &Event) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    SseEvent::default()
        .id(e.id.to_string())
        .event(e.name())
        .data(data)
}

/// `GET /api/v1/events`: see the module's documentation.
pub(super) async fn events(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    params: Result<Query<EventParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(params) = params?;
    let mut filter = Filter {
        experiment: params.experiment.filter(|e| !e.is_empty()),
        ..Filter::default()
    };
    for id in params.runs.as_deref().unwrap_or("").split(',') {
        let id = id.trim();
        if !id.is_empty() {
            filter.runs.insert(super::api::parse_run(id)?);
        }
    }
    for kind in params.kinds.as_deref().unwrap_or("run,metrics").split(',') {
        match kind.trim() {
            "metrics" => filter.metrics = true,
            "run" => filter.run = true,
            other => {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!("invalid event kind \"{other}\": expected run or metrics"),
                ));
            }
        }
    }
    let after = match headers.get("last-event-id").map(|v| v.to_str()) {
        Some(Ok(v)) => Some(v.trim().parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("invalid Last-Event-ID \"{v}\": expected an event id"),
            )
        })?),
        Some(Err(_)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "invalid Last-Event-ID",
            ));
        }
        None => params.last_event_id,
    };
    let Subscription {
        backlog,
        gap,
        live,
        newest,
    } = state.db.tracking().events().subscribe(after);
    let filter = Arc::new(filter);

    // `ready` carries the id to resume from should the connection drop now: where the
    // client was when resuming (the backlog's own ids move it on), the newest event on
    // a fresh start or after a gap.
    let resume_from = match after {
        Some(after) if !gap => after,
        _ => newest,
    };
    let mut first = vec![
        SseEvent::default()
            .id(resume_from.to_string())
            .event("ready")
            .data("{}"),
    ];
    if gap {
        first.push(SseEvent::default().event("reset").data("{}"));
    }
    // The backlog is encoded as the client reads it, not all at once.
    let backlog_filter = filter.clone();
    let head = futures::stream::iter(first).chain(
        futures::stream::iter(backlog)
            .filter(move |e| std::future::ready(backlog_filter.admits(e)))
            .map(|e| sse(&e)),
    );
    let tail = futures::stream::unfold((live, filter), |(mut live, filter)| async move {
        loop {
            match live.recv().await {
                Ok(e) if filter.admits(&e) => return Some((sse(&e), (live, filter))),
                Ok(_) => continue,
                // Fell behind: say so; the page fetches again and keeps following.
                Err(RecvError::Lagged(_)) => {
                    let reset = SseEvent::default().event("reset").data("{}");
                    return Some((reset, (live, filter)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let shutdown = state.shutdown.clone();
    // The stream ends with the server, or with its login session (logout, expiry, a
    // dropped user, a changed password).
    let session_ended = state.sessions.ended(&viewer, state.db.clone());
    let stream = head
        .chain(tail)
        .map(Ok::<_, Infallible>)
        .take_until(async move {
            tokio::select! {
                () = shutdown.signaled() => {}
                () = session_ended => {}
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
