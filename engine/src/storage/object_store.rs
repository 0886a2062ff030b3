//! [`ObjectStoreRoot`]: the object store runbase keeps tables, models and artifacts in
//! (a local directory by default), and the Delta operations on tables under it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use deltalake::kernel::StructType;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::TryStreamExt;
use url::Url;

use super::s3::{self, S3Options};
use super::synced::{SyncJournal, SyncedLocalStore};
use super::*;
use crate::error::{Error, Result};

/// An object store and the URL of its root, as deltalake wants them: `store`'s `/` is the
/// root of `url`'s scheme and authority, and tables live under `url`'s path.
#[derive(Clone)]
pub struct ObjectStoreRoot {
    /// The store itself (a [`SyncedLocalStore`] by default).
    pub store: Arc<dyn ObjectStore>,
    /// URL of the directory under which runbase keeps its tables, ending in `/`.
    pub url: Url,
    /// The local directory, for a store on the local file system.
    local_dir: Option<PathBuf>,
}

impl fmt::Debug for ObjectStoreRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreRoot")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl ObjectStoreRoot {
    /// A local directory as the object store root, every write synced to disk before it
    /// returns.
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        Self::local_with(dir, true, None)
    }

    /// A local directory as the object store root. With `synced`, every write is synced
    /// to disk (file and directories) before it returns, so an acknowledged write survives
    /// a power loss; `journal` records the writes and syncs in order (for tests).
    pub fn local_with(
        dir: &std::path::Path,
        synced: bool,
        journal: Option<SyncJournal>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let url = Url::from_directory_path(&dir).map_err(|()| {
            Error::InvalidArgument(format!(
                "object store path {} is not absolute",
                dir.display()
            ))
        })?;
        let store: Arc<dyn ObjectStore> = if synced {
            let mut store = SyncedLocalStore::new(dir.clone());
            if let Some(journal) = journal {
                store = store.with_journal(journal);
            }
            Arc::new(store)
        } else {
            Arc::new(datafusion::object_store::local::LocalFileSystem::new())
        };
        Ok(Self {
            store,
            url,
            local_dir: Some(dir),
        })
    }

    /// An S3 bucket (or a prefix in one) as the object store root: `url` is
    /// `s3://bucket[/prefix]`.
    pub fn s3(url: &str, options: &S3Options) -> Result<Self> {
        let mut url = Url::parse(url)
            .map_err(|e| Error::InvalidArgument(format!("bad object store URL {url}: {e}")))?;
        if !matches!(url.scheme(), "s3" | "s3a") {
            return Err(Error::InvalidArgument(format!(
                "object store URL {url} is not s3://bucket/prefix"
            )));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let store = s3::store(&url, options)?;
        Ok(Self {
            store,
            url,
            local_dir: None,
        })
    }

    /// The store `location` names: `s3://bucket/prefix` (S3, with `s3_options`), or a
    /// local directory (a path or a `file://` URL; synced writes with `synced`).
    pub fn parse(location: &str, s3_options: &S3Options, synced: bool) -> Result<Self> {
        if location.starts_with("s3://") || location.starts_with("s3a://") {
            return Self::s3(location, s3_options);
        }
        let path = match location.strip_prefix("file://") {
            Some(_) => Url::parse(location)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("bad object store URL {location}"))
                })?,
            None if location.contains("://") => {
                return Err(Error::InvalidArgument(format!(
                    "object store {location}: only s3:// URLs and local directories are supported"
                )));
            }
            None => PathBuf::from(location),
        };
        Self::local_with(&path, synced, None)
    }

    /// The same root with every request counted into `counts` ([`super::MeteredStore`]).
    pub fn metered(self, counts: super::RequestCounts) -> Self {
        Self {
            store: Arc::new(super::MeteredStore::new(self.store, counts)),
            ..self
        }
    }

    /// The same root with every request passing the [`crate::failpoints`] first
    /// ([`super::FaultyStore`]).
    pub fn faulty(self) -> Self {
        Self {
            store: Arc::new(super::FaultyStore::new(self.store)),
            ..self
        }
    }

    /// The local directory of a store on the local file system.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local_dir.as_deref()
    }

    /// What the catalog records to recognize the store: `local` for a local directory
    /// (which may move with its data directory), else the root URL.
    pub fn identity(&self) -> String {
        match self.local_dir {
            Some(_) => "local".to_string(),
            None => self.url.to_string(),
        }
    }

    /// Checks that the store answers (one listing of the root), with an error that says
    /// which store and why when it does not.
    pub async fn check_reachable(&self) -> Result<()> {
        let prefix = self.object_path("")?;
        match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::Unavailable(format!(
                "object store {} is not reachable: {e}",
                self.url
            ))),
        }
    }

    /// URL of the Delta table at `location` (relative to the root).
    pub fn table_url(&self, location: &str) -> Result<Url> {
        self.url
            .join(&format!("{}/", location.trim_end_matches('/')))
            .map_err(|e| Error::InvalidArgument(format!("bad table location {location}: {e}")))
    }

    /// The object path (in `store`'s namespace) of the object at `location` (relative to
    /// the root).
    pub fn object_path(&self, location: &str) -> Result<ObjectPath> {
        let url = self
            .url
            .join(location)
            .map_err(|e| Error::InvalidArgument(format!("bad object location {location}: {e}")))?;
        if !url.as_str().starts_with(self.url.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "object location {location} is outside the store's root"
            )));
        }
        ObjectPath::from_url_path(url.path())
            .map_err(|e| Error::InvalidArgument(format!("bad object location {location}: {e}")))
    }

    /// The object path (in `store`'s namespace) of the Delta table at `location`.
    fn table_path(&self, location: &str) -> Result<ObjectPath> {
        let url = self.table_url(location)?;
        ObjectPath::from_url_path(url.path())
            .map_err(|e| Error::InvalidArgument(format!("bad table location {location}: {e}")))
    }

    fn builder(&self, url: &Url) -> Result<DeltaTableBuilder> {
        Ok(DeltaTableBuilder::from_url(url.clone())?
            .with_storage_backend(self.store.clone(), url.clone()))
    }

    /// Opens the Delta table at `location`, at its latest version or at `version`.
    pub async fn open_table(&self, location: &str, version: Option<u64>) -> Result<DeltaTable> {
        let url = self.table_url(location)?;
        let mut builder = self.builder(&url)?;
        if let Some(v) = version {
            builder = builder.with_version(v);
        }
        Ok(builder.load().await?)
    }

    /// Creates a new, empty Delta table at `location` (version 0).
    pub async fn create_empty(&self, location: &str, schema: &StructType) -> Result<DeltaTable> {
        let url = self.table_url(location)?;
        let table = self.builder(&url)?.build()?;
        Ok(table
            .create()
            .with_columns(schema.fields().cloned())
            .with_save_mode(SaveMode::ErrorIfExists)
            .await?)
    }

    /// Creates a Delta table at `location` holding `batches` in one commit (version 0).
    pub async fn create_with_data(
        &self,
        location: &str,
        batches: Vec<RecordBatch>,
    ) -> Result<DeltaTable> {
        let url = self.table_url(location)?;
        let table = self.builder(&url)?.build()?;
        Ok(table
            .write(batches)
            .with_save_mode(SaveMode::ErrorIfExists)
            .await?)
    }

    /// Creates a Delta table at `location` holding the rows `plan` yields, streamed into
    /// its files and committed once (version 0).
    pub async fn create_with_plan(
        &self,
        location: &str,
        plan: datafusion::logical_expr::LogicalPlan,
    ) -> Result<DeltaTable> {
        let url = self.table_url(location)?;
        let table = self.builder(&url)?.build()?;
        Ok(table
            .write(vec![])
            .with_input_plan(plan)
            .with_save_mode(SaveMode::ErrorIfExists)
            .with_target_file_size(std::num::NonZeroU64::new(super::stream::TARGET_FILE_BYTES))
            .await?)
    }

    /// Deletes every object of the table at `location`.
    pub async fn delete_table_files(&self, location: &str) -> Result<()> {
        let prefix = self.table_path(location)?;
        let paths: Vec<_> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for path in paths {
            self.store.delete(&path).await?;
        }
        Ok(())
    }

    /// Reads the commit log of the table at `location`: one [`VersionInfo`] per version.
    pub async fn history(&self, location: &str) -> Result<Vec<VersionInfo>> {
        let log = self.table_path(location)?.join("_delta_log");
        let metas: Vec<_> = self.store.list(Some(&log)).try_collect().await?;
        let mut out = Vec::new();
        for meta in metas {
            let Some(file) = meta.location.filename() else {
                continue;
            };
            let Some(version) = commit_file_version(file) else {
                continue;
            };
            let bytes = self.store.get(&meta.location).await?.bytes().await?;
            out.push(VersionInfo::from_commit(version, &bytes).map_err(|detail| {
                Error::corrupt(format!("commit {} of {location}", meta.location), detail)
            })?);
        }
        out.sort_by_key(|v| v.version);
        Ok(out)
    }
}
