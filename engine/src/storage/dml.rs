//! `DELETE`, `UPDATE` and `TRUNCATE` on stored tables: each is one Delta commit (one new
//! version) made by deltalake's own operations, which rewrite only the files holding
//! matching rows. Earlier versions stay readable with `table_at` until a vacuum.
//!
//! DataFusion plans the statement and hands the provider its filters and assignments;
//! the provider returns a [`DataSinkExec`] whose sink runs the operation when executed
//! (not when planned), so `EXPLAIN` and prepared statements change nothing.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue, TableReference};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::{MergeIntoAction, MergeIntoClause, MergeIntoClauseKind};
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use deltalake::DeltaTable;

use crate::error::{Error, Result};
use crate::storage::StoredTable;

/// What a [`DmlSink`] does.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// `DELETE FROM t [WHERE p]`.
    Delete(Option<Expr>),
    /// `UPDATE t SET c = e, … [WHERE p]`.
    Update(Vec<(String, Expr)>, Option<Expr>),
    /// `TRUNCATE t`.
    Truncate,
    /// `MERGE INTO t USING s ON … WHEN …`.
    Merge(Box<MergeSpec>),
}

/// A `MERGE` as deltalake takes it: the join predicate and the clauses, with column
/// references qualified by the two aliases.
#[derive(Debug, Clone)]
pub(crate) struct MergeSpec {
    /// The target's alias in the expressions.
    pub target: String,
    /// The source's alias in the expressions.
    pub source: String,
    /// The `ON` predicate.
    pub on: Expr,
    /// The `WHEN` clauses, in order.
    pub clauses: Vec<MergeIntoClause>,
}

impl Change {
    fn name(&self) -> &'static str {
        match self {
            Change::Delete(_) => "DELETE",
            Change::Update(..) => "UPDATE",
            Change::Truncate => "TRUNCATE",
            Change::Merge(_) => "MERGE",
        }
    }
}

/// Column references without their table qualifier: deltalake resolves predicates
/// against the table's own schema, where columns have no qualifier.
fn unqualified(expr: Expr) -> Result<Expr> {
    Ok(expr
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) if c.relation.is_some() => {
                    Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                }
                other => Transformed::no(other),
            })
        })
        .map_err(Error::DataFusion)?
        .data)
}

/// The `WHERE` of a statement as one predicate (`None`: every row).
pub(crate) fn predicate(filters: Vec<Expr>) -> Result<Option<Expr>> {
    let predicate = conjunction(filters).map(unqualified).transpose()?;
    if let Some(p) = &predicate {
        let nodes = super::provider::filter_nodes(p, MAX_DML_PREDICATE_NODES);
        if nodes > MAX_DML_PREDICATE_NODES {
            return Err(Error::TooComplex(format!(
                "the WHERE clause of an UPDATE or DELETE has more than {MAX_DML_PREDICATE_NODES} terms (counting each IN-list value); split the statement, or join against a table of the keys"
            )));
        }
    }
    Ok(predicate)
}

/// The most terms an UPDATE's or DELETE's predicate may have: deltalake prunes files with
/// it recursively, a stack frame per term (20,000 `IN` values aborted the server).
const MAX_DML_PREDICATE_NODES: usize = 4_000;

/// Assignments for deltalake: unqualified, and without the `c = c` DataFusion adds for
/// every column the statement leaves alone.
pub(crate) fn assignments(assignments: Vec<(String, Expr)>) -> Result<Vec<(String, Expr)>> {
    let mut out = Vec::new();
    for (column, expr) in assignments {
        let expr = unqualified(expr)?;
        if matches!(&expr, Expr::Column(c) if c.name == column) {
            continue;
        }
        out.push((column, expr));
    }
    Ok(out)
}

/// Column references qualified by a bare name: deltalake matches qualifiers against the
/// merge's aliases, which are bare names.
fn bare_qualifiers(expr: Expr) -> Result<Expr> {
    // deltalake prints predicates into the commit; it cannot print an alias.
    Ok(expr
        .unalias_nested()
        .data
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) => match &c.relation {
                    Some(r) if !matches!(r, TableReference::Bare { .. }) => {
                        let bare = TableReference::bare(r.table());
                        Transformed::yes(Expr::Column(Column::new(Some(bare), c.name)))
                    }
                    _ => Transformed::no(Expr::Column(c)),
                },
                other => Transformed::no(other),
            })
        })
        .map_err(Error::DataFusion)?
        .data)
}

/// The [`MergeSpec`] of a `MERGE` DataFusion planned: `merge_schema` holds the target's
/// columns (`target_columns` of them) then the source's, with their qualifiers.
pub(crate) fn merge_spec(
    merge_schema: &DFSchema,
    target_columns: usize,
    on: Expr,
    clauses: Vec<MergeIntoClause>,
) -> Result<MergeSpec> {
    let qualifier = |i: usize| {
        merge_schema
            .qualified_field(i)
            .0
            .map(|q| q.table().to_string())
            .unwrap_or_default()
    };
    let target = qualifier(0);
    let source = if merge_schema.fields().len() > target_columns {
        qualifier(target_columns)
    } else {
        String::new()
    };
    // DataFusion qualifies the target's columns by the table's name, while the
    // expressions keep the alias the statement gave it (`MERGE INTO labels t …`): the
    // target's alias is whatever name, other than the source's, the expressions use.
    let mut named = std::collections::BTreeSet::new();
    let mut collect = |e: &Expr| {
        let _ = e.apply(|e| {
            if let Expr::Column(c) = e
                && let Some(r) = &c.relation
            {
                named.insert(r.table().to_string());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
    };
    collect(&on);
    for c in &clauses {
        if let Some(p) = &c.predicate {
            collect(p);
        }
        match &c.action {
            MergeIntoAction::Update(sets) => sets.iter().for_each(|(_, e)| collect(e)),
            MergeIntoAction::Insert { values, .. } => values.iter().for_each(&mut collect),
            MergeIntoAction::Delete => {}
        }
    }
    named.remove(&source);
    let target = match named.len() {
        1 => named.into_iter().next().unwrap_or(target),
        _ => target,
    };
    if target.is_empty() || source.is_empty() || target == source {
        return Err(Error::NotSupported(
            "MERGE whose source and target are not told apart by name (give the source an alias)"
                .into(),
        ));
    }
    let clauses = clauses
        .into_iter()
        .map(|c| {
            Ok(MergeIntoClause {
                kind: c.kind,
                predicate: c.predicate.map(bare_qualifiers).transpose()?,
                action: match c.action {
                    MergeIntoAction::Update(sets) => MergeIntoAction::Update(
                        sets.into_iter()
                            .map(|(col, e)| Ok((col, bare_qualifiers(e)?)))
                            .collect::<Result<_>>()?,
                    ),
                    MergeIntoAction::Insert { columns, values } => MergeIntoAction::Insert {
                        columns,
                        values: values
                            .into_iter()
                            .map(bare_qualifiers)
                            .collect::<Result<_>>()?,
                    },
                    MergeIntoAction::Delete => MergeIntoAction::Delete,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MergeSpec {
        target,
        source,
        on: bare_qualifiers(on)?,
        clauses,
    })
}

/// Rows in the table's live files, from the files' statistics (`None` if a file has
/// none).
fn live_rows(table: &DeltaTable) -> Option<u64> {
    let snapshot = table.snapshot().ok()?;
    snapshot
        .log_data()
        .iter()
        .map(|f| f.num_records().map(|n| n as u64))
        .sum()
}

impl StoredTable {
    /// Runs `change` as one commit; returns the rows deleted or updated.
    ///
    /// deltalake plans the rewrite in a session of its own (its planner runs the custom
    /// nodes it inserts), so predicates and values may use DataFusion's built-in
    /// functions, not runbase's.
    pub(crate) async fn change(
        &self,
        change: &Change,
        source: Option<datafusion::prelude::DataFrame>,
    ) -> Result<u64> {
        if let Change::Update(sets, _) = change {
            for (column, expr) in sets {
                let nullable = self
                    .schema
                    .field_with_name(column)
                    .map(|f| f.is_nullable())
                    .map_err(|_| {
                        Error::ColumnNotFound(format!("column \"{column}\" does not exist"))
                    })?;
                if !nullable && matches!(expr, Expr::Literal(v, _) if v.is_null()) {
                    return Err(Error::NotNullViolation(format!(
                        "null value in column \"{column}\" violates not-null constraint"
                    )));
                }
            }
        }
        let _guard = self.write_lock.lock().await;
        let table = self.latest().await?;
        let before = live_rows(&table);
        let (table, count) = match change {
            Change::Delete(predicate) => {
                let mut op = table.delete();
                if let Some(p) = predicate {
                    op = op.with_predicate(p.clone());
                }
                let (table, metrics) = op.await?;
                let count = match metrics.num_deleted_rows {
                    Some(n) => n as u64,
                    None => before
                        .zip(live_rows(&table))
                        .map_or(0, |(b, a)| b.saturating_sub(a)),
                };
                (table, count)
            }
            Change::Truncate => {
                let (table, _) = table.delete().await?;
                let count = before
                    .zip(live_rows(&table))
                    .map_or(0, |(b, a)| b.saturating_sub(a));
                (table, count)
            }
            Change::Merge(spec) => {
                let source = source
                    .ok_or_else(|| Error::Internal("MERGE without its source rows".into()))?;
                self.merge(table, spec, source).await?
            }
            Change::Update(sets, predicate) => {
                if sets.is_empty() {
                    return Ok(0);
                }
                let mut op = table.update();
                for (column, expr) in sets {
                    op = op.with_update(column.as_str(), expr.clone());
                }
                if let Some(p) = predicate {
                    op = op.with_predicate(p.clone());
                }
                let (table, metrics) = op.await?;
                (table, metrics.num_updated_rows as u64)
            }
        };
        *self.state.write().await = Some(table);
        Ok(count)
    }
}

impl StoredTable {
    /// Runs a `MERGE` of `source` into `table` (the latest state); returns the new state
    /// and the rows inserted, updated and deleted.
    async fn merge(
        &self,
        table: DeltaTable,
        spec: &MergeSpec,
        source: datafusion::prelude::DataFrame,
    ) -> Result<(DeltaTable, u64)> {
        let columns: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        // deltalake reports a NULL into a NOT NULL column of a MERGE only as text; guard
        // the values written to such columns, so the violation is known as one (23502).
        let violation: Arc<std::sync::Mutex<Option<Error>>> = Arc::default();
        let guard = |column: &str, value: Expr| -> Expr {
            match self.schema.field_with_name(column) {
                Ok(f) if !f.is_nullable() => NotNullGuard::wrap(column, value, &violation),
                _ => value,
            }
        };
        let mut op = table
            .merge(source, spec.on.clone())
            .with_source_alias(&spec.source)
            .with_target_alias(&spec.target);
        for clause in &spec.clauses {
            let predicate = clause.predicate.clone();
            let unsupported = |what: &str| Err(Error::NotSupported(format!("MERGE … {what}")));
            op = match (&clause.kind, &clause.action) {
                (MergeIntoClauseKind::Matched, MergeIntoAction::Update(sets)) => op
                    .when_matched_update(|mut u| {
                        if let Some(p) = predicate {
                            u = u.predicate(p);
                        }
                        for (c, e) in sets {
                            u = u.update(c.as_str(), guard(c, e.clone()));
                        }
                        u
                    })?,
                (MergeIntoClauseKind::Matched, MergeIntoAction::Delete) => {
                    op.when_matched_delete(|mut d| {
                        if let Some(p) = predicate {
                            d = d.predicate(p);
                        }
                        d
                    })?
                }
                (
                    kind,
                    MergeIntoAction::Insert {
                        columns: named,
                        values,
                    },
                ) if kind.is_not_matched_by_target() => {
                    let named = if named.is_empty() { &columns } else { named };
                    if named.len() != values.len() {
                        return Err(Error::InvalidArgument(format!(
                            "MERGE … INSERT names {} columns but gives {} values",
                            named.len(),
                            values.len()
                        )));
                    }
                    op.when_not_matched_insert(|mut i| {
                        if let Some(p) = predicate {
                            i = i.predicate(p);
                        }
                        for (c, v) in named.iter().zip(values) {
                            i = i.set(c.as_str(), guard(c, v.clone()));
                        }
                        // Columns the INSERT leaves out take their default, else NULL.
                        for c in columns.iter().filter(|c| !named.contains(c)) {
                            let value = match self.default_expr(c) {
                                Some(d) => d.clone(),
                                None => Expr::Literal(
                                    ScalarValue::try_from(
                                        self.schema
                                            .field_with_name(c)
                                            .map(|f| f.data_type().clone())
                                            .unwrap_or(DataType::Null),
                                    )
                                    .unwrap_or(ScalarValue::Null),
                                    None,
                                ),
                            };
                            i = i.set(c.as_str(), guard(c, value));
                        }
                        i
                    })?
                }
                (MergeIntoClauseKind::NotMatchedBySource, MergeIntoAction::Update(sets)) => op
                    .when_not_matched_by_source_update(|mut u| {
                        if let Some(p) = predicate {
                            u = u.predicate(p);
                        }
                        for (c, e) in sets {
                            u = u.update(c.as_str(), guard(c, e.clone()));
                        }
                        u
                    })?,
                (MergeIntoClauseKind::NotMatchedBySource, MergeIntoAction::Delete) => op
                    .when_not_matched_by_source_delete(|mut d| {
                        if let Some(p) = predicate {
                            d = d.predicate(p);
                        }
                        d
                    })?,
                (kind, action) => return unsupported(&format!("{kind:?} THEN {action:?}")),
            };
        }
        let (table, metrics) = match op.await {
            Ok(done) => done,
            Err(e) => {
                let kept = violation
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                return Err(kept.unwrap_or(e.into()));
            }
        };
        let count = metrics.num_target_rows_inserted
            + metrics.num_target_rows_updated
            + metrics.num_target_rows_deleted;
        Ok((table, count as u64))
    }
}

/// `runbase_not_null(value)`: passes `value` through, or fails on a NULL, keeping the
/// violation (for the column it guards) where the statement can find it.
#[derive(Debug)]
struct NotNullGuard {
    column: String,
    violation: Arc<std::sync::Mutex<Option<Error>>>,
    signature: datafusion::logical_expr::Signature,
}

impl NotNullGuard {
    fn wrap(column: &str, value: Expr, violation: &Arc<std::sync::Mutex<Option<Error>>>) -> Expr {
        let udf = datafusion::logical_expr::ScalarUDF::new_from_impl(Self {
            column: column.to_string(),
            violation: violation.clone(),
            signature: datafusion::logical_expr::Signature::any(
                1,
                datafusion::logical_expr::Volatility::Immutable,
            ),
        });
        udf.call(vec![value])
    }
}

impl PartialEq for NotNullGuard {
    fn eq(&self, other: &Self) -> bool {
        self.column == other.column && Arc::ptr_eq(&self.violation, &other.violation)
    }
}

impl Eq for NotNullGuard {}

impl std::hash::Hash for NotNullGuard {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.column.hash(state);
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for NotNullGuard {
    fn name(&self) -> &str {
        "runbase_not_null"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Null))
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        use datafusion::logical_expr::ColumnarValue;
        let value = args.args.into_iter().next().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("runbase_not_null takes 1 argument".into())
        })?;
        let has_null = match &value {
            ColumnarValue::Array(a) => a.logical_null_count() > 0,
            ColumnarValue::Scalar(v) => v.is_null() && args.number_rows > 0,
        };
        if has_null {
            let error = Error::NotNullViolation(format!(
                "null value in column \"{}\" violates not-null constraint",
                self.column
            ));
            let message = error.to_string();
            let mut slot = self
                .violation
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            slot.get_or_insert(error);
            return Err(datafusion::error::DataFusionError::Execution(message));
        }
        Ok(value)
    }
}

/// What `OPTIMIZE` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptimizeReport {
    /// Small files rewritten.
    pub files_removed: u64,
    /// Files they were compacted into.
    pub files_added: u64,
}

impl StoredTable {
    /// `OPTIMIZE`: compacts small files into larger ones, as one version (nothing is
    /// committed when there is nothing to compact). Reads of earlier versions keep working
    /// until a vacuum removes the old files.
    pub async fn optimize(&self) -> Result<OptimizeReport> {
        let _guard = self.write_lock.lock().await;
        let table = self.latest().await?;
        let (table, metrics) = table.optimize().await?;
        *self.state.write().await = Some(table);
        Ok(OptimizeReport {
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
        })
    }

    /// `VACUUM`: deletes the files that no version within `retain_hours` (the table's
    /// retention, 7 days, by default) needs; returns how many (would be) deleted. A
    /// version whose files are gone can no longer be read. The whole table directory is
    /// listed, so files that no version ever referenced (those of a failed or abandoned
    /// load) go too, once older than the retention.
    pub async fn vacuum(&self, retain_hours: Option<u64>, dry_run: bool) -> Result<usize> {
        let _guard = self.write_lock.lock().await;
        let table = self.latest().await?;
        let mut op = table
            .vacuum()
            .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
            .with_dry_run(dry_run);
        if let Some(hours) = retain_hours {
            let hours = i64::try_from(hours).unwrap_or(i64::MAX / 3600);
            // An explicit RETAIN is what the user asked for, shorter than the table's
            // setting or not.
            op = op
                .with_retention_period(chrono::Duration::hours(hours))
                .with_enforce_retention_duration(false);
        }
        let (table, metrics) = op.await?;
        *self.state.write().await = Some(table);
        Ok(metrics.files_deleted.len())
    }
}

/// The plan of a `DELETE`, `UPDATE` or `TRUNCATE`: runs the change when executed and
/// reports the row count as DataFusion's DML plans do.
pub(crate) fn plan(table: Arc<StoredTable>, change: Change) -> Arc<dyn ExecutionPlan> {
    let schema: SchemaRef = Arc::new(Schema::empty());
    let sink = DmlSink {
        table,
        change,
        schema: schema.clone(),
    };
    Arc::new(DataSinkExec::new(
        Arc::new(EmptyExec::new(schema)),
        Arc::new(sink),
        None,
    ))
}

/// The plan of a `MERGE`: its input is the source; the sink collects the source's rows
/// (the staging table's, held in memory) and runs the merge as one commit.
pub(crate) fn merge_plan(
    table: Arc<StoredTable>,
    spec: MergeSpec,
    source: Arc<dyn ExecutionPlan>,
) -> Arc<dyn ExecutionPlan> {
    let schema = source.schema();
    let sink = DmlSink {
        table,
        change: Change::Merge(Box::new(spec)),
        schema,
    };
    Arc::new(DataSinkExec::new(source, Arc::new(sink), None))
}

struct DmlSink {
    table: Arc<StoredTable>,
    change: Change,
    schema: SchemaRef,
}

impl fmt::Debug for DmlSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmlSink")
            .field("table", &self.table.entry.name)
            .field("change", &self.change)
            .finish()
    }
}

impl DisplayAs for DmlSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Delta{}: table={}",
            self.change.name(),
            self.table.entry.name
        )
    }
}

#[async_trait]
impl DataSink for DmlSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let source = match &self.change {
            Change::Merge(spec) => {
                use futures::TryStreamExt;
                let schema = data.schema();
                let batches: Vec<_> = data.try_collect().await?;
                // The source's columns under its alias, as the merge's expressions name them.
                let ctx = datafusion::prelude::SessionContext::new();
                let mem = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
                let df = ctx.read_table(Arc::new(mem))?.alias(&spec.source)?;
                Some(df)
            }
            _ => None,
        };
        Ok(self.table.change(&self.change, source).await?)
    }
}
