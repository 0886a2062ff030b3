//! Small helpers for tests that talk to the server through tokio-postgres.

use tokio_postgres::Client;
use tokio_postgres::types::{FromSql, ToSql};

/// The SQLSTATE of an error, or a description of why it has none.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// The first column of the one row `sql` returns; panics (naming the statement) otherwise.
pub async fn scalar<T>(client: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> T
where
    T: for<'a> FromSql<'a>,
{
    client
        .query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}
