//! A dedicated runtime for CPU-heavy work, so query execution never blocks the reactor
//! that serves sockets.
//!
//! Plans run on their own multi-threaded tokio runtime; their batches cross back through a
//! bounded channel, which also gives back-pressure. Dropping the receiving stream drops the
//! sender, and the producing task stops at its next send.

use std::future::Future;
use std::sync::Arc;

use datafusion::error::DataFusionError;
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

    /// Runs `fut` on the CPU runtime and waits for it.
    pub async fn spawn<F, T>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.handle().spawn(fut);
        let abort = task.abort_handle();
        let _guard = AbortOnDrop(abort);
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_cancelled() => Err(Error::DataFusion(DataFusionError::Execution(
                "query cancelled".into(),
            ))),
            Err(e) => Err(Error::DataFusion(DataFusionError::Execution(format!(
                "query task failed: {e}"
            )))),
        }
    }

    /// Executes `plan` on the CPU runtime, streaming its batches back.
    pub fn execute(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<TaskContext>,
    ) -> SendableRecordBatchStream {
        let schema = plan.schema();
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        self.handle().spawn(async move {
            let mut stream = match execute_stream(plan, task_ctx) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            while let Some(item) = stream.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
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

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
