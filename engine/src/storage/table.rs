//! [`StoredTable`]: a user table's catalog entry and its cached Delta state.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex as StdMutex;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::Expr;
use deltalake::DeltaTable;
use deltalake::kernel::StructType;
use deltalake::protocol::SaveMode;
use tokio::sync::{Mutex, RwLock};

use super::*;
use crate::catalog::TableEntry;
use crate::error::{Error, Result};

/// A user table: its catalog entry plus the cached Delta state.
pub struct StoredTable {
    /// The catalog entry.
    pub entry: TableEntry,
    /// The Arrow schema scans produce.
    pub schema: SchemaRef,
    root: ObjectStoreRoot,
    pub(super) state: RwLock<Option<DeltaTable>>,
    /// Serializes commits to this table.
    pub(crate) write_lock: Mutex<()>,
    /// Parsed commit files; they are immutable, so they are read once.
    history_cache: StdMutex<BTreeMap<i64, VersionInfo>>,
    /// Column defaults, as the values and the expressions INSERT fills in.
    defaults: std::collections::HashMap<String, (ScalarValue, Expr)>,
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
        let mut defaults = std::collections::HashMap::new();
        for (column, text) in &entry.column_defaults {
            let field = schema.field_with_name(column).map_err(|_| {
                Error::corrupt(
                    format!("defaults of table {}", entry.name),
                    format!("no column {column}"),
                )
            })?;
            let value = ScalarValue::try_from_string(text.clone(), field.data_type())
                .map_err(|e| Error::corrupt(format!("default of {}.{column}", entry.name), e))?;
            defaults.insert(column.clone(), (value.clone(), Expr::Literal(value, None)));
        }
        Ok(Self {
            defaults,
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

    /// The default of `column`, if it has one.
    pub fn default_value(&self, column: &str) -> Option<&ScalarValue> {
        self.defaults.get(column).map(|(v, _)| v)
    }

    /// The default of `column` as the expression INSERT fills in.
    pub fn default_expr(&self, column: &str) -> Option<&Expr> {
        self.defaults.get(column).map(|(_, e)| e)
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

    /// Appends the rows of `input` as one commit, writing Parquet files as batches arrive
    /// (memory stays bounded whatever the size); returns the number of rows written.
    ///
    /// An input of no rows commits nothing. If the input fails (a bad row, a client that
    /// goes away), nothing is committed; files already written are unreferenced and
    /// `VACUUM` removes them. Other writes to the table wait until this one commits.
    pub async fn append_stream(&self, input: SendableRecordBatchStream) -> Result<u64> {
        let mut conform = stream::Conform::new(input, self.schema.clone()).await?;
        let Some(rows) = conform.stream.take() else {
            return Ok(0);
        };
        let plan = stream::stream_plan(rows)?;
        let _guard = self.write_lock.lock().await;
        let table = self.latest().await?;
        let written = table
            .write(vec![])
            .with_input_plan(plan)
            .with_save_mode(SaveMode::Append)
            .with_target_file_size(std::num::NonZeroU64::new(stream::TARGET_FILE_BYTES))
            .await;
        match written {
            Ok(table) => {
                *self.state.write().await = Some(table);
                Ok(conform.rows())
            }
            Err(e) => Err(conform.failure(e.into())),
        }
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
    use std::sync::Arc;

    use super::*;
    use crate::storage::delta::commit_file_version;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

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
