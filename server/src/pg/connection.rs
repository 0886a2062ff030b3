//! The pgwire handlers: one [`Connection`] per client, each with its own engine session.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use arrow_pg::datatypes::{
    arrow_schema_to_pg_fields, df::deserialize_parameters, encode_recordbatch, into_pg_type,
};
use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::copy::CopyHandler;
use pgwire::api::copy::{send_copy_in_response, send_copy_out_response};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response,
    send_ready_for_query,
};
use pgwire::api::results::{
    CopyResponse, DescribePortalResponse, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::Entry;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, PgWireConnectionState,
    PgWireServerHandlers, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::data::DataRow;
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::response::{EmptyQueryResponse, TransactionStatus};
use pgwire::messages::simplequery::Query;
use runbase_engine::copy::{CopyFormat, CopyIn};
use runbase_engine::oid_array::is_oid_array;
use runbase_engine::{CommandTag, Database, Prepared, QueryOutput, Session};
use tracing::debug;

use crate::auth::{AuthPolicy, Startup};
use crate::error::{PgError, to_pg_error};

fn pg_err(err: &runbase_engine::Error) -> PgWireError {
    to_pg_error(err).into()
}

/// The handlers of one client connection.
pub struct Connection {
    session: Arc<Session>,
    parser: Arc<StatementParser>,
    /// The `COPY … FROM STDIN` in progress, if any.
    copy: Mutex<Option<Box<CopyIn>>>,
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
            copy: Mutex::new(None),
        }
    }

    /// When the statement starting now must end, from the session's `statement_timeout`.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        let setting = self
            .session
            .context()
            .state()
            .config()
            .get_extension::<runbase_engine::SessionVariables>()
            .and_then(|v| v.get("statement_timeout"))?;
        parse_timeout(&setting).map(|d| tokio::time::Instant::now() + d)
    }

    /// Runs `work` (planning and executing one statement) under the statement timeout:
    /// past the deadline it is dropped (which cancels it) and its rows end with 57014.
    async fn timed<F>(&self, work: F) -> runbase_engine::Result<QueryOutput>
    where
        F: std::future::Future<Output = runbase_engine::Result<QueryOutput>>,
    {
        let Some(deadline) = self.deadline() else {
            return work.await;
        };
        match tokio::time::timeout_at(deadline, work).await {
            Err(_) => Err(timeout_error()),
            Ok(Ok(QueryOutput::Rows(rows))) => Ok(QueryOutput::Rows(with_deadline(rows, deadline))),
            Ok(other) => other,
        }
    }

    /// Turns one statement's output into a pgwire response; a `COPY … FROM STDIN` is kept
    /// until its data has arrived.
    fn respond(&self, output: QueryOutput, format: &Format) -> PgWireResult<Response> {
        match output {
            QueryOutput::CopyIn(copy) => {
                let columns = copy.column_count();
                let binary = i8::from(copy.is_binary());
                *self.copy.lock().unwrap_or_else(|p| p.into_inner()) = Some(copy);
                Ok(Response::CopyIn(CopyResponse::new(
                    binary,
                    columns,
                    stream::empty(),
                )))
            }
            QueryOutput::CopyOut(rows, format) => {
                let columns = rows.schema().fields().len();
                let binary = format == CopyFormat::Binary;
                // Built as text so that pgwire leaves the binary trailer to
                // `copy_out_stream`, then marked binary.
                let mut response = CopyResponse::new(0, columns, copy_out_stream(rows, format));
                response.format = i8::from(binary);
                Ok(Response::CopyOut(response))
            }
            other => to_response(other, format),
        }
    }
}

/// The client's `user` and `application_name`, for the session's records of who did what.
fn client_identity<C: ClientInfo>(client: &C) -> (Option<String>, Option<String>) {
    let meta = client.metadata();
    (
        meta.get("user").cloned(),
        meta.get("application_name")
            .cloned()
            .filter(|a| !a.is_empty()),
    )
}

/// `COPY … TO STDOUT`, as PostgreSQL sends it: a CSV header line as its own message, then
/// one `CopyData` per row; in the binary format the header rides with the first row (or
/// the trailer, when there are none), which some clients (tokio-postgres) rely on.
fn copy_out_stream(
    rows: SendableRecordBatchStream,
    format: CopyFormat,
) -> impl futures::Stream<Item = PgWireResult<CopyData>> + Send + 'static {
    let csv_header = match &format {
        CopyFormat::Csv { header: true, .. } => Some(crate::copy::header_line(
            &rows
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>(),
            &format,
        )),
        _ => None,
    };
    let binary = format == CopyFormat::Binary;
    let mut binary_header = binary.then(crate::copy::binary_header);
    let trailer = binary.then(|| Ok((-1i16).to_be_bytes().to_vec()));
    let lines = rows
        .map(move |batch| -> Vec<PgWireResult<Vec<u8>>> {
            let lines = batch
                .map_err(|e| pg_err(&e.into()))
                .and_then(|b| crate::copy::encode_batch(b, &format));
            match lines {
                Ok(lines) => lines.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            }
        })
        .flat_map(stream::iter)
        .chain(stream::iter(trailer))
        .map(move |line| {
            line.map(|mut line| {
                if let Some(mut header) = binary_header.take() {
                    header.append(&mut line);
                    line = header;
                }
                CopyData::new(line.into())
            })
        });
    stream::iter(csv_header.map(|h| Ok(CopyData::new(h.into())))).chain(lines)
}

/// `statement_timeout` as PostgreSQL reads it: a number of milliseconds, or a number
/// with a unit (`us`, `ms`, `s`, `min`, `h`, `d`); 0 means none.
fn parse_timeout(text: &str) -> Option<std::time::Duration> {
    let t = text.trim().trim_matches('\'').trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => n,
        "us" => n / 1000.0,
        "s" => n * 1000.0,
        "min" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        "d" => n * 86_400_000.0,
        _ => return None,
    };
    (ms > 0.0 && ms.is_finite()).then(|| std::time::Duration::from_micros((ms * 1000.0) as u64))
}

fn timeout_error() -> runbase_engine::Error {
    runbase_engine::Error::Canceled("canceling statement due to statement timeout".into())
}

/// Ends `stream` with the statement-timeout error (57014) if `deadline` passes before it
/// does; the rest of the plan is dropped, which stops it.
fn with_deadline(
    stream: SendableRecordBatchStream,
    deadline: tokio::time::Instant,
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let rows = stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        tokio::select! {
            item = stream.next() => item.map(|i| (i, Some(stream))),
            () = tokio::time::sleep_until(deadline) => Some((
                Err(datafusion::error::DataFusionError::External(Box::new(timeout_error()))),
                None,
            )),
        }
    });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, rows))
}

/// Watches for a cancel request (psql's Ctrl-C, a driver's cancel) against the statement
/// running on a connection.
struct CancelWatch<F> {
    handle: Option<Arc<ConnectionHandle>>,
    /// Resolves on a cancel request; never when there is no registry, or when the sender
    /// goes away without one (another statement started).
    canceled: F,
}

impl CancelWatch<()> {
    /// Registers the statement starting now as the one a cancel request stops.
    async fn start<C: ClientInfo>(
        client: &C,
    ) -> CancelWatch<impl std::future::Future<Output = ()> + Send + 'static> {
        let handle = client
            .session_extensions()
            .get::<Arc<ConnectionHandle>>()
            .map(|h| (*h).clone());
        let receiver = match &handle {
            Some(h) => Some(h.start_query().await),
            None => None,
        };
        let canceled = async move {
            let fired = match receiver {
                Some(rx) => rx.await.is_ok(),
                None => false,
            };
            if !fired {
                std::future::pending::<()>().await;
            }
        };
        CancelWatch { handle, canceled }
    }

    /// No statement is running any more: a late cancel request finds nothing.
    async fn finish(handle: Option<Arc<ConnectionHandle>>) {
        if let Some(h) = handle {
            drop(h.start_query().await);
        }
    }
}

/// The error a cancel request ends a statement with (57014).
fn canceled_error() -> runbase_engine::Error {
    runbase_engine::Error::Canceled("canceling statement due to user request".into())
}

/// A NOTICE with `message`.
fn notice(message: String) -> PgWireBackendMessage {
    PgWireBackendMessage::NoticeResponse(
        ErrorInfo::new("NOTICE".to_string(), "00000".to_string(), message).into(),
    )
}

/// Waits for a result's first batch while sending the client the NOTICEs the statement
/// queues meanwhile (TRAIN's progress), then returns the whole result again. A client
/// that has gone away makes a send fail, which drops — and so cancels — the statement.
async fn forward_notices<C>(
    client: &mut C,
    notices: &runbase_engine::Notices,
    output: QueryOutput,
) -> PgWireResult<QueryOutput>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let QueryOutput::Rows(mut stream) = output else {
        return Ok(output);
    };
    let first = loop {
        tokio::select! {
            item = stream.next() => break item,
            () = notices.wait() => {
                for m in notices.drain() {
                    client.send(notice(m)).await?;
                }
            }
        }
    };
    for m in notices.drain() {
        client.send(notice(m)).await?;
    }
    let schema = stream.schema();
    let rows = stream::iter(first).chain(stream);
    Ok(QueryOutput::Rows(Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, rows),
    )))
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

/// The wire description of a result's columns: arrow-pg's, with two corrections. A list of
/// oids is `oid[]` (see [`runbase_engine::oid_array`]). And an oid mark is only believed
/// on an int4: DataFusion's cast keeps its source's field metadata, so `typelem::text`
/// arrives as text still marked `oid`, which arrow-pg would describe as `oid` while the
/// rows carry text.
fn pg_fields(
    schema: &datafusion::arrow::datatypes::Schema,
    format: &Format,
) -> PgWireResult<Vec<FieldInfo>> {
    let mut fields = arrow_schema_to_pg_fields(schema, format, None)?;
    for (i, field) in schema.fields().iter().enumerate() {
        let data_type = field.data_type();
        let corrected = if is_oid_array(data_type) {
            Type::OID_ARRAY
        } else if data_type != &DataType::Int32
            && field
                .metadata()
                .contains_key(arrow_pg::datatypes::PG_OID_ALIAS_KEY)
        {
            into_pg_type(data_type)?
        } else {
            continue;
        };
        fields[i] = FieldInfo::new(
            field.name().clone(),
            None,
            None,
            corrected,
            format.format_for(i),
        );
    }
    Ok(fields)
}

/// Turns one statement's output into a pgwire response.
fn to_response(output: QueryOutput, format: &Format) -> PgWireResult<Response> {
    match output {
        QueryOutput::Command(tag) => Ok(command_response(&tag)),
        QueryOutput::Rows(stream) => {
            let fields = Arc::new(pg_fields(stream.schema().as_ref(), format)?);
            let row_fields = fields.clone();
            let rows = stream
                .map(
                    move |batch| -> Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> {
                        match batch {
                            Ok(batch) => {
                                let infinite: Vec<usize> =
                                    crate::text::infinite_float_columns(&batch)
                                        .into_iter()
                                        .filter(|i| row_fields[*i].format() == FieldFormat::Text)
                                        .collect();
                                let rows = encode_recordbatch(row_fields.clone(), batch);
                                if infinite.is_empty() {
                                    rows
                                } else {
                                    Box::new(rows.map(move |r| {
                                        r.map(|row| crate::text::respell_infinity(row, &infinite))
                                    }))
                                }
                            }
                            Err(e) => Box::new(std::iter::once(Err(pg_err(&e.into())))),
                        }
                    },
                )
                .flat_map(stream::iter);
            Ok(Response::Query(QueryResponse::new(fields, rows)))
        }
        QueryOutput::CopyIn(_) | QueryOutput::CopyOut(..) => Err(PgError {
            code: "XX000",
            message: "COPY output reached the result-set encoder".into(),
        }
        .into()),
    }
}

fn command_response(tag: &CommandTag) -> Response {
    match tag.command {
        "BEGIN" => Response::TransactionStart(Tag::new("BEGIN")),
        "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(tag.command)),
        "SAVEPOINT" | "RELEASE" | "DEALLOCATE" => Response::Execution(Tag::new(tag.command)),
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

impl Connection {
    /// Runs one statement of a simple query and turns its output into a response; an
    /// error becomes `Response::Error`. The rows of a result are produced as the response
    /// is sent.
    async fn simple_statement<C>(
        &self,
        client: &mut C,
        statement: runbase_engine::Statement,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `DEALLOCATE name` also forgets the protocol-level statement of that name.
        if let runbase_engine::Statement::Sql(ast) = &statement
            && let datafusion::sql::sqlparser::ast::Statement::Deallocate { name, .. } =
                ast.as_ref()
        {
            client.portal_store().rm_statement(&name.value);
        }
        self.session.notices().drain();
        let result = self
            .timed(async {
                let prepared = self.session.prepare(statement).await?;
                self.session.execute(&prepared, None).await
            })
            .await;
        match result {
            Ok(output) => {
                let output = forward_notices(client, self.session.notices(), output).await?;
                warn_if_rollback(client, is_rollback(&output)).await?;
                self.respond(output, &Format::UnifiedText)
            }
            Err(e) => Ok(Response::Error(Box::new(to_pg_error(&e).into()))),
        }
    }
}

/// Sends one statement's response of a simple query, as pgwire's default does, and
/// returns whether the batch goes on.
async fn send_simple_response<C>(
    client: &mut C,
    response: Response,
    status: &mut TransactionStatus,
) -> PgWireResult<bool>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    match response {
        Response::EmptyQuery => {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        Response::Query(results) => send_query_response(client, results, true).await?,
        Response::Execution(tag) => send_execution_response(client, tag).await?,
        Response::TransactionStart(tag) => {
            send_execution_response(client, tag).await?;
            *status = status.to_in_transaction_state();
        }
        Response::TransactionEnd(tag) => {
            send_execution_response(client, tag).await?;
            *status = status.to_idle_state();
        }
        Response::Error(e) => {
            client
                .feed(PgWireBackendMessage::ErrorResponse((*e).into()))
                .await?;
            *status = status.to_error_state();
            // As in PostgreSQL, the first failing statement ends the batch.
            return Ok(false);
        }
        Response::CopyIn(copy) => {
            send_copy_in_response(client, copy).await?;
            client.set_state(PgWireConnectionState::CopyInProgress(false));
            // The client sends the data next; later statements would be lost.
            return Ok(false);
        }
        Response::CopyOut(copy) => send_copy_out_response(client, copy).await?,
        Response::CopyBoth(_) => {
            return Err(PgError {
                code: "0A000",
                message: "COPY BOTH is not supported".into(),
            }
            .into());
        }
    }
    Ok(true)
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    /// Runs a simple query's statements one after another, each finished — its rows sent
    /// as they are produced — before the next starts. A cancel request stops the running
    /// statement at any point, while computing or while its rows stream, with 57014.
    /// (pgwire's default runs every statement before sending any row, and races a cancel
    /// only against that.)
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        debug!(query = query.query, "simple query");
        let mut status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let (user, application) = client_identity(client);
        self.session.set_client(user, application);
        let statements = match self.session.parse(&query.query) {
            Ok(s) => s,
            Err(e) => {
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Err(pg_err(&e));
            }
        };
        if statements.is_empty() {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        for statement in statements {
            let watch = CancelWatch::start(client).await;
            let canceled = watch.canceled;
            let go_on = tokio::select! {
                r = async {
                    let response = self.simple_statement(client, statement).await?;
                    send_simple_response(client, response, &mut status).await
                } => r,
                () = canceled => {
                    let error = to_pg_error(&canceled_error());
                    send_simple_response(client, Response::Error(Box::new(error.into())), &mut status).await
                }
            };
            CancelWatch::finish(watch.handle).await;
            if !go_on? {
                break;
            }
        }
        if !matches!(client.state(), PgWireConnectionState::CopyInProgress(_)) {
            // During `COPY … FROM STDIN` the copy handler answers once the data is in.
            client.set_state(PgWireConnectionState::ReadyForQuery);
            client.set_transaction_status(status);
            send_ready_for_query(client, status).await?;
        }
        Ok(())
    }

    /// Every statement's response, computed one after another (`on_query` streams instead).
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = self.session.parse(query).map_err(|e| pg_err(&e))?;
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let response = self.simple_statement(client, statement).await?;
            let last = matches!(response, Response::Error(_) | Response::CopyIn(_));
            responses.push(response);
            if last {
                break;
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
        Some(t) if is_oid_array(t) => Ok(Type::OID_ARRAY),
        Some(t) => into_pg_type(t),
        None => Ok(Type::TEXT),
    }
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        debug!(sql, "parse");
        let (user, application) = client_identity(client);
        self.session.set_client(user, application);
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
        pg_fields(
            stmt.output_schema().as_ref(),
            column_format.unwrap_or(&Format::UnifiedBinary),
        )
    }
}

/// The values bound to a portal's `$n` parameters, typed as the statement declared them.
fn portal_parameters(portal: &Portal<Prepared>) -> PgWireResult<ParamValues> {
    let prepared = &portal.statement.statement;
    let types = prepared.parameter_types().map_err(|e| pg_err(&e))?;
    // A parameter whose type neither the server inferred nor the client named was
    // described to the client as text (see `parameter_wire_type`), so it is read as
    // text. (Left untyped, arrow-pg guesses from the value and takes a JSON object for
    // an array.)
    let client_types = &portal.statement.parameter_types;
    let type_refs: Vec<Option<&DataType>> = types
        .iter()
        .enumerate()
        .map(
            |(i, t)| match (t, client_types.get(i).and_then(Option::as_ref)) {
                (Some(t), _) => Some(t),
                (None, Some(_)) => None,
                (None, None) => Some(&DataType::Utf8),
            },
        )
        .collect();
    let params = deserialize_parameters(portal, &type_refs)?;
    Ok(params)
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Prepared;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        self.parser.clone()
    }

    /// A statement planned at execution (`Prepared::Deferred`: `$n` among a table
    /// function's arguments, whose columns may depend on the values, as `predict`'s do) is
    /// described by planning it with the portal's values.
    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let schema = match prepared {
            Prepared::Deferred { .. } => {
                let params = portal_parameters(portal)?;
                self.session
                    .bind_deferred(prepared, params)
                    .await
                    .map_err(|e| pg_err(&e))?
                    .output_schema()
            }
            other => other.output_schema(),
        };
        let fields = pg_fields(schema.as_ref(), &portal.result_column_format)?;
        Ok(DescribePortalResponse::new(fields))
    }

    /// Executes a portal. A row-returning portal executed for all its rows (`max_rows`
    /// 0, what drivers send unless they page with a fetch size) streams its rows to the
    /// socket as they are produced, and a cancel request stops it at any point; pgwire's
    /// default would first collect every row in memory. Anything else takes pgwire's
    /// default path.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .as_deref()
            .unwrap_or(pgwire::api::DEFAULT_NAME)
            .to_string();
        let portal = match client.portal_store().get_portal(&name) {
            Some(Entry::Value(portal)) => Some(portal),
            _ => None,
        };
        let initial = match &portal {
            Some(p) => matches!(*p.state().lock().await, PortalExecutionState::Initial),
            None => false,
        };
        let streamable = initial
            && message.max_rows == 0
            && matches!(client.state(), PgWireConnectionState::ReadyForQuery)
            && portal
                .as_ref()
                .is_some_and(|p| p.statement.statement.returns_rows());
        let Some(portal) = portal.filter(|_| streamable) else {
            return self._on_execute(client, message).await;
        };
        client.set_state(PgWireConnectionState::QueryInProgress);
        let watch = CancelWatch::start(client).await;
        let canceled = watch.canceled;
        tokio::pin!(canceled);
        let result = async {
            let response = tokio::select! {
                r = ExtendedQueryHandler::do_query(self, client, portal.as_ref(), 0) => r?,
                () = &mut canceled => return Err(PgWireError::QueryCanceled),
            };
            let Response::Query(mut results) = response else {
                return Err(PgError {
                    code: "XX000",
                    message: "a row-returning statement returned no rows".into(),
                }
                .into());
            };
            let tag = results.command_tag().to_owned();
            let rows = results.data_rows();
            let mut count = 0usize;
            loop {
                let row = tokio::select! {
                    row = rows.next() => row,
                    () = &mut canceled => return Err(PgWireError::QueryCanceled),
                };
                let Some(row) = row else { break };
                client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                count += 1;
            }
            client
                .send(PgWireBackendMessage::CommandComplete(
                    Tag::new(&tag).with_rows(count).into(),
                ))
                .await?;
            Ok(())
        }
        .await;
        CancelWatch::finish(watch.handle).await;
        *portal.state().lock().await = PortalExecutionState::Finished;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        result
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
        let params = portal_parameters(portal)?;
        self.session.notices().drain();
        let output = self
            .timed(self.session.execute(prepared, Some(params)))
            .await
            .map_err(|e| pg_err(&e))?;
        let output = forward_notices(client, self.session.notices(), output).await?;
        warn_if_rollback(client, is_rollback(&output)).await?;
        self.respond(output, &portal.result_column_format)
    }
}

#[async_trait]
impl CopyHandler for Connection {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Errors are kept in the copy and reported once, at CopyDone.
        if let Some(copy) = self.copy.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            copy.push(&copy_data.data);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let copy = self.copy.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(copy) = copy else {
            return Err(PgError {
                code: "08P01",
                message: "CopyDone without a COPY in progress".into(),
            }
            .into());
        };
        let tag = self
            .session
            .finish_copy_in(*copy)
            .await
            .map_err(|e| pg_err(&e))?;
        let rows = usize::try_from(tag.rows.unwrap_or(0)).unwrap_or(usize::MAX);
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(rows).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.copy.lock().unwrap_or_else(|p| p.into_inner()).take();
        PgError {
            code: "57014",
            message: format!("COPY from stdin failed: {}", fail.message),
        }
        .into()
    }
}

/// The handler set pgwire asks for: the one [`Connection`] for queries and COPY, and the
/// connection's own [`Startup`] (authentication state is per connection).
pub struct ConnectionHandlers {
    connection: Arc<Connection>,
    startup: Arc<Startup>,
    cancels: Arc<ConnectionManager>,
}

impl ConnectionHandlers {
    /// Handlers over a new connection on `session`; `cancels` is the server-wide registry
    /// cancel requests are looked up in, `policy` how clients authenticate.
    pub fn new(
        db: &Database,
        session: Session,
        policy: Arc<AuthPolicy>,
        cancels: Arc<ConnectionManager>,
    ) -> Self {
        let connection = Arc::new(Connection::new(session));
        let startup = Arc::new(Startup::new(
            db.clone(),
            connection.session.clone(),
            policy,
            cancels.clone(),
        ));
        Self {
            connection,
            startup,
            cancels,
        }
    }
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.connection.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.connection.clone()
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.connection.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.cancels.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_timeout;
    use std::time::Duration;

    #[test]
    fn statement_timeouts() {
        assert_eq!(parse_timeout("0"), None);
        assert_eq!(parse_timeout("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("'2s'"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_timeout("soon"), None);
    }
}
