//! The PostgreSQL front end: the wire protocol (through pgwire) over engine sessions.

pub mod connection;
pub mod copy;
pub mod error;
pub mod listener;
pub mod startup;
pub mod text;
