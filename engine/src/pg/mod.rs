//! PostgreSQL dialect compatibility, protocol-free.

pub mod compat;
pub mod copy;
pub mod oid_array;
pub(crate) mod rewrite;
