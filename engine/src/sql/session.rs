//! [`Session`]: one client's SQL conversation with a [`Database`].
//!
//! A session owns its DataFusion context, so `SET` changes only that client's settings,
//! and shares the catalog with every other session. Statements are parsed with the
//! PostgreSQL dialect (plus the rewrites that make psql's catalog queries plan), planned
//! by DataFusion, and then either run by DataFusion or, for what changes stored data
//! (`CREATE TABLE`, `DROP TABLE`), by the [`Database`].

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::{ParamValues, TableReference};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::dml::WriteOp;
use datafusion::logical_expr::{
    DdlStatement, DmlStatement, LogicalPlan, Statement as PlanStatement,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as AstStatement;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::TryStreamExt;

use super::metered::metered;
use super::*;
use crate::database::Database;
use crate::error::{Error, Result};
use crate::pg::copy::CopyIn;
use crate::users::Role;

/// One client's session.
pub struct Session {
    pub(super) db: Database,
    pub(super) ctx: SessionContext,
    parser: PostgresCompatibilityParser,
    /// Variables (`application_name`, `search_path`, `runbase.device`, …) set by the client.
    pub(super) variables: Arc<SessionVariables>,
    /// Set once the client's identity is known.
    client: std::sync::Once,
    notices: Arc<Notices>,
    /// What statements are authorized as (see [`Session::set_role`]).
    role: Mutex<Role>,
    /// The user the session is authorized as.
    user_name: Mutex<String>,
    /// The channels it `LISTEN`s on and the notifications waiting for it.
    listener: Arc<crate::notify::Listener>,
    /// The process id the front end gave the client (what `NOTIFY` reports as sender).
    backend_pid: std::sync::atomic::AtomicI32,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.ctx.session_id())
            .finish()
    }
}

impl Database {
    /// A new session: its own settings, sharing tables with every other session.
    pub fn session(&self) -> Session {
        Session::new(
            self.clone(),
            SessionContext::new_with_state(self.template_state()),
        )
    }

    /// A new session authorized as `identity` (see [`Session::set_identity`]): what every
    /// front end opens for an authenticated client.
    pub fn session_for(&self, identity: &Identity) -> Session {
        let session = self.session();
        session.set_identity(identity);
        session
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
            listener: Arc::default(),
            backend_pid: std::sync::atomic::AtomicI32::new(0),
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
            for f in self.db.caller_functions(&caller) {
                self.ctx.register_udf(f);
            }
        });
    }

    /// Authorizes the session as `identity`: its role for every statement, its user and
    /// application for the runs it starts. What [`Database::session_for`] does; a front
    /// end that learns the identity only after creating the session calls it then.
    pub fn set_identity(&self, identity: &Identity) {
        self.set_role(&identity.user, identity.role);
        self.set_client(Some(identity.user.clone()), identity.application.clone());
    }

    /// The channels this session listens on and the notifications waiting for it: the
    /// front end drains them when it may send.
    pub fn listener(&self) -> &Arc<crate::notify::Listener> {
        &self.listener
    }

    /// Records the process id the front end gave the client.
    pub fn set_backend_pid(&self, pid: i32) {
        self.backend_pid
            .store(pid, std::sync::atomic::Ordering::Relaxed);
    }

    fn backend_pid(&self) -> i32 {
        self.backend_pid.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The messages statements of this session queue for the client.
    pub fn notices(&self) -> &Arc<Notices> {
        &self.notices
    }

    /// The database this session belongs to.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The DataFusion context behind this session.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Parses `sql` into statements: SQL, or the user-management statements runbase
    /// parses itself (`CREATE`/`ALTER`/`DROP USER`, see [`crate::users`]).
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        self.parse_unmetered(sql).inspect_err(|e| {
            // Nothing parsed, so nothing says what kind the statement was.
            self.db
                .stats()
                .statement_refused("unknown", e.code().class());
        })
    }

    fn parse_unmetered(&self, sql: &str) -> Result<Vec<Statement>> {
        parse_statements(&self.parser, sql)
    }

    /// Parses `sql` with the SQL parser.
    pub(crate) fn parse_ast(&self, sql: &str) -> Result<Vec<AstStatement>> {
        parse_sql(&self.parser, sql)
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

    pub(super) fn user_name(&self) -> String {
        self.user_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Plans one parsed statement.
    pub async fn prepare(&self, statement: Statement) -> Result<Prepared> {
        let kind = statement.kind();
        self.prepare_unmetered(statement).await.inspect_err(|e| {
            self.db.stats().statement_refused(kind, e.code().class());
        })
    }

    async fn prepare_unmetered(&self, statement: Statement) -> Result<Prepared> {
        match statement {
            Statement::Sql(ast) => self.prepare_ast(*ast).await,
            Statement::User(cmd) => {
                self.authorize_user_command(&cmd)?;
                Ok(Prepared::User(cmd))
            }
            Statement::Maintenance(m) => Ok(Prepared::Maintenance(m)),
        }
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
        if let AstStatement::AlterTable(alter) = statement {
            return Ok(Prepared::Alter(Box::new(alter)));
        }
        match &statement {
            AstStatement::LISTEN { channel } => return Ok(Prepared::Listen(channel_name(channel))),
            AstStatement::UNLISTEN { channel } => {
                return Ok(Prepared::Unlisten(
                    (channel.value != "*").then(|| channel_name(channel)),
                ));
            }
            AstStatement::NOTIFY { channel, payload } => {
                let channel_folded = channel_name(channel);
                if channel_folded == crate::tracking::alerts::ALERT_CHANNEL {
                    return Err(Error::PermissionDenied(format!(
                        "permission denied: only the server notifies {channel_folded} (its alert events)"
                    )));
                }
                let payload = payload.clone().unwrap_or_default();
                if payload.len() > crate::notify::MAX_PAYLOAD {
                    return Err(Error::InvalidArgument(format!(
                        "payload string too long ({} bytes; the limit is {})",
                        payload.len(),
                        crate::notify::MAX_PAYLOAD
                    )));
                }
                return Ok(Prepared::Notify {
                    channel: channel_folded,
                    payload,
                });
            }
            _ => {}
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
        crate::pg::rewrite::compatibility(&mut statement)?;
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
        let state = self.ctx.state();
        let plan = match state
            .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
            .await
        {
            Ok(plan) => plan,
            Err(e) => return Err(diagnose_plan_error(&state, &statement, e)),
        };
        let plan = name_tracking_calls(plan)?;
        Ok(Prepared::Plan(self.type_placeholders(plan)?))
    }

    /// Executes a prepared statement with `params` bound to its `$n` placeholders.
    ///
    /// Every execution is counted in [`Database::stats`] by kind and result; a result
    /// set is timed until its last row is read (or the stream is dropped).
    pub async fn execute(
        &self,
        prepared: &Prepared,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        let mut timer = self.db.stats().statement_started(prepared.kind());
        match self.execute_unmetered(prepared, params).await {
            Ok(QueryOutput::Rows(stream)) => Ok(QueryOutput::Rows(metered(stream, timer))),
            Ok(QueryOutput::CopyOut(stream, format)) => {
                Ok(QueryOutput::CopyOut(metered(stream, timer), format))
            }
            Ok(output) => {
                timer.finish();
                Ok(output)
            }
            Err(e) => {
                timer.failed(e.code().class());
                Err(e)
            }
        }
    }

    async fn execute_unmetered(
        &self,
        prepared: &Prepared,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        match prepared {
            Prepared::Empty => Ok(QueryOutput::Command(CommandTag::plain(""))),
            Prepared::Show(name) => self.show(name),
            Prepared::User(cmd) => self.run_user_command(cmd).await.map(QueryOutput::Command),
            Prepared::Maintenance(m) => self.run_maintenance(m).await.map(QueryOutput::Command),
            Prepared::Alter(alter) => self.alter_table(alter).await.map(QueryOutput::Command),
            Prepared::Transaction(tag) => Ok(QueryOutput::Command(CommandTag::plain(tag))),
            Prepared::Listen(channel) => {
                self.db.notifications().listen(&self.listener, channel);
                Ok(QueryOutput::Command(CommandTag::plain("LISTEN")))
            }
            Prepared::Unlisten(channel) => {
                self.db
                    .notifications()
                    .unlisten(&self.listener, channel.as_deref());
                Ok(QueryOutput::Command(CommandTag::plain("UNLISTEN")))
            }
            Prepared::Notify { channel, payload } => {
                self.db
                    .notifications()
                    .publish(channel, payload, self.backend_pid());
                Ok(QueryOutput::Command(CommandTag::plain("NOTIFY")))
            }
            Prepared::CopyIn {
                table,
                columns,
                format,
            } => {
                let provider = self.ctx.table_provider(table.clone()).await?;
                let mut copy = CopyIn::new(table.to_string(), provider, columns, format.clone())?;
                self.start_streamed_copy(&mut copy);
                Ok(QueryOutput::CopyIn(Box::new(copy)))
            }
            Prepared::CopyOut { plan, format } => {
                let stream = self.run_query(plan.as_ref().clone()).await?;
                Ok(QueryOutput::CopyOut(stream, format.clone()))
            }
            Prepared::Deferred { .. } => {
                let params = params.unwrap_or(ParamValues::List(vec![]));
                let prepared = self.bind_deferred(prepared, params).await?;
                Box::pin(self.execute_unmetered(&prepared, None)).await
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

    pub(super) fn table_reference(&self, name: &str) -> Result<TableReference> {
        Ok(TableReference::parse_str(name))
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

    pub(super) async fn execute_plan(&self, plan: LogicalPlan) -> Result<QueryOutput> {
        let tag = match &plan {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
                if create.temporary || create.or_replace {
                    return Err(Error::NotSupported(
                        "CREATE TEMPORARY TABLE and CREATE OR REPLACE TABLE".into(),
                    ));
                }
                if !create.constraints.is_empty() {
                    return Err(Error::NotSupported(
                        "PRIMARY KEY and UNIQUE constraints (declare columns NOT NULL instead)"
                            .into(),
                    ));
                }
                let is_ctas = !matches!(create.input.as_ref(), LogicalPlan::EmptyRelation(e) if !e.produce_one_row);
                let state = self.ctx.state();
                let schema = create.input.schema().as_arrow();
                let mut defaults = std::collections::BTreeMap::new();
                for (column, expr) in &create.column_defaults {
                    let field = schema.field_with_name(column).map_err(|_| {
                        Error::ColumnNotFound(format!("column \"{column}\" does not exist"))
                    })?;
                    if let Some(text) = super::ddl::constant_default(&state, expr, field)? {
                        defaults.insert(column.clone(), text);
                    }
                }
                let rows = self
                    .db
                    .create_table(
                        &self.ctx,
                        &create.name,
                        &create.input,
                        create.if_not_exists,
                        defaults,
                    )
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
            LogicalPlan::Ddl(DdlStatement::CreateView(create)) => {
                if create.temporary {
                    return Err(Error::NotSupported("CREATE TEMPORARY VIEW".into()));
                }
                let definition = create
                    .definition
                    .as_deref()
                    .ok_or_else(|| Error::InvalidArgument("CREATE VIEW without its SQL".into()))?;
                self.db
                    .create_view(&create.name, definition, create.or_replace)
                    .await?;
                CommandTag::plain("CREATE VIEW")
            }
            LogicalPlan::Ddl(DdlStatement::DropView(drop)) => {
                self.db.drop_view(&drop.name, drop.if_exists).await?;
                CommandTag::plain("DROP VIEW")
            }
            LogicalPlan::Ddl(other) => {
                return Err(Error::NotSupported(other.name().to_string()));
            }
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Insert(_),
                input,
                ..
            }) => {
                if let Some(column) = null_into_not_null(input, &self.ctx.state()) {
                    return Err(Error::NotNullViolation(format!(
                        "null value in column \"{column}\" violates not-null constraint"
                    )));
                }
                let rows = self.run_count(plan).await?;
                CommandTag::with_rows("INSERT", rows)
            }
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Delete,
                ..
            }) => CommandTag::with_rows("DELETE", self.run_count(plan).await?),
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Update,
                ..
            }) => CommandTag::with_rows("UPDATE", self.run_count(plan).await?),
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::MergeInto(_),
                ..
            }) => CommandTag::with_rows("MERGE", self.run_count(plan).await?),
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Truncate,
                ..
            }) => {
                self.run_count(plan).await?;
                CommandTag::plain("TRUNCATE TABLE")
            }
            LogicalPlan::Dml(dml) => {
                return Err(Error::NotSupported(dml.op.to_string()));
            }
            LogicalPlan::Copy(_) => return Err(Error::NotSupported("COPY … TO".into())),
            LogicalPlan::Statement(PlanStatement::SetVariable(set)) => {
                let name = set.variable.to_lowercase();
                if name == "datafusion.execution.time_zone"
                    && set
                        .value
                        .parse::<datafusion::arrow::array::timezone::Tz>()
                        .is_err()
                {
                    return Err(Error::InvalidArgument(format!(
                        "invalid value for parameter \"TimeZone\": \"{}\"",
                        set.value
                    )));
                }
                if name.starts_with("datafusion.") {
                    self.ctx.execute_logical_plan(plan).await.map_err(|e| {
                        Error::InvalidArgument(format!(
                            "invalid value for parameter \"{name}\": {}",
                            Error::DataFusion(e).client_message()
                        ))
                    })?;
                } else {
                    if super::settings::is_duration(&name)
                        && super::settings::parse_duration(&set.value).is_none()
                    {
                        return Err(Error::InvalidArgument(format!(
                            "invalid value for parameter \"{name}\": \"{}\" (a number of milliseconds, or a number with a unit: us, ms, s, min, h, d)",
                            set.value
                        )));
                    }
                    self.variables.set(name, set.value.clone());
                }
                CommandTag::plain("SET")
            }
            LogicalPlan::Statement(PlanStatement::Prepare(_)) => {
                self.ctx.execute_logical_plan(plan).await?;
                CommandTag::plain("PREPARE")
            }
            LogicalPlan::Statement(PlanStatement::Execute(_)) => {
                return Ok(QueryOutput::Rows(self.run_query(plan).await?));
            }
            LogicalPlan::Statement(other) => {
                return Err(Error::NotSupported(other.name().to_string()));
            }
            _ => {
                return Ok(QueryOutput::Rows(self.run_query(plan).await?));
            }
        };
        Ok(QueryOutput::Command(tag))
    }

    /// Plans `plan` physically and streams its rows from the CPU runtime: the one
    /// plan-then-execute path every statement that returns rows takes (a query from
    /// [`Session::plan_pinned`] included).
    pub async fn run_query(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
        let df = self.ctx.execute_logical_plan(plan).await?;
        let physical = df.create_physical_plan().await?;
        Ok(self.db.executor().execute(physical, self.ctx.task_ctx()))
    }

    /// Runs a DML plan and reads the row count it reports.
    pub(super) async fn run_count(&self, plan: LogicalPlan) -> Result<u64> {
        let batches: Vec<RecordBatch> = self.run_query(plan).await?.try_collect().await?;
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
}

/// A channel name as PostgreSQL folds it: lower case unless quoted.
fn channel_name(channel: &datafusion::sql::sqlparser::ast::Ident) -> String {
    match channel.quote_style {
        Some(_) => channel.value.clone(),
        None => channel.value.to_lowercase(),
    }
}

/// Parses `sql` into statements with `parser`: SQL, or the user-management and
/// maintenance statements runbase parses itself. Planning nothing, it reads no catalog.
pub(crate) fn parse_statements(
    parser: &PostgresCompatibilityParser,
    sql: &str,
) -> Result<Vec<Statement>> {
    if let Some(maintenance) = super::maintenance::parse(sql) {
        return Ok(vec![Statement::Maintenance(maintenance?)]);
    }
    if let Some(chunks) = crate::users::split_user_commands(sql) {
        let mut out = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            match chunk {
                crate::users::Chunk::User(cmd) => out.push(Statement::User(cmd?)),
                crate::users::Chunk::Sql(text) => out.extend(
                    parse_sql(parser, &text)?
                        .into_iter()
                        .map(|s| Statement::Sql(Box::new(s))),
                ),
            }
        }
        return Ok(out);
    }
    Ok(parse_sql(parser, sql)?
        .into_iter()
        .map(|s| Statement::Sql(Box::new(s)))
        .collect())
}

/// Parses `sql` with the SQL parser, within the nesting limits.
fn parse_sql(parser: &PostgresCompatibilityParser, sql: &str) -> Result<Vec<AstStatement>> {
    super::depth::check_text(sql)?;
    let statements = parser.parse(sql).map_err(|e| {
        Error::DataFusion(datafusion::error::DataFusionError::SQL(Box::new(e), None))
    })?;
    let statements = super::subqueries::keep_user_subqueries(sql, statements);
    super::depth::check(statements)
}
