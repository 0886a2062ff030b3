//! [`Session`]: one client's SQL conversation with a [`Database`].
//!
//! A session owns its DataFusion context, so `SET` changes only that client's settings,
//! and shares the catalog with every other session. Statements are parsed with the
//! PostgreSQL dialect (plus the rewrites that make psql's catalog queries plan), planned
//! by DataFusion, and then either run by DataFusion or, for what changes stored data
//! (`CREATE TABLE`, `DROP TABLE`), by the [`Database`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, TableReference};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::dml::WriteOp;
use datafusion::logical_expr::{
    DdlStatement, DmlStatement, LogicalPlan, Statement as PlanStatement,
};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as AstStatement;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::TryStreamExt;

use crate::auth::{Role, UserCommand};
use crate::copy::{CopyFormat, CopyIn};
use crate::database::{Database, version_string};
use crate::error::{Error, Result};
use crate::schema::{PUBLIC_SCHEMA, SYSTEM_SCHEMA};

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
    fn plain(command: &'static str) -> Self {
        Self {
            command,
            rows: None,
        }
    }

    fn with_rows(command: &'static str, rows: u64) -> Self {
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
    /// An empty statement.
    #[default]
    Empty,
}

/// One parsed statement.
#[derive(Debug, Clone)]
pub enum Statement {
    /// A SQL statement, as sqlparser parsed it.
    Sql(Box<AstStatement>),
    /// A user-management statement (parsed by runbase: see [`crate::auth`]).
    User(UserCommand),
}

impl From<AstStatement> for Statement {
    fn from(s: AstStatement) -> Self {
        Statement::Sql(Box::new(s))
    }
}

/// The first function `statement` calls (as a scalar or as a table function) for which
/// `writes` is true.
fn writing_call(statement: &AstStatement, writes: &dyn Fn(&str) -> bool) -> Option<String> {
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

impl Prepared {
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

/// Names a top-level tracking-function column after the function, as PostgreSQL names
/// `SELECT f(…)` — `log_metric`, not `log_metric(Utf8("…"), …)` — when that name is free.
fn name_tracking_calls(plan: LogicalPlan) -> Result<LogicalPlan> {
    use crate::tracking::functions::TrackingFunction;
    use datafusion::logical_expr::{Expr, Projection};
    let LogicalPlan::Projection(projection) = plan else {
        return Ok(plan);
    };
    let names: Vec<String> = projection
        .expr
        .iter()
        .map(|e| e.schema_name().to_string())
        .collect();
    let mut changed = false;
    let exprs: Vec<Expr> = projection
        .expr
        .iter()
        .map(|e| match e {
            Expr::ScalarFunction(f) => {
                let inner: &dyn std::any::Any = f.func.inner().as_ref();
                let name = f.func.name();
                let taken = names.iter().any(|n| n == name)
                    || projection
                        .expr
                        .iter()
                        .filter(|o| matches!(o, Expr::ScalarFunction(g) if g.func.name() == name))
                        .count()
                        > 1;
                if inner.downcast_ref::<TrackingFunction>().is_some() && !taken {
                    changed = true;
                    e.clone().alias(name)
                } else {
                    e.clone()
                }
            }
            other => other.clone(),
        })
        .collect();
    if !changed {
        return Ok(LogicalPlan::Projection(projection));
    }
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        projection.input.clone(),
    )?))
}

/// The target types of `CAST($n AS type)` expressions in `plan`.
fn placeholder_cast_types(plan: &LogicalPlan) -> Result<Vec<(String, DataType)>> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    let mut found = Vec::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::Cast(cast) = e
                    && let Expr::Placeholder(p) = cast.expr.as_ref()
                {
                    found.push((p.id.clone(), cast.field.data_type().clone()));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(found)
}

fn returns_rows(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Copy(_)
    )
}

/// The user table a plan node scans, and the version it reads (`None`: the latest).
fn user_table_scan(node: &LogicalPlan) -> Option<(Arc<crate::storage::StoredTable>, Option<i64>)> {
    let LogicalPlan::TableScan(scan) = node else {
        return None;
    };
    let provider = datafusion::datasource::source_as_provider(&scan.source).ok()?;
    let user = (provider.as_ref() as &dyn std::any::Any)
        .downcast_ref::<crate::provider::UserTableProvider>()?;
    Some((user.stored().clone(), user.version()))
}

/// The number of `$n` parameters of `statement` if any of them is an argument of a table
/// function in a `FROM` clause; `None` otherwise.
fn table_function_parameters(statement: &AstStatement) -> Option<usize> {
    use datafusion::sql::sqlparser::ast::{
        Expr as SqlExpr, FunctionArg, FunctionArgExpr, TableFactor, Value, Visit, Visitor,
        visit_expressions,
    };
    use std::ops::ControlFlow;
    fn placeholders(node: &impl Visit) -> usize {
        let mut highest = 0;
        let _ = visit_expressions(node, |e| {
            if let SqlExpr::Value(v) = e
                && let Value::Placeholder(p) = &v.value
            {
                highest = highest.max(p.trim_start_matches('$').parse().unwrap_or(1));
            }
            ControlFlow::<()>::Continue(())
        });
        highest
    }
    struct InFunctionArgs(bool);
    impl Visitor for InFunctionArgs {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                args: Some(args), ..
            } = factor
            {
                for arg in &args.args {
                    let (FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
                    | FunctionArg::Named {
                        arg: FunctionArgExpr::Expr(e),
                        ..
                    }
                    | FunctionArg::ExprNamed {
                        arg: FunctionArgExpr::Expr(e),
                        ..
                    }) = arg
                    else {
                        continue;
                    };
                    if placeholders(e) > 0 {
                        self.0 = true;
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut found = InFunctionArgs(false);
    let _ = statement.visit(&mut found);
    found.0.then(|| placeholders(statement))
}

/// The string literals `statement` passes to table functions at the positions
/// `positions(function)` names.
fn query_arguments(
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

/// Replaces every `$n` in `statement` by the value bound to it (NULL when none is).
fn bind_parameters(statement: &mut AstStatement, params: &ParamValues) -> Result<()> {
    use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Value, visit_expressions_mut};
    use std::ops::ControlFlow;
    let _ = visit_expressions_mut(statement, |e| {
        if let SqlExpr::Value(v) = e
            && let Value::Placeholder(p) = &v.value
        {
            let scalar = match params {
                ParamValues::List(list) => p
                    .trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| list.get(i.wrapping_sub(1)))
                    .map(|s| s.value.clone()),
                ParamValues::Map(map) => {
                    map.get(p.trim_start_matches('$')).map(|s| s.value.clone())
                }
            };
            v.value = match scalar {
                None => Value::Null,
                Some(s) if s.is_null() => Value::Null,
                Some(
                    datafusion::common::ScalarValue::Utf8(Some(t))
                    | datafusion::common::ScalarValue::Utf8View(Some(t))
                    | datafusion::common::ScalarValue::LargeUtf8(Some(t)),
                ) => Value::SingleQuotedString(t),
                Some(s) if s.data_type().is_numeric() => Value::Number(s.to_string(), false),
                Some(s) => Value::SingleQuotedString(s.to_string()),
            };
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(())
}

fn show_schema(name: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]))
}

/// Messages a running statement sends its client before its result (PostgreSQL's NOTICE):
/// TRAIN's progress, for one. Every session has one queue, reachable from inside a plan as a
/// session-config extension; the server forwards what arrives while a statement runs.
#[derive(Debug, Default)]
pub struct Notices {
    queue: Mutex<Vec<String>>,
    notify: tokio::sync::Notify,
}

impl Notices {
    /// Queues a message for the client.
    pub fn push(&self, message: impl Into<String>) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message.into());
        self.notify.notify_one();
    }

    /// Takes every queued message.
    pub fn drain(&self) -> Vec<String> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves once a message may have been queued since the last call.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

/// Who is on the other end of a session, as a session-config extension: functions that
/// start runs record it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The startup `user`.
    pub user: Option<String>,
    /// The startup `application_name`.
    pub application: Option<String>,
}

/// Queries passed to table functions as text, planned before the statement that calls them
/// (see [`Database::register_query_argument`]): a session-config extension, so a table
/// function finds the plan of its query argument while the statement is planned.
///
/// [`Database::register_query_argument`]: crate::Database::register_query_argument
#[derive(Debug, Default)]
pub struct PlannedQueries {
    plans: Mutex<HashMap<String, LogicalPlan>>,
}

impl PlannedQueries {
    /// Most plans kept; older ones are dropped (they are planned again when needed).
    const CAPACITY: usize = 32;

    /// The plan of `sql`, if the statement being planned passed it as a query argument.
    pub fn get(&self, sql: &str) -> Option<LogicalPlan> {
        self.plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned()
    }

    fn insert(&self, sql: String, plan: LogicalPlan) {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if plans.len() >= Self::CAPACITY {
            plans.clear();
        }
        plans.insert(sql, plan);
    }
}

/// Settings a client changed with `SET` (PostgreSQL-level ones such as `application_name`,
/// and `runbase.*` ones such as `runbase.device`), visible to functions as a session-config
/// extension.
#[derive(Debug, Default)]
pub struct SessionVariables {
    values: Mutex<HashMap<String, String>>,
}

impl SessionVariables {
    /// The value `name` (lower case) was set to in this session, if it was.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn set(&self, name: String, value: String) {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, value);
    }
}

/// A query planned over fixed table versions: see [`Session::plan_pinned`].
#[derive(Debug)]
pub struct PinnedQuery {
    /// The plan, reading every user table at the version in `inputs`.
    pub plan: LogicalPlan,
    /// Each user table the query reads and the version it reads, by name.
    pub inputs: Vec<(String, i64)>,
}

/// One client's session.
pub struct Session {
    db: Database,
    ctx: SessionContext,
    parser: PostgresCompatibilityParser,
    /// Variables (`application_name`, `search_path`, `runbase.device`, …) set by the client.
    variables: Arc<SessionVariables>,
    /// Set once the client's identity is known.
    client: std::sync::Once,
    notices: Arc<Notices>,
    /// What statements are authorized as (see [`Session::set_role`]).
    role: Mutex<Role>,
    /// The user the session is authorized as.
    user_name: Mutex<String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.ctx.session_id())
            .finish()
    }
}

impl Session {
    pub(crate) fn new(db: Database, ctx: SessionContext) -> Self {
        let notices = Arc::new(Notices::default());
        let variables = Arc::new(SessionVariables::default());
        {
            let state = ctx.state_ref();
            let mut state = state.write();
            let config = state.config_mut();
            config.set_extension(notices.clone());
            config.set_extension(variables.clone());
            config.set_extension(Arc::new(PlannedQueries::default()));
        }
        Self {
            notices,
            db,
            ctx,
            parser: PostgresCompatibilityParser::new(),
            variables,
            client: std::sync::Once::new(),
            role: Mutex::new(Role::Superuser),
            user_name: Mutex::new(String::new()),
        }
    }

    /// Records who is on the other end (the startup `user` and `application_name`), so the
    /// runs this session starts say who started them. Only the first call counts.
    pub fn set_client(&self, user: Option<String>, application: Option<String>) {
        self.client.call_once(|| {
            self.ctx
                .state_ref()
                .write()
                .config_mut()
                .set_extension(Arc::new(ClientIdentity {
                    user: user.clone(),
                    application: application.clone(),
                }));
            let caller = crate::tracking::functions::Caller { user, application };
            self.ctx.register_udf(self.db.start_run_function(&caller));
        });
    }

    /// The messages statements of this session queue for the client.
    pub fn notices(&self) -> &Arc<Notices> {
        &self.notices
    }

    /// The database this session belongs to.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Plans `sql`, which must be one query, so that it reads every user table at a fixed
    /// version: the one `pins` names, else the table's latest version now. Running the plan
    /// later, or again, reads the same data.
    pub async fn plan_pinned(&self, sql: &str, pins: &HashMap<String, i64>) -> Result<PinnedQuery> {
        use datafusion::common::tree_node::Transformed;
        use datafusion::datasource::provider_as_source;
        let mut statements = self.parse_ast(sql)?;
        let statement = match (statements.pop(), statements.is_empty()) {
            (Some(s @ AstStatement::Query(_)), true) => s,
            _ => {
                return Err(Error::InvalidArgument(
                    "the query must be exactly one SELECT statement".into(),
                ));
            }
        };
        let Prepared::Plan(plan) = self.prepare_ast(statement).await? else {
            return Err(Error::InvalidArgument(
                "the query must be exactly one SELECT statement".into(),
            ));
        };
        // Resolve the versions first (async), then rewrite the plan (sync).
        let mut versions: HashMap<String, i64> = HashMap::new();
        let mut tables = Vec::new();
        plan.apply_with_subqueries(|node| {
            tables.extend(user_table_scan(node));
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
        let mut inputs = Vec::new();
        for (table, fixed) in &tables {
            let name = table.entry.name.clone();
            let version = match (fixed, pins.get(&name)) {
                (Some(v), _) | (None, Some(v)) => *v,
                (None, None) => match versions.get(&name) {
                    Some(v) => *v,
                    None => table
                        .latest()
                        .await?
                        .version()
                        .map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)),
                },
            };
            if fixed.is_none() {
                versions.insert(name.clone(), version);
            }
            inputs.push((name, version));
        }
        inputs.sort();
        inputs.dedup();
        let plan = plan
            .transform_up_with_subqueries(|node| {
                if let Some((table, None)) = user_table_scan(&node)
                    && let Some(v) = versions.get(&table.entry.name)
                    && let LogicalPlan::TableScan(scan) = &node
                {
                    let mut scan = scan.clone();
                    scan.source = provider_as_source(Arc::new(
                        crate::provider::UserTableProvider::at_version(table, *v),
                    ));
                    return Ok(Transformed::yes(LogicalPlan::TableScan(scan)));
                }
                Ok(Transformed::no(node))
            })?
            .data;
        Ok(PinnedQuery { plan, inputs })
    }

    /// Runs a query plan (one from [`Session::plan_pinned`]) and streams its rows.
    pub async fn run_query(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
        let df = self.ctx.execute_logical_plan(plan).await?;
        let physical = df.create_physical_plan().await?;
        Ok(self.db.executor().execute(physical, self.ctx.task_ctx()))
    }

    /// The DataFusion context behind this session.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Parses `sql` into statements: SQL, or the user-management statements runbase
    /// parses itself (`CREATE`/`ALTER`/`DROP USER`, see [`crate::auth`]).
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        if let Some(chunks) = crate::auth::split_user_commands(sql) {
            let mut out = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                match chunk {
                    crate::auth::Chunk::User(cmd) => out.push(Statement::User(cmd?)),
                    crate::auth::Chunk::Sql(text) => out.extend(
                        self.parse_ast(&text)?
                            .into_iter()
                            .map(|s| Statement::Sql(Box::new(s))),
                    ),
                }
            }
            return Ok(out);
        }
        Ok(self
            .parse_ast(sql)?
            .into_iter()
            .map(|s| Statement::Sql(Box::new(s)))
            .collect())
    }

    /// Parses `sql` with the SQL parser.
    pub(crate) fn parse_ast(&self, sql: &str) -> Result<Vec<AstStatement>> {
        self.parser.parse(sql).map_err(|e| {
            Error::DataFusion(datafusion::error::DataFusionError::SQL(Box::new(e), None))
        })
    }

    /// The role this session's statements are authorized as.
    pub fn role(&self) -> Role {
        *self.role.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the role (and user name) statements are authorized as; sessions start as
    /// superuser, as an embedded database is its program's own. The server sets it after
    /// authentication.
    pub fn set_role(&self, user: &str, role: Role) {
        *self.role.lock().unwrap_or_else(|p| p.into_inner()) = role;
        *self.user_name.lock().unwrap_or_else(|p| p.into_inner()) = user.to_string();
    }

    fn user_name(&self) -> String {
        self.user_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Plans one parsed statement.
    pub async fn prepare(&self, statement: Statement) -> Result<Prepared> {
        match statement {
            Statement::Sql(ast) => self.prepare_ast(*ast).await,
            Statement::User(cmd) => {
                self.authorize_user_command(&cmd)?;
                Ok(Prepared::User(cmd))
            }
        }
    }

    /// Superusers manage users; anyone may change their own password.
    fn authorize_user_command(&self, cmd: &UserCommand) -> Result<()> {
        if self.role() == Role::Superuser {
            return Ok(());
        }
        if let UserCommand::Alter {
            name,
            role: None,
            password: Some(_),
        } = cmd
            && *name == self.user_name()
        {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "permission denied: only a superuser can manage users (\"{}\" is {})",
            self.user_name(),
            self.role()
        )))
    }

    /// Refuses, for a read-only session, any statement that would change something: only
    /// queries, `EXPLAIN` of them, `SHOW`, `SET`, transaction statements and `COPY … TO`
    /// pass, and none that calls a function registered as writing
    /// ([`Database::register_writing_function`]).
    fn authorize(&self, statement: &AstStatement) -> Result<()> {
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

    /// Plans one parsed SQL statement.
    pub(crate) async fn prepare_ast(&self, statement: AstStatement) -> Result<Prepared> {
        self.authorize(&statement)?;
        match &statement {
            AstStatement::StartTransaction { .. } => return Ok(Prepared::Transaction("BEGIN")),
            AstStatement::Commit { .. } => return Ok(Prepared::Transaction("COMMIT")),
            AstStatement::Rollback { .. } => return Ok(Prepared::Transaction("ROLLBACK")),
            // Savepoints are accepted as transactions are (drivers and ORMs nest them).
            AstStatement::Savepoint { .. } => return Ok(Prepared::Transaction("SAVEPOINT")),
            AstStatement::ReleaseSavepoint { .. } => {
                return Ok(Prepared::Transaction("RELEASE"));
            }
            AstStatement::Deallocate { .. } => {
                // Of a SQL-level PREPARE (DataFusion's), or of a protocol-level statement
                // the server forgets (psycopg deallocates its `_pg3_N` statements by SQL).
                if let Ok(plan) = self
                    .ctx
                    .state()
                    .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
                    .await
                {
                    // Not found is fine: the name may be the server's.
                    let _ = self.ctx.execute_logical_plan(plan).await;
                }
                return Ok(Prepared::Transaction("DEALLOCATE"));
            }
            _ => {}
        }
        if let AstStatement::Copy { .. } = &statement {
            return self.prepare_copy(statement).await;
        }
        if let AstStatement::ShowVariable { variable } = &statement {
            let name = variable
                .iter()
                .map(|i| i.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(".");
            // PostgreSQL's multi-word spellings (SQLAlchemy asks for the isolation level).
            let name = match name.as_str() {
                "transaction.isolation.level" => "transaction_isolation".to_string(),
                "time.zone" => "timezone".to_string(),
                _ => name,
            };
            if !name.starts_with("datafusion.") && name != "all" {
                return Ok(Prepared::Show(name));
            }
        }
        let mut statement = statement;
        self.inline_current_settings(&mut statement)?;
        crate::rewrite::compatibility(&mut statement)?;
        if let Some(parameters) = table_function_parameters(&statement) {
            let mut probe = statement.clone();
            bind_parameters(&mut probe, &ParamValues::List(vec![]))?;
            // Columns that depend on the values (`predict`'s are the query's) are only
            // known once they are bound; the portal is described then.
            let schema = match Box::pin(self.prepare_ast(probe)).await {
                Ok(p) => p.output_schema(),
                Err(_) => Arc::new(Schema::empty()),
            };
            return Ok(Prepared::Deferred {
                statement: Box::new(statement),
                parameters,
                schema,
            });
        }
        self.plan_query_arguments(&statement).await?;
        let plan = self
            .ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await?;
        let plan = name_tracking_calls(plan)?;
        Ok(Prepared::Plan(self.type_placeholders(plan)?))
    }

    /// Executes a prepared statement with `params` bound to its `$n` placeholders.
    pub async fn execute(
        &self,
        prepared: &Prepared,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        match prepared {
            Prepared::Empty => Ok(QueryOutput::Command(CommandTag::plain(""))),
            Prepared::Show(name) => self.show(name),
            Prepared::User(cmd) => self.run_user_command(cmd).map(QueryOutput::Command),
            Prepared::Transaction(tag) => Ok(QueryOutput::Command(CommandTag::plain(tag))),
            Prepared::CopyIn {
                table,
                columns,
                format,
            } => {
                let provider = self.ctx.table_provider(table.clone()).await?;
                let copy = CopyIn::new(table.to_string(), provider, columns, format.clone())?;
                Ok(QueryOutput::CopyIn(Box::new(copy)))
            }
            Prepared::CopyOut { plan, format } => {
                let df = self.ctx.execute_logical_plan(plan.as_ref().clone()).await?;
                let physical = df.create_physical_plan().await?;
                let stream = self.db.executor().execute(physical, self.ctx.task_ctx());
                Ok(QueryOutput::CopyOut(stream, format.clone()))
            }
            Prepared::Deferred { .. } => {
                let params = params.unwrap_or(ParamValues::List(vec![]));
                let prepared = self.bind_deferred(prepared, params).await?;
                Box::pin(self.execute(&prepared, None)).await
            }
            Prepared::Plan(plan) => {
                let plan = match params {
                    Some(p) => plan.clone().with_param_values(p)?,
                    None => plan.clone(),
                };
                if let Some(output) = self.try_direct_call(&plan).await? {
                    return Ok(output);
                }
                self.execute_plan(plan).await
            }
        }
    }

    /// Plans the queries `statement` passes as text to table functions that take one (see
    /// [`Database::register_query_argument`]), for the functions to find in
    /// [`PlannedQueries`].
    ///
    /// [`Database::register_query_argument`]: crate::Database::register_query_argument
    async fn plan_query_arguments(&self, statement: &AstStatement) -> Result<()> {
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

    /// Plans a [`Prepared::Deferred`] statement with `params` in place of its `$n`; any
    /// other statement comes back as it is.
    pub async fn bind_deferred(
        &self,
        prepared: &Prepared,
        params: ParamValues,
    ) -> Result<Prepared> {
        let Prepared::Deferred { statement, .. } = prepared else {
            return Ok(prepared.clone());
        };
        let mut statement = statement.as_ref().clone();
        bind_parameters(&mut statement, &params)?;
        Box::pin(self.prepare_ast(statement)).await
    }

    async fn prepare_copy(&self, statement: AstStatement) -> Result<Prepared> {
        use datafusion::sql::sqlparser::ast::{CopySource, CopyTarget};
        let AstStatement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            values,
        } = statement
        else {
            return Err(Error::InvalidArgument("not a COPY statement".into()));
        };
        let format = CopyFormat::from_options(&options, &legacy_options)?;
        match (to, target, source) {
            (
                false,
                CopyTarget::Stdin,
                CopySource::Table {
                    table_name,
                    columns,
                },
            ) => {
                if !values.is_empty() {
                    return Err(Error::NotSupported(
                        "COPY data inline in the statement (send it as COPY data)".into(),
                    ));
                }
                let table = self.table_reference(&table_name.to_string())?;
                let resolved = table.clone().resolve(crate::DATABASE_NAME, PUBLIC_SCHEMA);
                if resolved.schema.as_ref() == SYSTEM_SCHEMA && resolved.table.as_ref() != "metrics"
                {
                    return Err(Error::ReadOnly(format!(
                        "COPY FROM into runbase.{} is not allowed; of the runbase tables only runbase.metrics takes COPY",
                        resolved.table
                    )));
                }
                // Fail now, not after the data, if the table does not exist.
                self.ctx.table_provider(table.clone()).await?;
                Ok(Prepared::CopyIn {
                    table,
                    columns: columns.into_iter().map(|c| c.value).collect(),
                    format,
                })
            }
            (true, CopyTarget::Stdout, source) => {
                let query = match source {
                    CopySource::Query(q) => AstStatement::Query(q),
                    CopySource::Table {
                        table_name,
                        columns,
                    } => {
                        let cols = if columns.is_empty() {
                            "*".to_string()
                        } else {
                            columns
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        let sql = format!("SELECT {cols} FROM {table_name}");
                        self.parse_ast(&sql)?
                            .pop()
                            .ok_or_else(|| Error::InvalidArgument("COPY has no table".into()))?
                    }
                };
                let plan = self
                    .ctx
                    .state()
                    .statement_to_plan(DfStatement::Statement(Box::new(query)))
                    .await?;
                Ok(Prepared::CopyOut {
                    plan: Box::new(plan),
                    format,
                })
            }
            (false, target, _) | (true, target, _) => Err(Error::NotSupported(format!(
                "COPY with {target} (runbase does not read or write the server's files; use FROM STDIN / TO STDOUT, as psql's \\copy does)"
            ))),
        }
    }

    /// `SELECT f(constants), …` where every `f` is a tracking function — the statement a
    /// training loop sends for every value — is answered by calling the functions
    /// directly (on the CPU runtime), without the optimizer and the physical planner.
    async fn try_direct_call(&self, plan: &LogicalPlan) -> Result<Option<QueryOutput>> {
        use crate::tracking::functions::TrackingFunction;
        use datafusion::common::ScalarValue;
        use datafusion::logical_expr::Expr;
        let LogicalPlan::Projection(projection) = plan else {
            return Ok(None);
        };
        if !matches!(projection.input.as_ref(), LogicalPlan::EmptyRelation(e) if e.produce_one_row)
        {
            return Ok(None);
        }
        let mut calls = Vec::with_capacity(projection.expr.len());
        for expr in &projection.expr {
            let expr = match expr {
                Expr::Alias(a) => a.expr.as_ref(),
                e => e,
            };
            let Expr::ScalarFunction(f) = expr else {
                return Ok(None);
            };
            let inner: &dyn std::any::Any = f.func.inner().as_ref();
            if inner.downcast_ref::<TrackingFunction>().is_none() {
                return Ok(None);
            }
            let mut args: Vec<ScalarValue> = Vec::with_capacity(f.args.len());
            for a in &f.args {
                match a {
                    Expr::Literal(v, _) => args.push(v.clone()),
                    Expr::Cast(c) => match c.expr.as_ref() {
                        Expr::Literal(v, _) => args.push(v.cast_to(c.field.data_type())?),
                        _ => return Ok(None),
                    },
                    _ => return Ok(None),
                }
            }
            calls.push((f.func.clone(), args));
        }
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let batch_schema = schema.clone();
        let batch = self
            .db
            .executor()
            .spawn(async move {
                let mut columns = Vec::with_capacity(calls.len());
                for (udf, args) in calls {
                    let inner: &dyn std::any::Any = udf.inner().as_ref();
                    let f = inner
                        .downcast_ref::<TrackingFunction>()
                        .ok_or_else(|| Error::InvalidArgument("not a tracking function".into()))?;
                    columns.push(f.call_scalars(&args)?);
                }
                RecordBatch::try_new(batch_schema, columns).map_err(|e| Error::DataFusion(e.into()))
            })
            .await?;
        let stream = MemoryStream::try_new(vec![batch], schema, None)?;
        Ok(Some(QueryOutput::Rows(Box::pin(stream))))
    }

    /// Gives untyped `$n` placeholders the type the analyzer's coercion casts them to
    /// (`log_metric($1, $2, $3)` → text, text, double precision), so clients are told the
    /// types they should bind.
    fn type_placeholders(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        use datafusion::common::tree_node::{Transformed, TreeNode as _};
        use datafusion::logical_expr::Expr;
        // A parameter the statement casts (`$1::varchar`) has the cast's type, as in
        // PostgreSQL, whatever DataFusion inferred from what it is compared with.
        let mut casts: HashMap<String, DataType> =
            placeholder_cast_types(&plan)?.into_iter().collect();
        let untyped = plan.get_parameter_types()?;
        if untyped
            .iter()
            .any(|(id, t)| t.is_none() && !casts.contains_key(id))
        {
            // Others that are still untyped take the type the analyzer casts them to.
            let state = self.ctx.state();
            if let Ok(analyzed) =
                state
                    .analyzer()
                    .execute_and_check(plan.clone(), state.config_options(), |_, _| {})
            {
                for (id, t) in placeholder_cast_types(&analyzed)? {
                    if untyped.get(&id).is_some_and(Option::is_none) {
                        casts.entry(id).or_insert(t);
                    }
                }
            }
        }
        casts.retain(|id, t| untyped.get(id).is_some_and(|have| have.as_ref() != Some(t)));
        if casts.is_empty() {
            return Ok(plan);
        }
        let typed = plan
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|expr| {
                    expr.transform_up(|e| match e {
                        Expr::Placeholder(p) => match casts.get(&p.id) {
                            Some(t) => Ok(Transformed::yes(Expr::Placeholder(
                                datafusion::logical_expr::expr::Placeholder::new_with_field(
                                    p.id,
                                    Some(Arc::new(Field::new("", t.clone(), true))),
                                ),
                            ))),
                            None => Ok(Transformed::no(Expr::Placeholder(p))),
                        },
                        other => Ok(Transformed::no(other)),
                    })
                })
            })?
            .data;
        Ok(typed)
    }

    fn table_reference(&self, name: &str) -> Result<TableReference> {
        Ok(TableReference::parse_str(name))
    }

    /// Writes the rows of a finished `COPY … FROM STDIN`, all in one commit.
    pub async fn finish_copy_in(&self, mut copy: CopyIn) -> Result<CommandTag> {
        use datafusion::datasource::memory::MemorySourceConfig;
        use datafusion::logical_expr::dml::InsertOp;
        let batches = copy.finish_rows()?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows == 0 {
            return Ok(CommandTag::with_rows("COPY", 0));
        }
        let input = MemorySourceConfig::try_new_exec(&[batches], copy.schema.clone(), None)?;
        let state = self.ctx.state();
        let plan = copy
            .provider
            .insert_into(&state, input, InsertOp::Append)
            .await?;
        let _: Vec<RecordBatch> = self
            .db
            .executor()
            .execute(plan, self.ctx.task_ctx())
            .try_collect()
            .await?;
        Ok(CommandTag::with_rows("COPY", rows as u64))
    }

    /// Parses, plans and executes every statement in `sql`, in order; stops at the first error.
    pub async fn sql(&self, sql: &str) -> Result<Vec<QueryOutput>> {
        let mut out = Vec::new();
        for statement in self.parse(sql)? {
            let prepared = self.prepare(statement).await?;
            out.push(self.execute(&prepared, None).await?);
        }
        Ok(out)
    }

    /// Runs `sql` and collects the rows of its last statement.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        match self.sql(sql).await?.pop() {
            Some(output) => output.collect().await,
            None => Ok(vec![]),
        }
    }

    async fn execute_plan(&self, plan: LogicalPlan) -> Result<QueryOutput> {
        let tag = match &plan {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
                if create.temporary || create.or_replace {
                    return Err(Error::NotSupported(
                        "CREATE TEMPORARY TABLE and CREATE OR REPLACE TABLE".into(),
                    ));
                }
                if !create.column_defaults.is_empty() {
                    return Err(Error::NotSupported("column DEFAULT values".into()));
                }
                if !create.constraints.is_empty() {
                    return Err(Error::NotSupported(
                        "PRIMARY KEY and UNIQUE constraints (declare columns NOT NULL instead)"
                            .into(),
                    ));
                }
                let is_ctas = !matches!(create.input.as_ref(), LogicalPlan::EmptyRelation(e) if !e.produce_one_row);
                let rows = self
                    .db
                    .create_table(&self.ctx, &create.name, &create.input, create.if_not_exists)
                    .await?;
                if is_ctas {
                    CommandTag::with_rows("SELECT", rows)
                } else {
                    CommandTag::plain("CREATE TABLE")
                }
            }
            LogicalPlan::Ddl(DdlStatement::DropTable(drop)) => {
                self.db.drop_table(&drop.name, drop.if_exists).await?;
                CommandTag::plain("DROP TABLE")
            }
            LogicalPlan::Ddl(other) => {
                return Err(Error::NotSupported(other.name().to_string()));
            }
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Insert(_),
                ..
            }) => {
                let rows = self.run_count(plan).await?;
                CommandTag::with_rows("INSERT", rows)
            }
            LogicalPlan::Dml(dml) => {
                return Err(Error::NotSupported(format!(
                    "{} (tables are append-only for now)",
                    dml.op
                )));
            }
            LogicalPlan::Copy(_) => return Err(Error::NotSupported("COPY … TO".into())),
            LogicalPlan::Statement(PlanStatement::SetVariable(set)) => {
                let name = set.variable.to_lowercase();
                if name.starts_with("datafusion.") {
                    self.ctx.execute_logical_plan(plan).await?;
                } else {
                    self.variables.set(name, set.value.clone());
                }
                CommandTag::plain("SET")
            }
            LogicalPlan::Statement(PlanStatement::Prepare(_)) => {
                self.ctx.execute_logical_plan(plan).await?;
                CommandTag::plain("PREPARE")
            }
            LogicalPlan::Statement(PlanStatement::Execute(_)) => {
                let df = self.ctx.execute_logical_plan(plan).await?;
                let physical = df.create_physical_plan().await?;
                let stream = self.db.executor().execute(physical, self.ctx.task_ctx());
                return Ok(QueryOutput::Rows(stream));
            }
            LogicalPlan::Statement(other) => {
                return Err(Error::NotSupported(other.name().to_string()));
            }
            _ => {
                let df = self.ctx.execute_logical_plan(plan).await?;
                let physical = df.create_physical_plan().await?;
                let stream = self.db.executor().execute(physical, self.ctx.task_ctx());
                return Ok(QueryOutput::Rows(stream));
            }
        };
        Ok(QueryOutput::Command(tag))
    }

    fn run_user_command(&self, cmd: &UserCommand) -> Result<CommandTag> {
        let tracking = self.db.tracking();
        let verifier = |p: &Option<String>| p.as_deref().map(crate::auth::verifier_for).transpose();
        Ok(match cmd {
            UserCommand::Create {
                name,
                if_not_exists,
                role,
                password,
            } => {
                let verifier = match password {
                    Some(p) => verifier(p)?,
                    None => None,
                };
                tracking.create_user(
                    name,
                    role.unwrap_or(Role::Readwrite),
                    verifier,
                    *if_not_exists,
                )?;
                CommandTag::plain("CREATE ROLE")
            }
            UserCommand::Alter {
                name,
                role,
                password,
            } => {
                let verifier = match password {
                    Some(p) => Some(verifier(p)?),
                    None => None,
                };
                tracking.alter_user(name, *role, verifier)?;
                CommandTag::plain("ALTER ROLE")
            }
            UserCommand::Drop { names, if_exists } => {
                for name in names {
                    if *name == self.user_name() {
                        return Err(Error::InvalidState("current user cannot be dropped".into()));
                    }
                    tracking.drop_user(name, *if_exists)?;
                }
                CommandTag::plain("DROP ROLE")
            }
        })
    }

    /// Runs a DML plan and reads the row count it reports.
    async fn run_count(&self, plan: LogicalPlan) -> Result<u64> {
        let df = self.ctx.execute_logical_plan(plan).await?;
        let physical = df.create_physical_plan().await?;
        let batches: Vec<RecordBatch> = self
            .db
            .executor()
            .execute(physical, self.ctx.task_ctx())
            .try_collect()
            .await?;
        let count = batches
            .first()
            .and_then(|b| b.column_by_name("count"))
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
            })
            .map(|a| a.value(0))
            .unwrap_or(0);
        Ok(count)
    }

    /// The value of setting `name` (lower case) in this session: what `SET` gave it, else
    /// its default; None for a setting runbase does not have.
    fn setting(&self, name: &str) -> Option<String> {
        self.variables.get(name).or_else(|| default_variable(name))
    }

    /// Replaces `current_setting('name' [, missing_ok])` by the setting's value as a
    /// string literal (NULL for an unknown setting with `missing_ok` true), so the planner
    /// sees a constant; an unknown setting otherwise is an error, as in PostgreSQL.
    fn inline_current_settings(&self, statement: &mut AstStatement) -> Result<()> {
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

    fn show(&self, name: &str) -> Result<QueryOutput> {
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

/// Values of PostgreSQL's read-mostly settings that clients ask for.
fn default_variable(name: &str) -> Option<String> {
    Some(
        match name {
            "server_version" => "16.0",
            "server_version_num" => "160000",
            "server_encoding" | "client_encoding" => "UTF8",
            "datestyle" => "ISO, MDY",
            "intervalstyle" => "postgres",
            "timezone" | "time zone" => "UTC",
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
