//! Planning `COPY … FROM STDIN` / `TO STDOUT` and committing a finished copy.

use datafusion::arrow::array::RecordBatch;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as AstStatement;
use futures::TryStreamExt;

use super::*;
use crate::error::{Error, Result};
use crate::executor::CpuExecutor;
use crate::pg::copy::{CopyFormat, CopyIn, CopySink, SinkMessage};
use crate::storage::provider::UserTableProvider;

/// Batches (of 8,192 rows) queued between a streamed copy's parser and its writer.
const STREAMED_COPY_DEPTH: usize = 2;
use crate::storage::schema::{PUBLIC_SCHEMA, SYSTEM_SCHEMA};

impl Session {
    pub(super) async fn prepare_copy(&self, statement: AstStatement) -> Result<Prepared> {
        use datafusion::sql::sqlparser::ast::{CopySource, CopyTarget};
        let AstStatement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            values,
        } = statement
        else {
            return Err(Error::InvalidArgument("not a COPY statement".into()));
        };
        let format = CopyFormat::from_options(&options, &legacy_options)?;
        match (to, target, source) {
            (
                false,
                CopyTarget::Stdin,
                CopySource::Table {
                    table_name,
                    columns,
                },
            ) => {
                if !values.is_empty() {
                    return Err(Error::NotSupported(
                        "COPY data inline in the statement (send it as COPY data)".into(),
                    ));
                }
                let table = self.table_reference(&table_name.to_string())?;
                let resolved = table.clone().resolve(crate::DATABASE_NAME, PUBLIC_SCHEMA);
                if resolved.schema.as_ref() == SYSTEM_SCHEMA && resolved.table.as_ref() != "metrics"
                {
                    return Err(Error::ReadOnly(format!(
                        "COPY FROM into runbase.{} is not allowed; of the runbase tables only runbase.metrics takes COPY",
                        resolved.table
                    )));
                }
                // Fail now, not after the data, if the table does not exist.
                if let Err(e) = self.ctx.table_provider(table.clone()).await {
                    return Err(match e.find_root() {
                        datafusion::error::DataFusionError::Plan(_) => {
                            Error::TableNotFound(resolved.table.to_string())
                        }
                        _ => e.into(),
                    });
                }
                Ok(Prepared::CopyIn {
                    table,
                    columns: columns.into_iter().map(|c| c.value).collect(),
                    format,
                })
            }
            (true, CopyTarget::Stdout, source) => {
                let query = match source {
                    CopySource::Query(q) => AstStatement::Query(q),
                    CopySource::Table {
                        table_name,
                        columns,
                    } => {
                        let cols = if columns.is_empty() {
                            "*".to_string()
                        } else {
                            columns
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        let sql = format!("SELECT {cols} FROM {table_name}");
                        self.parse_ast(&sql)?
                            .pop()
                            .ok_or_else(|| Error::InvalidArgument("COPY has no table".into()))?
                    }
                };
                let state = self.ctx.state();
                let plan = match state
                    .statement_to_plan(DfStatement::Statement(Box::new(query.clone())))
                    .await
                {
                    Ok(plan) => plan,
                    Err(e) => return Err(diagnose_plan_error(&state, &query, e)),
                };
                Ok(Prepared::CopyOut {
                    plan: Box::new(plan),
                    format,
                })
            }
            (false, target, _) | (true, target, _) => Err(Error::NotSupported(format!(
                "COPY with {target} (runbase does not read or write the server's files; use FROM STDIN / TO STDOUT, as psql's \\copy does)"
            ))),
        }
    }

    /// Starts the writer of a copy into a user table, so its rows stream to Parquet files
    /// as they arrive (see [`crate::pg::copy`]). A copy into `runbase.metrics` keeps its
    /// rows for one RocksDB batch at the end.
    pub(super) fn start_streamed_copy(&self, copy: &mut CopyIn) {
        use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
        let Some(table) = UserTableProvider::writable_table(copy.provider.as_ref()) else {
            return;
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<SinkMessage>(STREAMED_COPY_DEPTH);
        let rows = futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(SinkMessage::Rows(batch)) => Some((Ok(batch), Some(rx))),
                Some(SinkMessage::End) => None,
                // The copy was dropped before the client ended it (CopyFail, a closed
                // connection, a bad row): fail the write, so nothing is committed.
                None => Some((
                    Err(datafusion::error::DataFusionError::from(Error::Canceled(
                        "COPY ended before the client finished sending its data".into(),
                    ))),
                    None,
                )),
            }
        });
        let input = Box::pin(RecordBatchStreamAdapter::new(copy.schema.clone(), rows));
        let task = self
            .db
            .executor()
            .spawn(async move { table.append_stream(input).await });
        copy.sink = Some(CopySink { tx, task });
    }

    /// Writes the rows of a finished `COPY … FROM STDIN`, all in one commit.
    pub async fn finish_copy_in(&self, copy: CopyIn) -> Result<CommandTag> {
        let tag = self.commit_copy_in(copy).await?;
        self.db.stats().copy_rows_loaded(tag.rows.unwrap_or(0));
        Ok(tag)
    }

    /// Commits what `copy` received, as one table version.
    async fn commit_copy_in(&self, mut copy: CopyIn) -> Result<CommandTag> {
        use datafusion::datasource::memory::MemorySourceConfig;
        use datafusion::logical_expr::dml::InsertOp;
        if let Some(sink) = copy.sink.take() {
            return match copy.finish_rows() {
                Err(e) => {
                    // Without `End` the writer fails; wait for it, so nothing lingers.
                    drop(sink.tx);
                    let _ = CpuExecutor::join(sink.task).await;
                    Err(e)
                }
                Ok(batches) => {
                    for batch in batches {
                        if sink.tx.send(SinkMessage::Rows(batch)).await.is_err() {
                            break;
                        }
                    }
                    let _ = sink.tx.send(SinkMessage::End).await;
                    drop(sink.tx);
                    let rows = CpuExecutor::join(sink.task).await?;
                    Ok(CommandTag::with_rows("COPY", rows))
                }
            };
        }
        let batches = copy.finish_rows()?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows == 0 {
            return Ok(CommandTag::with_rows("COPY", 0));
        }
        let input = MemorySourceConfig::try_new_exec(&[batches], copy.schema.clone(), None)?;
        let state = self.ctx.state();
        let plan = copy
            .provider
            .insert_into(&state, input, InsertOp::Append)
            .await?;
        let _: Vec<RecordBatch> = self
            .db
            .executor()
            .execute(plan, self.ctx.task_ctx())
            .try_collect()
            .await?;
        Ok(CommandTag::with_rows("COPY", rows as u64))
    }
}
