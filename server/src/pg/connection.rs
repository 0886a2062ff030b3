//! One client connection: its engine session and per-connection state ([`Connection`]),
//! and the handler set pgwire asks for ([`ConnectionHandlers`]).
//!
//! The handlers themselves live by job: [`super::simple`] (simple query),
//! [`super::extended`] (parse/bind/describe/execute), [`super::copy`] (COPY data),
//! [`super::startup`] (authentication).

use std::sync::{Arc, Mutex};

use futures::stream;
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::Format;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, Response};
use pgwire::api::{ClientInfo, ConnectionManager, PgWireServerHandlers};
use pgwire::error::{PgWireError, PgWireResult};
use runbase_engine::pg::copy::{CopyFormat, CopyIn};
use runbase_engine::{Database, QueryOutput, Session};

use super::error::to_pg_error;
use super::extended::StatementParser;
use super::startup::{AuthPolicy, Startup};

/// An engine error as a pgwire error.
pub(super) fn pg_err(err: &runbase_engine::Error) -> PgWireError {
    to_pg_error(err).into()
}

/// The handlers of one client connection.
pub struct Connection {
    pub(super) session: Arc<Session>,
    pub(super) parser: Arc<StatementParser>,
    /// The `COPY … FROM STDIN` in progress, if any.
    pub(super) copy: Mutex<Option<Box<CopyIn>>>,
}

impl Connection {
    /// Handlers over `session`.
    pub fn new(session: Session) -> Self {
        let session = Arc::new(session);
        Self {
            parser: Arc::new(StatementParser::new(session.clone())),
            session,
            copy: Mutex::new(None),
        }
    }

    /// Turns one statement's output into a pgwire response; a `COPY … FROM STDIN` is kept
    /// until its data has arrived.
    pub(super) fn respond(&self, output: QueryOutput, format: &Format) -> PgWireResult<Response> {
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
                let mut response =
                    CopyResponse::new(0, columns, super::copy::copy_out_stream(rows, format));
                response.format = i8::from(binary);
                Ok(Response::CopyOut(response))
            }
            other => super::response::to_response(other, format),
        }
    }
}

/// The client's `user` and `application_name`, for the session's records of who did what.
pub(super) fn client_identity<C: ClientInfo>(client: &C) -> (Option<String>, Option<String>) {
    let meta = client.metadata();
    (
        meta.get("user").cloned(),
        meta.get("application_name")
            .cloned()
            .filter(|a| !a.is_empty()),
    )
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

impl ConnectionHandlers {
    /// The connection's engine session.
    pub fn session(&self) -> &Arc<Session> {
        &self.connection.session
    }

    /// The handlers by their concrete types, for [`super::socket::process_socket`]'s loop.
    pub(super) fn parts(&self) -> (Arc<Startup>, Arc<Connection>, Arc<DefaultCancelHandler>) {
        (
            self.startup.clone(),
            self.connection.clone(),
            Arc::new(DefaultCancelHandler::new(self.cancels.clone())),
        )
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
