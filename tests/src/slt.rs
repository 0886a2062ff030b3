//! sqllogictest drivers. Both render values as PostgreSQL's text format, so one `.slt` file
//! states one expected output for both paths.

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use async_trait::async_trait;
use pgwire::api::portal::Format;
use runbase_engine::{Database, QueryOutput, Session};
use sqllogictest::{DBOutput, DefaultColumnType};

/// An error as `[SQLSTATE] message`, the form `.slt` files match, so a file checks codes too.
#[derive(Debug)]
pub struct SltError(pub String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

/// Runs statements in-process on an engine session.
pub struct Embedded {
    session: Session,
    _db: Database,
}

impl Embedded {
    /// A new session on `db`.
    pub fn new(db: Database) -> Self {
        Self {
            session: db.session(),
            _db: db,
        }
    }
}

fn pg_error(e: &runbase_engine::Error) -> SltError {
    let pg = runbase_server::pg::error::to_pg_error(e);
    SltError(format!("[{}] {}", pg.code, pg.message))
}

/// Splits one `DataRow` into its text values.
fn decode_row(row: &pgwire::messages::data::DataRow) -> Vec<String> {
    let mut out = Vec::with_capacity(row.field_count as usize);
    let mut data = &row.data[..];
    for _ in 0..row.field_count {
        let (len, rest) = data.split_at(4);
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if len < 0 {
            out.push("NULL".to_string());
            data = rest;
        } else {
            let (value, rest) = rest.split_at(len as usize);
            out.push(render(&String::from_utf8_lossy(value)));
            data = rest;
        }
    }
    out
}

/// How a text value appears in an `.slt` file (empty strings are spelled `(empty)`).
fn render(value: &str) -> String {
    if value.is_empty() {
        "(empty)".to_string()
    } else {
        value.to_string()
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for Embedded {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let outputs = self.session.sql(sql).await.map_err(|e| pg_error(&e))?;
        let Some(last) = outputs.into_iter().last() else {
            return Ok(DBOutput::StatementComplete(0));
        };
        match last {
            QueryOutput::Command(tag) => Ok(DBOutput::StatementComplete(tag.rows.unwrap_or(0))),
            QueryOutput::CopyIn(_) | QueryOutput::CopyOut(..) => Err(SltError(
                "COPY is tested over the wire (tests/tests/copy.rs), not in .slt files".into(),
            )),
            rows @ QueryOutput::Rows(_) => {
                let batches = rows.collect().await.map_err(|e| pg_error(&e))?;
                let mut out = Vec::new();
                let mut ncols = 0;
                for batch in batches {
                    let fields = std::sync::Arc::new(
                        arrow_schema_to_pg_fields(
                            batch.schema().as_ref(),
                            &Format::UnifiedText,
                            None,
                        )
                        .map_err(|e| SltError(e.to_string()))?,
                    );
                    ncols = fields.len();
                    let infinite = runbase_server::pg::text::infinite_float_columns(&batch);
                    for row in encode_recordbatch(fields, batch) {
                        let row = row.map_err(|e| SltError(e.to_string()))?;
                        let row = runbase_server::pg::text::respell_infinity(row, &infinite);
                        out.push(decode_row(&row));
                    }
                }
                Ok(DBOutput::Rows {
                    types: vec![DefaultColumnType::Any; ncols],
                    rows: out,
                })
            }
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "embedded"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// Runs statements over the PostgreSQL wire protocol (simple query) with tokio-postgres.
pub struct Wire {
    client: tokio_postgres::Client,
}

impl Wire {
    /// Wraps a connected client.
    pub fn new(client: tokio_postgres::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for Wire {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        use tokio_postgres::SimpleQueryMessage;
        let messages = self.client.simple_query(sql).await.map_err(|e| {
            SltError(match e.as_db_error() {
                Some(db) => format!("[{}] {}", db.code().code(), db.message()),
                None => e.to_string(),
            })
        })?;
        let mut rows = Vec::new();
        let mut ncols = None;
        let mut complete = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(cols) => {
                    ncols = Some(cols.len());
                    rows.clear();
                }
                SimpleQueryMessage::Row(row) => {
                    ncols = Some(row.len());
                    rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map_or_else(|| "NULL".to_string(), render))
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => complete = n,
                _ => {}
            }
        }
        Ok(match ncols {
            Some(n) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            },
            None => DBOutput::StatementComplete(complete),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "wire"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}
