//! Command-line and environment configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
