//! `$n` parameters: their types (as clients are told them) and binding values into
//! statements whose plan depends on them.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement as AstStatement;

use super::*;
use crate::error::Result;

/// The target types of `CAST($n AS type)` expressions in `plan`.
pub(super) fn placeholder_cast_types(plan: &LogicalPlan) -> Result<Vec<(String, DataType)>> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    let mut found = Vec::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::Cast(cast) = e
                    && let Expr::Placeholder(p) = cast.expr.as_ref()
                {
                    found.push((p.id.clone(), cast.field.data_type().clone()));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(found)
}

/// For each `array_has($n, x)` in `plan` (how `x = ANY($n)` is planned) with an untyped
/// `$n`: `$n` and the list type of `x`'s type.
fn any_array_placeholder_types(plan: &LogicalPlan) -> Result<Vec<(String, DataType)>> {
    use datafusion::common::DFSchema;
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Expr, ExprSchemable};
    let mut found = Vec::new();
    plan.apply_with_subqueries(|node| {
        let mut schema = DFSchema::empty();
        for input in node.inputs() {
            schema.merge(input.schema());
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.name() == "array_has"
                    && let [Expr::Placeholder(p), element] = f.args.as_slice()
                    && p.field.is_none()
                    && let Ok(t) = element.get_type(&schema)
                    && !matches!(t, DataType::Null)
                {
                    found.push((
                        p.id.clone(),
                        DataType::List(Arc::new(Field::new_list_field(t, true))),
                    ));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(found)
}

/// The number of `$n` parameters of `statement` if any of them is an argument of a table
/// function in a `FROM` clause; `None` otherwise.
pub(super) fn table_function_parameters(statement: &AstStatement) -> Option<usize> {
    use datafusion::sql::sqlparser::ast::{
        Expr as SqlExpr, FunctionArg, FunctionArgExpr, TableFactor, Value, Visit, Visitor,
        visit_expressions,
    };
    use std::ops::ControlFlow;
    fn placeholders(node: &impl Visit) -> usize {
        let mut highest = 0;
        let _ = visit_expressions(node, |e| {
            if let SqlExpr::Value(v) = e
                && let Value::Placeholder(p) = &v.value
            {
                highest = highest.max(p.trim_start_matches('$').parse().unwrap_or(1));
            }
            ControlFlow::<()>::Continue(())
        });
        highest
    }
    struct InFunctionArgs(bool);
    impl Visitor for InFunctionArgs {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                args: Some(args), ..
            } = factor
            {
                for arg in &args.args {
                    let (FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
                    | FunctionArg::Named {
                        arg: FunctionArgExpr::Expr(e),
                        ..
                    }
                    | FunctionArg::ExprNamed {
                        arg: FunctionArgExpr::Expr(e),
                        ..
                    }) = arg
                    else {
                        continue;
                    };
                    if placeholders(e) > 0 {
                        self.0 = true;
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut found = InFunctionArgs(false);
    let _ = statement.visit(&mut found);
    found.0.then(|| placeholders(statement))
}

/// Replaces every `$n` in `statement` by the value bound to it (NULL when none is).
pub(super) fn bind_parameters(statement: &mut AstStatement, params: &ParamValues) -> Result<()> {
    use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Value, visit_expressions_mut};
    use std::ops::ControlFlow;
    let _ = visit_expressions_mut(statement, |e| {
        if let SqlExpr::Value(v) = e
            && let Value::Placeholder(p) = &v.value
        {
            let scalar = match params {
                ParamValues::List(list) => p
                    .trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| list.get(i.wrapping_sub(1)))
                    .map(|s| s.value.clone()),
                ParamValues::Map(map) => {
                    map.get(p.trim_start_matches('$')).map(|s| s.value.clone())
                }
            };
            v.value = match scalar {
                None => Value::Null,
                Some(s) if s.is_null() => Value::Null,
                Some(
                    datafusion::common::ScalarValue::Utf8(Some(t))
                    | datafusion::common::ScalarValue::Utf8View(Some(t))
                    | datafusion::common::ScalarValue::LargeUtf8(Some(t)),
                ) => Value::SingleQuotedString(t),
                Some(s) if s.data_type().is_numeric() => Value::Number(s.to_string(), false),
                Some(s) => Value::SingleQuotedString(s.to_string()),
            };
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(())
}

impl Session {
    /// Gives untyped `$n` placeholders the type the analyzer's coercion casts them to
    /// (`log_metric($1, $2, $3)` → text, text, double precision), so clients are told the
    /// types they should bind.
    pub(super) fn type_placeholders(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        use datafusion::common::tree_node::{Transformed, TreeNode as _};
        use datafusion::logical_expr::Expr;
        // A parameter the statement casts (`$1::varchar`) has the cast's type, as in
        // PostgreSQL, whatever DataFusion inferred from what it is compared with.
        let mut casts: HashMap<String, DataType> =
            placeholder_cast_types(&plan)?.into_iter().collect();
        let untyped = plan.get_parameter_types()?;
        // `x = ANY($1)` (planned as `array_has($1, x)`): $1 is an array of x's type. Clients
        // send a list without a type (psycopg's `list[str]`, pgcli's `relkind = ANY(%s)`).
        for (id, t) in any_array_placeholder_types(&plan)? {
            if untyped.get(&id).is_some_and(Option::is_none) {
                casts.entry(id).or_insert(t);
            }
        }
        if untyped
            .iter()
            .any(|(id, t)| t.is_none() && !casts.contains_key(id))
        {
            // Others that are still untyped take the type the analyzer casts them to.
            let state = self.ctx.state();
            if let Ok(analyzed) =
                state
                    .analyzer()
                    .execute_and_check(plan.clone(), state.config_options(), |_, _| {})
            {
                for (id, t) in placeholder_cast_types(&analyzed)? {
                    if untyped.get(&id).is_some_and(Option::is_none) {
                        casts.entry(id).or_insert(t);
                    }
                }
            }
        }
        casts.retain(|id, t| untyped.get(id).is_some_and(|have| have.as_ref() != Some(t)));
        if casts.is_empty() {
            return Ok(plan);
        }
        let typed = plan
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|expr| {
                    expr.transform_up(|e| match e {
                        Expr::Placeholder(p) => match casts.get(&p.id) {
                            Some(t) => Ok(Transformed::yes(Expr::Placeholder(
                                datafusion::logical_expr::expr::Placeholder::new_with_field(
                                    p.id,
                                    Some(Arc::new(Field::new("", t.clone(), true))),
                                ),
                            ))),
                            None => Ok(Transformed::no(Expr::Placeholder(p))),
                        },
                        other => Ok(Transformed::no(other)),
                    })
                })
            })?
            .data;
        Ok(typed)
    }

    /// Plans a [`Prepared::Deferred`] statement with `params` in place of its `$n`; any
    /// other statement comes back as it is.
    pub async fn bind_deferred(
        &self,
        prepared: &Prepared,
        params: ParamValues,
    ) -> Result<Prepared> {
        let Prepared::Deferred { statement, .. } = prepared else {
            return Ok(prepared.clone());
        };
        let mut statement = statement.as_ref().clone();
        bind_parameters(&mut statement, &params)?;
        Box::pin(self.prepare_ast(statement)).await
    }
}
