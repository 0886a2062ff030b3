//! `evaluate(model, query [, target])`: the model's metrics on the query's rows, one row
//! per metric — the same metrics TRAIN reports (accuracy, f1, log_loss, roc_auc for two
//! classes; rmse, mae, r2).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::StreamExt;
use runbase_engine::tracking::models::ModelVersion;
use tch::Device;

use super::predict::planned_query;
use super::spec::label_text;
use super::{Inference, LoadedModel, Output, ServingSpec, bind_columns, pick};
use crate::train::function::{engine_err, string_arg};
use crate::train::metrics;

fn result_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ]))
}

/// `evaluate(model, query [, target])`.
#[derive(Debug)]
pub struct EvaluateFunction {
    inference: Arc<Inference>,
}

impl EvaluateFunction {
    /// The function, serving from `inference`.
    pub fn new(inference: Arc<Inference>) -> Self {
        Self { inference }
    }
}

impl TableFunctionImpl for EvaluateFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(2..=3).contains(&exprs.len()) {
            return Err(DataFusionError::Plan(format!(
                "evaluate takes 2 or 3 arguments (model, query [, target]), got {}",
                exprs.len()
            )));
        }
        let model = string_arg("evaluate", "model", &exprs[0])?;
        let query = string_arg("evaluate", "query", &exprs[1])?;
        let target = match exprs.get(2) {
            Some(e) => string_arg("evaluate", "target", e)?,
            None => None,
        };
        let (Some(model), Some(query)) = (model, query) else {
            return Ok(Arc::new(EvaluateTable { request: None }));
        };
        let (version, spec) = self.inference.resolve(&model).map_err(engine_err)?;
        if matches!(spec.output, Output::Tensor) {
            return Err(runbase_engine::Error::InvalidArgument(format!(
                "evaluate: model {model} returns plain tensors; only classifiers and regressors have metrics"
            ))
            .into());
        }
        let Some(target) = target.or_else(|| spec.target.clone()) else {
            return Err(runbase_engine::Error::InvalidArgument(format!(
                "evaluate: model {model} was imported without a target column; pass it: evaluate(model, query, target)"
            ))
            .into());
        };
        let device = self
            .inference
            .device(&spec, args.session())
            .map_err(engine_err)?;
        let plan = planned_query("evaluate", args.session(), &query)?;
        let input = Arc::new(plan.schema().as_arrow().clone());
        let columns = bind_columns(&spec, &input, &model).map_err(engine_err)?;
        let target_column =
            crate::train::features::column_index(&input, &target).ok_or_else(|| {
                DataFusionError::from(runbase_engine::Error::ColumnNotFound(format!(
                    "evaluate: target column \"{target}\" is not among the query's columns"
                )))
            })?;
        Ok(Arc::new(EvaluateTable {
            request: Some(EvaluateRequest {
                inference: self.inference.clone(),
                version,
                spec,
                device,
                plan,
                columns,
                target: target_column,
            }),
        }))
    }
}

#[derive(Debug, Clone)]
struct EvaluateRequest {
    inference: Arc<Inference>,
    version: ModelVersion,
    spec: ServingSpec,
    device: Device,
    plan: LogicalPlan,
    columns: Vec<usize>,
    target: usize,
}

#[derive(Debug)]
struct EvaluateTable {
    request: Option<EvaluateRequest>,
}

#[async_trait]
impl TableProvider for EvaluateTable {
    fn schema(&self) -> SchemaRef {
        result_schema()
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
                "evaluate: model and query must not be NULL".into(),
            )
            .into());
        };
        let model = request
            .inference
            .load(&request.version, &request.spec, request.device)
            .await
            .map_err(engine_err)?;
        let mut input = state.create_physical_plan(&request.plan).await?;
        if input.output_partitioning().partition_count() > 1 {
            input = Arc::new(CoalescePartitionsExec::new(input));
        }
        let schema = match projection {
            Some(p) => Arc::new(result_schema().project(p)?),
            None => result_schema(),
        };
        Ok(Arc::new(EvaluateExec {
            inference: request.inference.clone(),
            model,
            columns: request.columns.clone(),
            target: request.target,
            input,
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

struct EvaluateExec {
    inference: Arc<Inference>,
    model: Arc<LoadedModel>,
    columns: Vec<usize>,
    target: usize,
    input: Arc<dyn ExecutionPlan>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for EvaluateExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvaluateExec")
            .field("model", &self.model.version.model.name)
            .finish_non_exhaustive()
    }
}

impl DisplayAs for EvaluateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EvaluateExec: model={}@{}",
            self.model.version.model.name, self.model.version.version
        )
    }
}

/// What evaluation accumulates over the batches.
enum Tally {
    Classification {
        index: HashMap<String, i64>,
        k: usize,
        logits: Vec<f32>,
        labels: Vec<i64>,
    },
    Regression {
        predicted: Vec<f64>,
        actual: Vec<f64>,
    },
}

impl Tally {
    fn new(spec: &ServingSpec) -> Self {
        match &spec.output {
            Output::Classification { classes } => Tally::Classification {
                index: classes
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (label_text(c), i as i64))
                    .collect(),
                k: classes.len(),
                logits: Vec::new(),
                labels: Vec::new(),
            },
            _ => Tally::Regression {
                predicted: Vec::new(),
                actual: Vec::new(),
            },
        }
    }

    fn add(&mut self, out: &tch::Tensor, target: &dyn Array) -> DfResult<()> {
        let nulls = target.null_count();
        if nulls > 0 {
            return Err(runbase_engine::Error::NullValue(format!(
                "evaluate: the target is NULL in {nulls} rows; filter them out"
            ))
            .into());
        }
        let values = out.to_kind(tch::Kind::Float).contiguous().reshape([-1]);
        let values: Vec<f32> = Vec::try_from(&values)
            .map_err(|e| engine_err(super::torch_error("reading the model's output", e)))?;
        match self {
            Tally::Classification {
                index,
                k,
                logits,
                labels,
            } => {
                if values.len() != target.len() * *k {
                    return Err(DataFusionError::Execution(format!(
                        "evaluate: the model returned {} values for {} rows of {k} classes",
                        values.len(),
                        target.len()
                    )));
                }
                let text = cast(target, &DataType::Utf8)?;
                for v in text.as_string::<i32>().iter().flatten() {
                    let label = index.get(v).copied().ok_or_else(|| {
                        DataFusionError::from(runbase_engine::Error::InvalidArgument(format!(
                            "evaluate: target value \"{v}\" is not one of the model's classes"
                        )))
                    })?;
                    labels.push(label);
                }
                logits.extend(values);
            }
            Tally::Regression { predicted, actual } => {
                let truth = cast(target, &DataType::Float64).map_err(|_| {
                    DataFusionError::from(runbase_engine::Error::DatatypeMismatch(format!(
                        "evaluate: the target of a regression must be a number, got {}",
                        target.data_type()
                    )))
                })?;
                predicted.extend(values.iter().map(|v| f64::from(*v)));
                actual.extend(truth.as_primitive::<Float64Type>().values().iter());
            }
        }
        Ok(())
    }

    fn metrics(self) -> metrics::Metrics {
        match self {
            Tally::Classification {
                k, logits, labels, ..
            } => metrics::classification(&logits, k, &labels),
            Tally::Regression { predicted, actual } => metrics::regression(&predicted, &actual),
        }
    }
}

impl ExecutionPlan for EvaluateExec {
    fn name(&self) -> &str {
        "EvaluateExec"
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
                "EvaluateExec takes one child".into(),
            ));
        };
        Ok(Arc::new(EvaluateExec {
            inference: self.inference.clone(),
            model: self.model.clone(),
            columns: self.columns.clone(),
            target: self.target,
            input: input.clone(),
            projection: self.projection.clone(),
            schema: self.schema.clone(),
            properties: self.properties.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context)?;
        let inference = self.inference.clone();
        let model = self.model.clone();
        let columns = self.columns.clone();
        let target = self.target;
        let projection = self.projection.clone();
        let stream = futures::stream::once(async move {
            let mut tally = Tally::new(&model.spec);
            let mut rows = 0usize;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                rows += batch.num_rows();
                let out = inference
                    .forward(model.clone(), pick(&batch, &columns))
                    .await
                    .map_err(engine_err)?;
                tally.add(&out, batch.column(target).as_ref())?;
            }
            if rows == 0 {
                return Err(runbase_engine::Error::InvalidArgument(
                    "evaluate: the query returned no rows".into(),
                )
                .into());
            }
            let metrics = tally.metrics();
            let batch = RecordBatch::try_new(
                result_schema(),
                vec![
                    Arc::new(StringArray::from_iter_values(
                        metrics.iter().map(|(k, _)| k.as_str()),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        metrics.iter().map(|(_, v)| *v),
                    )),
                ],
            )?;
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
