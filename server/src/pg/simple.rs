//! The simple-query protocol: a query string of one or more statements, run one after
//! another, each one's rows streamed to the client as they are produced.

use std::fmt::Debug;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::copy::{send_copy_in_response, send_copy_out_response};
use pgwire::api::portal::Format;
use pgwire::api::query::{
    SimpleQueryHandler, send_execution_response, send_query_response, send_ready_for_query,
};
use pgwire::api::results::Response;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::{EmptyQueryResponse, TransactionStatus};
use pgwire::messages::simplequery::Query;
use runbase_engine::error::ErrorCode;
use tracing::debug;

use super::cancel::{CancelWatch, canceled_error};
use super::connection::{Connection, client_identity, pg_err};
use super::error::{PgError, to_pg_error};
use super::notices::{forward_notices, is_rollback, warn_if_rollback};

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
            return Err(PgError::new(ErrorCode::Unsupported, "COPY BOTH is not supported").into());
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
            super::notices::feed_notifications(client, &self.session).await?;
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
