//! The runbase engine: an embeddable database for machine-learning experiments.
//!
//! User tables are Delta Lake tables on an object store (a local directory by default),
//! so every committed write is a new, readable table version. The catalog lives in
//! RocksDB. SQL is planned and run by DataFusion on a dedicated CPU runtime. The engine
//! knows nothing of libtorch or of the wire protocol: other crates add functions through
//! [`Database::configure`] and system tables through [`Database::register_system_table`].
//!
//! # Layout
//! - [`database`]: [`Database`], opening, DDL, the hook for registering functions.
//! - [`auth`]: users, roles and SCRAM-SHA-256 verifiers.
//! - [`session`]: [`Session`], per-client statement planning and execution.
//! - [`catalog`]: the RocksDB catalog of tables.
//! - [`compat`]: PostgreSQL functions drivers call while discovering a server.
//! - [`copy`]: `COPY … FROM STDIN` / `TO STDOUT` in text and CSV formats.
//! - [`storage`]: Delta tables on the object store, versions and history.
//! - [`schema`]: DataFusion catalog and schema providers (`public`, `runbase`).
//! - [`provider`]: table providers for scans, `INSERT` and `table_at(name, version)`.
//! - [`system`]: system tables such as `runbase.table_versions`.
//! - [`tracking`]: experiments, runs, params, metrics, tags, lineage and artifacts in
//!   RocksDB, their `runbase.*` tables and the `log_metric`-style functions.
//! - [`executor`]: the CPU runtime queries run on.
//! - [`error`]: [`Error`] and [`Result`].
//!
//! # Example
//! ```no_run
//! # async fn demo() -> runbase_engine::Result<()> {
//! let db = runbase_engine::Database::open_dir("./runbase-data").await?;
//! let session = db.session();
//! session.sql("CREATE TABLE t (x int)").await?;
//! session.sql("INSERT INTO t VALUES (1), (2)").await?;
//! let batches = session.query("SELECT sum(x) FROM t").await?;
//! # let _ = batches;
//! # Ok(())
//! # }
//! ```

pub mod catalog;
pub mod database;
pub mod error;
pub mod executor;
pub mod pg;
pub mod sql;
pub mod storage;
pub mod system;
pub mod tracking;
pub mod users;

// The modules' former paths, while the reshaping is under way.
pub(crate) use pg::rewrite;
pub use pg::{compat, copy, oid_array};
pub use sql::session;
pub use storage::{provider, schema};
pub use users as auth;

pub use database::{DATABASE_NAME, Database, DatabaseOptions, WeakDatabase, version_string};
pub use error::{Error, Result};
pub use session::{
    ClientIdentity, CommandTag, Notices, PinnedQuery, PlannedQueries, Prepared, QueryOutput,
    Session, SessionVariables, Statement,
};
pub use system::SystemTable;

/// Re-exports so dependants use the same versions.
pub use datafusion;
