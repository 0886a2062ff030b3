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
    hits: AtomicU64,
}

impl ModelCache {
    /// An empty cache of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            entries: Mutex::default(),
            loads: AtomicU64::new(0),
            hits: AtomicU64::new(0),
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
        self.hits.fetch_add(1, Ordering::Relaxed);
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

    /// How many lookups found their model loaded, since start.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Bytes of model blobs cached now.
    pub fn bytes(&self) -> u64 {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }

    /// Models cached now.
    pub fn len(&self) -> u64 {
        let n = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .models
            .len();
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// Whether no model is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

#[cfg(test)]
mod tests {
    use runbase_engine::tracking::models::NewModelVersion;
    use tch::{Kind, Tensor};

    use super::*;
    use crate::inference::Output;

    fn model(name: &str, version: i64, size: i64) -> Arc<LoadedModel> {
        let mut double =
            |inputs: &[Tensor]| vec![inputs[0].sum_dim_intlist(1, false, Kind::Float) * 2.0];
        let module = tch::CModule::create_by_tracing(
            "Double",
            "forward",
            &[Tensor::ones([2, 3], (Kind::Float, Device::Cpu))],
            &mut double,
        )
        .expect("trace");
        let version = ModelVersion {
            model: NewModelVersion {
                name: name.into(),
                run_id: None,
                task: "regression".into(),
                target: None,
                input_columns: vec!["a".into(), "b".into(), "c".into()],
                metrics: serde_json::json!({}),
                format: "torchscript".into(),
                spec: serde_json::json!({}),
            },
            version,
            location: String::new(),
            size_bytes: size,
            sha256: String::new(),
            created_at_us: 0,
        };
        let spec = ServingSpec {
            inputs: ["a", "b", "c"]
                .iter()
                .map(|n| crate::train::features::InputColumn::Numeric {
                    name: n.to_string(),
                    mean: 0.0,
                    std: 1.0,
                })
                .collect(),
            output: Output::Regression,
            device: None,
            target: None,
        };
        Arc::new(LoadedModel::new(version, spec, Device::Cpu, module))
    }

    #[test]
    fn the_least_recently_used_model_goes_first_when_over_capacity() {
        let cache = ModelCache::new(250);
        let (a, b, c) = (model("a", 1, 100), model("b", 1, 100), model("c", 1, 100));
        cache.insert(a.clone());
        cache.insert(b.clone());
        // `a` is used again, so `b` is now the least recently used.
        assert!(cache.get(&a.version, Device::Cpu).is_some());
        cache.insert(c.clone());
        assert!(cache.get(&b.version, Device::Cpu).is_none());
        assert!(cache.get(&a.version, Device::Cpu).is_some());
        assert!(cache.get(&c.version, Device::Cpu).is_some());
        assert_eq!(cache.loads(), 3);
        // Another version of a name is another entry; one model larger than the whole
        // cache is still kept (alone).
        cache.insert(model("a", 2, 1000));
        let names: Vec<(String, i64)> = cache
            .snapshot()
            .iter()
            .map(|m| (m.version.model.name.clone(), m.version.version))
            .collect();
        assert_eq!(names, [("a".to_string(), 2)]);
    }

    #[test]
    fn a_loaded_model_scores_arrow_columns() {
        use datafusion::arrow::array::{Float64Array, Int32Array};
        let m = model("a", 1, 10);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(vec![1.0, 2.0])),
            Arc::new(Int32Array::from(vec![10, 20])),
            Arc::new(Float64Array::from(vec![Some(0.5), None])),
        ];
        let out = m.forward(&columns).expect("forward");
        let values: Vec<f32> = Vec::try_from(&out).expect("values");
        assert_eq!(values[0], 23.0);
        assert!(
            values[1].is_nan(),
            "a NULL input is NaN to an imported model"
        );
    }
}
