//! sidx: a secondary index whose rows are (series, an int64 key the user
//! chooses, opaque data, tags), kept sorted by (series, key) in diagon
//! parts, as Apache SkyWalking BanyanDB's sidx, on the diagon engine.
//!
//! ```no_run
//! # async fn example() -> diagon::Result<()> {
//! use diagon::sidx::{Element, Options, Order, QueryRequest, Sidx, TagFilter};
//! use futures::TryStreamExt;
//!
//! let dir = std::path::Path::new("/tmp/latency-index");
//! let storage = diagon::storage::Storage::local(dir)?;
//! let index = Sidx::open_or_create(storage, Options::default()).await?;
//! index
//!     .write(&[
//!         Element::new(7, 120, b"trace-a".to_vec()).tag("service", "checkout"),
//!         Element::new(7, 95, b"trace-b".to_vec()).tag("service", "cart"),
//!     ])
//!     .await?; // visible to queries from here on
//! let slowest: Vec<_> = index
//!     .query(
//!         QueryRequest::new()
//!             .series([7])
//!             .keys(Some(100), None)
//!             .filter(TagFilter::eq("service", "checkout"))
//!             .tags(["service"])
//!             .order(Order::Desc)
//!             .limit(10),
//!     )
//!     .await?
//!     .try_collect()
//!     .await?;
//! index.flush().await?; // persisted: a reopen finds these elements
//! index.close().await?;
//! # Ok(()) }
//! ```
//!
//! Writes land in memory parts, visible at once; [`Sidx::flush`] persists
//! them as one committed table version, atomically; [`Sidx::merge`]
//! replaces parts by one, optionally dropping elements. Both are the
//! user's call, as in the seed design: nothing runs in the background.
//!
//! **Durability.** Elements not yet flushed live only in memory: a crash
//! (or a drop without [`Sidx::close`]) loses them, and a reopen restores
//! exactly the flushed state. [`Sidx::close`] flushes first.
//!
//! **Memory.** Memory parts hold at most `memory_limit` bytes; past it a
//! write waits for a flush or fails at once ([`Backpressure`]).
//!
//! **Processes.** One process writes an index; within it, every opener of
//! one local directory (or one storage handle) shares one [`Sidx`]: the
//! SQL face and the Rust API see the same memory parts.

pub mod element;
pub mod filter;
pub mod introducer;
pub mod memory;
pub mod query;
pub mod stats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt64Array, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, UInt64Type};

pub use element::{Element, Tag, TagType, TagValue};
pub use filter::TagFilter;
pub use query::{Order, QueryMetrics, QueryRequest, QueryStream};
pub use stats::Stats;

use crate::error::{Error, Result};
use crate::index::skip::{SkipKind, SkipSpec};
use crate::storage::Storage;
use crate::table::alter::SchemaChange;
use crate::table::options::{SIDX_COLUMNS, SIDX_ORDER_BY};
pub use crate::table::{Backpressure, SidxOptions};
use crate::table::{Table, TableOptions};
use introducer::Introducer;
use memory::{MemPart, MemoryBudget};

/// How to create or open an index.
#[derive(Debug, Clone)]
pub struct Options {
    /// The name errors give the index.
    pub name: String,
    /// Tags declared up front (others are added at their first write).
    pub tags: Vec<(String, TagType)>,
    /// Rows per granule of the parts (at creation).
    pub granularity: usize,
    /// Bytes memory parts may hold before writes apply backpressure.
    pub memory_limit: usize,
    pub backpressure: Backpressure,
}

/// Rows per granule of a secondary index part: smaller than a table's
/// default, as a granule is what a query for one series reads.
pub const DEFAULT_GRANULARITY: usize = 1024;

impl Default for Options {
    fn default() -> Self {
        let sidx = SidxOptions::default();
        Options {
            name: "sidx".into(),
            tags: Vec::new(),
            granularity: DEFAULT_GRANULARITY,
            memory_limit: sidx.memory_limit,
            backpressure: sidx.backpressure,
        }
    }
}

/// What to merge.
#[derive(Clone, Default)]
pub enum MergeSelection {
    /// Every disk part into one.
    #[default]
    All,
    /// These parts (by name) into one.
    Parts(Vec<String>),
    /// What the table's tiered merge policy picks (see `table::merge`).
    Policy,
}

/// Which elements a merge keeps, by their data: the others are dropped.
pub type KeepData = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// A merge: the parts, and a predicate on data (none keeps every element,
/// duplicates included).
#[derive(Clone, Default)]
pub struct MergeRequest {
    pub parts: MergeSelection,
    pub keep: Option<KeepData>,
}

/// What a merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Merges committed.
    pub merges: usize,
    pub parts_before: usize,
    pub parts_after: usize,
    /// Elements the keep predicate dropped.
    pub dropped: u64,
}

/// An open secondary index.
pub struct Sidx {
    table: Arc<Table>,
    introducer: Introducer,
    budget: MemoryBudget,
    /// The next write sequence number: every element gets its own, in
    /// write order, which orders elements of equal (series, key).
    next_seq: AtomicU64,
    next_memory_part: AtomicU64,
    /// Serializes tag additions (ALTER TABLE ADD COLUMN).
    schema_lock: tokio::sync::Mutex<()>,
    /// One flush at a time, one merge at a time.
    flush_lock: tokio::sync::Mutex<()>,
    merge_lock: tokio::sync::Mutex<()>,
    /// Held (shared) by every write while it runs, so `close` can wait
    /// for those it must flush.
    writers: tokio::sync::RwLock<()>,
    close_lock: tokio::sync::Mutex<()>,
    session: datafusion::execution::SessionState,
    counters: stats::Counters,
    closed: AtomicBool,
    /// Set when a flush's commit may or may not have landed: the memory
    /// parts cannot be kept (their rows may be on disk) nor dropped (they
    /// may not); only a reopen, which finds the committed state, is sure.
    poisoned: AtomicBool,
}

impl std::fmt::Debug for Sidx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidx")
            .field("table", &self.table.name())
            .finish()
    }
}

/// The indexes open in this process, by location.
fn registry() -> &'static Mutex<HashMap<String, Weak<Sidx>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Weak<Sidx>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Flushes every index open in this process (a CLI session ending);
/// returns the elements flushed, or the first failure after trying all.
pub async fn flush_all() -> Result<u64> {
    let open: Vec<Arc<Sidx>> = crate::sync::lock(registry())
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    let mut flushed = 0;
    let mut failure = None;
    for index in open {
        match index.flush().await {
            Ok(n) => flushed += n,
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    failure.map_or(Ok(flushed), Err)
}

/// A local directory by its path; another store by its handle (two
/// handles of one bucket are not known to be the same).
fn location_key(storage: &Storage) -> String {
    match storage.local_dir() {
        Some(dir) => std::fs::canonicalize(&dir)
            .unwrap_or(dir)
            .display()
            .to_string(),
        None => storage.cache_key(""),
    }
}

/// The schema of a new index with `tags`.
fn index_schema(tags: &[(String, TagType)]) -> Result<Schema> {
    let mut fields: Vec<Field> = SIDX_COLUMNS
        .iter()
        .map(|(name, t)| Field::new(*name, t.clone(), false))
        .collect();
    for (name, t) in tags {
        if name.is_empty() || element::is_reserved(name) {
            return Err(Error::Invalid(format!("tag name '{name}' is not allowed")));
        }
        if fields.iter().any(|f| f.name() == name) {
            return Err(Error::Invalid(format!("tag '{name}' is declared twice")));
        }
        fields.push(t.field(name));
    }
    Ok(Schema::new(fields))
}

/// The skip index a tag gets: a bloom filter on values (list elements) of
/// strings and bytes; int tags prune with their min/max.
fn tag_index(t: TagType) -> Option<SkipSpec> {
    match t {
        TagType::Int => None,
        _ => Some(SkipSpec {
            kind: SkipKind::Bloom(0.01),
            granularity: 1,
        }),
    }
}

/// The table options of a new index.
pub fn table_options(options: &Options, tags: &[(String, TagType)]) -> TableOptions {
    let mut table = TableOptions {
        order_by: SIDX_ORDER_BY.iter().map(|s| s.to_string()).collect(),
        granularity: options.granularity,
        sidx: Some(SidxOptions {
            memory_limit: options.memory_limit,
            backpressure: options.backpressure,
        }),
        ..TableOptions::default()
    };
    table.merge.background = false;
    for (name, t) in tags {
        if let Some(spec) = tag_index(*t) {
            table.skip_indexes.insert(name.clone(), spec);
        }
    }
    table
}

impl Sidx {
    /// Creates an index at `storage`; fails if a table exists there.
    pub async fn create(storage: Storage, options: Options) -> Result<Arc<Sidx>> {
        let schema = Arc::new(index_schema(&options.tags)?);
        let table_options = table_options(&options, &options.tags);
        let table = Table::create(&options.name, storage, schema, table_options).await?;
        Self::for_table(table, Some(&options)).await
    }

    /// Opens the index at `storage`; its declared tags must match (new ones
    /// are added); `memory_limit` and `backpressure` apply to this opening
    /// (when the process has the index open already, the open one is
    /// returned as it is, with its settings).
    pub async fn open(storage: Storage, options: Options) -> Result<Arc<Sidx>> {
        if let Some(open) = Self::registered(&storage) {
            open.declare(&options.tags).await?;
            return Ok(open);
        }
        let Some(table) = Table::open(&options.name, storage.clone()).await? else {
            return Err(Error::Table(format!(
                "no secondary index at '{}'",
                storage.display()
            )));
        };
        let index = Self::for_table(table, Some(&options)).await?;
        index.declare(&options.tags).await?;
        Ok(index)
    }

    /// Opens the index at `storage`, creating it if there is none.
    pub async fn open_or_create(storage: Storage, options: Options) -> Result<Arc<Sidx>> {
        if Self::registered(&storage).is_some() || crate::table::log::exists(&storage).await? {
            return Self::open(storage, options).await;
        }
        Self::create(storage, options).await
    }

    fn registered(storage: &Storage) -> Option<Arc<Sidx>> {
        let registry = crate::sync::lock(registry());
        registry.get(&location_key(storage)).and_then(Weak::upgrade)
    }

    /// The index over an open table with `'sidx' 'true'`: the one this
    /// process already has for its location, or a new one (its write
    /// sequence restarting after the largest flushed).
    pub async fn for_table(table: Arc<Table>, options: Option<&Options>) -> Result<Arc<Sidx>> {
        let key = location_key(table.storage());
        if let Some(open) = crate::sync::lock(registry())
            .get(&key)
            .and_then(Weak::upgrade)
        {
            return Ok(open);
        }
        let ctx = |e: Error| e.context(format!("secondary index '{}'", table.name()));
        let (pin, disk) = table.pinned_snapshot().await.map_err(ctx)?;
        let Some(settings) = disk.options.sidx.clone() else {
            return Err(ctx(Error::Table(format!(
                "the table at '{}' is not a secondary index (no 'sidx' option)",
                table.storage().display()
            ))));
        };
        let (limit, mode) = match options {
            Some(o) => (o.memory_limit, o.backpressure),
            None => (settings.memory_limit, settings.backpressure),
        };
        let next_seq = max_seq(&table, &disk).await.map_err(ctx)? + 1;
        let session = datafusion::execution::SessionStateBuilder::new()
            .with_default_features()
            .build();
        let index = Arc::new(Sidx {
            introducer: Introducer::new(disk, pin),
            budget: MemoryBudget::new(limit, mode),
            next_seq: AtomicU64::new(next_seq),
            next_memory_part: AtomicU64::new(1),
            schema_lock: Default::default(),
            flush_lock: Default::default(),
            merge_lock: Default::default(),
            writers: Default::default(),
            close_lock: Default::default(),
            session,
            counters: Default::default(),
            closed: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            table,
        });
        let mut registry = crate::sync::lock(registry());
        // Another opener may have won the race while this one read the log.
        if let Some(open) = registry.get(&key).and_then(Weak::upgrade) {
            return Ok(open);
        }
        registry.retain(|_, w| w.strong_count() > 0);
        registry.insert(key, Arc::downgrade(&index));
        Ok(index)
    }

    /// The table holding the flushed parts.
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    pub fn name(&self) -> &str {
        self.table.name()
    }

    fn context(&self, e: Error) -> Error {
        e.context(format!("secondary index '{}'", self.table.name()))
    }

    fn check_open(&self) -> Result<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(self.context(Error::Table(
                "a flush failed with an unknown outcome; reopen the index, which finds the \
                 committed state"
                    .into(),
            )));
        }
        match self.closed.load(Ordering::SeqCst) {
            true => Err(self.context(Error::Table("the index is closed".into()))),
            false => Ok(()),
        }
    }

    /// The table's columns now (with `_seq`); tags are only appended.
    pub fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.introducer.current().disk.schema.clone()
    }

    /// The tags and their types.
    pub fn tags(&self) -> Vec<(String, TagType)> {
        let snapshot = self.introducer.current();
        tags_of(&snapshot.disk.schema)
    }

    /// Adds the tags of `tags` the index lacks; refuses a tag whose type
    /// differs from the one it has.
    async fn declare(&self, tags: &[(String, TagType)]) -> Result<()> {
        let fields: Vec<Field> = tags.iter().map(|(n, t)| t.field(n)).collect();
        self.ensure_tags(&Schema::new(fields)).await
    }

    /// Writes elements; they are visible to queries when this returns.
    pub async fn write(&self, elements: &[Element]) -> Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        let batch = element::to_batch(elements).map_err(|e| self.context(e))?;
        self.write_batch(batch).await
    }

    /// Writes a batch with columns `series_id` (UInt64), `key` (Int64),
    /// `data` (Binary) and tags (any other column, of a tag type); visible
    /// to queries when this returns.
    pub async fn write_batch(&self, batch: RecordBatch) -> Result<()> {
        self.write_memory_part(batch, false).await
    }

    /// Writes `batch` as a memory part; with `flush_when_full`, memory
    /// parts are flushed first when this one would not fit.
    async fn write_memory_part(&self, batch: RecordBatch, flush_when_full: bool) -> Result<()> {
        let _writing = self.writers.read().await;
        self.check_open()?;
        let ctx = |e: Error| self.context(e);
        element::validate(&batch).map_err(ctx)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.ensure_tags(&batch.schema()).await.map_err(ctx)?;
        let rows = batch.num_rows() as u64;
        let stored = self.stored(&batch).map_err(ctx)?;
        let id = self.next_memory_part.fetch_add(1, Ordering::SeqCst);
        let part = MemPart::new(id, stored).map_err(ctx)?;
        let fits = match flush_when_full {
            true => self.budget.try_reserve(part.bytes),
            false => None,
        };
        let reservation = match fits {
            Some(reservation) => reservation,
            None => {
                // A flush never waits for writers: safe while this one is
                // under way.
                if flush_when_full {
                    self.flush_now().await?;
                }
                self.budget.reserve(part.bytes).await.map_err(ctx)?
            }
        };
        self.introducer.introduce_memory(Arc::new(part));
        reservation.commit();
        self.counters.written(rows);
        Ok(())
    }

    /// Writes a batch like [`Self::write_batch`], but when memory parts
    /// are full it flushes them first instead of waiting or failing: for
    /// SQL sessions, where nobody else may be there to flush.
    pub async fn write_batch_flushing(&self, batch: RecordBatch) -> Result<()> {
        self.write_memory_part(batch, true).await
    }

    /// A validated batch as stored: the fixed columns with a write
    /// sequence number for each element, then its tags in their stored
    /// types (a list's item field as the index names it).
    fn stored(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows() as u64;
        let first = self.next_seq.fetch_add(rows, Ordering::SeqCst);
        let seq: ArrayRef = Arc::new(UInt64Array::from_iter_values(first..first + rows));
        let mut fields: Vec<Field> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (name, t) in &SIDX_COLUMNS {
            fields.push(Field::new(*name, t.clone(), false));
            columns.push(match *name {
                "_seq" => seq.clone(),
                _ => batch.column_by_name(name).expect("validated").clone(),
            });
        }
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            if element::is_reserved(field.name()) {
                continue;
            }
            let t = TagType::of(field.data_type()).expect("validated");
            let column = match column.data_type() == &t.data_type() {
                true => column.clone(),
                false => arrow::compute::cast(column, &t.data_type())?,
            };
            fields.push(t.field(field.name()));
            columns.push(column);
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// Starts a write straight to disk parts, committed as one version by
    /// [`BulkWrite::commit`]: for loads larger than memory parts may hold
    /// (an `INSERT ... SELECT`). Tags are those of `schema`; no tag is
    /// added until the write ends.
    pub async fn bulk_write(&self, schema: &Schema) -> Result<BulkWrite<'_>> {
        let ctx = |e: Error| self.context(e);
        self.check_open()?;
        self.ensure_tags(schema).await.map_err(ctx)?;
        let writing = self.writers.read().await;
        self.check_open()?;
        // The base's schema holds the tags; a tag added before the commit
        // makes the commit fail (the parts lack its column).
        let base = {
            let _schema = self.schema_lock.lock().await;
            self.table.snapshot().await.map_err(ctx)?
        };
        let writer = self.table.insert_on(base.clone());
        Ok(BulkWrite {
            index: self,
            _writing: writing,
            base,
            writer,
            rows: 0,
        })
    }

    /// Adds the tags of `schema` the table lacks (ALTER TABLE ADD COLUMN,
    /// with their skip indexes) and refuses tags whose type differs.
    async fn ensure_tags(&self, schema: &Schema) -> Result<()> {
        let missing = |known: &Schema| -> Result<Vec<(String, TagType)>> {
            let mut missing = Vec::new();
            for field in schema.fields() {
                if element::is_reserved(field.name()) {
                    continue;
                }
                let t = TagType::of(field.data_type()).ok_or_else(|| {
                    Error::Invalid(format!(
                        "tag '{}' has type {}; a tag is a string, int64, bytes or a list of one",
                        field.name(),
                        field.data_type()
                    ))
                })?;
                match known.field_with_name(field.name()) {
                    Ok(f) if TagType::of(f.data_type()) == Some(t) => {}
                    Ok(f) => {
                        return Err(Error::Invalid(format!(
                            "tag '{}' is {:?}; this write gives it as {t:?}",
                            field.name(),
                            TagType::of(f.data_type())
                                .map_or(f.data_type().to_string(), |t| format!("{t:?}"))
                        )));
                    }
                    Err(_) => missing.push((field.name().clone(), t)),
                }
            }
            Ok(missing)
        };
        if missing(&self.introducer.current().disk.schema)?.is_empty() {
            return Ok(());
        }
        let _schema = self.schema_lock.lock().await;
        let add = missing(&self.table.snapshot().await?.schema)?;
        if !add.is_empty() {
            let changes: Vec<SchemaChange> = add
                .iter()
                .map(|(name, t)| SchemaChange::AddColumn {
                    field: t.field(name),
                    default: None,
                    fill: None,
                })
                .collect();
            self.table.alter_all(&changes).await?;
            let indexes: Vec<(String, SkipSpec)> = add
                .iter()
                .filter_map(|(name, t)| tag_index(*t).map(|spec| (name.clone(), spec)))
                .collect();
            if !indexes.is_empty() {
                self.table.add_skip_indexes(&indexes).await?;
            }
        }
        self.refresh().await
    }

    /// Introduces the table's newest version (a schema change, a merge made
    /// through the table).
    async fn refresh(&self) -> Result<()> {
        let _disk = self.introducer.disk.lock().await;
        let (pin, disk) = self.table.pinned_snapshot().await?;
        self.introducer.introduce_disk(disk, pin, &[]);
        Ok(())
    }

    /// Runs a query over the snapshot of this moment.
    pub async fn query(&self, request: QueryRequest) -> Result<QueryStream> {
        self.check_open()?;
        let started = Instant::now();
        let snapshot = self.introducer.current();
        let stream = query::start(&self.table, &self.session, snapshot, &request)
            .await
            .map_err(|e| self.context(e))?;
        self.counters.queried(started.elapsed());
        Ok(stream)
    }

    /// Persists every memory part as one committed table version; returns
    /// the elements flushed. A failure leaves the memory parts in place
    /// (and visible); a crash before the commit leaves the table as it was.
    /// The flush runs to its end even if the caller stops waiting.
    pub async fn flush(self: &Arc<Self>) -> Result<u64> {
        let index = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn(async move { index.flush_now().await })
                .await
                .map_err(|e| self.context(Error::Table(format!("the flush task failed: {e}"))))?,
            Err(_) => index.flush_now().await,
        }
    }

    async fn flush_now(&self) -> Result<u64> {
        let _flush = self.flush_lock.lock().await;
        if self.poisoned.load(Ordering::SeqCst) {
            return self.check_open().map(|_| 0);
        }
        let started = Instant::now();
        let memory = self.introducer.current().memory.clone();
        if memory.is_empty() {
            return Ok(0);
        }
        let ctx = |e: Error| self.context(e.context("flush"));
        // No tag is added while the parts are written against the schema.
        let _schema = self.schema_lock.lock().await;
        let base = self.table.snapshot().await.map_err(ctx)?;
        let mut writer = self.table.insert_on(base.clone());
        let mut rows = 0u64;
        for part in memory.iter() {
            writer
                .write(conform(&part.batch, &base.schema)?)
                .await
                .map_err(ctx)?;
            rows += part.rows() as u64;
        }
        writer.flush_all().await.map_err(ctx)?;
        let names = writer.part_names();
        let _disk = self.introducer.disk.lock().await;
        if let Err(e) = writer.commit().await
            && self.landed(&names, &e).await.is_err()
        {
            return Err(ctx(e));
        }
        // From the commit on, nothing may fail before the memory parts
        // give way to the version holding their rows: no I/O here.
        let disk = self.table.cached_snapshot();
        let pin = self.table.pin(disk.version);
        let flushed: Vec<u64> = memory.iter().map(|m| m.id).collect();
        self.introducer.introduce_disk(disk, pin, &flushed);
        self.budget
            .release(memory.iter().map(|m| m.bytes).sum::<usize>());
        self.counters.flushed(rows, started.elapsed());
        Ok(rows)
    }

    /// After a flush's commit reported `error`: `Ok` if its parts `names`
    /// are in the newest version all the same (the write landed, its reply
    /// was lost), `Err` if not. When that cannot be known (the commit's
    /// outcome is unknown and the log cannot be read), the index fails:
    /// its memory parts can be neither kept (their rows may be on disk) nor
    /// dropped (they may not); a reopen finds the committed state.
    async fn landed(&self, names: &[String], error: &Error) -> Result<()> {
        match self.table.snapshot().await {
            Ok(now) if names.iter().all(|n| now.parts.iter().any(|p| &p.name == n)) => Ok(()),
            Ok(_) => Err(Error::Table("not committed".into())),
            Err(e) if error.is_unknown_outcome() => {
                self.fail();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Refuses all further work (see `landed`), lets waiting writes fail,
    /// and leaves the location to a new opening.
    fn fail(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
        self.budget.fail();
        self.unregister();
    }

    /// Removes this index from the process's registry (only itself).
    fn unregister(&self) {
        let key = location_key(self.table.storage());
        let mut registry = crate::sync::lock(registry());
        let ours = registry
            .get(&key)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), self as *const Sidx));
        if ours {
            registry.remove(&key);
        }
    }

    /// Merges disk parts into one and commits the replacement atomically;
    /// with `keep`, elements whose data it rejects are dropped. Readers of
    /// the previous snapshot finish on the parts they started with.
    pub async fn merge(&self, request: MergeRequest) -> Result<MergeOutcome> {
        self.check_open()?;
        let _merge = self.merge_lock.lock().await;
        let started = Instant::now();
        let ctx = |e: Error| self.context(e.context("merge"));
        let (_pin, base) = self.table.pinned_snapshot().await.map_err(ctx)?;
        let mut outcome = MergeOutcome {
            parts_before: base.parts.len(),
            ..Default::default()
        };
        let names: Vec<String> = match &request.parts {
            MergeSelection::All => base.parts.iter().map(|p| p.name.clone()).collect(),
            MergeSelection::Parts(names) => {
                for name in names {
                    if !base.parts.iter().any(|p| &p.name == name) {
                        return Err(ctx(Error::Invalid(format!("no disk part '{name}'"))));
                    }
                }
                names.clone()
            }
            MergeSelection::Policy => {
                crate::table::merge::choose_merge(&base.parts, &base.options.merge)
                    .unwrap_or_default()
            }
        };
        let worth = names.len() > 1 || (request.keep.is_some() && !names.is_empty());
        if worth {
            let sources = crate::table::merge::sources_of(&base, &names);
            let rows_before: u64 = sources.iter().map(|p| p.rows).sum();
            let keep = request.keep.clone().map(|keep| {
                Box::new(move |batch: &RecordBatch| {
                    let data = batch
                        .column_by_name("data")
                        .ok_or_else(|| Error::Table("a merged batch has no data".into()))?
                        .as_binary::<i32>();
                    Ok((0..data.len()).map(|i| Some(keep(data.value(i)))).collect())
                }) as Box<crate::table::merge::KeepRows>
            });
            let merged = self
                .table
                .write_merged(&base, &sources, keep.as_deref())
                .await
                .map_err(ctx)?;
            let rows_after = merged.as_ref().map_or(0, |m| m.rows);
            let _disk = self.introducer.disk.lock().await;
            let committed = self
                .table
                .commit_merged(&sources, merged)
                .await
                .map_err(ctx)?;
            if committed.is_some() {
                outcome.merges = 1;
                outcome.dropped = rows_before - rows_after;
            }
            let (pin, disk) = self.table.pinned_snapshot().await.map_err(ctx)?;
            outcome.parts_after = disk.parts.len();
            self.introducer.introduce_disk(disk, pin, &[]);
        } else {
            outcome.parts_after = outcome.parts_before;
        }
        self.counters.merged(outcome.merges, started.elapsed());
        Ok(outcome)
    }

    /// Refuses later writes and queries through this handle (and every
    /// handle of this process sharing it), lets the writes under way finish
    /// (past the memory bound if they were waiting), flushes, and leaves the
    /// location to a new opening. If the flush fails, the index stays open.
    /// Runs to its end even if the caller stops waiting. A [`BulkWrite`]
    /// must end before its task closes the index.
    pub async fn close(self: &Arc<Self>) -> Result<()> {
        let index = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn(async move { index.close_now().await })
                .await
                .map_err(|e| self.context(Error::Table(format!("the close task failed: {e}"))))?,
            Err(_) => index.close_now().await,
        }
    }

    async fn close_now(self: &Arc<Self>) -> Result<()> {
        // One close at a time: a failing close must not reopen an index
        // another close finished.
        let _closing = self.close_lock.lock().await;
        if self.closed.load(Ordering::SeqCst) && !self.poisoned.load(Ordering::SeqCst) {
            return Ok(());
        }
        if self.poisoned.load(Ordering::SeqCst) {
            self.closed.store(true, Ordering::SeqCst);
            return self.check_open();
        }
        self.closed.store(true, Ordering::SeqCst);
        self.budget.open_gate();
        drop(self.writers.write().await);
        if let Err(e) = self.flush_now().await {
            self.budget.close_gate();
            self.closed.store(false, Ordering::SeqCst);
            return Err(e);
        }
        self.unregister();
        Ok(())
    }

    /// The index's numbers now.
    pub async fn stats(&self) -> Result<Stats> {
        let snapshot = self.introducer.current();
        let indexes = self
            .table
            .part_indexes(&snapshot.disk)
            .await
            .map_err(|e| self.context(e))?;
        Ok(stats::collect(
            &snapshot,
            &indexes,
            &self.counters,
            self.budget.used(),
            self.budget.waits.load(Ordering::Relaxed),
        ))
    }
}

/// The tags of an index schema.
fn tags_of(schema: &Schema) -> Vec<(String, TagType)> {
    schema
        .fields()
        .iter()
        .filter(|f| !element::is_reserved(f.name()))
        .filter_map(|f| TagType::of(f.data_type()).map(|t| (f.name().clone(), t)))
        .collect()
}

/// `batch` (a memory part's columns) as `schema`: tags it lacks are NULL.
fn conform(batch: &RecordBatch, schema: &Arc<Schema>) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The largest write sequence number in the table's parts (0: none).
async fn max_seq(table: &Table, disk: &crate::table::Snapshot) -> Result<u64> {
    let indexes = table.part_indexes(disk).await?;
    let mut max = 0;
    for index in indexes {
        let Some(at) = index.column_position("_seq") else {
            continue;
        };
        let column = index.max(at);
        if column.data_type() != &DataType::UInt64 {
            continue;
        }
        let values = column.as_primitive::<UInt64Type>();
        if let Some(m) = arrow::compute::max(values) {
            max = max.max(m);
        }
    }
    Ok(max)
}

/// A write straight to disk parts (see [`Sidx::bulk_write`]): nothing is
/// visible until [`Self::commit`]; dropped uncommitted, nothing is written.
pub struct BulkWrite<'a> {
    index: &'a Sidx,
    _writing: tokio::sync::RwLockReadGuard<'a, ()>,
    base: Arc<crate::table::Snapshot>,
    writer: crate::table::InsertWriter,
    rows: u64,
}

impl BulkWrite<'_> {
    /// Adds a batch (columns as [`Sidx::write_batch`] takes them, tags
    /// among those the write started with).
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let index = self.index;
        let ctx = |e: Error| index.context(e);
        element::validate(&batch).map_err(ctx)?;
        for field in batch.schema().fields() {
            let known = self.base.schema.field_with_name(field.name());
            if known.ok().map(|f| TagType::of(f.data_type()))
                != Some(TagType::of(field.data_type()))
            {
                return Err(ctx(Error::Invalid(format!(
                    "tag '{}' ({}) is not one this write started with",
                    field.name(),
                    field.data_type()
                ))));
            }
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let stored = index.stored(&batch).map_err(ctx)?;
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(conform(&stored, &self.base.schema)?)
            .await
            .map_err(ctx)
    }

    /// Commits every element written as one version; returns their number.
    pub async fn commit(mut self) -> Result<u64> {
        let index = self.index;
        let ctx = |e: Error| index.context(e);
        self.writer.flush_all().await.map_err(ctx)?;
        let _disk = index.introducer.disk.lock().await;
        // No memory part holds these rows: a commit that landed unseen is
        // introduced by the next change, never twice.
        self.writer.commit().await.map_err(ctx)?;
        let disk = index.table.cached_snapshot();
        let pin = index.table.pin(disk.version);
        index.introducer.introduce_disk(disk, pin, &[]);
        index.counters.written(self.rows);
        Ok(self.rows)
    }
}
