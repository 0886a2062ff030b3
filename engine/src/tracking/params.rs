//! Params, tags and the table versions a run read (lineage).
use std::collections::{HashMap, HashSet};

use rocksdb::WriteBatch;
use uuid::Uuid;

use crate::error::{Error, Result};

use super::*;

impl Tracking {
    /// Logs params of a running run. A key logged before with the same value is a no-op;
    /// with another value it is an error and nothing is logged.
    pub fn log_params(&self, run: &Uuid, params: &[(String, String)]) -> Result<usize> {
        self.log_params_in(run, params, LogMode::Strict)
    }

    /// [`Tracking::log_params`] under `mode`: MLflow's accepts ended runs too.
    pub fn log_params_in(
        &self,
        run: &Uuid,
        params: &[(String, String)],
        mode: LogMode,
    ) -> Result<usize> {
        for (k, v) in params {
            validate_key("param", k)?;
            validate_value("param", k, v)?;
        }
        let _guard = self.lock_run(run);
        self.writable_run(run, mode)?;
        let cf = self.cf(CF_PARAMS)?;
        let mut batch = WriteBatch::default();
        let mut pending: HashMap<&str, &str> = HashMap::new();
        for (k, v) in params {
            let existing = match pending.get(k.as_str()) {
                Some(p) => Some(p.as_bytes().to_vec()),
                None => self.db().get_cf(cf, keys::run_key(run, k))?,
            };
            match existing {
                Some(old) if old == v.as_bytes() => {}
                Some(old) => {
                    return Err(Error::UniqueViolation(format!(
                        "param \"{k}\" of run \"{run}\" is already \"{}\"; params are write-once (tried \"{v}\")",
                        String::from_utf8_lossy(&old)
                    )));
                }
                None => {
                    batch.put_cf(cf, keys::run_key(run, k), v.as_bytes());
                    pending.insert(k, v);
                }
            }
        }
        self.commit(batch)?;
        Ok(params.len())
    }

    /// Sets tags of a run (running or not); a tag is overwritten by a later value.
    pub fn set_tags(&self, tags: &[(Uuid, String, String)]) -> Result<()> {
        let cf = self.cf(CF_TAGS)?;
        let mut batch = WriteBatch::default();
        let mut checked = HashSet::new();
        for (run, k, v) in tags {
            validate_key("tag", k)?;
            validate_value("tag", k, v)?;
            if !checked.contains(run) {
                self.existing_run(run)?;
                checked.insert(*run);
            }
            batch.put_cf(cf, keys::run_key(run, k), v.as_bytes());
        }
        self.commit(batch)
    }

    /// Records that `run` read version `version` of `table`.
    pub fn log_input(&self, run: &Uuid, table: &str, version: i64) -> Result<()> {
        if table.is_empty() || table.contains('\0') {
            return Err(Error::InvalidArgument(
                "table name must not be empty".into(),
            ));
        }
        self.running_run(run)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_INPUTS)?,
            keys::input_key(run, table, version),
            [],
        );
        self.commit(batch)
    }

    /// The params of `run`, by key.
    pub fn params(&self, run: &Uuid) -> Result<Vec<(String, String)>> {
        self.run_strings(CF_PARAMS, run)
    }

    /// The tags of `run`, by key.
    pub fn tags(&self, run: &Uuid) -> Result<Vec<(String, String)>> {
        self.run_strings(CF_TAGS, run)
    }

    /// The table versions `run` read, by table name.
    pub fn inputs(&self, run: &Uuid) -> Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        for item in self
            .db()
            .prefix_iterator_cf(self.cf(CF_INPUTS)?, run.as_bytes())
        {
            let (k, _) = item?;
            if !k.starts_with(run.as_bytes()) {
                break;
            }
            if let Some((_, table, version)) = keys::decode_input_key(&k) {
                out.push((table.to_string(), version));
            }
        }
        Ok(out)
    }

    pub(super) fn run_strings(&self, cf: &str, run: &Uuid) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for item in self.db().prefix_iterator_cf(self.cf(cf)?, run.as_bytes()) {
            let (k, v) = item?;
            if !k.starts_with(run.as_bytes()) {
                break;
            }
            if let Some((_, key)) = keys::decode_run_key(&k) {
                out.push((key.to_string(), String::from_utf8_lossy(&v).into_owned()));
            }
        }
        Ok(out)
    }
}
