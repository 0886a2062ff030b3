//! Loads bigger than the server's memory: `COPY FROM STDIN` (through psql's `\copy`),
//! `CREATE TABLE AS` and `INSERT … SELECT` stream rows into Parquet files and commit once,
//! so the server's memory stays bounded; a copy that fails or is abandoned commits nothing.
//!
//! The server runs in a memory cgroup capped at 384 MB where the machine lets the test
//! make one (cgroup v1 or v2, as root); everywhere, the test reads the server's peak
//! resident memory (`VmHWM`) and checks that the load raised it by less than that.
//! `RUNBASE_BIGLOAD_MB` sets the size of the CSV (default 1024).

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use futures::SinkExt;
use runbase_tests::server::TestServer;

/// The memory the server is held to while it loads the CSV.
const LIMIT_BYTES: u64 = 384 * 1024 * 1024;
/// The growth `CREATE TABLE AS` / `INSERT … SELECT` are held to: reading the table back
/// through DataFusion's Parquet scan adds its own buffers (the aim for any load).
const READ_BACK_LIMIT_BYTES: u64 = 512 * 1024 * 1024;

fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// A memory cgroup capping `pid` at [`LIMIT_BYTES`], removed on drop; `None` where the
/// machine does not let the test make one.
struct MemoryCap {
    dir: PathBuf,
    limit_file: &'static str,
}

impl MemoryCap {
    fn apply(pid: u32) -> Option<Self> {
        let name = format!("runbase-bigload-{}", std::process::id());
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        let (dir, limit_file) = if v1.is_dir() {
            (v1.join(&name), "memory.limit_in_bytes")
        } else {
            (PathBuf::from("/sys/fs/cgroup").join(&name), "memory.max")
        };
        std::fs::create_dir(&dir).ok()?;
        let cap = Self { dir, limit_file };
        std::fs::write(cap.dir.join(limit_file), LIMIT_BYTES.to_string()).ok()?;
        // No swapping around the limit, where the controller has the knob.
        let _ = std::fs::write(
            cap.dir.join("memory.memsw.limit_in_bytes"),
            LIMIT_BYTES.to_string(),
        );
        let _ = std::fs::write(cap.dir.join("memory.swap.max"), "0");
        std::fs::write(cap.dir.join("cgroup.procs"), pid.to_string()).ok()?;
        Some(cap)
    }
}

impl MemoryCap {
    /// Raises the cap to `bytes` above what the server holds now: the cgroup also counts
    /// the page cache of what the load wrote, so the next phase gets its own headroom.
    fn raise(&self, bytes: u64, pid: u32) {
        let now = status_kb(pid, "VmRSS:") * 1024;
        let limit = (now + bytes).to_string();
        // cgroup v1 wants memory+swap raised before memory.
        let _ = std::fs::write(self.dir.join("memory.memsw.limit_in_bytes"), &limit);
        let _ = std::fs::write(self.dir.join(self.limit_file), &limit);
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        // The server has exited by now (or is killed with the test); an empty group goes.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The single integer `sql` answers.
async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// A `COPY big FROM STDIN (FORMAT csv)` started on `client`.
async fn copy_into_big(
    client: &tokio_postgres::Client,
) -> std::pin::Pin<Box<tokio_postgres::CopyInSink<bytes::Bytes>>> {
    Box::pin(
        client
            .copy_in("COPY big FROM STDIN WITH (FORMAT csv)")
            .await
            .expect("copy in"),
    )
}

const VERSIONS_OF_BIG: &str =
    "SELECT count(*) FROM runbase.table_versions WHERE table_name = 'big'";

/// One CSV line of the generated data set: an id, eight numbers and a label.
fn line(i: u64, out: &mut Vec<u8>) {
    let x = (i.wrapping_mul(2_654_435_761) % 1_000_000) as f64 / 1_000_000.0;
    write!(out, "{i}").expect("write");
    for k in 1..=8u64 {
        write!(out, ",{:.6}", x * k as f64).expect("write");
    }
    writeln!(out, ",label-{:08}", i % 1000).expect("write");
}

fn parquet_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += parquet_files(&p);
            } else if p.extension().is_some_and(|x| x == "parquet")
                && !p.to_string_lossy().contains("_delta_log")
            {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_bigger_than_memory_stream_and_failed_loads_commit_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let pid = server.pid();
    let cap = MemoryCap::apply(pid);
    eprintln!(
        "bigload: server memory {}",
        if cap.is_some() {
            "capped at 384 MB by a cgroup"
        } else {
            "not capped (no cgroup here); peak RSS is checked"
        }
    );
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE big (id bigint NOT NULL, a double precision, b double precision, \
             c double precision, d double precision, e double precision, f double precision, \
             g double precision, h double precision, label text)",
        )
        .await
        .expect("create");
    let rss_before = status_kb(pid, "VmRSS:") * 1024;

    // ---- psql \copy of a CSV bigger than the cap ----
    let target: u64 = std::env::var("RUNBASE_BIGLOAD_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
        * 1024
        * 1024;
    let mut psql = server
        .psql_command(&["-c", "\\copy big FROM pstdin WITH (FORMAT csv)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psql");
    let mut stdin = psql.stdin.take().expect("psql stdin");
    let writer = std::thread::spawn(move || {
        let (mut rows, mut bytes) = (0u64, 0u64);
        let mut chunk = Vec::with_capacity(1 << 20);
        while bytes < target {
            chunk.clear();
            while chunk.len() < (1 << 20) {
                line(rows, &mut chunk);
                rows += 1;
            }
            stdin.write_all(&chunk).expect("feed psql");
            bytes += chunk.len() as u64;
        }
        (rows, bytes)
    });
    let output = psql.wait_with_output().expect("psql");
    let (rows, bytes) = writer.join().expect("generator");
    assert!(
        output.status.success(),
        "psql \\copy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("COPY {rows}")
    );
    let peak = status_kb(pid, "VmHWM:") * 1024;
    eprintln!(
        "bigload: {} MB of CSV, {rows} rows; server RSS {} MB before, peak {} MB",
        bytes >> 20,
        rss_before >> 20,
        peak >> 20
    );
    assert!(
        peak.saturating_sub(rss_before) < LIMIT_BYTES,
        "the copy raised the server's peak RSS by {} MB",
        (peak - rss_before) >> 20
    );
    let count = scalar(&client, "SELECT count(*) FROM big").await;
    assert_eq!(count as u64, rows);
    let check = scalar(&client, "SELECT sum(id) FROM big").await;
    assert_eq!(check as u64, rows * (rows - 1) / 2, "every row, once");

    // ---- CREATE TABLE AS and INSERT … SELECT stream as well ----
    if let Some(cap) = &cap {
        cap.raise(READ_BACK_LIMIT_BYTES, pid);
    }
    let ctas = client
        .execute(
            "CREATE TABLE big2 AS SELECT * FROM big WHERE id % 2 = 0",
            &[],
        )
        .await
        .expect("create table as");
    assert_eq!(ctas, rows.div_ceil(2));
    let inserted = client
        .execute("INSERT INTO big2 SELECT * FROM big WHERE id % 2 = 1", &[])
        .await
        .expect("insert select");
    assert_eq!(inserted, rows / 2);
    let peak = status_kb(pid, "VmHWM:") * 1024;
    eprintln!(
        "bigload: after CREATE TABLE AS and INSERT … SELECT, peak {} MB",
        peak >> 20
    );
    // Reading the table back (DataFusion's Parquet scan) adds its own buffers: held to
    // the aim for any load, 512 MB of growth (the cgroup still caps the server).
    assert!(
        peak.saturating_sub(rss_before) < READ_BACK_LIMIT_BYTES,
        "CREATE TABLE AS / INSERT … SELECT raised the peak RSS by {} MB",
        (peak - rss_before) >> 20
    );
    let versions = scalar(&client, VERSIONS_OF_BIG).await;
    assert_eq!(
        versions, 2,
        "CREATE TABLE, then the whole copy as one version"
    );

    // ---- a copy abandoned half-way (CopyFail) commits nothing ----
    let objects = dir.path().join("objects");
    let files_before = parquet_files(&objects);
    {
        let mut sink = copy_into_big(&client).await;
        let mut chunk = Vec::new();
        let mut i = 0;
        // ~100 MB: a few files are written before the client gives up.
        for _ in 0..100 {
            chunk.clear();
            while chunk.len() < (1 << 20) {
                line(rows + i, &mut chunk);
                i += 1;
            }
            sink.send(bytes::Bytes::copy_from_slice(&chunk))
                .await
                .expect("send");
        }
        // Dropped without `finish`: tokio-postgres sends CopyFail.
    }
    // The same connection goes on, and the table is as it was.
    let after = scalar(&client, "SELECT count(*) FROM big").await;
    assert_eq!(after as u64, rows);

    // ---- a copy whose connection drops half-way commits nothing ----
    {
        let other = server.connect().await;
        let mut sink = copy_into_big(&other).await;
        let mut chunk = Vec::new();
        for k in 0..2000u64 {
            line(rows + k, &mut chunk);
        }
        sink.send(bytes::Bytes::from(chunk)).await.expect("send");
        std::mem::forget(sink);
        drop(other);
    }
    // ---- a bad row in the middle commits nothing ----
    let mut data = Vec::new();
    for k in 0..100_000u64 {
        line(rows + k, &mut data);
    }
    data.extend_from_slice(b"not-a-number,1,2,3,4,5,6,7,8,x\n");
    for k in 100_000..120_000u64 {
        line(rows + k, &mut data);
    }
    let bad = {
        let mut sink = copy_into_big(&client).await;
        sink.send(bytes::Bytes::from(data)).await.expect("send");
        sink.as_mut().finish().await
    };
    let err = bad.expect_err("a bad row fails the copy");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("22P02"),
        "{err:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = scalar(&client, "SELECT count(*) FROM big").await;
    assert_eq!(after as u64, rows, "no failed copy left rows");
    let versions_after = scalar(&client, VERSIONS_OF_BIG).await;
    assert_eq!(versions_after, versions, "no failed copy made a version");
    // Files the failed copies wrote are unreferenced; VACUUM removes them.
    client
        .batch_execute("VACUUM big RETAIN 0 HOURS")
        .await
        .expect("vacuum");
    assert!(
        parquet_files(&objects) <= files_before,
        "VACUUM removes what the failed copies left"
    );
    drop(cap);
}
