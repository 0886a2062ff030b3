//! The model registry: every stored version of every model, and its blob on the object store.
//!
//! A model version is immutable once registered. Records live in the `models` column family
//! under `name · 0x00 · version` (big-endian, so a name's versions scan in order); the
//! blob is written to the object store first, under a fresh id, and the record second, so a
//! crash in between leaves an unreferenced object, never a record without its blob.
//! The engine does not look inside blobs: the `udfs` crate writes TorchScript modules.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::object_store::ObjectStoreExt;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CF_MODELS, Tracking, TrackingRef, hex, keys, now_us};
use crate::error::{Error, Result};
use crate::system::SystemTable;

/// Longest model name accepted.
pub const MAX_MODEL_NAME_LEN: usize = 128;

/// One registered model version: what was registered, and where its blob is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// What was registered (name, task, inputs, …).
    #[serde(flatten)]
    pub model: NewModelVersion,
    /// Version, from 1.
    pub version: i64,
    /// Blob location relative to the object-store root.
    pub location: String,
    /// Blob size.
    pub size_bytes: i64,
    /// Hex SHA-256 of the blob.
    pub sha256: String,
    /// When it was registered, microseconds since the Unix epoch.
    pub created_at_us: i64,
}

/// A model version as [`Tracking::register_model`] takes it, besides the blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewModelVersion {
    /// Model name (see [`validate_model_name`]).
    pub name: String,
    /// The run that produced it (a TRAIN run), if any.
    pub run_id: Option<Uuid>,
    /// `classification`, `regression`, …
    pub task: String,
    /// The label column it was trained to predict, if any.
    pub target: Option<String>,
    /// The input columns, in the order the model takes them.
    pub input_columns: Vec<String>,
    /// Held-out metrics, as a JSON object.
    pub metrics: serde_json::Value,
    /// Blob format: `torchscript`.
    pub format: String,
    /// What a reader of the blob needs besides the blob (preprocessing, classes, …).
    pub spec: serde_json::Value,
}

/// Checks a model name: 1 to 128 characters of letters, digits, `_`, `-` and `.`, starting
/// with a letter or digit. Names become object-store path segments, so nothing else passes.
pub fn validate_model_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "invalid model name \"{name}\": {why}"
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_MODEL_NAME_LEN {
        return Err(Error::ValueTooLong(format!(
            "model name is {} bytes long; the limit is {MAX_MODEL_NAME_LEN}",
            name.len()
        )));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return bad("only letters, digits, _, - and . are allowed");
    }
    if name.contains("..") {
        return bad("\"..\" is not allowed");
    }
    Ok(())
}

fn model_key(name: &str, version: i64) -> Vec<u8> {
    let mut k = model_prefix(name);
    k.extend_from_slice(&keys::enc_i64(version));
    k
}

fn model_prefix(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 9);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k
}

impl Tracking {
    /// Stores `blob` and registers it as the next version of `new.name`.
    pub async fn register_model(
        &self,
        new: NewModelVersion,
        blob: Vec<u8>,
    ) -> Result<ModelVersion> {
        use sha2::Digest;
        validate_model_name(&new.name)?;
        let sha256 = hex(&sha2::Sha256::digest(&blob));
        let size_bytes = i64::try_from(blob.len()).unwrap_or(i64::MAX);
        let location = format!("models/{}/{}.pt", new.name, Uuid::new_v4());
        let object = self.inner.root.object_path(&location)?;
        self.inner.root.store.put(&object, blob.into()).await?;
        let _guard = self.lock();
        let version = self.latest_model_version(&new.name)?.unwrap_or(0) + 1;
        let record = ModelVersion {
            model: new,
            version,
            location,
            size_bytes,
            sha256,
            created_at_us: now_us(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_MODELS)?,
            model_key(&record.model.name, version),
            serde_json::to_vec(&record).map_err(|e| Error::corrupt("model version", e))?,
        );
        self.commit(batch)?;
        Ok(record)
    }

    fn latest_model_version(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.model_versions(name)?.last().map(|m| m.version))
    }

    /// Every version of `name`, oldest first.
    pub fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        let prefix = model_prefix(name);
        let mut out = Vec::new();
        for item in self.db().prefix_iterator_cf(self.cf(CF_MODELS)?, &prefix) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(decode_model(&v)?);
        }
        Ok(out)
    }

    /// Version `version` of `name`.
    pub fn model_version(&self, name: &str, version: i64) -> Result<ModelVersion> {
        let v = self
            .db()
            .get_cf(self.cf(CF_MODELS)?, model_key(name, version))?
            .ok_or_else(|| {
                Error::ObjectNotFound(format!("model \"{name}\" has no version {version}"))
            })?;
        decode_model(&v)
    }

    /// Every version of every model, by name then version.
    pub fn models(&self) -> Result<Vec<ModelVersion>> {
        let mut out = Vec::new();
        for item in self
            .db()
            .iterator_cf(self.cf(CF_MODELS)?, rocksdb::IteratorMode::Start)
        {
            let (_, v) = item?;
            out.push(decode_model(&v)?);
        }
        Ok(out)
    }

    /// The blob of a model version.
    pub async fn model_blob(&self, model: &ModelVersion) -> Result<Vec<u8>> {
        let object = self.inner.root.object_path(&model.location)?;
        let bytes = self.inner.root.store.get(&object).await?.bytes().await?;
        Ok(bytes.to_vec())
    }
}

fn decode_model(v: &[u8]) -> Result<ModelVersion> {
    serde_json::from_slice(v).map_err(|e| Error::corrupt("model version", e))
}

/// `runbase.models`: one row per model version.
#[derive(Debug)]
pub struct ModelsTable {
    tracking: TrackingRef,
    schema: SchemaRef,
}

impl ModelsTable {
    pub(crate) fn new(tracking: &Tracking) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("version", DataType::Int64, false),
            Field::new("run_id", DataType::Utf8, true),
            Field::new("task", DataType::Utf8, false),
            Field::new("target", DataType::Utf8, true),
            Field::new(
                "input_columns",
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                false,
            ),
            Field::new("metrics", DataType::Utf8, false),
            Field::new("format", DataType::Utf8, false),
            Field::new("uri", DataType::Utf8, false),
            Field::new("size_bytes", DataType::Int64, false),
            Field::new("sha256", DataType::Utf8, false),
            Field::new(
                "created_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        Self {
            tracking: tracking.downgrade(),
            schema,
        }
    }
}

#[async_trait]
impl SystemTable for ModelsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        let tracking = self.tracking.get()?;
        let models = tracking.models()?;
        let mut inputs = ListBuilder::new(StringBuilder::new());
        for m in &models {
            for c in &m.model.input_columns {
                inputs.values().append_value(c);
            }
            inputs.append(true);
        }
        let url = &tracking.inner.root.url;
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    models.iter().map(|m| m.model.name.as_str()),
                )),
                Arc::new(Int64Array::from_iter_values(
                    models.iter().map(|m| m.version),
                )),
                Arc::new(StringArray::from_iter(
                    models.iter().map(|m| m.model.run_id.map(|r| r.to_string())),
                )),
                Arc::new(StringArray::from_iter_values(
                    models.iter().map(|m| m.model.task.as_str()),
                )),
                Arc::new(StringArray::from_iter(
                    models.iter().map(|m| m.model.target.as_deref()),
                )),
                Arc::new(inputs.finish()),
                Arc::new(StringArray::from_iter_values(
                    models.iter().map(|m| m.model.metrics.to_string()),
                )),
                Arc::new(StringArray::from_iter_values(
                    models.iter().map(|m| m.model.format.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(models.iter().map(|m| {
                    url.join(&m.location)
                        .map(|u| u.to_string())
                        .unwrap_or_else(|_| m.location.clone())
                }))),
                Arc::new(Int64Array::from_iter_values(
                    models.iter().map(|m| m.size_bytes),
                )),
                Arc::new(StringArray::from_iter_values(
                    models.iter().map(|m| m.sha256.as_str()),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        models.iter().map(|m| m.created_at_us),
                    )
                    .with_timezone("UTC"),
                ),
            ],
        )
        .map_err(|e| Error::DataFusion(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_cannot_escape_their_prefix() {
        for good in ["iris", "iris_v2", "a.b-c", "9lives"] {
            assert!(validate_model_name(good).is_ok(), "{good}");
        }
        for bad in [
            "", "../etc", "a/b", "a..b", ".hidden", "a b", "naïve", "x@1",
        ] {
            assert!(validate_model_name(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            validate_model_name(&"m".repeat(129)),
            Err(Error::ValueTooLong(_))
        ));
    }
}
