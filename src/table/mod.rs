//! A table: a directory of immutable parts and a commit log naming the live
//! ones. Readers work on a [`Snapshot`]; writers add parts and commit a new
//! version atomically.

pub mod insert;
pub mod log;
pub mod options;
pub mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use arrow::datatypes::SchemaRef;

pub use insert::InsertWriter;
pub use log::{Commit, PartEntry};
pub use options::TableOptions;

use crate::error::{Error, Result};
use crate::part::{PartIndex, read_index};
use crate::storage::Storage;

/// One committed version of a table, as a reader sees it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub schema: SchemaRef,
    pub options: TableOptions,
    pub parts: Vec<PartEntry>,
}

impl Snapshot {
    fn from_commit(commit: &Commit) -> Result<Self> {
        let schema = schema::from_defs(&commit.schema)?;
        let options = TableOptions::from_map(&commit.options, &schema)?;
        Ok(Snapshot {
            version: commit.version,
            schema,
            options,
            parts: commit.parts.clone(),
        })
    }
}

/// An open table.
#[derive(Debug)]
pub struct Table {
    name: String,
    storage: Storage,
    current: RwLock<Arc<Snapshot>>,
    /// Part indexes are immutable, so a loaded one serves every later query.
    part_cache: Mutex<HashMap<String, Arc<PartIndex>>>,
}

impl Table {
    /// Creates a table at `storage`; fails if one already exists there.
    pub async fn create(
        name: &str,
        storage: Storage,
        schema: SchemaRef,
        options: TableOptions,
    ) -> Result<Arc<Table>> {
        let ctx = |e: Error| e.context(format!("table '{name}'"));
        schema::check_supported(&schema).map_err(ctx)?;
        if log::latest_version(&storage, None)
            .await
            .map_err(ctx)?
            .is_some()
        {
            return Err(ctx(Error::Table(format!(
                "a diagon table already exists at '{}'",
                storage.display()
            ))));
        }
        let commit = Commit {
            version: 0,
            timestamp_ms: log::now_ms(),
            operation: "CREATE".into(),
            schema: schema::to_defs(&schema),
            options: options.to_map(),
            parts: Vec::new(),
            txn: uuid::Uuid::new_v4().simple().to_string(),
        };
        if !log::write_commit(&storage, &commit).await.map_err(ctx)? {
            return Err(ctx(Error::CommitConflict {
                table: name.into(),
                version: 0,
            }));
        }
        Ok(Arc::new(Table::new(
            name,
            storage,
            Snapshot::from_commit(&commit)?,
        )))
    }

    /// Opens the table at `storage`, or returns `None` if there is none.
    pub async fn open(name: &str, storage: Storage) -> Result<Option<Arc<Table>>> {
        let ctx = |e: Error| e.context(format!("table '{name}'"));
        let Some(version) = log::latest_version(&storage, None).await.map_err(ctx)? else {
            return Ok(None);
        };
        let commit = log::read_commit(&storage, version).await.map_err(ctx)?;
        let snapshot = Snapshot::from_commit(&commit).map_err(ctx)?;
        Ok(Some(Arc::new(Table::new(name, storage, snapshot))))
    }

    fn new(name: &str, storage: Storage, snapshot: Snapshot) -> Table {
        Table {
            name: name.to_string(),
            storage,
            current: RwLock::new(Arc::new(snapshot)),
            part_cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The snapshot this handle last saw, without touching storage.
    pub fn cached_snapshot(&self) -> Arc<Snapshot> {
        self.current.read().expect("snapshot lock").clone()
    }

    /// The newest committed snapshot, including commits by other processes.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let cached = self.cached_snapshot();
        let ctx = |e: Error| e.context(format!("table '{}'", self.name));
        let latest = log::latest_version(&self.storage, Some(cached.version))
            .await
            .map_err(ctx)?;
        match latest {
            Some(v) if v > cached.version => {
                let commit = log::read_commit(&self.storage, v).await.map_err(ctx)?;
                let snapshot = Arc::new(Snapshot::from_commit(&commit).map_err(ctx)?);
                self.install(snapshot.clone());
                Ok(snapshot)
            }
            _ => Ok(cached),
        }
    }

    fn install(&self, snapshot: Arc<Snapshot>) {
        let mut current = self.current.write().expect("snapshot lock");
        if snapshot.version > current.version {
            *current = snapshot;
        }
    }

    /// The indexes of every part of `snapshot`, in snapshot order.
    pub async fn part_indexes(&self, snapshot: &Snapshot) -> Result<Vec<Arc<PartIndex>>> {
        futures::future::try_join_all(snapshot.parts.iter().map(|p| self.part_index(&p.name))).await
    }

    /// The index of a live part, loaded once.
    pub async fn part_index(&self, part: &str) -> Result<Arc<PartIndex>> {
        if let Some(index) = self.part_cache.lock().expect("cache lock").get(part) {
            return Ok(index.clone());
        }
        let index = read_index(&self.storage, part)
            .await
            .map_err(|e| e.context(format!("table '{}', part '{part}'", self.name)))?;
        let index = Arc::new(index);
        self.part_cache
            .lock()
            .expect("cache lock")
            .insert(part.to_string(), index.clone());
        Ok(index)
    }

    /// Starts an insert; nothing is visible until [`InsertWriter::commit`].
    pub fn insert(self: &Arc<Self>) -> InsertWriter {
        InsertWriter::new(self.clone(), self.cached_snapshot())
    }

    /// Commits `new_parts` on top of the newest version, retrying when another
    /// writer committed first (appends never conflict with appends).
    pub(crate) async fn commit_append(
        &self,
        operation: &str,
        new_parts: Vec<PartEntry>,
    ) -> Result<u64> {
        self.commit_with(operation, |base| {
            let mut parts = base.parts.clone();
            parts.extend(new_parts.iter().cloned());
            parts
        })
        .await
    }

    /// Removes every row (TRUNCATE): commits a version with no parts.
    /// Returns the number of rows removed.
    pub async fn truncate(&self) -> Result<u64> {
        let mut removed = 0;
        self.commit_with("TRUNCATE", |base| {
            removed = base.parts.iter().map(|p| p.rows).sum();
            Vec::new()
        })
        .await?;
        Ok(removed)
    }

    /// Commits the part list `next` derives from the newest version, retrying
    /// on a newer version when another writer commits first.
    async fn commit_with(
        &self,
        operation: &str,
        mut next: impl FnMut(&Snapshot) -> Vec<PartEntry>,
    ) -> Result<u64> {
        const MAX_ATTEMPTS: usize = 16;
        let ctx = |e: Error| e.context(format!("table '{}'", self.name));
        let txn = uuid::Uuid::new_v4().simple().to_string();
        for _ in 0..MAX_ATTEMPTS {
            let base = self.snapshot().await?;
            let commit = Commit {
                version: base.version + 1,
                timestamp_ms: log::now_ms(),
                operation: operation.into(),
                schema: schema::to_defs(&base.schema),
                options: base.options.to_map(),
                parts: next(&base),
                txn: txn.clone(),
            };
            let won = log::write_commit(&self.storage, &commit)
                .await
                .map_err(ctx)?;
            // A store may report a lost race for a write that landed (a
            // conditional PUT retried after its response was lost): the
            // version then carries our transaction id.
            let ours = won
                || log::read_commit(&self.storage, commit.version)
                    .await
                    .is_ok_and(|c| c.txn == txn);
            if ours {
                self.install(Arc::new(Snapshot::from_commit(&commit)?));
                return Ok(commit.version);
            }
        }
        Err(ctx(Error::CommitConflict {
            table: self.name.clone(),
            version: self.cached_snapshot().version + 1,
        }))
    }
}
