//! The fast path for `SELECT log_metric(…)`-style statements: tracking functions called
//! directly on constants, without the optimizer and the physical planner.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::memory::MemoryStream;

use super::*;
use crate::error::{Error, Result};

/// Names a top-level tracking-function column after the function, as PostgreSQL names
/// `SELECT f(…)` — `log_metric`, not `log_metric(Utf8("…"), …)` — when that name is free.
pub(super) fn name_tracking_calls(plan: LogicalPlan) -> Result<LogicalPlan> {
    use crate::tracking::functions::TrackingFunction;
    use datafusion::logical_expr::{Expr, Projection};
    let LogicalPlan::Projection(projection) = plan else {
        return Ok(plan);
    };
    let names: Vec<String> = projection
        .expr
        .iter()
        .map(|e| e.schema_name().to_string())
        .collect();
    let mut changed = false;
    let exprs: Vec<Expr> = projection
        .expr
        .iter()
        .map(|e| match e {
            Expr::ScalarFunction(f) => {
                let inner: &dyn std::any::Any = f.func.inner().as_ref();
                let name = f.func.name();
                let taken = names.iter().any(|n| n == name)
                    || projection
                        .expr
                        .iter()
                        .filter(|o| matches!(o, Expr::ScalarFunction(g) if g.func.name() == name))
                        .count()
                        > 1;
                if inner.downcast_ref::<TrackingFunction>().is_some() && !taken {
                    changed = true;
                    e.clone().alias(name)
                } else {
                    e.clone()
                }
            }
            other => other.clone(),
        })
        .collect();
    if !changed {
        return Ok(LogicalPlan::Projection(projection));
    }
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        projection.input.clone(),
    )?))
}

impl Session {
    /// `SELECT f(constants), …` where every `f` is a tracking function — the statement a
    /// training loop sends for every value — is answered by calling the functions
    /// directly (on the CPU runtime), without the optimizer and the physical planner.
    pub(super) async fn try_direct_call(&self, plan: &LogicalPlan) -> Result<Option<QueryOutput>> {
        use crate::tracking::functions::TrackingFunction;
        use datafusion::common::ScalarValue;
        use datafusion::logical_expr::Expr;
        let LogicalPlan::Projection(projection) = plan else {
            return Ok(None);
        };
        if !matches!(projection.input.as_ref(), LogicalPlan::EmptyRelation(e) if e.produce_one_row)
        {
            return Ok(None);
        }
        let mut calls = Vec::with_capacity(projection.expr.len());
        for expr in &projection.expr {
            let expr = match expr {
                Expr::Alias(a) => a.expr.as_ref(),
                e => e,
            };
            let Expr::ScalarFunction(f) = expr else {
                return Ok(None);
            };
            let inner: &dyn std::any::Any = f.func.inner().as_ref();
            if inner.downcast_ref::<TrackingFunction>().is_none() {
                return Ok(None);
            }
            let mut args: Vec<ScalarValue> = Vec::with_capacity(f.args.len());
            for a in &f.args {
                match a {
                    Expr::Literal(v, _) => args.push(v.clone()),
                    Expr::Cast(c) => match c.expr.as_ref() {
                        Expr::Literal(v, _) => args.push(v.cast_to(c.field.data_type())?),
                        _ => return Ok(None),
                    },
                    _ => return Ok(None),
                }
            }
            calls.push((f.func.clone(), args));
        }
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let batch_schema = schema.clone();
        // The calls write (synced, by default): they run on the blocking pool, so waiting
        // for the disk holds no worker that polls queries or sockets.
        let batch = self
            .db
            .executor()
            .run_blocking(move || {
                let mut columns = Vec::with_capacity(calls.len());
                for (udf, args) in calls {
                    let inner: &dyn std::any::Any = udf.inner().as_ref();
                    let f = inner
                        .downcast_ref::<TrackingFunction>()
                        .ok_or_else(|| Error::InvalidArgument("not a tracking function".into()))?;
                    columns.push(f.call_scalars(&args)?);
                }
                RecordBatch::try_new(batch_schema, columns).map_err(|e| Error::DataFusion(e.into()))
            })
            .await?;
        let stream = MemoryStream::try_new(vec![batch], schema, None)?;
        Ok(Some(QueryOutput::Rows(Box::pin(stream))))
    }
}
