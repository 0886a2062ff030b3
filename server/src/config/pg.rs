//! The PostgreSQL front end's options.

use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::pg::startup::AuthMethod;

/// How the PostgreSQL front end listens and admits clients.
#[derive(Debug, Clone, clap::Args)]
pub struct PgArgs {
    /// Address to listen on for PostgreSQL clients (`--listen` is its older name).
    #[arg(
        long = "pg-listen",
        visible_alias = "listen",
        env = "RUNBASE_LISTEN",
        default_value = "127.0.0.1:5433"
    )]
    pub listen: SocketAddr,

    /// How clients authenticate: `trust` (any user, no password; only allowed when
    /// listening on loopback) or `scram` (SCRAM-SHA-256 against `CREATE USER … PASSWORD`).
    #[arg(long, env = "RUNBASE_AUTH", value_enum, default_value_t = AuthMethod::Trust)]
    pub auth: AuthMethod,

    /// PEM file with the server's TLS certificate chain (with --tls-key). If it cannot be
    /// loaded the server does not start.
    #[arg(long, env = "RUNBASE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the TLS certificate's private key (with --tls-cert).
    #[arg(long, env = "RUNBASE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Refuse connections that do not use TLS (needs --tls-cert and --tls-key).
    #[arg(long, env = "RUNBASE_REQUIRE_TLS", requires = "tls_cert")]
    pub require_tls: bool,

    /// Most client connections open at once; more are refused with 53300.
    #[arg(long, env = "RUNBASE_MAX_CONNECTIONS", default_value_t = 100)]
    pub max_connections: usize,
}
