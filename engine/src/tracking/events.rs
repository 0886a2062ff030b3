//! Live events: what changed in tracking, as it commits, for the dashboard's event stream
//! (and any front end that pushes updates). Points logged by any path (the SQL functions,
//! `COPY` into `runbase.metrics`, TRAIN, later the MLflow API) and runs that start or end
//! are published here after their write batch commits.
//!
//! Each event has an id, increasing for the life of the process and starting from the
//! process's start time in microseconds, so ids of an earlier process are always lower.
//! The last [`RING_CAPACITY`] events are kept, so a client that reconnects with the id of
//! the last event it saw gets what it missed ([`Events::subscribe`]); one that fell further
//! behind is told to reload ([`Subscription::gap`]).
//!
//! Events carry the points themselves, up to [`MAX_EVENT_POINTS`] per event; a bigger
//! commit (a bulk `COPY`) marks its series `truncated`, which tells a chart to fetch the
//! series again instead of appending.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{MetricPoint, Run};

/// Events kept for clients that reconnect.
pub const RING_CAPACITY: usize = 4096;

/// Points kept over all the events in the ring (about 24 bytes each): a bulk load's
/// events push the oldest out sooner, so the ring stays within a few tens of megabytes.
pub const RING_POINTS: usize = 1_000_000;

/// Most points one event carries, over all its series.
pub const MAX_EVENT_POINTS: usize = 10_000;

/// How far a live receiver may fall behind before it is told to reload.
const CHANNEL_CAPACITY: usize = 1024;

/// One change, as published.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Increasing id (what SSE sends as `id:`).
    pub id: u64,
    /// What changed.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// The run the event is about.
    pub fn run_id(&self) -> Uuid {
        match &self.kind {
            EventKind::Metrics { run_id, .. } => *run_id,
            EventKind::Run { run } => run.run_id,
        }
    }

    /// The experiment of that run.
    pub fn experiment(&self) -> &str {
        match &self.kind {
            EventKind::Metrics { experiment, .. } => experiment,
            EventKind::Run { run } => &run.experiment,
        }
    }

    /// The SSE event name: `metrics` or `run`.
    pub fn name(&self) -> &'static str {
        match &self.kind {
            EventKind::Metrics { .. } => "metrics",
            EventKind::Run { .. } => "run",
        }
    }
}

/// What changed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// Points of one run were committed.
    Metrics {
        /// The run.
        run_id: Uuid,
        /// Its experiment's name.
        experiment: String,
        /// The points, by metric key.
        series: Vec<SeriesUpdate>,
    },
    /// A run started or changed status.
    Run {
        /// The run as it is now.
        run: Run,
    },
}

/// New points of one metric of one run.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesUpdate {
    /// The metric key.
    pub key: String,
    /// Steps, in the order logged.
    pub step: Vec<i64>,
    /// Wall times, microseconds since the epoch.
    pub ts_us: Vec<i64>,
    /// Values; NaN and infinities as `None` (JSON has neither).
    pub value: Vec<Option<f64>>,
    /// Points were left out of this event: fetch the series again.
    pub truncated: bool,
}

/// The live event bus of one database.
#[derive(Debug)]
pub struct Events {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Event>>,
}

#[derive(Debug)]
struct Ring {
    next_id: u64,
    events: VecDeque<Arc<Event>>,
    /// Points held by `events`.
    points: usize,
}

impl Event {
    /// Points the event carries.
    fn points(&self) -> usize {
        match &self.kind {
            EventKind::Metrics { series, .. } => series.iter().map(|s| s.step.len()).sum(),
            EventKind::Run { .. } => 0,
        }
    }
}

impl Default for Events {
    fn default() -> Self {
        let start = u64::try_from(super::now_us()).unwrap_or(1).max(1);
        Self {
            ring: Mutex::new(Ring {
                next_id: start,
                events: VecDeque::with_capacity(RING_CAPACITY),
                points: 0,
            }),
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }
}

/// What [`Events::subscribe`] gives: the events missed since the id asked for, then
/// every event from now on, without a gap or a repeat between the two.
#[derive(Debug)]
pub struct Subscription {
    /// Events after the id asked for, oldest first.
    pub backlog: Vec<Arc<Event>>,
    /// Some events after the id asked for are no longer kept: reload, then follow.
    pub gap: bool,
    /// Events published from now on.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The id of the newest event published before `live` starts (the id a client that
    /// has seen everything up to here would resume from).
    pub newest: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Events {
    /// Follows events from now on; with `after`, first those published after that id.
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let ring = lock(&self.ring);
        // Subscribed under the ring's lock: every event is either in the backlog or live.
        let live = self.tx.subscribe();
        let newest = ring.next_id.saturating_sub(1);
        let Some(after) = after else {
            return Subscription {
                backlog: Vec::new(),
                gap: false,
                live,
                newest,
            };
        };
        let oldest_kept = ring.events.front().map_or(ring.next_id, |e| e.id);
        // Ids are consecutive, so a gap is an id older than the oldest kept event's
        // predecessor (or one from another process, which is always lower).
        let gap = after.saturating_add(1) < oldest_kept || after >= ring.next_id;
        let backlog = if gap {
            Vec::new()
        } else {
            ring.events
                .iter()
                .filter(|e| e.id > after)
                .cloned()
                .collect()
        };
        Subscription {
            backlog,
            gap,
            live,
            newest,
        }
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        lock(&self.ring).next_id
    }

    fn publish(&self, kind: EventKind) {
        let mut ring = lock(&self.ring);
        let event = Arc::new(Event {
            id: ring.next_id,
            kind,
        });
        ring.next_id += 1;
        ring.points += event.points();
        ring.events.push_back(event.clone());
        while ring.events.len() > RING_CAPACITY || ring.points > RING_POINTS {
            let Some(old) = ring.events.pop_front() else {
                break;
            };
            ring.points -= old.points();
        }
        // No receivers is fine: the ring still keeps it for a reconnect.
        let _ = self.tx.send(event);
    }

    /// Publishes the committed `points`, one event per run, keys in first-logged order.
    /// `steps` are the steps the points were stored at; `experiment_of` names each run's
    /// experiment.
    pub(crate) fn points(
        &self,
        points: &[MetricPoint],
        steps: &[i64],
        now_us: i64,
        experiment_of: impl Fn(&Uuid) -> Option<String>,
    ) {
        let truncated = points.len() > MAX_EVENT_POINTS;
        let mut runs: Vec<(Uuid, Vec<SeriesUpdate>, HashMap<String, usize>)> = Vec::new();
        for (p, step) in points.iter().zip(steps) {
            let slot = match runs.iter().position(|(r, _, _)| *r == p.run) {
                Some(i) => i,
                None => {
                    runs.push((p.run, Vec::new(), HashMap::new()));
                    runs.len() - 1
                }
            };
            let (_, series, index) = &mut runs[slot];
            let at = *index.entry(p.key.clone()).or_insert_with(|| {
                series.push(SeriesUpdate {
                    key: p.key.clone(),
                    step: Vec::new(),
                    ts_us: Vec::new(),
                    value: Vec::new(),
                    truncated,
                });
                series.len() - 1
            });
            if truncated {
                continue;
            }
            let s = &mut series[at];
            s.step.push(*step);
            s.ts_us.push(p.ts_us.unwrap_or(now_us));
            s.value.push(p.value.is_finite().then_some(p.value));
        }
        for (run_id, series, _) in runs {
            let experiment = experiment_of(&run_id).unwrap_or_default();
            self.publish(EventKind::Metrics {
                run_id,
                experiment,
                series,
            });
        }
    }

    /// Publishes that `run` started or changed status.
    pub(crate) fn run(&self, run: &Run) {
        self.publish(EventKind::Run { run: run.clone() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::RunStatus;

    fn point(run: Uuid, key: &str, step: i64, value: f64) -> MetricPoint {
        MetricPoint {
            run,
            key: key.into(),
            step: Some(step),
            ts_us: Some(10 + step),
            value,
        }
    }

    fn run(id: Uuid) -> Run {
        Run {
            run_id: id,
            experiment_id: 1,
            experiment: "e".into(),
            name: "r".into(),
            status: RunStatus::Running,
            parent_run_id: None,
            kind: "external".into(),
            started_at_us: 0,
            ended_at_us: None,
            user_name: None,
            source: None,
            deleted: false,
        }
    }

    #[test]
    fn points_group_by_run_and_key_and_resume_after_an_id() {
        let events = Events::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = events.next_id();
        let mut follower = events.subscribe(None);
        events.points(
            &[
                point(a, "loss", 0, 1.0),
                point(b, "loss", 0, 2.0),
                point(a, "loss", 1, f64::NAN),
                point(a, "acc", 1, 0.5),
            ],
            &[0, 0, 1, 1],
            0,
            |_| Some("e".into()),
        );
        events.run(&run(a));

        let e = follower.live.try_recv().expect("first event");
        assert_eq!(e.id, first);
        assert_eq!(e.run_id(), a);
        let EventKind::Metrics { series, .. } = &e.kind else {
            panic!("metrics event")
        };
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].key, "loss");
        assert_eq!(series[0].step, vec![0, 1]);
        assert_eq!(series[0].value, vec![Some(1.0), None]);
        assert_eq!(series[1].key, "acc");
        assert_eq!(follower.live.try_recv().expect("b").run_id(), b);
        assert_eq!(follower.live.try_recv().expect("run").name(), "run");

        // A reconnect after the first event gets the other two, in order.
        let again = events.subscribe(Some(first));
        assert!(!again.gap);
        let ids: Vec<u64> = again.backlog.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![first + 1, first + 2]);
        // Up to date: nothing missed.
        let current = events.subscribe(Some(first + 2));
        assert!(!current.gap && current.backlog.is_empty());
        // An id from an earlier process, or one never issued, is a gap.
        assert!(events.subscribe(Some(3)).gap);
        assert!(events.subscribe(Some(first + 100)).gap);
    }

    #[test]
    fn ring_keeps_the_newest_and_big_commits_are_truncated() {
        let events = Events::default();
        let a = Uuid::new_v4();
        let first = events.next_id();
        for _ in 0..RING_CAPACITY + 10 {
            events.run(&run(a));
        }
        assert!(events.subscribe(Some(first)).gap, "the oldest were dropped");
        let last = events.next_id() - 1;
        let sub = events.subscribe(Some(last - 5));
        assert!(!sub.gap);
        assert_eq!(sub.backlog.len(), 5);

        let mut follower = events.subscribe(None);
        let many: Vec<MetricPoint> = (0..MAX_EVENT_POINTS as i64 + 1)
            .map(|i| point(a, "loss", i, 0.0))
            .collect();
        let steps: Vec<i64> = (0..many.len() as i64).collect();
        events.points(&many, &steps, 0, |_| None);
        let e = follower.live.try_recv().expect("event");
        let EventKind::Metrics { series, .. } = &e.kind else {
            panic!("metrics event")
        };
        assert!(series[0].truncated);
        assert!(series[0].step.is_empty());

        // Full events fill the ring's point budget: the oldest go first.
        let first_full = events.next_id();
        let batch: Vec<MetricPoint> = (0..MAX_EVENT_POINTS as i64)
            .map(|i| point(a, "loss", i, 0.0))
            .collect();
        let steps: Vec<i64> = (0..batch.len() as i64).collect();
        for _ in 0..RING_POINTS / MAX_EVENT_POINTS + 5 {
            events.points(&batch, &steps, 0, |_| None);
        }
        let kept = events.subscribe(Some(first_full + 3));
        assert!(kept.gap, "the first full events were dropped");
        let last = events.next_id() - 1;
        let recent = events.subscribe(Some(last - 10));
        assert!(!recent.gap);
        assert_eq!(recent.backlog.len(), 10);
        let held: usize = recent.backlog.iter().map(|e| e.points()).sum();
        assert_eq!(held, 10 * MAX_EVENT_POINTS);
    }
}
