//! Table storage: Delta Lake tables on an object store.
//!
//! Every user table is a Delta table at `<object-store root>/tables/<id>/`. Each committed
//! `INSERT`, `CREATE TABLE` or `CREATE TABLE … AS` is exactly one Delta commit, so a table's
//! versions are its Delta log. The object store is handed to deltalake explicitly
//! ([`ObjectStoreRoot`]), so the local directory used by default and S3 share one code path.
//!
//! The in-memory [`StoredTable`] caches the loaded Delta snapshot. runbase is the only writer
//! of its tables (RocksDB's lock keeps a second server off the data directory), so the cache
//! is refreshed by the writes themselves, never by polling.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::TryStreamExt;
use tokio::sync::{Mutex, RwLock};
use url::Url;

use crate::catalog::TableEntry;
use crate::error::{Error, Result};

/// An object store and the URL of its root, as deltalake wants them: `store`'s `/` is the
/// root of `url`'s scheme and authority, and tables live under `url`'s path.
#[derive(Clone)]
pub struct ObjectStoreRoot {
    /// The store itself (a `LocalFileSystem` by default).
    pub store: Arc<dyn ObjectStore>,
    /// URL of the directory under which runbase keeps its tables, ending in `/`.
    pub url: Url,
}

impl fmt::Debug for ObjectStoreRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreRoot")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl ObjectStoreRoot {
    /// A local directory as the object store root.
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let url = Url::from_directory_path(&dir).map_err(|()| {
            Error::InvalidArgument(format!(
                "object store path {} is not absolute",
                dir.display()
            ))
        })?;
        Ok(Self {
            store: Arc::new(datafusion::object_store::local::LocalFileSystem::new()),
            url,
        })
    }

    /// URL of the Delta table at `location` (relative to the root).
    pub fn table_url(&self, location: &str) -> Result<Url> {
        self.url
            .join(&format!("{}/", location.trim_end_matches('/')))
            .map_err(|e| Error::InvalidArgument(format!("bad table location {location}: {e}")))
    }

    /// The object path (in `store`'s namespace) of the object at `location` (relative to
    /// the root).
    pub fn object_path(&self, location: &str) -> Result<ObjectPath> {
        let url = self
            .url
            .join(location)
            .map_err(|e| Error::InvalidArgument(format!("bad object location {location}: {e}")))?;
        if !url.as_str().starts_with(self.url.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "object location {location} is outside the store's root"
            )));
        }
        ObjectPath::from_url_path(url.path())
            .map_err(|e| Error::InvalidArgument(format!("bad object location {location}: {e}")))
    }

    /// The object path (in `store`'s namespace) of the Delta table at `location`.
    fn table_path(&self, location: &str) -> Result<ObjectPath> {
        let url = self.table_url(location)?;
        ObjectPath::from_url_path(url.path())
            .map_err(|e| Error::InvalidArgument(format!("bad table location {location}: {e}")))
    }

    fn builder(&self, url: &Url) -> Result<DeltaTableBuilder> {
        Ok(DeltaTableBuilder::from_url(url.clone())?
            .with_storage_backend(self.store.clone(), url.clone()))
    }

    /// Opens the Delta table at `location`, at its latest version or at `version`.
    pub async fn open_table(&self, location: &str, version: Option<u64>) -> Result<DeltaTable> {
        let url = self.table_url(location)?;
        let mut builder = self.builder(&url)?;
        if let Some(v) = version {
            builder = builder.with_version(v);
        }
        Ok(builder.load().await?)
    }

    /// Creates a new, empty Delta table at `location` (version 0).
    pub async fn create_empty(&self, location: &str, schema: &StructType) -> Result<DeltaTable> {
        let url = self.table_url(location)?;
        let table = self.builder(&url)?.build()?;
        Ok(table
            .create()
            .with_columns(schema.fields().cloned())
            .with_save_mode(SaveMode::ErrorIfExists)
            .await?)
    }

    /// Creates a Delta table at `location` holding `batches` in one commit (version 0).
    pub async fn create_with_data(
        &self,
        location: &str,
        batches: Vec<RecordBatch>,
    ) -> Result<DeltaTable> {
        let url = self.table_url(location)?;
        let table = self.builder(&url)?.build()?;
        Ok(table
            .write(batches)
            .with_save_mode(SaveMode::ErrorIfExists)
            .await?)
    }

    /// Deletes every object of the table at `location`.
    pub async fn delete_table_files(&self, location: &str) -> Result<()> {
        let prefix = self.table_path(location)?;
        let paths: Vec<_> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for path in paths {
            self.store.delete(&path).await?;
        }
        Ok(())
    }

    /// Reads the commit log of the table at `location`: one [`VersionInfo`] per version.
    pub async fn history(&self, location: &str) -> Result<Vec<VersionInfo>> {
        let log = self.table_path(location)?.join("_delta_log");
        let metas: Vec<_> = self.store.list(Some(&log)).try_collect().await?;
        let mut out = Vec::new();
        for meta in metas {
            let Some(file) = meta.location.filename() else {
                continue;
            };
            let Some(version) = commit_file_version(file) else {
                continue;
            };
            let bytes = self.store.get(&meta.location).await?.bytes().await?;
            out.push(VersionInfo::from_commit(version, &bytes).map_err(|detail| {
                Error::corrupt(format!("commit {} of {location}", meta.location), detail)
            })?);
        }
        out.sort_by_key(|v| v.version);
        Ok(out)
    }
}

/// The version number of a Delta commit file name (`00000000000000000003.json`).
fn commit_file_version(file: &str) -> Option<i64> {
    let digits = file.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What one table version recorded about the commit that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    /// The Delta version number, from 0.
    pub version: i64,
    /// Commit time, milliseconds since the Unix epoch.
    pub committed_at_ms: i64,
    /// The Delta operation (`CREATE TABLE`, `WRITE`, …).
    pub operation: String,
    /// Rows the commit added.
    pub rows_added: i64,
}

impl VersionInfo {
    fn from_commit(version: i64, bytes: &[u8]) -> std::result::Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let action: serde_json::Value =
                serde_json::from_str(line).map_err(|e| e.to_string())?;
            let Some(info) = action.get("commitInfo") else {
                continue;
            };
            let committed_at_ms = info
                .get("inCommitTimestamp")
                .or_else(|| info.get("timestamp"))
                .and_then(serde_json::Value::as_i64)
                .unwrap_or_default();
            let operation = info
                .get("operation")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("UNKNOWN")
                .to_string();
            let rows_added = info
                .get("operationMetrics")
                .and_then(|m| m.get("num_added_rows"))
                .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
                .unwrap_or(0);
            return Ok(Self {
                version,
                committed_at_ms,
                operation,
                rows_added,
            });
        }
        Err("no commitInfo action".to_string())
    }
}

/// Converts a schema as DataFusion planned it into one Delta can store, and back into the
/// Arrow schema that scans of the stored table produce.
///
/// Delta stores microsecond timestamps (UTC or zone-less), plain strings and binaries, and
/// no `NULL`-typed or unsigned columns; types are mapped onto those, or rejected with a
/// message naming the column.
pub fn storable_schema(schema: &Schema) -> Result<(StructType, SchemaRef)> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            Ok(Field::new(
                f.name(),
                storable_type(f.name(), f.data_type())?,
                f.is_nullable(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let normalized = Schema::new(fields);
    let delta: StructType = (&normalized)
        .try_into_kernel()
        .map_err(|e| Error::NotSupported(format!("column type ({e})")))?;
    let arrow = delta_to_arrow(&delta)?;
    Ok((delta, arrow))
}

/// The Arrow schema that scans of a Delta table with schema `delta` produce.
pub fn delta_to_arrow(delta: &StructType) -> Result<SchemaRef> {
    let arrow: Schema = delta
        .try_into_arrow()
        .map_err(|e| Error::corrupt("table schema", e))?;
    Ok(Arc::new(arrow))
}

fn storable_type(column: &str, dt: &DataType) -> Result<DataType> {
    use DataType::*;
    Ok(match dt {
        Boolean | Int8 | Int16 | Int32 | Int64 | Float32 | Float64 | Utf8 | Binary | Date32 => {
            dt.clone()
        }
        Decimal128(p, s) if *p <= 38 => dt.clone(),
        Float16 => Float32,
        Utf8View | LargeUtf8 => Utf8,
        BinaryView | LargeBinary | FixedSizeBinary(_) => Binary,
        Timestamp(_, tz) => Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| Arc::from("UTC"))),
        List(inner) | LargeList(inner) | ListView(inner) | FixedSizeList(inner, _) => {
            List(Arc::new(Field::new(
                "element",
                storable_type(column, inner.data_type())?,
                true,
            )))
        }
        Null => {
            return Err(Error::InvalidArgument(format!(
                "column \"{column}\" has no type (it is NULL); cast it, e.g. NULL::text"
            )));
        }
        other => {
            return Err(Error::NotSupported(format!(
                "column \"{column}\" of type {other} in a stored table"
            )));
        }
    })
}

/// Casts `batch` onto `schema` column by column (names and order already match).
pub fn conform_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return Err(Error::InvalidArgument(format!(
            "expected {} columns, got {}",
            schema.fields().len(),
            batch.num_columns()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(col, field)| {
            if col.data_type() == field.data_type() {
                Ok(col.clone())
            } else {
                cast(col, field.data_type()).map_err(|e| Error::DataFusion(e.into()))
            }
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::DataFusion(e.into()))
}

/// A user table: its catalog entry plus the cached Delta state.
pub struct StoredTable {
    /// The catalog entry.
    pub entry: TableEntry,
    /// The Arrow schema scans produce.
    pub schema: SchemaRef,
    root: ObjectStoreRoot,
    state: RwLock<Option<DeltaTable>>,
    /// Serializes commits to this table.
    write_lock: Mutex<()>,
    /// Parsed commit files; they are immutable, so they are read once.
    history_cache: StdMutex<BTreeMap<i64, VersionInfo>>,
}

impl fmt::Debug for StoredTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredTable")
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

impl StoredTable {
    /// A table whose Delta log is read on first use, not now.
    pub fn new(entry: TableEntry, root: ObjectStoreRoot) -> Result<Self> {
        let delta: StructType = serde_json::from_str(&entry.delta_schema)
            .map_err(|e| Error::corrupt(format!("schema of table {}", entry.name), e))?;
        let schema = delta_to_arrow(&delta)?;
        Ok(Self {
            entry,
            schema,
            root,
            state: RwLock::new(None),
            write_lock: Mutex::new(()),
            history_cache: StdMutex::new(BTreeMap::new()),
        })
    }

    /// A table just created, with its loaded Delta state.
    pub fn with_state(entry: TableEntry, root: ObjectStoreRoot, table: DeltaTable) -> Result<Self> {
        let this = Self::new(entry, root)?;
        *this.state.try_write().expect("a new table's lock is free") = Some(table);
        Ok(this)
    }

    /// The object store root the table lives in.
    pub fn root(&self) -> &ObjectStoreRoot {
        &self.root
    }

    /// The latest committed state, loading it on first use.
    pub async fn latest(&self) -> Result<DeltaTable> {
        if let Some(t) = self.state.read().await.as_ref() {
            return Ok(t.clone());
        }
        let mut guard = self.state.write().await;
        if let Some(t) = guard.as_ref() {
            return Ok(t.clone());
        }
        let table = self.root.open_table(&self.entry.location, None).await?;
        *guard = Some(table.clone());
        Ok(table)
    }

    /// The table as of `version`.
    pub async fn at_version(&self, version: i64) -> Result<DeltaTable> {
        let latest = self.latest().await?.version().unwrap_or(0);
        let Some(wanted) = u64::try_from(version).ok().filter(|v| *v <= latest) else {
            return Err(Error::InvalidArgument(format!(
                "table \"{}\" has no version {version} (versions are 0 to {latest})",
                self.entry.name
            )));
        };
        self.root
            .open_table(&self.entry.location, Some(wanted))
            .await
    }

    /// Appends `batches` as one commit; returns the number of rows written.
    ///
    /// An append of no rows commits nothing, as no version would differ from the last.
    pub async fn append(&self, batches: Vec<RecordBatch>) -> Result<u64> {
        let batches = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| conform_batch(b, &self.schema))
            .collect::<Result<Vec<_>>>()?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows == 0 {
            return Ok(0);
        }
        let _guard = self.write_lock.lock().await;
        let table = self.latest().await?;
        let table = table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .await?;
        *self.state.write().await = Some(table);
        Ok(rows as u64)
    }

    /// Every version of the table, oldest first.
    pub async fn history(&self) -> Result<Vec<VersionInfo>> {
        let latest = self.latest().await?.version().map_or(-1, |v| v as i64);
        let cached = {
            let cache = self
                .history_cache
                .lock()
                .expect("history cache lock poisoned");
            cache.len() as i64 == latest + 1
        };
        if !cached {
            let fresh = self.root.history(&self.entry.location).await?;
            let mut cache = self
                .history_cache
                .lock()
                .expect("history cache lock poisoned");
            for info in fresh {
                cache.insert(info.version, info);
            }
        }
        let cache = self
            .history_cache
            .lock()
            .expect("history cache lock poisoned");
        Ok(cache.range(..=latest).map(|(_, v)| v.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_file_names() {
        assert_eq!(commit_file_version("00000000000000000003.json"), Some(3));
        assert_eq!(
            commit_file_version("00000000000000000003.checkpoint.parquet"),
            None
        );
        assert_eq!(commit_file_version("_last_checkpoint"), None);
        assert_eq!(commit_file_version("3.json"), None);
    }

    #[test]
    fn commit_info_is_parsed() {
        let commit = br#"{"protocol":{"minReaderVersion":1}}
{"commitInfo":{"timestamp":1700000000000,"operation":"WRITE","operationMetrics":{"num_added_rows":5}}}
"#;
        let info = VersionInfo::from_commit(2, commit).expect("parse");
        assert_eq!(info.version, 2);
        assert_eq!(info.operation, "WRITE");
        assert_eq!(info.rows_added, 5);
        assert_eq!(info.committed_at_ms, 1_700_000_000_000);
        assert!(VersionInfo::from_commit(0, b"garbage").is_err());
    }

    #[test]
    fn schemas_are_made_storable() {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
                false,
            ),
            Field::new(
                "v",
                DataType::List(Arc::new(Field::new("item", DataType::Float64, true))),
                true,
            ),
        ]);
        let (_, arrow) = storable_schema(&schema).expect("storable");
        assert_eq!(arrow.field(0).data_type(), &DataType::Utf8);
        assert!(matches!(
            arrow.field(1).data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, Some(_))
        ));
        assert!(!arrow.field(1).is_nullable());
        let null = Schema::new(vec![Field::new("n", DataType::Null, true)]);
        assert!(matches!(
            storable_schema(&null),
            Err(Error::InvalidArgument(_))
        ));
    }
}
