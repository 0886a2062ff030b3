//! Records only MLflow clients make — dataset inputs, model outputs, logged models,
//! registered models and their versions — kept as JSON documents in the `mlflow` column
//! family under `<kind>/<id…>` keys. Runs, params, metrics, tags and artifacts logged by
//! MLflow clients are not here: they are runbase's own records, shared with SQL.

use rocksdb::WriteBatch;
use serde_json::Value;

use crate::error::{Error, Result};

use super::*;

/// Width of the zero-padded version numbers in keys, so they sort numerically.
const VERSION_WIDTH: usize = 12;

/// The key of logged model `id` (`m-<32 hex>`).
pub fn logged_model_key(id: &str) -> String {
    format!("logged_model/{id}")
}

/// The key of registered model `name`.
pub fn registered_model_key(name: &str) -> String {
    format!("registered/{name}")
}

/// The key prefix of the versions of registered model `name`.
pub fn model_version_prefix(name: &str) -> String {
    format!("version/{name}/")
}

/// The key of version `version` of registered model `name`.
pub fn model_version_key(name: &str, version: i64) -> String {
    format!(
        "{}{version:0width$}",
        model_version_prefix(name),
        width = VERSION_WIDTH
    )
}

/// The path (under the MLflow artifact store) an `mlflow-artifacts:/…` URI names.
fn artifact_path(uri: &str) -> Option<&str> {
    uri.strip_prefix("mlflow-artifacts:")
        .map(|p| p.trim_start_matches('/').trim_end_matches('/'))
}

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

    /// Runs `f` holding the registry's lock (version numbers, aliases); `f`'s error is
    /// the caller's own.
    pub fn with_registry_lock<T, E>(
        &self,
        f: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let _guard = self.lock_models();
        f()
    }
}

impl Tracking {
    /// The artifact directory (under the MLflow artifact store) of an MLflow model URI:
    /// `models:/<name>@<alias>`, `models:/<name>/<version>`, `models:/m-<id>` (a logged
    /// model), `runs:/<run>/<path>` or `mlflow-artifacts:/<path>`.
    pub fn mlflow_model_dir(&self, uri: &str) -> Result<String> {
        let missing = |what: String| Error::ObjectNotFound(what);
        if let Some(path) = artifact_path(uri) {
            return Ok(path.to_string());
        }
        if let Some(rest) = uri.strip_prefix("runs:/") {
            let (run, path) = rest.split_once('/').unwrap_or((rest, ""));
            let run = parse_run_id(run)?;
            let r = self.existing_run(&run)?;
            let base = format!("{}/{}/artifacts", r.experiment_id, run.simple());
            let path = path.trim_matches('/');
            return Ok(if path.is_empty() {
                base
            } else {
                format!("{base}/{path}")
            });
        }
        let Some(rest) = uri.strip_prefix("models:/") else {
            return Err(Error::InvalidArgument(format!(
                "invalid MLflow model URI \"{uri}\": expected models:/<name>@<alias>, \
                 models:/<name>/<version>, models:/m-<id>, runs:/<run>/<path> or \
                 mlflow-artifacts:/<path>"
            )));
        };
        let rest = rest.trim_end_matches('/');
        if rest.starts_with("m-") && !rest.contains('/') && !rest.contains('@') {
            let doc = self
                .mlflow_record(&logged_model_key(rest))?
                .ok_or_else(|| missing(format!("logged model \"{rest}\" does not exist")))?;
            return doc
                .get("artifact_uri")
                .and_then(Value::as_str)
                .and_then(artifact_path)
                .map(str::to_string)
                .ok_or_else(|| Error::corrupt(format!("logged model {rest}"), "no artifact_uri"));
        }
        let (name, version) = if let Some((name, alias)) = rest.rsplit_once('@') {
            let doc = self
                .mlflow_record(&registered_model_key(name))?
                .ok_or_else(|| missing(format!("registered model \"{name}\" does not exist")))?;
            let version = doc
                .get("aliases")
                .and_then(|a| a.get(alias))
                .and_then(Value::as_str)
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| {
                    missing(format!(
                        "registered model \"{name}\" has no alias \"{alias}\""
                    ))
                })?;
            (name, version)
        } else if let Some((name, version)) = rest.rsplit_once('/') {
            let version = version.parse::<i64>().map_err(|_| {
                Error::InvalidArgument(format!("invalid model version \"{version}\" in \"{uri}\""))
            })?;
            (name, version)
        } else {
            let versions = self.mlflow_records(&model_version_prefix(rest))?;
            let latest = versions
                .last()
                .and_then(|(_, d)| d.get("version").and_then(Value::as_str))
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| missing(format!("registered model \"{rest}\" has no versions")))?;
            (rest, latest)
        };
        let doc = self
            .mlflow_record(&model_version_key(name, version))?
            .ok_or_else(|| missing(format!("model \"{name}\" has no version {version}")))?;
        let source = doc.get("source").and_then(Value::as_str).unwrap_or("");
        if source.starts_with("models:/")
            && source.trim_end_matches('/') == uri.trim_end_matches('/')
        {
            return Err(Error::InvalidArgument(format!(
                "model version source \"{source}\" names itself"
            )));
        }
        self.mlflow_model_dir(source)
    }

    /// The TorchScript file of the MLflow model at `uri` (see
    /// [`Tracking::mlflow_model_dir`]): a `pytorch` flavour's `<model_data>/model.pth`
    /// (what `mlflow.pytorch.log_model` writes for a `torch.jit.ScriptModule`), for
    /// `import_model`.
    pub async fn mlflow_model_file(&self, uri: &str) -> Result<bytes::Bytes> {
        let dir = {
            let this = self.clone();
            let uri = uri.to_string();
            tokio::task::spawn_blocking(move || this.mlflow_model_dir(&uri))
                .await
                .map_err(|e| Error::Internal(format!("resolving a model URI: {e}")))??
        };
        let mlmodel = self.get_mlflow_artifact(&format!("{dir}/MLmodel")).await?;
        let text = String::from_utf8_lossy(&mlmodel);
        if !text.lines().any(|l| l.trim_start().starts_with("pytorch:")) {
            return Err(Error::InvalidArgument(format!(
                "the MLflow model at \"{uri}\" has no pytorch flavour; only TorchScript \
                 modules logged with mlflow.pytorch.log_model can be imported"
            )));
        }
        let data = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("model_data:"))
            .map_or("data", |v| v.trim().trim_matches('\'').trim_matches('"'));
        self.get_mlflow_artifact(&format!("{dir}/{data}/model.pth"))
            .await
    }
}
