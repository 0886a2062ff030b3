//! Command-line and environment configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use crate::auth::AuthMethod;

/// runbase: an experiment-tracking database with a SQL interface.
#[derive(Debug, Parser)]
#[command(name = "runbase", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server, speaking the PostgreSQL wire protocol.
    Serve(ServeArgs),
    /// Run SQL statements against a data directory in-process, with no server, and print
    /// the results.
    Sql(SqlArgs),
}

/// Options shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Directory holding the catalog and, by default, the table data.
    #[arg(long, env = "RUNBASE_DATA_DIR", default_value = "./runbase-data")]
    pub data_dir: PathBuf,

    /// Log format.
    #[arg(long, env = "RUNBASE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Worker threads for query execution (default: one per core).
    #[arg(long, env = "RUNBASE_QUERY_THREADS")]
    pub query_threads: Option<usize>,

    /// Sync every tracking write (log_metric, COPY into runbase.metrics, …) to disk before
    /// acknowledging it. `false` trades durability across a machine crash for speed, like
    /// PostgreSQL's `synchronous_commit = off`; a crash of runbase alone loses nothing.
    #[arg(long, env = "RUNBASE_SYNCHRONOUS_COMMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub synchronous_commit: bool,
}

/// `runbase serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on for PostgreSQL clients.
    #[arg(long, env = "RUNBASE_LISTEN", default_value = "127.0.0.1:5433")]
    pub listen: SocketAddr,

    /// Seconds to let open connections finish after SIGINT/SIGTERM before closing them.
    #[arg(long, env = "RUNBASE_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

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

    /// Options shared by every subcommand.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `runbase sql`.
#[derive(Debug, Clone, clap::Args)]
pub struct SqlArgs {
    /// The SQL to run; several statements may be separated by `;`.
    pub sql: String,

    /// Options shared by every subcommand.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}
