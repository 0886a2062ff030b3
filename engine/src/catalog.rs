//! The persistent catalog: table names, locations and schemas, kept in RocksDB.
//!
//! Keys are plain UTF-8 strings with a type prefix so the key space can grow:
//!
//! | key                         | value                         |
//! |-----------------------------|-------------------------------|
//! | `meta/format`               | catalog format version (`1`)  |
//! | `meta/object_store`         | where the tables live (`local`, `s3://bucket/prefix/`) |
//! | `table/<schema>/<name>`     | [`TableEntry`] as JSON        |
//! | `view/<schema>/<name>`      | [`ViewEntry`] as JSON         |
//!
//! Every mutation is a synced write ([`Durability::Synced`]), waited for off the async
//! workers (see [`crate::kv`]):
//! once a DDL statement has been acknowledged, its catalog change survives a crash of the
//! process or the machine.

use std::collections::BTreeMap;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kv::{Durability, Kv};

const FORMAT_KEY: &[u8] = b"meta/format";
const FORMAT_VERSION: &str = "1";
const TABLE_PREFIX: &str = "table/";
const OBJECT_STORE_KEY: &[u8] = b"meta/object_store";
const VIEW_PREFIX: &str = "view/";

/// One user table as the catalog records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Schema the table lives in (`public`).
    pub schema: String,
    /// Table name, as the user wrote it (case-folded by the SQL planner).
    pub name: String,
    /// Unique id; also the directory of the Delta table under the object-store root.
    pub id: String,
    /// Location relative to the object-store root, e.g. `tables/<id>`.
    pub location: String,
    /// The Delta schema of the table, as the JSON string of the Delta protocol.
    pub delta_schema: String,
    /// When the table was created, microseconds since the Unix epoch.
    pub created_at_us: i64,
    /// Column defaults (`DEFAULT` on `CREATE TABLE` or `ADD COLUMN`): each a constant, as
    /// text that parses back into a value of the column's type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub column_defaults: BTreeMap<String, String>,
}

/// One view as the catalog records it: its query, planned again on every use, so it
/// always reads the tables as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewEntry {
    /// Schema the view lives in (`public`).
    pub schema: String,
    /// View name.
    pub name: String,
    /// The view's query, as SQL.
    pub sql: String,
    /// When the view was (last) created, microseconds since the Unix epoch.
    pub created_at_us: i64,
}

/// The RocksDB-backed catalog.
#[derive(Debug)]
pub struct Catalog {
    kv: Kv,
}

impl Catalog {
    /// The catalog in `kv` (checking, or on a new store writing, its format version).
    pub fn open(kv: Kv) -> Result<Self> {
        match kv.db().get(FORMAT_KEY)? {
            None => {
                let mut batch = WriteBatch::default();
                batch.put(FORMAT_KEY, FORMAT_VERSION);
                kv.write(batch, Durability::Synced)?;
            }
            Some(v) if v == FORMAT_VERSION.as_bytes() => {}
            Some(v) => {
                return Err(Error::corrupt(
                    "catalog",
                    format!(
                        "unsupported catalog format {:?} (this build reads {FORMAT_VERSION})",
                        String::from_utf8_lossy(&v)
                    ),
                ));
            }
        }
        Ok(Self { kv })
    }

    /// Checks that the data directory is opened with the object store it was created
    /// with (`store` names it: `local`, or the store's URL), recording it on first use.
    /// Opening a catalog against another store would make every table vanish, or
    /// worse, let two catalogs write one bucket.
    pub fn check_object_store(&self, store: &str) -> Result<()> {
        match self.kv.db().get(OBJECT_STORE_KEY)? {
            Some(v) if v == store.as_bytes() => Ok(()),
            Some(v) => Err(Error::InvalidArgument(format!(
                "this data directory keeps its tables in {}, not {store}; start it with \
                 the object store it was created with",
                String::from_utf8_lossy(&v)
            ))),
            None => {
                let mut batch = WriteBatch::default();
                batch.put(OBJECT_STORE_KEY, store);
                self.kv.write(batch, Durability::Synced)
            }
        }
    }

    /// All tables, in key order (schema, then name).
    pub fn tables(&self) -> Result<Vec<TableEntry>> {
        self.entries(TABLE_PREFIX)
    }

    /// Records a new table, synced. Fails with [`Error::TableExists`] if the name is
    /// taken. Callers serialize DDL, so the check and the write do not race.
    ///
    /// Synchronous on purpose (the wait for the disk hands the async worker's tasks to
    /// another worker, see [`crate::kv`]): a DDL statement cancelled while it commits must
    /// not split the catalog write from the in-memory change that follows it.
    pub fn insert_table(&self, entry: &TableEntry) -> Result<()> {
        let key = table_key(&entry.schema, &entry.name);
        if self.kv.db().get(&key)?.is_some() {
            return Err(Error::TableExists(entry.name.clone()));
        }
        let mut batch = WriteBatch::default();
        batch.put(key, encode(entry)?);
        self.kv.write(batch, Durability::Synced)
    }

    /// Writes `entry` over the table's entry, synced (its schema changed), or — with
    /// `renamed_from` — moves the entry from that name to `entry.name` in one atomic
    /// batch. Synchronous for the same reason as [`Catalog::insert_table`].
    pub fn replace_table(&self, entry: &TableEntry, renamed_from: Option<&str>) -> Result<()> {
        let mut batch = WriteBatch::default();
        if let Some(old) = renamed_from {
            batch.delete(table_key(&entry.schema, old));
        }
        batch.put(table_key(&entry.schema, &entry.name), encode(entry)?);
        self.kv.write(batch, Durability::Synced)
    }

    /// Removes a table's entry, synced; returns whether it existed. Synchronous for the
    /// same reason as [`Catalog::insert_table`].
    pub fn remove_table(&self, schema: &str, name: &str) -> Result<bool> {
        self.remove(table_key(schema, name))
    }

    /// All views, in key order (schema, then name).
    pub fn views(&self) -> Result<Vec<ViewEntry>> {
        self.entries(VIEW_PREFIX)
    }

    /// Records a view, or replaces the one of that name, synced. Callers serialize DDL
    /// and check names against tables. Synchronous for the same reason as
    /// [`Catalog::insert_table`].
    pub fn put_view(&self, entry: &ViewEntry) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(view_key(&entry.schema, &entry.name), encode(entry)?);
        self.kv.write(batch, Durability::Synced)
    }

    /// Removes a view's entry, synced; returns whether it existed.
    pub fn remove_view(&self, schema: &str, name: &str) -> Result<bool> {
        self.remove(view_key(schema, name))
    }

    /// Every entry under `prefix`, decoded, in key order.
    fn entries<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self.kv.db().prefix_iterator(prefix.as_bytes()) {
            let (key, value) = item?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            out.push(serde_json::from_slice(&value).map_err(|e| {
                Error::corrupt(
                    format!("catalog entry {}", String::from_utf8_lossy(&key)),
                    e,
                )
            })?);
        }
        Ok(out)
    }

    /// Deletes `key`, synced; returns whether it existed.
    fn remove(&self, key: String) -> Result<bool> {
        let existed = self.kv.db().get(&key)?.is_some();
        if existed {
            let mut batch = WriteBatch::default();
            batch.delete(key);
            self.kv.write(batch, Durability::Synced)?;
        }
        Ok(existed)
    }
}

/// A catalog entry as stored: JSON.
fn encode(entry: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(entry).map_err(|e| Error::corrupt("catalog entry being written", e))
}

fn view_key(schema: &str, name: &str) -> String {
    format!("{VIEW_PREFIX}{schema}/{name}")
}

fn table_key(schema: &str, name: &str) -> String {
    format!("{TABLE_PREFIX}{schema}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> TableEntry {
        TableEntry {
            schema: "public".into(),
            name: name.into(),
            id: format!("id-{name}"),
            location: format!("tables/id-{name}"),
            delta_schema: "{}".into(),
            created_at_us: 1,
            column_defaults: BTreeMap::new(),
        }
    }

    fn open(dir: &std::path::Path) -> Catalog {
        Catalog::open(Kv::open(dir, vec![], true).expect("kv")).expect("catalog")
    }

    #[tokio::test]
    async fn entries_survive_reopen_and_names_are_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let cat = open(dir.path());
            cat.insert_table(&entry("b")).expect("insert b");
            cat.insert_table(&entry("a")).expect("insert a");
            assert!(matches!(
                cat.insert_table(&entry("a")),
                Err(Error::TableExists(_))
            ));
        }
        let cat = open(dir.path());
        let names: Vec<_> = cat
            .tables()
            .expect("tables")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        assert!(cat.remove_table("public", "a").expect("remove"));
        assert!(!cat.remove_table("public", "a").expect("remove again"));
        assert_eq!(cat.tables().expect("tables").len(), 1);
    }

    #[test]
    fn corrupt_entry_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = open(dir.path());
        cat.kv.db().put("table/public/x", b"not json").expect("put");
        assert!(matches!(cat.tables(), Err(Error::Corrupt { .. })));
    }
}
