//! The engine embedded: tables are created, written and read back across reopen.

use datafusion::arrow::util::pretty::pretty_format_batches;
use runbase_engine::{Database, QueryOutput};

async fn rows(session: &runbase_engine::Session, sql: &str) -> String {
    let batches = session
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&batches).expect("format").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_and_versions_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Database::open_dir(dir.path()).await.expect("open");
        let s = db.session();
        s.sql("CREATE TABLE t (id bigint NOT NULL, name text, v double precision[])")
            .await
            .expect("create");
        let out = s
            .sql("INSERT INTO t VALUES (1, 'a', [1.0, 2.0]), (2, NULL, NULL)")
            .await
            .expect("insert");
        match &out[0] {
            QueryOutput::Command(tag) => assert_eq!(tag.to_string(), "INSERT 0 2"),
            other => panic!("expected a command tag, got {other:?}"),
        }
        s.sql("INSERT INTO t (id) VALUES (3)")
            .await
            .expect("insert 2");
        let got = rows(&s, "SELECT id, name FROM t ORDER BY id").await;
        assert!(got.contains("| 3  |"), "{got}");
    }
    let db = Database::open_dir(dir.path()).await.expect("reopen");
    let s = db.session();
    let got = rows(&s, "SELECT count(*) AS n FROM t").await;
    assert!(got.contains("| 3 |"), "{got}");
    let got = rows(
        &s,
        "SELECT version, operation, rows_added FROM runbase.table_versions ORDER BY version",
    )
    .await;
    assert!(got.contains("CREATE TABLE"), "{got}");
    assert!(
        got.contains("| 2       | WRITE        | 1          |"),
        "{got}"
    );
    let got = rows(&s, "SELECT count(*) AS n FROM table_at('t', 1)").await;
    assert!(got.contains("| 2 |"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctas_and_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_dir(dir.path()).await.expect("open");
    let s = db.session();
    s.sql("CREATE TABLE src AS SELECT 1 AS a, 'x' AS b")
        .await
        .expect("ctas");
    let got = rows(&s, "SELECT a, b FROM src").await;
    assert!(got.contains("| 1 | x |"), "{got}");
    s.sql("DROP TABLE src").await.expect("drop");
    assert!(s.sql("SELECT * FROM src").await.is_err());
    assert!(db.table_names().is_empty());
}
