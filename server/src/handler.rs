//! The pgwire handlers: one [`Connection`] per client, each with its own engine session.

use std::fmt::Debug;
use std::sync::Arc;

use arrow_pg::datatypes::{
    arrow_schema_to_pg_fields, df::deserialize_parameters, encode_recordbatch, into_pg_type,
};
use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::auth::StartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use runbase_engine::{CommandTag, Prepared, QueryOutput, Session};
use tracing::debug;

use crate::error::{PgError, to_pg_error};

fn pg_err(err: &runbase_engine::Error) -> PgWireError {
    to_pg_error(err).into()
}

/// The handlers of one client connection.
pub struct Connection {
    session: Arc<Session>,
    parser: Arc<StatementParser>,
}

impl Connection {
    /// Handlers over `session`.
    pub fn new(session: Session) -> Self {
        let session = Arc::new(session);
        Self {
            parser: Arc::new(StatementParser {
                session: session.clone(),
            }),
            session,
        }
    }
}

/// PostgreSQL's WARNING for a `ROLLBACK` that cannot undo anything.
fn rollback_warning() -> PgWireBackendMessage {
    PgWireBackendMessage::NoticeResponse(
        ErrorInfo::new(
            "WARNING".to_string(),
            "01000".to_string(),
            "runbase commits every statement on its own: ROLLBACK did not undo earlier statements"
                .to_string(),
        )
        .into(),
    )
}

/// Whether `output` is the completion of a `ROLLBACK`.
fn is_rollback(output: &QueryOutput) -> bool {
    matches!(output, QueryOutput::Command(tag) if tag.command == "ROLLBACK")
}

/// Sends PostgreSQL's WARNING that a `ROLLBACK` undid nothing. (Takes a flag, not the
/// output: a result stream is not `Sync`, so no reference to it may live across an await.)
async fn warn_if_rollback<C>(client: &mut C, rollback: bool) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if rollback {
        client.send(rollback_warning()).await?;
    }
    Ok(())
}

/// Turns one statement's output into a pgwire response.
fn to_response(output: QueryOutput, format: &Format) -> PgWireResult<Response> {
    match output {
        QueryOutput::Command(tag) => Ok(command_response(&tag)),
        QueryOutput::Rows(stream) => {
            let fields = Arc::new(arrow_schema_to_pg_fields(
                stream.schema().as_ref(),
                format,
                None,
            )?);
            let row_fields = fields.clone();
            let rows = stream
                .map(
                    move |batch| -> Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> {
                        match batch {
                            Ok(batch) => encode_recordbatch(row_fields.clone(), batch),
                            Err(e) => Box::new(std::iter::once(Err(pg_err(&e.into())))),
                        }
                    },
                )
                .flat_map(stream::iter);
            Ok(Response::Query(QueryResponse::new(fields, rows)))
        }
    }
}

fn command_response(tag: &CommandTag) -> Response {
    match tag.command {
        "BEGIN" => Response::TransactionStart(Tag::new("BEGIN")),
        "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(tag.command)),
        "" => Response::EmptyQuery,
        command => {
            let mut t = Tag::new(command);
            if command == "INSERT" {
                t = t.with_oid(0);
            }
            if let Some(rows) = tag.rows {
                t = t.with_rows(usize::try_from(rows).unwrap_or(usize::MAX));
            }
            Response::Execution(t)
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        debug!(query, "simple query");
        let statements = self.session.parse(query).map_err(|e| pg_err(&e))?;
        let mut responses = Vec::with_capacity(statements.len());
        // As in PostgreSQL, the first failing statement ends the batch.
        for statement in statements {
            let result = async {
                let prepared = self.session.prepare(statement).await?;
                self.session.execute(&prepared, None).await
            }
            .await;
            match result {
                Ok(output) => {
                    warn_if_rollback(client, is_rollback(&output)).await?;
                    responses.push(to_response(output, &Format::UnifiedText)?);
                }
                Err(e) => {
                    responses.push(Response::Error(Box::new(to_pg_error(&e).into())));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// Plans statements for the extended protocol.
pub struct StatementParser {
    session: Arc<Session>,
}

/// The wire type of a parameter; untyped parameters are sent as text.
fn parameter_wire_type(ty: Option<&DataType>) -> PgWireResult<Type> {
    match ty {
        Some(t) => into_pg_type(t),
        None => Ok(Type::TEXT),
    }
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        debug!(sql, "parse");
        let mut statements = self.session.parse(sql).map_err(|e| pg_err(&e))?;
        if statements.len() > 1 {
            return Err(PgError {
                code: "42601",
                message: "cannot insert multiple commands into a prepared statement".into(),
            }
            .into());
        }
        let Some(statement) = statements.pop() else {
            return Ok(None);
        };
        let prepared = self
            .session
            .prepare(statement)
            .await
            .map_err(|e| pg_err(&e))?;
        Ok(Some(prepared))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        stmt.parameter_types()
            .map_err(|e| pg_err(&e))?
            .iter()
            .map(|t| parameter_wire_type(t.as_ref()))
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        arrow_schema_to_pg_fields(
            stmt.output_schema().as_ref(),
            column_format.unwrap_or(&Format::UnifiedBinary),
            None,
        )
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Prepared;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let types = prepared.parameter_types().map_err(|e| pg_err(&e))?;
        let type_refs: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
        let params = deserialize_parameters(portal, &type_refs)?;
        let output = self
            .session
            .execute(prepared, Some(params))
            .await
            .map_err(|e| pg_err(&e))?;
        warn_if_rollback(client, is_rollback(&output)).await?;
        to_response(output, &portal.result_column_format)
    }
}

/// Startup without authentication (the server listens on loopback by default).
pub struct NoAuth;

impl NoopStartupHandler for NoAuth {}

/// The handler set pgwire asks for; every handler is the one [`Connection`].
pub struct ConnectionHandlers(Arc<Connection>);

impl ConnectionHandlers {
    /// Handlers over a new connection on `session`.
    pub fn new(session: Session) -> Self {
        Self(Arc::new(Connection::new(session)))
    }
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(NoAuth)
    }
}
