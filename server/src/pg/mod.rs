//! The PostgreSQL front end: the wire protocol (through pgwire) over engine sessions.
//!
//! # Layout
//! - [`listener`]: the pg listener, per-connection tasks, the connection limit, draining
//!   on shutdown; TLS loading and the start-up policy checks.
//! - [`socket`]: the per-connection message loop (pgwire's, plus notifications pushed
//!   to idle clients).
//! - [`frames`]: the guard that lets only whole, well-formed frontend messages reach
//!   pgwire's decoder.
//! - [`startup`]: connection start-up: TLS policy, trust or SCRAM-SHA-256, the session's
//!   role.
//! - [`connection`]: one connection's state (its engine session, the COPY in progress) and
//!   the handler set pgwire asks for.
//! - [`simple`]: the simple-query protocol.
//! - [`extended`]: the extended-query protocol (parse, bind, describe, execute).
//! - [`response`]: engine output → pgwire responses, column descriptions, command tags.
//! - [`cancel`]: cancel requests and the `statement_timeout` deadline.
//! - [`notices`]: NOTICE forwarding and the `ROLLBACK` WARNING.
//! - [`copy`]: `COPY … TO STDOUT` encoding and `COPY … FROM STDIN` data.
//! - [`error`]: the one mapping from engine errors to SQLSTATE codes.
//! - [`text`]: fix-ups of values' text spelling (`Infinity`).

pub mod cancel;
pub mod connection;
pub mod copy;
pub mod error;
pub mod extended;
pub mod frames;
pub mod listener;
pub mod notices;
pub mod response;
pub mod simple;
pub mod socket;
pub mod startup;
pub mod text;
