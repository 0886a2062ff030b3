//! `runbase serve`: starts every front end (the PostgreSQL listener, the HTTP server) over
//! one database, and stops them together.
//!
//! Every front end is bound before any serves: if one cannot bind, the server refuses to
//! start with an error naming it. One [`Shutdown`] signal, triggered by SIGINT or SIGTERM
//! (or by a front end stopping on its own), tells every accept loop to stop; each then
//! gives its open connections the same grace period, concurrently, and the server exits
//! once all have drained.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::{AuthMethod, ServeArgs};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The shared shutdown signal, as every front end watches it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Resolves once shutdown is triggered (or its trigger is gone, which can only mean
    /// the server is stopping).
    pub fn signaled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
}

/// Triggers a [`Shutdown`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownTrigger {
    /// Tells every front end to stop; later calls do nothing more.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

/// A new shutdown signal and its trigger.
pub fn shutdown_channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx: Arc::new(tx) }, Shutdown { rx })
}

/// Writes `text` to `path` whole: into a sibling file first, then renamed over `path`, so
/// that a reader never sees half of it.
async fn write_ready_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut staged = path.as_os_str().to_owned();
    staged.push(".tmp");
    tokio::fs::write(&staged, text).await?;
    tokio::fs::rename(&staged, path).await
}

/// Binds `addr` for the front end `name`, or says which front end could not listen.
pub async fn bind(name: &str, addr: SocketAddr) -> Result<TcpListener, BoxError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for {name} clients on {addr}: {e}").into())
}

/// Opens the database, starts every configured front end, and serves until SIGINT or
/// SIGTERM; then drains them together. Fails before serving anything if the options are
/// refused, the database does not open, or a front end cannot bind.
pub async fn run(args: ServeArgs) -> Result<(), BoxError> {
    let options = crate::pg::listener::options_from(&args.pg)?;
    let http_addr = args.http.address(args.pg.auth)?;
    let (db, services) = crate::open_database_with_services(&args.common).await?;
    let grace = Duration::from_secs(args.shutdown_grace_secs);

    // HTTP first: once the PostgreSQL port answers (what scripts and tests wait for),
    // every front end is listening.
    let http = match http_addr {
        Some(addr) => Some(bind("HTTP", addr).await?),
        None => None,
    };
    let pg = bind("PostgreSQL", args.pg.listen).await?;
    info!(
        addr = %pg.local_addr()?,
        auth = ?args.pg.auth,
        tls = options.tls.is_some(),
        require_tls = args.pg.require_tls,
        max_connections = args.pg.max_connections,
        "listening for PostgreSQL clients"
    );
    match &http {
        Some(listener) => info!(addr = %listener.local_addr()?, "listening for HTTP clients"),
        None => info!("HTTP front end off (--no-http)"),
    }
    if let Some(path) = &args.ready_file {
        let mut text = format!("postgres={}\n", pg.local_addr()?);
        if let Some(listener) = &http {
            text.push_str(&format!("http={}\n", listener.local_addr()?));
        }
        write_ready_file(path, &text)
            .await
            .map_err(|e| format!("cannot write the ready file {}: {e}", path.display()))?;
    }

    let (trigger, shutdown) = shutdown_channel();
    let backups = args.backup_to.clone().map(|url| {
        tokio::spawn(crate::backup::scheduled(
            db.clone(),
            url,
            Duration::from_secs(args.backup_interval_secs.max(1)),
            shutdown.clone(),
        ))
    });
    db.tracking()
        .allow_webhooks(args.alert_webhook_allow.clone());
    let webhooks = tokio::spawn(crate::webhooks::deliver(
        db.downgrade(),
        db.tracking().subscribe_alerts(),
        shutdown.clone(),
    ));
    let mut front_ends: JoinSet<(&'static str, Result<(), BoxError>)> = JoinSet::new();
    let http_db = db.clone();
    let http_services = crate::http::HttpServices {
        inference: Some(services.inference.clone()),
    };
    {
        let shutdown = shutdown.clone();
        front_ends.spawn(async move {
            crate::pg::listener::serve(db, pg, options, shutdown.signaled(), grace).await;
            ("PostgreSQL", Ok(()))
        });
    }
    if let Some(listener) = http {
        let shutdown = shutdown.clone();
        // The PostgreSQL certificate serves HTTPS too.
        let http_tls = match (&args.pg.tls_cert, &args.pg.tls_key) {
            (Some(cert), Some(key)) => Some(crate::pg::listener::load_http_tls(cert, key)?),
            _ => None,
        };
        let api = if args.pg.auth == AuthMethod::Trust {
            crate::http::ApiAccess::Open
        } else {
            crate::http::ApiAccess::Login
        };
        front_ends.spawn(async move {
            let result = crate::http::serve(
                http_db,
                listener,
                shutdown,
                grace,
                api,
                http_tls,
                http_services,
            )
            .await;
            ("HTTP", result.map_err(BoxError::from))
        });
    }

    let mut failure: Option<BoxError> = None;
    tokio::select! {
        () = shutdown_signal() => {}
        Some(done) = front_ends.join_next() => {
            // Front ends only stop when told to: this one failed.
            failure = Some(stopped(done, &shutdown));
        }
    }
    info!(
        grace_secs = grace.as_secs(),
        "shutting down every front end"
    );
    trigger.trigger();
    while let Some(done) = front_ends.join_next().await {
        if let (name, Err(e)) | (name, Ok(Err(e))) = flatten(done) {
            error!(front_end = name, error = %e, "front end failed while shutting down");
            failure.get_or_insert(e);
        }
    }
    // Deliveries under way are abandoned with the process; each records its outcome
    // when it ends.
    webhooks.abort();
    let _ = webhooks.await;
    if let Some(backups) = backups {
        // A backup under way is abandoned: it has no manifest, so it never counts. Waited
        // for, so its database handle is gone before the process exits.
        backups.abort();
        let _ = backups.await;
    }
    match failure {
        Some(e) => Err(e),
        None => {
            info!("shut down");
            Ok(())
        }
    }
}

/// A front end's task result as (name, outcome); a panic is named "a front end".
fn flatten(
    done: Result<(&'static str, Result<(), BoxError>), tokio::task::JoinError>,
) -> (&'static str, Result<Result<(), BoxError>, BoxError>) {
    match done {
        Ok((name, result)) => (name, Ok(result)),
        Err(e) => ("a front end", Err(format!("task failed: {e}").into())),
    }
}

/// The error for a front end that stopped before shutdown was asked for.
fn stopped(
    done: Result<(&'static str, Result<(), BoxError>), tokio::task::JoinError>,
    shutdown: &Shutdown,
) -> BoxError {
    let (name, outcome) = flatten(done);
    let e: BoxError = match outcome {
        Ok(Ok(())) => format!("the {name} front end stopped on its own").into(),
        Ok(Err(e)) | Err(e) => format!("the {name} front end failed: {e}").into(),
    };
    if !shutdown.is_triggered() {
        error!(error = %e, "stopping the other front ends");
    }
    e
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_trigger_stops_every_watcher() {
        let (trigger, shutdown) = shutdown_channel();
        let a = tokio::spawn(shutdown.signaled());
        let b = tokio::spawn(shutdown.clone().signaled());
        assert!(!shutdown.is_triggered());
        trigger.trigger();
        for w in [a, b] {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("woken")
                .expect("task");
        }
        assert!(shutdown.is_triggered());
        // A watcher that starts after the trigger sees it at once.
        tokio::time::timeout(Duration::from_secs(1), shutdown.signaled())
            .await
            .expect("already triggered");
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("address");
        let err = bind("HTTP", addr).await.expect_err("port is taken");
        let text = err.to_string();
        assert!(
            text.contains("HTTP") && text.contains(&addr.to_string()),
            "{text}"
        );
    }
}
