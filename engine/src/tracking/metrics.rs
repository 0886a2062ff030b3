//! Metric points: staging them in a write batch, and the latest value of a key.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;
use uuid::Uuid;

use crate::error::Result;

use super::*;

impl Tracking {
    /// Logs metric points, all or none; returns the step each point was logged at.
    pub fn log_metrics(&self, points: &[MetricPoint]) -> Result<Vec<i64>> {
        let mut batch = WriteBatch::default();
        let now = now_us();
        let steps = self.stage_metrics(points, &mut batch, now)?;
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
                self.running_run(&p.run)?;
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
            let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
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

    /// The latest (step, ts, value) of one metric of one run.
    pub fn latest(&self, run: &Uuid, key: &str) -> Result<Option<(i64, i64, f64)>> {
        let v = self
            .db()
            .get_cf(self.cf(CF_LATEST)?, keys::run_key(run, key))?;
        Ok(v.and_then(|v| keys::decode_latest(&v)))
    }
}
