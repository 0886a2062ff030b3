//! libtorch-backed SQL functions and system tables for runbase.
//!
//! This crate sits on top of `runbase-engine` and is the only one that links libtorch
//! (through `tch`). It registers what it provides through the engine's hooks.
//!
//! # Layout
//! - [`devices`]: the `runbase.devices` system table — the CPU and every CUDA device
//!   libtorch sees, i.e. where training can run.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let db = runbase_engine::Database::open_dir("./runbase-data").await?;
//! runbase_udfs::register(&db)?;
//! let rows = db.session().query("SELECT device, kind FROM runbase.devices").await?;
//! # let _ = rows;
//! # Ok(())
//! # }
//! ```

pub mod devices;

use std::sync::Arc;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] runbase_engine::Error),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Registers every function and system table of this crate with `db`.
pub fn register(db: &runbase_engine::Database) -> Result<()> {
    db.register_system_table("devices", Arc::new(devices::Devices::new()))?;
    Ok(())
}

/// The libtorch version this crate was built against.
pub const LIBTORCH_VERSION: &str = "2.11.0";
