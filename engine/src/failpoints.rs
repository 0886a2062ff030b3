//! Fault injection: named points where a test makes runbase fail, stall or die, to check
//! that what was acknowledged survives and what was not is invisible.
//!
//! The points are compiled in with the `failpoints` feature (the workspace's tests turn it
//! on; `cargo build -p runbase-server --release` leaves it off, and then every check here
//! is a constant `None`). They are configured with the `fail` crate's action syntax,
//! from the environment at start-up (`RUNBASE_FAILPOINTS="kv.write=return(error);…"`) or
//! at run time with the SQL function `runbase_failpoint(name, actions)`:
//!
//! - `return(error)` (or `return`): the operation fails with an I/O error.
//! - `return(delay=MS)`: the operation waits MS milliseconds first (a slow store).
//! - `return(kill)`: the process aborts on the spot, as a `kill -9` would stop it.
//! - `off`, and the crate's counts and probabilities: `3*off->return(kill)`,
//!   `10%return(error)`.
//!
//! Points ([`POINTS`]) sit between the steps that must be atomic together: around every
//! object-store request (and separately around the Delta commit file, after the table's
//! Parquet files), around every RocksDB batch, and inside the local store's fsync.

use std::time::Duration;

/// Every point, with what it stands between.
pub const POINTS: &[(&str, &str)] = &[
    (
        "object_store.put",
        "before an object is written (Parquet file, model blob, artifact)",
    ),
    (
        "object_store.put.after",
        "after an object is written, before the caller hears of it",
    ),
    (
        "object_store.put_multipart",
        "before a multipart upload starts",
    ),
    ("object_store.get", "before an object is read"),
    ("object_store.head", "before an object's metadata is read"),
    ("object_store.list", "before a listing"),
    ("object_store.delete", "before an object is deleted"),
    ("object_store.copy", "before an object is copied or renamed"),
    (
        "delta.commit",
        "after a write's Parquet files, before its Delta commit file",
    ),
    (
        "delta.commit.after",
        "after the Delta commit file, before the catalog and the ack",
    ),
    ("kv.write", "before a RocksDB batch is written"),
    (
        "kv.write.after",
        "after a RocksDB batch is written, before the ack",
    ),
    ("fsync", "the local store's fsync of a written file"),
];

/// What a configured point does when it is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail the operation.
    Error,
    /// Wait, then go on.
    Delay(Duration),
    /// Abort the process.
    Kill,
}

/// Whether the points are compiled in.
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Parses a `return(…)` argument.
fn parse(arg: Option<String>) -> Fault {
    let arg = arg.unwrap_or_default();
    let arg = arg.trim();
    if arg == "kill" {
        Fault::Kill
    } else if let Some(ms) = arg.strip_prefix("delay=") {
        Fault::Delay(Duration::from_millis(ms.trim().parse().unwrap_or(1_000)))
    } else {
        Fault::Error
    }
}

/// What `point` does now, if it is configured.
#[cfg(feature = "failpoints")]
pub fn hit(point: &str) -> Option<Fault> {
    fail::eval(point, parse)
}

/// What `point` does now: nothing, as the points are compiled out.
#[cfg(not(feature = "failpoints"))]
pub fn hit(point: &str) -> Option<Fault> {
    let _ = (point, parse as fn(Option<String>) -> Fault);
    None
}

/// Configures `point` with `actions` (the `fail` crate's syntax; `off` turns it off).
#[cfg(feature = "failpoints")]
pub fn configure(point: &str, actions: &str) -> Result<(), String> {
    if !POINTS.iter().any(|(name, _)| *name == point) {
        return Err(format!("unknown failpoint {point}"));
    }
    fail::cfg(point, actions)
}

/// Configures `point`: refused, as the points are compiled out.
#[cfg(not(feature = "failpoints"))]
pub fn configure(point: &str, actions: &str) -> Result<(), String> {
    let _ = actions;
    Err(format!(
        "failpoint {point}: this build has no failpoints (build with the `failpoints` feature)"
    ))
}

/// Configures the points named in `RUNBASE_FAILPOINTS` (`name=actions;name=actions`).
pub fn configure_from_env() -> Result<(), String> {
    let Ok(spec) = std::env::var("RUNBASE_FAILPOINTS") else {
        return Ok(());
    };
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (point, actions) = entry
            .split_once('=')
            .ok_or_else(|| format!("RUNBASE_FAILPOINTS entry {entry:?} is not name=actions"))?;
        configure(point.trim(), actions.trim())?;
    }
    Ok(())
}

/// The error an injected fault gives.
pub fn injected(point: &str) -> std::io::Error {
    std::io::Error::other(format!("injected fault at {point}"))
}

/// Passes `point` from async code: fails, waits (without blocking the thread) or aborts
/// as configured.
pub async fn check(point: &str) -> std::io::Result<()> {
    match hit(point) {
        None => Ok(()),
        Some(Fault::Error) => Err(injected(point)),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        Some(Fault::Kill) => kill(point),
    }
}

/// Passes `point` from blocking code (a RocksDB write, an fsync).
pub fn check_blocking(point: &str) -> std::io::Result<()> {
    match hit(point) {
        None => Ok(()),
        Some(Fault::Error) => Err(injected(point)),
        Some(Fault::Delay(d)) => {
            std::thread::sleep(d);
            Ok(())
        }
        Some(Fault::Kill) => kill(point),
    }
}

/// Stops the process at once: no destructor, flush or shutdown code runs.
fn kill(point: &str) -> ! {
    eprintln!("runbase: failpoint {point}: aborting");
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_the_fault() {
        assert_eq!(parse(None), Fault::Error);
        assert_eq!(parse(Some("error".into())), Fault::Error);
        assert_eq!(parse(Some("kill".into())), Fault::Kill);
        assert_eq!(
            parse(Some("delay=250".into())),
            Fault::Delay(Duration::from_millis(250))
        );
    }

    #[test]
    fn unconfigured_points_pass() {
        assert!(check_blocking("kv.write").is_ok());
    }
}
