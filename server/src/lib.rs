//! The runbase server: front ends in front of the runbase engine — the PostgreSQL wire
//! protocol and an HTTP API — started and stopped together.
//!
//! # Layout
//! - [`config`]: the clap configuration as one typed tree (`runbase serve`, `runbase sql`):
//!   [`config::pg`], [`config::http`] and [`config::udfs`] options.
//! - [`supervisor`]: `runbase serve` — binds every front end, shares one shutdown signal
//!   (SIGINT/SIGTERM) and drains them together.
//! - [`pg`]: the PostgreSQL front end: listener, start-up and authentication, the simple
//!   and extended query protocols, COPY, cancel and timeouts, SQLSTATE mapping.
//! - [`http`]: the HTTP front end (axum): `GET /health`, `/ready`, `/metrics`, engine
//!   errors as JSON with an HTTP status.
//! - [`webhooks`]: alert events POSTed to the webhooks their rules name.
//! - [`fuzzing`]: entry points the fuzz targets (`fuzz/`) feed network bytes through (the
//!   PostgreSQL frontend stream, HTTP requests).
//! - [`embedded`]: `runbase sql`, statements run in-process and printed as tables.
//! - [`backup`]: `runbase backup` / `runbase restore`, and scheduled backups.
//! - [`logging`]: the `tracing` subscriber.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use clap::Parser;
//! let cli = runbase_server::config::Cli::parse_from(["runbase", "serve"]);
//! let runbase_server::config::Command::Serve(args) = cli.command else { unreachable!() };
//! let db = runbase_server::open_database(&args.common).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5433").await?;
//! let options = runbase_server::pg::listener::ServeOptions::default(); // trust, no TLS
//! runbase_server::pg::listener::serve(db, listener, options, std::future::pending(), std::time::Duration::from_secs(10)).await;
//! # Ok(())
//! # }
//! ```

pub mod backup;
pub mod config;
pub mod embedded;
pub mod fuzzing;
pub mod http;
pub mod logging;
pub mod pg;
pub mod supervisor;
pub mod webhooks;

use runbase_engine::{Database, DatabaseOptions};

/// Opens the database with every function of `runbase-udfs` registered.
pub async fn open_database(
    args: &config::CommonArgs,
) -> Result<Database, Box<dyn std::error::Error + Send + Sync>> {
    Ok(open_database_with_services(args).await?.0)
}

/// [`open_database`], with the services behind the functions (training, model serving).
pub async fn open_database_with_services(
    args: &config::CommonArgs,
) -> Result<(Database, runbase_udfs::Services), Box<dyn std::error::Error + Send + Sync>> {
    let mut options = DatabaseOptions::new(&args.data_dir);
    options.cpu_threads = args.query_threads;
    options.synchronous_commit = args.synchronous_commit;
    options.object_store = args.storage.object_store(args.synchronous_commit)?;
    options.s3 = args.storage.s3_options();
    let db = Database::open(options).await?;
    let services = runbase_udfs::register(&db, args.udfs.options())?;
    Ok((db, services))
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: config::Cli) -> i32 {
    match cli.command {
        config::Command::Serve(args) => {
            logging::init(args.common.log_format);
            match supervisor::run(args).await {
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
        config::Command::Backup(args) => {
            logging::init(args.common.log_format);
            backup::run_backup(args).await
        }
        config::Command::Restore(args) => {
            logging::init(args.common.log_format);
            backup::run_restore(args).await
        }
    }
}
