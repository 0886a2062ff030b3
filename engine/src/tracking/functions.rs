//! The tracking functions: `create_experiment`, `start_run`, `log_param`, `log_params`,
//! `log_metric`, `set_tag`, `log_input`, `end_run`, `log_artifact` and `artifact`; the
//! model registry's `set_model_alias` and `drop_model_alias`; the alerts'
//! `create_alert`, `drop_alert` and `should_stop`; and `mlflow_model_file`, the
//! TorchScript file of a model logged through MLflow's API.
//!
//! They are volatile scalar functions, so they run once per row and work over many rows
//! (`SELECT log_metric(run, 'loss', v, step) FROM t` logs every row in one write batch).
//! Arguments are coerced to the declared types, so untyped `$n` parameters work.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Int64Builder, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimestampMicrosecondType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use uuid::Uuid;

use super::tables::timestamp_type;
use super::{
    MetricPoint, NewRun, RunStatus, Tracking, TrackingRef, params_from_json, parse_run_id,
};
use crate::error::{Error, Result};
use crate::storage::schema::UserSchema;

/// Which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    CreateExperiment,
    StartRun,
    LogParam,
    LogParams,
    LogMetric,
    SetTag,
    LogInput,
    EndRun,
    LogArtifact,
    Artifact,
    SetModelAlias,
    DropModelAlias,
    CreateAlert,
    DropAlert,
    ShouldStop,
    MlflowModelFile,
}

impl Kind {
    const ALL: [Kind; 16] = [
        Kind::CreateExperiment,
        Kind::StartRun,
        Kind::LogParam,
        Kind::LogParams,
        Kind::LogMetric,
        Kind::SetTag,
        Kind::LogInput,
        Kind::EndRun,
        Kind::LogArtifact,
        Kind::Artifact,
        Kind::SetModelAlias,
        Kind::DropModelAlias,
        Kind::CreateAlert,
        Kind::DropAlert,
        Kind::ShouldStop,
        Kind::MlflowModelFile,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::CreateExperiment => "create_experiment",
            Kind::StartRun => "start_run",
            Kind::LogParam => "log_param",
            Kind::LogParams => "log_params",
            Kind::LogMetric => "log_metric",
            Kind::SetTag => "set_tag",
            Kind::LogInput => "log_input",
            Kind::EndRun => "end_run",
            Kind::LogArtifact => "log_artifact",
            Kind::Artifact => "artifact",
            Kind::SetModelAlias => "set_model_alias",
            Kind::DropModelAlias => "drop_model_alias",
            Kind::CreateAlert => "create_alert",
            Kind::DropAlert => "drop_alert",
            Kind::ShouldStop => "should_stop",
            Kind::MlflowModelFile => "mlflow_model_file",
        }
    }

    /// Argument names and types; the first `required` are required.
    fn args(self) -> (&'static [&'static str], Vec<DataType>, usize) {
        use DataType::{Binary, Float64, Int64, Utf8};
        match self {
            Kind::CreateExperiment => (&["name", "description"], vec![Utf8, Utf8], 1),
            Kind::StartRun => (
                &["experiment", "run_name", "params_json"],
                vec![Utf8, Utf8, Utf8],
                1,
            ),
            Kind::LogParam => (&["run_id", "key", "value"], vec![Utf8, Utf8, Utf8], 3),
            Kind::LogParams => (&["run_id", "params_json"], vec![Utf8, Utf8], 2),
            Kind::LogMetric => (
                &["run_id", "key", "value", "step", "ts"],
                vec![Utf8, Utf8, Float64, Int64, timestamp_type()],
                3,
            ),
            Kind::SetTag => (&["run_id", "key", "value"], vec![Utf8, Utf8, Utf8], 3),
            Kind::LogInput => (
                &["run_id", "table_name", "version"],
                vec![Utf8, Utf8, Int64],
                2,
            ),
            Kind::EndRun => (&["run_id", "status"], vec![Utf8, Utf8], 1),
            Kind::LogArtifact => (&["run_id", "path", "data"], vec![Utf8, Utf8, Binary], 3),
            Kind::Artifact => (&["run_id", "path"], vec![Utf8, Utf8], 2),
            Kind::SetModelAlias => (
                &["model_name", "alias", "version"],
                vec![Utf8, Utf8, Int64],
                3,
            ),
            Kind::DropModelAlias => (&["model_name", "alias"], vec![Utf8, Utf8], 2),
            Kind::CreateAlert => (&["name", "rule_json"], vec![Utf8, Utf8], 2),
            Kind::DropAlert => (&["name"], vec![Utf8], 1),
            Kind::ShouldStop => (&["run_id"], vec![Utf8], 1),
            Kind::MlflowModelFile => (&["model_uri"], vec![Utf8], 1),
        }
    }

    fn returns(self) -> DataType {
        match self {
            Kind::CreateExperiment
            | Kind::LogParams
            | Kind::LogMetric
            | Kind::LogInput
            | Kind::SetModelAlias => DataType::Int64,
            Kind::StartRun | Kind::EndRun | Kind::LogArtifact => DataType::Utf8,
            Kind::LogParam
            | Kind::SetTag
            | Kind::DropModelAlias
            | Kind::CreateAlert
            | Kind::DropAlert
            | Kind::ShouldStop => DataType::Boolean,
            Kind::Artifact | Kind::MlflowModelFile => DataType::Binary,
        }
    }

    /// Whether `n` arguments are a valid call.
    fn takes(self, n: usize) -> bool {
        let (_, types, required) = self.args();
        (required..=types.len()).contains(&n)
    }

    fn usage(self) -> String {
        let (names, _, required) = self.args();
        let mut s = format!("{}(", self.name());
        for (i, n) in names.iter().enumerate() {
            if i == required {
                s.push_str(" [");
            }
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(n);
        }
        if names.len() > required {
            s.push(']');
        }
        s.push(')');
        s
    }
}

/// Who is calling, for the runs they start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Caller {
    pub(crate) user: Option<String>,
    pub(crate) application: Option<String>,
}

/// One tracking function.
#[derive(Debug)]
pub(crate) struct TrackingFunction {
    kind: Kind,
    signature: Signature,
    tracking: TrackingRef,
    tables: Arc<UserSchema>,
    caller: Caller,
}

impl PartialEq for TrackingFunction {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.caller == other.caller
    }
}

impl Eq for TrackingFunction {}

impl std::hash::Hash for TrackingFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.caller.hash(state);
    }
}

/// All tracking functions, with `caller` recorded on the runs `start_run` makes.
pub(crate) fn all(
    tracking: &Tracking,
    tables: &Arc<UserSchema>,
    caller: &Caller,
) -> Vec<ScalarUDF> {
    Kind::ALL
        .iter()
        .map(|k| function(*k, tracking, tables, caller))
        .collect()
}

/// The functions as the catalog documents them (`pg_proc`, psql's `\df`).
pub(crate) fn docs() -> Vec<crate::functions::FunctionDoc> {
    use crate::functions::{FunctionDoc, pg_type_name};
    Kind::ALL
        .iter()
        .map(|k| {
            let (names, types, required) = k.args();
            FunctionDoc {
                name: k.name().to_string(),
                args: names
                    .iter()
                    .zip(&types)
                    .map(|(n, t)| (n.to_string(), pg_type_name(t).to_string()))
                    .collect(),
                required,
                result: pg_type_name(&k.returns()).to_string(),
            }
        })
        .collect()
}

/// The names of the functions that write (every one but `artifact`, `should_stop` and
/// `mlflow_model_file`).
pub(crate) fn writing_names() -> std::collections::HashSet<String> {
    Kind::ALL
        .iter()
        .filter(|k| !matches!(k, Kind::Artifact | Kind::ShouldStop | Kind::MlflowModelFile))
        .map(|k| k.name().to_string())
        .collect()
}

/// The functions that record who called them (`start_run`, `create_alert`), for a
/// session whose caller is `caller`.
pub(crate) fn for_caller(
    tracking: &Tracking,
    tables: &Arc<UserSchema>,
    caller: &Caller,
) -> Vec<ScalarUDF> {
    [Kind::StartRun, Kind::CreateAlert]
        .into_iter()
        .map(|k| function(k, tracking, tables, caller))
        .collect()
}

fn function(
    kind: Kind,
    tracking: &Tracking,
    tables: &Arc<UserSchema>,
    caller: &Caller,
) -> ScalarUDF {
    ScalarUDF::new_from_impl(TrackingFunction {
        kind,
        signature: Signature::user_defined(Volatility::Volatile),
        tracking: tracking.downgrade(),
        tables: tables.clone(),
        caller: caller.clone(),
    })
}

/// Text of row `i` of a string column, `None` when NULL.
fn text(a: &ArrayRef, i: usize) -> Option<&str> {
    let s = a.as_string::<i32>();
    (!s.is_null(i)).then(|| s.value(i))
}

fn required<'a>(kind: Kind, arg: &str, v: Option<&'a str>) -> Result<&'a str> {
    v.ok_or_else(|| Error::NullValue(format!("{}: {arg} must not be null", kind.name())))
}

fn run_arg(kind: Kind, a: &ArrayRef, i: usize) -> Result<Uuid> {
    parse_run_id(required(kind, "run_id", text(a, i))?)
}

/// Runs `fut` to completion from inside a function call (on the CPU runtime).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(fut))
}

impl TrackingFunction {
    /// Calls the function once on constant arguments, casting them to the declared types
    /// (the path for `SELECT log_metric($1, $2, $3, $4)` that skips query planning).
    pub(crate) fn call_scalars(
        &self,
        args: &[datafusion::common::ScalarValue],
    ) -> Result<ArrayRef> {
        let (_, types, _) = self.kind.args();
        if !self.kind.takes(args.len()) {
            return Err(Error::InvalidArgument(format!(
                "{} takes {}",
                self.kind.name(),
                self.kind.usage()
            )));
        }
        let arrays = args
            .iter()
            .zip(types)
            .map(|(v, t)| {
                let v = if v.data_type() == t {
                    v.clone()
                } else {
                    v.cast_to(&t)?
                };
                v.to_array_of_size(1)
            })
            .collect::<DfResult<Vec<_>>>()?;
        self.call(&arrays, 1)
    }

    fn call(&self, args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
        let kind = self.kind;
        let tracking = self.tracking.get()?;
        let opt = |n: usize| args.get(n);
        match kind {
            Kind::CreateExperiment => {
                let mut out = Int64Builder::with_capacity(rows);
                for i in 0..rows {
                    let name = required(kind, "name", text(&args[0], i))?;
                    let desc = opt(1).and_then(|a| text(a, i));
                    out.append_value(tracking.create_experiment(name, desc)?.id);
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::StartRun => {
                let mut out = StringBuilder::new();
                for i in 0..rows {
                    let experiment = required(kind, "experiment", text(&args[0], i))?;
                    let params = match opt(2).and_then(|a| text(a, i)) {
                        Some(json) => params_from_json(json)?,
                        None => vec![],
                    };
                    let run = tracking.start_run(
                        experiment,
                        NewRun {
                            name: opt(1).and_then(|a| text(a, i)).map(str::to_string),
                            user_name: self.caller.user.clone(),
                            source: self.caller.application.clone(),
                            params,
                            ..NewRun::default()
                        },
                    )?;
                    out.append_value(run.run_id.hyphenated().to_string());
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::LogParam => {
                let mut out = BooleanBuilder::with_capacity(rows);
                for i in 0..rows {
                    let run = run_arg(kind, &args[0], i)?;
                    let key = required(kind, "key", text(&args[1], i))?;
                    let value = required(kind, "value", text(&args[2], i))?;
                    tracking.log_params(&run, &[(key.to_string(), value.to_string())])?;
                    out.append_value(true);
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::LogParams => {
                let mut out = Int64Builder::with_capacity(rows);
                for i in 0..rows {
                    let run = run_arg(kind, &args[0], i)?;
                    let params =
                        params_from_json(required(kind, "params_json", text(&args[1], i))?)?;
                    let n = tracking.log_params(&run, &params)?;
                    out.append_value(i64::try_from(n).unwrap_or(i64::MAX));
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::LogMetric => {
                let values = args[2].as_primitive::<datafusion::arrow::datatypes::Float64Type>();
                let steps = opt(3).map(|a| a.as_primitive::<Int64Type>());
                let ts = opt(4).map(|a| a.as_primitive::<TimestampMicrosecondType>());
                let mut points = Vec::with_capacity(rows);
                for i in 0..rows {
                    let run = run_arg(kind, &args[0], i)?;
                    let key = required(kind, "key", text(&args[1], i))?;
                    if values.is_null(i) {
                        return Err(Error::NullValue(format!(
                            "log_metric: value of \"{key}\" must not be null"
                        )));
                    }
                    points.push(MetricPoint {
                        run,
                        key: key.to_string(),
                        step: steps.filter(|s| !s.is_null(i)).map(|s| s.value(i)),
                        ts_us: ts.filter(|t| !t.is_null(i)).map(|t| t.value(i)),
                        value: values.value(i),
                    });
                }
                let steps = tracking.log_metrics(&points)?;
                Ok(Arc::new(datafusion::arrow::array::Int64Array::from(steps)))
            }
            Kind::SetTag => {
                let mut tags = Vec::with_capacity(rows);
                for i in 0..rows {
                    let run = run_arg(kind, &args[0], i)?;
                    let key = required(kind, "key", text(&args[1], i))?;
                    let value = required(kind, "value", text(&args[2], i))?;
                    tags.push((run, key.to_string(), value.to_string()));
                }
                tracking.set_tags(&tags)?;
                let mut out = BooleanBuilder::with_capacity(rows);
                out.append_n(rows, true);
                Ok(Arc::new(out.finish()))
            }
            Kind::LogInput => {
                let versions = opt(2).map(|a| a.as_primitive::<Int64Type>());
                let mut out = Int64Builder::with_capacity(rows);
                for i in 0..rows {
                    let run = run_arg(kind, &args[0], i)?;
                    let name = required(kind, "table_name", text(&args[1], i))?;
                    let table = self
                        .tables
                        .stored(name)
                        .ok_or_else(|| Error::TableNotFound(name.to_string()))?;
                    let latest = block_on(table.latest())?.version().unwrap_or(0);
                    let latest = i64::try_from(latest).unwrap_or(i64::MAX);
                    let version = match versions.filter(|v| !v.is_null(i)) {
                        Some(v) => {
                            let v = v.value(i);
                            if v < 0 || v > latest {
                                return Err(Error::InvalidArgument(format!(
                                    "table \"{name}\" has no version {v} (latest is {latest})"
                                )));
                            }
                            v
                        }
                        None => latest,
                    };
                    tracking.log_input(&run, name, version)?;
                    out.append_value(version);
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::EndRun => {
                let mut out = StringBuilder::new();
                for i in 0..rows {
                    let run = run_arg(kind, &args[0], i)?;
                    let status = match opt(1).and_then(|a| text(a, i)) {
                        Some(s) => RunStatus::parse(s)?,
                        None => RunStatus::Finished,
                    };
                    out.append_value(tracking.end_run(&run, status)?.status.as_str());
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::LogArtifact => {
                let data = args[2].as_binary::<i32>();
                let mut out = StringBuilder::new();
                for i in 0..rows {
                    let run = run_arg(kind, &args[0], i)?;
                    let path = required(kind, "path", text(&args[1], i))?;
                    if data.is_null(i) {
                        return Err(Error::NullValue(
                            "log_artifact: data must not be null".into(),
                        ));
                    }
                    let bytes = data.value(i).to_vec();
                    let artifact = block_on(tracking.log_artifact(&run, path, bytes))?;
                    out.append_value(artifact.uri);
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::Artifact => {
                let mut out = BinaryBuilder::new();
                for i in 0..rows {
                    let run = run_arg(kind, &args[0], i)?;
                    let path = required(kind, "path", text(&args[1], i))?;
                    out.append_value(block_on(tracking.artifact(&run, path))?);
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::MlflowModelFile => {
                let mut out = BinaryBuilder::new();
                for i in 0..rows {
                    let uri = required(kind, "model_uri", text(&args[0], i))?;
                    out.append_value(block_on(tracking.mlflow_model_file(uri))?);
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::SetModelAlias => {
                let versions = args[2].as_primitive::<Int64Type>();
                let mut out = Int64Builder::with_capacity(rows);
                for i in 0..rows {
                    let name = required(kind, "model_name", text(&args[0], i))?;
                    let alias = required(kind, "alias", text(&args[1], i))?;
                    if versions.is_null(i) {
                        return Err(Error::NullValue(
                            "set_model_alias: version must not be null".into(),
                        ));
                    }
                    let set = tracking.set_model_alias(name, alias, versions.value(i))?;
                    out.append_value(set.version);
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::DropModelAlias => {
                let mut out = BooleanBuilder::with_capacity(rows);
                for i in 0..rows {
                    let name = required(kind, "model_name", text(&args[0], i))?;
                    let alias = required(kind, "alias", text(&args[1], i))?;
                    tracking.drop_model_alias(name, alias)?;
                    out.append_value(true);
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::CreateAlert => {
                let mut out = BooleanBuilder::with_capacity(rows);
                for i in 0..rows {
                    let name = required(kind, "name", text(&args[0], i))?;
                    let rule = required(kind, "rule_json", text(&args[1], i))?;
                    tracking.create_alert(name, rule, self.caller.user.as_deref())?;
                    out.append_value(true);
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::DropAlert => {
                let mut out = BooleanBuilder::with_capacity(rows);
                for i in 0..rows {
                    let name = required(kind, "name", text(&args[0], i))?;
                    if !tracking.drop_alert(name)? {
                        return Err(Error::ObjectNotFound(format!(
                            "alert \"{name}\" does not exist"
                        )));
                    }
                    out.append_value(true);
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::ShouldStop => {
                let mut out = BooleanBuilder::with_capacity(rows);
                for i in 0..rows {
                    let run = run_arg(kind, &args[0], i)?;
                    tracking.existing_run(&run)?;
                    out.append_value(tracking.should_stop(&run)?);
                }
                Ok(Arc::new(out.finish()))
            }
        }
    }
}

impl ScalarUDFImpl for TrackingFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        // The arity is checked here rather than in `coerce_types`, whose errors DataFusion
        // turns into text (losing the 42883 of a call that matches no function).
        if !self.kind.takes(arg_types.len()) {
            return Err(Error::UndefinedFunction(format!(
                "no function matches the given name and argument types: {} takes {}",
                self.kind.name(),
                self.kind.usage()
            ))
            .into());
        }
        Ok(self.kind.returns())
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        let (_, types, _) = self.kind.args();
        if !self.kind.takes(arg_types.len()) {
            // Left for `return_type` to refuse.
            return Ok(arg_types.to_vec());
        }
        Ok(types[..arg_types.len()].to_vec())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let (_, types, _) = self.kind.args();
        let arrays = ColumnarValue::values_to_arrays(&args.args)?
            .into_iter()
            .zip(types)
            .map(|(a, t)| {
                if a.data_type() == &t {
                    Ok(a)
                } else {
                    cast(&a, &t)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self.call(&arrays, rows)?;
        if scalar && rows == 1 {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&out, 0)?,
            ))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_names_the_optional_arguments() {
        assert_eq!(
            Kind::LogMetric.usage(),
            "log_metric(run_id, key, value [, step, ts])"
        );
        assert_eq!(Kind::LogParam.usage(), "log_param(run_id, key, value)");
    }
}
