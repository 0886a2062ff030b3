//! Streamed writes: rows go to Parquet files as they arrive and are committed once, at the
//! end, so a load of any size holds only a few batches and the file being written.
//!
//! deltalake writes from a DataFusion plan; [`stream_plan`] wraps a one-shot stream of
//! batches as such a plan. The stream is checked row by row on its way ([`Conform`]): the
//! first error (a NULL in a NOT NULL column, a value that does not cast) is kept, so the
//! statement fails with it and not with deltalake's wrapping of it.

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{StreamExt, TryStreamExt, stream};

use super::conform_batch;
use crate::error::{Error, Result};

/// The size at which a streamed write closes one Parquet file and starts the next. Each
/// file is built in memory before it is stored, so this bounds what a load holds.
pub(crate) const TARGET_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// One stream, handed out once.
struct OnceStream {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for OnceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnceStream").finish_non_exhaustive()
    }
}

impl PartitionStream for OnceStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match taken {
            Some(stream) => stream,
            None => Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                stream::once(async {
                    Err(DataFusionError::Internal(
                        "a streamed write's input was read twice".into(),
                    ))
                }),
            )),
        }
    }
}

/// A logical plan that yields `stream` (once).
pub(crate) fn stream_plan(stream: SendableRecordBatchStream) -> Result<LogicalPlan> {
    let schema = stream.schema();
    let partition = Arc::new(OnceStream {
        schema: schema.clone(),
        stream: Mutex::new(Some(stream)),
    });
    let table = StreamingTable::try_new(schema, vec![partition])?;
    Ok(LogicalPlanBuilder::scan("input", provider_as_source(Arc::new(table)), None)?.build()?)
}

/// A stream of batches cast onto a table's schema, counting rows and keeping the first
/// error.
pub(crate) struct Conform {
    /// The conformed stream, starting with its first non-empty batch; `None` when the
    /// input had no rows.
    pub stream: Option<SendableRecordBatchStream>,
    /// Rows passed so far.
    pub rows: Arc<std::sync::atomic::AtomicU64>,
    /// The first error the stream met, as runbase's error.
    pub error: Arc<Mutex<Option<Error>>>,
}

impl Conform {
    /// Conforms `input` to `schema`, waiting for its first non-empty batch (so an input of
    /// no rows commits nothing).
    pub async fn new(mut input: SendableRecordBatchStream, schema: SchemaRef) -> Result<Self> {
        let rows = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let error: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let first = loop {
            match input.try_next().await? {
                None => {
                    return Ok(Self {
                        stream: None,
                        rows,
                        error,
                    });
                }
                Some(batch) if batch.num_rows() == 0 => {}
                Some(batch) => break conform_batch(&batch, &schema)?,
            }
        };
        rows.fetch_add(
            first.num_rows() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let (counter, slot, target) = (rows.clone(), error.clone(), schema.clone());
        let rest = input.filter_map(move |batch| {
            let out = match batch {
                Ok(b) if b.num_rows() == 0 => None,
                Ok(b) => Some(conform_batch(&b, &target).map_err(|e| keep(&slot, e))),
                Err(e) => Some(Err(keep(&slot, Error::from(e)))),
            };
            if let Some(Ok(b)) = &out {
                counter.fetch_add(b.num_rows() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            std::future::ready(out)
        });
        let stream =
            stream::once(async move { Ok::<RecordBatch, DataFusionError>(first) }).chain(rest);
        Ok(Self {
            stream: Some(Box::pin(RecordBatchStreamAdapter::new(schema, stream))),
            rows,
            error,
        })
    }

    /// The error to report for a failed write: the input's own, when it had one.
    pub fn failure(&self, write_error: Error) -> Error {
        self.error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or(write_error)
    }

    /// Rows passed.
    pub fn rows(&self) -> u64 {
        self.rows.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Keeps the first error in `slot`; returns a DataFusion error that ends the stream.
fn keep(slot: &Mutex<Option<Error>>, error: Error) -> DataFusionError {
    let message = error.to_string();
    let mut slot = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if slot.is_none() {
        *slot = Some(error);
    }
    DataFusionError::Execution(message)
}
