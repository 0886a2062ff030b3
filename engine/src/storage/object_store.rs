//! [`ObjectStoreRoot`]: the object store runbase keeps tables, models and artifacts in
//! (a local directory by default), and the Delta operations on tables under it.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use deltalake::kernel::StructType;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::TryStreamExt;
use url::Url;

use super::*;
use crate::error::{Error, Result};

/// An object store and the URL of its root, as deltalake wants them: `store`'s `/` is the
/// root of `url`'s scheme and authority, and tables live under `url`'s path.
#[derive(Clone)]
pub struct ObjectStoreRoot {
    /// The store itself (a `LocalFileSystem` by default).
    pub store: Arc<dyn ObjectStore>,
    /// URL of the directory under which runbase keeps its tables, ending in `/`.
    pub url: Url,
}

impl fmt::Debug for ObjectStoreRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreRoot")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl ObjectStoreRoot {
    /// A local directory as the object store root.
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let url = Url::from_directory_path(&dir).map_err(|()| {
            Error::InvalidArgument(format!(
                "object store path {} is not absolute",
                dir.display()
            ))
        })?;
        Ok(Self {
            store: Arc::new(datafusion::object_store::local::LocalFileSystem::new()),
            url,
        })
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
