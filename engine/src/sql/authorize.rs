//! What a session's role may run: read-only users may not change anything.

use datafusion::sql::sqlparser::ast::Statement as AstStatement;

use super::*;
use crate::error::{Error, Result};
use crate::users::Role;

/// The first function `statement` calls (as a scalar or as a table function) for which
/// `writes` is true.
pub(super) fn writing_call(
    statement: &AstStatement,
    writes: &dyn Fn(&str) -> bool,
) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{
        Expr as SqlExpr, ObjectName, TableFactor, Visit, Visitor,
    };
    use std::ops::ControlFlow;
    struct Find<'a> {
        writes: &'a dyn Fn(&str) -> bool,
    }
    impl Find<'_> {
        fn check(&self, name: &ObjectName) -> ControlFlow<String> {
            let last = name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.to_lowercase())
                .unwrap_or_default();
            if (self.writes)(&last) {
                ControlFlow::Break(last)
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    impl Visitor for Find<'_> {
        type Break = String;
        fn pre_visit_expr(&mut self, expr: &SqlExpr) -> ControlFlow<String> {
            match expr {
                SqlExpr::Function(f) => self.check(&f.name),
                _ => ControlFlow::Continue(()),
            }
        }
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
            match factor {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                }
                | TableFactor::Function { name, .. } => self.check(name),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    match statement.visit(&mut Find { writes }) {
        ControlFlow::Break(name) => Some(name),
        ControlFlow::Continue(()) => None,
    }
}

impl Session {
    /// Refuses a call of a superuser-only function ([`Database::register_superuser_function`])
    /// by anyone else, and, for a read-only session, any statement that would change something: only
    /// queries, `EXPLAIN` of them, `SHOW`, `SET`, transaction statements, `COPY … TO` and
    /// `LISTEN`/`UNLISTEN`/`NOTIFY` pass, and none that calls a function registered as writing
    /// ([`Database::register_writing_function`]).
    pub(super) fn authorize(&self, statement: &AstStatement) -> Result<()> {
        if self.role() != Role::Superuser
            && let Some(f) = writing_call(statement, &|name| self.db.is_superuser_function(name))
        {
            return Err(Error::PermissionDenied(format!(
                "permission denied: only a superuser can call {f}() (\"{}\" is {})",
                self.user_name(),
                self.role()
            )));
        }
        if self.role() != Role::Readonly {
            return Ok(());
        }
        let denied = |what: &str| {
            Err(Error::PermissionDenied(format!(
                "permission denied: user \"{}\" is read-only and cannot {what}",
                self.user_name()
            )))
        };
        let reads_only = |s: &AstStatement| {
            matches!(
                s,
                AstStatement::Query(_)
                    | AstStatement::ShowVariable { .. }
                    | AstStatement::ShowVariables { .. }
                    | AstStatement::ShowTables { .. }
                    | AstStatement::ShowColumns { .. }
                    | AstStatement::Set(_)
                    | AstStatement::StartTransaction { .. }
                    | AstStatement::Commit { .. }
                    | AstStatement::Rollback { .. }
                    | AstStatement::Copy { to: true, .. }
                    | AstStatement::LISTEN { .. }
                    | AstStatement::UNLISTEN { .. }
                    | AstStatement::NOTIFY { .. }
            )
        };
        let ok = match statement {
            AstStatement::Explain { statement, .. } => reads_only(statement),
            other => reads_only(other),
        };
        if !ok {
            let verb = statement.to_string();
            let verb = verb
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            return denied(&format!("run {verb}"));
        }
        if let Some(f) = writing_call(statement, &|name| self.db.is_writing_function(name)) {
            return denied(&format!("call {f}()"));
        }
        Ok(())
    }
}
