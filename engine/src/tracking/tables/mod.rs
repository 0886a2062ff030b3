//! The tracking tables of the `runbase` schema as DataFusion providers.
//!
//! Filters on `run_id`, `key`, `experiment` (and `name` of experiments) and ranges of `step`
//! are pushed into the scan and become RocksDB range scans; `EXPLAIN` shows them on
//! `TrackingScanExec`. The scan applies them exactly (each row is checked against them as
//! it is read), so DataFusion drops them from the plan and can push a `LIMIT` down too.
//! Rows stream out in chunks.
//!
//! Layout: this file holds the table kinds, their schemas and the [`TableProvider`];
//! `pushdown` the filters a scan takes, `scan` the execution plan, `rows` the batch
//! builders, `sink` writes into `runbase.metrics`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::project_schema;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};

use super::{
    CF_ARTIFACTS, CF_EXPERIMENTS, CF_INPUTS, CF_LATEST, CF_METRICS, CF_PARAMS, CF_RUNS, CF_TAGS,
    Tracking, TrackingRef,
};
use crate::error::Error;

mod pushdown;
mod rows;
mod scan;
mod sink;

use pushdown::*;
use rows::*;
use scan::*;
pub(crate) use sink::*;

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

/// One tracking table.
#[derive(Debug)]
pub(crate) struct TrackingTable {
    pub(super) kind: TableKind,
    pub(super) tracking: TrackingRef,
    pub(super) schema: SchemaRef,
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
        // Every column nullable, so DataFusion's own NOT NULL check (an error known only
        // by its text) passes and `points_from_batch` refuses a NULL with 22004, as COPY.
        let schema = Arc::new(crate::storage::nullable(&self.schema));
        let sink = MetricsSink {
            tracking: self.tracking.clone(),
            schema,
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};
    use std::collections::BTreeSet;

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
