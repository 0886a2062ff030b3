//! The model registry: every stored version of every model, and its blob on the object store.
//!
//! A model version is immutable once registered. Records live in the `models` column family
//! under `name · 0x00 · version` (big-endian, so a name's versions scan in order); the
//! blob is written to the object store first, under a fresh id, and the record second, so a
//! crash in between leaves an unreferenced object, never a record without its blob.
//! The engine does not look inside blobs: the `udfs` crate writes TorchScript modules.
//!
//! Aliases (`production`, `default`, …) point at one version of a model each and live in
//! the `model_aliases` column family under `name · 0x00 · alias`. A model *reference* is
//! `name` (the version `default` points at, else the latest), `name@3` or `name@alias`;
//! [`Tracking::resolve_model`] turns one into a version.

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

use super::{CF_MODEL_ALIASES, CF_MODELS, Tracking, TrackingRef, hex, keys, now_us};
use crate::error::{Error, Result};
use crate::system::SystemTable;

/// Longest model name accepted.
pub const MAX_MODEL_NAME_LEN: usize = 128;

/// Longest alias accepted.
pub const MAX_ALIAS_LEN: usize = 64;

/// The alias a plain model name resolves to when it is set.
pub const DEFAULT_ALIAS: &str = "default";

/// An alias of a model: a name for one of its versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAlias {
    /// Model name.
    pub name: String,
    /// The alias.
    pub alias: String,
    /// The version it points at.
    pub version: i64,
    /// When it was last set, microseconds since the Unix epoch.
    pub updated_at_us: i64,
}

/// Checks an alias: a letter or `_`, then letters, digits, `_` and `-`, at most 64 long
/// (so `name@3` is always a version and `name@prod` always an alias).
pub fn validate_alias(alias: &str) -> Result<()> {
    let ok = alias.len() <= MAX_ALIAS_LEN
        && alias.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid alias \"{alias}\": an alias is 1 to {MAX_ALIAS_LEN} letters, digits, _ and -, starting with a letter or _"
        )))
    }
}

/// What a model reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelReference {
    /// `name`: the `default` alias, else the latest version.
    Latest(String),
    /// `name@3`.
    Version(String, i64),
    /// `name@alias`.
    Alias(String, String),
}

impl ModelReference {
    /// Parses `name`, `name@version` or `name@alias`.
    pub fn parse(reference: &str) -> Result<Self> {
        let (name, at) = match reference.split_once('@') {
            Some((name, at)) => (name, Some(at)),
            None => (reference, None),
        };
        validate_model_name(name)?;
        let name = name.to_string();
        Ok(match at {
            None => ModelReference::Latest(name),
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                let version = v.parse::<i64>().map_err(|_| {
                    Error::InvalidArgument(format!("model version \"{v}\" is out of range"))
                })?;
                ModelReference::Version(name, version)
            }
            Some(alias) => {
                validate_alias(alias)?;
                ModelReference::Alias(name, alias.to_string())
            }
        })
    }

    /// The model name.
    pub fn name(&self) -> &str {
        match self {
            ModelReference::Latest(n)
            | ModelReference::Version(n, _)
            | ModelReference::Alias(n, _) => n,
        }
    }
}

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
        let _guard = self.lock_models();
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

    /// The blob of a model version, checked against the SHA-256 recorded when it was
    /// registered.
    pub async fn model_blob(&self, model: &ModelVersion) -> Result<Vec<u8>> {
        use sha2::Digest;
        let object = self.inner.root.object_path(&model.location)?;
        let bytes = self.inner.root.store.get(&object).await?.bytes().await?;
        let sha256 = hex(&sha2::Sha256::digest(&bytes));
        if sha256 != model.sha256 {
            return Err(Error::Corrupt {
                what: format!("model {}@{}", model.model.name, model.version),
                detail: format!(
                    "its blob's SHA-256 is {sha256}, the registry recorded {}",
                    model.sha256
                ),
            });
        }
        Ok(bytes.to_vec())
    }
}

impl Tracking {
    /// The version `reference` (`name`, `name@3`, `name@alias`) names now.
    pub fn resolve_model(&self, reference: &str) -> Result<ModelVersion> {
        match ModelReference::parse(reference)? {
            ModelReference::Version(name, v) => {
                self.model_exists(&name)?;
                self.model_version(&name, v)
            }
            ModelReference::Alias(name, alias) => {
                self.model_exists(&name)?;
                let v = self.model_alias(&name, &alias)?.ok_or_else(|| {
                    Error::ObjectNotFound(format!("model \"{name}\" has no alias \"{alias}\""))
                })?;
                self.model_version(&name, v)
            }
            ModelReference::Latest(name) => match self.model_alias(&name, DEFAULT_ALIAS)? {
                Some(v) => self.model_version(&name, v),
                None => self.model_versions(&name)?.pop().ok_or_else(|| {
                    Error::ObjectNotFound(format!("model \"{name}\" does not exist"))
                }),
            },
        }
    }

    fn model_exists(&self, name: &str) -> Result<()> {
        let prefix = model_prefix(name);
        let found = self
            .db()
            .prefix_iterator_cf(self.cf(CF_MODELS)?, &prefix)
            .next()
            .transpose()?
            .is_some_and(|(k, _)| k.starts_with(&prefix));
        if found {
            Ok(())
        } else {
            Err(Error::ObjectNotFound(format!(
                "model \"{name}\" does not exist"
            )))
        }
    }

    /// The version `alias` of `name` points at, if it is set.
    pub fn model_alias(&self, name: &str, alias: &str) -> Result<Option<i64>> {
        let Some(v) = self
            .db()
            .get_cf(self.cf(CF_MODEL_ALIASES)?, alias_key(name, alias))?
        else {
            return Ok(None);
        };
        Ok(Some(decode_alias(&v)?.version))
    }

    /// Points `alias` of `name` at `version` (which must exist), replacing where it pointed.
    pub fn set_model_alias(&self, name: &str, alias: &str, version: i64) -> Result<ModelAlias> {
        validate_model_name(name)?;
        validate_alias(alias)?;
        let _guard = self.lock_models();
        self.model_exists(name)?;
        self.model_version(name, version)?;
        let record = ModelAlias {
            name: name.to_string(),
            alias: alias.to_string(),
            version,
            updated_at_us: now_us(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_MODEL_ALIASES)?,
            alias_key(name, alias),
            serde_json::to_vec(&record).map_err(|e| Error::corrupt("model alias", e))?,
        );
        self.commit(batch)?;
        Ok(record)
    }

    /// Removes `alias` of `name`; an error when it is not set.
    pub fn drop_model_alias(&self, name: &str, alias: &str) -> Result<()> {
        validate_model_name(name)?;
        validate_alias(alias)?;
        let _guard = self.lock_models();
        if self.model_alias(name, alias)?.is_none() {
            return Err(Error::ObjectNotFound(format!(
                "model \"{name}\" has no alias \"{alias}\""
            )));
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_MODEL_ALIASES)?, alias_key(name, alias));
        self.commit(batch)?;
        Ok(())
    }

    /// Every alias of every model, by name then alias.
    pub fn model_aliases(&self) -> Result<Vec<ModelAlias>> {
        let mut out = Vec::new();
        for item in self
            .db()
            .iterator_cf(self.cf(CF_MODEL_ALIASES)?, rocksdb::IteratorMode::Start)
        {
            let (_, v) = item?;
            out.push(decode_alias(&v)?);
        }
        Ok(out)
    }
}

fn alias_key(name: &str, alias: &str) -> Vec<u8> {
    let mut k = model_prefix(name);
    k.extend_from_slice(alias.as_bytes());
    k
}

fn decode_alias(v: &[u8]) -> Result<ModelAlias> {
    serde_json::from_slice(v).map_err(|e| Error::corrupt("model alias", e))
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
            Field::new("spec", DataType::Utf8, false),
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
                Arc::new(StringArray::from_iter_values(
                    models.iter().map(|m| m.model.spec.to_string()),
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

/// `runbase.model_aliases`: one row per alias.
#[derive(Debug)]
pub struct ModelAliasesTable {
    tracking: TrackingRef,
    schema: SchemaRef,
}

impl ModelAliasesTable {
    pub(crate) fn new(tracking: &Tracking) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("alias", DataType::Utf8, false),
            Field::new("version", DataType::Int64, false),
            Field::new(
                "updated_at",
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
impl SystemTable for ModelAliasesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        let aliases = self.tracking.get()?.model_aliases()?;
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    aliases.iter().map(|a| a.name.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    aliases.iter().map(|a| a.alias.as_str()),
                )),
                Arc::new(Int64Array::from_iter_values(
                    aliases.iter().map(|a| a.version),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        aliases.iter().map(|a| a.updated_at_us),
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

    #[test]
    fn model_references_parse_into_versions_and_aliases() {
        assert_eq!(
            ModelReference::parse("iris").expect("plain"),
            ModelReference::Latest("iris".into())
        );
        assert_eq!(
            ModelReference::parse("iris@12").expect("version"),
            ModelReference::Version("iris".into(), 12)
        );
        assert_eq!(
            ModelReference::parse("iris@production").expect("alias"),
            ModelReference::Alias("iris".into(), "production".into())
        );
        for bad in [
            "iris@",
            "@3",
            "iris@-1",
            "iris@a b",
            "../x@1",
            "iris@99999999999999999999",
        ] {
            assert!(ModelReference::parse(bad).is_err(), "{bad}");
        }
    }
}
