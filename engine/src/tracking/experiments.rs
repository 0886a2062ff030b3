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
