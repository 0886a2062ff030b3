//! A bound on how deep a statement's expressions nest, checked right after parsing.
//!
//! The SQL parser limits nesting it builds by recursion (parentheses, calls, subqueries), but
//! builds an operator chain — `1 + 1 + … + 1`, `a = 1 OR a = 2 OR …` — in a loop, as a tree
//! one level deeper per operator. Everything after the parser (cloning, planning, dropping)
//! walks that tree recursively: a few hundred operators overflowed a worker's stack and took
//! the server down. So a statement nesting deeper than [`MAX_EXPR_DEPTH`] is refused with
//! 54001 (statement_too_complex) before anything else touches it, and is taken apart
//! without recursion ([`dispose`]).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Statement, Value, Visit, VisitMut, Visitor, VisitorMut,
};

use crate::{Error, Result};

/// The deepest expression nesting a statement may have.
pub const MAX_EXPR_DEPTH: usize = 1_000;

/// The deepest an array constructor may nest (PostgreSQL's limit on array dimensions):
/// planning `ARRAY[ARRAY[…]]` takes time exponential in its depth.
pub const MAX_ARRAY_DEPTH: usize = 6;

/// Counts nesting while visiting; stops (without descending further) past a limit, saying
/// which.
struct Depth {
    now: usize,
    arrays: usize,
}

impl Visitor for Depth {
    type Break = String;

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<String> {
        self.now += 1;
        if matches!(e, Expr::Array(_)) {
            self.arrays += 1;
        }
        if self.now > MAX_EXPR_DEPTH {
            ControlFlow::Break(format!(
                "statement too complex: its expressions nest more than {MAX_EXPR_DEPTH} levels deep (a chain of that many operators, or calls nested in calls); split it into smaller expressions or use IN (…)"
            ))
        } else if self.arrays > MAX_ARRAY_DEPTH {
            ControlFlow::Break(format!(
                "number of array dimensions exceeds the maximum allowed ({MAX_ARRAY_DEPTH})"
            ))
        } else {
            ControlFlow::Continue(())
        }
    }

    fn post_visit_expr(&mut self, e: &Expr) -> ControlFlow<String> {
        self.now -= 1;
        if matches!(e, Expr::Array(_)) {
            self.arrays -= 1;
        }
        ControlFlow::Continue(())
    }
}

/// The deepest square brackets may nest in a statement's text: the parser's handling of
/// `ARRAY[ARRAY[…]]` takes time exponential in the depth (60 levels did not finish), before
/// any of the checks on the parsed tree can run.
pub const MAX_BRACKET_DEPTH: usize = 32;

/// Refuses (54001) statement text whose square brackets nest deeper than
/// [`MAX_BRACKET_DEPTH`] outside quoted strings and identifiers; run before parsing.
pub(crate) fn check_text(sql: &str) -> Result<()> {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => {
                depth += 1;
                max = max.max(depth);
            }
            (None, ']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if max > MAX_BRACKET_DEPTH {
        return Err(Error::TooComplex(format!(
            "statement too complex: square brackets nest {max} deep (at most {MAX_BRACKET_DEPTH})"
        )));
    }
    Ok(())
}

/// Passes `statements` on, or refuses them (54001) when one nests too deep.
pub(crate) fn check(statements: Vec<Statement>) -> Result<Vec<Statement>> {
    let refused = statements
        .iter()
        .find_map(|s| match s.visit(&mut Depth { now: 0, arrays: 0 }) {
            ControlFlow::Break(why) => Some(why),
            ControlFlow::Continue(()) => None,
        });
    let Some(why) = refused else {
        return Ok(statements);
    };
    for statement in statements {
        dispose(statement);
    }
    Err(Error::TooComplex(why))
}

/// Takes operator chains out of the tree it visits, leaving NULL literals in their place.
struct TakeChains(Vec<Expr>);

fn is_chain(e: &Expr) -> bool {
    matches!(
        e,
        Expr::BinaryOp { .. } | Expr::UnaryOp { .. } | Expr::Nested(_)
    )
}

impl VisitorMut for TakeChains {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if is_chain(e) {
            self.0.push(std::mem::replace(e, Expr::value(Value::Null)));
        }
        ControlFlow::Continue(())
    }
}

/// Drops `statement` without recursing down its operator chains: they are taken out and
/// unlinked one node at a time. What is left nests only as deep as the parser allows.
pub(crate) fn dispose(mut statement: Statement) {
    let mut taken = TakeChains(Vec::new());
    let _ = VisitMut::visit(&mut statement, &mut taken);
    drop(statement);
    while let Some(e) = taken.0.pop() {
        match e {
            Expr::BinaryOp { left, right, .. } => {
                taken.0.push(*left);
                taken.0.push(*right);
            }
            Expr::UnaryOp { expr, .. } | Expr::Nested(expr) => taken.0.push(*expr),
            mut other => {
                let _ = VisitMut::visit(&mut other, &mut taken);
                drop(other);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn parse(sql: &str) -> Vec<Statement> {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses")
    }

    #[test]
    fn long_operator_chains_are_refused_and_dropped_without_recursion() {
        // 200,000 levels: dropping it recursively would overflow any thread's stack.
        let chain = format!("SELECT {} FROM t", vec!["1"; 200_000].join(" + "));
        let err = check(parse(&chain)).expect_err("too deep");
        assert_eq!(err.code(), crate::error::ErrorCode::TooComplex);
        let ors = format!(
            "SELECT * FROM t WHERE {}",
            (0..5_000)
                .map(|i| format!("a = {i}"))
                .collect::<Vec<_>>()
                .join(" OR ")
        );
        assert!(check(parse(&ors)).is_err());
        let arrays = format!("SELECT {}1{}", "ARRAY[".repeat(7), "]".repeat(7));
        let err = check(parse(&arrays)).expect_err("too many dimensions");
        assert!(err.to_string().contains("array dimensions"), "{err}");
        let deep = format!("SELECT {}1{}", "ARRAY[".repeat(200), "]".repeat(200));
        assert!(check_text(&deep).is_err());
        assert!(check_text("SELECT '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['").is_ok());
        let six = format!("SELECT {}1{}", "ARRAY[".repeat(6), "]".repeat(6));
        assert!(check(parse(&six)).is_ok());
    }

    #[test]
    fn ordinary_statements_pass() {
        let near = format!("SELECT {}", vec!["1"; MAX_EXPR_DEPTH / 2].join(" + "));
        assert_eq!(check(parse(&near)).expect("passes").len(), 1);
        let wide = format!(
            "SELECT {} FROM t WHERE a IN ({})",
            (0..3_000)
                .map(|i| format!("a + {i}"))
                .collect::<Vec<_>>()
                .join(", "),
            (0..50_000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert_eq!(check(parse(&wide)).expect("passes").len(), 1);
    }
}
