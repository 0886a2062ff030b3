//! Result streams that report to the statement counters ([`crate::stats`]): rows read,
//! the first error, and the latency up to the last row, recorded when the stream ends
//! or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::Result as DfResult;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;

use crate::error::datafusion_code;
use crate::stats::StatementTimer;

/// `stream`, counted by `timer`.
pub(super) fn metered(
    stream: SendableRecordBatchStream,
    timer: StatementTimer,
) -> SendableRecordBatchStream {
    Box::pin(Metered {
        inner: stream,
        timer: Some(timer),
    })
}

struct Metered {
    inner: SendableRecordBatchStream,
    /// Taken (and so recorded) when the stream ends.
    timer: Option<StatementTimer>,
}

impl Stream for Metered {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) => {
                if let Some(timer) = self.timer.as_mut() {
                    timer.rows(u64::try_from(batch.num_rows()).unwrap_or(u64::MAX));
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(timer) = self.timer.as_mut() {
                    timer.failed(datafusion_code(e).class());
                }
            }
            Poll::Ready(None) => {
                if let Some(timer) = self.timer.take() {
                    timer.finish();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl RecordBatchStream for Metered {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}
