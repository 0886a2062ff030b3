//! `ALTER TABLE`: add, rename and drop columns, set and drop `NOT NULL` and `DEFAULT`,
//! rename the table. DataFusion plans none of them, so the session runs them from the AST.
//!
//! - `ADD COLUMN c type` (nullable, no default) is one Delta commit of a metadata action: no
//!   data file is rewritten; rows written before read the new column as NULL.
//! - `ADD COLUMN … DEFAULT v` / `NOT NULL`, `RENAME COLUMN`, `DROP COLUMN`, `ALTER COLUMN
//!   SET/DROP NOT NULL` rewrite the table: one overwrite commit whose files have the new
//!   columns. No Delta column mapping is used, so every Delta reader keeps reading the
//!   table; earlier versions keep their own columns for `table_at` until a `VACUUM`.
//! - `ALTER COLUMN SET/DROP DEFAULT` and `RENAME TO` change only the catalog (one atomic
//!   RocksDB batch): the data does not change, so there is no new version.

use std::sync::Arc;

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan, lit};
use datafusion::sql::sqlparser::ast::{
    AlterColumnOperation, AlterTable, AlterTableOperation, ColumnOption, ObjectName,
    RenameTableNameKind,
};

use super::*;
use crate::catalog::TableEntry;
use crate::error::{Error, Result};
use crate::storage::provider::UserTableProvider;
use crate::storage::{Conform, StoredTable, TARGET_FILE_BYTES, storable_schema, stream_plan};

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
                        Err(Error::DuplicateColumn(format!(
                            "column \"{column}\" of relation \"{name}\" already exists"
                        )))
                    };
                }
                let mut not_null = false;
                let mut default = None;
                for option in &column_def.options {
                    match &option.option {
                        ColumnOption::NotNull => not_null = true,
                        ColumnOption::Null => not_null = false,
                        ColumnOption::Default(value) => default = Some(value.to_string()),
                        other => {
                            return Err(Error::NotSupported(format!(
                                "ADD COLUMN … {other} (supported: NULL, NOT NULL, DEFAULT)"
                            )));
                        }
                    }
                }
                let data_type = column_def.data_type.to_string();
                let (value, field) = self
                    .default_of(default.as_deref().unwrap_or("NULL"), &data_type, &column)
                    .await?;
                let field = field.with_nullable(!not_null);
                if value.is_none() && !not_null {
                    // Nullable, no default: a metadata commit, no file rewritten.
                    let (delta_schema, _) = storable_schema(&Schema::new(vec![field]))?;
                    let new_fields: Vec<_> = delta_schema.fields().cloned().collect();
                    let _write = table.write_lock.lock().await;
                    let delta = table.latest().await?;
                    let delta = delta.add_columns().with_fields(new_fields).await?;
                    self.replace_entry(&table, delta, table.entry.column_defaults.clone())?;
                    return Ok(CommandTag::plain("ALTER TABLE"));
                }
                let (_, storable) = storable_schema(&Schema::new(vec![field]))?;
                let field = storable.field(0).clone();
                let fill = match &value {
                    Some(text) => ScalarValue::try_from_string(text.clone(), field.data_type())?,
                    None => ScalarValue::try_from(field.data_type())?,
                };
                let mut columns = each_column(&table, |e, f| Some((e, f)));
                columns.push((lit(fill).alias(&column), field));
                let mut defaults = table.entry.column_defaults.clone();
                if let Some(text) = value {
                    defaults.insert(column, text);
                }
                self.rewrite(&table, columns, defaults).await
            }
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let old = existing_column(&table, &old_column_name.value)?;
                let new = new_column_name.value.to_lowercase();
                if table.schema.field_with_name(&new).is_ok() {
                    return Err(Error::DuplicateColumn(format!(
                        "column \"{new}\" of relation \"{name}\" already exists"
                    )));
                }
                let columns = each_column(&table, |e, f| {
                    Some(if *f.name() == old {
                        (e.alias(&new), f.with_name(&new))
                    } else {
                        (e, f)
                    })
                });
                let mut defaults = table.entry.column_defaults.clone();
                if let Some(d) = defaults.remove(&old) {
                    defaults.insert(new, d);
                }
                self.rewrite(&table, columns, defaults).await
            }
            AlterTableOperation::DropColumn {
                column_names,
                if_exists,
                ..
            } => {
                let [dropped] = column_names.as_slice() else {
                    return Err(Error::NotSupported(
                        "DROP COLUMN of several columns (drop one per statement)".into(),
                    ));
                };
                let dropped = dropped.value.to_lowercase();
                if table.schema.field_with_name(&dropped).is_err() {
                    return if *if_exists {
                        Ok(CommandTag::plain("ALTER TABLE"))
                    } else {
                        Err(missing_column(&table, &dropped))
                    };
                }
                if table.schema.fields().len() == 1 {
                    return Err(Error::NotSupported(format!(
                        "dropping \"{dropped}\", the only column of \"{name}\" (drop the table)"
                    )));
                }
                let columns = each_column(&table, |e, f| (*f.name() != dropped).then_some((e, f)));
                let mut defaults = table.entry.column_defaults.clone();
                defaults.remove(&dropped);
                self.rewrite(&table, columns, defaults).await
            }
            AlterTableOperation::AlterColumn { column_name, op } => {
                let column = existing_column(&table, &column_name.value)?;
                match op {
                    AlterColumnOperation::SetNotNull | AlterColumnOperation::DropNotNull => {
                        let nullable = matches!(op, AlterColumnOperation::DropNotNull);
                        let field = table
                            .schema
                            .field_with_name(&column)
                            .map_err(|e| Error::DataFusion(e.into()))?;
                        if field.is_nullable() == nullable {
                            return Ok(CommandTag::plain("ALTER TABLE"));
                        }
                        let columns = each_column(&table, |e, f| {
                            Some(if *f.name() == column {
                                (e, f.with_nullable(nullable))
                            } else {
                                (e, f)
                            })
                        });
                        let defaults = table.entry.column_defaults.clone();
                        self.rewrite(&table, columns, defaults).await
                    }
                    AlterColumnOperation::SetDefault { value } => {
                        let field = table
                            .schema
                            .field_with_name(&column)
                            .map_err(|e| Error::DataFusion(e.into()))?
                            .clone();
                        let (text, _) = self
                            .default_of(&value.to_string(), &sql_type_of(&field)?, &column)
                            .await?;
                        self.set_default(&table, column, text).await
                    }
                    AlterColumnOperation::DropDefault => {
                        self.set_default(&table, column, None).await
                    }
                    other => Err(Error::NotSupported(format!(
                        "ALTER COLUMN … {other} (supported: SET/DROP NOT NULL, SET/DROP DEFAULT)"
                    ))),
                }
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
                "ALTER TABLE … {other} (supported: ADD, RENAME and DROP COLUMN, ALTER COLUMN \
                 SET/DROP NOT NULL and SET/DROP DEFAULT, RENAME TO)"
            ))),
        }
    }

    /// The constant `default` (SQL) as a value of `data_type` for `column`: the text the
    /// catalog keeps (`None` for NULL) and the column's field.
    async fn default_of(
        &self,
        default: &str,
        data_type: &str,
        column: &str,
    ) -> Result<(Option<String>, Field)> {
        let probe = format!("SELECT CAST(({default}) AS {data_type}) AS \"{column}\"");
        let state = self.context().state();
        let plan = state.create_logical_plan(&probe).await?;
        let field = plan
            .schema()
            .as_arrow()
            .field(0)
            .clone()
            .with_nullable(true);
        let expr = match &plan {
            LogicalPlan::Projection(p) => p.expr[0].clone().unalias(),
            _ => return Err(Error::NotSupported(format!("DEFAULT {default}"))),
        };
        let text = super::ddl::constant_default(&state, &expr, &field)?;
        Ok((text, field))
    }

    /// Sets (`Some`) or drops (`None`) the default of `column`: the catalog only.
    async fn set_default(
        &self,
        table: &StoredTable,
        column: String,
        text: Option<String>,
    ) -> Result<CommandTag> {
        let mut defaults = table.entry.column_defaults.clone();
        match text {
            Some(text) => defaults.insert(column, text),
            None => defaults.remove(&column),
        };
        let _write = table.write_lock.lock().await;
        let delta = table.latest().await?;
        self.replace_entry(table, delta, defaults)?;
        Ok(CommandTag::plain("ALTER TABLE"))
    }

    /// Rewrites `table` as `columns` (each an expression over its latest version and the
    /// field it becomes): one overwrite commit, the new schema in Delta's metadata, then
    /// the catalog.
    async fn rewrite(
        &self,
        table: &Arc<StoredTable>,
        columns: Vec<(Expr, Field)>,
        defaults: BTreeMap<String, String>,
    ) -> Result<CommandTag> {
        use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
        use deltalake::operations::write::SchemaMode;
        use deltalake::protocol::SaveMode;
        let db = self.database().clone();
        let (columns, fields): (Vec<Expr>, Vec<Field>) = columns.into_iter().unzip();
        let target = Arc::new(Schema::new(fields));
        let source = Arc::new(UserTableProvider::new(table.clone()));
        let frame = self.context().read_table(source)?.select(columns)?;
        let (state, plan) = frame.into_parts();
        let plan = state.create_physical_plan(&plan).await?;
        let rows = db.executor().execute(plan, self.context().task_ctx());
        let mut conform = Conform::new(rows, target.clone()).await?;
        let input = match conform.stream.take() {
            Some(rows) => rows,
            None => Box::pin(RecordBatchStreamAdapter::new(
                target.clone(),
                futures::stream::empty(),
            )),
        };
        let _write = table.write_lock.lock().await;
        let delta = table.latest().await?;
        let written = delta
            .write(vec![])
            .with_input_plan(stream_plan(input)?)
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(SchemaMode::Overwrite)
            .with_target_file_size(std::num::NonZeroU64::new(TARGET_FILE_BYTES))
            .await;
        let delta = match written {
            Ok(delta) => delta,
            Err(e) => return Err(conform.failure(e.into())),
        };
        self.replace_entry(table, delta, defaults)?;
        Ok(CommandTag::plain("ALTER TABLE"))
    }

    /// Records `table`'s new state (its Delta table after a change, and `defaults`) in
    /// the catalog and the schema. Called with the table's write lock held.
    fn replace_entry(
        &self,
        table: &StoredTable,
        delta: deltalake::DeltaTable,
        defaults: BTreeMap<String, String>,
    ) -> Result<()> {
        let db = self.database();
        let schema = delta.snapshot()?.schema();
        let entry = TableEntry {
            delta_schema: serde_json::to_string(schema.as_ref())
                .map_err(|e| Error::corrupt("table schema being written", e))?,
            column_defaults: defaults,
            ..table.entry.clone()
        };
        db.catalog().replace_table(&entry, None)?;
        db.user_schema().add(Arc::new(StoredTable::with_state(
            entry,
            table.root().clone(),
            delta,
        )?));
        Ok(())
    }
}

/// The columns of a rewrite of `table`: `change` gets each column (as an expression
/// reading it, and its field) and returns what it becomes, or `None` to drop it.
fn each_column(
    table: &StoredTable,
    change: impl Fn(Expr, Field) -> Option<(Expr, Field)>,
) -> Vec<(Expr, Field)> {
    table
        .schema
        .fields()
        .iter()
        .filter_map(|f| {
            change(
                Expr::Column(Column::new_unqualified(f.name())),
                f.as_ref().clone(),
            )
        })
        .collect()
}

/// The column of `table` that `name` (as written) names.
fn existing_column(table: &StoredTable, name: &str) -> Result<String> {
    let name = name.to_lowercase();
    match table.schema.field_with_name(&name) {
        Ok(_) => Ok(name),
        Err(_) => Err(missing_column(table, &name)),
    }
}

fn missing_column(table: &StoredTable, name: &str) -> Error {
    Error::ColumnNotFound(format!(
        "column \"{name}\" of relation \"{}\" does not exist",
        table.entry.name
    ))
}

/// The SQL spelling of `field`'s type, for planning a value of it.
fn sql_type_of(field: &Field) -> Result<String> {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    Ok(match field.data_type() {
        DataType::Boolean => "boolean",
        DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        DataType::Int64 => "bigint",
        DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Date32 => "date",
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp",
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamptz",
        DataType::Decimal128(p, s) => return Ok(format!("decimal({p}, {s})")),
        other => {
            return Err(Error::NotSupported(format!(
                "SET DEFAULT on a column of type {other}"
            )));
        }
    }
    .to_string())
}
