//! DataFusion catalog and schema providers: `public` (user tables, RocksDB-backed) and
//! `runbase` (system tables).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{CatalogProvider, MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};

use crate::catalog::ViewEntry;
use crate::error::Error;
use crate::storage::StoredTable;
use crate::storage::provider::UserTableProvider;

/// Name of the schema holding user tables.
pub const PUBLIC_SCHEMA: &str = "public";
/// Name of the schema holding runbase's system tables.
pub const SYSTEM_SCHEMA: &str = "runbase";

/// The `public` schema: the user tables listed in the RocksDB catalog.
///
/// Registration goes through [`crate::Database`], which writes the catalog first;
/// DataFusion's own `register_table` is refused so nothing unpersisted appears here.
#[derive(Default)]
pub struct UserSchema {
    tables: RwLock<BTreeMap<String, Arc<StoredTable>>>,
    /// Views, by name: planned again on every use, so they read the tables as they are.
    views: RwLock<BTreeMap<String, ViewEntry>>,
    /// Makes the session state views are planned in (set once the database is open).
    planner: OnceLock<ViewPlanner>,
}

/// Makes a session state to plan a view's query in: the database's template session.
pub(crate) type ViewPlanner = Box<
    dyn Fn() -> crate::error::Result<datafusion::execution::context::SessionState> + Send + Sync,
>;

impl std::fmt::Debug for UserSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSchema")
            .field("tables", &self.tables)
            .field("views", &self.views)
            .finish_non_exhaustive()
    }
}

tokio::task_local! {
    /// How deep in views within views the planner is (a view that refers to itself,
    /// through others, would otherwise recurse forever).
    static VIEW_DEPTH: usize;
}

/// How deeply views may refer to views.
const MAX_VIEW_DEPTH: usize = 32;

impl UserSchema {
    /// The view called `name`.
    pub fn view(&self, name: &str) -> Option<ViewEntry> {
        self.views
            .read()
            .expect("view map lock poisoned")
            .get(name)
            .cloned()
    }

    /// All views, by name.
    pub fn all_views(&self) -> Vec<ViewEntry> {
        self.views
            .read()
            .expect("view map lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn add_view(&self, view: ViewEntry) {
        self.views
            .write()
            .expect("view map lock poisoned")
            .insert(view.name.clone(), view);
    }

    pub(crate) fn remove_view(&self, name: &str) -> Option<ViewEntry> {
        self.views
            .write()
            .expect("view map lock poisoned")
            .remove(name)
    }

    pub(crate) fn set_view_planner(&self, planner: ViewPlanner) {
        let _ = self.planner.set(planner);
    }

    /// Plans `view`'s query as a provider DataFusion inlines into the plans that read it.
    async fn plan_view(&self, view: &ViewEntry) -> DfResult<Arc<dyn TableProvider>> {
        let depth = VIEW_DEPTH.try_with(|d| *d).unwrap_or(0);
        if depth >= MAX_VIEW_DEPTH {
            return Err(DataFusionError::from(Error::InvalidArgument(format!(
                "view \"{}\" nests views more than {MAX_VIEW_DEPTH} deep (does it refer to itself?)",
                view.name
            ))));
        }
        let planner = self
            .planner
            .get()
            .ok_or_else(|| DataFusionError::from(Error::Internal("views are not ready".into())))?;
        let state = planner()?;
        let plan = VIEW_DEPTH
            .scope(depth + 1, state.create_logical_plan(&view.sql))
            .await
            .map_err(|e| {
                DataFusionError::from(Error::InvalidArgument(format!(
                    "view \"{}\" cannot be read: {e}",
                    view.name
                )))
            })?;
        Ok(Arc::new(ViewTable::new(plan, Some(view.sql.clone()))))
    }

    /// The stored table called `name`.
    pub fn stored(&self, name: &str) -> Option<Arc<StoredTable>> {
        self.tables
            .read()
            .expect("table map lock poisoned")
            .get(name)
            .cloned()
    }

    /// All stored tables, by name.
    pub fn all(&self) -> Vec<Arc<StoredTable>> {
        self.tables
            .read()
            .expect("table map lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn add(&self, table: Arc<StoredTable>) {
        self.tables
            .write()
            .expect("table map lock poisoned")
            .insert(table.entry.name.clone(), table);
    }

    pub(crate) fn remove(&self, name: &str) -> Option<Arc<StoredTable>> {
        self.tables
            .write()
            .expect("table map lock poisoned")
            .remove(name)
    }
}

#[async_trait]
impl SchemaProvider for UserSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tables
            .read()
            .expect("table map lock poisoned")
            .keys()
            .cloned()
            .collect();
        names.extend(
            self.views
                .read()
                .expect("view map lock poisoned")
                .keys()
                .cloned(),
        );
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.stored(name) {
            return Ok(Some(Arc::new(UserTableProvider::new(t))));
        }
        match self.view(name) {
            Some(view) => self.plan_view(&view).await.map(Some),
            None => Ok(None),
        }
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::from(Error::NotSupported(format!(
            "registering in-memory table \"{name}\" in schema public"
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.stored(name).is_some() || self.view(name).is_some()
    }
}

/// `pg_catalog` with `pg_views` listing runbase's views (the library's is empty), and
/// `pg_indexes`, empty (runbase keeps no indexes; DuckDB's postgres extension and other
/// tools read it while attaching).
#[derive(Debug)]
pub(crate) struct PgCatalogWithViews {
    inner: Arc<dyn SchemaProvider>,
    user: Arc<UserSchema>,
    functions: crate::functions::SharedFunctionDocs,
    /// The library's `pg_proc` rows (static) and the oid of `public`, read once.
    builtin_procs: std::sync::OnceLock<(SchemaRef, Vec<RecordBatch>, i32)>,
    /// The library's `pg_type` rows (static) of the types runbase has, read once.
    builtin_types: std::sync::OnceLock<Arc<dyn TableProvider>>,
    /// The library's `pg_operator` rows (static) of the operators runbase has, read once.
    builtin_operators: std::sync::OnceLock<Arc<dyn TableProvider>>,
}

impl PgCatalogWithViews {
    pub(crate) fn new(
        inner: Arc<dyn SchemaProvider>,
        user: Arc<UserSchema>,
        functions: crate::functions::SharedFunctionDocs,
    ) -> Self {
        Self {
            inner,
            user,
            functions,
            builtin_procs: std::sync::OnceLock::new(),
            builtin_types: std::sync::OnceLock::new(),
            builtin_operators: std::sync::OnceLock::new(),
        }
    }

    /// Reads the library's static `pg_type`, `pg_proc` and `pg_operator` rows once, keeping
    /// what runbase has (`super::pg_rows`; `state` says which types cast and which functions
    /// exist), and the oid of `public`. Run at open: reading tables while a statement is
    /// being planned can stall (some planners call `table` where spawned tasks cannot run).
    pub(crate) async fn warm(&self, state: &datafusion::execution::SessionState) -> DfResult<()> {
        let ctx = datafusion::prelude::SessionContext::new();
        let (Some(types), Some(procs)) = (
            self.inner.table("pg_type").await?,
            self.inner.table("pg_proc").await?,
        ) else {
            return Ok(());
        };
        let (type_rows, kept) =
            super::pg_rows::types(state, ctx.read_table(types.clone())?.collect().await?).await?;
        let memory = |schema, rows| -> DfResult<Arc<dyn TableProvider>> {
            Ok(Arc::new(datafusion::datasource::MemTable::try_new(
                schema,
                vec![rows],
            )?))
        };
        let _ = self.builtin_types.set(memory(types.schema(), type_rows)?);
        if let Some(operators) = self.inner.table("pg_operator").await? {
            let rows = super::pg_rows::operators(
                ctx.read_table(operators.clone())?.collect().await?,
                &kept,
            )?;
            let _ = self
                .builtin_operators
                .set(memory(operators.schema(), rows)?);
        }
        let proc_rows = super::pg_rows::functions(
            state,
            ctx.read_table(procs.clone())?.collect().await?,
            &kept,
        )?;
        let public = match self.inner.table("pg_namespace").await? {
            Some(ns) => namespace_oid(&ctx, ns, "public").await?,
            None => None,
        };
        let _ = self
            .builtin_procs
            .set((procs.schema(), proc_rows, public.unwrap_or(2200)));
        Ok(())
    }

    /// `pg_proc`: the library's rows and runbase's own functions, in `public` (the
    /// library's alone until [`Self::warm`] ran).
    async fn pg_proc(&self) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some((schema, batches, public)) = self.builtin_procs.get() else {
            return self.inner.table("pg_proc").await;
        };
        let mut all = batches.clone();
        all.push(self.functions.pg_proc_rows(schema, *public)?);
        Ok(Some(Arc::new(datafusion::datasource::MemTable::try_new(
            schema.clone(),
            vec![all],
        )?)))
    }

    fn pg_views(&self) -> DfResult<Arc<dyn TableProvider>> {
        use datafusion::arrow::array::{RecordBatch, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(
            ["schemaname", "viewname", "viewowner", "definition"]
                .map(|n| Field::new(n, DataType::Utf8, true))
                .to_vec(),
        ));
        let views = self.user.all_views();
        let column =
            |f: &dyn Fn(&ViewEntry) -> String| -> Arc<dyn datafusion::arrow::array::Array> {
                Arc::new(StringArray::from(views.iter().map(f).collect::<Vec<_>>()))
            };
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                column(&|v| v.schema.clone()),
                column(&|v| v.name.clone()),
                column(&|_| "runbase".to_string()),
                column(&|v| v.sql.clone()),
            ],
        )?;
        Ok(Arc::new(datafusion::datasource::MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?))
    }
}

/// The oid of namespace `name` in the `pg_namespace` table `ns`.
async fn namespace_oid(
    ctx: &datafusion::prelude::SessionContext,
    ns: Arc<dyn TableProvider>,
    name: &str,
) -> DfResult<Option<i32>> {
    use datafusion::arrow::array::{Array, Int32Array, StringArray};
    for batch in ctx.read_table(ns)?.collect().await? {
        let (Some(oids), Some(names)) =
            (batch.column_by_name("oid"), batch.column_by_name("nspname"))
        else {
            continue;
        };
        let (Some(oids), Some(names)) = (
            oids.as_any().downcast_ref::<Int32Array>(),
            names.as_any().downcast_ref::<StringArray>(),
        ) else {
            continue;
        };
        for i in 0..batch.num_rows() {
            if !names.is_null(i) && names.value(i) == name && !oids.is_null(i) {
                return Ok(Some(oids.value(i)));
            }
        }
    }
    Ok(None)
}

/// `pg_indexes` as PostgreSQL has it, with no rows.
fn pg_indexes() -> DfResult<Arc<dyn TableProvider>> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(
        [
            "schemaname",
            "tablename",
            "indexname",
            "tablespace",
            "indexdef",
        ]
        .map(|n| Field::new(n, DataType::Utf8, true))
        .to_vec(),
    ));
    Ok(Arc::new(datafusion::datasource::MemTable::try_new(
        schema,
        vec![vec![]],
    )?))
}

#[async_trait]
impl SchemaProvider for PgCatalogWithViews {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        if !names.iter().any(|n| n == "pg_indexes") {
            names.push("pg_indexes".into());
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if name == "pg_views" {
            return self.pg_views().map(Some);
        }
        if name == "pg_indexes" {
            return pg_indexes().map(Some);
        }
        if name == "pg_proc" {
            return self.pg_proc().await;
        }
        let kept = match name {
            "pg_type" => self.builtin_types.get(),
            "pg_operator" => self.builtin_operators.get(),
            _ => None,
        };
        if let Some(rows) = kept {
            return Ok(Some(rows.clone()));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        name == "pg_indexes" || self.inner.table_exist(name)
    }
}

/// The `runbase` catalog: `public`, `runbase`, and whatever schemas front ends add
/// (`pg_catalog`).
#[derive(Debug)]
pub struct RunbaseCatalog {
    user: Arc<UserSchema>,
    system: Arc<MemorySchemaProvider>,
    others: RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
}

impl RunbaseCatalog {
    /// A catalog over `user` tables and `system` tables.
    pub fn new(user: Arc<UserSchema>, system: Arc<MemorySchemaProvider>) -> Self {
        Self {
            user,
            system,
            others: RwLock::new(BTreeMap::new()),
        }
    }
}

impl CatalogProvider for RunbaseCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = vec![PUBLIC_SCHEMA.to_string(), SYSTEM_SCHEMA.to_string()];
        names.extend(
            self.others
                .read()
                .expect("schema map lock poisoned")
                .keys()
                .cloned(),
        );
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        match name {
            PUBLIC_SCHEMA => Some(self.user.clone()),
            SYSTEM_SCHEMA => Some(self.system.clone()),
            other => self
                .others
                .read()
                .expect("schema map lock poisoned")
                .get(other)
                .cloned(),
        }
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        if name == PUBLIC_SCHEMA || name == SYSTEM_SCHEMA {
            return Err(DataFusionError::from(Error::ReadOnly(format!(
                "schema \"{name}\" is built in"
            ))));
        }
        Ok(self
            .others
            .write()
            .expect("schema map lock poisoned")
            .insert(name.to_string(), schema))
    }
}
