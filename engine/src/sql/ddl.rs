//! DDL: `CREATE TABLE [AS]` and `DROP TABLE`, which change the catalog and the object
//! store together.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Field;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Expr};

use datafusion::common::{ResolvedTableReference, TableReference};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use tracing::warn;

use crate::catalog::TableEntry;
use crate::database::{DATABASE_NAME, Database};
use crate::error::{Error, Result};
use crate::storage::schema::{PUBLIC_SCHEMA, SYSTEM_SCHEMA};
use crate::storage::{Conform, StoredTable, storable_schema, stream_plan};

impl Database {
    /// Executes `CREATE TABLE [IF NOT EXISTS] … [AS …]`; returns the rows written.
    pub(crate) async fn create_table(
        &self,
        ctx: &SessionContext,
        name: &TableReference,
        input: &LogicalPlan,
        if_not_exists: bool,
        column_defaults: BTreeMap<String, String>,
    ) -> Result<u64> {
        let resolved = resolve(name)?;
        let table_name = resolved.table.to_string();
        if self.user_schema().stored(&table_name).is_some()
            || self.user_schema().view(&table_name).is_some()
        {
            return if if_not_exists {
                Ok(0)
            } else {
                Err(Error::TableExists(table_name))
            };
        }
        let is_plain_create = matches!(input, LogicalPlan::EmptyRelation(e) if !e.produce_one_row);
        // CREATE TABLE AS: columns are nullable, as in PostgreSQL.
        let schema = if is_plain_create {
            input.schema().as_arrow().clone()
        } else {
            crate::storage::nullable(input.schema().as_arrow())
        };
        if schema.fields().is_empty() {
            // A Delta table needs a column (PostgreSQL allows none; runbase does not).
            return Err(Error::NotSupported(format!(
                "a table without columns (\"{table_name}\")"
            )));
        }
        let (delta_schema, arrow_schema) = storable_schema(&schema)?;
        let id = uuid::Uuid::new_v4().to_string();
        let location = format!("tables/{id}");
        let root = self.object_store().clone();
        // The rows stream into the new table's files as the query yields them (one commit,
        // version 0), before the catalog knows the table; only then is the name taken.
        let (delta, rows) = if is_plain_create {
            (root.create_empty(&location, &delta_schema).await?, 0)
        } else {
            let plan = ctx.state().create_physical_plan(input).await?;
            let stream = self.executor().execute(plan, ctx.task_ctx());
            let mut conform = Conform::new(stream, arrow_schema.clone()).await?;
            match conform.stream.take() {
                None => (root.create_empty(&location, &delta_schema).await?, 0),
                Some(stream) => {
                    match root.create_with_plan(&location, stream_plan(stream)?).await {
                        Ok(delta) => (delta, conform.rows()),
                        Err(e) => {
                            let e = conform.failure(e);
                            discard(&root, &location, &table_name).await;
                            return Err(e);
                        }
                    }
                }
            }
        };

        let _ddl = self.ddl_lock().lock().await;
        if self.user_schema().stored(&table_name).is_some()
            || self.user_schema().view(&table_name).is_some()
        {
            discard(&root, &location, &table_name).await;
            return if if_not_exists {
                Ok(0)
            } else {
                Err(Error::TableExists(table_name))
            };
        }
        let entry = TableEntry {
            schema: PUBLIC_SCHEMA.to_string(),
            name: table_name,
            id,
            location,
            delta_schema: serde_json::to_string(&delta_schema)
                .map_err(|e| Error::corrupt("table schema being written", e))?,
            created_at_us: chrono::Utc::now().timestamp_micros(),
            column_defaults,
        };
        // The Delta commit is durable; the catalog entry makes the table visible. A crash
        // between the two leaves an unreferenced directory, never a dangling entry.
        self.catalog().insert_table(&entry)?;
        self.user_schema()
            .add(Arc::new(StoredTable::with_state(entry, root, delta)?));
        Ok(rows)
    }

    /// Executes `DROP TABLE [IF EXISTS]`; returns whether a table was dropped.
    pub(crate) async fn drop_table(&self, name: &TableReference, if_exists: bool) -> Result<bool> {
        let resolved = resolve(name)?;
        let _ddl = self.ddl_lock().lock().await;
        let table_name = resolved.table.to_string();
        let Some(table) = self.user_schema().stored(&table_name) else {
            return if self.user_schema().view(&table_name).is_some() {
                Err(Error::WrongObjectType(format!(
                    "\"{table_name}\" is not a table (use DROP VIEW)"
                )))
            } else if if_exists {
                Ok(false)
            } else {
                Err(Error::TableNotFound(table_name))
            };
        };
        self.catalog().remove_table(PUBLIC_SCHEMA, &table_name)?;
        self.user_schema().remove(&table_name);
        // The table is gone once the catalog says so; its files are garbage from here on.
        if let Err(err) = self
            .object_store()
            .delete_table_files(&table.entry.location)
            .await
        {
            warn!(%err, table = %table_name, location = %table.entry.location, "could not delete dropped table's files");
        }
        Ok(true)
    }
}

impl Database {
    /// Executes `CREATE [OR REPLACE] VIEW name AS query` (`definition` is the statement).
    pub(crate) async fn create_view(
        &self,
        name: &TableReference,
        definition: &str,
        or_replace: bool,
    ) -> Result<()> {
        use datafusion::sql::parser::{DFParser, Statement as DfStatement};
        use datafusion::sql::sqlparser::ast::Statement as AstStatement;
        use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
        let resolved = resolve(name)?;
        let view_name = resolved.table.to_string();
        let mut statements = DFParser::parse_sql_with_dialect(definition, &PostgreSqlDialect {})?;
        let statement = statements
            .pop_front()
            .ok_or_else(|| Error::InvalidArgument("CREATE VIEW without a query".into()))?;
        let DfStatement::Statement(ast) = &statement else {
            return Err(Error::InvalidArgument("not a CREATE VIEW statement".into()));
        };
        let AstStatement::CreateView(create) = ast.as_ref() else {
            return Err(Error::InvalidArgument("not a CREATE VIEW statement".into()));
        };
        let (references, _) = datafusion::sql::resolve::resolve_table_references(&statement, true)?;
        if references
            .iter()
            .any(|r| r.table() == view_name && r.schema().is_none_or(|s| s == PUBLIC_SCHEMA))
        {
            return Err(Error::InvalidArgument(format!(
                "view \"{view_name}\" cannot refer to itself"
            )));
        }
        let entry = crate::catalog::ViewEntry {
            schema: PUBLIC_SCHEMA.to_string(),
            name: view_name.clone(),
            sql: create.query.to_string(),
            created_at_us: chrono::Utc::now().timestamp_micros(),
        };
        let _ddl = self.ddl_lock().lock().await;
        if self.user_schema().stored(&view_name).is_some() {
            return Err(Error::TableExists(view_name));
        }
        if self.user_schema().view(&view_name).is_some() && !or_replace {
            return Err(Error::TableExists(view_name));
        }
        self.catalog().put_view(&entry)?;
        self.user_schema().add_view(entry);
        Ok(())
    }

    /// Executes `DROP VIEW [IF EXISTS]`; returns whether a view was dropped.
    pub(crate) async fn drop_view(&self, name: &TableReference, if_exists: bool) -> Result<bool> {
        let resolved = resolve(name)?;
        let view_name = resolved.table.to_string();
        let _ddl = self.ddl_lock().lock().await;
        if self.user_schema().view(&view_name).is_none() {
            return if if_exists {
                Ok(false)
            } else if self.user_schema().stored(&view_name).is_some() {
                Err(Error::WrongObjectType(format!(
                    "\"{view_name}\" is not a view (use DROP TABLE)"
                )))
            } else {
                Err(Error::TableNotFound(view_name))
            };
        }
        self.catalog().remove_view(PUBLIC_SCHEMA, &view_name)?;
        self.user_schema().remove_view(&view_name);
        Ok(true)
    }
}

/// The value of a constant `DEFAULT` for `field`, as the catalog stores it (text that
/// parses back into the column's type); `None` for `DEFAULT NULL`.
pub(crate) fn constant_default(
    state: &datafusion::execution::context::SessionState,
    expr: &Expr,
    field: &Field,
) -> Result<Option<String>> {
    use datafusion::arrow::array::RecordBatchOptions;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::common::tree_node::TreeNode;
    let not_constant = || {
        Error::NotSupported(format!(
            "DEFAULT {expr} for column \"{}\" (a default must be a constant)",
            field.name()
        ))
    };
    let volatile = expr.exists(|e| {
        Ok(matches!(
            e,
            Expr::Column(_)
                | Expr::ScalarFunction(_)
                | Expr::ScalarSubquery(_)
                | Expr::AggregateFunction(_)
                | Expr::WindowFunction(_)
                | Expr::Placeholder(_)
        ))
    })?;
    if volatile {
        return Err(not_constant());
    }
    let physical = state.create_physical_expr(expr.clone(), &DFSchema::empty())?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .map_err(|e| Error::DataFusion(e.into()))?;
    let value = match physical.evaluate(&one_row)? {
        ColumnarValue::Scalar(v) => v,
        ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0)?,
    };
    let value = value.cast_to(field.data_type())?;
    if value.is_null() {
        return Ok(None);
    }
    // Arrow's own spelling of the value, which its casts parse back.
    let text = match value.cast_to(&datafusion::arrow::datatypes::DataType::Utf8)? {
        ScalarValue::Utf8(Some(text)) => text,
        _ => return Err(not_constant()),
    };
    // Only what reads back as the same value is kept.
    match ScalarValue::try_from_string(text.clone(), field.data_type()) {
        Ok(back) if back == value => Ok(Some(text)),
        _ => Err(not_constant()),
    }
}

/// Deletes the files of a table that never made it into the catalog.
async fn discard(root: &crate::storage::ObjectStoreRoot, location: &str, name: &str) {
    if let Err(err) = root.delete_table_files(location).await {
        warn!(%err, table = %name, %location, "could not delete the files of a table not created");
    }
}

/// Resolves a table name for DDL: only `public` (the default) may hold user tables.
pub(crate) fn resolve(name: &TableReference) -> Result<ResolvedTableReference> {
    let resolved = name.clone().resolve(DATABASE_NAME, PUBLIC_SCHEMA);
    if resolved.catalog.as_ref() != DATABASE_NAME {
        return Err(Error::InvalidArgument(format!(
            "cross-database references are not implemented: {name}"
        )));
    }
    match resolved.schema.as_ref() {
        PUBLIC_SCHEMA => Ok(resolved),
        SYSTEM_SCHEMA => Err(Error::ReadOnly(format!(
            "schema \"{SYSTEM_SCHEMA}\" is read-only: it holds system tables"
        ))),
        other => Err(Error::SchemaNotFound(other.to_string())),
    }
}
