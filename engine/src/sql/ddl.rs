//! DDL: `CREATE TABLE [AS]` and `DROP TABLE`, which change the catalog and the object
//! store together.

use std::sync::Arc;

use datafusion::common::{ResolvedTableReference, TableReference};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use tracing::warn;

use crate::catalog::TableEntry;
use crate::database::{DATABASE_NAME, Database};
use crate::error::{Error, Result};
use crate::storage::schema::{PUBLIC_SCHEMA, SYSTEM_SCHEMA};
use crate::storage::{StoredTable, conform_batch, storable_schema};

impl Database {
    /// Executes `CREATE TABLE [IF NOT EXISTS] … [AS …]`; returns the rows written.
    pub(crate) async fn create_table(
        &self,
        ctx: &SessionContext,
        name: &TableReference,
        input: &LogicalPlan,
        if_not_exists: bool,
    ) -> Result<u64> {
        let resolved = resolve(name)?;
        let table_name = resolved.table.to_string();
        if self.user_schema().stored(&table_name).is_some() {
            return if if_not_exists {
                Ok(0)
            } else {
                Err(Error::TableExists(table_name))
            };
        }
        let is_plain_create = matches!(input, LogicalPlan::EmptyRelation(e) if !e.produce_one_row);
        let (batches, schema) = if is_plain_create {
            (vec![], Arc::new(input.schema().as_arrow().clone()))
        } else {
            // CREATE TABLE AS: columns are nullable, as in PostgreSQL.
            let nullable = crate::storage::nullable(input.schema().as_arrow());
            let plan = ctx.state().create_physical_plan(input).await?;
            let stream = self.executor().execute(plan, ctx.task_ctx());
            let batches: Vec<_> = stream.try_collect().await?;
            (batches, Arc::new(nullable))
        };
        let (delta_schema, arrow_schema) = storable_schema(&schema)?;
        let batches = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| conform_batch(b, &arrow_schema))
            .collect::<Result<Vec<_>>>()?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();

        let _ddl = self.ddl_lock().lock().await;
        if self.user_schema().stored(&table_name).is_some() {
            return if if_not_exists {
                Ok(0)
            } else {
                Err(Error::TableExists(table_name))
            };
        }
        let id = uuid::Uuid::new_v4().to_string();
        let location = format!("tables/{id}");
        let root = self.object_store().clone();
        let delta = if batches.is_empty() {
            root.create_empty(&location, &delta_schema).await?
        } else {
            root.create_with_data(&location, batches).await?
        };
        let entry = TableEntry {
            schema: PUBLIC_SCHEMA.to_string(),
            name: table_name,
            id,
            location,
            delta_schema: serde_json::to_string(&delta_schema)
                .map_err(|e| Error::corrupt("table schema being written", e))?,
            created_at_us: chrono::Utc::now().timestamp_micros(),
        };
        // The Delta commit is durable; the catalog entry makes the table visible. A crash
        // between the two leaves an unreferenced directory, never a dangling entry.
        self.catalog().insert_table(&entry)?;
        self.user_schema()
            .add(Arc::new(StoredTable::with_state(entry, root, delta)?));
        Ok(rows as u64)
    }

    /// Executes `DROP TABLE [IF EXISTS]`; returns whether a table was dropped.
    pub(crate) async fn drop_table(&self, name: &TableReference, if_exists: bool) -> Result<bool> {
        let resolved = resolve(name)?;
        let _ddl = self.ddl_lock().lock().await;
        let table_name = resolved.table.to_string();
        let Some(table) = self.user_schema().stored(&table_name) else {
            return if if_exists {
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
