//! Artifacts: bytes on the object store, records in RocksDB.

use datafusion::object_store::ObjectStoreExt;
use rocksdb::WriteBatch;
use uuid::Uuid;

use crate::error::{Error, Result};

use super::*;

impl Tracking {
    /// Stores `data` as the artifact `path` of a running run; returns its record.
    pub async fn log_artifact(&self, run: &Uuid, path: &str, data: Vec<u8>) -> Result<Artifact> {
        use sha2::Digest;
        validate_artifact_path(path)?;
        self.running_run(run)?;
        let sha256 = hex(&sha2::Sha256::digest(&data));
        let location = format!("artifacts/{run}/{path}");
        let object = self.inner.root.object_path(&location)?;
        let size_bytes = i64::try_from(data.len()).unwrap_or(i64::MAX);
        self.inner.root.store.put(&object, data.into()).await?;
        let uri = self
            .inner
            .root
            .url
            .join(&location)
            .map(|u| u.to_string())
            .unwrap_or(location.clone());
        let artifact = Artifact {
            size_bytes,
            sha256,
            uri,
            location,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_ARTIFACTS)?,
            keys::run_key(run, path),
            serde_json::to_vec(&artifact).map_err(|e| Error::corrupt("artifact", e))?,
        );
        self.commit(batch)?;
        Ok(artifact)
    }

    /// The record of artifact `path` of `run`.
    pub fn artifact_record(&self, run: &Uuid, path: &str) -> Result<Artifact> {
        let v = self
            .db()
            .get_cf(self.cf(CF_ARTIFACTS)?, keys::run_key(run, path))?
            .ok_or_else(|| {
                Error::ObjectNotFound(format!("run \"{run}\" has no artifact \"{path}\""))
            })?;
        serde_json::from_slice(&v).map_err(|e| Error::corrupt(format!("artifact {path}"), e))
    }

    /// The artifacts of `run`: (path, record), by path.
    pub fn artifacts(&self, run: &Uuid) -> Result<Vec<(String, Artifact)>> {
        self.run_strings(CF_ARTIFACTS, run)?
            .into_iter()
            .map(|(path, json)| {
                serde_json::from_str(&json)
                    .map(|a| (path.clone(), a))
                    .map_err(|e| Error::corrupt(format!("artifact {path}"), e))
            })
            .collect()
    }

    /// The bytes of artifact `path` of `run`.
    pub async fn artifact(&self, run: &Uuid, path: &str) -> Result<Vec<u8>> {
        let record = self.artifact_record(run, path)?;
        let object = self.inner.root.object_path(&record.location)?;
        let bytes = self.inner.root.store.get(&object).await?.bytes().await?;
        Ok(bytes.to_vec())
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Where files uploaded through MLflow's artifact proxy live, under the store's root.
pub const MLFLOW_ARTIFACTS: &str = "mlflow-artifacts";

/// One entry of an MLflow artifact listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactEntry {
    /// Its name within the listed directory.
    pub name: String,
    /// A directory (no size).
    pub is_dir: bool,
    /// Size in bytes, for files.
    pub size_bytes: Option<u64>,
}

/// Checks a path of the MLflow artifact store: an artifact path, whose segments hold no
/// characters URLs give a meaning (`#`, `?`, `%`) nor control characters.
pub fn validate_mlflow_artifact_path(path: &str) -> Result<()> {
    validate_artifact_path(path)?;
    if path
        .chars()
        .any(|c| matches!(c, '#' | '?' | '%') || c.is_control())
    {
        return Err(Error::InvalidArgument(format!(
            "invalid artifact path \"{path}\": #, ?, % and control characters are not allowed"
        )));
    }
    Ok(())
}

/// The run a proxied path `<experiment>/<run>/artifacts/<file>` belongs to, with the
/// file's path within the run.
pub fn mlflow_run_artifact(path: &str) -> Option<(Uuid, &str)> {
    let mut parts = path.splitn(4, '/');
    let (_experiment, run, dir, file) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if dir != "artifacts" || file.is_empty() {
        return None;
    }
    Some((Uuid::try_parse(run).ok()?, file))
}

impl Tracking {
    fn mlflow_object(&self, path: &str) -> Result<datafusion::object_store::path::Path> {
        self.inner
            .root
            .object_path(&format!("{MLFLOW_ARTIFACTS}/{path}"))
    }

    /// Stores `data` at `path` of the MLflow artifact store. Returns the record to keep
    /// when the path is a run's file (see [`Tracking::record_mlflow_artifact`]).
    pub async fn put_mlflow_artifact(
        &self,
        path: &str,
        data: bytes::Bytes,
    ) -> Result<Option<(Uuid, String, Artifact)>> {
        use sha2::Digest;
        validate_mlflow_artifact_path(path)?;
        let object = self.mlflow_object(path)?;
        let sha256 = hex(&sha2::Sha256::digest(&data));
        let size_bytes = i64::try_from(data.len()).unwrap_or(i64::MAX);
        match self.inner.root.store.put(&object, data.into()).await {
            Ok(_) => {}
            Err(e) if path_collision(&e) => {
                return Err(Error::Conflict(format!(
                    "artifact \"{path}\" collides with an artifact's file or directory of that name"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let Some((run, file)) = mlflow_run_artifact(path) else {
            return Ok(None);
        };
        let location = format!("{MLFLOW_ARTIFACTS}/{path}");
        let uri = self
            .inner
            .root
            .url
            .join(&location)
            .map(|u| u.to_string())
            .unwrap_or(location.clone());
        Ok(Some((
            run,
            file.to_string(),
            Artifact {
                size_bytes,
                sha256,
                uri,
                location,
            },
        )))
    }

    /// Records a proxied file as artifact `file` of `run` (shown by `runbase.artifacts`
    /// and the dashboard), if the run exists; a path under no known run is just a file.
    pub fn record_mlflow_artifact(
        &self,
        run: &Uuid,
        file: &str,
        artifact: &Artifact,
    ) -> Result<()> {
        if self.run(run)?.is_none() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_ARTIFACTS)?,
            keys::run_key(run, file),
            serde_json::to_vec(artifact).map_err(|e| Error::corrupt("artifact", e))?,
        );
        self.commit(batch)
    }

    /// The bytes at `path` of the MLflow artifact store.
    pub async fn get_mlflow_artifact(&self, path: &str) -> Result<bytes::Bytes> {
        validate_mlflow_artifact_path(path)?;
        let object = self.mlflow_object(path)?;
        match self.inner.root.store.get(&object).await {
            Ok(got) => Ok(got.bytes().await?),
            Err(e)
                if matches!(e, datafusion::object_store::Error::NotFound { .. })
                    || path_collision(&e) =>
            {
                Err(Error::ObjectNotFound(format!("no artifact at \"{path}\"")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The entries of directory `path` of the MLflow artifact store (the root when
    /// empty), by name; empty when there is no such directory.
    pub async fn list_mlflow_artifacts(&self, path: &str) -> Result<Vec<ArtifactEntry>> {
        let path = path.trim_matches('/');
        let prefix = if path.is_empty() {
            self.inner.root.object_path(MLFLOW_ARTIFACTS)?
        } else {
            validate_mlflow_artifact_path(path)?;
            self.mlflow_object(path)?
        };
        let listing = match self
            .inner
            .root
            .store
            .list_with_delimiter(Some(&prefix))
            .await
        {
            Ok(listing) => listing,
            // A file's path, not a directory's: no such directory.
            Err(e) if path_collision(&e) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut out: Vec<ArtifactEntry> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .map(|name| ArtifactEntry {
                name: name.to_string(),
                is_dir: true,
                size_bytes: None,
            })
            .chain(listing.objects.iter().filter_map(|o| {
                o.location.filename().map(|name| ArtifactEntry {
                    name: name.to_string(),
                    is_dir: false,
                    size_bytes: Some(o.size),
                })
            }))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// Whether `e` is a local store's file-versus-directory clash (a path under a file, or a
/// file where a directory is): the client's path, not the store, is at fault.
fn path_collision(e: &datafusion::object_store::Error) -> bool {
    use std::io::ErrorKind;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::NotADirectory | ErrorKind::IsADirectory
            )
        {
            return true;
        }
        source = err.source();
    }
    false
}
