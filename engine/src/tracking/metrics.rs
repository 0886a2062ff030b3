//! Metric points: staging them in a write batch, and the latest value of a key.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;
use uuid::Uuid;

use crate::error::Result;

use super::*;

impl Tracking {
    /// Logs metric points to running runs, all or none; returns the step each point was
    /// logged at.
    pub fn log_metrics(&self, points: &[MetricPoint]) -> Result<Vec<i64>> {
        self.log_metrics_in(points, LogMode::Strict)
    }

    /// Logs metric points under `mode`, all or none; returns the step each point was
    /// logged at. Under [`LogMode::Mlflow`] points already stored are left out.
    pub fn log_metrics_in(&self, points: &[MetricPoint], mode: LogMode) -> Result<Vec<i64>> {
        let fresh;
        let points = match mode {
            LogMode::Strict => points,
            LogMode::Mlflow => {
                fresh = self.unseen_points(points)?;
                fresh.as_slice()
            }
        };
        if points.is_empty() {
            return Ok(vec![]);
        }
        let mut batch = WriteBatch::default();
        let now = now_us();
        let steps = self.stage_metrics(points, &mut batch, now, mode)?;
        self.commit(batch)?;
        self.inner
            .stats
            .tracking_points_written(u64::try_from(points.len()).unwrap_or(u64::MAX));
        self.alerts_after_points(points);
        self.inner.events.points(points, &steps, now, |run| {
            self.experiment_of_run(run)
                .ok()
                .flatten()
                .map(|e| e.to_string())
        });
        Ok(steps)
    }

    /// Adds metric points to `batch` after checking them, stamping those without a time
    /// with `now`; returns their steps.
    pub(super) fn stage_metrics(
        &self,
        points: &[MetricPoint],
        batch: &mut WriteBatch,
        now: i64,
        mode: LogMode,
    ) -> Result<Vec<i64>> {
        let metrics = self.cf(CF_METRICS)?;
        let latest = self.cf(CF_LATEST)?;
        let mut runs: HashSet<Uuid> = HashSet::new();
        let mut next_step: HashMap<(Uuid, &str), i64> = HashMap::new();
        let mut newest: HashMap<(Uuid, &str), (i64, i64, f64)> = HashMap::new();
        let mut steps = Vec::with_capacity(points.len());
        let mut rollups = rollup::Pending::default();
        let mut last_key: Option<&str> = None;
        for p in points {
            if last_key != Some(p.key.as_str()) {
                validate_key("metric", &p.key)?;
                last_key = Some(&p.key);
            }
            if !runs.contains(&p.run) {
                self.writable_run(&p.run, mode)?;
                runs.insert(p.run);
            }
            let step = match p.step {
                Some(s) => s,
                None => match next_step.get(&(p.run, p.key.as_str())) {
                    Some(s) => *s,
                    None => match self.latest(&p.run, &p.key)? {
                        Some((s, _, _)) => s.saturating_add(1),
                        None => 0,
                    },
                },
            };
            let entry = next_step.entry((p.run, p.key.as_str())).or_insert(step);
            *entry = (*entry).max(step.saturating_add(1));
            let ts = p.ts_us.unwrap_or(now);
            let seq = match mode {
                LogMode::Strict => self.inner.seq.fetch_add(1, Ordering::Relaxed),
                // The value is the sequence: the same point logged again has the same key.
                LogMode::Mlflow => p.value.to_bits(),
            };
            batch.put_cf(
                metrics,
                keys::metric_key(&p.run, &p.key, step, ts, seq),
                p.value.to_bits().to_le_bytes(),
            );
            rollups.add(
                p.run,
                p.key.as_str(),
                series::SeriesPoint {
                    step,
                    ts_us: ts,
                    value: p.value,
                },
            );
            // One merge per run and key per batch: the newest point of the batch.
            match newest.entry((p.run, p.key.as_str())) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((step, ts, p.value));
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let (s, t, _) = *o.get();
                    if (step, ts) >= (s, t) {
                        o.insert((step, ts, p.value));
                    }
                }
            }
            steps.push(step);
        }
        rollups.stage(self, batch)?;
        for ((run, key), (step, ts, value)) in newest {
            batch.merge_cf(
                latest,
                keys::run_key(&run, key),
                keys::latest_value(step, ts, value),
            );
        }
        Ok(steps)
    }

    /// The points of `points` not stored yet, nor repeated earlier in `points` (each has
    /// a step and a time: MLflow's points always do); others are kept as they are.
    fn unseen_points(&self, points: &[MetricPoint]) -> Result<Vec<MetricPoint>> {
        let cf = self.cf(CF_METRICS)?;
        let keys: Vec<Option<Vec<u8>>> = points
            .iter()
            .map(|p| match (p.step, p.ts_us) {
                (Some(step), Some(ts)) => Some(keys::metric_key(
                    &p.run,
                    &p.key,
                    step,
                    ts,
                    p.value.to_bits(),
                )),
                _ => None,
            })
            .collect();
        let found = self
            .db()
            .multi_get_cf(keys.iter().flatten().map(|k| (cf, k.as_slice())));
        let mut found = found.into_iter();
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(points.len());
        for (p, key) in points.iter().zip(&keys) {
            match key {
                Some(key) => {
                    let stored = found.next().transpose()?.flatten().is_some();
                    if !stored && seen.insert(key.as_slice()) {
                        out.push(p.clone());
                    }
                }
                None => out.push(p.clone()),
            }
        }
        Ok(out)
    }

    /// The latest (step, ts, value) of one metric of one run.
    pub fn latest(&self, run: &Uuid, key: &str) -> Result<Option<(i64, i64, f64)>> {
        let v = self
            .db()
            .get_cf(self.cf(CF_LATEST)?, keys::run_key(run, key))?;
        Ok(v.and_then(|v| keys::decode_latest(&v)))
    }
}
