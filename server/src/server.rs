//! The listener: accepts clients, runs one task per connection, shuts down gracefully.

use std::future::Future;
use std::time::Duration;

use runbase_engine::Database;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};

use crate::config::ServeArgs;
use crate::handler::ConnectionHandlers;

/// `runbase serve`: opens the database, listens, and serves until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let db = crate::open_database(&args.common).await?;
    let listener = TcpListener::bind(args.listen).await?;
    info!(addr = %listener.local_addr()?, "listening for PostgreSQL clients");
    serve(
        db,
        listener,
        shutdown_signal(),
        Duration::from_secs(args.shutdown_grace_secs),
    )
    .await;
    info!("shut down");
    Ok(())
}

/// Serves clients on `listener` until `shutdown` resolves; then stops accepting, gives open
/// connections `grace` to finish, and closes the rest.
pub async fn serve(
    db: Database,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    let mut next_id: u64 = 0;
    let cancels = std::sync::Arc::new(pgwire::api::ConnectionManager::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    next_id += 1;
                    let handlers = std::sync::Arc::new(ConnectionHandlers::new(db.session(), cancels.clone()));
                    let span = info_span!("connection", id = next_id, %peer);
                    connections.spawn(async move {
                        info!("connected");
                        if let Err(err) = pgwire::tokio::process_socket(socket, None, handlers).await {
                            warn!(%err, "connection ended with an error");
                        }
                        info!("disconnected");
                    }.instrument(span));
                }
                Err(err) => {
                    warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    info!(
        open = connections.len(),
        "shutting down: no new connections"
    );
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            open = connections.len(),
            "closing connections still open after the grace period"
        );
        connections.shutdown().await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            warn!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT received"),
        () = term => info!("SIGTERM received"),
    }
}
