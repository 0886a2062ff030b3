//! Naming what a statement that failed to plan lacks — a table, a function — from its
//! references, so the error has a precise code without reading DataFusion's message.

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as AstStatement;

use std::collections::HashMap;

use datafusion::logical_expr::LogicalPlan;

use crate::error::Error;

/// Names what a statement DataFusion could not plan lacks — a table or a function that
/// does not exist — by looking the statement's references up, rather than by reading
/// DataFusion's message. Errors with another cause come back as they are.
pub(super) fn diagnose_plan_error(
    state: &datafusion::execution::context::SessionState,
    statement: &AstStatement,
    err: datafusion::error::DataFusionError,
) -> Error {
    use datafusion::error::DataFusionError;
    if !matches!(err.find_root(), DataFusionError::Plan(_)) {
        return err.into();
    }
    // The table a CREATE TABLE makes is among the references, and does not exist yet.
    let created = match statement {
        AstStatement::CreateTable(create) => create
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase()),
        _ => None,
    };
    let df_statement = DfStatement::Statement(Box::new(statement.clone()));
    if let Ok(references) = state.resolve_table_references(&df_statement) {
        for reference in references {
            let name = reference.table().to_string();
            if created.as_deref() == Some(name.as_str()) {
                continue;
            }
            if reference.schema().is_none() && state.table_functions().contains_key(&name) {
                continue;
            }
            let exists = match state.schema_for_ref(reference.clone()) {
                Ok(schema) => schema.table_exist(&name),
                Err(_) => false,
            };
            if !exists {
                return Error::TableNotFound(name);
            }
        }
    }
    if let Some(name) = unknown_function(statement, state) {
        return Error::UndefinedFunction(format!("function {name} does not exist"));
    }
    err.into()
}

/// The first function `statement` calls that no registry of `state` knows.
pub(super) fn unknown_function(
    statement: &AstStatement,
    state: &datafusion::execution::context::SessionState,
) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Visit, Visitor};
    use std::ops::ControlFlow;
    struct Find<'a> {
        state: &'a datafusion::execution::context::SessionState,
    }
    impl Visitor for Find<'_> {
        type Break = String;
        fn pre_visit_expr(&mut self, expr: &SqlExpr) -> ControlFlow<String> {
            let SqlExpr::Function(f) = expr else {
                return ControlFlow::Continue(());
            };
            let Some(name) = f
                .name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.to_lowercase())
            else {
                return ControlFlow::Continue(());
            };
            // Functions the SQL planner implements itself, outside every registry.
            const PLANNER_FUNCTIONS: [&str; 2] = ["unnest", "unnest_outer"];
            let known = PLANNER_FUNCTIONS.contains(&name.as_str())
                || self.state.scalar_functions().contains_key(&name)
                || self.state.aggregate_functions().contains_key(&name)
                || self.state.window_functions().contains_key(&name)
                || self.state.table_functions().contains_key(&name);
            if known {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(name)
            }
        }
    }
    match statement.visit(&mut Find { state }) {
        ControlFlow::Break(name) => Some(name),
        ControlFlow::Continue(()) => None,
    }
}

/// The column an `INSERT … VALUES` gives a literal NULL that its table declares NOT NULL.
///
/// DataFusion plans such VALUES with the table's nullability and fails to build the batch
/// with an Arrow error that only its text tells apart; this finds the NULL in the plan
/// first, so the statement fails with [`Error::NotNullViolation`] (23502).
///
/// A NULL that an expression evaluates to (`NULLIF(1, 1)`, `1 + NULL`) is found too: when
/// a VALUES has NOT NULL columns, the check reads its rows after constant folding.
pub(super) fn null_into_not_null(
    input: &LogicalPlan,
    state: &datafusion::execution::context::SessionState,
) -> Option<String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut constrained = false;
    let _ = input.apply(|node| {
        if let LogicalPlan::Values(values) = node
            && values.schema.fields().iter().any(|f| !f.is_nullable())
        {
            constrained = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if !constrained {
        return None;
    }
    match state.optimize(input) {
        Ok(folded) => literal_null_into_not_null(&folded),
        // A statement the optimizer refuses fails when it runs, with its own error.
        Err(_) => literal_null_into_not_null(input),
    }
}

/// [`null_into_not_null`] on the literals of `input` as they are.
fn literal_null_into_not_null(input: &LogicalPlan) -> Option<String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    fn is_null(e: &Expr) -> bool {
        match e {
            Expr::Literal(v, _) => v.is_null(),
            Expr::Cast(c) => is_null(&c.expr),
            Expr::TryCast(c) => is_null(&c.expr),
            Expr::Alias(a) => is_null(&a.expr),
            _ => false,
        }
    }
    // The names the projection over the VALUES gives its columns (the table's).
    let mut names: HashMap<String, String> = HashMap::new();
    let mut found = None;
    let _ = input.apply(|node| {
        match node {
            LogicalPlan::Projection(p) => {
                for (expr, field) in p.expr.iter().zip(p.schema.fields()) {
                    if let [column] = expr.column_refs().into_iter().collect::<Vec<_>>()[..] {
                        names.insert(column.name.clone(), field.name().clone());
                    }
                }
            }
            LogicalPlan::Values(values) => {
                for (i, field) in values.schema.fields().iter().enumerate() {
                    if !field.is_nullable()
                        && values
                            .values
                            .iter()
                            .any(|row| row.get(i).is_some_and(is_null))
                    {
                        found = Some(
                            names
                                .get(field.name())
                                .cloned()
                                .unwrap_or_else(|| field.name().clone()),
                        );
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}
