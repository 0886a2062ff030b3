//! Experiments: creating and reading them.

use rocksdb::WriteBatch;

use crate::error::{Error, Result};

use super::*;

impl Tracking {
    /// The experiment called `name`.
    pub fn experiment(&self, name: &str) -> Result<Option<Experiment>> {
        let Some(v) = self
            .db()
            .get_cf(self.cf(CF_EXPERIMENTS)?, name.as_bytes())?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| Error::corrupt(format!("experiment {name}"), e))
    }

    /// Every experiment, by name.
    pub fn experiments(&self) -> Result<Vec<Experiment>> {
        let mut out = Vec::new();
        for item in self
            .db()
            .iterator_cf(self.cf(CF_EXPERIMENTS)?, rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            out.push(serde_json::from_slice(&v).map_err(|e| {
                Error::corrupt(format!("experiment {}", String::from_utf8_lossy(&k)), e)
            })?);
        }
        Ok(out)
    }

    /// Creates an experiment; an error if the name is taken.
    pub fn create_experiment(&self, name: &str, description: Option<&str>) -> Result<Experiment> {
        let _guard = self.lock_experiments();
        if self.experiment(name)?.is_some() {
            return Err(Error::UniqueViolation(format!(
                "experiment \"{name}\" already exists"
            )));
        }
        self.insert_experiment(name, description)
    }

    pub(super) fn insert_experiment(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<Experiment> {
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "experiment name must not be empty".into(),
            ));
        }
        validate_value("experiment name", name, name)?;
        let id = match self.db().get(NEXT_EXPERIMENT_ID)? {
            Some(v) => keys::dec_i64(&v)
                .ok_or_else(|| Error::corrupt("experiment id counter", "not 8 bytes"))?,
            None => 1,
        };
        let exp = Experiment {
            id,
            name: name.to_string(),
            description: description.map(str::to_string),
            created_at_us: now_us(),
            tags: Default::default(),
        };
        let mut batch = WriteBatch::default();
        batch.put(NEXT_EXPERIMENT_ID, keys::enc_i64(id + 1));
        batch.put_cf(
            self.cf(CF_EXPERIMENTS)?,
            name.as_bytes(),
            serde_json::to_vec(&exp).map_err(|e| Error::corrupt("experiment", e))?,
        );
        self.commit(batch)?;
        Ok(exp)
    }
}

/// The name of experiment 0, which MLflow clients log to when they name none.
pub const DEFAULT_EXPERIMENT: &str = "Default";

impl Tracking {
    /// Experiment 0, `Default` (MLflow's default experiment), created if it is missing.
    /// An experiment already called `Default` is taken as it is.
    pub fn default_experiment(&self) -> Result<Experiment> {
        if let Some(e) = self.experiment(DEFAULT_EXPERIMENT)? {
            return Ok(e);
        }
        let _guard = self.lock_experiments();
        if let Some(e) = self.experiment(DEFAULT_EXPERIMENT)? {
            return Ok(e);
        }
        let exp = Experiment {
            id: 0,
            name: DEFAULT_EXPERIMENT.to_string(),
            description: None,
            created_at_us: now_us(),
            tags: Default::default(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_EXPERIMENTS)?,
            exp.name.as_bytes(),
            serde_json::to_vec(&exp).map_err(|e| Error::corrupt("experiment", e))?,
        );
        self.commit(batch)?;
        Ok(exp)
    }

    /// The experiment with id `id` (0 is [`Tracking::default_experiment`]).
    pub fn experiment_by_id(&self, id: i64) -> Result<Option<Experiment>> {
        if id == 0 {
            return self.default_experiment().map(Some);
        }
        Ok(self.experiments()?.into_iter().find(|e| e.id == id))
    }

    /// Sets tag `key` of experiment `name` to `value` (a later value wins).
    pub fn set_experiment_tag(&self, name: &str, key: &str, value: &str) -> Result<Experiment> {
        validate_key("tag", key)?;
        validate_value("tag", key, value)?;
        let _guard = self.lock_experiments();
        let mut exp = self.experiment(name)?.ok_or_else(|| {
            Error::ObjectNotFound(format!("experiment \"{name}\" does not exist"))
        })?;
        exp.tags.insert(key.to_string(), value.to_string());
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_EXPERIMENTS)?,
            name.as_bytes(),
            serde_json::to_vec(&exp).map_err(|e| Error::corrupt("experiment", e))?,
        );
        self.commit(batch)?;
        Ok(exp)
    }
}
