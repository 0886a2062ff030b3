//! The `train(model, query, target [, options])` and `reproduce(run_id)` table functions.
//!
//! Planning checks the arguments and options (so a typo fails before anything runs);
//! executing the plan runs the training. The result stream owns the training: dropping
//! it (a cancel request, a closed connection) cancels the training.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use runbase_engine::{ClientIdentity, Notices};

use super::options::TrainOptions;
use super::{Summary, TrainRequest, Trainer};

/// The schema of TRAIN's (and reproduce's) one result row.
pub fn summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("version", DataType::Int64, false),
        Field::new("task", DataType::Utf8, false),
        Field::new("device", DataType::Utf8, false),
        Field::new("epochs", DataType::Int32, false),
        Field::new("best_epoch", DataType::Int32, false),
        Field::new("duration_seconds", DataType::Float64, false),
        Field::new("metrics", DataType::Utf8, false),
    ]))
}

fn summary_batch(s: &Summary) -> DfResult<RecordBatch> {
    Ok(RecordBatch::try_new(
        summary_schema(),
        vec![
            Arc::new(StringArray::from(vec![s.run_id.to_string()])),
            Arc::new(StringArray::from(vec![s.model.clone()])),
            Arc::new(Int64Array::from(vec![s.version])),
            Arc::new(StringArray::from(vec![s.task.clone()])),
            Arc::new(StringArray::from(vec![s.device.clone()])),
            Arc::new(Int32Array::from(vec![
                i32::try_from(s.epochs).unwrap_or(i32::MAX),
            ])),
            Arc::new(Int32Array::from(vec![
                i32::try_from(s.best_epoch).unwrap_or(i32::MAX),
            ])),
            Arc::new(Float64Array::from(vec![s.duration_seconds])),
            Arc::new(StringArray::from(vec![s.metrics.to_string()])),
        ],
    )?)
}

/// A string literal argument (dollar-quoted strings included); `None` for NULL.
pub(crate) fn string_arg(function: &str, what: &str, expr: &Expr) -> DfResult<Option<String>> {
    let Some(value) = runbase_engine::storage::provider::literal(expr) else {
        return plan_err!("{function}: {what} must be a string literal");
    };
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Ok(Some(s)),
        ScalarValue::Utf8(None)
        | ScalarValue::Utf8View(None)
        | ScalarValue::LargeUtf8(None)
        | ScalarValue::Null => Ok(None),
        other => plan_err!(
            "{function}: {what} must be a string, got {}",
            other.data_type()
        ),
    }
}

pub(crate) fn session_context(session: &dyn Session) -> (ClientIdentity, Option<Arc<Notices>>) {
    let config = session.config();
    (
        config
            .get_extension::<ClientIdentity>()
            .map(|c| c.as_ref().clone())
            .unwrap_or_default(),
        config.get_extension::<Notices>(),
    )
}

pub(crate) fn engine_err(e: crate::Error) -> DataFusionError {
    match e {
        crate::Error::Engine(e) => e.into(),
        other => {
            DataFusionError::External(Box::new(runbase_engine::Error::Internal(other.to_string())))
        }
    }
}

/// `train(model_name, query, target [, options_json])`.
#[derive(Debug)]
pub struct TrainFunction {
    trainer: Arc<Trainer>,
}

impl TrainFunction {
    /// The function, training with `trainer`.
    pub fn new(trainer: Arc<Trainer>) -> Self {
        Self { trainer }
    }
}

impl TableFunctionImpl for TrainFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(3..=4).contains(&exprs.len()) {
            return Err(DataFusionError::Plan(format!(
                "train takes 3 or 4 arguments (model_name, query, target [, options_json]), got {}",
                exprs.len()
            )));
        }
        let model = string_arg("train", "model_name", &exprs[0])?;
        let query = string_arg("train", "query", &exprs[1])?;
        let target = string_arg("train", "target", &exprs[2])?;
        let (Some(model), Some(query), Some(target)) = (model, query, target) else {
            // Planned without values (see `Prepared::Deferred`), or NULL: fails when run.
            return Ok(Arc::new(TrainTable {
                trainer: self.trainer.clone(),
                request: None,
            }));
        };
        runbase_engine::tracking::models::validate_model_name(&model)?;
        let options = match exprs.get(3) {
            Some(e) => string_arg("train", "options_json", e)?,
            None => None,
        };
        let options = TrainOptions::parse(options.as_deref()).map_err(engine_err)?;
        let (identity, notices) = session_context(args.session());
        Ok(Arc::new(TrainTable {
            trainer: self.trainer.clone(),
            request: Some(TrainRequest {
                model,
                query,
                target,
                options,
                pins: Default::default(),
                reproduces: None,
                identity,
                notices,
            }),
        }))
    }
}

/// `reproduce(run_id)`: re-runs a TRAIN run from what it recorded.
#[derive(Debug)]
pub struct ReproduceFunction {
    trainer: Arc<Trainer>,
}

impl ReproduceFunction {
    /// The function, training with `trainer`.
    pub fn new(trainer: Arc<Trainer>) -> Self {
        Self { trainer }
    }
}

impl TableFunctionImpl for ReproduceFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let [run] = exprs else {
            return Err(DataFusionError::Plan(format!(
                "reproduce takes 1 argument (run_id), got {}",
                exprs.len()
            )));
        };
        let Some(run) = string_arg("reproduce", "run_id", run)? else {
            return Ok(Arc::new(TrainTable {
                trainer: self.trainer.clone(),
                request: None,
            }));
        };
        let (identity, notices) = session_context(args.session());
        let request = self
            .trainer
            .reproduce_request(&run, identity, notices)
            .map_err(engine_err)?;
        Ok(Arc::new(TrainTable {
            trainer: self.trainer.clone(),
            request: Some(request),
        }))
    }
}

/// The table a `train(…)` call plans to; without a request (a NULL argument) scanning it
/// is an error.
#[derive(Debug)]
struct TrainTable {
    trainer: Arc<Trainer>,
    request: Option<TrainRequest>,
}

#[async_trait]
impl TableProvider for TrainTable {
    fn schema(&self) -> SchemaRef {
        summary_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(request) = &self.request else {
            return Err(runbase_engine::Error::NullValue(
                "train: model_name, query and target (reproduce: run_id) must not be NULL".into(),
            )
            .into());
        };
        let schema = match projection {
            Some(p) => Arc::new(summary_schema().project(p)?),
            None => summary_schema(),
        };
        Ok(Arc::new(TrainExec {
            trainer: self.trainer.clone(),
            request: request.clone(),
            projection: projection.cloned(),
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(schema.clone()),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Final,
                Boundedness::Bounded,
            )),
            schema,
        }))
    }
}

/// Runs the training when executed; yields the summary row.
struct TrainExec {
    trainer: Arc<Trainer>,
    request: TrainRequest,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for TrainExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrainExec")
            .field("model", &self.request.model)
            .finish_non_exhaustive()
    }
}

impl DisplayAs for TrainExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TrainExec: model={}, target={}",
            self.request.model, self.request.target
        )
    }
}

/// Sets its flag when dropped: the training sees it at its next batch.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl ExecutionPlan for TrainExec {
    fn name(&self) -> &str {
        "TrainExec"
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
        let trainer = self.trainer.clone();
        let request = self.request.clone();
        let projection = self.projection.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let guard = CancelOnDrop(cancel.clone());
        let stream = futures::stream::once(async move {
            let _guard = guard;
            let summary = trainer.run(request, cancel).await.map_err(engine_err)?;
            let batch = summary_batch(&summary)?;
            match projection {
                Some(p) => Ok(batch.project(&p)?),
                None => Ok(batch),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}
