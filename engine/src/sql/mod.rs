//! SQL sessions.

pub mod session;
