//! Scalar subqueries in a select list over user tables.
//!
//! datafusion-pg-catalog's parser rewrites every select-list subquery so that clients'
//! catalog queries plan: a correlated one becomes `NULL`, any other gets `LIMIT 1`. Over
//! user tables that answers wrongly and silently — `SELECT a, (SELECT b FROM t t2 WHERE
//! t2.a = t.a) FROM t` returned NULL on every row, and a subquery of several rows gave its
//! first instead of an error. For statements that read no catalog table, runbase applies
//! the parser's other rewrites but not that one. DataFusion then plans the subquery, or
//! refuses it with an error.
//!
//! The parser's rule only looks at subqueries that are select-list items themselves. In a
//! catalog query, a correlated subquery nested in an item (SQLAlchemy 2.1's column listing
//! has them inside `CASE`) that is not a lookup DataFusion decorrelates is answered as the
//! rule answers a top-level one, `NULL`; catalog lookups stay and plan.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, ObjectName, Query, SelectItem, SetExpr, Statement,
    TableFactor, Value, Visit, VisitMut, Visitor, VisitorMut,
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
            let catalog = reads_catalog(&plain);
            let mut statement =
                if has_select_list_subquery(&plain) && (!catalog || catalog_lookups_only(&plain)) {
                    compatibility_rewrites(plain)
                } else {
                    rewritten
                };
            if catalog {
                null_nested_correlated_subqueries(&mut statement);
            }
            statement
        })
        .collect()
}

/// Replaces each correlated subquery nested inside a select-list item of `statement` (not
/// the item itself, which the compatibility rule has seen) by `NULL`, unless it is a
/// catalog lookup ([`is_catalog_lookup`]).
fn null_nested_correlated_subqueries(statement: &mut Statement) {
    struct Items;
    impl VisitorMut for Items {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_mut() {
                for item in &mut select.projection {
                    let expr = match item {
                        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
                        _ => continue,
                    };
                    if !matches!(expr, Expr::Subquery(_)) {
                        let _ = expr.visit(&mut Nested);
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    struct Nested;
    impl VisitorMut for Nested {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if let Expr::Subquery(query) = e
                && !is_catalog_lookup(query)
                && is_correlated(query)
            {
                *e = Expr::Value(Value::Null.into());
            }
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Items);
}

/// Whether `query` names a column qualified by a relation it does not read itself: a
/// reference to an outer query. (Unqualified names are taken as its own.)
fn is_correlated(query: &Query) -> bool {
    struct Names(Vec<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table { name, alias, .. } = t {
                if let Some(last) = name.0.last().and_then(|p| p.as_ident()) {
                    self.0.push(last.value.to_ascii_lowercase());
                }
                if let Some(alias) = alias {
                    self.0.push(alias.name.value.to_ascii_lowercase());
                }
            }
            ControlFlow::Continue(())
        }
    }
    struct Outer<'a>(&'a [String]);
    impl Visitor for Outer<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::CompoundIdentifier(parts) = e
                && parts.len() >= 2
                && !self
                    .0
                    .contains(&parts[parts.len() - 2].value.to_ascii_lowercase())
            {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names(Vec::new());
    let _ = query.visit(&mut names);
    query.visit(&mut Outer(&names.0)).is_break()
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

    #[test]
    fn correlated_catalog_subqueries_nested_in_an_item_are_null_unless_lookups() {
        // SQLAlchemy 2.1's column listing, cut down: subqueries inside CASE, fully qualified.
        let sql = "SELECT pg_catalog.pg_attribute.attname, \
            CASE WHEN pg_catalog.pg_attribute.attidentity != '' THEN (SELECT json_build_object('start', pg_catalog.pg_sequence.seqstart) FROM pg_catalog.pg_sequence WHERE pg_catalog.pg_attribute.attidentity != '' AND pg_catalog.pg_sequence.seqrelid = pg_catalog.pg_attribute.attrelid) ELSE NULL END AS identity_options, \
            CASE WHEN (SELECT pg_catalog.pg_type.typcollation FROM pg_catalog.pg_type WHERE pg_catalog.pg_type.oid = pg_catalog.pg_attribute.atttypid) != pg_catalog.pg_attribute.attcollation THEN (SELECT pg_catalog.pg_collation.collname FROM pg_catalog.pg_collation JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_collation.collnamespace WHERE pg_catalog.pg_collation.oid = pg_catalog.pg_attribute.attcollation) ELSE NULL END AS collation, \
            coalesce((SELECT 1 FROM pg_catalog.pg_type WHERE typname = 'x'), 0) \
            FROM pg_catalog.pg_attribute";
        let out = parse(sql);
        assert!(!out.contains("pg_sequence"), "{out}");
        assert!(!out.contains("pg_collation"), "{out}");
        assert!(
            out.contains("pg_catalog.pg_type.oid = pg_catalog.pg_attribute.atttypid"),
            "the lookup stays: {out}"
        );
        assert!(out.contains("typname = 'x'"), "uncorrelated stays: {out}");
        // Subqueries over user tables are never touched.
        let sql =
            "SELECT a, CASE WHEN a > 0 THEN (SELECT max(b) FROM t t2 WHERE t2.a < t.a) END FROM t";
        assert!(parse(sql).contains("t2.a < t.a"), "{}", parse(sql));
    }
}
