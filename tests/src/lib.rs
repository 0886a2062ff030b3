//! Test harness: the real `runbase` binary on a loopback port, and sqllogictest drivers
//! that run the same `.slt` files in-process and over the wire.
//!
//! # Layout
//! - [`server`]: [`server::TestServer`], a `runbase serve` child process on a free port.
//! - [`slt`]: sqllogictest drivers, embedded ([`slt::Embedded`]) and wire ([`slt::Wire`]).
//! - [`client`]: tokio-postgres helpers (`sqlstate`, `scalar`).
//! - [`s3`]: [`s3::MotoServer`], a real S3-compatible server (moto) on loopback.
//! - [`wire`]: raw frontend messages over a socket (malformed ones, odd sequences).

pub mod client;
pub mod s3;
pub mod server;
pub mod slt;
pub mod wire;
