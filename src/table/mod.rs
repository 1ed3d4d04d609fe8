//! A table: a directory of immutable parts and a commit log naming the live
//! ones. Readers work on a [`Snapshot`]; writers add parts and commit a new
//! version atomically.

pub mod alter;
pub mod deletes;
pub mod gc;
pub mod insert;
pub mod log;
pub mod merge;
pub mod mutate;
pub mod options;
pub mod schema;
pub mod search;
pub mod text;
pub mod tier;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use arrow::buffer::BooleanBuffer;
use arrow::datatypes::SchemaRef;

pub use gc::SnapshotPin;
pub use insert::InsertWriter;
pub use log::{Commit, Deletes, PartEntry, TableState};
pub use merge::set_background_merge_threads;
pub use mutate::RowMatcher;
pub use options::{Backpressure, MergeOptions, SidxOptions, TableOptions, TierOptions};
pub use schema::{ConstraintDef, Definition, Extras};
pub use search::{SearchHit, TextTarget};

use crate::error::{Error, Result};
use crate::part::component::ComponentBuilder;
use crate::part::conform::TableColumn;
use crate::part::{PartIndex, PartLayout, read_index};
use crate::plan::{PartInput, Pruner, ScanPlan};
use crate::storage::{CacheCounts, Storage};

/// One committed version of a table, as a reader sees it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    /// When the version was committed (ms since the epoch).
    pub timestamp_ms: i64,
    /// Columns with their metadata, and the schema's metadata.
    pub schema: SchemaRef,
    /// The same columns with the types parts store them as (dictionary and
    /// run-end encoded columns as their values); parts are written, merged
    /// and indexed in it, and read back as `schema`.
    pub storage_schema: SchemaRef,
    pub options: TableOptions,
    pub parts: Vec<PartEntry>,
    /// The stored definition (defaults, constraints, options as written).
    pub definition: Arc<Definition>,
    /// The columns with their stable ids and fills, as parts are
    /// conformed to them (see `part::conform`).
    pub columns: Arc<Vec<TableColumn>>,
    /// The newest checkpoint this handle knows (0: none).
    pub checkpoint: u64,
    /// What readers derive from the snapshot once and share.
    pub(crate) derived: Derived,
}

/// What readers derive from a snapshot once and share while it lives:
/// each text-indexed column's open part indexes (see `text.rs`). A clone
/// starts empty: a snapshot is cloned to be changed.
#[derive(Default)]
pub(crate) struct Derived {
    pub(crate) text: std::sync::Mutex<std::collections::HashMap<String, Arc<text::TextColumn>>>,
}

impl Clone for Derived {
    fn clone(&self) -> Self {
        Derived::default()
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived")
    }
}

impl Snapshot {
    fn from_state(state: TableState, checkpoint: u64) -> Result<Self> {
        let schema = state.definition.arrow_schema()?;
        let options = TableOptions::from_map(&state.definition.options, &schema)?;
        let columns = Arc::new(alter::table_columns(&state.definition, &schema)?);
        Ok(Snapshot {
            version: state.version,
            timestamp_ms: state.timestamp_ms,
            storage_schema: schema::storage_schema(&schema),
            schema,
            options,
            columns,
            parts: state.parts,
            definition: Arc::new(state.definition),
            checkpoint,
            derived: Derived::default(),
        })
    }

    /// The state this snapshot was made from.
    fn state(&self) -> TableState {
        TableState {
            version: self.version,
            timestamp_ms: self.timestamp_ms,
            definition: self.definition.as_ref().clone(),
            parts: self.parts.clone(),
        }
    }

    /// Column → default, as SQL text.
    pub fn defaults(&self) -> std::collections::BTreeMap<String, String> {
        self.definition.defaults()
    }

    pub fn constraints(&self) -> &[ConstraintDef] {
        &self.definition.constraints
    }
}

/// An open table.
///
/// Loaded part indexes, deletion masks and index blocks live in the
/// process's one byte-bounded [`Cache`], keyed by the files they came from.
#[derive(Debug)]
pub struct Table {
    name: String,
    storage: Storage,
    current: RwLock<Arc<Snapshot>>,
    /// Versions readers of this process are using.
    pins: gc::Pins,
    /// Files replaced by commits of this process, awaiting their readers.
    retired: Mutex<gc::Retired>,
    /// Parts this process is writing and has not committed yet.
    inflight: Mutex<HashSet<String>>,
    /// One merge at a time per table handle.
    merge_lock: tokio::sync::Mutex<()>,
    /// When this handle first saw each unreferenced file (ms), for cleanup.
    unreferenced_since: Mutex<HashMap<String, i64>>,
    /// The checkpoint pointer at the last log cleanup, and what it did.
    log_cleanup: Mutex<Option<(Option<u64>, log::Cleaned)>>,
    /// When the last background cleanup started (ms since the epoch).
    last_cleanup_ms: std::sync::atomic::AtomicI64,
    /// The cold locations this handle can reach, by location (see `tier`).
    locations: RwLock<std::collections::BTreeMap<String, tier::ColdStorage>>,
    /// Cold locations not attached, with the reason (see `tier`).
    refused: RwLock<std::collections::BTreeMap<String, String>>,
    /// One move at a time per table handle.
    move_lock: tokio::sync::Mutex<()>,
    /// Whether the periodic move policy check runs (see `tier`).
    mover_started: std::sync::atomic::AtomicBool,
    /// Whether a policy run is scheduled and not started yet.
    move_scheduled: std::sync::atomic::AtomicBool,
    /// When the cold tiers were last cleaned (ms since the epoch).
    last_cold_cleanup_ms: std::sync::atomic::AtomicI64,
    /// Set by DROP TABLE: no commit may land after it.
    dropped: std::sync::atomic::AtomicBool,
    /// Dropped with the last handle of this table; see [`Table::on_release`].
    released: Mutex<Vec<Released>>,
}

/// Whether `after` changes the definition of `before`.
fn definition_changed(before: &TableState, after: &TableState) -> bool {
    before.definition != after.definition
}

/// Something a table keeps until its last handle goes.
struct Released {
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for Released {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Released")
    }
}

impl Table {
    /// Creates a table at `storage`; fails if one already exists there.
    pub async fn create(
        name: &str,
        storage: Storage,
        schema: SchemaRef,
        options: TableOptions,
    ) -> Result<Arc<Table>> {
        Self::create_with(name, storage, schema, options, &Extras::default()).await
    }

    /// Creates a table with column defaults and constraints.
    pub async fn create_with(
        name: &str,
        storage: Storage,
        schema: SchemaRef,
        options: TableOptions,
        extras: &Extras,
    ) -> Result<Arc<Table>> {
        let ctx = |e: Error| e.context(format!("table '{name}'"));
        schema::check_supported(&schema).map_err(ctx)?;
        let definition = Definition::new(&schema, options.to_map(), extras);
        definition.check().map_err(ctx)?;
        if log::exists(&storage).await.map_err(ctx)? {
            return Err(ctx(Error::Table(format!(
                "a diagon table already exists at '{}'",
                storage.display()
            ))));
        }
        let state = TableState {
            version: 0,
            timestamp_ms: log::now_ms(),
            definition,
            parts: Vec::new(),
        };
        let commit = Commit::create(&state, &uuid::Uuid::new_v4().simple().to_string());
        if !log::write_commit(&storage, &commit).await.map_err(ctx)? {
            return Err(ctx(Error::CommitConflict {
                table: name.into(),
                version: 0,
            }));
        }
        let snapshot = Snapshot::from_state(state, 0).map_err(ctx)?;
        Ok(Arc::new(Table::new(name, storage, snapshot)))
    }

    /// Opens the table at `storage`, or returns `None` if there is none.
    pub async fn open(name: &str, storage: Storage) -> Result<Option<Arc<Table>>> {
        let ctx = |e: Error| e.context(format!("table '{name}'"));
        let Some((state, checkpoint)) = log::load(&storage).await.map_err(ctx)? else {
            return Ok(None);
        };
        let snapshot = Snapshot::from_state(state, checkpoint).map_err(ctx)?;
        Ok(Some(Arc::new(Table::new(name, storage, snapshot))))
    }

    fn new(name: &str, storage: Storage, snapshot: Snapshot) -> Table {
        Table {
            name: name.to_string(),
            storage,
            current: RwLock::new(Arc::new(snapshot)),
            pins: Default::default(),
            retired: Default::default(),
            inflight: Default::default(),
            merge_lock: tokio::sync::Mutex::new(()),
            unreferenced_since: Mutex::new(HashMap::new()),
            log_cleanup: Mutex::new(None),
            last_cleanup_ms: std::sync::atomic::AtomicI64::new(0),
            locations: RwLock::new(Default::default()),
            refused: RwLock::new(Default::default()),
            move_lock: tokio::sync::Mutex::new(()),
            mover_started: std::sync::atomic::AtomicBool::new(false),
            move_scheduled: std::sync::atomic::AtomicBool::new(false),
            last_cold_cleanup_ms: std::sync::atomic::AtomicI64::new(0),
            dropped: std::sync::atomic::AtomicBool::new(false),
            released: Mutex::new(Vec::new()),
        }
    }

    /// Refuses every later commit through this handle (DROP TABLE), so a
    /// merge or insert still running cannot bring the table back.
    pub fn mark_dropped(&self) {
        self.dropped
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Keeps `guard` until the last handle of this table is dropped. A
    /// catalog hangs the deletion of a dropped table's files here, so that
    /// plans still holding the table (`CREATE OR REPLACE TABLE t AS SELECT
    /// ... FROM t`) finish reading it first.
    pub fn on_release(&self, guard: impl std::any::Any + Send + Sync) {
        crate::sync::lock(&self.released).push(Released {
            _guard: Box::new(guard),
        });
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The snapshot this handle last saw, without touching storage.
    pub fn cached_snapshot(&self) -> Arc<Snapshot> {
        crate::sync::read(&self.current).clone()
    }

    /// The newest committed snapshot, including commits by other processes:
    /// the commits after the cached version, read by name (see
    /// [`log::refresh`]).
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let cached = self.cached_snapshot();
        let ctx = |e: Error| e.context(format!("table '{}'", self.name));
        let (state, checkpoint) = log::refresh(&self.storage, cached.state(), cached.checkpoint)
            .await
            .map_err(ctx)?;
        if state.version == cached.version {
            return Ok(cached);
        }
        Ok(self.install(Snapshot::from_state(state, checkpoint).map_err(ctx)?))
    }

    /// Makes `snapshot` the handle's current one unless it already has a
    /// newer one; returns the current one.
    fn install(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let mut current = crate::sync::write(&self.current);
        if snapshot.version > current.version {
            *current = Arc::new(snapshot);
        }
        current.clone()
    }

    /// Where the files of `entry` live: the table's own directory, or the
    /// cold location the entry names (attached with
    /// [`Table::attach_location`]).
    pub fn storage_for(&self, entry: &PartEntry) -> Result<Storage> {
        let tier = match &entry.location {
            None => self.storage.clone(),
            Some(location) => self.location_storage(location).ok_or_else(|| {
                let why = self.refusal(location).unwrap_or_else(|| {
                    "no object store for it is registered in this session".into()
                });
                Error::Table(format!(
                    "table '{}': part '{}' lives at '{location}', which this handle cannot \
                     read: {why}",
                    self.name, entry.name
                ))
            })?,
        };
        Ok(match &entry.dir {
            None => tier,
            Some(dir) => tier.at(dir),
        })
    }

    /// The indexes of every part of `snapshot`, in snapshot order.
    pub async fn part_indexes(&self, snapshot: &Snapshot) -> Result<Vec<Arc<PartIndex>>> {
        futures::future::try_join_all(snapshot.parts.iter().map(|p| self.entry_index(snapshot, p)))
            .await
    }

    /// The index of a live part of the table's own directory.
    pub async fn part_index(&self, part: &str) -> Result<Arc<PartIndex>> {
        self.index_at(&self.storage, part).await
    }

    /// The index of the part `entry` names, wherever it lives, as the
    /// columns of `snapshot` see it (see `part::conform`).
    pub async fn entry_index(
        &self,
        snapshot: &Snapshot,
        entry: &PartEntry,
    ) -> Result<Arc<PartIndex>> {
        let storage = self.storage_for(entry)?;
        let stored = self.index_at(&storage, &entry.name).await?;
        if stored.holds(&snapshot.columns) {
            return Ok(stored);
        }
        let key = format!(
            "{}#index@{:016x}",
            storage.cache_key(&format!(
                "{}/{}",
                crate::part::part_dir(&entry.name),
                crate::part::index::INDEX_FILE
            )),
            alter::fingerprint(&snapshot.columns)
        );
        if let Some(index) = storage.cache().get::<PartIndex>(&key) {
            return Ok(index);
        }
        let ctx = |e: Error| e.context(format!("table '{}', part '{}'", self.name, entry.name));
        let Some(conformed) = stored.conform(&snapshot.columns).map_err(ctx)? else {
            return Ok(stored);
        };
        let index = Arc::new(conformed);
        storage
            .cache()
            .insert(key, index.clone(), index.memory_size());
        Ok(index)
    }

    async fn index_at(&self, storage: &Storage, part: &str) -> Result<Arc<PartIndex>> {
        let path = format!(
            "{}/{}",
            crate::part::part_dir(part),
            crate::part::index::INDEX_FILE
        );
        let key = format!("{}#index", storage.cache_key(&path));
        if let Some(index) = storage.cache().get::<PartIndex>(&key) {
            return Ok(index);
        }
        let index = read_index(storage, part)
            .await
            .map_err(|e| e.context(format!("table '{}', part '{part}'", self.name)))?;
        let index = Arc::new(index);
        storage
            .cache()
            .insert(key, index.clone(), index.memory_size());
        Ok(index)
    }

    /// The deletion mask of a part as of the entry's version.
    pub async fn deletion_mask(&self, entry: &PartEntry) -> Result<Option<Arc<BooleanBuffer>>> {
        let Some(deletes) = &entry.deletes else {
            return Ok(None);
        };
        let storage = self.storage_for(entry)?;
        let path = deletes::mask_path(&entry.name, &deletes.file);
        let key = format!("{}#mask", storage.cache_key(&path));
        if let Some(mask) = storage.cache().get::<BooleanBuffer>(&key) {
            return Ok(Some(mask));
        }
        let ctx = |e: Error| e.context(format!("table '{}', part '{}'", self.name, entry.name));
        let index = self.index_at(&storage, &entry.name).await?;
        if index.meta.rows != entry.rows {
            return Err(ctx(Error::corrupt(
                storage.location(&crate::part::part_dir(&entry.name)),
                format!(
                    "the log says {} rows, the part index {}",
                    entry.rows, index.meta.rows
                ),
            )));
        }
        let mask = deletes::read_mask(&storage, &entry.name, deletes, entry.rows)
            .await
            .map_err(ctx)?;
        let mask = Arc::new(mask);
        storage
            .cache()
            .insert(key, mask.clone(), mask.len().div_ceil(8) as u64);
        Ok(Some(mask))
    }

    /// The planner's view of `entries`: index, storage and mask of each.
    pub async fn plan_inputs(
        &self,
        snapshot: &Snapshot,
        entries: &[PartEntry],
    ) -> Result<Vec<PartInput>> {
        let load = entries.iter().map(|entry| async move {
            Ok::<_, Error>(PartInput {
                index: self.entry_index(snapshot, entry).await?,
                storage: self.storage_for(entry)?,
                location: entry.location.clone(),
                mask: self.deletion_mask(entry).await?,
            })
        });
        futures::future::try_join_all(load).await
    }

    /// Plans a read of `entries` with `pruners`, counting the cache lookups
    /// planning makes.
    pub async fn plan(
        &self,
        snapshot: &Snapshot,
        entries: &[PartEntry],
        pruners: &[Arc<dyn Pruner>],
    ) -> Result<ScanPlan> {
        let counts = Arc::new(CacheCounts::default());
        let mut plan = crate::storage::cache::counted(counts.clone(), async {
            let inputs = self.plan_inputs(snapshot, entries).await?;
            crate::plan::build(inputs, pruners)
                .await
                .map_err(|e| e.context(format!("table '{}'", self.name)))
        })
        .await?;
        plan.cache = counts;
        Ok(plan)
    }

    /// How new parts of `snapshot`'s table are laid out.
    pub fn part_layout(snapshot: &Snapshot) -> PartLayout {
        let schema = &snapshot.storage_schema;
        let options = &snapshot.options;
        PartLayout {
            granularity: options.granularity,
            granularity_bytes: options.granularity_bytes,
            min_bytes_for_wide_part: options.min_bytes_for_wide_part,
            // Options were validated against this schema when the table was opened.
            key: options.key_positions(schema).unwrap_or_default(),
            codecs: schema.fields().iter().map(|f| options.codec(f)).collect(),
            column_ids: snapshot.definition.column_ids(),
        }
    }

    /// Builders of the components a new part of `snapshot`'s table gets.
    pub fn component_builders(snapshot: &Snapshot) -> Vec<Box<dyn ComponentBuilder>> {
        let options = &snapshot.options;
        let mut builders =
            crate::index::skip_builders(&snapshot.storage_schema, &options.skip_indexes);
        builders.extend(crate::index::text_builders(
            &snapshot.storage_schema,
            &options.text.indexes,
        ));
        builders
    }

    /// Starts an insert; nothing is visible until [`InsertWriter::commit`].
    pub fn insert(self: &Arc<Self>) -> InsertWriter {
        InsertWriter::new(self.clone(), self.cached_snapshot())
    }

    /// A writer of new parts laid out as of `base`.
    pub(crate) fn insert_on(self: &Arc<Self>, base: Arc<Snapshot>) -> InsertWriter {
        InsertWriter::new(self.clone(), base)
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
        let version = self
            .commit_checked(operation, |base| Some(next(base)))
            .await?;
        Ok(version.expect("an unconditional commit is never refused"))
    }

    /// Like `commit_with`, but `next` may refuse a newer version (a part it
    /// changes was changed by someone else): then nothing is committed and
    /// the result is `None`.
    pub(crate) async fn commit_checked(
        &self,
        operation: &str,
        mut next: impl FnMut(&Snapshot) -> Option<Vec<PartEntry>>,
    ) -> Result<Option<u64>> {
        self.commit_attempts(operation, &mut next, &|o| o.clone())
            .await
    }

    /// Adds skip indexes to the table's options (existing parts get them
    /// when merged; `diagon_optimize('t', true)` builds them for all).
    pub async fn add_skip_indexes(
        &self,
        indexes: &[(String, crate::index::skip::SkipSpec)],
    ) -> Result<u64> {
        let add = |o: &TableOptions| {
            let mut o = o.clone();
            for (column, spec) in indexes {
                o.skip_indexes.insert(column.clone(), *spec);
            }
            o
        };
        let version = self
            .commit_attempts("ALTER", &mut |base| Some(base.parts.clone()), &add)
            .await?;
        Ok(version.expect("an unconditional commit is never refused"))
    }

    /// Sets the text search options (text indexes, analyzers, BM25, the
    /// default operator). Parts written before get a declared index when
    /// merged; `diagon_optimize('t', true)` builds them for all.
    pub async fn set_text_search(&self, text: options::TextSearch) -> Result<u64> {
        let version = self
            .commit_attempts("ALTER", &mut |base| Some(base.parts.clone()), &|o| {
                TableOptions {
                    text: text.clone(),
                    ..o.clone()
                }
            })
            .await?;
        Ok(version.expect("an unconditional commit is never refused"))
    }

    /// Sets the cold location and the move policy.
    pub async fn set_tiers(&self, tiers: options::TierOptions) -> Result<u64> {
        let version = self
            .commit_attempts("ALTER", &mut |base| Some(base.parts.clone()), &|o| {
                TableOptions {
                    tiers: tiers.clone(),
                    ..o.clone()
                }
            })
            .await?;
        Ok(version.expect("an unconditional commit is never refused"))
    }

    async fn commit_attempts(
        &self,
        operation: &str,
        next: &mut impl FnMut(&Snapshot) -> Option<Vec<PartEntry>>,
        options: &(dyn Fn(&TableOptions) -> TableOptions + Sync),
    ) -> Result<Option<u64>> {
        let define = |base: &Snapshot| {
            let mut definition = base.definition.as_ref().clone();
            let new_options = options(&base.options);
            if new_options != base.options {
                definition.options = new_options.to_map();
            }
            Ok(definition)
        };
        self.commit_definition(operation, next, &define).await
    }

    /// Commits the parts `next` and the definition `define` derive from
    /// the newest version, retrying on a newer version when another writer
    /// commits first; `None` when `next` refuses a version.
    pub(crate) async fn commit_definition(
        &self,
        operation: &str,
        next: &mut impl FnMut(&Snapshot) -> Option<Vec<PartEntry>>,
        define: &(dyn Fn(&Snapshot) -> Result<Definition> + Sync),
    ) -> Result<Option<u64>> {
        const MAX_ATTEMPTS: usize = 16;
        let ctx = |e: Error| e.context(format!("table '{}'", self.name));
        let txn = uuid::Uuid::new_v4().simple().to_string();
        for _ in 0..MAX_ATTEMPTS {
            let base = self.snapshot().await?;
            if self.dropped.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ctx(Error::Table("the table was dropped".into())));
            }
            let Some(parts) = next(&base) else {
                return Ok(None);
            };
            let before = base.state();
            let definition = define(&base).map_err(ctx)?;
            let after = TableState {
                version: base.version + 1,
                timestamp_ms: log::now_ms(),
                definition,
                parts,
            };
            let commit = Commit::between(&before, &after, operation, &txn);
            // The new state must open before it is written: a definition
            // changed concurrently (a column dropped under a new skip
            // index) is refused here, not committed as a table that no
            // longer opens.
            let mut snapshot = match definition_changed(&before, &after) {
                true => Some(Snapshot::from_state(after.clone(), base.checkpoint).map_err(ctx)?),
                false => None,
            };
            // Retired before the new version can be visible, so a cleanup
            // never sees these files unreferenced yet unprotected (retiring
            // files a lost attempt did not replace protects them a while
            // longer, nothing more).
            self.retire_replaced(&base, &after.parts, after.version);
            let ours = match log::write_commit(&self.storage, &commit).await {
                Ok(true) => true,
                // A store may report a lost race, or an error, for a write
                // that landed (a conditional PUT retried after its reply was
                // lost, an fsync failing after the file was linked): the
                // version then carries our transaction id. A failed read is
                // passed on: guessing "not ours" could apply the change
                // twice, "ours" lose it.
                written => match log::read_commit(&self.storage, commit.version).await {
                    Ok(found) => found.txn == txn,
                    Err(read_error) => {
                        return Err(ctx(match written {
                            Err(e) if read_error.is_not_found() => e,
                            Err(e) => e.context(format!(
                                "{} {} is unknown",
                                crate::error::UNKNOWN_OUTCOME,
                                commit.version
                            )),
                            // A lost race may be a write that landed.
                            Ok(_) => read_error.context(format!(
                                "{} {} is unknown",
                                crate::error::UNKNOWN_OUTCOME,
                                commit.version
                            )),
                        }));
                    }
                },
            };
            if ours {
                let checkpoint = self.checkpoint_if_due(&base, &after).await;
                let snapshot = match snapshot.take() {
                    Some(mut snapshot) => {
                        snapshot.checkpoint = checkpoint;
                        snapshot
                    }
                    None => Snapshot::from_state(after, checkpoint)?,
                };
                self.install(snapshot);
                return Ok(Some(commit.version));
            }
        }
        Err(ctx(Error::CommitConflict {
            table: self.name.clone(),
            version: self.cached_snapshot().version + 1,
        }))
    }

    /// Writes a checkpoint of `state` once `checkpoint_interval` commits
    /// have passed since the last one; returns the newest checkpoint. A
    /// failure only delays the checkpoint to the next commit: the version
    /// is committed either way.
    async fn checkpoint_if_due(&self, base: &Snapshot, state: &TableState) -> u64 {
        if state.version < base.checkpoint + base.options.checkpoint_interval {
            return base.checkpoint;
        }
        match log::write_checkpoint(&self.storage, state).await {
            Ok(()) => state.version,
            Err(e) => {
                ::log::warn!(
                    "table '{}': checkpoint {} failed: {e}",
                    self.name,
                    state.version
                );
                base.checkpoint
            }
        }
    }
}
