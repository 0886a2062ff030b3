//! DataFusion providers over stored tables: scans, `INSERT` sinks and `table_at`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use deltalake::DeltaTable;

use crate::error::Error;
use crate::storage::StoredTable;
use crate::storage::dml::{self, Change};
use crate::storage::schema::UserSchema;

/// Builds a DataFusion scan over one loaded Delta version.
async fn delta_scan(
    table: &DeltaTable,
    state: &dyn Session,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    table
        .update_datafusion_session(state)
        .map_err(|e| DataFusionError::External(Box::new(Error::from(e))))?;
    let mut builder = table.table_provider();
    // The scan's schema follows the session's view-type setting, which runbase turns off;
    // pass the session so the scan agrees with the catalog schema.
    if let Some(session) = state.as_any().downcast_ref::<SessionState>() {
        builder = builder.with_session(Arc::new(session.clone()));
    }
    let provider = builder.await?;
    // A scan that reads no column (`SELECT 1 FROM t LIMIT 2`, `EXISTS (…)`) is answered
    // from file metadata by an operator that ignores the limit while telling DataFusion
    // to push it down past itself, so the limit vanished and every row came back. With a
    // limit, read one column and project it away instead.
    if limit.is_some()
        && projection.is_some_and(|p| p.is_empty())
        && !provider.schema().fields().is_empty()
    {
        let plan = provider.scan(state, Some(&vec![0]), filters, limit).await?;
        let none: Vec<datafusion::physical_plan::projection::ProjectionExpr> = Vec::new();
        return Ok(Arc::new(
            datafusion::physical_plan::projection::ProjectionExec::try_new(none, plan)?,
        ));
    }
    provider.scan(state, projection, filters, limit).await
}

/// The most expression nodes (counting each value of an `IN` list) a filter pushed into
/// the Delta scan may have. deltalake turns a pushed filter into a file-pruning predicate
/// recursively, one stack frame per operand: `a IN (…20,000 values…)` overflowed a
/// worker's stack and aborted the server. Larger filters run above the scan instead.
const MAX_PUSHED_FILTER_NODES: usize = 256;

/// Whether `filter` is small enough to push into the Delta scan.
fn prunes_safely(filter: &Expr) -> bool {
    filter_nodes(filter, MAX_PUSHED_FILTER_NODES) <= MAX_PUSHED_FILTER_NODES
}

/// The nodes of `filter`, each value of an `IN` list counted; counting stops past `limit`.
pub(crate) fn filter_nodes(filter: &Expr, limit: usize) -> usize {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut nodes = 0usize;
    let _ = filter.apply(|e| {
        nodes += match e {
            Expr::InList(list) => list.list.len() + 1,
            _ => 1,
        };
        Ok(if nodes > limit {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    nodes
}

/// A user table as DataFusion sees it: the latest version, which takes `INSERT`s, or one
/// past version (`table_at(name, version)`), which is read-only.
#[derive(Debug)]
pub struct UserTableProvider {
    table: Arc<StoredTable>,
    version: Option<i64>,
    /// The columns scans produce: the table's, or those of the past version read.
    schema: SchemaRef,
    /// The past version, when it was loaded while planning (`table_at`): scans read it
    /// rather than loading it again.
    loaded: Option<DeltaTable>,
}

impl UserTableProvider {
    /// The latest version of `table`.
    pub fn new(table: Arc<StoredTable>) -> Self {
        Self {
            schema: table.schema.clone(),
            table,
            version: None,
            loaded: None,
        }
    }

    /// The stored table `provider` reads at its latest version, if it is such a user
    /// table (the table a `COPY` or `INSERT` into it writes).
    pub fn writable_table(provider: &dyn TableProvider) -> Option<Arc<StoredTable>> {
        (provider as &dyn std::any::Any)
            .downcast_ref::<Self>()
            .filter(|p| p.version.is_none())
            .map(|p| p.table.clone())
    }

    /// The stored table.
    pub fn stored(&self) -> &Arc<StoredTable> {
        &self.table
    }

    /// The version read, or `None` for the latest.
    pub fn version(&self) -> Option<i64> {
        self.version
    }

    /// `table` as of `version`, a version with the table's current columns.
    pub fn at_version(table: Arc<StoredTable>, version: i64) -> Self {
        Self {
            schema: table.schema.clone(),
            table,
            version: Some(version),
            loaded: None,
        }
    }

    /// `table` as of `version`, read with the columns that version had (an `ALTER TABLE`
    /// may have changed them since).
    pub async fn as_of(table: Arc<StoredTable>, version: i64) -> crate::error::Result<Self> {
        let delta = table.at_version(version).await?;
        let schema = crate::storage::delta_to_arrow(delta.snapshot()?.schema().as_ref())?;
        Ok(Self {
            schema,
            table,
            version: Some(version),
            loaded: Some(delta),
        })
    }
}

#[async_trait]
impl TableProvider for UserTableProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        match self.version {
            None => self.table.default_expr(column),
            Some(_) => None,
        }
    }

    fn table_type(&self) -> TableType {
        match self.version {
            None => TableType::Base,
            Some(_) => TableType::Temporary,
        }
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if prunes_safely(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let table = match (&self.loaded, self.version) {
            (Some(loaded), _) => loaded.clone(),
            (None, None) => self.table.latest().await?,
            (None, Some(v)) => self.table.at_version(v).await?,
        };
        delta_scan(&table, state, projection, filters, limit).await
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if self.version.is_some() {
            return Err(Error::ReadOnly("a past table version is read-only".into()).into());
        }
        if insert_op != InsertOp::Append {
            return Err(Error::NotSupported(format!("INSERT with {insert_op}")).into());
        }
        // The sink declares every column nullable, so DataFusion's own NOT NULL check
        // (an error known only by its text) passes, and the commit's check raises
        // `Error::NotNullViolation` for the column.
        let input_schema = Arc::new(crate::storage::nullable(&self.table.schema));
        let sink = AppendSink {
            table: self.table.clone(),
            input_schema,
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    async fn delete_from(
        &self,
        _state: &dyn Session,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.writable()?;
        let change = Change::Delete(dml::predicate(filters)?);
        Ok(dml::plan(self.table.clone(), change))
    }

    async fn update(
        &self,
        _state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.writable()?;
        let change = Change::Update(dml::assignments(assignments)?, dml::predicate(filters)?);
        Ok(dml::plan(self.table.clone(), change))
    }

    async fn merge_into(
        &self,
        _state: &dyn Session,
        source: Arc<dyn ExecutionPlan>,
        merge_schema: datafusion::common::DFSchemaRef,
        on: Expr,
        clauses: Vec<datafusion::logical_expr::dml::MergeIntoClause>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.writable()?;
        let spec = dml::merge_spec(&merge_schema, self.table.schema.fields().len(), on, clauses)?;
        Ok(dml::merge_plan(self.table.clone(), spec, source))
    }

    async fn truncate(&self, _state: &dyn Session) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.writable()?;
        Ok(dml::plan(self.table.clone(), Change::Truncate))
    }
}

impl UserTableProvider {
    /// Refuses a change to a past version.
    fn writable(&self) -> DfResult<()> {
        match self.version {
            None => Ok(()),
            Some(_) => Err(Error::ReadOnly("a past table version is read-only".into()).into()),
        }
    }
}

/// Collects an `INSERT`'s rows and commits them as one table version.
struct AppendSink {
    table: Arc<StoredTable>,
    /// The table's schema with every column nullable (see `insert_into`).
    input_schema: SchemaRef,
}

impl fmt::Debug for AppendSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppendSink")
            .field("table", &self.table.entry.name)
            .finish()
    }
}

impl DisplayAs for AppendSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeltaAppend: table={}", self.table.entry.name)
    }
}

#[async_trait]
impl DataSink for AppendSink {
    fn schema(&self) -> &SchemaRef {
        &self.input_schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        Ok(self.table.append_stream(data).await?)
    }
}

/// `table_at(name, version)`: a table read as it was at a version.
#[derive(Debug)]
pub struct TableAtFunction {
    schema: Arc<UserSchema>,
}

impl TableAtFunction {
    /// The function over the tables of `schema`.
    pub fn new(schema: Arc<UserSchema>) -> Self {
        Self { schema }
    }
}

impl TableFunctionImpl for TableAtFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let [name, version] = exprs else {
            return plan_err!(
                "table_at takes 2 arguments (table name, version), got {}",
                exprs.len()
            );
        };
        let name = match literal(name) {
            Some(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::Utf8View(Some(s))
                | ScalarValue::LargeUtf8(Some(s)),
            ) => s,
            _ => {
                return plan_err!(
                    "table_at: the first argument must be a table name as a string literal"
                );
            }
        };
        let at = match literal(version) {
            Some(v) => at_of(v)?,
            None => {
                return plan_err!(
                    "table_at: the second argument must be a version (an integer) or a timestamp literal"
                );
            }
        };
        let bare = name.strip_prefix("public.").unwrap_or(&name);
        let table = self
            .schema
            .stored(bare)
            .ok_or_else(|| DataFusionError::from(Error::TableNotFound(name.clone())))?;
        // Resolved while planning, so lineage records the version actually read. The
        // history is cached after the first read of the table's log.
        let provider = crate::executor::blocking(|| {
            tokio::runtime::Handle::current().block_on(async {
                let version = match at {
                    At::Version(v) => v,
                    At::Time(us) => version_at(&table.entry.name, &table.history().await?, us)?,
                };
                UserTableProvider::as_of(table, version)
                    .await
                    .map_err(DataFusionError::from)
            })
        })?;
        Ok(Arc::new(provider))
    }
}

/// What `table_at`'s second argument names.
enum At {
    Version(i64),
    /// Microseconds since the epoch (UTC).
    Time(i64),
}

fn at_of(value: ScalarValue) -> DfResult<At> {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    let as_time = |v: ScalarValue| -> DfResult<At> {
        match v.cast_to(&DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("UTC".into()),
        ))? {
            ScalarValue::TimestampMicrosecond(Some(us), _) => Ok(At::Time(us)),
            _ => plan_err!("table_at: the timestamp must not be NULL"),
        }
    };
    match value {
        ScalarValue::TimestampSecond(..)
        | ScalarValue::TimestampMillisecond(..)
        | ScalarValue::TimestampMicrosecond(..)
        | ScalarValue::TimestampNanosecond(..)
        | ScalarValue::Date32(_)
        | ScalarValue::Date64(_) => as_time(value),
        ScalarValue::Utf8(Some(ref s))
        | ScalarValue::Utf8View(Some(ref s))
        | ScalarValue::LargeUtf8(Some(ref s))
            if s.trim().parse::<i64>().is_err() =>
        {
            as_time(ScalarValue::Utf8(Some(s.clone()))).map_err(|_| {
                Error::InvalidText(format!(
                    "table_at: {s:?} is neither a version nor a timestamp"
                ))
                .into()
            })
        }
        other => match other.cast_to(&datafusion::arrow::datatypes::DataType::Int64)? {
            ScalarValue::Int64(Some(v)) => Ok(At::Version(v)),
            _ => plan_err!("table_at: the version must not be NULL"),
        },
    }
}

/// The latest version committed at or before `us` (microseconds since the epoch).
fn version_at(name: &str, history: &[crate::storage::VersionInfo], us: i64) -> DfResult<i64> {
    let ms = us.div_euclid(1000);
    match history.iter().filter(|v| v.committed_at_ms <= ms).map(|v| v.version).max() {
        Some(v) => Ok(v),
        None => Err(Error::InvalidArgument(format!(
            "table \"{name}\" has no version at or before that time (its first version was committed at {})",
            history
                .first()
                .and_then(|v| chrono::DateTime::from_timestamp_millis(v.committed_at_ms))
                .map_or_else(String::new, |t| t.to_rfc3339())
        ))
        .into()),
    }
}

/// The value of a constant table-function argument: a literal, or a literal cast to a type.
pub fn literal(expr: &Expr) -> Option<ScalarValue> {
    match expr {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(c) => literal(&c.expr).and_then(|v| v.cast_to(c.field.data_type()).ok()),
        _ => None,
    }
}
