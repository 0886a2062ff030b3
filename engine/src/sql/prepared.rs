//! What a session hands its front end: a statement parsed ([`Statement`]), planned
//! ([`Prepared`]) and run ([`QueryOutput`], [`CommandTag`]).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement as AstStatement;
use futures::TryStreamExt;

use super::maintenance::Maintenance;
use super::*;
use crate::error::Result;
use crate::pg::copy::{CopyFormat, CopyIn};
use crate::users::UserCommand;

/// What executing one statement produced.
pub enum QueryOutput {
    /// A result set.
    Rows(SendableRecordBatchStream),
    /// A command's completion tag.
    Command(CommandTag),
    /// `COPY … FROM STDIN`: the caller feeds the client's data to the [`CopyIn`] and then
    /// calls [`Session::finish_copy_in`].
    CopyIn(Box<CopyIn>),
    /// `COPY … TO STDOUT`: rows for the caller to send in `format`.
    CopyOut(SendableRecordBatchStream, CopyFormat),
}

impl fmt::Debug for QueryOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryOutput::Rows(s) => write!(f, "Rows({:?})", s.schema()),
            QueryOutput::Command(t) => write!(f, "Command({t})"),
            QueryOutput::CopyIn(c) => write!(f, "{c:?}"),
            QueryOutput::CopyOut(s, _) => write!(f, "CopyOut({:?})", s.schema()),
        }
    }
}

impl QueryOutput {
    /// Collects a result set (a command yields no batches).
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        match self {
            QueryOutput::Rows(stream) | QueryOutput::CopyOut(stream, _) => {
                Ok(stream.try_collect().await?)
            }
            QueryOutput::Command(_) | QueryOutput::CopyIn(_) => Ok(vec![]),
        }
    }
}

/// A PostgreSQL command tag: `CREATE TABLE`, `INSERT 0 3`, `SELECT 5`, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTag {
    /// The command word(s).
    pub command: &'static str,
    /// Rows affected, for commands that report them.
    pub rows: Option<u64>,
}

impl CommandTag {
    pub(crate) fn plain(command: &'static str) -> Self {
        Self {
            command,
            rows: None,
        }
    }

    pub(crate) fn with_rows(command: &'static str, rows: u64) -> Self {
        Self {
            command,
            rows: Some(rows),
        }
    }
}

impl fmt::Display for CommandTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.command, self.rows) {
            ("INSERT", Some(n)) => write!(f, "INSERT 0 {n}"),
            (c, Some(n)) => write!(f, "{c} {n}"),
            (c, None) => f.write_str(c),
        }
    }
}

/// A parsed and planned statement, ready to execute (possibly many times, with parameters).
#[derive(Debug, Clone, Default)]
pub enum Prepared {
    /// A statement DataFusion planned.
    Plan(LogicalPlan),
    /// `SHOW <name>` of a PostgreSQL session variable.
    Show(String),
    /// `BEGIN`, `COMMIT` or `ROLLBACK`: accepted for client compatibility; every statement
    /// commits on its own.
    Transaction(&'static str),
    /// `COPY table [(columns)] FROM STDIN`.
    CopyIn {
        /// The table.
        table: TableReference,
        /// The columns the data has; empty for all.
        columns: Vec<String>,
        /// The data format.
        format: CopyFormat,
    },
    /// `COPY table|(query) TO STDOUT`.
    CopyOut {
        /// The rows to send.
        plan: Box<LogicalPlan>,
        /// The data format.
        format: CopyFormat,
    },
    /// A statement with `$n` parameters among a table function's arguments
    /// (`SELECT * FROM train($1, $2, $3)`): a table function is resolved while planning,
    /// so the statement is planned when it is executed, with the values in place. The
    /// parameters are text; the result's columns come from planning with NULLs.
    Deferred {
        /// The statement as parsed.
        statement: Box<AstStatement>,
        /// Number of parameters (the highest `$n`).
        parameters: usize,
        /// The result's columns.
        schema: SchemaRef,
    },
    /// `CREATE`/`ALTER`/`DROP USER`.
    User(UserCommand),
    /// `OPTIMIZE` or `VACUUM`.
    Maintenance(Maintenance),
    /// `ALTER TABLE`.
    Alter(Box<datafusion::sql::sqlparser::ast::AlterTable>),
    /// `LISTEN channel`.
    Listen(String),
    /// `UNLISTEN channel`, or `UNLISTEN *` (`None`).
    Unlisten(Option<String>),
    /// `NOTIFY channel [, 'payload']`.
    Notify {
        /// The channel.
        channel: String,
        /// The payload.
        payload: String,
    },
    /// An empty statement.
    #[default]
    Empty,
}

/// One parsed statement.
#[derive(Debug, Clone)]
pub enum Statement {
    /// A SQL statement, as sqlparser parsed it.
    Sql(Box<AstStatement>),
    /// A user-management statement (parsed by runbase: see [`crate::users`]).
    User(UserCommand),
    /// `OPTIMIZE t` or `VACUUM t …` (parsed by runbase).
    Maintenance(Maintenance),
}

impl From<AstStatement> for Statement {
    fn from(s: AstStatement) -> Self {
        Statement::Sql(Box::new(s))
    }
}

impl Statement {
    /// The statement's kind, as the statement counters label it (`select`, `insert`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Statement::Sql(ast) => ast_kind(ast),
            Statement::User(_) => "user",
            Statement::Maintenance(_) => "maintenance",
        }
    }
}

/// The kind of a parsed SQL statement (see [`Statement::kind`]).
pub(super) fn ast_kind(statement: &AstStatement) -> &'static str {
    match statement {
        AstStatement::Query(_) | AstStatement::Explain { .. } => "select",
        AstStatement::Insert(_) => "insert",
        AstStatement::Update { .. } => "update",
        AstStatement::Delete(_) => "delete",
        AstStatement::Merge { .. } => "merge",
        AstStatement::Copy { .. } => "copy",
        AstStatement::CreateTable(_)
        | AstStatement::CreateView { .. }
        | AstStatement::CreateSchema { .. }
        | AstStatement::CreateIndex(_)
        | AstStatement::AlterTable(_)
        | AstStatement::Drop { .. }
        | AstStatement::Truncate { .. } => "ddl",
        AstStatement::StartTransaction { .. }
        | AstStatement::Commit { .. }
        | AstStatement::Rollback { .. }
        | AstStatement::Savepoint { .. }
        | AstStatement::ReleaseSavepoint { .. } => "transaction",
        AstStatement::Set(_) | AstStatement::ShowVariable { .. } => "setting",
        AstStatement::LISTEN { .. }
        | AstStatement::UNLISTEN { .. }
        | AstStatement::NOTIFY { .. } => "notify",
        _ => "other",
    }
}

/// The kind of a planned statement (see [`Statement::kind`]).
fn plan_kind(plan: &LogicalPlan) -> &'static str {
    use datafusion::logical_expr::WriteOp;
    match plan {
        LogicalPlan::Dml(dml) => match dml.op {
            WriteOp::Insert(_) => "insert",
            WriteOp::Update => "update",
            WriteOp::Delete => "delete",
            // CREATE TABLE AS, TRUNCATE.
            _ => "ddl",
        },
        LogicalPlan::Ddl(_) => "ddl",
        LogicalPlan::Statement(datafusion::logical_expr::Statement::SetVariable(_)) => "setting",
        LogicalPlan::Statement(_) => "transaction",
        LogicalPlan::Copy(_) => "copy",
        _ => "select",
    }
}

impl Prepared {
    /// The statement's kind, as the statement counters label it (`select`, `insert`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Prepared::Plan(plan) => plan_kind(plan),
            Prepared::Show(_) => "setting",
            Prepared::Transaction(_) => "transaction",
            Prepared::CopyIn { .. } | Prepared::CopyOut { .. } => "copy",
            Prepared::Deferred { statement, .. } => ast_kind(statement),
            Prepared::User(_) => "user",
            Prepared::Maintenance(_) => "maintenance",
            Prepared::Alter(_) => "ddl",
            Prepared::Listen(_) | Prepared::Unlisten(_) | Prepared::Notify { .. } => "notify",
            Prepared::Empty => "empty",
        }
    }

    /// Whether executing the statement returns rows (a query, `SHOW`, a deferred query).
    pub fn returns_rows(&self) -> bool {
        match self {
            Prepared::Plan(plan) => returns_rows(plan),
            Prepared::Show(_) | Prepared::Deferred { .. } => true,
            _ => false,
        }
    }

    /// The schema of the rows the statement returns; empty for commands.
    pub fn output_schema(&self) -> SchemaRef {
        match self {
            Prepared::Plan(plan) if returns_rows(plan) => {
                Arc::new(plan.schema().as_arrow().clone())
            }
            Prepared::Plan(_)
            | Prepared::Empty
            | Prepared::Transaction(_)
            | Prepared::User(_)
            | Prepared::Maintenance(_)
            | Prepared::Alter(_)
            | Prepared::Listen(_)
            | Prepared::Unlisten(_)
            | Prepared::Notify { .. }
            | Prepared::CopyIn { .. }
            | Prepared::CopyOut { .. } => Arc::new(Schema::empty()),
            Prepared::Show(name) => show_schema(name),
            Prepared::Deferred { schema, .. } => schema.clone(),
        }
    }

    /// Types of the `$n` parameters, in order (`None` where it could not be inferred).
    pub fn parameter_types(&self) -> Result<Vec<Option<DataType>>> {
        if let Prepared::Deferred { parameters, .. } = self {
            return Ok(vec![Some(DataType::Utf8); *parameters]);
        }
        let Prepared::Plan(plan) = self else {
            return Ok(vec![]);
        };
        let mut types = plan.get_parameter_types()?;
        // A placeholder DataFusion could not type from context may still be cast
        // (`$1::int`); the cast's type is what the client should send.
        if types.values().any(Option::is_none) {
            for (id, ty) in placeholder_cast_types(plan)? {
                if let Some(slot) = types.get_mut(&id).filter(|t| t.is_none()) {
                    *slot = Some(ty);
                }
            }
        }
        // By position: `$n` is slot n-1. A number the plan no longer has (a rewrite of a
        // catalog query may drop a subquery's parameters) keeps its slot, untyped.
        let numbered: Vec<(usize, Option<DataType>)> = types
            .into_iter()
            .filter_map(|(id, ty)| {
                let n = id.trim_start_matches('$').parse::<usize>().ok()?;
                (1..=65_535).contains(&n).then_some((n, ty))
            })
            .collect();
        let count = numbered.iter().map(|(n, _)| *n).max().unwrap_or(0);
        let mut slots = vec![None; count];
        for (n, ty) in numbered {
            slots[n - 1] = ty;
        }
        Ok(slots)
    }
}

pub(super) fn returns_rows(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Copy(_)
    )
}

pub(super) fn show_schema(name: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]))
}

/// A query planned over fixed table versions: see [`Session::plan_pinned`].
#[derive(Debug)]
pub struct PinnedQuery {
    /// The plan, reading every user table at the version in `inputs`.
    pub plan: LogicalPlan,
    /// Each user table the query reads and the version it reads, by name.
    pub inputs: Vec<(String, i64)>,
}
