//! Table storage: Delta Lake tables on an object store.

pub mod provider;
pub mod schema;
mod table;

pub use table::*;
