//! A dedicated runtime for CPU-heavy work, so query execution never blocks the reactor
//! that serves sockets.
//!
//! Plans run on their own multi-threaded tokio runtime; their batches cross back through a
//! bounded channel, which also gives back-pressure. Dropping the receiving stream drops the
//! sender, and the producing task stops at its next send.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{Error, Result};

/// Batches buffered between the CPU runtime and the consumer.
const CHANNEL_DEPTH: usize = 4;

/// Stack size of the threads that plan and run statements (the server's async workers and
/// this runtime's): planning, cloning and dropping a statement recurse once per level of
/// expression nesting, which is bounded (`MAX_EXPR_DEPTH`) but can still need more than the
/// 2 MiB tokio gives a thread by default. Only the pages a thread touches are committed.
pub const THREAD_STACK_SIZE: usize = 16 * 1024 * 1024;

/// Owns the CPU runtime.
#[derive(Debug)]
pub struct CpuExecutor {
    runtime: Option<Runtime>,
}

impl CpuExecutor {
    /// A runtime with `threads` workers.
    pub fn new(threads: usize) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("runbase-cpu")
            .thread_stack_size(THREAD_STACK_SIZE)
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .handle()
    }

    /// Runs blocking `work` (a synced RocksDB write, password hashing, libtorch) on the
    /// CPU runtime's blocking pool, so it never holds a worker that polls queries or
    /// sockets, and waits for it without blocking the caller's thread.
    pub async fn run_blocking<F, T>(&self, work: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.handle().spawn_blocking(work);
        join_result(task.await)
    }

    /// Runs `work` on the CPU runtime; the result (a panic as an internal error) comes back
    /// through [`CpuExecutor::join`].
    pub fn spawn<F, T>(&self, work: F) -> tokio::task::JoinHandle<Result<T>>
    where
        F: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.handle().spawn(work)
    }

    /// Waits for a task from [`CpuExecutor::spawn`].
    pub async fn join<T>(task: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
        join_result(task.await)
    }

    /// Executes `plan` on the CPU runtime, streaming its batches back.
    pub fn execute(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<TaskContext>,
    ) -> SendableRecordBatchStream {
        let schema = plan.schema();
        self.drive(schema, move || execute_stream(plan, task_ctx))
    }

    /// Polls the stream `make` returns on the CPU runtime and forwards its items.
    ///
    /// If the producer panics, the consumer gets an error rather than a stream that just
    /// ends early, which would look like a complete (but short) result.
    fn drive<F>(&self, schema: SchemaRef, make: F) -> SendableRecordBatchStream
    where
        F: FnOnce() -> DfResult<SendableRecordBatchStream> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let panic_tx = tx.clone();
        let producer = self.handle().spawn(async move {
            let mut stream = match make() {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            loop {
                // Stop as soon as the consumer goes away (a cancelled query, a closed
                // connection), not only when the next batch cannot be delivered: dropping
                // the stream is what cancels a long-running operator such as TRAIN.
                let item = tokio::select! {
                    biased;
                    () = tx.closed() => return,
                    item = stream.next() => item,
                };
                let Some(item) = item else { return };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        self.handle().spawn(async move {
            if let Err(e) = producer.await
                && e.is_panic()
            {
                let _ = panic_tx
                    .send(Err(DataFusionError::Internal(
                        "query execution panicked".to_string(),
                    )))
                    .await;
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            ReceiverStream::new(rx),
        ))
    }
}

impl Drop for CpuExecutor {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A finished task's result: cancellation is [`Error::Canceled`], a panic an internal error.
fn join_result<T>(joined: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    match joined {
        Ok(result) => result,
        Err(e) if e.is_cancelled() => Err(Error::Canceled("query cancelled".into())),
        Err(e) => Err(Error::Internal(format!("query task failed: {e}"))),
    }
}

/// Runs blocking `work` from synchronous code that may be on an async worker (a scalar
/// function DataFusion calls from the CPU runtime, say): on a multi-threaded runtime the
/// worker hands its other tasks to a new worker first, so they are not stalled; elsewhere
/// `work` just runs.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::datatypes::Schema;
    use futures::TryStreamExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_query_is_an_error_not_a_short_result() {
        let exec = CpuExecutor::new(1).expect("runtime");
        let schema = Arc::new(Schema::empty());
        let inner = schema.clone();
        let stream = exec.drive(schema, move || {
            let panicking =
                futures::stream::poll_fn(|_| -> std::task::Poll<Option<DfResult<RecordBatch>>> {
                    panic!("boom")
                });
            Ok(Box::pin(RecordBatchStreamAdapter::new(inner, panicking))
                as SendableRecordBatchStream)
        });
        let result: DfResult<Vec<RecordBatch>> = stream.try_collect().await;
        assert!(result.is_err(), "{result:?}");
    }
}
