//! SQL sessions: [`Session`], one client's conversation with the database, split by job.
//!
//! A statement goes parse → authorize → rewrite → plan → execute. The front ends (pgwire,
//! HTTP, an embedding program) only see the types re-exported here:
//! [`Statement`], [`Prepared`], [`QueryOutput`], [`CommandTag`].
//!
//! # Layout
//! - `session`: [`Session`] itself: parsing, planning, executing.
//! - `prepared`: statement, plan and output types.
//! - `extensions`: [`Identity`] (who a front end authenticated) and the per-session
//!   state functions reach ([`Notices`], [`ClientIdentity`],
//!   [`PlannedQueries`], [`SessionVariables`]).
//! - `authorize`: what a read-only user may not run.
//! - `params`: `$n` parameter types and binding.
//! - `query_args`: queries passed as text to table functions.
//! - `pinning`: plans over fixed table versions ([`Session::plan_pinned`]).
//! - `settings`: `SET`, `SHOW`, `current_setting()`.
//! - `subqueries`: select-list subqueries over user tables, kept as written (the
//!   compatibility parser would drop them).
//! - `copy`: planning `COPY` and committing a finished `COPY … FROM STDIN`.
//! - `ddl`: `CREATE TABLE [AS]` and `DROP TABLE` (catalog and object store together).
//! - `direct_call`: the fast path for `SELECT log_metric(…)`.
//! - `user_commands`: running `CREATE`/`ALTER`/`DROP USER`.
//! - `diagnose`: precise errors for statements that fail to plan.
//! - `metered`: result streams that report rows and latency to [`crate::stats`].

mod alter;
mod authorize;
mod copy;
mod ddl;
mod depth;
mod diagnose;
mod direct_call;
mod extensions;
mod maintenance;
mod metered;
mod params;
mod pinning;
mod prepared;
mod query_args;
mod session;
mod settings;
mod subqueries;
mod user_commands;

pub use extensions::{ClientIdentity, Identity, Notices, PlannedQueries, SessionVariables};
pub use maintenance::Maintenance;
pub use prepared::{CommandTag, PinnedQuery, Prepared, QueryOutput, Statement};
pub use session::Session;
pub(crate) use session::parse_statements;
pub use settings::parse_duration;

use diagnose::*;
use direct_call::*;
use params::*;
use prepared::*;

#[cfg(test)]
mod tests;
