//! PostgreSQL dialect compatibility, protocol-free: what makes the statements and catalog
//! queries of PostgreSQL clients plan and run on DataFusion.
//!
//! # Layout
//! - `rewrite`: AST rewrites of PostgreSQL spellings DataFusion does not plan.
//! - [`compat`]: PostgreSQL functions drivers call while discovering a server.
//! - [`oid_array`]: `oid[]`/`regtype[]` typed as PostgreSQL types them.
//! - [`copy`]: `COPY … FROM STDIN` / `TO STDOUT` formats (text, CSV, binary).
//! - `format`: PostgreSQL's `format()` (`%s`, `%I`, `%L`).

pub mod compat;
pub mod copy;
mod format;
pub mod oid_array;
pub(crate) mod rewrite;

/// A session's time zone until it sets one (`SET TIME ZONE LOCAL`/`DEFAULT` return to it).
pub(crate) const DEFAULT_TIME_ZONE: &str = "UTC";
