//! Test harness: the real `runbase` binary on a loopback port, and sqllogictest drivers
//! that run the same `.slt` files in-process and over the wire.
//!
//! # Layout
//! - [`server`]: [`server::TestServer`], a `runbase serve` child process on a free port.
//! - [`slt`]: sqllogictest drivers, embedded ([`slt::Embedded`]) and wire ([`slt::Wire`]).
//! - [`client`]: tokio-postgres helpers (`sqlstate`, `scalar`).

pub mod client;
pub mod server;
pub mod slt;
