//! The PostgreSQL listener: accepts clients, runs one task per connection, shuts down
//! gracefully. [`crate::supervisor`] binds it and tells it when to stop.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use runbase_engine::Database;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};

use super::connection::ConnectionHandlers;
use super::startup::{AuthMethod, AuthPolicy};
use crate::config::PgArgs;

/// How the server admits clients.
#[derive(Clone)]
pub struct ServeOptions {
    /// Authentication and the TLS requirement.
    pub policy: Arc<AuthPolicy>,
    /// TLS, when configured.
    pub tls: Option<pgwire::tokio::TlsAcceptor>,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    /// Trust, no TLS, 100 connections.
    fn default() -> Self {
        Self {
            policy: Arc::new(AuthPolicy::new(AuthMethod::Trust, false)),
            tls: None,
            max_connections: 100,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Loads a PEM certificate chain and private key into a TLS acceptor for PostgreSQL
/// clients (ALPN `postgresql`); any problem is an error (the server then refuses to start
/// rather than serve without TLS).
pub fn load_tls(cert: &Path, key: &Path) -> Result<pgwire::tokio::TlsAcceptor, BoxError> {
    let mut config = tls_config(cert, key)?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

/// The same certificate and key for HTTPS (ALPN `http/1.1`).
pub fn load_http_tls(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, BoxError> {
    let mut config = tls_config(cert, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn tls_config(cert: &Path, key: &Path) -> Result<tokio_rustls::rustls::ServerConfig, BoxError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("TLS certificate {}: no certificate in it", cert.display()).into());
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("TLS certificate and key {}: {e}", key.display()).into())
}

/// The start-up policy from the command line, checked: trust authentication only on a
/// loopback address, TLS loaded when configured.
pub fn options_from(args: &PgArgs) -> Result<ServeOptions, BoxError> {
    if args.auth == AuthMethod::Trust && !args.listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {} with --auth trust: anyone who can reach it would be a superuser; use --auth scram (and create users first: runbase sql \"CREATE USER …\")",
            args.listen
        )
        .into());
    }
    if args.max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
        _ => None,
    };
    if args.require_tls && tls.is_none() {
        return Err("--require-tls needs --tls-cert and --tls-key".into());
    }
    Ok(ServeOptions {
        policy: Arc::new(AuthPolicy::new(args.auth, args.require_tls)),
        tls,
        max_connections: args.max_connections,
    })
}

/// Serves clients on `listener` until `shutdown` resolves; then stops accepting, gives open
/// connections `grace` to finish, and closes the rest.
pub async fn serve(
    db: Database,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    let mut next_id: u64 = 0;
    let cancels = Arc::new(pgwire::api::ConnectionManager::new());
    let slots = Arc::new(Semaphore::new(options.max_connections));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    next_id += 1;
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        warn!(%peer, max = options.max_connections, "connection refused: too many clients");
                        db.stats().connection_refused("pg", "too_many_connections");
                        tokio::spawn(refuse_too_many(socket, options.max_connections));
                        continue;
                    };
                    let handlers = ConnectionHandlers::new(
                        &db,
                        db.session(),
                        options.policy.clone(),
                        cancels.clone(),
                    );
                    let tls = options.tls.clone();
                    let span = info_span!("connection", id = next_id, %peer);
                    let counted = db.stats().connection_opened("pg");
                    connections.spawn(async move {
                        let _slot = slot;
                        let _counted = counted;
                        info!("connected");
                        if let Err(err) = super::socket::process_socket(socket, tls, handlers).await {
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

/// Answers a connection over the limit as PostgreSQL does: reads its start-up packet
/// (declining TLS first if it asks), sends FATAL 53300 and closes.
async fn refuse_too_many(mut socket: TcpStream, max: usize) {
    const SSL_REQUEST: u32 = 80_877_103;
    const GSSENC_REQUEST: u32 = 80_877_104;
    let exchange = async {
        loop {
            let mut head = [0u8; 8];
            socket.read_exact(&mut head).await?;
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            if code == SSL_REQUEST || code == GSSENC_REQUEST {
                socket.write_all(b"N").await?;
                continue;
            }
            // The rest of the start-up packet (bounded: it is only parameters).
            let mut rest = vec![0u8; len.saturating_sub(8).min(10_000)];
            socket.read_exact(&mut rest).await?;
            break;
        }
        let mut fields = Vec::new();
        for (tag, value) in [
            (b'S', "FATAL".to_string()),
            (b'V', "FATAL".to_string()),
            (
                b'C',
                super::error::sqlstate(runbase_engine::error::ErrorCode::TooManyConnections)
                    .to_string(),
            ),
            (
                b'M',
                format!(
                    "sorry, too many clients already (the server allows {max}: --max-connections)"
                ),
            ),
        ] {
            fields.push(tag);
            fields.extend_from_slice(value.as_bytes());
            fields.push(0);
        }
        fields.push(0);
        let mut message = vec![b'E'];
        message.extend_from_slice(
            &(u32::try_from(fields.len() + 4).unwrap_or(u32::MAX)).to_be_bytes(),
        );
        message.extend_from_slice(&fields);
        socket.write_all(&message).await?;
        socket.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), exchange).await;
}
