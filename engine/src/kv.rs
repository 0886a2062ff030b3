//! The one owner of RocksDB: opening it with every user's column families, the write
//! policy, and writes that never stall an async worker.
//!
//! RocksDB holds the catalog (the default column family), users, and the tracking
//! records (experiments, runs, metrics, models, … — see [`crate::tracking`]). Each of those
//! modules declares its column families; the database collects them and hands them to
//! [`Kv::open`], so adding a family is a change in the module that uses it, and this
//! module depends on none of its users.
//!
//! # Writes
//! Every write is one atomic [`WriteBatch`] with a [`Durability`]:
//! - [`Durability::Synced`]: the WAL is synced before the write returns (catalog and user
//!   changes, always).
//! - [`Durability::Commit`]: synced when the database runs with synchronous commits (the
//!   default), else left to the OS — PostgreSQL's `synchronous_commit = off` (tracking).
//!
//! A synced write waits for the disk. `Kv::write` does that wait through
//! [`crate::executor::blocking`]: on an async worker, the worker first hands its other
//! tasks to a new worker, so no task that polls sockets or queries waits behind an
//! `fsync`; hot paths that write often (the `log_metric` fast path, user commands) call it
//! from the blocking pool to begin with (`CpuExecutor::run_blocking`). Unsynced writes
//! (`--synchronous-commit false`) skip the hand-off: they do not wait for the disk. The
//! write is synchronous on purpose: a statement cancelled while it commits cannot split the
//! write from the in-memory change that follows it.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};

use crate::error::{Error, Result};

/// How durable a write must be before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced to disk, whatever the database's commit setting.
    Synced,
    /// Synced when the database runs with synchronous commits.
    Commit,
}

/// An open RocksDB instance. Cheap to clone; all clones share it.
#[derive(Clone)]
pub struct Kv {
    inner: Arc<Inner>,
}

struct Inner {
    db: DB,
    /// The column families' names, for figures summed over all of them.
    families: Vec<String>,
    synced: WriteOptions,
    commit: WriteOptions,
    /// The database's commit setting (what `commit` syncs by).
    synchronous: bool,
    /// Held while the database is open: a second process on the same directory fails
    /// to open it with [`Error::InUse`] rather than with RocksDB's lock error.
    _lock: File,
}

/// A [`Kv`] that does not keep the store open.
#[derive(Clone)]
pub(crate) struct WeakKv(std::sync::Weak<Inner>);

impl WeakKv {
    /// The store, while it is open.
    pub(crate) fn upgrade(&self) -> Option<Kv> {
        self.0.upgrade().map(|inner| Kv { inner })
    }
}

impl std::fmt::Debug for WeakKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakKv").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv").finish_non_exhaustive()
    }
}

impl Kv {
    /// Opens (creating if needed) the store in `dir` with the column families `families`
    /// (created if missing). `synchronous` is the database's commit setting, which
    /// [`Durability::Commit`] writes follow.
    pub fn open(
        dir: &Path,
        families: Vec<ColumnFamilyDescriptor>,
        synchronous: bool,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let lock_path = dir.join("runbase.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::InUse(format!(
                    "data directory {} is in use by another runbase process",
                    dir.parent().unwrap_or(dir).display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut names: Vec<String> = families.iter().map(|f| f.name().to_string()).collect();
        if !names
            .iter()
            .any(|n| n == rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
        {
            names.insert(0, rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_string());
        }
        let db = DB::open_cf_descriptors(&opts, dir, families)?;
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        let mut commit = WriteOptions::default();
        commit.set_sync(synchronous);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                families: names,
                synced,
                commit,
                synchronous,
                _lock: lock,
            }),
        })
    }

    /// Writes a consistent checkpoint of the store into `dir` (which must not exist):
    /// memtables flushed, SST files hard-linked, a fresh MANIFEST. Blocking: call it off
    /// the async workers.
    pub(crate) fn checkpoint(&self, dir: &Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.inner.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// A handle that does not keep the store open (for the metrics collector).
    pub(crate) fn downgrade(&self) -> WeakKv {
        WeakKv(Arc::downgrade(&self.inner))
    }

    /// An integer property of the whole instance (`rocksdb.is-write-stopped`, …); 0 when
    /// RocksDB does not report it. Blocking only briefly (it takes RocksDB's mutex).
    pub(crate) fn property(&self, name: &str) -> u64 {
        self.inner
            .db
            .property_int_value(name)
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// An integer property summed over every column family (`rocksdb.estimate-num-keys`, …).
    pub(crate) fn property_sum(&self, name: &str) -> u64 {
        self.inner
            .families
            .iter()
            .filter_map(|family| self.inner.db.cf_handle(family))
            .filter_map(|cf| self.inner.db.property_int_value_cf(cf, name).ok().flatten())
            .fold(0u64, u64::saturating_add)
    }

    /// Whether RocksDB takes writes: not after a background error (a failed flush or
    /// compaction), nor while it stops writes in a stall.
    pub(crate) fn accepting_writes(&self) -> Result<()> {
        if self.property("rocksdb.background-errors") > 0 {
            return Err(Error::Unavailable(
                "the catalog store reported a background error (see the server log); restart the server"
                    .into(),
            ));
        }
        if self.property("rocksdb.is-write-stopped") > 0 {
            return Err(Error::Unavailable(
                "the catalog store has stopped writes until compaction catches up".into(),
            ));
        }
        Ok(())
    }

    /// The RocksDB instance, for reads.
    pub(crate) fn db(&self) -> &DB {
        &self.inner.db
    }

    /// The column family `name`.
    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.inner.db.cf_handle(name).ok_or_else(|| {
            Error::corrupt(
                "key-value store",
                format!("column family {name} is missing"),
            )
        })
    }

    fn options(&self, durability: Durability) -> &WriteOptions {
        match durability {
            Durability::Synced => &self.inner.synced,
            Durability::Commit => &self.inner.commit,
        }
    }

    /// Writes `batch` atomically, from synchronous code; see the module docs for where
    /// the wait happens.
    pub(crate) fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        let opts = self.options(durability);
        crate::failpoints::check_blocking("kv.write")?;
        if self.syncs(durability) {
            crate::executor::blocking(|| self.inner.db.write_opt(batch, opts))?;
        } else {
            // Unsynced: a memtable insert and a buffered WAL append, no wait for the disk.
            self.inner.db.write_opt(batch, opts)?;
        }
        crate::failpoints::check_blocking("kv.write.after")?;
        Ok(())
    }

    /// Whether a write with `durability` waits for the disk.
    fn syncs(&self, durability: Durability) -> bool {
        match durability {
            Durability::Synced => true,
            Durability::Commit => self.inner.synchronous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families() -> Vec<ColumnFamilyDescriptor> {
        vec![ColumnFamilyDescriptor::new("users", Options::default())]
    }

    #[test]
    fn a_second_open_of_one_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = Kv::open(&dir.path().join("catalog"), families(), true).expect("open");
        let second = Kv::open(&dir.path().join("catalog"), families(), true);
        assert!(matches!(second, Err(Error::InUse(_))), "{second:?}");
        drop(kv);
        Kv::open(&dir.path().join("catalog"), families(), true).expect("reopen after close");
    }

    #[test]
    fn writes_are_atomic_batches_in_their_family() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = Kv::open(dir.path(), families(), false)?;
        let mut batch = WriteBatch::default();
        batch.put(b"a", b"1");
        batch.put_cf(kv.cf("users")?, b"u", b"2");
        kv.write(batch, Durability::Synced)?;
        assert_eq!(kv.db().get(b"a")?.as_deref(), Some(&b"1"[..]));
        assert_eq!(
            kv.db().get_cf(kv.cf("users")?, b"u")?.as_deref(),
            Some(&b"2"[..])
        );
        assert!(kv.cf("nope").is_err());
        Ok(())
    }
}
