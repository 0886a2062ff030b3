//! [`Database`]: the handle an embedding program (or the server) opens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProviderList, MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::common::ScalarValue;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::sync::Mutex;
use tracing::info;

use crate::backup::{BackupFunction, Backups};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::executor::CpuExecutor;
use crate::kv::Kv;
use crate::notify::Notifications;
use crate::stats::{Stats, StatsTable};
use crate::storage::provider::TableAtFunction;
use crate::storage::schema::{PUBLIC_SCHEMA, RunbaseCatalog, UserSchema};
use crate::storage::{ObjectStoreRoot, S3Options, StoredTable};
use crate::system::{SystemTable, SystemTableProvider, TableVersions};
use crate::tracking::alerts::tables::{AlertDeliveriesTable, AlertEventsTable, AlertsTable};
use crate::tracking::functions::{self, Caller};
use crate::tracking::tables::{TableKind, TrackingTable};
use crate::tracking::{Tracking, TrackingRef};
use crate::users::Users;

/// Name of the one database (DataFusion catalog) a runbase instance serves.
pub const DATABASE_NAME: &str = "runbase";

/// What `SELECT version()` answers. Starts with "PostgreSQL" because client libraries parse it.
pub fn version_string() -> String {
    format!(
        "PostgreSQL 16.0 (runbase {}, DataFusion {}) on {}-{}",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

/// Options for [`Database::open`].
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    /// Directory for the RocksDB catalog (and, by default, the object store).
    pub data_dir: PathBuf,
    /// Where tables, model blobs and artifacts live; `None` means `<data_dir>/objects` on
    /// the local file system (synced like tracking writes, per `synchronous_commit`).
    pub object_store: Option<ObjectStoreRoot>,
    /// Worker threads of the query runtime; `None` means one per core.
    pub cpu_threads: Option<usize>,
    /// Whether each write is synced to disk before it is acknowledged (the default):
    /// tracking writes in RocksDB, and table files, model blobs and artifacts on a local
    /// object store. Without it, an acknowledged value survives a crash of the process but
    /// not of the machine — PostgreSQL's `synchronous_commit = off`.
    pub synchronous_commit: bool,
    /// Settings for the S3 URLs the database opens itself (backup targets).
    pub s3: S3Options,
}

impl DatabaseOptions {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            object_store: None,
            cpu_threads: None,
            synchronous_commit: true,
            s3: S3Options::default(),
        }
    }
}

/// An open runbase database. Cheap to clone; all clones share one instance.
#[derive(Debug, Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    data_dir: PathBuf,
    catalog: Catalog,
    users: Users,
    root: ObjectStoreRoot,
    user: Arc<UserSchema>,
    system: Arc<MemorySchemaProvider>,
    /// Every session starts as a copy of this state.
    template: RwLock<SessionState>,
    /// Serializes DDL so two `CREATE TABLE`s of one name cannot both succeed.
    ddl_lock: Mutex<()>,
    executor: CpuExecutor,
    tracking: Tracking,
    /// Table functions that take a query as text, and at which argument positions.
    query_arguments: RwLock<HashMap<String, Vec<usize>>>,
    /// Functions read-only users may not call.
    writing_functions: RwLock<std::collections::HashSet<String>>,
    /// Functions only superusers may call.
    superuser_functions: RwLock<std::collections::HashSet<String>>,
    backups: Backups,
    stats: Arc<Stats>,
    kv: Kv,
    notifications: Arc<Notifications>,
    /// runbase's own functions, as `pg_proc` and psql's `\df` show them.
    function_docs: crate::functions::SharedFunctionDocs,
}

impl Database {
    /// Opens (creating if needed) the database in `options.data_dir`.
    ///
    /// Startup reads only the RocksDB catalog; each table's Delta log is read on first use.
    pub async fn open(options: DatabaseOptions) -> Result<Self> {
        std::fs::create_dir_all(&options.data_dir)?;
        // Every column family, from the modules that keep them.
        let mut families = crate::tracking::column_families();
        families.extend(crate::users::column_families());
        let kv = Kv::open(
            &options.data_dir.join("catalog"),
            families,
            options.synchronous_commit,
        )?;
        let catalog = Catalog::open(kv.clone())?;
        let users = Users::new(kv.clone());
        let root = match options.object_store {
            Some(root) => root,
            None => ObjectStoreRoot::local_with(
                &options.data_dir.join("objects"),
                options.synchronous_commit,
                None,
            )?,
        };
        // Counted from the first request on; registered with the other figures below.
        let store_requests = crate::storage::RequestCounts::default();
        let root = root.metered(store_requests.clone());
        let root = if crate::failpoints::ENABLED {
            root.faulty()
        } else {
            root
        };
        root.check_reachable().await?;
        catalog.check_object_store(&root.identity())?;
        let user = Arc::new(UserSchema::default());
        let entries = catalog.tables()?;
        let count = entries.len();
        for entry in entries {
            user.add(Arc::new(StoredTable::new(entry, root.clone())?));
        }
        for view in catalog.views()? {
            user.add_view(view);
        }
        let backups = Backups::new(
            kv.clone(),
            root.clone(),
            options.data_dir.clone(),
            options.s3.clone(),
        );
        let stats = Arc::new(Stats::new());
        stats.register(
            "object_store_requests",
            "Object store requests, by operation and result (a missing object is ok)",
            store_requests,
        );
        stats.watch_kv(kv.downgrade());
        let notifications = Arc::new(Notifications::default());
        let tracking = Tracking::new(
            kv.clone(),
            root.clone(),
            stats.clone(),
            notifications.clone(),
        );
        tracking.load_alerts()?;
        // Once per database: summaries of the points written before they existed.
        tracking.backfill_rollups()?;
        spawn_alert_clock(tracking.downgrade());
        let system = Arc::new(MemorySchemaProvider::new());
        for kind in TableKind::ALL {
            system.register_table(
                kind.name().to_string(),
                Arc::new(TrackingTable::new(kind, &tracking)),
            )?;
        }
        system.register_table(
            "models".into(),
            Arc::new(SystemTableProvider(Arc::new(
                crate::tracking::models::ModelsTable::new(&tracking),
            ))),
        )?;
        system.register_table(
            "model_aliases".into(),
            Arc::new(SystemTableProvider(Arc::new(
                crate::tracking::models::ModelAliasesTable::new(&tracking),
            ))),
        )?;
        system.register_table(
            "tables".into(),
            Arc::new(SystemTableProvider(Arc::new(crate::system::Tables::new(
                user.clone(),
            )))),
        )?;
        system.register_table(
            "alerts".into(),
            Arc::new(SystemTableProvider(Arc::new(AlertsTable::new(&tracking)))),
        )?;
        system.register_table(
            "alert_events".into(),
            Arc::new(SystemTableProvider(Arc::new(AlertEventsTable::new(
                &tracking,
            )))),
        )?;
        system.register_table(
            "alert_deliveries".into(),
            Arc::new(SystemTableProvider(Arc::new(AlertDeliveriesTable::new(
                &tracking,
            )))),
        )?;
        system.register_table(
            "stats".into(),
            Arc::new(SystemTableProvider(Arc::new(StatsTable::new(
                stats.clone(),
            )))),
        )?;
        system.register_table(
            "table_versions".into(),
            Arc::new(SystemTableProvider(Arc::new(TableVersions::new(
                user.clone(),
            )))),
        )?;

        let threads = options
            .cpu_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let function_docs = crate::functions::SharedFunctionDocs::default();
        for doc in functions::docs() {
            function_docs.add(doc);
        }
        function_docs.add(crate::functions::FunctionDoc::new(
            "table_at",
            &[("table_name", "text"), ("version_or_time", "anyelement")],
            2,
            "TABLE(like the table)",
        ));
        let (template, pg_catalog) = template_state(
            user.clone(),
            system.clone(),
            threads,
            function_docs.clone(),
            &root,
        )?;
        // The static rows `pg_proc` extends are read here, not while a statement is
        // planned (where reading a table can stall).
        if let Some(pg) = pg_catalog {
            pg.warm(&template).await.map_err(Error::DataFusion)?;
        }
        let ctx = SessionContext::new_with_state(template);
        for f in functions::all(&tracking, &user, &Caller::default()) {
            ctx.register_udf(f);
        }
        // Superuser only, and writing (it is refused to read-only users either way).
        ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
            BackupFunction::new(backups.clone()),
        ));
        if crate::failpoints::ENABLED {
            ctx.register_udf(failpoint_function());
        }
        let template = ctx.state();
        info!(data_dir = %options.data_dir.display(), object_store = %root.url, tables = count, "database opened");
        let db = Self {
            inner: Arc::new(Inner {
                data_dir: options.data_dir,
                catalog,
                users,
                root,
                user,
                system,
                template: RwLock::new(template),
                ddl_lock: Mutex::new(()),
                executor: CpuExecutor::new(threads)?,
                tracking,
                query_arguments: RwLock::new(HashMap::new()),
                writing_functions: RwLock::new({
                    let mut names = crate::tracking::functions::writing_names();
                    names.insert("backup".to_string());
                    names
                }),
                superuser_functions: RwLock::new(
                    ["backup".to_string(), "runbase_failpoint".to_string()].into(),
                ),
                backups,
                stats,
                kv,
                notifications,
                function_docs,
            }),
        };
        let weak = db.downgrade();
        db.inner
            .user
            .set_view_planner(Box::new(move || Ok(weak.upgrade()?.template_state())));
        Ok(db)
    }

    /// Opens the database at `data_dir` with default options.
    pub async fn open_dir(data_dir: impl AsRef<Path>) -> Result<Self> {
        Self::open(DatabaseOptions::new(data_dir.as_ref())).await
    }

    /// A handle that does not keep the database open, for functions registered in it.
    pub fn downgrade(&self) -> WeakDatabase {
        WeakDatabase(Arc::downgrade(&self.inner))
    }

    /// Documents `doc`, one of the functions a crate on top registers, for the catalog
    /// (`pg_proc`, psql's `\df`).
    pub fn document_function(&self, doc: crate::functions::FunctionDoc) {
        self.inner.function_docs.add(doc);
    }

    /// The `LISTEN`/`NOTIFY` channels.
    pub fn notifications(&self) -> &Arc<Notifications> {
        &self.inner.notifications
    }

    /// The database's counters, which `GET /metrics` and `runbase.stats` report.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    /// Whether the database is open and accepting writes: an error while RocksDB reports
    /// a background error (a failed flush or compaction) or stops writes in a stall.
    /// Takes RocksDB's mutex briefly.
    pub fn ready(&self) -> Result<()> {
        self.inner.kv.accepting_writes()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// The object store tables live in.
    pub fn object_store(&self) -> &ObjectStoreRoot {
        &self.inner.root
    }

    /// A copy of the state every session starts from.
    pub(crate) fn template_state(&self) -> SessionState {
        self.inner
            .template
            .read()
            .expect("template lock poisoned")
            .clone()
    }

    /// The hook through which other crates add functions: `f` gets a context whose
    /// registrations (UDFs, UDTFs, …) every session created afterwards inherits.
    pub fn configure(&self, f: impl FnOnce(&SessionContext) -> Result<()>) -> Result<()> {
        let mut template = self.inner.template.write().expect("template lock poisoned");
        let ctx = SessionContext::new_with_state(template.clone());
        f(&ctx)?;
        *template = ctx.state();
        Ok(())
    }

    /// Declares that argument `position` (from 0) of table function `function` is a query
    /// given as text (`predict('m', 'SELECT …')`). When a statement calls the function with
    /// a string literal there, the session plans that query first — asynchronously, like
    /// any statement — and the function finds the plan in the [`PlannedQueries`]
    /// session-config extension while the statement is planned.
    ///
    /// [`PlannedQueries`]: crate::sql::PlannedQueries
    pub fn register_query_argument(&self, function: &str, position: usize) {
        let mut map = self
            .inner
            .query_arguments
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let positions = map.entry(function.to_ascii_lowercase()).or_default();
        if !positions.contains(&position) {
            positions.push(position);
        }
    }

    /// Marks `function` (scalar or table function) as one that changes stored state, so
    /// read-only users cannot call it (42501). The engine's own tracking writers
    /// (`log_metric`, `start_run`, …) are registered when the database opens.
    pub fn register_writing_function(&self, function: &str) {
        self.inner
            .writing_functions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(function.to_ascii_lowercase());
    }

    /// Registers `function` as one only superusers may call (`backup`, …).
    pub fn register_superuser_function(&self, function: &str) {
        self.inner
            .superuser_functions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(function.to_ascii_lowercase());
    }

    /// Whether `function` (lower case) is for superusers only.
    pub(crate) fn is_superuser_function(&self, function: &str) -> bool {
        self.inner
            .superuser_functions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(function)
    }

    /// Backups of this database ([`Backups::run`] takes one online).
    pub fn backups(&self) -> &Backups {
        &self.inner.backups
    }

    /// Whether `function` (lower case) was registered as writing.
    pub(crate) fn is_writing_function(&self, function: &str) -> bool {
        self.inner
            .writing_functions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(function)
    }

    /// The query-argument positions of `function` (see [`Database::register_query_argument`]).
    pub(crate) fn query_argument_positions(&self, function: &str) -> Vec<usize> {
        self.inner
            .query_arguments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&function.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// Adds a table to the `runbase` system schema.
    pub fn register_system_table<T: SystemTable>(&self, name: &str, table: Arc<T>) -> Result<()> {
        self.inner.system.register_table(
            name.to_string(),
            Arc::new(SystemTableProvider(table)) as Arc<dyn TableProvider>,
        )?;
        Ok(())
    }

    /// Names of the user tables.
    pub fn table_names(&self) -> Vec<String> {
        self.inner.user.table_names()
    }

    /// The users and their roles, which every front end authenticates against.
    pub fn users(&self) -> &Users {
        &self.inner.users
    }

    /// The experiment-tracking store.
    pub fn tracking(&self) -> &Tracking {
        &self.inner.tracking
    }

    /// `start_run` and `create_alert` for a session of `caller`, so what it creates
    /// records who did.
    pub(crate) fn caller_functions(
        &self,
        caller: &Caller,
    ) -> Vec<datafusion::logical_expr::ScalarUDF> {
        functions::for_caller(&self.inner.tracking, &self.inner.user, caller)
    }

    pub(crate) fn executor(&self) -> &CpuExecutor {
        &self.inner.executor
    }

    /// The user-table schema (`public`).
    pub(crate) fn user_schema(&self) -> &Arc<UserSchema> {
        &self.inner.user
    }

    /// The table catalog.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Serializes DDL, so two `CREATE TABLE`s of one name cannot both succeed.
    pub(crate) fn ddl_lock(&self) -> &Mutex<()> {
        &self.inner.ddl_lock
    }
}

/// A [`Database`] handle that does not keep it open: what a function registered in the
/// database holds, so the database and its functions do not keep each other alive.
#[derive(Debug, Clone)]
pub struct WeakDatabase(std::sync::Weak<Inner>);

impl WeakDatabase {
    /// The database, unless it has been closed.
    pub fn upgrade(&self) -> Result<Database> {
        self.0
            .upgrade()
            .map(|inner| Database { inner })
            .ok_or_else(|| Error::InvalidState("the database has been closed".into()))
    }
}

/// Checks the alerts' clock conditions (`hung`, `budget`) every
/// [`crate::tracking::alerts::CLOCK_TICK`], on the blocking pool, until the database closes.
fn spawn_alert_clock(tracking: TrackingRef) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let mut tick = tokio::time::interval(crate::tracking::alerts::CLOCK_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(tracking) = tracking.get() else {
                return;
            };
            let now = chrono::Utc::now().timestamp_micros();
            let checked =
                tokio::task::spawn_blocking(move || tracking.check_alert_clocks(now)).await;
            if let Ok(Err(e)) = checked {
                tracing::warn!(%e, "checking the alerts' clocks failed");
            }
        }
    });
}

fn template_state(
    user: Arc<UserSchema>,
    system: Arc<MemorySchemaProvider>,
    threads: usize,
    function_docs: crate::functions::SharedFunctionDocs,
    root: &ObjectStoreRoot,
) -> Result<(
    SessionState,
    Option<Arc<crate::storage::schema::PgCatalogWithViews>>,
)> {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(DATABASE_NAME, PUBLIC_SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
        .with_target_partitions(threads.max(1));
    let options = config.options_mut();
    options.sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
    // `timestamptz` and now() carry a zone, as in PostgreSQL (whose sessions default to
    // one); without it they would be zone-less timestamps and reach clients as `timestamp`.
    options.execution.time_zone = Some(crate::pg::DEFAULT_TIME_ZONE.into());
    options.sql_parser.map_string_types_to_utf8view = false;
    options.execution.parquet.schema_force_view_types = false;

    let catalogs = Arc::new(MemoryCatalogProviderList::new());
    let catalog: Arc<dyn CatalogProvider> = Arc::new(RunbaseCatalog::new(user.clone(), system));
    datafusion::catalog::CatalogProviderList::register_catalog(
        catalogs.as_ref(),
        DATABASE_NAME.to_string(),
        catalog,
    );
    // Scans read table files through runbase's store (counted, synced, faults injected in
    // tests), not through a default store DataFusion would pick for the URL's scheme.
    let runtime = RuntimeEnv::default();
    runtime.register_object_store(&root.url, root.store.clone());
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(Arc::new(runtime))
        .with_catalog_list(catalogs)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    let views = user.clone();
    ctx.register_udtf("table_at", Arc::new(TableAtFunction::new(user)));
    let version = version_string();
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                version.clone(),
            ))))
        }),
    ));
    datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
        &ctx,
        DATABASE_NAME,
        datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| Error::DataFusion(*e))?;
    let mut pg_catalog = None;
    if let Some(catalog) = ctx.catalog(DATABASE_NAME)
        && let Some(pg) = catalog.schema("pg_catalog")
    {
        let ours = Arc::new(crate::storage::schema::PgCatalogWithViews::new(
            pg,
            views,
            function_docs.clone(),
        ));
        catalog.register_schema("pg_catalog", ours.clone())?;
        pg_catalog = Some(ours);
    }
    crate::pg::compat::register(&ctx, function_docs);
    crate::pg::oid_array::register(&ctx);
    Ok((ctx.state(), pg_catalog))
}

/// `runbase_failpoint(name, actions)`: configures a [`crate::failpoints`] point (superuser
/// only, in builds with the `failpoints` feature) and returns what it was set to.
fn failpoint_function() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, ArrayRef, StringArray};
    use datafusion::error::DataFusionError;
    create_udf(
        "runbase_failpoint",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let text = |i: usize| {
                arrays[i]
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .ok_or_else(|| DataFusionError::Internal("failpoint arguments are text".into()))
            };
            let (names, actions) = (text(0)?, text(1)?);
            let mut out = Vec::with_capacity(names.len());
            for i in 0..names.len() {
                if names.is_null(i) || actions.is_null(i) {
                    out.push(None);
                    continue;
                }
                crate::failpoints::configure(names.value(i), actions.value(i))
                    .map_err(|e| DataFusionError::External(Box::new(Error::InvalidArgument(e))))?;
                out.push(Some(actions.value(i).to_string()));
            }
            let out: ArrayRef = Arc::new(StringArray::from(out));
            Ok(ColumnarValue::Array(out))
        }),
    )
}
