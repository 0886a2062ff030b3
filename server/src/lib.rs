//! The runbase server: the PostgreSQL wire protocol in front of the runbase engine.
//!
//! # Layout
//! - [`config`]: the clap configuration (`runbase serve`, `runbase sql`).
//! - [`auth`]: connection start-up: TLS policy, trust or SCRAM-SHA-256, the session's role.
//! - [`server`]: the listener, per-connection tasks and graceful shutdown.
//! - [`handler`]: pgwire handlers; one engine session per connection.
//! - [`copy`]: `COPY … TO STDOUT` encoding (text and CSV).
//! - [`error`]: the one mapping from engine errors to SQLSTATE codes.
//! - [`embedded`]: `runbase sql`, statements run in-process and printed as tables.
//! - [`logging`]: the `tracing` subscriber.
//! - [`text`]: fix-ups of values' text spelling (`Infinity`).
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use clap::Parser;
//! let cli = runbase_server::config::Cli::parse_from(["runbase", "serve"]);
//! let runbase_server::config::Command::Serve(args) = cli.command else { unreachable!() };
//! let db = runbase_server::open_database(&args.common).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5433").await?;
//! let options = runbase_server::server::ServeOptions::default(); // trust, no TLS
//! runbase_server::server::serve(db, listener, options, std::future::pending(), std::time::Duration::from_secs(10)).await;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod embedded;
pub mod logging;
pub mod pg;

// The modules' former paths, while the split is under way.
pub use pg::{connection as handler, copy, error, listener as server, startup as auth, text};

use runbase_engine::{Database, DatabaseOptions};

/// Opens the database with every function of `runbase-udfs` registered.
pub async fn open_database(
    args: &config::CommonArgs,
) -> Result<Database, Box<dyn std::error::Error + Send + Sync>> {
    let mut options = DatabaseOptions::new(&args.data_dir);
    options.cpu_threads = args.query_threads;
    options.synchronous_commit = args.synchronous_commit;
    let db = Database::open(options).await.map_err(|e| match &e {
        runbase_engine::Error::RocksDb(r) if r.to_string().contains("lock") => format!(
            "data directory {} is in use by another runbase process ({r})",
            args.data_dir.display()
        )
        .into(),
        _ => Box::new(e) as Box<dyn std::error::Error + Send + Sync>,
    })?;
    runbase_udfs::register(&db)?;
    Ok(db)
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: config::Cli) -> i32 {
    match cli.command {
        config::Command::Serve(args) => {
            logging::init(args.common.log_format);
            match server::run(args).await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "server failed");
                    1
                }
            }
        }
        config::Command::Sql(args) => {
            logging::init(args.common.log_format);
            embedded::run(args).await
        }
    }
}
