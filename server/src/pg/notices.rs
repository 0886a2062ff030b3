//! NOTICE and WARNING messages: the NOTICEs a statement queues while it runs (TRAIN's
//! progress) forwarded to the client, and the WARNING for a `ROLLBACK` that undid nothing;
//! and the asynchronous notifications of `LISTEN` (`feed_notifications`).

use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use runbase_engine::QueryOutput;

use super::error::{SQLSTATE_NOTICE, SQLSTATE_WARNING};

/// Queues the notifications waiting for `session` (its `LISTEN` channels) on `client`:
/// what goes out before each ReadyForQuery, and whenever the connection is idle.
pub(super) async fn feed_notifications<C>(
    client: &mut C,
    session: &runbase_engine::Session,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for n in session.listener().drain() {
        client
            .feed(PgWireBackendMessage::NotificationResponse(
                pgwire::messages::response::NotificationResponse::new(
                    n.sender_pid,
                    n.channel,
                    n.payload,
                ),
            ))
            .await?;
    }
    Ok(())
}

/// A NOTICE with `message`.
fn notice(message: String) -> PgWireBackendMessage {
    PgWireBackendMessage::NoticeResponse(
        ErrorInfo::new("NOTICE".to_string(), SQLSTATE_NOTICE.to_string(), message).into(),
    )
}

/// Waits for a result's first batch while sending the client the NOTICEs the statement
/// queues meanwhile (TRAIN's progress), then returns the whole result again. A client
/// that has gone away makes a send fail, which drops — and so cancels — the statement.
pub(super) async fn forward_notices<C>(
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
            SQLSTATE_WARNING.to_string(),
            "runbase commits every statement on its own: ROLLBACK did not undo earlier statements"
                .to_string(),
        )
        .into(),
    )
}

/// Whether `output` is the completion of a `ROLLBACK`.
pub(super) fn is_rollback(output: &QueryOutput) -> bool {
    matches!(output, QueryOutput::Command(tag) if tag.command == "ROLLBACK")
}

/// Sends PostgreSQL's WARNING that a `ROLLBACK` undid nothing. (Takes a flag, not the
/// output: a result stream is not `Sync`, so no reference to it may live across an await.)
pub(super) async fn warn_if_rollback<C>(client: &mut C, rollback: bool) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if rollback {
        client.send(rollback_warning()).await?;
    }
    Ok(())
}
