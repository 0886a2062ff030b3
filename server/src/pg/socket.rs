//! The connection loop: pgwire's `process_socket`, plus pushing notifications to a client
//! that is idle.
//!
//! pgwire's own loop only reads the socket, so a notification (`LISTEN`) could only go out
//! with the answer to the client's next message. This loop also waits on the session's
//! notification queue while the connection is idle — ReadyForQuery sent, not inside a
//! transaction block — and sends what arrives at once, as PostgreSQL does (psycopg's
//! `notifies()`, asyncpg's listeners and JDBC's `getNotifications` wait for exactly that).
//! Otherwise it is pgwire's loop: TLS negotiation, the start-up timeout, one message at a
//! time through `process_message`, errors through `process_error` (the connection's
//! handlers have no error hook of their own), `Terminate` closes. Under pgwire's decoder the
//! socket is [`Guarded`]: a malformed message is answered with 08P01 and the connection
//! closes, instead of a panic in the decoder.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use runbase_engine::Prepared;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use super::connection::ConnectionHandlers;
use super::frames::{Guarded, malformed};

/// How long a client has to finish TLS and authentication (pgwire's figure).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves one client connection until it closes.
pub async fn process_socket(
    socket: TcpStream,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    handlers: ConnectionHandlers,
) -> std::io::Result<()> {
    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_timeout);
    let negotiated = tokio::select! {
        () = &mut startup_timeout => return Ok(()),
        s = negotiate_tls::<Prepared>(socket, tls) => s?,
    };
    // A direct TLS start without TLS configured: nothing to talk about.
    let Some(socket) = negotiated else {
        return Ok(());
    };
    // The same codec (and its connection state) over the guarded socket; bytes pgwire has
    // read ahead already go through the guard too.
    let parts = socket.into_parts();
    let mut guarded = FramedParts::new::<PgWireBackendMessage>(
        Guarded::new(parts.io, parts.read_buf),
        parts.codec,
    );
    guarded.write_buf = parts.write_buf;
    let mut socket = Framed::from_parts(guarded);
    let (startup, connection, cancel) = handlers.parts();
    let listener = handlers.session().listener().clone();
    let session = handlers.session().clone();
    // Whether the last message ended a cycle with ReadyForQuery (a simple query, a Sync,
    // the end of start-up), so the client is waiting for nothing but notifications.
    let mut cycle_done = false;
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let idle = cycle_done
            && matches!(socket.state(), PgWireConnectionState::ReadyForQuery)
            && matches!(socket.transaction_status(), TransactionStatus::Idle);
        let msg = if starting {
            tokio::select! {
                () = &mut startup_timeout => None,
                msg = socket.next() => msg,
            }
        } else if idle {
            tokio::select! {
                msg = socket.next() => msg,
                () = listener.notified() => {
                    super::notices::feed_notifications(&mut socket, &session)
                        .await
                        .map_err(std::io::Error::other)?;
                    socket.flush().await?;
                    continue;
                }
            }
        } else {
            socket.next().await
        };
        let msg = match msg {
            Some(Ok(msg)) => msg,
            Some(Err(PgWireError::IoError(e))) if malformed(&e).is_some() => {
                // As PostgreSQL: a FATAL protocol_violation, then the connection closes.
                let message = malformed(&e).unwrap_or_default();
                tracing::debug!(%message, "closing a connection after a malformed message");
                let info = ErrorInfo::new("FATAL".into(), "08P01".into(), message);
                let _ = socket
                    .send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await;
                break;
            }
            _ => break,
        };
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        cycle_done = matches!(
            msg,
            PgWireFrontendMessage::Query(_)
                | PgWireFrontendMessage::Sync(_)
                | PgWireFrontendMessage::CopyDone(_)
                | PgWireFrontendMessage::CopyFail(_)
        ) || starting;
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => msg.is_extended_query(),
        };
        if let Err(e) = process_message(
            msg,
            &mut socket,
            startup.clone(),
            connection.clone(),
            connection.clone(),
            connection.clone(),
            cancel.clone(),
        )
        .await
        {
            process_error(&mut socket, e, extended_query).await?;
        }
    }
    Ok(())
}
