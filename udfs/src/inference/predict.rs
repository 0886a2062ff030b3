//! `predict(model, query)`: every row of the query with the model's prediction.
//!
//! The query is planned with the statement (see
//! `Database::register_query_argument`), so its plan becomes the child of `PredictExec`
//! and rows stream through: each batch of the query is scored as it arrives, at most two
//! batches in flight, and the result keeps the query's row order.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, new_empty_array};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{Stream, StreamExt, TryStreamExt};
use runbase_engine::PlannedQueries;
use runbase_engine::tracking::models::ModelVersion;
use tch::Device;

use super::{Inference, LoadedModel, Output, ServingSpec, batch_rows, bind_columns, pick};
use crate::train::function::{engine_err, string_arg};

/// Batches scored at once per partition: one in the model while the next is read.
const IN_FLIGHT: usize = 2;

/// The columns `predict` adds for `spec`.
pub fn prediction_fields(spec: &ServingSpec) -> Vec<Field> {
    let mut fields = vec![Field::new("prediction", spec.prediction_type(), true)];
    if matches!(spec.output, Output::Classification { .. }) {
        fields.push(Field::new(
            "probabilities",
            super::spec::list_of_doubles(),
            true,
        ));
    }
    fields
}

/// The plan of a query argument, planned with the statement.
pub(crate) fn planned_query(
    function: &str,
    session: &dyn Session,
    sql: &str,
) -> DfResult<LogicalPlan> {
    session
        .config()
        .get_extension::<PlannedQueries>()
        .and_then(|p| p.get(sql))
        .ok_or_else(|| {
            DataFusionError::Plan(format!(
                "{function}: the query must be a string literal (or a bound parameter) holding one SELECT"
            ))
        })
}

/// `predict(model, query)`.
#[derive(Debug)]
pub struct PredictFunction {
    inference: Arc<Inference>,
}

impl PredictFunction {
    /// The function, serving from `inference`.
    pub fn new(inference: Arc<Inference>) -> Self {
        Self { inference }
    }
}

impl TableFunctionImpl for PredictFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let [model, query] = exprs else {
            return Err(DataFusionError::Plan(format!(
                "predict takes 2 arguments (model, query), got {}; for predict(model, column, …) use it in a SELECT list",
                exprs.len()
            )));
        };
        let model = string_arg("predict", "model", model)?;
        let query = string_arg("predict", "query", query)?;
        let (Some(model), Some(query)) = (model, query) else {
            // Planned without values (see `Prepared::Deferred`), or NULL: fails when run.
            return Ok(Arc::new(PredictTable {
                request: None,
                schema: Arc::new(Schema::new(vec![Field::new(
                    "prediction",
                    DataType::Utf8,
                    true,
                )])),
            }));
        };
        let (version, spec) = self.inference.resolve(&model).map_err(engine_err)?;
        let device = self
            .inference
            .device(&spec, args.session())
            .map_err(engine_err)?;
        let plan = planned_query("predict", args.session(), &query)?;
        let input = Arc::new(plan.schema().as_arrow().clone());
        let columns = bind_columns(&spec, &input, &model).map_err(engine_err)?;
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for added in prediction_fields(&spec) {
            if input.fields().iter().any(|f| f.name() == added.name()) {
                return Err(DataFusionError::Plan(format!(
                    "predict: the query already returns a column named \"{}\"; rename it (AS …)",
                    added.name()
                )));
            }
            fields.push(added);
        }
        Ok(Arc::new(PredictTable {
            request: Some(PredictRequest {
                inference: self.inference.clone(),
                version,
                spec,
                device,
                plan,
                columns,
            }),
            schema: Arc::new(Schema::new(fields)),
        }))
    }
}

#[derive(Debug, Clone)]
struct PredictRequest {
    inference: Arc<Inference>,
    version: ModelVersion,
    spec: ServingSpec,
    device: Device,
    plan: LogicalPlan,
    /// The query column feeding each model input.
    columns: Vec<usize>,
}

#[derive(Debug)]
struct PredictTable {
    request: Option<PredictRequest>,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for PredictTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(request) = &self.request else {
            return Err(runbase_engine::Error::NullValue(
                "predict: model and query must not be NULL".into(),
            )
            .into());
        };
        let model = request
            .inference
            .load(&request.version, &request.spec, request.device)
            .await
            .map_err(engine_err)?;
        let width = request.plan.schema().fields().len();
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        // Read only what is needed: the model's inputs and the query columns projected.
        let mut needed: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|i| *i < width)
            .chain(request.columns.iter().copied())
            .collect();
        needed.sort_unstable();
        needed.dedup();
        let at = |i: usize| needed.iter().position(|n| *n == i).unwrap_or(0);
        let output = wanted
            .iter()
            .map(|i| {
                if *i < width {
                    Produce::Input(at(*i))
                } else {
                    Produce::Added(*i - width)
                }
            })
            .collect::<Vec<_>>();
        let probabilities = output.contains(&Produce::Added(1));
        let columns = request.columns.iter().map(|c| at(*c)).collect();
        let plan = datafusion::logical_expr::LogicalPlanBuilder::from(request.plan.clone())
            .project(needed.iter().map(|i| {
                Expr::Column(datafusion::common::Column::from(
                    request.plan.schema().qualified_field(*i),
                ))
            }))?
            .build()?;
        let input = state.create_physical_plan(&plan).await?;
        let schema = Arc::new(self.schema.project(&wanted)?);
        let partitions = input.output_partitioning().partition_count();
        Ok(Arc::new(PredictExec {
            inference: request.inference.clone(),
            model,
            columns,
            output: Arc::new(output),
            probabilities,
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(schema.clone()),
                Partitioning::UnknownPartitioning(partitions),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
            schema,
            input,
        }))
    }
}

/// Where an output column comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Produce {
    /// Column `n` of the input batch.
    Input(usize),
    /// Added column `n` (`prediction`, `probabilities`).
    Added(usize),
}

/// Scores the batches of its input.
struct PredictExec {
    inference: Arc<Inference>,
    model: Arc<LoadedModel>,
    /// The input column feeding each model input.
    columns: Vec<usize>,
    input: Arc<dyn ExecutionPlan>,
    /// Each output column's source.
    output: Arc<Vec<Produce>>,
    /// Whether `probabilities` is wanted.
    probabilities: bool,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for PredictExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PredictExec")
            .field("model", &self.model.version.model.name)
            .field("version", &self.model.version.version)
            .finish_non_exhaustive()
    }
}

impl DisplayAs for PredictExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PredictExec: model={}@{}, device={}",
            self.model.version.model.name,
            self.model.version.version,
            super::device_label(self.model.device)
        )
    }
}

impl ExecutionPlan for PredictExec {
    fn name(&self) -> &str {
        "PredictExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [input] = children.as_slice() else {
            return Err(DataFusionError::Internal(
                "PredictExec takes one child".into(),
            ));
        };
        let partitions = input.output_partitioning().partition_count();
        Ok(Arc::new(PredictExec {
            inference: self.inference.clone(),
            model: self.model.clone(),
            columns: self.columns.clone(),
            input: input.clone(),
            output: self.output.clone(),
            probabilities: self.probabilities,
            schema: self.schema.clone(),
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(self.schema.clone()),
                Partitioning::UnknownPartitioning(partitions),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let input = coalesce(input, batch_rows(self.model.device));
        let inference = self.inference.clone();
        let model = self.model.clone();
        let columns = Arc::new(self.columns.clone());
        let output = self.output.clone();
        let probabilities = self.probabilities;
        let schema = self.schema.clone();
        let scored = input
            .map_ok(move |batch| {
                let inference = inference.clone();
                let model = model.clone();
                let columns = columns.clone();
                let output = output.clone();
                let schema = schema.clone();
                async move {
                    let added = score(&inference, &model, &batch, &columns, probabilities).await?;
                    let arrays = output
                        .iter()
                        .map(|o| match o {
                            Produce::Input(i) => batch.column(*i).clone(),
                            Produce::Added(i) => added[*i].clone(),
                        })
                        .collect();
                    let options = datafusion::arrow::array::RecordBatchOptions::new()
                        .with_row_count(Some(batch.num_rows()));
                    Ok(RecordBatch::try_new_with_options(schema, arrays, &options)?)
                }
            })
            .try_buffered(IN_FLIGHT);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            scored,
        )))
    }
}

/// The prediction columns of one batch.
pub(crate) async fn score(
    inference: &Inference,
    model: &Arc<LoadedModel>,
    batch: &RecordBatch,
    columns: &[usize],
    probabilities: bool,
) -> DfResult<Vec<ArrayRef>> {
    if batch.num_rows() == 0 {
        return Ok(prediction_fields(&model.spec)
            .iter()
            .map(|f| new_empty_array(f.data_type()))
            .collect());
    }
    inference
        .predict(model.clone(), pick(batch, columns), probabilities)
        .await
        .map_err(engine_err)
}

/// Joins consecutive batches until each holds at least `rows` rows (0: as they come).
fn coalesce(
    input: SendableRecordBatchStream,
    rows: usize,
) -> std::pin::Pin<Box<dyn Stream<Item = DfResult<RecordBatch>> + Send>> {
    if rows == 0 {
        return Box::pin(input);
    }
    let schema = input.schema();
    Box::pin(futures::stream::unfold(
        (input, false),
        move |(mut input, done)| {
            let schema = schema.clone();
            async move {
                if done {
                    return None;
                }
                let mut pending = Vec::new();
                let mut have = 0;
                while have < rows {
                    match input.next().await {
                        Some(Ok(b)) => {
                            have += b.num_rows();
                            pending.push(b);
                        }
                        Some(Err(e)) => return Some((Err(e), (input, true))),
                        None => {
                            if pending.is_empty() {
                                return None;
                            }
                            let joined = concat_batches(&schema, &pending).map_err(Into::into);
                            return Some((joined, (input, true)));
                        }
                    }
                }
                let joined = concat_batches(&schema, &pending).map_err(Into::into);
                Some((joined, (input, false)))
            }
        },
    ))
}
