//! DataFusion catalog and schema providers: `public` (user tables, RocksDB-backed) and
//! `runbase` (system tables).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};

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
#[derive(Debug, Default)]
pub struct UserSchema {
    tables: RwLock<BTreeMap<String, Arc<StoredTable>>>,
}

impl UserSchema {
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
        self.tables
            .read()
            .expect("table map lock poisoned")
            .keys()
            .cloned()
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .stored(name)
            .map(|t| Arc::new(UserTableProvider::new(t)) as Arc<dyn TableProvider>))
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
        self.stored(name).is_some()
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
