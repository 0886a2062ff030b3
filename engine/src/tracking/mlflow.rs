//! Records only MLflow clients make — dataset inputs, model outputs, logged models,
//! registered models and their versions — kept as JSON documents in the `mlflow` column
//! family under `<kind>/<id…>` keys. Runs, params, metrics, tags and artifacts logged by
//! MLflow clients are not here: they are runbase's own records, shared with SQL.

use rocksdb::WriteBatch;

use crate::error::{Error, Result};

use super::*;

impl Tracking {
    /// The document at `key`.
    pub fn mlflow_record(&self, key: &str) -> Result<Option<serde_json::Value>> {
        let Some(v) = self.db().get_cf(self.cf(CF_MLFLOW)?, key.as_bytes())? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| Error::corrupt(format!("MLflow record {key}"), e))
    }

    /// Every document whose key starts with `prefix`, by key.
    pub fn mlflow_records(&self, prefix: &str) -> Result<Vec<(String, serde_json::Value)>> {
        let mut out = Vec::new();
        for item in self
            .db()
            .prefix_iterator_cf(self.cf(CF_MLFLOW)?, prefix.as_bytes())
        {
            let (k, v) = item?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            let key = String::from_utf8_lossy(&k).into_owned();
            let doc = serde_json::from_slice(&v)
                .map_err(|e| Error::corrupt(format!("MLflow record {key}"), e))?;
            out.push((key, doc));
        }
        Ok(out)
    }

    /// Writes documents (`Some`) and deletes keys (`None`) in one batch.
    pub fn put_mlflow_records(
        &self,
        changes: &[(String, Option<serde_json::Value>)],
    ) -> Result<()> {
        let cf = self.cf(CF_MLFLOW)?;
        let mut batch = WriteBatch::default();
        for (key, doc) in changes {
            if key.contains('\0') {
                return Err(Error::InvalidArgument("names must not contain NUL".into()));
            }
            match doc {
                Some(doc) => batch.put_cf(
                    cf,
                    key.as_bytes(),
                    serde_json::to_vec(doc).map_err(|e| Error::corrupt("MLflow record", e))?,
                ),
                None => batch.delete_cf(cf, key.as_bytes()),
            }
        }
        self.commit(batch)
    }

    /// Runs `f` holding the registry's lock (version numbers, aliases).
    pub fn with_registry_lock<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _guard = self.lock_models();
        f()
    }
}
