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
