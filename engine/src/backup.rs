//! Online backups into an object store, and restores from them.
//!
//! A backup is taken while writers keep writing: a RocksDB checkpoint (hard-linked SST
//! files and a fresh MANIFEST, in a directory next to the catalog) captures the catalog
//! and every tracking record at one instant; then its files, and — when the tables live
//! on the local disk — the object store's files, are uploaded. Only what the bucket lacks
//! is sent: SST files are immutable and uniquely named within one RocksDB instance (its
//! `IDENTITY`), so they are shared by every backup of that instance; object files are
//! reused when the previous backup holds the same path with the same size and
//! modification time. The manifest listing every file is written last, with a
//! conditional PUT, so a backup that stopped half-way has no manifest and is never taken
//! for a whole one.
//!
//! Layout under the target URL:
//!
//! | key                                  | what                                      |
//! |--------------------------------------|-------------------------------------------|
//! | `rocksdb/<identity>/sst/<n>.sst`     | SST files, shared between backups         |
//! | `backups/<id>/rocksdb/<file>`        | MANIFEST, CURRENT, OPTIONS, WAL of one backup |
//! | `objects/<path>`                     | the local object store's files            |
//! | `manifests/<id>.json`                | a finished backup's [`Manifest`]          |
//!
//! A restore downloads the newest manifest's files (or a chosen one's) into an empty data
//! directory. Tables on S3 are not copied (they already live in a bucket); the restored
//! catalog names the store it needs, and the server refuses to open it with another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tracing::info;

use crate::error::{Error, Result};
use crate::kv::Kv;
use crate::storage::{ObjectStoreRoot, S3Options};

const MANIFEST_FORMAT: u32 = 1;

/// A finished backup: every file it holds, written last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Format of this document (`1`).
    pub format: u32,
    /// The backup's id: its UTC start time, sortable, plus a random suffix.
    pub id: String,
    /// The runbase version that took it.
    pub runbase_version: String,
    /// The object store the tables live in (`local`, or the S3 URL).
    pub object_store: String,
    /// The RocksDB checkpoint's files.
    pub rocksdb: Vec<Entry>,
    /// The local object store's files; `None` when the tables live on S3.
    pub objects: Option<Vec<Entry>>,
}

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// Path relative to the directory it is restored into.
    pub name: String,
    /// Key relative to the backup's root URL.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (ns since the epoch) of an object file, to reuse it unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ns: Option<u128>,
}

/// What a backup did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BackupReport {
    /// The backup's id.
    pub id: String,
    /// Files the backup holds.
    pub files: usize,
    /// Files uploaded by this backup (the rest were in the bucket already).
    pub uploaded: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RestoreReport {
    /// The backup restored.
    pub id: String,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// The object store the restored catalog's tables live in (`local`, or a URL the
    /// server must be started with).
    pub object_store: String,
}

async fn blocking_io<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
        .map_err(Error::from)
}

/// Every file under `dir`: (path relative to `dir`, size, modification time in ns).
fn walk(dir: &Path) -> std::io::Result<Vec<(String, u64, u128)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(dir)
                    .map(|p| p.to_string_lossy().replace('\\', "/"))
                    .unwrap_or_default();
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                out.push((rel, meta.len(), modified));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Uploads the file at `path` to `key` (multipart when it is large).
async fn upload(target: &ObjectStoreRoot, path: &Path, key: &str) -> Result<()> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return Err(e.into()),
    };
    let mut writer = BufWriter::new(target.store.clone(), target.object_path(key)?);
    if let Err(e) = tokio::io::copy(&mut file, &mut writer).await {
        let _ = writer.abort().await;
        return Err(e.into());
    }
    writer.shutdown().await?;
    Ok(())
}

/// Downloads `key` into the file at `path`, synced.
async fn download(from: &ObjectStoreRoot, key: &str, path: &Path) -> Result<u64> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut stream = from.store.get(&from.object_path(key)?).await?.into_stream();
    let mut file = tokio::fs::File::create(path).await?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.try_next().await? {
        bytes += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    Ok(bytes)
}

/// The size of `key` in the target, `None` if absent.
async fn existing_size(target: &ObjectStoreRoot, key: &str) -> Result<Option<u64>> {
    match target.store.head(&target.object_path(key)?).await {
        Ok(meta) => Ok(Some(meta.size)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The manifests in `root`, oldest first.
pub async fn list_manifests(root: &ObjectStoreRoot) -> Result<Vec<String>> {
    let prefix = root.object_path("manifests")?;
    let mut ids: Vec<String> = root
        .store
        .list(Some(&prefix))
        .try_filter_map(|meta| async move {
            Ok(meta
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".json"))
                .map(str::to_string))
        })
        .try_collect()
        .await?;
    ids.sort();
    Ok(ids)
}

/// Reads the manifest of backup `id`.
pub async fn read_manifest(root: &ObjectStoreRoot, id: &str) -> Result<Manifest> {
    let key = format!("manifests/{id}.json");
    let bytes = match root.store.get(&root.object_path(&key)?).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::ObjectNotFound(format!(
                "no backup {id} in {}",
                root.url
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(format!("backup manifest {key}"), e))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(Error::corrupt(
            format!("backup manifest {key}"),
            format!(
                "format {} (this build reads {MANIFEST_FORMAT})",
                manifest.format
            ),
        ));
    }
    Ok(manifest)
}

fn new_backup_id() -> String {
    let now = chrono::Utc::now().format("%Y%m%dT%H%M%S%6fZ");
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{now}-{}", &suffix[..8])
}

/// Takes backups of one database: what a backup reads (the RocksDB store, the object
/// store, the data directory) and the lock that runs one at a time.
#[derive(Debug, Clone)]
pub struct Backups {
    inner: Arc<BackupsInner>,
}

#[derive(Debug)]
struct BackupsInner {
    kv: Kv,
    root: ObjectStoreRoot,
    data_dir: PathBuf,
    s3: S3Options,
    lock: tokio::sync::Mutex<()>,
}

impl Backups {
    /// Backups of the database in `kv` and `root`; checkpoints are made in `data_dir`,
    /// backup URLs on S3 use `s3`.
    pub(crate) fn new(kv: Kv, root: ObjectStoreRoot, data_dir: PathBuf, s3: S3Options) -> Self {
        Self {
            inner: Arc::new(BackupsInner {
                kv,
                root,
                data_dir,
                s3,
                lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The store of a backup URL: `s3://bucket/prefix` (with the database's S3 settings)
    /// or a local directory.
    pub fn target(&self, url: &str) -> Result<ObjectStoreRoot> {
        ObjectStoreRoot::parse(url, &self.inner.s3, true)
    }

    /// Backs the database up into `target`, online: writers keep writing. One backup
    /// runs at a time; a second waits for the first.
    pub async fn run(&self, target: &ObjectStoreRoot) -> Result<BackupReport> {
        let _one_at_a_time = self.inner.lock.lock().await;
        let id = new_backup_id();
        let checkpoint = self.inner.data_dir.join(format!("backup-{id}"));
        let kv = self.inner.kv.clone();
        let dir = checkpoint.clone();
        tokio::task::spawn_blocking(move || kv.checkpoint(&dir))
            .await
            .map_err(|e| Error::Internal(format!("checkpoint task failed: {e}")))??;
        let result = self.upload_backup(target, &id, &checkpoint).await;
        let dir = checkpoint.clone();
        let _ = blocking_io(move || std::fs::remove_dir_all(dir)).await;
        let report = result?;
        info!(
            id = %report.id,
            target = %target.url,
            files = report.files,
            uploaded = report.uploaded,
            bytes = report.bytes_uploaded,
            "backup finished"
        );
        Ok(report)
    }

    async fn upload_backup(
        &self,
        target: &ObjectStoreRoot,
        id: &str,
        checkpoint: &Path,
    ) -> Result<BackupReport> {
        let previous = match list_manifests(target).await?.last() {
            Some(last) => Some(read_manifest(target, last).await?),
            None => None,
        };
        let mut report = BackupReport {
            id: id.to_string(),
            files: 0,
            uploaded: 0,
            bytes_uploaded: 0,
        };

        // The checkpoint: SSTs shared by every backup of this RocksDB instance.
        let dir = checkpoint.to_path_buf();
        let files = blocking_io(move || walk(&dir)).await?;
        let identity = files
            .iter()
            .any(|(name, ..)| name == "IDENTITY")
            .then(|| std::fs::read_to_string(checkpoint.join("IDENTITY")))
            .transpose()?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && !s.contains('/'))
            .unwrap_or_else(|| "unknown".to_string());
        let mut rocksdb = Vec::new();
        for (name, size, _) in files {
            let key = if name.ends_with(".sst") {
                format!("rocksdb/{identity}/sst/{name}")
            } else {
                format!("backups/{id}/rocksdb/{name}")
            };
            if existing_size(target, &key).await? != Some(size) {
                upload(target, &checkpoint.join(&name), &key).await?;
                report.uploaded += 1;
                report.bytes_uploaded += size;
            }
            rocksdb.push(Entry {
                name,
                key,
                size,
                modified_ns: None,
            });
        }

        // The local object store's files, after the checkpoint: every table version,
        // model blob and artifact the checkpoint names was written before it.
        let objects = match self.inner.root.local_dir() {
            None => None,
            Some(local) => {
                let before: HashMap<String, Entry> = previous
                    .as_ref()
                    .and_then(|m| m.objects.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| (e.name.clone(), e))
                    .collect();
                let dir = local.to_path_buf();
                let files = blocking_io(move || walk(&dir)).await?;
                let mut entries = Vec::new();
                for (name, size, modified) in files {
                    let key = format!("objects/{name}");
                    let unchanged = before.get(&name).is_some_and(|e| {
                        e.size == size && e.modified_ns == Some(modified) && e.key == key
                    });
                    if !unchanged {
                        match upload(target, &local.join(&name), &key).await {
                            Ok(()) => {}
                            // Removed since the walk (a dropped table): not needed.
                            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                                continue;
                            }
                            Err(e) => return Err(e),
                        }
                        report.uploaded += 1;
                        report.bytes_uploaded += size;
                    }
                    entries.push(Entry {
                        name,
                        key,
                        size,
                        modified_ns: Some(modified),
                    });
                }
                Some(entries)
            }
        };
        report.files = rocksdb.len() + objects.as_ref().map_or(0, Vec::len);
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            id: id.to_string(),
            runbase_version: env!("CARGO_PKG_VERSION").to_string(),
            object_store: self.inner.root.identity(),
            rocksdb,
            objects,
        };
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Internal(format!("backup manifest: {e}")))?;
        target
            .store
            .put_opts(
                &target.object_path(&format!("manifests/{id}.json"))?,
                body.into(),
                PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                },
            )
            .await?;
        Ok(report)
    }
}

/// Restores backup `id` (the newest when `None`) from `from` into `data_dir`, which must
/// be empty or absent.
pub async fn restore(
    from: &ObjectStoreRoot,
    data_dir: &Path,
    id: Option<&str>,
) -> Result<RestoreReport> {
    let dir = data_dir.to_path_buf();
    let occupied = blocking_io(move || match std::fs::read_dir(&dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    })
    .await?;
    if occupied {
        return Err(Error::InvalidState(format!(
            "refusing to restore into {}: the directory is not empty",
            data_dir.display()
        )));
    }
    let id = match id {
        Some(id) => id.to_string(),
        None => list_manifests(from)
            .await?
            .pop()
            .ok_or_else(|| Error::ObjectNotFound(format!("no finished backup in {}", from.url)))?,
    };
    let manifest = read_manifest(from, &id).await?;
    let mut report = RestoreReport {
        id: id.clone(),
        files: 0,
        bytes: 0,
        object_store: manifest.object_store.clone(),
    };
    let catalog = data_dir.join("catalog");
    let objects = data_dir.join("objects");
    let targets = manifest.rocksdb.iter().map(|e| (e, catalog.clone())).chain(
        manifest
            .objects
            .iter()
            .flatten()
            .map(|e| (e, objects.clone())),
    );
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (entry, base) in targets {
        if entry
            .name
            .split('/')
            .any(|part| part == ".." || part.is_empty())
        {
            return Err(Error::corrupt(
                format!("backup manifest {id}"),
                format!("bad file name {:?}", entry.name),
            ));
        }
        let path = base.join(&entry.name);
        let bytes = download(from, &entry.key, &path).await?;
        if bytes != entry.size {
            return Err(Error::corrupt(
                format!("backup {id}"),
                format!(
                    "{} has {bytes} bytes, the manifest says {}",
                    entry.key, entry.size
                ),
            ));
        }
        if let Some(parent) = path.parent()
            && !dirs.iter().any(|d| d == parent)
        {
            dirs.push(parent.to_path_buf());
        }
        report.files += 1;
        report.bytes += bytes;
    }
    // Every restored directory's entries on disk before the restore says it is done.
    blocking_io(move || {
        for dir in dirs {
            std::fs::File::open(&dir)?.sync_all()?;
        }
        Ok(())
    })
    .await?;
    info!(id = %report.id, files = report.files, bytes = report.bytes, "restore finished");
    Ok(report)
}

/// `backup(url) → text`: takes a backup into `url` and returns its report as JSON.
/// Superusers only (see [`crate::Database::register_superuser_function`]).
#[derive(Debug)]
pub(crate) struct BackupFunction {
    backups: Backups,
    signature: Signature,
}

impl BackupFunction {
    pub(crate) fn new(backups: Backups) -> Self {
        Self {
            backups,
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Volatile),
        }
    }
}

impl PartialEq for BackupFunction {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.backups.inner, &other.backups.inner)
    }
}

impl Eq for BackupFunction {}

impl std::hash::Hash for BackupFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "backup".hash(state);
    }
}

impl ScalarUDFImpl for BackupFunction {
    fn name(&self) -> &str {
        "backup"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let urls = ColumnarValue::values_to_arrays(&args.args)?;
        let urls = datafusion::common::cast::as_string_array(&urls[0])?;
        let mut out = StringBuilder::new();
        for i in 0..args.number_rows {
            if urls.is_null(i) {
                return Err(Error::NullValue("backup: url must not be null".into()).into());
            }
            let target = self.backups.target(urls.value(i))?;
            let backups = self.backups.clone();
            let report = crate::executor::blocking(move || {
                tokio::runtime::Handle::current()
                    .block_on(async move { backups.run(&target).await })
            })?;
            let json = serde_json::to_string(&report)
                .map_err(|e| Error::Internal(format!("backup report: {e}")))?;
            out.append_value(json);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use crate::users::Role;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_superusers_back_up_and_a_backup_restores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::Database::open_dir(dir.path().join("data"))
            .await
            .expect("open");
        let target = dir.path().join("backups");
        let sql = format!("SELECT backup('{}')", target.display());
        for role in [Role::Readwrite, Role::Readonly] {
            let session = db.session();
            session.set_role("alice", role);
            let err = session.query(&sql).await.expect_err("refused");
            assert_eq!(
                err.code(),
                crate::error::ErrorCode::PermissionDenied,
                "{role}: {err}"
            );
            assert!(err.to_string().contains("only a superuser"), "{err}");
        }
        let session = db.session();
        session
            .query("CREATE TABLE t (x bigint)")
            .await
            .expect("create");
        session
            .query("INSERT INTO t VALUES (7)")
            .await
            .expect("insert");
        session.query(&sql).await.expect("superuser backs up");
        let from = db
            .backups()
            .target(&target.to_string_lossy())
            .expect("target");
        let copy = dir.path().join("copy");
        let report = super::restore(&from, &copy, None).await.expect("restore");
        assert_eq!(report.object_store, "local");
        drop(session);
        let restored = crate::Database::open_dir(&copy).await.expect("open copy");
        let batches = restored
            .session()
            .query("SELECT x FROM t")
            .await
            .expect("select");
        assert_eq!(batches[0].num_rows(), 1);
    }
}
