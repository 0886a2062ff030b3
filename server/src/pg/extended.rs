//! The extended-query protocol: statements parsed and planned once ([`StatementParser`]),
//! portals bound with parameter values, described and executed (row-returning portals
//! streamed, cancellable at any point).

use std::fmt::Debug;
use std::sync::Arc;

use arrow_pg::datatypes::{df::deserialize_parameters, into_pg_type};
use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{DescribePortalResponse, FieldInfo, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::Execute;
use runbase_engine::error::ErrorCode;
use runbase_engine::pg::oid_array::is_oid_array;
use runbase_engine::{Prepared, Session};
use tracing::debug;

use super::cancel::CancelWatch;
use super::connection::{Connection, client_identity, pg_err};
use super::error::PgError;
use super::notices::{forward_notices, is_rollback, warn_if_rollback};
use super::response::pg_fields;

/// Plans statements for the extended protocol.
pub struct StatementParser {
    session: Arc<Session>,
}

impl StatementParser {
    /// A parser planning statements on `session`.
    pub fn new(session: Arc<Session>) -> Self {
        Self { session }
    }
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
            return Err(PgError::new(
                ErrorCode::Syntax,
                "cannot insert multiple commands into a prepared statement",
            )
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

    /// Ends an extended-query batch: forgets the unnamed portal, sends the notifications
    /// waiting for the session (as PostgreSQL does, before ReadyForQuery), then
    /// ReadyForQuery.
    async fn on_sync<C>(
        &self,
        client: &mut C,
        _message: pgwire::messages::extendedquery::Sync,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.portal_store().rm_portal(pgwire::api::DEFAULT_NAME);
        super::notices::feed_notifications(client, &self.session).await?;
        client
            .send(PgWireBackendMessage::ReadyForQuery(
                pgwire::messages::response::ReadyForQuery::new(client.transaction_status()),
            ))
            .await?;
        client.flush().await?;
        Ok(())
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
                return Err(PgError::new(
                    ErrorCode::Internal,
                    "a row-returning statement returned no rows",
                )
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
