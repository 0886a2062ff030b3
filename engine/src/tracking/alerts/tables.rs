//! `runbase.alerts` and `runbase.alert_events`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::super::{Tracking, TrackingRef};
use crate::error::{Error, Result};
use crate::system::SystemTable;

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `runbase.alerts`: every rule.
#[derive(Debug)]
pub(crate) struct AlertsTable {
    tracking: TrackingRef,
    schema: SchemaRef,
}

impl AlertsTable {
    pub(crate) fn new(tracking: &Tracking) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("experiment", DataType::Utf8, true),
            Field::new("metric", DataType::Utf8, true),
            Field::new("action", DataType::Utf8, false),
            Field::new("webhook", DataType::Utf8, true),
            Field::new("rule", DataType::Utf8, false),
            Field::new("created_at", timestamp(), false),
            Field::new("created_by", DataType::Utf8, true),
        ]));
        Self {
            tracking: tracking.downgrade(),
            schema,
        }
    }
}

#[async_trait]
impl SystemTable for AlertsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        let rules = self.tracking.get()?.alert_rules();
        let col = |f: &dyn Fn(&super::AlertInfo) -> Option<String>| {
            Arc::new(StringArray::from(
                rules.iter().map(f).collect::<Vec<Option<String>>>(),
            ))
        };
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                col(&|r| Some(r.rule.name.clone())),
                col(&|r| Some(r.rule.condition.kind().to_string())),
                col(&|r| r.rule.experiment.clone()),
                col(&|r| r.rule.condition.metric().map(str::to_string)),
                col(&|r| {
                    Some(
                        match r.rule.action {
                            super::Action::Notify => "notify",
                            super::Action::Stop => "stop",
                        }
                        .to_string(),
                    )
                }),
                col(&|r| r.rule.webhook.clone()),
                col(&|r| serde_json::to_string(&r.rule.spec).ok()),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        rules.iter().map(|r| r.created_at_us).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                col(&|r| r.created_by.clone()),
            ],
        )
        .map_err(|e| Error::DataFusion(e.into()))
    }
}

/// `runbase.alert_events`: every firing, oldest first.
#[derive(Debug)]
pub(crate) struct AlertEventsTable {
    tracking: TrackingRef,
    schema: SchemaRef,
}

impl AlertEventsTable {
    pub(crate) fn new(tracking: &Tracking) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("alert", DataType::Utf8, false),
            Field::new("run_id", DataType::Utf8, false),
            Field::new("experiment", DataType::Utf8, false),
            Field::new("fired_at", timestamp(), false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("message", DataType::Utf8, false),
            Field::new("value", DataType::Float64, true),
            Field::new("action", DataType::Utf8, false),
        ]));
        Self {
            tracking: tracking.downgrade(),
            schema,
        }
    }
}

#[async_trait]
impl SystemTable for AlertEventsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        let tracking = self.tracking.get()?;
        let events = tokio::task::spawn_blocking(move || tracking.alert_events())
            .await
            .map_err(|e| Error::Internal(format!("reading alert events: {e}")))??;
        let text = |f: &dyn Fn(&super::AlertEvent) -> String| {
            Arc::new(StringArray::from(
                events.iter().map(f).collect::<Vec<String>>(),
            ))
        };
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                text(&|e| e.alert.clone()),
                text(&|e| e.run_id.to_string()),
                text(&|e| e.experiment.clone()),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        events.iter().map(|e| e.fired_at_us).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                text(&|e| e.kind.clone()),
                text(&|e| e.message.clone()),
                Arc::new(Float64Array::from(
                    events.iter().map(|e| e.value).collect::<Vec<_>>(),
                )),
                text(&|e| e.action.clone()),
            ],
        )
        .map_err(|e| Error::DataFusion(e.into()))
    }
}

/// `runbase.alert_deliveries`: how each webhook POST ended.
#[derive(Debug)]
pub(crate) struct AlertDeliveriesTable {
    tracking: TrackingRef,
    schema: SchemaRef,
}

impl AlertDeliveriesTable {
    pub(crate) fn new(tracking: &Tracking) -> Self {
        let schema = Arc::new(Schema::new(vec![
            Field::new("alert", DataType::Utf8, false),
            Field::new("run_id", DataType::Utf8, false),
            Field::new("url", DataType::Utf8, false),
            Field::new("at", timestamp(), false),
            Field::new("attempts", DataType::Int64, false),
            Field::new("delivered", DataType::Boolean, false),
            Field::new("error", DataType::Utf8, true),
        ]));
        Self {
            tracking: tracking.downgrade(),
            schema,
        }
    }
}

#[async_trait]
impl SystemTable for AlertDeliveriesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        let tracking = self.tracking.get()?;
        let rows = tokio::task::spawn_blocking(move || tracking.webhook_deliveries())
            .await
            .map_err(|e| Error::Internal(format!("reading webhook deliveries: {e}")))??;
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|d| d.alert.clone()).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter()
                        .map(|d| d.run_id.to_string())
                        .collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|d| d.url.clone()).collect::<Vec<_>>(),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        rows.iter().map(|d| d.at_us).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from(
                    rows.iter()
                        .map(|d| i64::from(d.attempts))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(BooleanArray::from(
                    rows.iter().map(|d| d.delivered).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|d| d.error.clone()).collect::<Vec<_>>(),
                )),
            ],
        )
        .map_err(|e| Error::DataFusion(e.into()))
    }
}
