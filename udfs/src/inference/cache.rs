//! Loaded models, shared by every connection: a bounded least-recently-used cache keyed
//! by model version and device, and the `runbase.loaded_models` table that shows it.
//!
//! Versions are immutable, so an entry never goes stale: a new version or an alias moved
//! to another version is a different key, picked up by the next query that resolves it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use runbase_engine::SystemTable;
use runbase_engine::tracking::models::ModelVersion;
use tch::{Device, Tensor};

use super::{ServingSpec, device_label, input_tensor, torch_error};
use crate::Result;

/// A model version's TorchScript module, loaded on a device.
#[derive(Debug)]
pub struct LoadedModel {
    /// The version.
    pub version: ModelVersion,
    /// Its inputs and output.
    pub spec: ServingSpec,
    /// Where it runs.
    pub device: Device,
    module: tch::CModule,
    hits: AtomicU64,
}

impl LoadedModel {
    /// Wraps a loaded module.
    pub fn new(
        version: ModelVersion,
        spec: ServingSpec,
        device: Device,
        mut module: tch::CModule,
    ) -> Self {
        module.set_eval();
        Self {
            version,
            spec,
            device,
            module,
            hits: AtomicU64::new(0),
        }
    }

    /// The module's output for one column per input, on the CPU. Blocking: call it off the
    /// reactor.
    pub fn forward(&self, columns: &[ArrayRef]) -> Result<Tensor> {
        let raw = input_tensor(&self.spec, columns)?;
        tch::no_grad(|| {
            let out = self
                .module
                .forward_ts(&[raw.to_device(self.device)])
                .map_err(|e| torch_error("the model failed on this input", e))?;
            Ok(out.to_device(Device::Cpu))
        })
    }

    fn key(&self) -> Key {
        key(&self.version, self.device)
    }
}

type Key = (String, i64, String);

fn key(version: &ModelVersion, device: Device) -> Key {
    (
        version.model.name.clone(),
        version.version,
        device_label(device),
    )
}

#[derive(Debug, Default)]
struct Entries {
    models: HashMap<Key, (Arc<LoadedModel>, u64)>,
    tick: u64,
    bytes: u64,
}

/// The cache: at most `capacity` bytes of model blobs, but always the last model loaded.
#[derive(Debug)]
pub struct ModelCache {
    capacity: u64,
    entries: Mutex<Entries>,
    loads: AtomicU64,
}

impl ModelCache {
    /// An empty cache of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            entries: Mutex::default(),
            loads: AtomicU64::new(0),
        }
    }

    /// The loaded `version` on `device`, if cached.
    pub fn get(&self, version: &ModelVersion, device: Device) -> Option<Arc<LoadedModel>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.tick += 1;
        let tick = entries.tick;
        let (model, used) = entries.models.get_mut(&key(version, device))?;
        *used = tick;
        model.hits.fetch_add(1, Ordering::Relaxed);
        Some(model.clone())
    }

    /// Adds a freshly loaded model, evicting the least recently used ones over capacity.
    pub fn insert(&self, model: Arc<LoadedModel>) {
        self.loads.fetch_add(1, Ordering::Relaxed);
        let size = u64::try_from(model.version.size_bytes).unwrap_or(0);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.tick += 1;
        let tick = entries.tick;
        if let Some((old, _)) = entries.models.insert(model.key(), (model, tick)) {
            entries.bytes -= u64::try_from(old.version.size_bytes).unwrap_or(0);
        }
        entries.bytes += size;
        while entries.bytes > self.capacity && entries.models.len() > 1 {
            let Some(oldest) = entries
                .models
                .iter()
                .filter(|(_, (_, used))| *used != tick)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((gone, _)) = entries.models.remove(&oldest) {
                entries.bytes -= u64::try_from(gone.version.size_bytes).unwrap_or(0);
            }
        }
    }

    /// How many models were loaded from the object store since start.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> Vec<Arc<LoadedModel>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut models: Vec<Arc<LoadedModel>> =
            entries.models.values().map(|(m, _)| m.clone()).collect();
        models.sort_by_key(|m| m.key());
        models
    }
}

/// `runbase.loaded_models`: the models in the cache.
#[derive(Debug)]
pub struct LoadedModelsTable {
    inference: std::sync::Weak<super::Inference>,
    schema: SchemaRef,
}

impl LoadedModelsTable {
    /// The table over `inference`'s cache.
    pub fn new(inference: &Arc<super::Inference>) -> Self {
        Self {
            inference: Arc::downgrade(inference),
            schema: Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("version", DataType::Int64, false),
                Field::new("device", DataType::Utf8, false),
                Field::new("size_bytes", DataType::Int64, false),
                Field::new("hits", DataType::Int64, false),
            ])),
        }
    }
}

#[async_trait]
impl SystemTable for LoadedModelsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self) -> runbase_engine::Result<RecordBatch> {
        let models = self
            .inference
            .upgrade()
            .map(|i| i.cache().snapshot())
            .unwrap_or_default();
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    models.iter().map(|m| m.version.model.name.as_str()),
                )),
                Arc::new(Int64Array::from_iter_values(
                    models.iter().map(|m| m.version.version),
                )),
                Arc::new(StringArray::from_iter_values(
                    models.iter().map(|m| device_label(m.device)),
                )),
                Arc::new(Int64Array::from_iter_values(
                    models.iter().map(|m| m.version.size_bytes),
                )),
                Arc::new(Int64Array::from_iter_values(models.iter().map(|m| {
                    i64::try_from(m.hits.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
                }))),
            ],
        )
        .map_err(|e| runbase_engine::Error::DataFusion(e.into()))
    }
}
