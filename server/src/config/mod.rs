//! Command-line and environment configuration: one typed tree. Every flag has an
//! environment variable (shown in `--help`).
//!
//! - [`Cli`] → [`Command`]: `runbase serve` ([`ServeArgs`]), `runbase sql` ([`SqlArgs`]),
//!   `runbase backup` ([`BackupArgs`]) and `runbase restore` ([`RestoreArgs`]).
//! - [`ServeArgs`]: the front ends' options — [`pg::PgArgs`] (the PostgreSQL listener,
//!   authentication, TLS) and [`http::HttpArgs`] (the HTTP listener) — and the shutdown
//!   grace period.
//! - [`CommonArgs`]: the data directory, logging, query threads, durability,
//!   [`storage::StorageArgs`] (the object store, S3) and [`udfs::UdfsArgs`] (training and
//!   inference).

pub mod http;
pub mod pg;
pub mod storage;
pub mod udfs;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use http::HttpArgs;
pub use pg::{AuthMethod, PgArgs};
pub use storage::StorageArgs;
pub use udfs::UdfsArgs;

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
    /// Run the server: the PostgreSQL wire protocol and the HTTP front end.
    Serve(ServeArgs),
    /// Run SQL statements against a data directory in-process, with no server, and print
    /// the results.
    Sql(SqlArgs),
    /// Back up a stopped server's data directory (a running server backs itself up:
    /// `SELECT backup('<url>')` or `serve --backup-to`).
    Backup(BackupArgs),
    /// Restore the newest (or a chosen) backup into an empty data directory.
    Restore(RestoreArgs),
}

/// `runbase backup`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup: `s3://bucket/prefix` or a local directory. Later
    /// backups to the same place upload only what changed.
    #[arg(long)]
    pub to: String,

    /// Options shared by every subcommand.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `runbase restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// Where the backups are: `s3://bucket/prefix` or a local directory.
    #[arg(long)]
    pub from: String,

    /// The backup to restore (an id from the manifests); the newest by default.
    #[arg(long)]
    pub backup_id: Option<String>,

    /// Options shared by every subcommand (`--data-dir` is the directory restored into;
    /// it must be empty or absent).
    #[command(flatten)]
    pub common: CommonArgs,
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

    /// Sync every write to disk before acknowledging it: tracking writes (log_metric, COPY
    /// into runbase.metrics, …) and, on a local object store, table files, model blobs and
    /// artifacts. `false` trades durability across a machine crash for speed, like
    /// PostgreSQL's `synchronous_commit = off`; a crash of runbase alone loses nothing.
    #[arg(long, env = "RUNBASE_SYNCHRONOUS_COMMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub synchronous_commit: bool,

    /// Where tables, models and artifacts live.
    #[command(flatten)]
    pub storage: StorageArgs,

    /// Training and inference options.
    #[command(flatten)]
    pub udfs: UdfsArgs,
}

/// `runbase serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The PostgreSQL front end.
    #[command(flatten)]
    pub pg: PgArgs,

    /// The HTTP front end.
    #[command(flatten)]
    pub http: HttpArgs,

    /// Back the database up here on a schedule, online: `s3://bucket/prefix` or a local
    /// directory. Each backup uploads only what the last one did not.
    #[arg(long, env = "RUNBASE_BACKUP_TO")]
    pub backup_to: Option<String>,

    /// Seconds between scheduled backups (with `--backup-to`); the first runs this long
    /// after start-up.
    #[arg(long, env = "RUNBASE_BACKUP_INTERVAL_SECS", default_value_t = 3600)]
    pub backup_interval_secs: u64,

    /// URL prefixes alert webhooks may POST to, comma-separated
    /// (`https://hooks.slack.com/,http://alerts.internal:8080/`). A rule whose webhook
    /// starts with none of them is refused; none are allowed by default.
    #[arg(long, env = "RUNBASE_ALERT_WEBHOOK_ALLOW", value_delimiter = ',')]
    pub alert_webhook_allow: Vec<String>,

    /// Seconds to let open connections (of every front end) finish after SIGINT/SIGTERM
    /// before closing them.
    #[arg(long, env = "RUNBASE_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Once every front end listens, write their addresses to this file, one per line
    /// (`postgres=127.0.0.1:5433`, `http=127.0.0.1:5480`), whole (by rename): how a script
    /// that starts runbase on port 0 learns its ports and knows it is ready.
    #[arg(long, env = "RUNBASE_READY_FILE")]
    pub ready_file: Option<PathBuf>,

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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["runbase", "serve"].iter().chain(args)).expect("parses");
        match cli.command {
            Command::Serve(args) => args,
            _ => unreachable!("serve was asked for"),
        }
    }

    #[test]
    fn listen_is_an_alias_of_pg_listen() {
        let old = serve(&["--listen", "127.0.0.1:6000"]);
        let new = serve(&["--pg-listen", "127.0.0.1:6000"]);
        assert_eq!(old.pg.listen, new.pg.listen);
        assert_eq!(old.pg.listen.port(), 6000);
    }

    #[test]
    fn http_options() {
        let args = serve(&["--http-listen", "127.0.0.1:6001", "--torch-threads", "3"]);
        assert_eq!(args.http.http_listen.port(), 6001);
        assert!(!args.http.no_http);
        assert_eq!(args.common.udfs.options().torch_threads, Some(3));
        assert!(serve(&["--no-http"]).http.no_http);
    }
}
