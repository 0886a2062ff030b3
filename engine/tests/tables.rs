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

/// `table_at(name, timestamp)`: the latest version committed at or before the time; and
/// deltalake's log checkpoints (every 100 commits) keep a long history readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_by_timestamp_and_checkpointed_logs() {
    use datafusion::arrow::array::{Array, Int64Array};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open_dir(dir.path()).await.expect("open");
    let s = db.session();
    s.sql("CREATE TABLE t (x bigint)").await.expect("create");
    for i in 0..105 {
        s.sql(&format!("INSERT INTO t VALUES ({i})"))
            .await
            .expect("insert");
    }
    s.sql("UPDATE t SET x = x + 1000 WHERE x < 10")
        .await
        .expect("update");
    // Each version's commit time names that version (or a later one committed in the same
    // millisecond, which holds the same rows up to it).
    let times = s
        .query(
            "SELECT version, CAST(committed_at AS text) AS at FROM runbase.table_versions WHERE table_name = 't' AND version IN (3, 50, 106) ORDER BY version",
        )
        .await
        .expect("versions");
    let versions = times[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("int64");
    let at = datafusion::arrow::array::cast::as_string_array(times[0].column(1));
    assert_eq!(versions.len(), 3);
    for i in 0..versions.len() {
        let version = versions.value(i);
        let by_time = rows(
            &s,
            &format!(
                "SELECT count(*) AS n, sum(x) AS s FROM table_at('t', '{}')",
                at.value(i)
            ),
        )
        .await;
        let by_version = rows(
            &s,
            &format!("SELECT count(*) AS n, sum(x) AS s FROM table_at('t', {version})"),
        )
        .await;
        assert_eq!(by_time, by_version, "version {version} at {}", at.value(i));
    }
    let now = rows(&s, "SELECT count(*) AS n FROM table_at('t', now())").await;
    assert!(now.contains("| 105 |"), "{now}");
    let err = s
        .query("SELECT * FROM table_at('t', '2001-01-01 00:00:00')")
        .await
        .expect_err("before the table existed");
    assert!(err.to_string().contains("no version at or before"), "{err}");
    let err = s
        .query("SELECT * FROM table_at('t', 'yesterday-ish')")
        .await
        .expect_err("not a time");
    assert!(
        err.to_string()
            .contains("neither a version nor a timestamp"),
        "{err}"
    );

    // deltalake wrote a checkpoint after 100 commits; the table reopens from it.
    let log = dir.path().join("objects").join("tables");
    let checkpoint = std::fs::read_dir(&log)
        .expect("tables")
        .filter_map(Result::ok)
        .any(|t| {
            std::fs::read_dir(t.path().join("_delta_log"))
                .map(|files| {
                    files.filter_map(Result::ok).any(|f| {
                        f.file_name()
                            .to_string_lossy()
                            .ends_with(".checkpoint.parquet")
                    })
                })
                .unwrap_or(false)
        });
    assert!(checkpoint, "a checkpoint after 100 commits");
    drop(s);
    drop(db);
    let db = Database::open_dir(dir.path()).await.expect("reopen");
    let got = rows(&db.session(), "SELECT count(*) AS n, sum(x) AS s FROM t").await;
    assert!(got.contains("| 105 | 15460 |"), "{got}");
}

/// `ALTER TABLE … ADD COLUMN` and `RENAME TO` are in the catalog: they survive a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_tables_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Database::open_dir(dir.path()).await.expect("open");
        let s = db.session();
        for sql in [
            "CREATE TABLE a (id bigint)",
            "INSERT INTO a VALUES (1)",
            "ALTER TABLE a ADD COLUMN note text",
            "INSERT INTO a VALUES (2, 'x')",
            "ALTER TABLE a RENAME TO b",
        ] {
            s.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    let db = Database::open_dir(dir.path()).await.expect("reopen");
    assert_eq!(db.table_names(), ["b"]);
    let got = rows(&db.session(), "SELECT id, note FROM b ORDER BY id").await;
    assert!(got.contains("| 1  |      |"), "{got}");
    assert!(got.contains("| 2  | x    |"), "{got}");
}
