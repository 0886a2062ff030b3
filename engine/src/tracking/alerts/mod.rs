//! Alerts: rules stored in the catalog, evaluated as tracking records are written.
//!
//! A rule ([`Rule`]) watches the runs of one experiment (or all). Metric conditions
//! (`threshold`, `not_finite`, `plateau`) are checked on each point as it is committed,
//! against a few numbers kept per rule and run, so a point costs O(rules on its metric),
//! never a scan; `run_failed` is checked when a run ends; the clock conditions (`hung`,
//! `budget`) by a once-a-second check over the RUNNING runs kept in memory. Each rule
//! fires at most once per run.
//!
//! A firing is an [`AlertEvent`]: a row of `runbase.alert_events` (in RocksDB, written
//! with the commit durability), announced to subscribers ([`Tracking::subscribe_alerts`]:
//! the PostgreSQL front end's `LISTEN runbase_alerts`, the webhook sender). A rule with
//! the action `stop` also stops the run: it raises the flag [`Tracking::should_stop`]
//! returns and sets the cancel flag of a TRAIN training it ([`Tracking::watch_stop`]).
//!
//! Layout: this file (state, evaluation, firing, storage), `rule` (the rule JSON),
//! `clock` (`hung` and `budget`), `webhooks` (allowed targets, delivery records),
//! `tables` (`runbase.alerts`, `runbase.alert_events`, `runbase.alert_deliveries`).

mod clock;
mod rule;
pub(crate) mod tables;
mod webhooks;

pub use rule::{Action, Condition, Rule, RuleSpec};
pub use webhooks::WebhookDelivery;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use super::*;
use crate::error::{Error, Result};

/// The channel `LISTEN` subscribes to for alert events.
pub const ALERT_CHANNEL: &str = "runbase_alerts";

/// How often the clock conditions (`hung`, `budget`) are checked.
pub const CLOCK_TICK: std::time::Duration = std::time::Duration::from_secs(1);

const RULE_PREFIX: &[u8] = b"r\0";
const EVENT_PREFIX: &[u8] = b"e\0";
const FIRED_PREFIX: &[u8] = b"f\0";
const STOP_PREFIX: &[u8] = b"s\0";
const DELIVERY_PREFIX: &[u8] = b"w\0";

/// The tag a stopping alert sets on the run it stopped.
pub const STOPPED_BY_TAG: &str = "stopped_by";
/// The tag a `hung` rule sets when it marks a silent run FAILED.
pub const FAILURE_REASON_TAG: &str = "runbase.failure_reason";

/// One firing of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The alert's name.
    pub alert: String,
    /// The run it fired for.
    pub run_id: Uuid,
    /// The run's experiment.
    pub experiment: String,
    /// When, in microseconds since the epoch.
    pub fired_at_us: i64,
    /// The condition (`threshold`, `plateau`, …).
    pub kind: String,
    /// What happened, for people.
    pub message: String,
    /// The metric value (or seconds, for the clock conditions) that fired it.
    pub value: Option<f64>,
    /// `notify` or `stop`.
    pub action: String,
    /// The rule's webhook, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

impl AlertEvent {
    /// The event as the JSON a `LISTEN runbase_alerts` client or a webhook receives.
    /// `text` is a one-line summary (what Slack's incoming webhooks show).
    pub fn payload(&self) -> String {
        serde_json::json!({
            "text": format!("runbase alert {}: {}", self.alert, self.message),
            "alert": self.alert,
            "run_id": self.run_id.to_string(),
            "experiment": self.experiment,
            "kind": self.kind,
            "message": self.message,
            "value": self.value.filter(|v| v.is_finite()),
            "action": self.action,
            "fired_at": chrono::DateTime::from_timestamp_micros(self.fired_at_us)
                .map(|t| t.to_rfc3339()),
        })
        .to_string()
    }
}

/// A rule as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRule {
    spec: RuleSpec,
    created_at_us: i64,
    created_by: Option<String>,
}

/// A rule with when and by whom it was made, for `runbase.alerts`.
#[derive(Debug, Clone)]
pub struct AlertInfo {
    /// The checked rule.
    pub rule: Arc<Rule>,
    /// When it was created.
    pub created_at_us: i64,
    /// Who created it.
    pub created_by: Option<String>,
}

/// What a plateau rule remembers of one run.
#[derive(Debug, Clone, Copy)]
struct Plateau {
    best: f64,
    since_best: u64,
}

/// What the clock conditions know of one RUNNING run.
#[derive(Debug, Clone)]
struct Clock {
    experiment: Arc<str>,
    started_at_us: i64,
    last_point_us: i64,
}

/// The alerts' in-memory state; one per tracking store.
pub(crate) struct Alerts {
    rules: RwLock<Arc<Vec<AlertInfo>>>,
    /// Whether any rule is a clock condition (so writes keep the clocks).
    timed: AtomicBool,
    /// Whether the clocks were filled from the RUNNING runs on disk.
    seeded: AtomicBool,
    clocks: Mutex<HashMap<Uuid, Clock>>,
    plateaus: Mutex<HashMap<(String, Uuid), Plateau>>,
    /// (alert, run) pairs that fired.
    fired: Mutex<HashSet<(String, Uuid)>>,
    /// Runs asked to stop, and by which alert.
    stops: Mutex<HashMap<Uuid, String>>,
    /// Cancel flags of the TRAIN trainings of runs.
    stop_flags: Mutex<HashMap<Uuid, Arc<AtomicBool>>>,
    events: tokio::sync::broadcast::Sender<Arc<AlertEvent>>,
    seq: AtomicU64,
    loaded: AtomicBool,
    /// URL prefixes webhooks may target (the server's `--alert-webhook-allow`).
    webhook_allow: RwLock<Vec<String>>,
    /// When the store opened: no run counts as silent since before.
    opened_at_us: i64,
    /// When each `hung` rule fired for a run, for its `mark_failed_after` grace.
    hung_since: Mutex<HashMap<(String, Uuid), i64>>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").finish_non_exhaustive()
    }
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            rules: RwLock::default(),
            timed: AtomicBool::new(false),
            seeded: AtomicBool::new(false),
            clocks: Mutex::default(),
            plateaus: Mutex::default(),
            fired: Mutex::default(),
            stops: Mutex::default(),
            stop_flags: Mutex::default(),
            events: tokio::sync::broadcast::channel(1024).0,
            seq: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            webhook_allow: RwLock::default(),
            opened_at_us: now_us(),
            hung_since: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + rest.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(rest);
    k
}

fn fired_key(alert: &str, run: &Uuid) -> Vec<u8> {
    let mut k = key(FIRED_PREFIX, alert.as_bytes());
    k.push(0);
    k.extend_from_slice(run.as_bytes());
    k
}

impl Tracking {
    fn alerts(&self) -> &Alerts {
        &self.inner.alerts
    }

    /// Reads the rules, the fired pairs and the stop requests (once, when the store opens).
    pub(crate) fn load_alerts(&self) -> Result<()> {
        let alerts = self.alerts();
        if alerts.loaded.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let cf = self.cf(CF_ALERTS)?;
        let mut rules = Vec::new();
        let mut fired = HashSet::new();
        let mut stops = HashMap::new();
        let mut it = self.db().raw_iterator_cf(cf);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if let Some(name) = k.strip_prefix(RULE_PREFIX) {
                let name = String::from_utf8_lossy(name).into_owned();
                let stored: StoredRule = serde_json::from_slice(v)
                    .map_err(|e| Error::corrupt(format!("alert {name}"), e))?;
                match Rule::from_spec(&name, stored.spec) {
                    Ok(rule) => rules.push(AlertInfo {
                        rule: Arc::new(rule),
                        created_at_us: stored.created_at_us,
                        created_by: stored.created_by,
                    }),
                    // A rule this version no longer accepts must not keep the database
                    // from opening: it is skipped (drop and create it again).
                    Err(e) => warn!(alert = name, %e, "stored alert rule skipped"),
                }
            } else if let Some(rest) = k.strip_prefix(FIRED_PREFIX) {
                if rest.len() > 17 {
                    let (name, run) = rest.split_at(rest.len() - 17);
                    if let Ok(run) = Uuid::from_slice(&run[1..]) {
                        fired.insert((String::from_utf8_lossy(name).into_owned(), run));
                    }
                }
            } else if let Some(run) = k.strip_prefix(STOP_PREFIX)
                && let Ok(run) = Uuid::from_slice(run)
            {
                stops.insert(run, String::from_utf8_lossy(v).into_owned());
            }
            it.next();
        }
        it.status()?;
        *lock(&alerts.fired) = fired;
        *lock(&alerts.stops) = stops;
        self.set_rules(rules);
        Ok(())
    }

    fn set_rules(&self, rules: Vec<AlertInfo>) {
        let alerts = self.alerts();
        let timed = rules.iter().any(|r| r.rule.condition.timed());
        *alerts.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
        alerts.timed.store(timed, Ordering::SeqCst);
    }

    fn rules(&self) -> Arc<Vec<AlertInfo>> {
        self.alerts()
            .rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The alert rules, by name.
    pub fn alert_rules(&self) -> Vec<AlertInfo> {
        let mut rules: Vec<AlertInfo> = self.rules().iter().cloned().collect();
        rules.sort_by(|a, b| a.rule.name.cmp(&b.rule.name));
        rules
    }

    /// Creates the alert `name` from the rule `json`; `created_by` is the session's user.
    pub fn create_alert(&self, name: &str, json: &str, created_by: Option<&str>) -> Result<()> {
        let rule = Rule::parse(name, json)?;
        if let Some(hook) = &rule.webhook
            && !self.webhook_allowed(hook)
        {
            return Err(Error::PermissionDenied(format!(
                "alert \"{name}\": the server does not allow webhooks to {hook} (its --alert-webhook-allow lists the URL prefixes it allows)"
            )));
        }
        if let Some(experiment) = &rule.experiment
            && self.experiment(experiment)?.is_none()
        {
            return Err(Error::ObjectNotFound(format!(
                "alert \"{name}\": experiment \"{experiment}\" does not exist"
            )));
        }
        let _guard = self.lock_experiments();
        let mut rules: Vec<AlertInfo> = self.rules().iter().cloned().collect();
        if rules.iter().any(|r| r.rule.name == name) {
            return Err(Error::DuplicateObject(format!(
                "alert \"{name}\" already exists"
            )));
        }
        let stored = StoredRule {
            spec: rule.spec.clone(),
            created_at_us: now_us(),
            created_by: created_by.map(str::to_string),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_ALERTS)?,
            key(RULE_PREFIX, name.as_bytes()),
            serde_json::to_vec(&stored).map_err(|e| Error::corrupt("alert", e))?,
        );
        self.commit(batch)?;
        info!(alert = name, kind = rule.condition.kind(), "alert created");
        rules.push(AlertInfo {
            rule: Arc::new(rule),
            created_at_us: stored.created_at_us,
            created_by: stored.created_by,
        });
        self.set_rules(rules);
        Ok(())
    }

    /// Drops the alert `name` (its events stay); false when there is none.
    pub fn drop_alert(&self, name: &str) -> Result<bool> {
        let _guard = self.lock_experiments();
        let mut rules: Vec<AlertInfo> = self.rules().iter().cloned().collect();
        let before = rules.len();
        rules.retain(|r| r.rule.name != name);
        if rules.len() == before {
            return Ok(false);
        }
        let cf = self.cf(CF_ALERTS)?;
        let mut batch = WriteBatch::default();
        batch.delete_cf(cf, key(RULE_PREFIX, name.as_bytes()));
        // Which runs it fired for goes with it: a rule made again under the name starts
        // afresh.
        let mut from = key(FIRED_PREFIX, name.as_bytes());
        from.push(0);
        let mut to = key(FIRED_PREFIX, name.as_bytes());
        to.push(1);
        batch.delete_range_cf(cf, from, to);
        self.commit(batch)?;
        let alerts = self.alerts();
        lock(&alerts.plateaus).retain(|(alert, _), _| alert != name);
        lock(&alerts.hung_since).retain(|(alert, _), _| alert != name);
        lock(&alerts.fired).retain(|(alert, _)| alert != name);
        self.set_rules(rules);
        Ok(true)
    }

    /// Every alert event, oldest first.
    pub fn alert_events(&self) -> Result<Vec<AlertEvent>> {
        self.scan_alert_records(EVENT_PREFIX, "alert event")
    }

    /// The JSON records under `prefix` of the alerts' column family, in key order.
    fn scan_alert_records<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
        what: &str,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut it = self.db().raw_iterator_cf(self.cf(CF_ALERTS)?);
        it.seek(prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            out.push(serde_json::from_slice(v).map_err(|e| Error::corrupt(what, e))?);
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// A key under `prefix` that sorts by `at_us`, unique within the process.
    fn timed_key(&self, prefix: &[u8], at_us: i64) -> Vec<u8> {
        let seq = self.alerts().seq.fetch_add(1, Ordering::Relaxed);
        let mut k = key(prefix, &keys::enc_i64(at_us));
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    /// A receiver of every alert event from now on (for `LISTEN` and webhooks). A
    /// receiver that falls more than 1,024 events behind loses the oldest.
    pub fn subscribe_alerts(&self) -> tokio::sync::broadcast::Receiver<Arc<AlertEvent>> {
        self.alerts().events.subscribe()
    }

    /// Whether an alert asked `run` to stop: what `should_stop(run_id)` answers.
    pub fn should_stop(&self, run: &Uuid) -> Result<bool> {
        Ok(self.stopped_by(run).is_some())
    }

    /// The alert that asked `run` to stop, if one did.
    pub fn stopped_by(&self, run: &Uuid) -> Option<String> {
        lock(&self.alerts().stops).get(run).cloned()
    }

    /// Registers the cancel flag of a training of `run`: a stopping alert sets it, so
    /// the training ends at its next batch. Set at once if the run was already stopped.
    /// The registration ends when the run ends.
    pub fn watch_stop(&self, run: &Uuid, flag: Arc<AtomicBool>) {
        // Registered before the check, so a stop that lands in between sets it either way.
        lock(&self.alerts().stop_flags).insert(*run, flag.clone());
        if self.stopped_by(run).is_some() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Cancels the training of `run` at its next batch (the run ends KILLED, no model is
    /// stored): what the dashboard's cancel button does. False when no training of that
    /// run is going on.
    pub fn cancel_training(&self, run: &Uuid) -> bool {
        match lock(&self.alerts().stop_flags).get(run) {
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// After `points` were committed: keeps the clocks, checks the metric conditions.
    pub(crate) fn alerts_after_points(&self, points: &[MetricPoint]) {
        let alerts = self.alerts();
        {
            // Kept whether or not a clock rule exists now, so one created later starts
            // from the truth.
            let now = now_us();
            let mut clocks = lock(&alerts.clocks);
            for p in points {
                if let Some(clock) = clocks.get_mut(&p.run) {
                    clock.last_point_us = now;
                }
            }
        }
        let rules = self.rules();
        if !rules.iter().any(|r| r.rule.condition.metric().is_some()) {
            return;
        }
        let mut experiments: HashMap<Uuid, Option<Arc<str>>> = HashMap::new();
        for p in points {
            let experiment = experiments
                .entry(p.run)
                .or_insert_with(|| self.experiment_of_run(&p.run).ok().flatten());
            let Some(experiment) = experiment.clone() else {
                continue;
            };
            for info in rules.iter() {
                let rule = &info.rule;
                if rule.condition.metric() != Some(p.key.as_str()) || !rule.watches(&experiment) {
                    continue;
                }
                if let Some(message) = self.metric_condition(rule, &p.run, p.value) {
                    self.fire(rule, &p.run, &experiment, message, Some(p.value));
                }
            }
        }
    }

    /// Whether `value` of a point makes `rule` fire for `run`: the message if so.
    fn metric_condition(&self, rule: &Rule, run: &Uuid, value: f64) -> Option<String> {
        match &rule.condition {
            Condition::Threshold {
                metric,
                above,
                below,
            } => {
                if let Some(a) = above
                    && value > *a
                {
                    return Some(format!("{metric} = {value} is above {a}"));
                }
                if let Some(b) = below
                    && value < *b
                {
                    return Some(format!("{metric} = {value} is below {b}"));
                }
                None
            }
            Condition::NotFinite { metric } => {
                (!value.is_finite()).then(|| format!("{metric} became {value}"))
            }
            Condition::Plateau {
                metric,
                steps,
                maximize,
                min_delta,
            } => {
                if !value.is_finite() {
                    return None;
                }
                let mut plateaus = lock(&self.alerts().plateaus);
                let state = match plateaus.entry((rule.name.clone(), *run)) {
                    std::collections::hash_map::Entry::Vacant(first) => {
                        first.insert(Plateau {
                            best: value,
                            since_best: 0,
                        });
                        return None;
                    }
                    std::collections::hash_map::Entry::Occupied(seen) => seen.into_mut(),
                };
                let improved = if *maximize {
                    value > state.best + min_delta
                } else {
                    value < state.best - min_delta
                };
                if improved {
                    *state = Plateau {
                        best: value,
                        since_best: 0,
                    };
                    return None;
                }
                state.since_best += 1;
                (state.since_best >= *steps).then(|| {
                    format!(
                        "{metric} has not improved on {} for {steps} points",
                        state.best
                    )
                })
            }
            _ => None,
        }
    }

    /// After `run` started: its clock, for the clock conditions.
    pub(crate) fn alerts_after_start(&self, run: &Run) {
        lock(&self.alerts().clocks).insert(
            run.run_id,
            Clock {
                experiment: run.experiment.as_str().into(),
                started_at_us: run.started_at_us,
                last_point_us: run.started_at_us,
            },
        );
    }

    /// After `run` ended: `run_failed` rules, and forgetting its per-run state.
    pub(crate) fn alerts_after_end(&self, run: &Run) {
        let alerts = self.alerts();
        lock(&alerts.clocks).remove(&run.run_id);
        lock(&alerts.stop_flags).remove(&run.run_id);
        lock(&alerts.plateaus).retain(|(_, r), _| *r != run.run_id);
        lock(&alerts.hung_since).retain(|(_, r), _| *r != run.run_id);
        if !matches!(run.status, RunStatus::Failed | RunStatus::Killed) {
            return;
        }
        for info in self.rules().iter() {
            let rule = &info.rule;
            if rule.condition == Condition::RunFailed && rule.watches(&run.experiment) {
                let message = format!(
                    "run {} ({}) ended {}",
                    run.name,
                    run.run_id,
                    run.status.as_str()
                );
                self.fire(rule, &run.run_id, &run.experiment, message, None);
            }
        }
    }

    /// Fires `rule` for `run` unless it already fired for it: records the event, stops
    /// the run if the rule says so, announces the event. Failures are logged, never
    /// returned: an alert must not fail the write that tripped it.
    fn fire(&self, rule: &Rule, run: &Uuid, experiment: &str, message: String, value: Option<f64>) {
        let alerts = self.alerts();
        if !lock(&alerts.fired).insert((rule.name.clone(), *run)) {
            return;
        }
        let event = AlertEvent {
            alert: rule.name.clone(),
            run_id: *run,
            experiment: experiment.to_string(),
            fired_at_us: now_us(),
            kind: rule.condition.kind().to_string(),
            message,
            value,
            action: match rule.action {
                Action::Notify => "notify",
                Action::Stop => "stop",
            }
            .to_string(),
            webhook: rule.webhook.clone(),
        };
        if let Err(e) = self.record_event(rule, &event) {
            warn!(alert = rule.name, %run, %e, "could not record an alert event");
            lock(&alerts.fired).remove(&(rule.name.clone(), *run));
            return;
        }
        info!(alert = rule.name, %run, kind = event.kind, message = event.message, "alert fired");
        if rule.action == Action::Stop {
            lock(&alerts.stops).insert(*run, rule.name.clone());
            if let Some(flag) = lock(&alerts.stop_flags).get(run) {
                flag.store(true, Ordering::SeqCst);
            }
            if let Err(e) = self.set_tags(&[(*run, STOPPED_BY_TAG.to_string(), rule.name.clone())])
            {
                warn!(alert = rule.name, %run, %e, "could not tag a stopped run");
            }
        }
        self.inner
            .notifications
            .publish(ALERT_CHANNEL, &event.payload(), 0);
        // No receivers is fine.
        let _ = alerts.events.send(Arc::new(event));
    }

    /// Writes the event, the fired marker and (for `stop`) the stop request in one batch.
    fn record_event(&self, rule: &Rule, event: &AlertEvent) -> Result<()> {
        let cf = self.cf(CF_ALERTS)?;
        let mut event_key = self.timed_key(EVENT_PREFIX, event.fired_at_us);
        event_key.extend_from_slice(event.run_id.as_bytes());
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf,
            event_key,
            serde_json::to_vec(event).map_err(|e| Error::corrupt("alert event", e))?,
        );
        batch.put_cf(cf, fired_key(&rule.name, &event.run_id), []);
        if rule.action == Action::Stop {
            batch.put_cf(
                cf,
                key(STOP_PREFIX, event.run_id.as_bytes()),
                rule.name.as_bytes(),
            );
        }
        self.commit(batch)
    }
}
