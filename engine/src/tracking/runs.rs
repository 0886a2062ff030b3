//! Runs: starting, ending and reading them, and their experiments.
use std::sync::Arc;

use rocksdb::WriteBatch;
use uuid::Uuid;

use crate::error::{Error, Result};

use super::*;

impl Tracking {
    /// The run `run`, if it exists.
    pub fn run(&self, run: &Uuid) -> Result<Option<Run>> {
        let Some(v) = self.db().get_cf(self.cf(CF_RUNS)?, run.as_bytes())? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| Error::corrupt(format!("run {run}"), e))
    }

    /// Every run of the experiment called `name`, in id order, read in one batch.
    pub fn experiment_runs(&self, name: &str) -> Result<Vec<Run>> {
        let ids = self.runs_of_experiment(name)?;
        let cf = self.cf(CF_RUNS)?;
        let mut runs = Vec::with_capacity(ids.len());
        for (id, v) in ids.iter().zip(
            self.db()
                .multi_get_cf(ids.iter().map(|id| (cf, id.as_bytes()))),
        ) {
            if let Some(v) = v? {
                runs.push(
                    serde_json::from_slice(&v)
                        .map_err(|e| Error::corrupt(format!("run {id}"), e))?,
                );
            }
        }
        Ok(runs)
    }

    /// The name of the experiment `run` belongs to, if the run exists.
    pub fn experiment_of_run(&self, run: &Uuid) -> Result<Option<Arc<str>>> {
        if let Some(e) = self
            .inner
            .run_experiments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(run)
        {
            return Ok(Some(e.clone()));
        }
        let Some(r) = self.run(run)? else {
            return Ok(None);
        };
        let name: Arc<str> = r.experiment.into();
        self.inner
            .run_experiments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*run, name.clone());
        Ok(Some(name))
    }

    pub(super) fn existing_run(&self, run: &Uuid) -> Result<Run> {
        self.run(run)?
            .ok_or_else(|| Error::ObjectNotFound(format!("run \"{run}\" does not exist")))
    }

    pub(super) fn running_run(&self, run: &Uuid) -> Result<Run> {
        self.writable_run(run, LogMode::Strict)
    }

    /// The run `run` if it takes values under `mode`: running (strict), or not deleted
    /// (MLflow's rule).
    pub(super) fn writable_run(&self, run: &Uuid, mode: LogMode) -> Result<Run> {
        let r = self.existing_run(run)?;
        if r.deleted {
            return Err(Error::InvalidState(format!(
                "run \"{run}\" is deleted; restore it before logging to it"
            )));
        }
        if mode == LogMode::Strict && r.status != RunStatus::Running {
            return Err(Error::InvalidState(format!(
                "run \"{run}\" has ended ({}); it takes no more values",
                r.status.as_str()
            )));
        }
        Ok(r)
    }

    /// Ids of the runs of the experiment called `name`, in id order.
    pub fn runs_of_experiment(&self, name: &str) -> Result<Vec<Uuid>> {
        let Some(exp) = self.experiment(name)? else {
            return Ok(vec![]);
        };
        let prefix = keys::enc_i64(exp.id);
        let mut out = Vec::new();
        let mut it = self.db().raw_iterator_cf(self.cf(CF_RUNS_BY_EXPERIMENT)?);
        it.seek(prefix);
        while let Some(k) = it.key() {
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(run) = keys::decode_run(&k[8..]) {
                out.push(run);
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Starts a run in `experiment`, creating the experiment if it does not exist.
    pub fn start_run(&self, experiment: &str, new: NewRun) -> Result<Run> {
        for (k, v) in &new.params {
            validate_key("param", k)?;
            validate_value("param", k, v)?;
        }
        for (k, v) in &new.tags {
            validate_key("tag", k)?;
            validate_value("tag", k, v)?;
        }
        let _guard = self.lock_experiments();
        let exp = match self.experiment(experiment)? {
            Some(e) => e,
            None => self.insert_experiment(experiment, None)?,
        };
        if let Some(parent) = &new.parent_run_id {
            self.existing_run(parent)?;
        }
        let run_id = Uuid::new_v4();
        let name = match new.name {
            Some(n) if !n.is_empty() => n,
            _ => format!("run-{}", &run_id.simple().to_string()[..8]),
        };
        let run = Run {
            run_id,
            experiment_id: exp.id,
            experiment: exp.name,
            name,
            status: RunStatus::Running,
            parent_run_id: new.parent_run_id,
            kind: new.kind.unwrap_or_else(|| "external".to_string()),
            started_at_us: new.started_at_us.unwrap_or_else(now_us),
            ended_at_us: None,
            user_name: new.user_name,
            source: new.source,
            deleted: false,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_RUNS)?, run_id.as_bytes(), self.encode_run(&run)?);
        batch.put_cf(
            self.cf(CF_RUNS_BY_EXPERIMENT)?,
            keys::experiment_run_key(exp.id, &run_id),
            [],
        );
        let params = self.cf(CF_PARAMS)?;
        for (k, v) in &new.params {
            batch.put_cf(params, keys::run_key(&run_id, k), v.as_bytes());
        }
        let tags = self.cf(CF_TAGS)?;
        for (k, v) in &new.tags {
            batch.put_cf(tags, keys::run_key(&run_id, k), v.as_bytes());
        }
        self.commit(batch)?;
        self.inner.events.run(&run);
        self.alerts_after_start(&run);
        Ok(run)
    }

    pub(super) fn encode_run(&self, run: &Run) -> Result<Vec<u8>> {
        serde_json::to_vec(run).map_err(|e| Error::corrupt("run", e))
    }

    /// Ends a running run with `status`.
    pub fn end_run(&self, run: &Uuid, status: RunStatus) -> Result<Run> {
        if status == RunStatus::Running {
            return Err(Error::InvalidArgument(
                "a run ends as FINISHED, FAILED or KILLED".into(),
            ));
        }
        let _guard = self.lock_run(run);
        let mut r = self.running_run(run)?;
        r.status = status;
        r.ended_at_us = Some(now_us());
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_RUNS)?, run.as_bytes(), self.encode_run(&r)?);
        self.commit(batch)?;
        drop(_guard);
        self.inner.events.run(&r);
        self.alerts_after_end(&r);
        Ok(r)
    }
}

/// What [`Tracking::update_run`] changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RunUpdate {
    /// The new status. RUNNING reopens an ended run (MLflow's resume); an end status
    /// ends it at `ended_at_us`, or now.
    pub status: Option<RunStatus>,
    /// End time, microseconds since the epoch.
    pub ended_at_us: Option<i64>,
    /// A new name.
    pub name: Option<String>,
}

impl Tracking {
    /// Changes a run as MLflow's `runs/update` does: any status change, a new end time
    /// or name. Deleted runs are refused.
    pub fn update_run(&self, run: &Uuid, update: RunUpdate) -> Result<Run> {
        let _guard = self.lock_run(run);
        let mut r = self.writable_run(run, LogMode::Mlflow)?;
        let was = r.status;
        if let Some(name) = update.name.filter(|n| !n.is_empty()) {
            validate_value("run name", &name, &name)?;
            r.name = name;
        }
        match update.status {
            Some(RunStatus::Running) => {
                r.status = RunStatus::Running;
                r.ended_at_us = None;
            }
            Some(status) => {
                r.status = status;
                r.ended_at_us = Some(update.ended_at_us.unwrap_or_else(now_us));
            }
            None => {
                if let Some(end) = update.ended_at_us {
                    r.ended_at_us = Some(end);
                }
            }
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_RUNS)?, run.as_bytes(), self.encode_run(&r)?);
        self.commit(batch)?;
        drop(_guard);
        self.inner.events.run(&r);
        if was == RunStatus::Running && r.status != RunStatus::Running {
            self.alerts_after_end(&r);
        }
        Ok(r)
    }

    /// Marks a run deleted (hidden from searches, no more values) or restores it.
    pub fn set_run_deleted(&self, run: &Uuid, deleted: bool) -> Result<Run> {
        let _guard = self.lock_run(run);
        let mut r = self.existing_run(run)?;
        if r.deleted != deleted {
            r.deleted = deleted;
            let mut batch = WriteBatch::default();
            batch.put_cf(self.cf(CF_RUNS)?, run.as_bytes(), self.encode_run(&r)?);
            self.commit(batch)?;
        }
        Ok(r)
    }
}
