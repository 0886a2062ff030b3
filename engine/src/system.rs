//! System tables in the `runbase` schema, computed when they are scanned.
//!
//! Other crates add their own through [`SystemTable`] and
//! [`crate::Database::register_system_table`] (`udfs` adds `runbase.devices`).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{Error, Result};
use crate::storage::schema::UserSchema;

/// A read-only table whose rows are computed on each scan.
#[async_trait]
pub trait SystemTable: Debug + Send + Sync + 'static {
    /// The table's schema.
    fn schema(&self) -> SchemaRef;
    /// The table's current rows.
    async fn rows(&self) -> Result<RecordBatch>;
}

/// Adapts a [`SystemTable`] to DataFusion.
#[derive(Debug)]
pub struct SystemTableProvider<T: SystemTable>(pub Arc<T>);

#[async_trait]
impl<T: SystemTable> TableProvider for SystemTableProvider<T> {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self.0.rows().await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.0.schema(),
            projection.cloned(),
        )?)
    }
}

/// `runbase.table_versions`: every version of every user table.
#[derive(Debug)]
pub struct TableVersions {
    tables: Arc<UserSchema>,
    schema: SchemaRef,
}

impl TableVersions {
    /// The system table over `tables`.
    pub fn new(tables: Arc<UserSchema>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("version", DataType::Int64, false),
            Field::new(
                "committed_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("operation", DataType::Utf8, false),
            Field::new("rows_added", DataType::Int64, false),
            Field::new("rows_removed", DataType::Int64, false),
            Field::new("rows_updated", DataType::Int64, false),
        ]));
        Self { tables, schema }
    }
}

#[async_trait]
impl SystemTable for TableVersions {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        let (mut names, mut versions, mut times, mut ops, mut rows) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut removed, mut updated) = (vec![], vec![]);
        for table in self.tables.all() {
            for v in table.history().await? {
                names.push(table.entry.name.clone());
                versions.push(v.version);
                times.push(v.committed_at_ms.saturating_mul(1000));
                ops.push(v.operation);
                rows.push(v.rows_added);
                removed.push(v.rows_removed);
                updated.push(v.rows_updated);
            }
        }
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(Int64Array::from(versions)),
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
                Arc::new(StringArray::from(ops)),
                Arc::new(Int64Array::from(rows)),
                Arc::new(Int64Array::from(removed)),
                Arc::new(Int64Array::from(updated)),
            ],
        )
        .map_err(|e| Error::DataFusion(e.into()))
    }
}

/// `runbase.tables`: every user table with the URI of its Delta table, so other engines
/// (deltalake, polars, DuckDB, Spark) can read it where it lives.
#[derive(Debug)]
pub struct Tables {
    tables: Arc<UserSchema>,
    schema: SchemaRef,
}

impl Tables {
    /// The system table over `tables`.
    pub fn new(tables: Arc<UserSchema>) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_schema", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("uri", DataType::Utf8, false),
            Field::new("format", DataType::Utf8, false),
            Field::new("version", DataType::Int64, false),
            Field::new("files", DataType::Int64, false),
            Field::new("min_reader_version", DataType::Int64, false),
            Field::new("min_writer_version", DataType::Int64, false),
            Field::new(
                "created_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        Self { tables, schema }
    }
}

#[async_trait]
impl SystemTable for Tables {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        let mut tables = self.tables.all();
        tables.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
        let (mut schemas, mut names, mut uris, mut versions, mut files) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut readers, mut writers, mut created) = (vec![], vec![], vec![]);
        for table in tables {
            let state = table.latest().await?;
            let snapshot = state.snapshot()?;
            schemas.push(table.entry.schema.clone());
            names.push(table.entry.name.clone());
            uris.push(table.root().table_url(&table.entry.location)?.to_string());
            versions.push(snapshot.version() as i64);
            files.push(i64::try_from(snapshot.log_data().num_files()).unwrap_or(i64::MAX));
            readers.push(i64::from(snapshot.protocol().min_reader_version()));
            writers.push(i64::from(snapshot.protocol().min_writer_version()));
            created.push(table.entry.created_at_us);
        }
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from(schemas)),
                Arc::new(StringArray::from(names)),
                Arc::new(StringArray::from(uris)),
                Arc::new(StringArray::from(vec!["delta"; versions.len()])),
                Arc::new(Int64Array::from(versions)),
                Arc::new(Int64Array::from(files)),
                Arc::new(Int64Array::from(readers)),
                Arc::new(Int64Array::from(writers)),
                Arc::new(TimestampMicrosecondArray::from(created).with_timezone("UTC")),
            ],
        )
        .map_err(|e| Error::DataFusion(e.into()))
    }
}
