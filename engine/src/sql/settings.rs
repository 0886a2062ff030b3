//! `SET`/`SHOW`, `current_setting()`, and the settings runbase knows.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::sql::sqlparser::ast::Statement as AstStatement;

use super::*;
use crate::database::version_string;
use crate::error::{Error, Result};

/// Values of PostgreSQL's read-mostly settings that clients ask for.
pub(super) fn default_variable(name: &str) -> Option<String> {
    Some(
        match name {
            "server_version" => "16.0",
            "server_version_num" => "160000",
            "server_encoding" | "client_encoding" => "UTF8",
            "datestyle" => "ISO, MDY",
            "intervalstyle" => "postgres",
            "timezone" | "time zone" => crate::pg::DEFAULT_TIME_ZONE,
            "standard_conforming_strings" | "integer_datetimes" => "on",
            "transaction_isolation" | "default_transaction_isolation" => "read committed",
            "transaction_read_only" | "default_transaction_read_only" => "off",
            "search_path" => "\"$user\", public",
            "application_name" => "",
            "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => "0",
            "max_identifier_length" => "63",
            "lc_collate" | "lc_ctype" => "C",
            "runbase_version" => env!("CARGO_PKG_VERSION"),
            "runbase.device" => "default",
            "version" => return Some(version_string()),
            _ => return None,
        }
        .to_string(),
    )
}

/// Whether setting `name` is a duration (`statement_timeout` and its kin).
pub(super) fn is_duration(name: &str) -> bool {
    matches!(
        name,
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout"
    )
}

/// A duration setting as PostgreSQL reads it: a number of milliseconds, or a number with a
/// unit (`us`, `ms`, `s`, `min`, `h`, `d`), optionally quoted; `0` is zero (no limit).
/// None for anything else, negative numbers included.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let t = text.trim().trim_matches('\'').trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => n,
        "us" => n / 1000.0,
        "s" => n * 1000.0,
        "min" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        "d" => n * 86_400_000.0,
        _ => return None,
    };
    (ms.is_finite() && ms < 1e15).then(|| std::time::Duration::from_micros((ms * 1000.0) as u64))
}

impl Session {
    /// The value of setting `name` (lower case) in this session: what `SET` gave it, else
    /// its default; None for a setting runbase does not have.
    pub(super) fn setting(&self, name: &str) -> Option<String> {
        // DataFusion keeps the session's time zone: `SET timezone` sets it, now() and
        // timestamptz values answer in it.
        if matches!(name, "timezone" | "time zone")
            && let Some(zone) = self
                .ctx
                .state_ref()
                .read()
                .config_options()
                .execution
                .time_zone
                .clone()
        {
            return Some(zone);
        }
        self.variables.get(name).or_else(|| default_variable(name))
    }

    /// Replaces `current_setting('name' [, missing_ok])` by the setting's value as a
    /// string literal (NULL for an unknown setting with `missing_ok` true), so the planner
    /// sees a constant; an unknown setting otherwise is an error, as in PostgreSQL.
    pub(super) fn inline_current_settings(&self, statement: &mut AstStatement) -> Result<()> {
        use datafusion::sql::sqlparser::ast::{
            Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
            visit_expressions_mut,
        };
        use std::ops::ControlFlow;
        let flow = visit_expressions_mut(statement, |e| {
            let SqlExpr::Function(f) = e else {
                return ControlFlow::Continue(());
            };
            // current_user / session_user: the user the session was authorized as.
            let fname = f.name.to_string().to_ascii_lowercase();
            if matches!(
                fname.as_str(),
                "current_user" | "session_user" | "current_role"
            ) && matches!(f.args, FunctionArguments::None)
            {
                let user = self.user_name();
                if !user.is_empty() {
                    *e = SqlExpr::Value(Value::SingleQuotedString(user).into());
                }
                return ControlFlow::Continue(());
            }
            if !f.name.to_string().eq_ignore_ascii_case("current_setting")
                && !f
                    .name
                    .to_string()
                    .eq_ignore_ascii_case("pg_catalog.current_setting")
            {
                return ControlFlow::Continue(());
            }
            let FunctionArguments::List(list) = &f.args else {
                return ControlFlow::Continue(());
            };
            let literal = |a: &FunctionArg| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v))) => {
                    Some(v.value.clone())
                }
                _ => None,
            };
            let name = match list.args.first().and_then(literal) {
                Some(Value::SingleQuotedString(n)) => n.to_lowercase(),
                _ => {
                    return ControlFlow::Break(Error::NotSupported(
                        "current_setting() of a non-constant name".into(),
                    ));
                }
            };
            let missing_ok = matches!(
                list.args.get(1).and_then(literal),
                Some(Value::Boolean(true))
            );
            let value = match self.setting(&name) {
                Some(v) => Value::SingleQuotedString(v),
                None if missing_ok => Value::Null,
                None => {
                    return ControlFlow::Break(Error::ObjectNotFound(format!(
                        "unrecognized configuration parameter \"{name}\""
                    )));
                }
            };
            *e = SqlExpr::Value(value.into());
            ControlFlow::Continue(())
        });
        match flow {
            ControlFlow::Break(err) => Err(err),
            ControlFlow::Continue(()) => Ok(()),
        }
    }

    pub(super) fn show(&self, name: &str) -> Result<QueryOutput> {
        let value = self.setting(name).ok_or_else(|| {
            Error::ObjectNotFound(format!("unrecognized configuration parameter \"{name}\""))
        })?;
        let schema = show_schema(name);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec![value]))],
        )
        .map_err(|e| Error::DataFusion(e.into()))?;
        let stream = MemoryStream::try_new(vec![batch], schema, None)?;
        Ok(QueryOutput::Rows(Box::pin(stream)))
    }
}
