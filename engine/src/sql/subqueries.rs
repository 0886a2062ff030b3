//! Scalar subqueries in a select list over user tables.
//!
//! datafusion-pg-catalog's parser rewrites every select-list subquery so that clients'
//! catalog queries plan: a correlated one becomes `NULL`, any other gets `LIMIT 1`. Over
//! user tables that answers wrongly and silently — `SELECT a, (SELECT b FROM t t2 WHERE
//! t2.a = t.a) FROM t` returned NULL on every row, and a subquery of several rows gave its
//! first instead of an error. For statements that read no catalog table, runbase applies
//! the parser's other rewrites but not that one. DataFusion then plans the subquery, or
//! refuses it with an error.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, ObjectName, Query, SelectItem, SetExpr, Statement,
    TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::sql::rules::{
    AliasDuplicatedProjectionRewrite, CurrentUserVariableToSessionUserFunctionCall,
    FixArrayLiteral, FixVersionColumnName, PrependUnqualifiedPgTableName,
    ResolveUnqualifiedIdentifier, RewriteArrayAnyAllOperation, RewritePgCatalogOperator,
    RewriteRegCastToSubquery, SqlStatementRewriteRule, StripCallableQualifier, StripCollate,
};

/// `rewritten` (the compatibility parser's statements for `sql`), with each statement that
/// has a select-list subquery and reads no catalog table parsed again without the rewrite
/// that drops such subqueries.
pub(super) fn keep_user_subqueries(sql: &str, rewritten: Vec<Statement>) -> Vec<Statement> {
    // Cheap first: a scalar subquery needs a second SELECT.
    let lower = sql.to_ascii_lowercase();
    if lower.matches("select").count() < 2 {
        return rewritten;
    }
    let Ok(plain) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return rewritten;
    };
    if plain.len() != rewritten.len() {
        return rewritten;
    }
    plain
        .into_iter()
        .zip(rewritten)
        .map(|(plain, rewritten)| {
            if has_select_list_subquery(&plain)
                && (!reads_catalog(&plain) || catalog_lookups_only(&plain))
            {
                compatibility_rewrites(plain)
            } else {
                rewritten
            }
        })
        .collect()
}

/// The compatibility parser's rewrites, in its order, but for the one that drops
/// select-list subqueries.
fn compatibility_rewrites(statement: Statement) -> Statement {
    let rules: [&dyn SqlStatementRewriteRule; 11] = [
        &AliasDuplicatedProjectionRewrite,
        &ResolveUnqualifiedIdentifier,
        &RewriteArrayAnyAllOperation,
        &PrependUnqualifiedPgTableName,
        &StripCallableQualifier,
        &FixArrayLiteral,
        &CurrentUserVariableToSessionUserFunctionCall,
        &StripCollate,
        &RewritePgCatalogOperator,
        &RewriteRegCastToSubquery::new(),
        &FixVersionColumnName,
    ];
    rules
        .into_iter()
        .fold(statement, |statement, rule| rule.rewrite(statement))
}

/// Whether some select-list item of some SELECT of `statement` is a subquery for which
/// `holds` is true.
fn any_select_list_subquery(statement: &Statement, holds: impl FnMut(&Query) -> bool) -> bool {
    struct Find<F>(F);
    impl<F: FnMut(&Query) -> bool> Visitor for Find<F> {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_ref() {
                for item in &select.projection {
                    if let SelectItem::UnnamedExpr(Expr::Subquery(sub))
                    | SelectItem::ExprWithAlias {
                        expr: Expr::Subquery(sub),
                        ..
                    } = item
                        && (self.0)(sub)
                    {
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    statement.visit(&mut Find(holds)).is_break()
}

/// Whether some SELECT of `statement` has a subquery as a select-list item.
fn has_select_list_subquery(statement: &Statement) -> bool {
    any_select_list_subquery(statement, |_| true)
}

/// Whether every select-list subquery of `statement` is a catalog lookup: one value read
/// from `pg_*` tables, without LIMIT, grouping or subqueries of its own. runbase aggregates
/// such a lookup with `first_value` (`crate::pg::rewrite`), which DataFusion decorrelates;
/// the compatibility rule would answer it as NULL when its correlation is qualified, or cap
/// it with a LIMIT that DataFusion cannot plan when it is not (sqlsmith's
/// `(select nspname from pg_namespace where oid = pronamespace)`).
fn catalog_lookups_only(statement: &Statement) -> bool {
    !any_select_list_subquery(statement, |sub| !is_catalog_lookup(sub))
}

/// Whether `query` is one value read from `pg_*` tables, as [`catalog_lookups_only`] takes.
fn is_catalog_lookup(query: &Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let no_group = matches!(&select.group_by, GroupByExpr::Expressions(v, _) if v.is_empty());
    let catalog_tables = !select.from.is_empty()
        && select.from.iter().all(|t| {
            t.joins.is_empty()
                && matches!(&t.relation, TableFactor::Table { name, .. }
                if name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                    i.value.to_ascii_lowercase().starts_with("pg_")
                }))
        });
    let nested = {
        struct Nested;
        impl Visitor for Nested {
            type Break = ();
            fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
                if matches!(
                    e,
                    Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }
                ) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
        }
        select.visit(&mut Nested).is_break()
    };
    query.limit_clause.is_none()
        && query.with.is_none()
        && no_group
        && select.projection.len() == 1
        && catalog_tables
        && !nested
        && select.selection.as_ref().is_none_or(equalities_only)
}

/// Whether `e` is a conjunction of equalities between columns and constants: the
/// correlation DataFusion decorrelates (psql's `\d` has lookups correlated by `<>` and by a
/// bare boolean column, which stay with the compatibility rule).
fn equalities_only(e: &Expr) -> bool {
    fn operand(e: &Expr) -> bool {
        match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Value(_) => true,
            Expr::Cast { expr, .. } | Expr::Nested(expr) => operand(expr),
            _ => false,
        }
    }
    match e {
        Expr::Nested(inner) => equalities_only(inner),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => equalities_only(left) && equalities_only(right),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => operand(left) && operand(right),
        _ => false,
    }
}

/// Whether `statement` names a catalog relation (`pg_catalog.*`, `information_schema.*`,
/// `pg_*`): what clients' introspection queries read.
fn reads_catalog(statement: &Statement) -> bool {
    struct Find;
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            let catalog = relation.0.iter().any(|part| {
                part.as_ident().is_some_and(|i| {
                    let name = i.value.to_ascii_lowercase();
                    name == "pg_catalog" || name == "information_schema" || name.starts_with("pg_")
                })
            });
            if catalog {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    statement.visit(&mut Find).is_break()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    fn parse(sql: &str) -> String {
        let rewritten = PostgresCompatibilityParser::new()
            .parse(sql)
            .expect("parses");
        keep_user_subqueries(sql, rewritten)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn subqueries_over_user_tables_are_kept() {
        let sql = "SELECT a, (SELECT b FROM t t2 WHERE t2.a = t.a) FROM t";
        assert!(parse(sql).contains("t2.a = t.a"), "{}", parse(sql));
        let sql = "SELECT (SELECT b FROM t) AS x";
        assert!(!parse(sql).contains("LIMIT"), "{}", parse(sql));
    }

    #[test]
    fn catalog_lookups_are_kept_and_other_catalog_subqueries_rewritten() {
        let sql = "SELECT c.relname, (SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE n.oid = c.relnamespace) FROM pg_catalog.pg_class c";
        assert!(
            parse(sql).contains("n.oid = c.relnamespace"),
            "{}",
            parse(sql)
        );
        let sql = "SELECT a.attname, (SELECT d.adbin FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND a.atthasdef) FROM pg_catalog.pg_attribute a";
        assert!(
            !parse(sql).contains("d.adrelid = a.attrelid"),
            "{}",
            parse(sql)
        );
        let sql = "SELECT c.relname, (SELECT count(*) FROM t WHERE t.a = c.oid) FROM pg_catalog.pg_class c";
        assert!(!parse(sql).contains("t.a = c.oid"), "{}", parse(sql));
        let sql = "SELECT c.relname, (SELECT n.nspname FROM pg_namespace n WHERE n.oid = c.relnamespace LIMIT 1) FROM pg_class c";
        assert!(
            !parse(sql).contains("n.oid = c.relnamespace"),
            "{}",
            parse(sql)
        );
    }
}
