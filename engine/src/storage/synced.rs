//! [`SyncedLocalStore`]: the local file system as an object store that fsyncs.
//!
//! object_store 0.13's `LocalFileSystem` never syncs: a `put` is a staged file renamed
//! (or hard-linked, for `PutMode::Create`) into place, and a power loss can leave the
//! name without its contents, or lose the name. This wrapper makes every write that
//! returns durable: the file's data, then every directory from its parent up to the
//! store's root (so newly created table directories survive too). Because deltalake
//! awaits each data file before it creates the commit file, Parquet files are on disk
//! before the commit that names them exists, and the commit file with its directory
//! before the statement is acknowledged. Model blobs and artifacts are `put` before their
//! records are written, so the same holds for them.
//!
//! The syncs run on the blocking pool, never on an async worker.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

/// One step the store took, in order: what a journal ([`SyncedLocalStore::with_journal`]) records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// The object became visible under its name (the inner store's write returned).
    Written(String),
    /// The file's data and metadata were synced.
    SyncedFile(String),
    /// A directory (its entries) was synced.
    SyncedDir(String),
}

/// The events recorded so far, shared with whoever asked for them.
pub type SyncJournal = Arc<Mutex<Vec<SyncEvent>>>;

/// A `LocalFileSystem` rooted at `/` whose writes are synced before they return.
#[derive(Debug)]
pub struct SyncedLocalStore {
    inner: Arc<LocalFileSystem>,
    /// Directories above this one are not synced (they existed before the store).
    root: PathBuf,
    journal: Option<SyncJournal>,
}

impl SyncedLocalStore {
    /// The store for files under `root` (an absolute directory).
    pub fn new(root: PathBuf) -> Self {
        Self {
            inner: Arc::new(LocalFileSystem::new()),
            root,
            journal: None,
        }
    }

    /// Records every write and sync into `journal` (for tests that check the order).
    pub fn with_journal(mut self, journal: SyncJournal) -> Self {
        self.journal = Some(journal);
        self
    }

    fn record(&self, event: SyncEvent) {
        record(self.journal.as_ref(), event);
    }

    /// Syncs the file at `location` and the directories from its parent up to the root.
    async fn sync(&self, location: &Path) -> object_store::Result<()> {
        sync_path(location, self.root.clone(), self.journal.clone()).await
    }
}

fn record(journal: Option<&SyncJournal>, event: SyncEvent) {
    if let Some(journal) = journal
        && let Ok(mut events) = journal.lock()
    {
        events.push(event);
    }
}

/// The file-system path of an object of a `LocalFileSystem` rooted at `/`.
fn fs_path(location: &Path) -> PathBuf {
    PathBuf::from(format!("/{location}"))
}

async fn sync_path(
    location: &Path,
    root: PathBuf,
    journal: Option<SyncJournal>,
) -> object_store::Result<()> {
    let file = fs_path(location);
    let display = location.to_string();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let synced = sync_file_and_dirs(&file, &root, journal.as_ref(), display);
        if synced.is_err() {
            // A failed fsync leaves the file's state on disk unknown, and it is never
            // retried and trusted: the write fails, and the file goes, so that nothing
            // reads what the caller was told did not happen.
            let _ = std::fs::remove_file(&file);
        }
        synced
    })
    .await?
    .map_err(|source| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(source),
    })
}

/// Syncs `file`, then the directories from its parent up to `root`.
fn sync_file_and_dirs(
    file: &FsPath,
    root: &FsPath,
    journal: Option<&SyncJournal>,
    display: String,
) -> std::io::Result<()> {
    crate::failpoints::check_blocking("fsync")?;
    std::fs::File::open(file)?.sync_all()?;
    record(journal, SyncEvent::SyncedFile(display));
    let mut dir = file.parent();
    while let Some(d) = dir {
        sync_dir(d)?;
        record(journal, SyncEvent::SyncedDir(dir_name(d)));
        if d == root || !d.starts_with(root) {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

fn dir_name(dir: &FsPath) -> String {
    dir.to_string_lossy().trim_start_matches('/').to_string()
}

fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl fmt::Display for SyncedLocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncedLocalStore({})", self.root.display())
    }
}

#[async_trait]
impl ObjectStore for SyncedLocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let result = self.inner.put_opts(location, payload, opts).await?;
        self.record(SyncEvent::Written(location.to_string()));
        self.sync(location).await?;
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SyncedUpload {
            inner,
            location: location.clone(),
            root: self.root.clone(),
            journal: self.journal.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        self.record(SyncEvent::Written(to.to_string()));
        self.sync(to).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        self.record(SyncEvent::Written(to.to_string()));
        self.sync(to).await
    }
}

/// A multipart upload whose `complete` returns once the file is synced.
#[derive(Debug)]
struct SyncedUpload {
    inner: Box<dyn MultipartUpload>,
    location: Path,
    root: PathBuf,
    journal: Option<SyncJournal>,
}

#[async_trait]
impl MultipartUpload for SyncedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let result = self.inner.complete().await?;
        record(
            self.journal.as_ref(),
            SyncEvent::Written(self.location.to_string()),
        );
        sync_path(&self.location, self.root.clone(), self.journal.clone()).await?;
        Ok(result)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::protocol::SaveMode;

    use super::*;
    use crate::storage::ObjectStoreRoot;

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("v", DataType::Int64, true)]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(Int64Array::from(values.to_vec()))],
        )
        .expect("batch")
    }

    fn position(events: &[SyncEvent], wanted: &SyncEvent) -> usize {
        events
            .iter()
            .position(|e| e == wanted)
            .unwrap_or_else(|| panic!("{wanted:?} not in {events:#?}"))
    }

    /// Checks the order a commit must keep: every data file of `commit` synced before
    /// the commit file is written, and the commit file and its directory synced (before
    /// the write returned, which is when the journal is read).
    fn check_commit(events: &[SyncEvent], commit: &str) {
        let written = position(events, &SyncEvent::Written(commit.to_string()));
        let data: Vec<&String> = events[..written]
            .iter()
            .filter_map(|e| match e {
                SyncEvent::Written(p) if p.ends_with(".parquet") => Some(p),
                _ => None,
            })
            .collect();
        for file in &data {
            let synced = position(events, &SyncEvent::SyncedFile((*file).clone()));
            assert!(synced < written, "{file} synced after {commit} was written");
        }
        let synced = position(events, &SyncEvent::SyncedFile(commit.to_string()));
        assert!(synced > written);
        let log_dir = commit
            .rsplit_once('/')
            .map(|(d, _)| d)
            .expect("a directory");
        let dir = position(events, &SyncEvent::SyncedDir(log_dir.to_string()));
        assert!(
            dir > synced,
            "the commit's directory is synced after the file"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_files_are_synced_before_the_commit_and_the_commit_before_the_ack() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = SyncJournal::default();
        let root =
            ObjectStoreRoot::local_with(dir.path(), true, Some(journal.clone())).expect("store");
        let table_dir = format!(
            "{}/tables/t",
            dir_name(&dir.path().canonicalize().expect("canonical"))
        );

        // Version 0 holds data: the table directory and `_delta_log` are new, so they and
        // the directories up to the store's root are synced too.
        let table = root
            .create_with_data("tables/t", vec![batch(&[1, 2])])
            .await
            .expect("create");
        let first = format!("{table_dir}/_delta_log/00000000000000000000.json");
        let events = journal.lock().expect("journal").clone();
        check_commit(&events, &first);
        assert!(events.contains(&SyncEvent::SyncedDir(table_dir.clone())));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, SyncEvent::Written(p) if p.ends_with(".parquet"))),
            "{events:#?}"
        );

        // An append: the same order for version 1.
        journal.lock().expect("journal").clear();
        table
            .write(vec![batch(&[3])])
            .with_save_mode(SaveMode::Append)
            .await
            .expect("append");
        let events = journal.lock().expect("journal").clone();
        check_commit(
            &events,
            &format!("{table_dir}/_delta_log/00000000000000000001.json"),
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blobs_and_artifacts_are_synced_before_their_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = SyncJournal::default();
        let mut options = crate::DatabaseOptions::new(dir.path());
        options.object_store = Some(
            ObjectStoreRoot::local_with(&dir.path().join("objects"), true, Some(journal.clone()))
                .expect("store"),
        );
        let db = crate::Database::open(options).await.expect("open");
        let session = db.session();
        let batches = session
            .query("SELECT start_run('e')")
            .await
            .expect("start_run");
        let run = datafusion::arrow::array::cast::as_string_array(batches[0].column(0))
            .value(0)
            .to_string();
        journal.lock().expect("journal").clear();
        session
            .query(&format!(
                "SELECT log_artifact('{run}', 'a/b.bin', 'x'::bytea)"
            ))
            .await
            .expect("log_artifact");
        let events = journal.lock().expect("journal").clone();
        let written = events
            .iter()
            .position(|e| matches!(e, SyncEvent::Written(p) if p.ends_with("a/b.bin")))
            .unwrap_or_else(|| panic!("artifact written: {events:#?}"));
        assert!(
            events[written..]
                .iter()
                .any(|e| matches!(e, SyncEvent::SyncedFile(p) if p.ends_with("a/b.bin"))),
            "artifact synced before log_artifact returned: {events:#?}"
        );
    }
}
