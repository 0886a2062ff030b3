//! Queries passed as text to table functions (`predict('m', 'SELECT …')`), planned
//! before the statement that calls them.

use datafusion::sql::sqlparser::ast::Statement as AstStatement;

use super::*;
use crate::error::{Error, Result};

/// The string literals `statement` passes to table functions at the positions
/// `positions(function)` names.
pub(super) fn query_arguments(
    statement: &AstStatement,
    positions: impl Fn(&str) -> Vec<usize>,
) -> Vec<String> {
    use datafusion::sql::sqlparser::ast::{
        Expr as SqlExpr, FunctionArg, FunctionArgExpr, TableFactor, Value, Visit, Visitor,
    };
    use std::ops::ControlFlow;
    struct Found<F> {
        positions: F,
        queries: Vec<String>,
    }
    impl<F: Fn(&str) -> Vec<usize>> Visitor for Found<F> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                args: Some(args),
                ..
            } = factor
            else {
                return ControlFlow::Continue(());
            };
            let Some(function) = name.0.last().and_then(|p| p.as_ident()) else {
                return ControlFlow::Continue(());
            };
            for position in (self.positions)(&function.value) {
                if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v)))) =
                    args.args.get(position)
                    && let Value::SingleQuotedString(sql)
                    | Value::DollarQuotedString(
                        datafusion::sql::sqlparser::ast::DollarQuotedString { value: sql, .. },
                    ) = &v.value
                {
                    self.queries.push(sql.clone());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut found = Found {
        positions,
        queries: Vec::new(),
    };
    let _ = statement.visit(&mut found);
    found.queries
}

impl Session {
    /// Plans the queries `statement` passes as text to table functions that take one (see
    /// [`Database::register_query_argument`]), for the functions to find in
    /// [`PlannedQueries`].
    ///
    /// [`Database::register_query_argument`]: crate::Database::register_query_argument
    pub(super) async fn plan_query_arguments(&self, statement: &AstStatement) -> Result<()> {
        let queries = query_arguments(statement, |f| self.db.query_argument_positions(f));
        if queries.is_empty() {
            return Ok(());
        }
        let Some(planned) = self.ctx.state().config().get_extension::<PlannedQueries>() else {
            return Ok(());
        };
        // Planned afresh for every statement: tables may have changed since the last.
        for sql in queries {
            let mut statements = self.parse_ast(&sql)?;
            let query = match (statements.pop(), statements.is_empty()) {
                (Some(q @ AstStatement::Query(_)), true) => q,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "the query argument must be exactly one SELECT statement, got: {sql}"
                    )));
                }
            };
            if let Prepared::Plan(plan) = Box::pin(self.prepare_ast(query)).await? {
                planned.insert(sql, plan);
            }
        }
        Ok(())
    }
}
