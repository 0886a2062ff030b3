//! `runbase backup`, `runbase restore`, and the server's scheduled backups
//! (`serve --backup-to`). The work is the engine's ([`runbase_engine::backup`]).

use std::time::Duration;

use runbase_engine::Database;
use runbase_engine::backup::{BackupReport, restore};
use tracing::{error, info};

use crate::config::{BackupArgs, RestoreArgs};
use crate::supervisor::Shutdown;

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("ERROR: {e}"),
    }
}

/// `runbase backup --to <url>`: opens the (stopped) data directory and backs it up.
pub async fn run_backup(args: BackupArgs) -> i32 {
    let db = match crate::open_database(&args.common).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("ERROR: {e}");
            if matches!(
                e.downcast_ref::<runbase_engine::Error>(),
                Some(runbase_engine::Error::InUse(_))
            ) {
                eprintln!(
                    "HINT: a running server backs itself up: SELECT backup('{}'), or start it with --backup-to",
                    args.to
                );
            }
            return 1;
        }
    };
    match backup_once(&db, &args.to).await {
        Ok(report) => {
            print_json(&report);
            0
        }
        Err(e) => {
            eprintln!("ERROR: {e}");
            1
        }
    }
}

async fn backup_once(db: &Database, url: &str) -> runbase_engine::Result<BackupReport> {
    let target = db.backups().target(url)?;
    db.backups().run(&target).await
}

/// `runbase restore --from <url> --data-dir <dir>`.
pub async fn run_restore(args: RestoreArgs) -> i32 {
    let from = match runbase_engine::storage::ObjectStoreRoot::parse(
        &args.from,
        &args.common.storage.s3_options(),
        true,
    ) {
        Ok(root) => root,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return 1;
        }
    };
    match restore(&from, &args.common.data_dir, args.backup_id.as_deref()).await {
        Ok(report) => {
            print_json(&report);
            if report.object_store != "local" {
                eprintln!(
                    "NOTE: the tables of this backup live in {}; start the server with --object-store {}",
                    report.object_store,
                    report.object_store.trim_end_matches('/')
                );
            }
            0
        }
        Err(e) => {
            eprintln!("ERROR: {e}");
            1
        }
    }
}

/// Backs `db` up to `url` every `interval` until shutdown. A failed backup is logged and
/// retried at the next tick; it never stops the server.
pub async fn scheduled(db: Database, url: String, interval: Duration, shutdown: Shutdown) {
    let target = match db.backups().target(&url) {
        Ok(t) => t,
        Err(e) => {
            error!(target = %url, error = %e, "scheduled backups are off: bad --backup-to");
            return;
        }
    };
    info!(target = %target.url, interval_secs = interval.as_secs(), "scheduled backups on");
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.signaled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(e) = db.backups().run(&target).await {
            error!(target = %target.url, error = %e, "scheduled backup failed");
        }
    }
}
