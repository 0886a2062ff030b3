//! `ALTER TABLE t ADD [COLUMN] [IF NOT EXISTS] c type` (nullable) and `ALTER TABLE t
//! RENAME TO u`. DataFusion plans neither, so the session runs them from the AST.
//!
//! `ADD COLUMN` is one Delta commit (a metadata action: no data file is rewritten, rows
//! written before read the new column as NULL) plus the catalog's new schema; `RENAME TO`
//! only changes the catalog (the Delta table stays where it is, one atomic RocksDB batch).

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    AlterTable, AlterTableOperation, ColumnOption, ObjectName, RenameTableNameKind,
};

use super::*;
use crate::catalog::TableEntry;
use crate::error::{Error, Result};
use crate::storage::{StoredTable, storable_schema};

fn table_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(|i| i.value.to_lowercase())
        .collect();
    match parts.as_slice() {
        [table] => Ok(table.clone()),
        [schema, table] if schema == "public" => Ok(table.clone()),
        [schema, _] if schema == "runbase" => Err(Error::ReadOnly(
            "schema \"runbase\" is read-only: it holds system tables".into(),
        )),
        _ => Err(Error::InvalidArgument(format!("bad table name {name}"))),
    }
}

impl Session {
    /// Runs an `ALTER TABLE`.
    pub(super) async fn alter_table(&self, alter: &AlterTable) -> Result<CommandTag> {
        let name = table_name(&alter.name)?;
        let [operation] = alter.operations.as_slice() else {
            return Err(Error::NotSupported(
                "ALTER TABLE with several operations (run one per statement)".into(),
            ));
        };
        let db = self.database().clone();
        let _ddl = db.ddl_lock().lock().await;
        let Some(table) = db.user_schema().stored(&name) else {
            return if alter.if_exists {
                Ok(CommandTag::plain("ALTER TABLE"))
            } else {
                Err(Error::TableNotFound(name))
            };
        };
        match operation {
            AlterTableOperation::AddColumn {
                if_not_exists,
                column_def,
                ..
            } => {
                let column = column_def.name.value.to_lowercase();
                if table.schema.field_with_name(&column).is_ok() {
                    return if *if_not_exists {
                        Ok(CommandTag::plain("ALTER TABLE"))
                    } else {
                        Err(Error::DuplicateObject(format!(
                            "column \"{column}\" of relation \"{name}\" already exists"
                        )))
                    };
                }
                if let Some(option) = column_def
                    .options
                    .iter()
                    .find(|o| matches!(o.option, ColumnOption::NotNull | ColumnOption::Default(_)))
                {
                    return Err(Error::NotSupported(format!(
                        "ADD COLUMN … {} (added columns are nullable; existing rows read NULL)",
                        option.option
                    )));
                }
                // The column's Arrow type, as CREATE TABLE would map it: plan a NULL of it.
                let probe = format!(
                    "SELECT CAST(NULL AS {}) AS \"{column}\"",
                    column_def.data_type
                );
                let plan = self.context().state().create_logical_plan(&probe).await?;
                let field = plan
                    .schema()
                    .as_arrow()
                    .field(0)
                    .clone()
                    .with_nullable(true);
                let (delta_schema, _) =
                    storable_schema(&datafusion::arrow::datatypes::Schema::new(vec![field]))?;
                let new_fields: Vec<_> = delta_schema.fields().cloned().collect();
                let _write = table.write_lock.lock().await;
                let delta = table.latest().await?;
                let delta = delta.add_columns().with_fields(new_fields).await?;
                let schema = delta.snapshot()?.schema();
                let entry = TableEntry {
                    delta_schema: serde_json::to_string(schema.as_ref())
                        .map_err(|e| Error::corrupt("table schema being written", e))?,
                    ..table.entry.clone()
                };
                db.catalog().replace_table(&entry, None)?;
                db.user_schema().add(Arc::new(StoredTable::with_state(
                    entry,
                    table.root().clone(),
                    delta,
                )?));
                Ok(CommandTag::plain("ALTER TABLE"))
            }
            AlterTableOperation::RenameTable { table_name: to } => {
                let (RenameTableNameKind::To(to) | RenameTableNameKind::As(to)) = to;
                let new_name = table_name(to)?;
                if db.user_schema().stored(&new_name).is_some() {
                    return Err(Error::TableExists(new_name));
                }
                let _write = table.write_lock.lock().await;
                let delta = table.latest().await?;
                let entry = TableEntry {
                    name: new_name,
                    ..table.entry.clone()
                };
                db.catalog().replace_table(&entry, Some(&name))?;
                db.user_schema().remove(&name);
                db.user_schema().add(Arc::new(StoredTable::with_state(
                    entry,
                    table.root().clone(),
                    delta,
                )?));
                Ok(CommandTag::plain("ALTER TABLE"))
            }
            other => Err(Error::NotSupported(format!(
                "ALTER TABLE … {other} (supported: ADD COLUMN, RENAME TO)"
            ))),
        }
    }
}
