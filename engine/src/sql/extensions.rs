//! Per-session state that functions reach through DataFusion's session-config
//! extensions: notices, the client's identity, planned query arguments, `SET` variables.

use std::collections::HashMap;
use std::sync::Mutex;

use datafusion::logical_expr::LogicalPlan;

use crate::users::Role;

/// Messages a running statement sends its client before its result (PostgreSQL's NOTICE):
/// TRAIN's progress, for one. Every session has one queue, reachable from inside a plan as a
/// session-config extension; the server forwards what arrives while a statement runs.
#[derive(Debug, Default)]
pub struct Notices {
    queue: Mutex<Vec<String>>,
    notify: tokio::sync::Notify,
}

impl Notices {
    /// Queues a message for the client.
    pub fn push(&self, message: impl Into<String>) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message.into());
        self.notify.notify_one();
    }

    /// Takes every queued message.
    pub fn drain(&self) -> Vec<String> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves once a message may have been queued since the last call.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

/// Who a front end authenticated: what it hands to [`Database::session_for`].
///
/// [`Database::session_for`]: crate::Database::session_for
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// What the user may do.
    pub role: Role,
    /// The client program (`application_name`, an HTTP client's name), if it said.
    pub application: Option<String>,
}

impl Identity {
    /// The identity of an embedding program: a superuser, as the database is its own.
    pub fn embedded(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            role: Role::Superuser,
            application: None,
        }
    }
}

/// Who is on the other end of a session, as a session-config extension: functions that
/// start runs record it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The startup `user`.
    pub user: Option<String>,
    /// The startup `application_name`.
    pub application: Option<String>,
}

/// Queries passed to table functions as text, planned before the statement that calls them
/// (see [`Database::register_query_argument`]): a session-config extension, so a table
/// function finds the plan of its query argument while the statement is planned.
///
/// [`Database::register_query_argument`]: crate::Database::register_query_argument
#[derive(Debug, Default)]
pub struct PlannedQueries {
    plans: Mutex<HashMap<String, LogicalPlan>>,
}

impl PlannedQueries {
    /// Most plans kept; older ones are dropped (they are planned again when needed).
    const CAPACITY: usize = 32;

    /// The plan of `sql`, if the statement being planned passed it as a query argument.
    pub fn get(&self, sql: &str) -> Option<LogicalPlan> {
        self.plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned()
    }

    pub(super) fn insert(&self, sql: String, plan: LogicalPlan) {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if plans.len() >= Self::CAPACITY {
            plans.clear();
        }
        plans.insert(sql, plan);
    }
}

/// Settings a client changed with `SET` (PostgreSQL-level ones such as `application_name`,
/// and `runbase.*` ones such as `runbase.device`), visible to functions as a session-config
/// extension.
#[derive(Debug, Default)]
pub struct SessionVariables {
    values: Mutex<HashMap<String, String>>,
}

impl SessionVariables {
    /// The value `name` (lower case) was set to in this session, if it was.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub(super) fn set(&self, name: String, value: String) {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, value);
    }
}
