//! The tracking tables of the `runbase` schema as DataFusion providers.
//!
//! Filters on `run_id`, `key`, `experiment` (and `name` of experiments) and ranges of `step`
//! are pushed into the scan and become RocksDB range scans; `EXPLAIN` shows them on
//! `TrackingScanExec`. The scan applies them exactly (each row is checked against them as
//! it is read), so DataFusion drops them from the plan and can push a `LIMIT` down too.
//! Rows stream out in chunks.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ScalarValue, project_schema};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::TryStreamExt;
use uuid::Uuid;

use super::keys;
use super::{
    Artifact, CF_ARTIFACTS, CF_EXPERIMENTS, CF_INPUTS, CF_LATEST, CF_METRICS, CF_PARAMS, CF_RUNS,
    CF_TAGS, Experiment, MetricPoint, Run, Tracking, TrackingRef,
};
use crate::error::{Error, Result};

/// Rows per batch a scan emits.
const CHUNK_ROWS: usize = 8192;

/// The tracking tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableKind {
    Experiments,
    Runs,
    Params,
    Tags,
    Metrics,
    LatestMetrics,
    RunInputs,
    Artifacts,
}

impl TableKind {
    pub(crate) const ALL: [TableKind; 8] = [
        TableKind::Experiments,
        TableKind::Runs,
        TableKind::Params,
        TableKind::Tags,
        TableKind::Metrics,
        TableKind::LatestMetrics,
        TableKind::RunInputs,
        TableKind::Artifacts,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            TableKind::Experiments => "experiments",
            TableKind::Runs => "runs",
            TableKind::Params => "params",
            TableKind::Tags => "tags",
            TableKind::Metrics => "metrics",
            TableKind::LatestMetrics => "latest_metrics",
            TableKind::RunInputs => "run_inputs",
            TableKind::Artifacts => "artifacts",
        }
    }

    fn cf(self) -> &'static str {
        match self {
            TableKind::Experiments => CF_EXPERIMENTS,
            TableKind::Runs => CF_RUNS,
            TableKind::Params => CF_PARAMS,
            TableKind::Tags => CF_TAGS,
            TableKind::Metrics => CF_METRICS,
            TableKind::LatestMetrics => CF_LATEST,
            TableKind::RunInputs => CF_INPUTS,
            TableKind::Artifacts => CF_ARTIFACTS,
        }
    }

    fn schema(self) -> SchemaRef {
        let text = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
        let int = |n: &str, null: bool| Field::new(n, DataType::Int64, null);
        let ts = |n: &str, null: bool| Field::new(n, timestamp_type(), null);
        let fields = match self {
            TableKind::Experiments => vec![
                int("experiment_id", false),
                text("name", false),
                text("description", true),
                ts("created_at", false),
            ],
            TableKind::Runs => vec![
                text("run_id", false),
                text("experiment", false),
                text("name", false),
                text("status", false),
                text("parent_run_id", true),
                text("kind", false),
                ts("started_at", false),
                ts("ended_at", true),
                text("user_name", true),
                text("source", true),
            ],
            TableKind::Params | TableKind::Tags => vec![
                text("run_id", false),
                text("key", false),
                text("value", false),
                text("experiment", false),
            ],
            TableKind::Metrics => vec![
                text("run_id", false),
                text("key", false),
                int("step", true),
                ts("ts", true),
                Field::new("value", DataType::Float64, true),
            ],
            TableKind::LatestMetrics => vec![
                text("run_id", false),
                text("key", false),
                int("step", false),
                ts("ts", false),
                Field::new("value", DataType::Float64, false),
                text("experiment", false),
            ],
            TableKind::RunInputs => vec![
                text("run_id", false),
                text("table_name", false),
                int("table_version", false),
            ],
            TableKind::Artifacts => vec![
                text("run_id", false),
                text("path", false),
                int("size_bytes", false),
                text("sha256", false),
                text("uri", false),
            ],
        };
        Arc::new(Schema::new(fields))
    }

    /// Columns whose filters this table's scan narrows by.
    fn pushable(self, column: &str) -> bool {
        match column {
            "run_id" => self != TableKind::Experiments,
            "key" => matches!(
                self,
                TableKind::Params | TableKind::Tags | TableKind::Metrics | TableKind::LatestMetrics
            ),
            "step" => matches!(self, TableKind::Metrics | TableKind::LatestMetrics),
            "experiment" => matches!(
                self,
                TableKind::Runs | TableKind::Params | TableKind::Tags | TableKind::LatestMetrics
            ),
            "name" => self == TableKind::Experiments,
            _ => false,
        }
    }

    /// The function to use instead of writing this table directly.
    fn write_hint(self) -> &'static str {
        match self {
            TableKind::Experiments => "create_experiment()",
            TableKind::Runs => "start_run() and end_run()",
            TableKind::Params => "log_param() or log_params()",
            TableKind::Tags => "set_tag()",
            TableKind::Metrics | TableKind::LatestMetrics => {
                "log_metric() or INSERT INTO runbase.metrics"
            }
            TableKind::RunInputs => "log_input()",
            TableKind::Artifacts => "log_artifact()",
        }
    }
}

/// The Arrow type of `timestamptz` columns.
pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// What the filters of a scan pin down. `None` means unconstrained.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Pushdown {
    run_ids: Option<BTreeSet<String>>,
    keys: Option<BTreeSet<String>>,
    experiments: Option<BTreeSet<String>>,
    names: Option<BTreeSet<String>>,
    step_lo: Option<i64>,
    step_hi: Option<i64>,
}

fn intersect(slot: &mut Option<BTreeSet<String>>, values: BTreeSet<String>) {
    *slot = Some(match slot.take() {
        Some(old) => old.intersection(&values).cloned().collect(),
        None => values,
    });
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        _ => None,
    }
}

fn literal_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s.clone()),
        _ => None,
    }
}

fn literal_int(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Int64(Some(x)) => Some(*x),
            ScalarValue::Int32(Some(x)) => Some(i64::from(*x)),
            ScalarValue::Int16(Some(x)) => Some(i64::from(*x)),
            ScalarValue::Int8(Some(x)) => Some(i64::from(*x)),
            ScalarValue::UInt32(Some(x)) => Some(i64::from(*x)),
            _ => None,
        },
        Expr::Cast(c) => literal_int(&c.expr),
        _ => None,
    }
}

/// The column and the values a disjunction of equalities on one text column allows:
/// `c = 'a' OR c = 'b' OR c IN ('d')`.
fn equality_values(table: TableKind, e: &Expr) -> Option<(&str, BTreeSet<String>)> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let (col, lit) = match (column_name(left), column_name(right)) {
                (Some(c), None) => (c, right.as_ref()),
                (None, Some(c)) => (c, left.as_ref()),
                _ => return None,
            };
            (table.pushable(col) && col != "step").then_some(())?;
            Some((col, BTreeSet::from([literal_text(lit)?])))
        }
        Expr::InList(list) if !list.negated => {
            let col = column_name(&list.expr)?;
            (table.pushable(col) && col != "step").then_some(())?;
            let values: Option<BTreeSet<String>> = list.list.iter().map(literal_text).collect();
            Some((col, values?))
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let (a, mut va) = equality_values(table, left)?;
            let (b, vb) = equality_values(table, right)?;
            (a == b).then_some(())?;
            va.extend(vb);
            Some((a, va))
        }
        _ => None,
    }
}

impl Pushdown {
    /// Narrows by `filter` if it is one this table pushes; returns whether it was.
    fn add(&mut self, table: TableKind, filter: &Expr) -> bool {
        if let Some((col, values)) = equality_values(table, filter) {
            self.add_values(col, values);
            return true;
        }
        match filter {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (col, lit, op) = match (column_name(left), column_name(right)) {
                    (Some(c), None) => (c, right.as_ref(), *op),
                    (None, Some(c)) => match op.swap() {
                        Some(swapped) => (c, left.as_ref(), swapped),
                        None => return false,
                    },
                    _ => return false,
                };
                if !table.pushable(col) {
                    return false;
                }
                if col == "step" {
                    let Some(v) = literal_int(lit) else {
                        return false;
                    };
                    let (lo, hi) = match op {
                        Operator::Eq => (Some(v), Some(v)),
                        Operator::Gt => (v.checked_add(1), None),
                        Operator::GtEq => (Some(v), None),
                        Operator::Lt => (None, v.checked_sub(1)),
                        Operator::LtEq => (None, Some(v)),
                        _ => return false,
                    };
                    if let Some(lo) = lo {
                        self.step_lo = Some(self.step_lo.map_or(lo, |o| o.max(lo)));
                    }
                    if let Some(hi) = hi {
                        self.step_hi = Some(self.step_hi.map_or(hi, |o| o.min(hi)));
                    }
                    return true;
                }
                if op != Operator::Eq {
                    return false;
                }
                let Some(v) = literal_text(lit) else {
                    return false;
                };
                self.add_values(col, BTreeSet::from([v]));
                true
            }
            Expr::InList(list) if !list.negated => {
                let Some(col) = column_name(&list.expr) else {
                    return false;
                };
                if !table.pushable(col) || col == "step" {
                    return false;
                }
                let values: Option<BTreeSet<String>> = list.list.iter().map(literal_text).collect();
                let Some(values) = values else {
                    return false;
                };
                self.add_values(col, values);
                true
            }
            Expr::Between(b) if !b.negated && column_name(&b.expr) == Some("step") => {
                if !table.pushable("step") {
                    return false;
                }
                let (Some(lo), Some(hi)) = (literal_int(&b.low), literal_int(&b.high)) else {
                    return false;
                };
                self.step_lo = Some(self.step_lo.map_or(lo, |o| o.max(lo)));
                self.step_hi = Some(self.step_hi.map_or(hi, |o| o.min(hi)));
                true
            }
            _ => false,
        }
    }

    fn add_values(&mut self, col: &str, values: BTreeSet<String>) {
        let slot = match col {
            "run_id" => &mut self.run_ids,
            "key" => &mut self.keys,
            "experiment" => &mut self.experiments,
            _ => &mut self.names,
        };
        intersect(slot, values);
    }

    fn step_ok(&self, step: i64) -> bool {
        self.step_lo.is_none_or(|lo| step >= lo) && self.step_hi.is_none_or(|hi| step <= hi)
    }

    fn key_ok(&self, key: &str) -> bool {
        self.keys.as_ref().is_none_or(|k| k.contains(key))
    }
}

impl fmt::Display for Pushdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let list = |name: &str, s: &Option<BTreeSet<String>>| {
            s.as_ref().map(|v| {
                format!(
                    "{name}=[{}]",
                    v.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
        };
        parts.extend(list("experiment", &self.experiments));
        parts.extend(list("name", &self.names));
        parts.extend(list("run_id", &self.run_ids));
        parts.extend(list("key", &self.keys));
        if self.step_lo.is_some() || self.step_hi.is_some() {
            let b = |v: Option<i64>| v.map_or("∞".to_string(), |v| v.to_string());
            parts.push(format!("step=[{}, {}]", b(self.step_lo), b(self.step_hi)));
        }
        if parts.is_empty() {
            f.write_str("full scan")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// One tracking table.
#[derive(Debug)]
pub(crate) struct TrackingTable {
    kind: TableKind,
    tracking: TrackingRef,
    schema: SchemaRef,
}

impl TrackingTable {
    pub(crate) fn new(kind: TableKind, tracking: &Tracking) -> Self {
        Self {
            kind,
            tracking: tracking.downgrade(),
            schema: kind.schema(),
        }
    }
}

#[async_trait]
impl TableProvider for TrackingTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if Pushdown::default().add(self.kind, f) {
                    // The scan applies these filters exactly (see `Scan::push_row`).
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut pushdown = Pushdown::default();
        for f in filters {
            pushdown.add(self.kind, f);
        }
        let projected = project_schema(&self.schema, projection)?;
        Ok(Arc::new(TrackingScanExec {
            kind: self.kind,
            tracking: self.tracking.clone(),
            pushdown,
            projection: projection.cloned(),
            limit,
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(projected.clone()),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
            projected,
        }))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if self.kind != TableKind::Metrics || insert_op != InsertOp::Append {
            return Err(Error::ReadOnly(format!(
                "runbase.{} cannot be written directly; use {}",
                self.kind.name(),
                self.kind.write_hint()
            ))
            .into());
        }
        let sink = MetricsSink {
            tracking: self.tracking.clone(),
            schema: self.schema.clone(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// Scans one tracking table.
#[derive(Debug)]
pub(crate) struct TrackingScanExec {
    kind: TableKind,
    tracking: TrackingRef,
    pushdown: Pushdown,
    projection: Option<Vec<usize>>,
    projected: SchemaRef,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
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
type KeyRange = (Vec<u8>, Option<Vec<u8>>);

fn prefix_range(prefix: Vec<u8>) -> KeyRange {
    let end = keys::prefix_end(&prefix);
    (prefix, end)
}

fn point_range(key: Vec<u8>) -> KeyRange {
    let mut end = key.clone();
    end.push(0);
    (key, Some(end))
}

/// The state of one scan: which ranges are left and where to resume.
struct Scan {
    kind: TableKind,
    tracking: Tracking,
    pushdown: Pushdown,
    ranges: Vec<KeyRange>,
    run_filter: Option<BTreeSet<Uuid>>,
    index: usize,
    resume: Option<Vec<u8>>,
    remaining: usize,
}

impl Scan {
    fn new(
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

    fn next_chunk(&mut self) -> Result<Option<RecordBatch>> {
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

    fn run_ok(&self, run: &Uuid) -> bool {
        self.run_filter.as_ref().is_none_or(|r| r.contains(run))
    }

    fn push_row(&mut self, rows: &mut Rows, k: &[u8], v: &[u8]) -> Result<()> {
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

fn ts_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

#[derive(Default)]
struct RunColumns {
    run_id: StringBuilder,
    experiment: StringBuilder,
    name: StringBuilder,
    status: StringBuilder,
    parent: StringBuilder,
    kind: StringBuilder,
    started: Option<TimestampMicrosecondBuilder>,
    ended: Option<TimestampMicrosecondBuilder>,
    user: StringBuilder,
    source: StringBuilder,
    len: usize,
}

impl RunColumns {
    fn push(&mut self, r: &Run) {
        self.run_id.append_value(r.run_id.hyphenated().to_string());
        self.experiment.append_value(&r.experiment);
        self.name.append_value(&r.name);
        self.status.append_value(r.status.as_str());
        self.parent
            .append_option(r.parent_run_id.map(|p| p.hyphenated().to_string()));
        self.kind.append_value(&r.kind);
        self.started
            .get_or_insert_with(ts_builder)
            .append_value(r.started_at_us);
        self.ended
            .get_or_insert_with(ts_builder)
            .append_option(r.ended_at_us);
        self.user.append_option(r.user_name.as_deref());
        self.source.append_option(r.source.as_deref());
        self.len += 1;
    }
}

/// Column builders of one chunk.
enum Rows {
    Experiments {
        id: Int64Builder,
        name: StringBuilder,
        description: StringBuilder,
        created: TimestampMicrosecondBuilder,
    },
    Runs(Box<RunColumns>),
    KeyValue {
        run_id: StringBuilder,
        key: StringBuilder,
        value: StringBuilder,
        experiment: StringBuilder,
    },
    Metrics {
        run_id: StringBuilder,
        key: StringBuilder,
        step: Int64Builder,
        ts: TimestampMicrosecondBuilder,
        value: Float64Builder,
    },
    Latest {
        run_id: StringBuilder,
        key: StringBuilder,
        step: Int64Builder,
        ts: TimestampMicrosecondBuilder,
        value: Float64Builder,
        experiment: StringBuilder,
    },
    Inputs {
        run_id: StringBuilder,
        table: StringBuilder,
        version: Int64Builder,
    },
    Artifacts {
        run_id: StringBuilder,
        path: StringBuilder,
        size: Int64Builder,
        sha256: StringBuilder,
        uri: StringBuilder,
    },
}

impl Rows {
    fn new(kind: TableKind) -> Self {
        match kind {
            TableKind::Experiments => Rows::Experiments {
                id: Int64Builder::new(),
                name: StringBuilder::new(),
                description: StringBuilder::new(),
                created: ts_builder(),
            },
            TableKind::Runs => Rows::Runs(Box::default()),
            TableKind::Params | TableKind::Tags => Rows::KeyValue {
                run_id: StringBuilder::new(),
                key: StringBuilder::new(),
                value: StringBuilder::new(),
                experiment: StringBuilder::new(),
            },
            TableKind::Metrics => Rows::Metrics {
                run_id: StringBuilder::new(),
                key: StringBuilder::new(),
                step: Int64Builder::new(),
                ts: ts_builder(),
                value: Float64Builder::new(),
            },
            TableKind::LatestMetrics => Rows::Latest {
                run_id: StringBuilder::new(),
                key: StringBuilder::new(),
                step: Int64Builder::new(),
                ts: ts_builder(),
                value: Float64Builder::new(),
                experiment: StringBuilder::new(),
            },
            TableKind::RunInputs => Rows::Inputs {
                run_id: StringBuilder::new(),
                table: StringBuilder::new(),
                version: Int64Builder::new(),
            },
            TableKind::Artifacts => Rows::Artifacts {
                run_id: StringBuilder::new(),
                path: StringBuilder::new(),
                size: Int64Builder::new(),
                sha256: StringBuilder::new(),
                uri: StringBuilder::new(),
            },
        }
    }

    fn len(&self) -> usize {
        use datafusion::arrow::array::ArrayBuilder;
        match self {
            Rows::Experiments { id, .. } => id.len(),
            Rows::Runs(c) => c.len,
            Rows::KeyValue { run_id, .. }
            | Rows::Metrics { run_id, .. }
            | Rows::Latest { run_id, .. }
            | Rows::Inputs { run_id, .. }
            | Rows::Artifacts { run_id, .. } => run_id.len(),
        }
    }

    fn finish(self) -> Vec<ArrayRef> {
        fn a(b: &mut impl datafusion::arrow::array::ArrayBuilder) -> ArrayRef {
            b.finish()
        }
        match self {
            Rows::Experiments {
                mut id,
                mut name,
                mut description,
                mut created,
            } => {
                vec![
                    a(&mut id),
                    a(&mut name),
                    a(&mut description),
                    a(&mut created),
                ]
            }
            Rows::Runs(mut c) => {
                let mut started = c.started.take().unwrap_or_else(ts_builder);
                let mut ended = c.ended.take().unwrap_or_else(ts_builder);
                vec![
                    a(&mut c.run_id),
                    a(&mut c.experiment),
                    a(&mut c.name),
                    a(&mut c.status),
                    a(&mut c.parent),
                    a(&mut c.kind),
                    a(&mut started),
                    a(&mut ended),
                    a(&mut c.user),
                    a(&mut c.source),
                ]
            }
            Rows::KeyValue {
                mut run_id,
                mut key,
                mut value,
                mut experiment,
            } => {
                vec![
                    a(&mut run_id),
                    a(&mut key),
                    a(&mut value),
                    a(&mut experiment),
                ]
            }
            Rows::Metrics {
                mut run_id,
                mut key,
                mut step,
                mut ts,
                mut value,
            } => {
                vec![
                    a(&mut run_id),
                    a(&mut key),
                    a(&mut step),
                    a(&mut ts),
                    a(&mut value),
                ]
            }
            Rows::Latest {
                mut run_id,
                mut key,
                mut step,
                mut ts,
                mut value,
                mut experiment,
            } => vec![
                a(&mut run_id),
                a(&mut key),
                a(&mut step),
                a(&mut ts),
                a(&mut value),
                a(&mut experiment),
            ],
            Rows::Inputs {
                mut run_id,
                mut table,
                mut version,
            } => {
                vec![a(&mut run_id), a(&mut table), a(&mut version)]
            }
            Rows::Artifacts {
                mut run_id,
                mut path,
                mut size,
                mut sha256,
                mut uri,
            } => {
                vec![
                    a(&mut run_id),
                    a(&mut path),
                    a(&mut size),
                    a(&mut sha256),
                    a(&mut uri),
                ]
            }
        }
    }
}

/// Writes an `INSERT INTO runbase.metrics` (or a `COPY`) as one atomic batch.
pub(crate) struct MetricsSink {
    tracking: TrackingRef,
    schema: SchemaRef,
}

impl fmt::Debug for MetricsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MetricsSink")
    }
}

impl DisplayAs for MetricsSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MetricsSink")
    }
}

/// Metric points from a batch with the columns of `runbase.metrics`.
pub(crate) fn points_from_batch(batch: &RecordBatch, out: &mut Vec<MetricPoint>) -> Result<()> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
    let col = |name: &str, ty: &DataType| -> Result<ArrayRef> {
        let c = batch
            .column_by_name(name)
            .ok_or_else(|| Error::InvalidArgument(format!("column \"{name}\" is missing")))?;
        cast(c, ty).map_err(|e| Error::DataFusion(e.into()))
    };
    let run_ids = col("run_id", &DataType::Utf8)?;
    let run_ids = run_ids.as_string::<i32>();
    let key_col = col("key", &DataType::Utf8)?;
    let key_col = key_col.as_string::<i32>();
    let steps = col("step", &DataType::Int64)?;
    let steps = steps.as_primitive::<Int64Type>();
    let ts = col("ts", &timestamp_type())?;
    let ts = ts.as_primitive::<TimestampMicrosecondType>();
    let values = col("value", &DataType::Float64)?;
    let values = values.as_primitive::<Float64Type>();
    let mut last_run: Option<(String, Uuid)> = None;
    for i in 0..batch.num_rows() {
        if run_ids.is_null(i) {
            return Err(Error::NullValue("metric run_id must not be null".into()));
        }
        if key_col.is_null(i) {
            return Err(Error::NullValue("metric key must not be null".into()));
        }
        if values.is_null(i) {
            return Err(Error::NullValue(format!(
                "metric \"{}\" has a null value",
                key_col.value(i)
            )));
        }
        let text = run_ids.value(i);
        let run = match &last_run {
            Some((t, r)) if t == text => *r,
            _ => {
                let r = super::parse_run_id(text)?;
                last_run = Some((text.to_string(), r));
                r
            }
        };
        out.push(MetricPoint {
            run,
            key: key_col.value(i).to_string(),
            step: (!steps.is_null(i)).then(|| steps.value(i)),
            ts_us: (!ts.is_null(i)).then(|| ts.value(i)),
            value: values.value(i),
        });
    }
    Ok(())
}

#[async_trait]
impl DataSink for MetricsSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let batches: Vec<RecordBatch> = data.try_collect().await?;
        let mut points = Vec::new();
        for b in &batches {
            points_from_batch(b, &mut points)?;
        }
        self.tracking.get()?.log_metrics(&points)?;
        Ok(points.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn filters_on_run_key_and_step_are_pushed() {
        let mut p = Pushdown::default();
        assert!(p.add(TableKind::Metrics, &col("run_id").eq(lit("a"))));
        assert!(p.add(TableKind::Metrics, &lit("loss").eq(col("key"))));
        assert!(p.add(TableKind::Metrics, &col("step").gt_eq(lit(5i64))));
        assert!(p.add(TableKind::Metrics, &col("step").lt(lit(10i64))));
        assert!(!p.add(TableKind::Metrics, &col("value").gt(lit(1.0))));
        assert!(!p.add(TableKind::Metrics, &col("experiment").eq(lit("x"))));
        assert_eq!(p.to_string(), "run_id=[a], key=[loss], step=[5, 9]");
        // A second equality on the same column intersects.
        assert!(p.add(
            TableKind::Metrics,
            &col("key").in_list(vec![lit("acc"), lit("loss")], false)
        ));
        assert_eq!(p.keys, Some(BTreeSet::from(["loss".to_string()])));
    }
}
