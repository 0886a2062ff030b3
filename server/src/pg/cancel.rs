//! Stopping a running statement: cancel requests (`CancelWatch`) and the session's
//! `statement_timeout` (a deadline on planning, executing and streaming the rows).

use std::sync::Arc;

use datafusion::execution::SendableRecordBatchStream;
use futures::{StreamExt, stream};
use pgwire::api::{ClientInfo, ConnectionHandle};
use runbase_engine::QueryOutput;

use super::connection::Connection;

impl Connection {
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
    pub(super) async fn timed<F>(&self, work: F) -> runbase_engine::Result<QueryOutput>
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
}

/// `statement_timeout` as PostgreSQL reads it ([`runbase_engine::sql::parse_duration`]);
/// 0 means none.
fn parse_timeout(text: &str) -> Option<std::time::Duration> {
    runbase_engine::sql::parse_duration(text).filter(|d| !d.is_zero())
}

fn timeout_error() -> runbase_engine::Error {
    runbase_engine::Error::Timeout("canceling statement due to statement timeout".into())
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
pub(super) struct CancelWatch<F> {
    pub(super) handle: Option<Arc<ConnectionHandle>>,
    /// Resolves on a cancel request; never when there is no registry, or when the sender
    /// goes away without one (another statement started).
    pub(super) canceled: F,
}

impl CancelWatch<()> {
    /// Registers the statement starting now as the one a cancel request stops.
    pub(super) async fn start<C: ClientInfo>(
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
    pub(super) async fn finish(handle: Option<Arc<ConnectionHandle>>) {
        if let Some(h) = handle {
            drop(h.start_query().await);
        }
    }
}

/// The error a cancel request ends a statement with (57014).
pub(super) fn canceled_error() -> runbase_engine::Error {
    runbase_engine::Error::Canceled("canceling statement due to user request".into())
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
