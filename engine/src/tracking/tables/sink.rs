//! [`MetricsSink`]: `INSERT INTO runbase.metrics` and `COPY … FROM STDIN` into it, as
//! one atomic batch.
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::sink::DataSink;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use futures::TryStreamExt;
use uuid::Uuid;

use super::super::{MetricPoint, TrackingRef};
use super::*;
use crate::error::{Error, Result};

/// Writes an `INSERT INTO runbase.metrics` (or a `COPY`) as one atomic batch.
pub(crate) struct MetricsSink {
    pub(super) tracking: TrackingRef,
    pub(super) schema: SchemaRef,
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
                let r = super::super::parse_run_id(text)?;
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
