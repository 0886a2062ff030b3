//! Alert webhooks: every alert event whose rule names a webhook is POSTed there as JSON
//! (with a Slack-compatible `text` field), off the write path.
//!
//! The sender subscribes to the engine's alert events, so a slow or dead receiver never
//! slows the writes that fire alerts: each delivery is its own task, with a timeout per
//! attempt and retries with backoff, and how it ended is recorded
//! (`runbase.alert_deliveries`). Targets are restricted to the URL prefixes of
//! `--alert-webhook-allow`, checked when a rule is created and again here.

use std::sync::Arc;
use std::time::Duration;

use runbase_engine::WeakDatabase;
use runbase_engine::tracking::alerts::{AlertEvent, WebhookDelivery};
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use crate::supervisor::Shutdown;

/// How long one POST may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per event.
const ATTEMPTS: u32 = 4;
/// The wait before the second attempt; doubled before each later one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Delivers the alert events of `events` (subscribed before the task starts, so none
/// fired meanwhile is missed) to their webhooks until `shutdown`.
pub async fn deliver(
    db: WeakDatabase,
    mut events: tokio::sync::broadcast::Receiver<Arc<AlertEvent>>,
    shutdown: Shutdown,
) {
    let client = match reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(%e, "alert webhooks are off: the HTTP client did not start");
            return;
        }
    };
    let stop = shutdown.signaled();
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            () = &mut stop => return,
            event = events.recv() => event,
        };
        match event {
            Ok(event) if event.webhook.is_some() => {
                tokio::spawn(send(client.clone(), db.clone(), event));
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                warn!(
                    missed = n,
                    "alert webhooks fell behind; some events were not sent"
                );
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// POSTs one event, retrying with backoff, and records how it ended. Holds the database
/// only while it reads or records (a delivery in flight never keeps it open at shutdown).
async fn send(client: reqwest::Client, db: WeakDatabase, event: Arc<AlertEvent>) {
    let Some(url) = event.webhook.clone() else {
        return;
    };
    let mut attempts = 0;
    let mut error = None;
    let allowed = db
        .upgrade()
        .is_ok_and(|db| db.tracking().webhook_allowed(&url));
    if !allowed {
        error = Some("the server no longer allows this webhook (--alert-webhook-allow)".into());
    } else {
        let body = event.payload();
        let mut backoff = FIRST_BACKOFF;
        while attempts < ATTEMPTS {
            attempts += 1;
            let outcome = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            match outcome {
                Ok(r) if r.status().is_success() => {
                    error = None;
                    break;
                }
                Ok(r) => error = Some(format!("the receiver answered {}", r.status())),
                Err(e) => error = Some(e.to_string()),
            }
            if attempts < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
    let delivered = error.is_none();
    match &error {
        None => info!(
            alert = event.alert,
            url, attempts, "alert webhook delivered"
        ),
        Some(e) => warn!(alert = event.alert, url, attempts, error = %e, "alert webhook failed"),
    }
    let record = WebhookDelivery {
        alert: event.alert.clone(),
        run_id: event.run_id,
        url,
        at_us: chrono_now_us(),
        attempts,
        delivered,
        error,
    };
    let Ok(db) = db.upgrade() else {
        return;
    };
    let recorded =
        tokio::task::spawn_blocking(move || db.tracking().record_webhook_delivery(&record)).await;
    if let Ok(Err(e)) = recorded {
        warn!(%e, "could not record a webhook delivery");
    }
}

fn chrono_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
