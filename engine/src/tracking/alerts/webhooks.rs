//! Webhooks of alert rules: which targets the server allows, and the record of each
//! delivery (`runbase.alert_deliveries`). The server sends them (`server/src/webhooks.rs`).

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::*;

/// One webhook delivery of an event: what `runbase.alert_deliveries` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The alert.
    pub alert: String,
    /// The run the event was about.
    pub run_id: Uuid,
    /// Where it was POSTed.
    pub url: String,
    /// When the last attempt ended, in microseconds since the epoch.
    pub at_us: i64,
    /// Attempts made.
    pub attempts: u32,
    /// Whether the receiver took it (a 2xx answer).
    pub delivered: bool,
    /// Why the last attempt failed, when it did.
    pub error: Option<String>,
}

impl Tracking {
    /// Sets the URL prefixes alert webhooks may target; none (the default) refuses every
    /// rule with a webhook.
    pub fn allow_webhooks(&self, prefixes: Vec<String>) {
        *self
            .alerts()
            .webhook_allow
            .write()
            .unwrap_or_else(|p| p.into_inner()) = prefixes;
    }

    /// Whether a webhook may POST to `url`: an allowed entry's scheme and host match
    /// exactly, its port if it names one (any port if not), and its path is a prefix of
    /// the URL's on a `/` boundary; a URL with a user name or password never matches.
    pub fn webhook_allowed(&self, url: &str) -> bool {
        let Ok(target) = url::Url::parse(url) else {
            return false;
        };
        if !target.username().is_empty() || target.password().is_some() {
            return false;
        }
        self.alerts()
            .webhook_allow
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|entry| url::Url::parse(entry).ok())
            .any(|allowed| webhook_matches(&allowed, &target))
    }

    /// Records how a webhook delivery ended.
    pub fn record_webhook_delivery(&self, delivery: &WebhookDelivery) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_ALERTS)?,
            self.timed_key(DELIVERY_PREFIX, delivery.at_us),
            serde_json::to_vec(delivery).map_err(|e| Error::corrupt("webhook delivery", e))?,
        );
        self.commit(batch)
    }

    /// Every webhook delivery, oldest first.
    pub fn webhook_deliveries(&self) -> Result<Vec<WebhookDelivery>> {
        self.scan_alert_records(DELIVERY_PREFIX, "webhook delivery")
    }
}

/// Whether `target` is under the allowed URL `allowed` (see [`Tracking::webhook_allowed`]).
fn webhook_matches(allowed: &url::Url, target: &url::Url) -> bool {
    if allowed.scheme() != target.scheme() || allowed.host_str() != target.host_str() {
        return false;
    }
    if allowed.port().is_some() && allowed.port_or_known_default() != target.port_or_known_default()
    {
        return false;
    }
    let prefix = allowed.path();
    let path = target.path();
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix)
            && (prefix.ends_with('/') || path[prefix.len()..].starts_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_allowlist_matches_whole_hosts_and_path_segments() {
        let ok = |allowed: &str, target: &str| {
            webhook_matches(
                &url::Url::parse(allowed).expect("allowed"),
                &url::Url::parse(target).expect("target"),
            )
        };
        assert!(ok(
            "https://hooks.slack.com/",
            "https://hooks.slack.com/services/x"
        ));
        assert!(ok(
            "https://hooks.slack.com",
            "https://hooks.slack.com/services/x"
        ));
        assert!(!ok(
            "https://hooks.slack.com",
            "https://hooks.slack.com.evil.net/x"
        ));
        assert!(!ok("https://hooks.slack.com/", "http://hooks.slack.com/x"));
        assert!(ok("http://127.0.0.1/", "http://127.0.0.1:8080/x"));
        assert!(!ok("http://127.0.0.1:9000/", "http://127.0.0.1:8080/x"));
        assert!(ok("http://a/hooks", "http://a/hooks/1"));
        assert!(!ok("http://a/hooks", "http://a/hooksmith"));
    }
}
