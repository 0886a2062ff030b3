//! The runs of an experiment as a table: filtered, sorted and paged on the server.
//!
//! [`Tracking::runs_frame`] reads the experiment's runs with just the params, metrics
//! (latest values) and tags asked for, as one Arrow batch; [`search_runs`] runs the
//! user's filter, sort and page over it with DataFusion, in a context of its own that
//! holds nothing but that batch (so a filter cannot reach any other table).
//!
//! The filter is one SQL boolean expression over the columns. MLflow's filter syntax is
//! accepted too: `params.lr = '0.1' and metrics.loss < 0.5`, ``metrics.`val loss` ``,
//! `tags.mlflow.source.type`, `attributes.status = 'FINISHED'`. Namespaced names are
//! rewritten to the quoted column names (`"params.lr"`); the expression is parsed alone,
//! so it cannot end one statement and start another.
//!
//! Columns: `run_id`, `name`, `status`, `user_name`, `kind`, `parent_run_id`,
//! `start_time` and `end_time` (milliseconds since the epoch, as MLflow has them),
//! `duration_s`, then `params.<key>` (text), `metrics.<key>` (double precision: the
//! latest value), `tags.<key>` (text).

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr, Ident, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use uuid::Uuid;

use crate::error::{Error, Result};

use super::*;

/// The base columns, before params, metrics and tags.
pub const BASE_COLUMNS: [&str; 9] = [
    "run_id",
    "name",
    "status",
    "user_name",
    "kind",
    "parent_run_id",
    "start_time",
    "end_time",
    "duration_s",
];

/// Most rows one page holds.
pub const MAX_PAGE: usize = 1_000;

/// Most runs whose keys [`Tracking::experiment_keys`] reads.
pub const KEY_SAMPLE_RUNS: usize = 200;

/// How a frame writes run ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunIds {
    /// `6f1c…-…`: as SQL shows them.
    Hyphenated,
    /// 32 hex digits: as MLflow shows them.
    Simple,
}

impl RunIds {
    fn format(self, id: &Uuid) -> String {
        match self {
            RunIds::Hyphenated => id.to_string(),
            RunIds::Simple => id.simple().to_string(),
        }
    }
}

/// What to show of an experiment's runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunColumns {
    /// Param keys, shown as `params.<key>`.
    pub params: Vec<String>,
    /// Metric keys, shown as `metrics.<key>` (the latest value).
    pub metrics: Vec<String>,
    /// Tag keys, shown as `tags.<key>`.
    pub tags: Vec<String>,
}

impl RunColumns {
    /// Adds the column `name` (`params.x`, `metrics.x`, `tags.x`) if it is not there yet;
    /// base columns and other names are left alone.
    pub fn add(&mut self, name: &str) {
        let (list, key) = if let Some(k) = name.strip_prefix("params.") {
            (&mut self.params, k)
        } else if let Some(k) = name.strip_prefix("metrics.") {
            (&mut self.metrics, k)
        } else if let Some(k) = name.strip_prefix("tags.") {
            (&mut self.tags, k)
        } else {
            return;
        };
        if !key.is_empty() && !list.iter().any(|x| x == key) {
            list.push(key.to_string());
        }
    }
}

/// The filter, sort and page of a search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// A boolean expression over the columns (SQL, or MLflow's filter syntax).
    pub filter: Option<String>,
    /// The column to sort by (`start_time` when absent); ties by `start_time`, newest first.
    pub order_by: Option<String>,
    /// Sort descending (NULLs last either way).
    pub descending: bool,
    /// Rows to skip.
    pub offset: usize,
    /// Rows to return, at most [`MAX_PAGE`].
    pub limit: usize,
}

/// One page of runs.
#[derive(Debug, Clone)]
pub struct RunPage {
    /// Runs matching the filter, over every page.
    pub total: usize,
    /// The page's rows.
    pub rows: RecordBatch,
}

/// A filter expression checked and rewritten to plain SQL over the column names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedFilter {
    /// The expression as SQL.
    pub sql: String,
    /// The params, metrics and tags it mentions (to be read into the frame).
    pub columns: RunColumns,
}

/// Namespaces MLflow's filter syntax puts before a name.
fn namespace(first: &str) -> Option<&'static str> {
    match first.to_ascii_lowercase().as_str() {
        "params" | "param" | "parameter" | "parameters" => Some("params"),
        "metrics" | "metric" => Some("metrics"),
        "tags" | "tag" => Some("tags"),
        "attributes" | "attribute" | "attr" | "run" => Some("attributes"),
        _ => None,
    }
}

/// The column an MLflow attribute name stands for.
fn attribute(name: &str) -> String {
    match name {
        "run_name" => "name".into(),
        "run_id" | "run_uuid" => "run_id".into(),
        "user_id" => "user_name".into(),
        other => other.to_string(),
    }
}

/// Checks a filter (one boolean expression, SQL or MLflow syntax) and rewrites its
/// namespaced names to column names.
pub fn check_filter(filter: &str) -> Result<CheckedFilter> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!("invalid filter \"{filter}\": {e}"))
    };
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(filter)
        .map_err(|e| bad(&e))?;
    let mut expr = parser.parse_expr().map_err(|e| bad(&e))?;
    if parser.peek_token().token != Token::EOF {
        return Err(bad(&"expected one expression, found more after it"));
    }
    let mut columns = RunColumns::default();
    let mut refused: Option<String> = None;
    let _ = visit_expressions_mut(&mut expr, |e| {
        // Comparisons over the columns only: no subqueries, no function calls (a filter
        // must not be a way to run arbitrary work).
        match e {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                refused = Some("subqueries are not allowed in a filter".into());
                return ControlFlow::Break(());
            }
            Expr::Function(f) => {
                refused = Some(format!(
                    "function calls ({}) are not allowed in a filter",
                    f.name
                ));
                return ControlFlow::Break(());
            }
            _ => {}
        }
        let column = match e {
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                match namespace(&parts[0].value) {
                    Some(ns) => {
                        let rest: Vec<&str> = parts[1..].iter().map(|p| p.value.as_str()).collect();
                        let rest = rest.join(".");
                        Some(if ns == "attributes" {
                            attribute(&rest)
                        } else {
                            format!("{ns}.{rest}")
                        })
                    }
                    None => None,
                }
            }
            // MLflow quotes strings with double quotes too: a double-quoted name that is
            // not a column's is the string.
            Expr::Identifier(ident)
                if ident.quote_style == Some('"')
                    && !BASE_COLUMNS.contains(&ident.value.as_str())
                    && !["params.", "metrics.", "tags."]
                        .iter()
                        .any(|p| ident.value.starts_with(p)) =>
            {
                *e = Expr::Value(
                    datafusion::sql::sqlparser::ast::Value::SingleQuotedString(ident.value.clone())
                        .into(),
                );
                None
            }
            // Unquoted names are case-insensitive, as in SQL.
            Expr::Identifier(ident) if ident.quote_style.is_none() => {
                Some(attribute(&ident.value.to_ascii_lowercase()))
            }
            Expr::Identifier(ident) => Some(ident.value.clone()),
            _ => None,
        };
        if let Some(column) = column {
            columns.add(&column);
            *e = Expr::Identifier(Ident::with_quote('"', column));
        }
        ControlFlow::<()>::Continue(())
    });
    if let Some(why) = refused {
        return Err(bad(&why));
    }
    Ok(CheckedFilter {
        sql: expr.to_string(),
        columns,
    })
}

/// Quotes `name` as an SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Filters, sorts and pages `frame` (from [`Tracking::runs_frame`]).
pub async fn search_runs(frame: RecordBatch, filter: &RunFilter) -> Result<RunPage> {
    let schema = frame.schema();
    let ctx = SessionContext::new();
    ctx.register_table(
        "runs",
        Arc::new(MemTable::try_new(schema.clone(), vec![vec![frame]])?),
    )?;
    let predicate = match filter.filter.as_deref().map(str::trim) {
        Some(f) if !f.is_empty() => format!(" WHERE {}", check_filter(f)?.sql),
        _ => String::new(),
    };
    let order = filter.order_by.as_deref().unwrap_or("start_time");
    if schema.field_with_name(order).is_err() {
        return Err(Error::InvalidArgument(format!(
            "cannot sort by \"{order}\": not a column of this table"
        )));
    }
    let direction = if filter.descending { "DESC" } else { "ASC" };
    let limit = filter.limit.clamp(1, MAX_PAGE);
    // A column the filter names that the table lacks is a bad request, not a missing object.
    let bad_filter = |e: datafusion::error::DataFusionError| {
        let e = Error::DataFusion(e);
        if e.code() == crate::error::ErrorCode::ColumnNotFound {
            Error::InvalidArgument(format!(
                "invalid filter: {}; name params, metrics and tags as params.<key>, \
                 metrics.<key>, tags.<key>",
                e.client_message()
            ))
        } else {
            e
        }
    };
    let page = ctx
        .sql(&format!(
            "SELECT * FROM runs{predicate} ORDER BY {} {direction} NULLS LAST, \
             start_time DESC, run_id LIMIT {limit} OFFSET {}",
            quote(order),
            filter.offset
        ))
        .await
        .map_err(bad_filter)?
        .collect()
        .await?;
    let counted = ctx
        .sql(&format!("SELECT count(*) FROM runs{predicate}"))
        .await
        .map_err(bad_filter)?
        .collect()
        .await?;
    let total = counted
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
        })
        .map_or(0, |a| usize::try_from(a.value(0)).unwrap_or(0));
    let rows = datafusion::arrow::compute::concat_batches(&schema, &page)
        .map_err(|e| Error::DataFusion(e.into()))?;
    Ok(RunPage { total, rows })
}

impl Tracking {
    /// The runs of `experiment` (every one, in no set order) with the `columns` asked for.
    pub fn runs_frame(&self, experiment: &str, columns: &RunColumns) -> Result<RecordBatch> {
        self.frame_of_runs(
            self.experiment_runs(experiment)?,
            columns,
            RunIds::Hyphenated,
        )
    }

    /// [`Tracking::runs_frame`] over the runs given, their ids written as `ids` says.
    pub fn frame_of_runs(
        &self,
        runs: Vec<Run>,
        columns: &RunColumns,
        ids: RunIds,
    ) -> Result<RecordBatch> {
        let now_ms = now_us() / 1000;
        let n = runs.len();
        let text = |f: &dyn Fn(&Run) -> Option<String>| -> ArrayRef {
            let mut b = StringBuilder::with_capacity(n, n * 16);
            for r in &runs {
                b.append_option(f(r));
            }
            Arc::new(b.finish())
        };
        let mut fields = vec![
            Field::new("run_id", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("user_name", DataType::Utf8, true),
            Field::new("kind", DataType::Utf8, false),
            Field::new("parent_run_id", DataType::Utf8, true),
            Field::new("start_time", DataType::Int64, false),
            Field::new("end_time", DataType::Int64, true),
            Field::new("duration_s", DataType::Float64, false),
        ];
        let mut arrays: Vec<ArrayRef> = vec![
            text(&|r| Some(ids.format(&r.run_id))),
            text(&|r| Some(r.name.clone())),
            text(&|r| Some(r.status.as_str().to_string())),
            text(&|r| r.user_name.clone()),
            text(&|r| Some(r.kind.clone())),
            text(&|r| r.parent_run_id.map(|p| ids.format(&p))),
        ];
        let mut start = Int64Builder::with_capacity(n);
        let mut end = Int64Builder::with_capacity(n);
        let mut duration = Float64Builder::with_capacity(n);
        for r in &runs {
            let s = r.started_at_us / 1000;
            start.append_value(s);
            end.append_option(r.ended_at_us.map(|e| e / 1000));
            let e = r.ended_at_us.map_or(now_ms, |e| e / 1000);
            duration.append_value((e - s).max(0) as f64 / 1000.0);
        }
        arrays.push(Arc::new(start.finish()));
        arrays.push(Arc::new(end.finish()));
        arrays.push(Arc::new(duration.finish()));

        let mut seen: BTreeSet<String> = BASE_COLUMNS.iter().map(|c| c.to_string()).collect();
        for (family, prefix, keys) in [
            (CF_PARAMS, "params", &columns.params),
            (CF_LATEST, "metrics", &columns.metrics),
            (CF_TAGS, "tags", &columns.tags),
        ] {
            let cf = self.cf(family)?;
            for key in keys {
                let name = format!("{prefix}.{key}");
                if !seen.insert(name.clone()) {
                    continue;
                }
                let values = self
                    .db()
                    .multi_get_cf(runs.iter().map(|r| (cf, keys::run_key(&r.run_id, key))));
                if family == CF_LATEST {
                    let mut b = Float64Builder::with_capacity(n);
                    for v in values {
                        b.append_option(v?.and_then(|v| keys::decode_latest(&v)).map(|l| l.2));
                    }
                    arrays.push(Arc::new(b.finish()));
                    fields.push(Field::new(name, DataType::Float64, true));
                } else {
                    let mut b = StringBuilder::with_capacity(n, n * 8);
                    for v in values {
                        b.append_option(v?.map(|v| String::from_utf8_lossy(&v).into_owned()));
                    }
                    arrays.push(Arc::new(b.finish()));
                    fields.push(Field::new(name, DataType::Utf8, true));
                }
            }
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| Error::DataFusion(e.into()))
    }

    /// The param, metric and tag keys of `experiment`'s runs, each sorted: what a column
    /// picker offers. Reads the [`KEY_SAMPLE_RUNS`] newest runs, so a key only older runs
    /// have is not offered (it can still be asked for by name).
    pub fn experiment_keys(&self, experiment: &str) -> Result<RunColumns> {
        let mut runs: Vec<(i64, Uuid)> = self
            .experiment_runs(experiment)?
            .into_iter()
            .map(|r| (r.started_at_us, r.run_id))
            .collect();
        runs.sort_unstable_by_key(|(start, _)| std::cmp::Reverse(*start));
        runs.truncate(KEY_SAMPLE_RUNS);
        let (mut params, mut metrics, mut tags) =
            (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for (_, run) in &runs {
            for (family, set) in [
                (CF_PARAMS, &mut params),
                (CF_LATEST, &mut metrics),
                (CF_TAGS, &mut tags),
            ] {
                for item in self
                    .db()
                    .prefix_iterator_cf(self.cf(family)?, run.as_bytes())
                {
                    let (k, _) = item?;
                    if !k.starts_with(run.as_bytes()) {
                        break;
                    }
                    if let Some((_, key)) = keys::decode_run_key(&k)
                        && !set.contains(key)
                    {
                        set.insert(key.to_string());
                    }
                }
            }
        }
        Ok(RunColumns {
            params: params.into_iter().collect(),
            metrics: metrics.into_iter().collect(),
            tags: tags.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_in_sql_and_mlflow_syntax_become_column_names() {
        let f = check_filter("params.lr = '0.1' and metrics.`val loss` < 0.5").expect("check");
        assert_eq!(f.sql, r#""params.lr" = '0.1' AND "metrics.val loss" < 0.5"#);
        assert_eq!(f.columns.params, vec!["lr"]);
        assert_eq!(f.columns.metrics, vec!["val loss"]);

        let f = check_filter("attributes.status = 'FINISHED' OR tags.mlflow.source.type = 'x'")
            .expect("check");
        assert_eq!(
            f.sql,
            r#""status" = 'FINISHED' OR "tags.mlflow.source.type" = 'x'"#
        );
        assert_eq!(f.columns.tags, vec!["mlflow.source.type"]);

        let f = check_filter(r#""metrics.acc" > 0.9 AND duration_s < 60"#).expect("check");
        assert_eq!(f.columns.metrics, vec!["acc"]);

        // MLflow's double-quoted strings; case-insensitive unquoted names.
        let f = check_filter(r#"attributes.status = "FINISHED" and STATUS != 'x'"#).expect("check");
        assert_eq!(f.sql, r#""status" = 'FINISHED' AND "status" <> 'x'"#);

        for bad in [
            "EXISTS (SELECT 1 FROM generate_series(1, 1000000000))",
            "length(repeat(name, 1000000000)) > 0",
            "name IN (SELECT name FROM runs)",
            "1 = 1; DROP TABLE t",
            "status = 'x') OR (1 = 1",
            "",
            "status =",
        ] {
            let e = check_filter(bad).expect_err(bad);
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
        }
    }
}
