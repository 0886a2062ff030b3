//! [`TrackingScanExec`]: the execution plan reading a tracking table by key ranges.
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use uuid::Uuid;

use super::super::keys;
use super::super::{Artifact, Experiment, Run, Tracking, TrackingRef};
use super::*;
use crate::error::{Error, Result};

/// Scans one tracking table.
#[derive(Debug)]
pub(crate) struct TrackingScanExec {
    pub(super) kind: TableKind,
    pub(super) tracking: TrackingRef,
    pub(super) pushdown: Pushdown,
    pub(super) projection: Option<Vec<usize>>,
    pub(super) projected: SchemaRef,
    pub(super) limit: Option<usize>,
    pub(super) properties: Arc<PlanProperties>,
}

impl DisplayAs for TrackingScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TrackingScanExec: table={}, {}",
            self.kind.name(),
            self.pushdown
        )?;
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for TrackingScanExec {
    fn name(&self) -> &str {
        "TrackingScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let mut scan = Scan::new(
            self.kind,
            self.tracking.get()?,
            self.pushdown.clone(),
            self.limit,
        )?;
        let projection = self.projection.clone();
        let stream = futures::stream::try_unfold((), move |()| {
            let next = scan
                .next_chunk()
                .and_then(|batch| match (batch, &projection) {
                    (Some(b), Some(p)) => {
                        Ok(Some(b.project(p).map_err(|e| Error::DataFusion(e.into()))?))
                    }
                    (b, _) => Ok(b),
                });
            futures::future::ready(match next {
                Ok(Some(b)) => Ok(Some((b, ()))),
                Ok(None) => Ok(None),
                Err(e) => Err(DataFusionError::from(e)),
            })
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.projected.clone(),
            stream,
        )))
    }
}

/// A key range `[start, end)`; no end means to the end of the column family.
pub(super) type KeyRange = (Vec<u8>, Option<Vec<u8>>);

pub(super) fn prefix_range(prefix: Vec<u8>) -> KeyRange {
    let end = keys::prefix_end(&prefix);
    (prefix, end)
}

pub(super) fn point_range(key: Vec<u8>) -> KeyRange {
    let mut end = key.clone();
    end.push(0);
    (key, Some(end))
}

/// The state of one scan: which ranges are left and where to resume.
pub(super) struct Scan {
    pub(super) kind: TableKind,
    pub(super) tracking: Tracking,
    pub(super) pushdown: Pushdown,
    pub(super) ranges: Vec<KeyRange>,
    pub(super) run_filter: Option<BTreeSet<Uuid>>,
    pub(super) index: usize,
    pub(super) resume: Option<Vec<u8>>,
    pub(super) remaining: usize,
}

impl Scan {
    pub(super) fn new(
        kind: TableKind,
        tracking: Tracking,
        pushdown: Pushdown,
        limit: Option<usize>,
    ) -> Result<Self> {
        // Runs the filters select, if they select by run or experiment.
        let mut runs: Option<BTreeSet<Uuid>> = pushdown.run_ids.as_ref().map(|ids| {
            // Only the canonical spelling equals a stored id.
            ids.iter()
                .filter_map(|s| {
                    Uuid::parse_str(s)
                        .ok()
                        .filter(|u| u.hyphenated().to_string() == *s)
                })
                .collect()
        });
        if let Some(exps) = &pushdown.experiments {
            let mut of_exps = BTreeSet::new();
            for e in exps {
                of_exps.extend(tracking.runs_of_experiment(e)?);
            }
            runs = Some(match runs {
                Some(r) => r.intersection(&of_exps).copied().collect(),
                None => of_exps,
            });
        }
        let ranges = match (kind, &runs) {
            (TableKind::Experiments, _) => match &pushdown.names {
                Some(names) => names
                    .iter()
                    .map(|n| point_range(n.as_bytes().to_vec()))
                    .collect(),
                None => vec![(vec![], None)],
            },
            (_, None) => vec![(vec![], None)],
            (TableKind::Runs, Some(runs)) => runs
                .iter()
                .map(|r| point_range(r.as_bytes().to_vec()))
                .collect(),
            (TableKind::Metrics, Some(runs)) => {
                let mut out = Vec::new();
                for r in runs {
                    match &pushdown.keys {
                        Some(ks) => {
                            for k in ks {
                                let prefix = keys::metric_prefix(r, k);
                                let mut start = prefix.clone();
                                if let Some(lo) = pushdown.step_lo {
                                    start.extend_from_slice(&keys::enc_i64(lo));
                                }
                                let end = match pushdown.step_hi {
                                    Some(hi) => {
                                        let mut e = prefix.clone();
                                        e.extend_from_slice(&keys::enc_i64(hi));
                                        keys::prefix_end(&e)
                                    }
                                    None => keys::prefix_end(&prefix),
                                };
                                out.push((start, end));
                            }
                        }
                        None => out.push(prefix_range(r.as_bytes().to_vec())),
                    }
                }
                out
            }
            (TableKind::Params | TableKind::Tags | TableKind::LatestMetrics, Some(runs)) => {
                let mut out = Vec::new();
                for r in runs {
                    match &pushdown.keys {
                        Some(ks) => out.extend(ks.iter().map(|k| point_range(keys::run_key(r, k)))),
                        None => out.push(prefix_range(r.as_bytes().to_vec())),
                    }
                }
                out
            }
            (TableKind::RunInputs | TableKind::Artifacts, Some(runs)) => runs
                .iter()
                .map(|r| prefix_range(r.as_bytes().to_vec()))
                .collect(),
        };
        Ok(Self {
            kind,
            tracking,
            pushdown,
            ranges,
            run_filter: runs,
            index: 0,
            resume: None,
            remaining: limit.unwrap_or(usize::MAX),
        })
    }

    pub(super) fn next_chunk(&mut self) -> Result<Option<RecordBatch>> {
        if self.index >= self.ranges.len() || self.remaining == 0 {
            return Ok(None);
        }
        let mut rows = Rows::new(self.kind);
        let want = CHUNK_ROWS.min(self.remaining);
        let tracking = self.tracking.clone();
        let cf = tracking.cf(self.kind.cf())?;
        while self.index < self.ranges.len() && rows.len() < want {
            let (start, end) = self.ranges[self.index].clone();
            let mut it = tracking.db().raw_iterator_cf(cf);
            match &self.resume {
                Some(k) => {
                    it.seek(k);
                    if it.key() == Some(k.as_slice()) {
                        it.next();
                    }
                }
                None => it.seek(&start),
            }
            let mut full = false;
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if end.as_ref().is_some_and(|e| k >= e.as_slice()) {
                    break;
                }
                self.push_row(&mut rows, k, v)?;
                if rows.len() >= want {
                    self.resume = Some(k.to_vec());
                    full = true;
                    break;
                }
                it.next();
            }
            it.status()?;
            if !full {
                self.index += 1;
                self.resume = None;
            }
        }
        self.remaining = self.remaining.saturating_sub(rows.len());
        if rows.len() == 0 {
            return Ok(None);
        }
        let batch = RecordBatch::try_new(self.kind.schema(), rows.finish())
            .map_err(|e| Error::DataFusion(e.into()))?;
        Ok(Some(batch))
    }

    pub(super) fn run_ok(&self, run: &Uuid) -> bool {
        self.run_filter.as_ref().is_none_or(|r| r.contains(run))
    }

    pub(super) fn push_row(&mut self, rows: &mut Rows, k: &[u8], v: &[u8]) -> Result<()> {
        let corrupt = |what: &str| {
            Error::corrupt(
                format!("{what} in runbase.{}", self.kind.name()),
                "malformed key or value",
            )
        };
        match rows {
            Rows::Experiments {
                id,
                name,
                description,
                created,
            } => {
                let e: Experiment = serde_json::from_slice(v).map_err(|_| corrupt("experiment"))?;
                if self
                    .pushdown
                    .names
                    .as_ref()
                    .is_some_and(|n| !n.contains(&e.name))
                {
                    return Ok(());
                }
                id.append_value(e.id);
                name.append_value(&e.name);
                description.append_option(e.description.as_deref());
                created.append_value(e.created_at_us);
            }
            Rows::Runs(cols) => {
                let r: Run = serde_json::from_slice(v).map_err(|_| corrupt("run"))?;
                if !self.run_ok(&r.run_id) {
                    return Ok(());
                }
                cols.push(&r);
            }
            Rows::KeyValue {
                run_id,
                key,
                value,
                experiment,
            } => {
                let (run, name) = keys::decode_run_key(k).ok_or_else(|| corrupt("key"))?;
                if !self.run_ok(&run) || !self.pushdown.key_ok(name) {
                    return Ok(());
                }
                let Some(exp) = self.tracking.experiment_of_run(&run)? else {
                    return Ok(());
                };
                run_id.append_value(run.hyphenated().to_string());
                key.append_value(name);
                value.append_value(String::from_utf8_lossy(v));
                experiment.append_value(&*exp);
            }
            Rows::Metrics {
                run_id,
                key,
                step,
                ts,
                value,
            } => {
                let m = keys::decode_metric_key(k).ok_or_else(|| corrupt("metric key"))?;
                if !self.run_ok(&m.run)
                    || !self.pushdown.key_ok(m.key)
                    || !self.pushdown.step_ok(m.step)
                {
                    return Ok(());
                }
                let bits: [u8; 8] = v.try_into().map_err(|_| corrupt("metric value"))?;
                run_id.append_value(m.run.hyphenated().to_string());
                key.append_value(m.key);
                step.append_value(m.step);
                ts.append_value(m.ts_us);
                value.append_value(f64::from_bits(u64::from_le_bytes(bits)));
            }
            Rows::Latest {
                run_id,
                key,
                step,
                ts,
                value,
                experiment,
            } => {
                let (run, name) = keys::decode_run_key(k).ok_or_else(|| corrupt("key"))?;
                let (s, t, x) = keys::decode_latest(v).ok_or_else(|| corrupt("latest value"))?;
                if !self.run_ok(&run) || !self.pushdown.key_ok(name) || !self.pushdown.step_ok(s) {
                    return Ok(());
                }
                let Some(exp) = self.tracking.experiment_of_run(&run)? else {
                    return Ok(());
                };
                run_id.append_value(run.hyphenated().to_string());
                key.append_value(name);
                step.append_value(s);
                ts.append_value(t);
                value.append_value(x);
                experiment.append_value(&*exp);
            }
            Rows::Inputs {
                run_id,
                table,
                version,
            } => {
                let (run, t, ver) =
                    keys::decode_input_key(k).ok_or_else(|| corrupt("input key"))?;
                if !self.run_ok(&run) {
                    return Ok(());
                }
                run_id.append_value(run.hyphenated().to_string());
                table.append_value(t);
                version.append_value(ver);
            }
            Rows::Artifacts {
                run_id,
                path,
                size,
                sha256,
                uri,
            } => {
                let (run, p) = keys::decode_run_key(k).ok_or_else(|| corrupt("key"))?;
                if !self.run_ok(&run) {
                    return Ok(());
                }
                let a: Artifact = serde_json::from_slice(v).map_err(|_| corrupt("artifact"))?;
                run_id.append_value(run.hyphenated().to_string());
                path.append_value(p);
                size.append_value(a.size_bytes);
                sha256.append_value(&a.sha256);
                uri.append_value(&a.uri);
            }
        }
        Ok(())
    }
}
