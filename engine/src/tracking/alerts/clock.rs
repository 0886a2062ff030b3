//! The clock conditions (`hung`, `budget`): checked every [`CLOCK_TICK`] over the
//! RUNNING runs kept in memory, which are filled from the catalog at the first check.

use tracing::warn;
use uuid::Uuid;

use super::*;

impl Tracking {
    /// Fills the clocks from the RUNNING runs on disk (their last point from the latest
    /// values), the first time a clock condition is checked.
    fn seed_clocks(&self) -> Result<()> {
        // Time the server was down is not silence: a run's last point counts as no earlier
        // than the store's opening.
        let opened = self.alerts().opened_at_us;
        let mut seeded = HashMap::new();
        let latest = self.cf(CF_LATEST)?;
        let mut it = self.db().raw_iterator_cf(self.cf(CF_RUNS)?);
        it.seek_to_first();
        while let Some(v) = it.value() {
            if let Ok(run) = serde_json::from_slice::<Run>(v)
                && run.status == RunStatus::Running
            {
                let mut last = run.started_at_us;
                let prefix = run.run_id.as_bytes().to_vec();
                let mut points = self.db().raw_iterator_cf(latest);
                points.seek(&prefix);
                while let (Some(k), Some(v)) = (points.key(), points.value()) {
                    if !k.starts_with(&prefix) {
                        break;
                    }
                    if let Some((_, ts, _)) = keys::decode_latest(v) {
                        last = last.max(ts);
                    }
                    points.next();
                }
                seeded.insert(
                    run.run_id,
                    Clock {
                        experiment: run.experiment.as_str().into(),
                        started_at_us: run.started_at_us,
                        last_point_us: last.clamp(opened, now_us()),
                    },
                );
            }
            it.next();
        }
        it.status()?;
        let mut clocks = lock(&self.alerts().clocks);
        for (run, clock) in seeded {
            let kept = clocks.entry(run).or_insert_with(|| clock.clone());
            kept.last_point_us = kept.last_point_us.max(clock.last_point_us);
        }
        Ok(())
    }

    /// Checks the clock conditions at `now_us`: what the database's ticker calls every
    /// [`CLOCK_TICK`] (blocking: RocksDB reads and writes).
    pub fn check_alert_clocks(&self, now_us: i64) -> Result<()> {
        let alerts = self.alerts();
        if !alerts.timed.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !alerts.seeded.swap(true, Ordering::SeqCst)
            && let Err(e) = self.seed_clocks()
        {
            alerts.seeded.store(false, Ordering::SeqCst);
            return Err(e);
        }
        let rules = self.rules();
        let clocks: Vec<(Uuid, Clock)> = lock(&alerts.clocks)
            .iter()
            .map(|(r, c)| (*r, c.clone()))
            .collect();
        for (run, clock) in clocks {
            let silent = now_us.saturating_sub(clock.last_point_us).max(0) as f64 / 1e6;
            let running = now_us.saturating_sub(clock.started_at_us).max(0) as f64 / 1e6;
            let due: Vec<&AlertInfo> = rules
                .iter()
                .filter(|info| info.rule.watches(&clock.experiment))
                .filter(|info| match info.rule.condition {
                    Condition::Hung { seconds, .. } => silent > seconds,
                    Condition::Budget { seconds } => running > seconds,
                    _ => false,
                })
                .collect();
            if due.is_empty() {
                continue;
            }
            // The clock may outlive its run (ended while the clocks were seeded).
            if !self
                .run(&run)?
                .is_some_and(|r| r.status == RunStatus::Running)
            {
                lock(&alerts.clocks).remove(&run);
                continue;
            }
            for info in due {
                let rule = &info.rule;
                match rule.condition {
                    Condition::Hung {
                        mark_failed_after, ..
                    } => {
                        let message = format!("no new metric for {silent:.0} s while RUNNING");
                        self.fire(rule, &run, &clock.experiment, message, Some(silent));
                        let Some(grace) = mark_failed_after else {
                            continue;
                        };
                        // The grace counts from when the alert fired (or, for one that
                        // fired before a restart, from the first check after it).
                        let since = *lock(&alerts.hung_since)
                            .entry((rule.name.clone(), run))
                            .or_insert(now_us);
                        if now_us.saturating_sub(since) as f64 / 1e6 >= grace {
                            self.fail_silent_run(&run, &rule.name, silent);
                        }
                    }
                    Condition::Budget { seconds } => {
                        let message =
                            format!("RUNNING for {running:.0} s, past its budget of {seconds} s");
                        self.fire(rule, &run, &clock.experiment, message, Some(running));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Marks a run that stayed silent FAILED, with the reason as a tag.
    fn fail_silent_run(&self, run: &Uuid, alert: &str, silent: f64) {
        let reason = format!("no metric for {silent:.0} s (alert {alert})");
        // A TRAIN of the run stops too.
        if let Some(flag) = lock(&self.alerts().stop_flags).get(run) {
            flag.store(true, Ordering::SeqCst);
        }
        // Ended first (it checks the run is still RUNNING under the run's lock), so a run
        // that ended meanwhile is left as it is, untagged.
        match self.end_run(run, RunStatus::Failed) {
            Ok(_) => {
                warn!(%run, alert, "run marked FAILED: no metric");
                if let Err(e) = self.set_tags(&[(*run, FAILURE_REASON_TAG.to_string(), reason)]) {
                    warn!(%run, alert, %e, "could not tag a run marked FAILED");
                }
            }
            Err(Error::InvalidState(_)) => {
                lock(&self.alerts().clocks).remove(run);
            }
            Err(e) => warn!(%run, alert, %e, "could not mark a silent run FAILED"),
        }
    }
}
