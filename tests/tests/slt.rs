//! Runs every `tests/slt/*.slt` file three times: in-process on the engine, in-process with
//! the tables, models and artifacts on S3 (a moto server on loopback), and over the wire
//! against a real server. Each file gets a database of its own.

use std::path::PathBuf;

use runbase_engine::Database;
use runbase_tests::server::TestServer;
use runbase_tests::slt::{Embedded, Wire};

fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/slt exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_embedded() {
    for file in slt_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open_dir(dir.path()).await.expect("open");
        runbase_udfs::register(&db, runbase_udfs::UdfsOptions::default()).expect("register udfs");
        let mut runner = sqllogictest::Runner::new(move || {
            let db = db.clone();
            async move { Ok(Embedded::new(db)) }
        });
        runner.with_column_validator(sqllogictest::default_column_validator);
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{} (embedded): {e}", file.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_embedded_on_s3() {
    use runbase_engine::storage::{ObjectStoreRoot, S3Options};
    let moto = runbase_tests::s3::MotoServer::start();
    moto.create_bucket("slt");
    let options = S3Options {
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        allow_http: true,
        virtual_hosted_style: false,
        credentials: Some(("testing".into(), "testing".into())),
    };
    for file in slt_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("file");
        let mut db_options = runbase_engine::DatabaseOptions::new(dir.path());
        db_options.object_store =
            Some(ObjectStoreRoot::s3(&format!("s3://slt/{stem}"), &options).expect("store"));
        let db = Database::open(db_options).await.expect("open");
        runbase_udfs::register(&db, runbase_udfs::UdfsOptions::default()).expect("register udfs");
        let mut runner = sqllogictest::Runner::new(move || {
            let db = db.clone();
            async move { Ok(Embedded::new(db)) }
        });
        runner.with_column_validator(sqllogictest::default_column_validator);
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{} (embedded, S3): {e}", file.display());
        }
    }
    let keys = moto.list("slt", "versions/tables/");
    assert!(
        keys.iter().any(|k| k.ends_with(".parquet")),
        "the tables of versions.slt are in the bucket: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_wire() {
    for file in slt_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = TestServer::start(dir.path());
        let conn_str = server.conn_str();
        let mut runner = sqllogictest::Runner::new(move || {
            let conn_str = conn_str.clone();
            async move {
                let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(conn);
                Ok(Wire::new(client))
            }
        });
        runner.with_column_validator(sqllogictest::default_column_validator);
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{} (wire): {e}", file.display());
        }
        drop(server);
    }
}
