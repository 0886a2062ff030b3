//! The runbase engine: an embeddable database for machine-learning experiments.
//!
//! User tables are Delta Lake tables on an object store (a local directory by default),
//! so every committed write is a new, readable table version. The catalog lives in
//! RocksDB. SQL is planned and run by DataFusion on a dedicated CPU runtime. The engine
//! knows nothing of libtorch or of the wire protocol: other crates add functions through
//! [`Database::configure`] and system tables through [`Database::register_system_table`].
//!
//! # Layout
//! - [`database`]: [`Database`], the container: opening, services, the hooks for
//!   registering functions and system tables, DDL.
//! - [`error`]: [`Error`], [`Result`] and the protocol-neutral [`error::ErrorCode`].
//! - [`executor`]: the CPU runtime queries run on, and the blocking-work helpers.
//! - [`failpoints`]: fault injection for tests (compiled in with the `failpoints` feature).
//! - [`functions`]: runbase's own SQL functions as the catalog documents them (`pg_proc`,
//!   psql's `\df`).
//! - [`fuzzing`]: entry points the fuzz targets (`fuzz/`) drive the parsers of untrusted
//!   bytes through (COPY data, SQL text, model references and other arguments).
//! - [`kv`]: RocksDB: opening, column families, the write policy, async-safe writes.
//! - [`catalog`]: the table catalog in RocksDB.
//! - [`users`]: users and roles ([`Database::users`]); [`scram`]: their verifiers.
//! - [`storage`]: Delta tables on the object store, versions and history, and what
//!   DataFusion sees of them (schema and table providers).
//! - [`tracking`]: experiments, runs, params, metrics, tags, lineage, artifacts and models
//!   in RocksDB, their `runbase.*` tables and the `log_metric`-style functions.
//! - [`notify`]: `LISTEN`/`NOTIFY` channels and each session's queue.
//! - [`stats`]: [`stats::Stats`], the counters behind `GET /metrics` and `runbase.stats`.
//! - [`system`]: system tables ([`SystemTable`]) such as `runbase.table_versions`.
//! - [`sql`]: [`Session`], per-client statement planning and execution, split by job.
//! - [`pg`]: PostgreSQL dialect compatibility (rewrites, `oid[]`, catalog functions, COPY
//!   formats) — no wire protocol.
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

pub mod backup;
pub mod catalog;
pub mod database;
pub mod error;
pub mod executor;
pub mod failpoints;
pub mod functions;
pub mod fuzzing;
pub mod kv;
pub mod notify;
pub mod pg;
pub mod scram;
pub mod sql;
pub mod stats;
pub mod storage;
pub mod system;
pub mod tracking;
pub mod users;

pub use database::{DATABASE_NAME, Database, DatabaseOptions, WeakDatabase, version_string};
pub use error::{Error, Result};
pub use sql::{
    ClientIdentity, CommandTag, Identity, Notices, PinnedQuery, PlannedQueries, Prepared,
    QueryOutput, Session, SessionVariables, Statement,
};
pub use system::SystemTable;

/// Re-exports so dependants use the same versions.
pub use datafusion;
