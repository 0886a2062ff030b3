//! Rewrites of a parsed statement into SQL that DataFusion runs the way PostgreSQL runs
//! the original. Each addresses something drivers and tools send (named per rule); all
//! run in one pass over the statement's expressions ([`compatibility`]).
//!
//! - bytea literals: `'\x0a1b'::bytea` is the bytes the hex spells (psycopg2);
//! - `LIKE … ESCAPE 'c'` with an escape other than backslash (SQLAlchemy);
//! - a correlated scalar subquery over a recursive CTE correlated in its anchor, which
//!   DataFusion cannot plan, is decorrelated (asyncpg's type introspection);
//! - a scalar subquery over `pg_catalog` tables that returns one row by construction is
//!   aggregated with `first_value` (SQLAlchemy's column listing);
//! - `oid::regtype::text` is the type's name, as `format_type` spells it (asyncpg's
//!   introspection, tools that show column types), not the oid's digits;
//! - an unqualified `pg_indexes` is `pg_catalog.pg_indexes`, as on PostgreSQL's search
//!   path (DuckDB's postgres extension reads it while attaching);
//! - `information_schema.tables.is_insertable_into`, which DataFusion's `information_schema`
//!   lacks, is spelled out: `YES` for user tables, `NO` for views and system tables
//!   (sqlsmith picks INSERT targets by it);
//! - `unnest(proargtypes)` unnests the argument type oids (`proargtypes` is their text, as an
//!   `oidvector` prints; sqlsmith reads functions' signatures so);
//! - `SET TIME ZONE x` is `SET timezone = x` (pgcli sends `SET TIME ZONE "Etc/UTC"` on
//!   start-up); `LOCAL` and `DEFAULT` are the default, UTC;
//! - a `VALUES` list holding a subquery is the same rows as `SELECT … UNION ALL SELECT …`:
//!   DataFusion evaluates VALUES before any subquery runs and fails with XX000
//!   (`INSERT INTO t VALUES ((SELECT max(a) FROM t) + 1)`, found by sqlsmith).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, DataType as SqlType, Expr as SqlExpr, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, Ident, LimitClause, ObjectName, ObjectNamePart, OrderByKind,
    Query, Select, SelectItem, SetExpr, SetOperator, SetQuantifier, Statement, TableAliasColumnDef,
    TableFactor, Value, Visit, VisitMut, Visitor, VisitorMut, visit_expressions_mut,
    visit_relations_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Error, Result};

/// Applies every rewrite to `statement`.
pub(crate) fn compatibility(statement: &mut Statement) -> Result<()> {
    set_time_zone_as_assignment(statement);
    qualify_catalog_relations(statement);
    let _ = statement.visit(&mut ValuesWithSubqueries);
    let info_tables = reads_information_schema_tables(statement);
    let flow = visit_expressions_mut(statement, |e| {
        if info_tables {
            spell_is_insertable_into(e);
        }
        unnest_argument_types(e);
        argument_type_names(e);
        let step = decode_bytea_literal(e)
            .and_then(|()| rewrite_like_escape(e))
            .and_then(|()| regtype_names(e))
            .map(|()| {
                decorrelate_recursive_subquery(e);
                aggregate_catalog_subquery(e);
            });
        match step {
            Ok(()) => ControlFlow::Continue(()),
            Err(err) => ControlFlow::Break(err),
        }
    });
    match flow {
        ControlFlow::Break(err) => Err(err),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Whether `statement` reads `information_schema.tables`.
fn reads_information_schema_tables(statement: &Statement) -> bool {
    struct Find;
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            let parts: Vec<String> = name
                .0
                .iter()
                .filter_map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
                .collect();
            if parts.ends_with(&["information_schema".to_string(), "tables".to_string()]) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    statement.visit(&mut Find).is_break()
}

/// Spells `[q.]is_insertable_into` of `information_schema.tables` out from its other
/// columns: only a user table (a `BASE TABLE` outside `runbase` and the catalogs) takes
/// INSERT.
fn spell_is_insertable_into(e: &mut SqlExpr) {
    let qualifier = match e {
        SqlExpr::Identifier(id) if id.value.eq_ignore_ascii_case("is_insertable_into") => {
            String::new()
        }
        SqlExpr::CompoundIdentifier(ids)
            if ids.len() >= 2
                && ids
                    .last()
                    .is_some_and(|id| id.value.eq_ignore_ascii_case("is_insertable_into")) =>
        {
            ids[..ids.len() - 1]
                .iter()
                .map(|i| format!("{i}."))
                .collect::<String>()
        }
        _ => return,
    };
    let sql = format!(
        "CASE WHEN {qualifier}table_type = 'BASE TABLE' AND {qualifier}table_schema NOT IN \
         ('runbase', 'pg_catalog', 'information_schema') THEN 'YES' ELSE 'NO' END"
    );
    if let Ok(spelled) = parse_expr(&sql) {
        *e = spelled;
    }
}

/// `unnest([q.]proargtypes)`: the text of the oids, split and cast to `oid[]` (no
/// arguments: no rows).
fn unnest_argument_types(e: &mut SqlExpr) {
    let SqlExpr::Function(f) = e else {
        return;
    };
    if !f.name.to_string().eq_ignore_ascii_case("unnest") {
        return;
    }
    let FunctionArguments::List(list) = &mut f.args else {
        return;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] = list.args.as_mut_slice() else {
        return;
    };
    if !is_column_named(arg, &["proargtypes"]) {
        return;
    }
    if let Ok(split) = parse_expr(&format!(
        "CAST(string_to_array(nullif({arg}, ''), ' ') AS oid[])"
    )) {
        *arg = split;
    }
}

/// Whether `e` is a column (qualified or not) with one of `names`.
fn is_column_named(e: &SqlExpr, names: &[&str]) -> bool {
    let column = match e {
        SqlExpr::Identifier(id) => Some(id),
        SqlExpr::CompoundIdentifier(ids) => ids.last(),
        _ => None,
    };
    column.is_some_and(|c| names.iter().any(|n| c.value.eq_ignore_ascii_case(n)))
}

/// Whether `t` is `regtype` (or `pg_catalog.regtype`).
fn is_regtype(t: &SqlType) -> bool {
    matches!(t, SqlType::Custom(name, args)
        if args.is_empty()
            && name.0.last().is_some_and(|p| p.to_string().eq_ignore_ascii_case("regtype")))
}

/// Rewrites `proargtypes::regtype[]` (and `proallargtypes`) into
/// `oidvector_type_names(proargtypes)`: the argument types' names, as PostgreSQL shows a
/// `regtype[]` (pgcli lists functions with `proargtypes::regtype[]::text[]`).
fn argument_type_names(e: &mut SqlExpr) {
    let SqlExpr::Cast {
        expr, data_type, ..
    } = e
    else {
        return;
    };
    let SqlType::Array(
        datafusion::sql::sqlparser::ast::ArrayElemTypeDef::SquareBracket(element, _)
        | datafusion::sql::sqlparser::ast::ArrayElemTypeDef::AngleBracket(element),
    ) = data_type
    else {
        return;
    };
    if is_regtype(element)
        && is_column_named(expr, &["proargtypes", "proallargtypes"])
        && let Ok(names) = parse_expr(&format!("oidvector_type_names({expr})"))
    {
        *e = names;
    }
}

/// Turns each `VALUES` list holding a subquery into `SELECT … AS column1, … UNION ALL …`.
struct ValuesWithSubqueries;

impl VisitorMut for ValuesWithSubqueries {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        values_as_selects(&mut query.body);
        ControlFlow::Continue(())
    }
}

/// Rewrites `body` (or the sides of its set operations) if it is a `VALUES` list with a
/// subquery in it.
fn values_as_selects(body: &mut SetExpr) {
    match body {
        SetExpr::SetOperation { left, right, .. } => {
            values_as_selects(left);
            values_as_selects(right);
        }
        SetExpr::Values(values) => {
            let has_subquery = values.rows.iter().flat_map(|r| &r.content).any(|e| {
                struct Finds;
                impl Visitor for Finds {
                    type Break = ();
                    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
                        ControlFlow::Break(())
                    }
                }
                e.visit(&mut Finds).is_break()
            });
            // `DEFAULT` in a row is INSERT's, which only VALUES spells.
            let has_default = values.rows.iter().flat_map(|r| &r.content).any(
                |e| matches!(e, SqlExpr::Identifier(id) if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("default")),
            );
            if !has_subquery || has_default || values.rows.is_empty() {
                return;
            }
            let selects = values
                .rows
                .iter()
                .map(|row| {
                    let items = row
                        .content
                        .iter()
                        .enumerate()
                        .map(|(i, e)| format!("{e} AS column{}", i + 1))
                        .collect::<Vec<_>>();
                    format!("SELECT {}", items.join(", "))
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            // The rows came from the parser, so they parse again; if not, VALUES stays.
            if let Ok(mut parsed) = Parser::parse_sql(&PostgreSqlDialect {}, &selects)
                && let Some(Statement::Query(q)) = parsed.pop()
            {
                *body = *q.body;
            }
        }
        _ => {}
    }
}

/// The `pg_catalog` relations runbase adds that the catalog library does not qualify.
const RUNBASE_CATALOG_RELATIONS: [&str; 1] = ["pg_indexes"];

/// Qualifies unqualified [`RUNBASE_CATALOG_RELATIONS`] with `pg_catalog`.
fn qualify_catalog_relations(statement: &mut Statement) {
    let _ = visit_relations_mut(statement, |name| {
        if let [ObjectNamePart::Identifier(id)] = name.0.as_slice()
            && RUNBASE_CATALOG_RELATIONS
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&id.value))
        {
            name.0
                .insert(0, ObjectNamePart::Identifier(Ident::new("pg_catalog")));
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Parses one SQL expression (built by a rewrite, so a failure is a bug here).
fn parse_expr(sql: &str) -> Result<SqlExpr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| Error::Internal(format!("rewriting {sql}: {e}")))
}

/// Rewrites `'\x0a1b'::bytea` (and `CAST(… AS bytea)`) into the bytes the hex spells, as
/// PostgreSQL reads bytea literals (psycopg2 and other drivers that interpolate on the
/// client send bytes so); a plain cast would keep the text's characters.
fn decode_bytea_literal(e: &mut SqlExpr) -> Result<()> {
    let SqlExpr::Cast {
        expr, data_type, ..
    } = e
    else {
        return Ok(());
    };
    let is_bytea = matches!(data_type, SqlType::Bytea)
        || matches!(data_type, SqlType::Custom(n, _) if n.to_string().eq_ignore_ascii_case("bytea"));
    let text = match expr.as_ref() {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(t) | Value::EscapedStringLiteral(t) => t.clone(),
            _ => return Ok(()),
        },
        _ => return Ok(()),
    };
    let Some(hex) = text.strip_prefix("\\x").filter(|_| is_bytea) else {
        return Ok(());
    };
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidText(format!(
            "invalid hexadecimal data in bytea literal \"{text}\""
        )));
    }
    *e = parse_expr(&format!("decode('{hex}', 'hex')"))?;
    Ok(())
}

/// Rewrites `x LIKE p ESCAPE 'c'` with an escape character other than backslash (which is
/// all DataFusion supports; SQLAlchemy's schema listing uses `ESCAPE '/'`) into the same
/// match with backslash as the escape: in `p`, backslashes are doubled and `c` becomes
/// backslash (`cc` stays a literal `c`).
fn rewrite_like_escape(e: &mut SqlExpr) -> Result<()> {
    let (SqlExpr::Like {
        pattern,
        escape_char,
        ..
    }
    | SqlExpr::ILike {
        pattern,
        escape_char,
        ..
    }) = e
    else {
        return Ok(());
    };
    let escape = match escape_char.as_ref().map(|v| &v.value) {
        Some(Value::SingleQuotedString(c)) if c != "\\" && c.chars().count() == 1 => c.clone(),
        _ => return Ok(()),
    };
    let quoted = escape.replace('\'', "''");
    **pattern = parse_expr(&format!(
        "replace(replace(replace(replace(({pattern}), '\\', '\\\\'), '{quoted}{quoted}', chr(1)), '{quoted}', '\\'), chr(1), '{quoted}')"
    ))?;
    *escape_char = None;
    Ok(())
}

/// Whether `t` is a text type (`text`, `varchar`, `name`).
fn is_text_type(t: &SqlType) -> bool {
    match t {
        SqlType::Text | SqlType::Varchar(_) | SqlType::CharacterVarying(_) => true,
        SqlType::Custom(name, args) if args.is_empty() => name.0.last().is_some_and(|p| {
            matches!(p.to_string().to_ascii_lowercase().as_str(), "text" | "name")
        }),
        _ => false,
    }
}

/// Rewrites `x::regtype::text` (an oid cast to `regtype`, then to text) into the type's
/// name: `format_type(x, NULL)`, and `-` for oid 0, as PostgreSQL prints a `regtype`.
/// (datafusion-pg-catalog keeps `regtype` values as int4, so the cast would give digits.)
fn regtype_names(e: &mut SqlExpr) -> Result<()> {
    let SqlExpr::Cast {
        expr: outer_arg,
        data_type,
        ..
    } = e
    else {
        return Ok(());
    };
    if !is_text_type(data_type) {
        return Ok(());
    }
    let SqlExpr::Cast {
        expr: oid,
        data_type,
        ..
    } = outer_arg.as_ref()
    else {
        return Ok(());
    };
    if !is_regtype(data_type) {
        return Ok(());
    }
    // (A name, 'int4'::regtype::text, never gets here: datafusion-pg-catalog's parser has
    // already replaced 'int4'::regtype by its oid.)
    *e = parse_expr(&format!(
        "CASE WHEN ({oid}) = 0 THEN '-' ELSE format_type(({oid}), NULL) END"
    ))?;
    Ok(())
}

/// The column a decorrelated recursive CTE carries: the anchor row each row grew from.
const ROOT: &str = "__runbase_root";

/// The names a `SELECT`'s FROM clause binds (aliases, else table names), lowercased.
fn bound_names(select: &Select) -> Vec<String> {
    let mut names = Vec::new();
    for table in &select.from {
        for factor in
            std::iter::once(&table.relation).chain(table.joins.iter().map(|j| &j.relation))
        {
            if let TableFactor::Table { name, alias, .. } = factor {
                match alias {
                    Some(a) => names.push(a.name.value.to_lowercase()),
                    None => {
                        if let Some(last) = name.0.last() {
                            names.push(last.to_string().to_lowercase());
                        }
                    }
                }
            }
        }
    }
    names
}

/// The qualifier of `a.b`, lowercased.
fn qualifier(e: &SqlExpr) -> Option<String> {
    match e {
        SqlExpr::CompoundIdentifier(parts) if parts.len() == 2 => {
            Some(parts[0].value.to_lowercase())
        }
        _ => None,
    }
}

/// Splits `a AND b AND c` into its conjuncts.
fn conjuncts(e: SqlExpr, out: &mut Vec<SqlExpr>) {
    match e {
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(*left, out);
            conjuncts(*right, out);
        }
        SqlExpr::Nested(inner)
            if matches!(
                *inner,
                SqlExpr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(*inner, out)
        }
        other => out.push(other),
    }
}

fn and_all(parts: Vec<SqlExpr>) -> Option<SqlExpr> {
    parts.into_iter().reduce(|a, b| SqlExpr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    })
}

/// The name a `SELECT` reads `cte` by, if it reads it.
fn reference_to(select: &Select, cte: &str) -> Option<String> {
    select.from.iter().find_map(|t| match &t.relation {
        TableFactor::Table { name, alias, .. }
            if name.0.len() == 1 && name.0[0].to_string().eq_ignore_ascii_case(cte) =>
        {
            Some(
                alias
                    .as_ref()
                    .map_or(cte.to_string(), |a| a.name.value.clone()),
            )
        }
        _ => None,
    })
}

/// `ORDER BY … LIMIT 1` as the ORDER BY of an aggregate, if the query has exactly that.
fn order_of_first_row(query: &Query) -> Option<String> {
    let order = query.order_by.as_ref()?;
    let OrderByKind::Expressions(exprs) = &order.kind else {
        return None;
    };
    match &query.limit_clause {
        Some(LimitClause::LimitOffset {
            limit: Some(SqlExpr::Value(v)),
            offset: None,
            limit_by,
        }) if limit_by.is_empty() && v.value == Value::Number("1".into(), false) => {}
        _ => return None,
    }
    Some(
        exprs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Decorrelates a scalar subquery over a recursive CTE whose anchor is correlated by one
/// equality with the outer query, as in
///
/// ```sql
/// (WITH RECURSIVE r(x, depth) AS (
///      SELECT t2.y, 0 FROM pg_type t2 WHERE t2.oid = t.oid      -- t is outer
///      UNION ALL SELECT t2.y, r.depth + 1 FROM pg_type t2, r WHERE …)
///  SELECT x FROM r ORDER BY depth DESC LIMIT 1)
/// ```
///
/// which DataFusion cannot plan. The CTE is computed for every anchor row instead, each
/// row carrying the anchor's key (`t2.oid`) as [`ROOT`]; the correlation moves to the
/// subquery's own WHERE (`r.root = t.oid`), and `ORDER BY … LIMIT 1` becomes
/// `first_value(… ORDER BY …)`, a correlated aggregate DataFusion turns into a join. The
/// rows for each outer row are the same as before. Anything else is left alone.
fn decorrelate_recursive_subquery(e: &mut SqlExpr) {
    let SqlExpr::Subquery(query) = e else {
        return;
    };
    let Some(with) = query
        .with
        .as_ref()
        .filter(|w| w.recursive && w.cte_tables.len() == 1)
    else {
        return;
    };
    let cte_name = with.cte_tables[0].alias.name.value.clone();
    let SetExpr::SetOperation {
        op: SetOperator::Union,
        set_quantifier: SetQuantifier::All,
        left,
        right,
    } = with.cte_tables[0].query.body.as_ref()
    else {
        return;
    };
    let (SetExpr::Select(anchor), SetExpr::Select(step)) = (left.as_ref(), right.as_ref()) else {
        return;
    };
    let SetExpr::Select(outer) = query.body.as_ref() else {
        return;
    };
    let (Some(step_ref), Some(outer_ref)) = (
        reference_to(step, &cte_name),
        reference_to(outer, &cte_name),
    ) else {
        return;
    };
    let [SelectItem::UnnamedExpr(first) | SelectItem::ExprWithAlias { expr: first, .. }] =
        outer.projection.as_slice()
    else {
        return;
    };
    let Some(order) = order_of_first_row(query) else {
        return;
    };
    // The anchor's one correlated conjunct: `local = outer` (either way round).
    let local = bound_names(anchor);
    let is_outer = |x: &SqlExpr| qualifier(x).is_some_and(|q| !local.contains(&q));
    let is_local = |x: &SqlExpr| match x {
        SqlExpr::Identifier(_) => true,
        other => qualifier(other).is_some_and(|q| local.contains(&q)),
    };
    let mut parts = Vec::new();
    if let Some(selection) = anchor.selection.clone() {
        conjuncts(selection, &mut parts);
    }
    let mut correlated = parts.iter().enumerate().filter_map(|(i, p)| match p {
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } if is_outer(left) && is_local(right) => Some((i, (**right).clone(), (**left).clone())),
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } if is_local(left) && is_outer(right) => Some((i, (**left).clone(), (**right).clone())),
        _ => None,
    });
    let Some((index, key, outer_key)) = correlated.next() else {
        return;
    };
    if correlated.next().is_some() {
        return;
    }
    let (Ok(root_in_step), Ok(correlation), Ok(first_row)) = (
        parse_expr(&format!("{step_ref}.{ROOT}")),
        parse_expr(&format!("{outer_ref}.{ROOT} = {outer_key}")),
        parse_expr(&format!("first_value({first} ORDER BY {order})")),
    ) else {
        return;
    };
    parts.remove(index);

    // Everything is checked; rewrite.
    let Some(with) = query.with.as_mut() else {
        return;
    };
    let cte = &mut with.cte_tables[0];
    if !cte.alias.columns.is_empty() {
        cte.alias.columns.push(TableAliasColumnDef {
            name: Ident::new(ROOT),
            data_type: None,
        });
    }
    if let SetExpr::SetOperation { left, right, .. } = cte.query.body.as_mut() {
        if let SetExpr::Select(anchor) = left.as_mut() {
            anchor.selection = and_all(parts);
            anchor.projection.push(SelectItem::ExprWithAlias {
                expr: key,
                alias: Ident::new(ROOT),
            });
        }
        if let SetExpr::Select(step) = right.as_mut() {
            step.projection.push(SelectItem::ExprWithAlias {
                expr: root_in_step,
                alias: Ident::new(ROOT),
            });
        }
    }
    if let SetExpr::Select(outer) = query.body.as_mut() {
        outer.selection = and_all(
            outer
                .selection
                .take()
                .into_iter()
                .chain([correlation])
                .collect(),
        );
        outer.projection[0] = match &outer.projection[0] {
            SelectItem::ExprWithAlias { alias, .. } => SelectItem::ExprWithAlias {
                expr: first_row,
                alias: alias.clone(),
            },
            _ => SelectItem::UnnamedExpr(first_row),
        };
    }
    query.order_by = None;
    query.limit_clause = None;
}

/// Spells `SET [LOCAL] TIME ZONE value` as the assignment to `timezone` it stands for
/// (DataFusion plans only the assignment).
fn set_time_zone_as_assignment(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{ContextModifier, Set};
    let Statement::Set(Set::SetTimeZone { local, value }) = statement else {
        return;
    };
    let zone = match value {
        SqlExpr::Identifier(id)
            if id.quote_style.is_none()
                && ["local", "default"].contains(&id.value.to_ascii_lowercase().as_str()) =>
        {
            super::DEFAULT_TIME_ZONE.to_string()
        }
        SqlExpr::Identifier(id) => id.value.clone(),
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    };
    *statement = Statement::Set(Set::SingleAssignment {
        scope: local.then_some(ContextModifier::Local),
        hivevar: false,
        variable: ObjectName::from(vec![Ident::new("timezone")]),
        values: vec![SqlExpr::Value(Value::SingleQuotedString(zone).into())],
    });
}

/// Wraps the one output of a scalar subquery over `pg_catalog` tables in `first_value(…)`
/// when it has no aggregate: DataFusion only runs correlated scalar subqueries that are
/// aggregated, and the catalog queries drivers send (SQLAlchemy's column listing) have
/// several that return one row by construction. User queries are left alone.
fn aggregate_catalog_subquery(e: &mut SqlExpr) {
    const AGGREGATES: &[&str] = &[
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "array_agg",
        "string_agg",
        "bool_and",
        "bool_or",
        "first_value",
        "last_value",
        "json_agg",
        "jsonb_agg",
    ];
    let SqlExpr::Subquery(query) = e else {
        return;
    };
    if query.limit_clause.is_some() {
        return;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let over_catalog = select.from.iter().any(|t| {
        matches!(&t.relation, TableFactor::Table { name, .. }
            if name.to_string().to_ascii_lowercase().starts_with("pg_"))
    });
    let no_group = match &select.group_by {
        GroupByExpr::Expressions(v, _) => v.is_empty(),
        GroupByExpr::All(_) => false,
    };
    if !over_catalog || !no_group || select.projection.len() != 1 {
        return;
    }
    let (expr, alias) = match &select.projection[0] {
        SelectItem::UnnamedExpr(x) => (x.clone(), None),
        SelectItem::ExprWithAlias { expr, alias } => (expr.clone(), Some(alias.clone())),
        _ => return,
    };
    let text = expr.to_string().to_ascii_lowercase();
    if AGGREGATES.iter().any(|a| text.contains(&format!("{a}("))) {
        return;
    }
    let Ok(wrapped) = parse_expr(&format!("first_value({expr})")) else {
        return;
    };
    // The output keeps the column's name, as PostgreSQL names a subquery's value.
    let alias = alias.or_else(|| match &expr {
        SqlExpr::Identifier(id) => Some(id.clone()),
        SqlExpr::CompoundIdentifier(ids) => ids.last().cloned(),
        _ => None,
    });
    select.projection[0] = match alias {
        Some(alias) => SelectItem::ExprWithAlias {
            expr: wrapped,
            alias,
        },
        None => SelectItem::UnnamedExpr(wrapped),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statements =
            Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parse test statement");
        let mut statement = statements.remove(0);
        compatibility(&mut statement).expect("rewrite");
        statement.to_string()
    }

    #[test]
    fn is_insertable_into_and_unnest_of_proargtypes_are_spelled_out() {
        let out = rewritten(
            "select table_name, table_schema, is_insertable_into, table_type from information_schema.tables",
        );
        assert!(
            out.contains("CASE WHEN table_type = 'BASE TABLE' AND table_schema NOT IN ('runbase', 'pg_catalog', 'information_schema') THEN 'YES' ELSE 'NO' END"),
            "{out}"
        );
        let out = rewritten("SELECT t.is_insertable_into FROM information_schema.tables AS t");
        assert!(out.contains("WHEN t.table_type = 'BASE TABLE'"), "{out}");
        // Another relation's column of that name is its own.
        let sql = "SELECT is_insertable_into FROM information_schema.views";
        assert_eq!(rewritten(sql), sql);
        assert_eq!(
            rewritten("select unnest(proargtypes) from pg_proc where oid = 5"),
            "SELECT unnest(CAST(string_to_array(nullif(proargtypes, ''), ' ') AS oid[])) FROM pg_proc WHERE oid = 5"
        );
    }

    #[test]
    fn set_time_zone_is_an_assignment_to_timezone() {
        assert_eq!(
            rewritten("SET TIME ZONE \"Etc/UTC\""),
            "SET timezone = 'Etc/UTC'"
        );
        assert_eq!(
            rewritten("SET TIME ZONE 'Europe/Paris'"),
            "SET timezone = 'Europe/Paris'"
        );
        assert_eq!(rewritten("SET TIME ZONE LOCAL"), "SET timezone = 'UTC'");
    }

    #[test]
    fn argument_types_as_regtype_arrays_are_their_names() {
        assert_eq!(
            rewritten(
                "SELECT COALESCE(proallargtypes::regtype[], p.proargtypes::regtype[])::text[] FROM pg_proc p"
            ),
            "SELECT COALESCE(oidvector_type_names(proallargtypes), oidvector_type_names(p.proargtypes))::TEXT[] FROM pg_proc p"
        );
    }

    #[test]
    fn values_with_a_subquery_become_selects() {
        assert_eq!(
            rewritten("INSERT INTO t VALUES ((SELECT max(a) FROM t) + 1, 'x'), (2, 'y')"),
            "INSERT INTO t SELECT (SELECT max(a) FROM t) + 1 AS column1, 'x' AS column2 \
             UNION ALL SELECT 2 AS column1, 'y' AS column2"
        );
        // Without a subquery, or with INSERT's DEFAULT, VALUES stays.
        for sql in [
            "INSERT INTO t VALUES (1, 'x')",
            "INSERT INTO t VALUES (DEFAULT, (SELECT 1))",
            "SELECT * FROM (VALUES (1)) AS v (a)",
        ] {
            assert_eq!(rewritten(sql), sql);
        }
        assert_eq!(
            rewritten("SELECT * FROM (VALUES ((SELECT 5))) AS v (a)"),
            "SELECT * FROM (SELECT (SELECT 5) AS column1) AS v (a)"
        );
    }

    #[test]
    fn a_recursive_cte_correlated_in_its_anchor_is_decorrelated() {
        let sql = "SELECT t.oid, (CASE WHEN t.typtype = 'd' THEN \
            (WITH RECURSIVE typebases(oid, depth) AS (\
              SELECT t2.typbasetype AS oid, 0 AS depth FROM pg_type t2 WHERE t2.oid = t.oid \
              UNION ALL \
              SELECT t2.typbasetype AS oid, tb.depth + 1 AS depth FROM pg_type t2, typebases tb \
              WHERE tb.oid = t2.oid AND t2.typbasetype != 0) \
             SELECT oid FROM typebases ORDER BY depth DESC LIMIT 1) ELSE NULL END) AS basetype \
            FROM pg_type t";
        let out = rewritten(sql);
        assert!(
            out.contains("typebases (oid, depth, __runbase_root)"),
            "{out}"
        );
        assert!(
            out.contains("SELECT t2.typbasetype AS oid, 0 AS depth, t2.oid AS __runbase_root FROM pg_type t2 UNION ALL"),
            "{out}"
        );
        assert!(out.contains("tb.__runbase_root AS __runbase_root"), "{out}");
        assert!(
            out.contains(
                "SELECT first_value(oid ORDER BY depth DESC) FROM typebases WHERE typebases.__runbase_root = t.oid)"
            ),
            "{out}"
        );
        assert!(!out.contains("LIMIT"), "{out}");
    }

    #[test]
    fn other_recursive_subqueries_are_left_alone() {
        for sql in [
            // Not correlated.
            "SELECT (WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) \
             SELECT n FROM r ORDER BY n DESC LIMIT 1)",
            // No LIMIT 1: not one row.
            "SELECT (WITH RECURSIVE r(n) AS (SELECT a.x FROM a WHERE a.y = o.y \
             UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r) FROM o",
        ] {
            let before = Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .expect("parse")
                .remove(0)
                .to_string();
            assert_eq!(rewritten(sql), before);
        }
    }

    #[test]
    fn regtype_text_is_the_type_name() {
        assert_eq!(
            rewritten("SELECT elemtype::regtype::text FROM t"),
            "SELECT CASE WHEN (elemtype) = 0 THEN '-' ELSE format_type((elemtype), NULL) END FROM t"
        );
        let untouched = "SELECT elemtype::regtype, x::INT::TEXT FROM t";
        assert_eq!(rewritten(untouched), untouched);
    }

    #[test]
    fn bytea_literals_and_like_escapes() {
        assert_eq!(
            rewritten("SELECT '\\x0aff'::bytea"),
            "SELECT decode('0aff', 'hex')"
        );
        let mut odd = Parser::parse_sql(&PostgreSqlDialect {}, "SELECT '\\x0af'::bytea")
            .expect("parse")
            .remove(0);
        assert!(compatibility(&mut odd).is_err());
        assert!(!rewritten("SELECT 'a' LIKE 'x/_%' ESCAPE '/'").contains("ESCAPE"));
    }
}
