//! Small helpers for tests that talk to the server through tokio-postgres.

use std::path::PathBuf;

use bytes::Bytes;
use futures::SinkExt;
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
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

/// An error with the server's SQLSTATE and message (tokio-postgres shows "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// A CSV shipped in tests/data.
pub fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(format!("{name}.csv"))
}

/// Creates `table` from a shipped CSV: every column a double except `target`, typed
/// `target_type`; loads it with COPY.
pub async fn load_csv(client: &Client, name: &str, table: &str, target: &str, target_type: &str) {
    let text = std::fs::read_to_string(data_file(name)).expect("read csv");
    let header = text.lines().next().expect("header");
    let columns: Vec<String> = header
        .split(',')
        .map(|c| {
            if c == target {
                format!("{c} {target_type}")
            } else {
                format!("{c} double precision")
            }
        })
        .collect();
    client
        .batch_execute(&format!("CREATE TABLE {table} ({})", columns.join(", ")))
        .await
        .expect("create table");
    let sink = client
        .copy_in(&format!(
            "COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)"
        ))
        .await
        .expect("copy in");
    futures::pin_mut!(sink);
    sink.send(Bytes::from(text)).await.expect("send");
    sink.finish().await.expect("finish copy");
}
