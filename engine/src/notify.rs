//! `LISTEN` / `NOTIFY`: channels, and each session's queue of notifications.
//!
//! [`Notifications`] (one per database) maps channel names to the [`Listener`]s of the
//! sessions that ran `LISTEN`. [`Notifications::publish`] (what `NOTIFY` and the alerts
//! call) appends to each listener's queue and wakes it; the front end drains
//! the queue when it may send — the PostgreSQL front end before each ReadyForQuery and
//! whenever the connection is idle. Nothing here knows the wire protocol.
//!
//! As in PostgreSQL, a notification reaches only sessions listening when it is sent,
//! each at most once per channel, and a queue holds at most [`QUEUE_LIMIT`] entries (a
//! client that never reads loses the oldest, with a warning).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use tracing::warn;

/// Most notifications one session holds before the oldest are dropped.
pub const QUEUE_LIMIT: usize = 10_000;

/// Longest payload, in bytes (PostgreSQL's limit).
pub const MAX_PAYLOAD: usize = 7999;

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The channel.
    pub channel: String,
    /// The payload (may be empty).
    pub payload: String,
    /// The backend process id of the sender (0 for the server itself, e.g. alerts).
    pub sender_pid: i32,
}

/// One session's subscriptions and pending notifications.
#[derive(Debug, Default)]
pub struct Listener {
    channels: Mutex<HashSet<String>>,
    queue: Mutex<VecDeque<Notification>>,
    wake: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Listener {
    /// Takes every pending notification, oldest first.
    pub fn drain(&self) -> Vec<Notification> {
        lock(&self.queue).drain(..).collect()
    }

    /// Whether notifications are pending.
    pub fn has_pending(&self) -> bool {
        !lock(&self.queue).is_empty()
    }

    /// Resolves when a notification arrives (at once if one arrived since the last wait).
    pub async fn notified(&self) {
        self.wake.notified().await;
    }

    /// Whether the session listens on any channel.
    pub fn is_listening(&self) -> bool {
        !lock(&self.channels).is_empty()
    }

    fn push(&self, n: Notification) {
        let mut queue = lock(&self.queue);
        if queue.len() >= QUEUE_LIMIT {
            queue.pop_front();
            warn!(
                channel = n.channel,
                "a listening session is not reading its notifications; dropped the oldest"
            );
        }
        queue.push_back(n);
        drop(queue);
        self.wake.notify_one();
    }
}

/// The database's channels.
#[derive(Debug, Default)]
pub struct Notifications {
    channels: Mutex<HashMap<String, Vec<Weak<Listener>>>>,
}

impl Notifications {
    /// `LISTEN channel` for `listener` (again is a no-op).
    pub fn listen(&self, listener: &Arc<Listener>, channel: &str) {
        if !lock(&listener.channels).insert(channel.to_string()) {
            return;
        }
        let mut channels = lock(&self.channels);
        let list = channels.entry(channel.to_string()).or_default();
        // Sessions that closed are forgotten here too, not only when something is sent.
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(listener));
    }

    /// `UNLISTEN channel`, or `UNLISTEN *` when `channel` is `None`.
    pub fn unlisten(&self, listener: &Arc<Listener>, channel: Option<&str>) {
        let dropped: Vec<String> = {
            let mut mine = lock(&listener.channels);
            match channel {
                Some(c) => mine.take(c).into_iter().collect(),
                None => mine.drain().collect(),
            }
        };
        let mut channels = lock(&self.channels);
        for c in dropped {
            if let Some(list) = channels.get_mut(&c) {
                list.retain(|w| w.upgrade().is_some_and(|l| !Arc::ptr_eq(&l, listener)));
                if list.is_empty() {
                    channels.remove(&c);
                }
            }
        }
    }

    /// `NOTIFY channel, payload`: queues the notification for every session listening on
    /// `channel`; returns how many there were. Sessions that closed are forgotten here.
    pub fn publish(&self, channel: &str, payload: &str, sender_pid: i32) -> usize {
        let listeners: Vec<Arc<Listener>> = {
            let mut channels = lock(&self.channels);
            let Some(list) = channels.get_mut(channel) else {
                return 0;
            };
            list.retain(|w| w.strong_count() > 0);
            let live: Vec<Arc<Listener>> = list.iter().filter_map(Weak::upgrade).collect();
            if list.is_empty() {
                channels.remove(channel);
            }
            live
        };
        for l in &listeners {
            l.push(Notification {
                channel: channel.to_string(),
                payload: payload.to_string(),
                sender_pid,
            });
        }
        listeners.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_publish_unlisten() {
        let hub = Notifications::default();
        let a = Arc::new(Listener::default());
        let b = Arc::new(Listener::default());
        hub.listen(&a, "c");
        hub.listen(&a, "c");
        hub.listen(&b, "c");
        hub.listen(&b, "d");
        assert_eq!(hub.publish("c", "x", 7), 2);
        assert_eq!(
            a.drain().len(),
            1,
            "one per channel, however often LISTENed"
        );
        assert_eq!(
            b.drain(),
            vec![Notification {
                channel: "c".into(),
                payload: "x".into(),
                sender_pid: 7
            }]
        );
        hub.unlisten(&b, None);
        assert!(!b.is_listening());
        assert_eq!(hub.publish("d", "", 0), 0);
        drop(a);
        assert_eq!(hub.publish("c", "", 0), 0, "closed sessions are forgotten");
    }
}
