//! Table storage: Delta Lake tables on an object store.
//!
//! Every user table is a Delta table at `<object-store root>/tables/<id>/`. Each committed
//! `INSERT`, `CREATE TABLE` or `CREATE TABLE … AS` is exactly one Delta commit, so a table's
//! versions are its Delta log. The object store is handed to deltalake explicitly
//! ([`ObjectStoreRoot`]), so the local directory used by default and S3 share one code path.
//!
//! The in-memory [`StoredTable`] caches the loaded Delta snapshot. runbase is the only writer
//! of its tables (the data directory's lock keeps a second server off it), so the cache
//! is refreshed by the writes themselves, never by polling.
//!
//! # Layout
//! - `object_store`: [`ObjectStoreRoot`], the store's root and the Delta operations on it
//!   (where S3 joins the local directory).
//! - `s3`: the S3 client ([`S3Options`]) and the log store deltalake needs for `s3://`.
//! - `synced`: [`SyncedLocalStore`], the local directory with every write fsynced.
//! - `metered`: [`MeteredStore`], request and error counts by operation.
//! - `delta`: commit files and [`VersionInfo`].
//! - `dml`: `DELETE`, `UPDATE`, `TRUNCATE` as one Delta commit each.
//! - `schema_map`: Arrow ⇄ Delta schemas ([`storable_schema`], [`conform_batch`]).
//! - `stream`: streamed writes (rows to Parquet as they arrive, one commit at the end).
//! - `table`: [`StoredTable`], one table's cached Delta state and its writes.
//! - [`schema`]: the DataFusion catalog and schemas (`public`, `runbase`) over the tables.
//! - `pg_rows`: which of the catalog library's `pg_type`, `pg_proc` and `pg_operator` rows
//!   `pg_catalog` lists (what runbase has).
//! - [`provider`]: table providers for scans, `INSERT` and `table_at(name, version)`.

mod delta;
mod dml;
mod faulty;
mod metered;
mod object_store;
mod pg_rows;
pub mod provider;
mod s3;
pub mod schema;
mod schema_map;
mod stream;
mod synced;
mod table;

pub use delta::VersionInfo;
pub use dml::OptimizeReport;
pub use faulty::FaultyStore;
pub use metered::{MeteredStore, RequestCounts, RequestLabels};
pub use object_store::ObjectStoreRoot;
pub use s3::S3Options;
pub use schema_map::{conform_batch, delta_to_arrow, nullable, storable_schema};
pub(crate) use stream::{Conform, TARGET_FILE_BYTES, stream_plan};
pub use synced::{SyncEvent, SyncJournal, SyncedLocalStore};
pub use table::StoredTable;

use delta::*;
