//! Tiers: where a part's files live. New parts are written to the table's
//! own directory (the hot tier, on local disk); old ones move to the
//! table's cold location (object storage) by policy or by hand, and back.
//! A part entry's `location` names the cold location a part lives at
//! (`None`: the table's own directory) and its `dir` the directory there
//! holding its `parts/<name>/`; [`Table::storage_for`] resolves both.
//!
//! A move copies the part's files (its index, column files, components
//! and current deletion mask, as its index lists them) into a fresh
//! directory of the target tier, `moved/<id>/`, reads each back and
//! compares it with what was sent, commits the entry there, and leaves the
//! old copy to cleanup, which deletes it once readers of older versions
//! are done with it. The fresh directory is written by this move only:
//! no older copy of the part, no cleanup and no other mover can touch it
//! until it is committed. A crash or an error at any step loses nothing:
//! until the commit the old copy is the live one and the new one garbage
//! that cleanup finds by listing the target's `moved/`; after it, the
//! reverse. Large files go up as multipart uploads (retried by the store's
//! client, aborted on failure).
//!
//! A cold location belongs to one table: the first move writes a marker,
//! `_diagon_table`, naming the table's own directory, and moves and
//! cleanup refuse a location whose marker names another, or that overlaps
//! the table's own directory.
//!
//! Writes never go to the cold tier directly: inserts and merges write
//! local parts (merges take hot parts only), so an unreachable store never
//! blocks ingestion. A `DELETE` touching a cold part writes its new mask
//! beside it, in the cold location.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arrow::array::{Array, Int64Array};
use arrow::datatypes::{DataType, TimeUnit};
use xxhash_rust::xxh64::Xxh64;

use super::gc::InFlight;
use super::log::{MOVED_DIR, now_ms};
use super::options::TierOptions;
use super::{PartEntry, Snapshot, Table};
use crate::error::{Error, Result};
use crate::part::index::INDEX_FILE;
use crate::part::{PartIndex, part_dir};
use crate::storage::Storage;
use crate::storage::disk_cache::DiskCache;

/// Where a part lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The table's own directory (local disk).
    Hot,
    /// The table's cold location (object storage).
    Cold,
}

impl Tier {
    pub fn of(entry: &PartEntry) -> Tier {
        match entry.location {
            None => Tier::Hot,
            Some(_) => Tier::Cold,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Cold => "cold",
        }
    }

    /// `hot` or `cold`, any case.
    pub fn parse(value: &str) -> Result<Tier> {
        match value.trim().to_ascii_lowercase().as_str() {
            "hot" => Ok(Tier::Hot),
            "cold" => Ok(Tier::Cold),
            _ => Err(Error::Invalid(format!(
                "'{value}' is not a tier: 'hot' or 'cold'"
            ))),
        }
    }
}

/// What moves did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Parts committed at their new location.
    pub parts: usize,
    /// Bytes of their files copied.
    pub bytes: u64,
}

/// Files are copied in pieces of this size: a move holds one in memory.
const COPY_PIECE: u64 = 8 << 20;

/// The read cache's directory inside a local table's, by default.
pub const CACHE_DIR: &str = "_cache";

/// Bytes read ahead of queries of one cold location, at most.
const READ_AHEAD_BUDGET: u64 = 256 << 20;

/// The marker naming the table a cold location belongs to.
pub const OWNER_FILE: &str = "_diagon_table";

/// Clears a table's scheduled-move flag when dropped.
struct Scheduled(Arc<Table>);

impl Drop for Scheduled {
    fn drop(&mut self) {
        self.0.move_scheduled.store(false, Ordering::SeqCst);
    }
}

/// A cold location as this handle reaches it.
#[derive(Debug, Clone)]
pub(crate) struct ColdStorage {
    /// As attached: for moves and cleanup.
    store: Storage,
    /// Through read-ahead and the local read cache: for queries.
    reader: Storage,
}

/// Where and how much a handle caches of what it reads from cold
/// locations, on local disk (see `storage::disk_cache`). A setting of the
/// machine, not of the table: it is given when a location is attached.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadCache {
    /// The cache's directory; by default `_cache` in the table's own
    /// directory when that is local (else no cache).
    pub dir: Option<std::path::PathBuf>,
    /// Bytes it holds at most (0: no cache).
    pub max_bytes: u64,
}

/// The read cache's bound unless set otherwise.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 1 << 30;

impl Default for ReadCache {
    fn default() -> Self {
        ReadCache {
            dir: None,
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
        }
    }
}

/// How often a table with a move policy checks it, absent other triggers
/// (ms); see [`set_move_check_period`].
static MOVE_CHECK_PERIOD_MS: AtomicU64 = AtomicU64::new(60_000);

/// Sets how often tables with a move policy check it in the background
/// (default one minute): parts age without any write to notice it.
pub fn set_move_check_period(period: Duration) {
    MOVE_CHECK_PERIOD_MS.store(period.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// The parts `options`' policy moves cold now, oldest first: hot parts
/// whose newest row is older than `move_after`, then the oldest others
/// while the hot tier holds more than `move_when_local_bytes_above`.
/// `newest_row_ms` dates each hot part (by its time column or commit).
pub fn choose_moves(
    parts: &[PartEntry],
    newest_row_ms: &HashMap<String, i64>,
    options: &TierOptions,
    now_ms: i64,
) -> Vec<String> {
    if options.cold_location.is_none() {
        return Vec::new();
    }
    let mut hot: Vec<(&PartEntry, i64)> = parts
        .iter()
        .filter(|p| p.location.is_none())
        .map(|p| {
            let newest = newest_row_ms
                .get(&p.name)
                .copied()
                .unwrap_or_else(|| p.newest_commit_ms());
            (p, newest)
        })
        .collect();
    hot.sort_by_key(|(p, newest)| (*newest, p.created_ms));
    let mut local_bytes: u64 = hot.iter().map(|(p, _)| p.bytes).sum();
    let mut chosen = Vec::new();
    for (part, newest) in hot {
        let aged = options.move_after.is_some_and(|after| {
            now_ms.saturating_sub(newest) >= (after as i64).saturating_mul(1000)
        });
        let over = options
            .move_when_local_bytes_above
            .is_some_and(|limit| local_bytes > limit);
        if aged || over {
            chosen.push(part.name.clone());
            local_bytes -= part.bytes;
        }
    }
    chosen
}

/// The newest value of a timestamp or date column of a part, in ms since
/// the epoch, from its granules' max statistics; `None` when the part
/// holds no value of it.
fn newest_value_ms(index: &PartIndex, column: &str) -> Option<i64> {
    let position = index.column_position(column)?;
    let max = index.max(position);
    let as_ms = match max.data_type() {
        DataType::Timestamp(_, _) => arrow::compute::cast(
            &arrow::compute::cast(max, &DataType::Timestamp(TimeUnit::Millisecond, None)).ok()?,
            &DataType::Int64,
        ),
        DataType::Date32 | DataType::Date64 => arrow::compute::cast(
            &arrow::compute::cast(max, &DataType::Date64).ok()?,
            &DataType::Int64,
        ),
        _ => return None,
    }
    .ok()?;
    let values = as_ms.as_any().downcast_ref::<Int64Array>()?;
    arrow::compute::max(values)
}

/// Where `storage` is, spelled one way: a local directory canonical (or,
/// not there yet, with `.` and `..` resolved by name), a URL without
/// trailing `/`.
fn place_of(storage: &Storage) -> String {
    match storage.local_dir() {
        Some(dir) => canonical_path(&dir).display().to_string(),
        None => storage.display().to_string(),
    }
    .trim_end_matches('/')
    .to_string()
}

/// `dir` canonical: its longest existing ancestor resolved (symbolic
/// links included), the rest appended with `.` and `..` resolved by name.
fn canonical_path(dir: &std::path::Path) -> std::path::PathBuf {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut clean = std::path::PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    let mut existing = clean.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(found) = existing.canonicalize() {
            return rest.iter().rev().fold(found, |path, name| path.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return clean,
        }
    }
}

/// Deletes a move's copy that was not committed: its directory is fresh,
/// written by that move only. Failures leave the files to cleanup.
async fn discard_copy(destination: &Storage, part: &str, paths: &[String]) {
    for path in paths {
        let _ = destination.delete(path).await;
    }
    let _ = destination.remove_empty_dir(&part_dir(part)).await;
    let _ = destination.remove_empty_dir("parts").await;
    let _ = destination.remove_empty_dir("").await;
}

/// The files of a part, as its index lists them: names inside the part
/// directory, with their lengths where the index records them.
fn part_files(index: &PartIndex, entry: &PartEntry) -> BTreeMap<String, Option<u64>> {
    let meta = &index.meta;
    let mut files = BTreeMap::new();
    files.insert(INDEX_FILE.to_string(), None);
    for column in &meta.columns {
        files.insert(column.file.clone(), Some(column.file_len));
    }
    for component in &meta.components {
        files.insert(component.file.clone(), Some(component.length));
    }
    for skip in &meta.skip_indexes {
        files.insert(skip.file.clone(), None);
    }
    if let Some(deletes) = &entry.deletes {
        files.insert(deletes.file.clone(), None);
    }
    files
}

/// Copies `path` from `source` to `target` in pieces, then reads what
/// landed back and compares its length and hash with what was read from
/// the source. Returns the bytes copied.
async fn copy_verified(source: &Storage, target: &Storage, path: &str, len: u64) -> Result<u64> {
    let mut sent = Xxh64::new(0);
    let mut writer = target.create(path).await?;
    let mut offset = 0;
    while offset < len {
        let end = (offset + COPY_PIECE).min(len);
        let piece = source.get_range(path, offset..end, len).await?;
        sent.update(&piece);
        writer.write(piece).await?;
        offset = end;
    }
    let written = writer.finish().await?;
    let landed = target.size(path).await?;
    if written != len || landed != Some(len) {
        return Err(Error::store(
            target.location(path),
            format!("copied {len} bytes, {} landed", landed.unwrap_or(0)),
        ));
    }
    let mut received = Xxh64::new(0);
    let mut offset = 0;
    while offset < len {
        let end = (offset + COPY_PIECE).min(len);
        received.update(&target.get_range(path, offset..end, len).await?);
        offset = end;
    }
    if received.digest() != sent.digest() {
        return Err(Error::store(
            target.location(path),
            "the copy differs from the part's file (checksum mismatch)",
        ));
    }
    Ok(len)
}

impl Table {
    /// Lets this handle reach parts at `location` (the table's
    /// `cold_location`, or one parts were moved to before it changed)
    /// through `storage`, with the default read cache.
    pub fn attach_location(&self, location: &str, storage: Storage) {
        self.attach_location_with(location, storage, &ReadCache::default());
    }

    /// Lets this handle reach parts at `location` through `storage`.
    /// Queries read it ahead of need and through the local read cache
    /// `cache`; moves and cleanup use it as given.
    pub fn attach_location_with(&self, location: &str, storage: Storage, cache: &ReadCache) {
        let location = location.trim_end_matches('/').to_string();
        let mut reader = storage.clone();
        let cache_dir = match &cache.dir {
            Some(dir) => Some(dir.clone()),
            None => self.storage().local_dir().map(|d| d.join(CACHE_DIR)),
        };
        if let Some(dir) = cache_dir.filter(|_| cache.max_bytes > 0) {
            match DiskCache::open(&dir, cache.max_bytes) {
                Ok(cache) => reader = reader.with_disk_cache(cache, &location),
                Err(e) => log::warn!(
                    "table '{}': no read cache for '{location}': {e}",
                    self.name()
                ),
            }
        }
        let cold = ColdStorage {
            reader: reader.with_read_ahead(READ_AHEAD_BUDGET),
            store: storage,
        };
        crate::sync::write(&self.locations).insert(location, cold);
    }

    /// Records why `location` was not attached, for the errors of reads
    /// of parts there (an unreachable store, a marker naming another
    /// table): the table opens and serves everything else.
    pub fn refuse_location(&self, location: &str, reason: String) {
        let location = location.trim_end_matches('/').to_string();
        crate::sync::write(&self.refused).insert(location, reason);
    }

    /// Why `location` was not attached, if it was refused.
    pub(crate) fn refusal(&self, location: &str) -> Option<String> {
        crate::sync::read(&self.refused).get(location).cloned()
    }

    /// The storage queries read parts at `location` through, if attached.
    pub(crate) fn location_storage(&self, location: &str) -> Option<Storage> {
        crate::sync::read(&self.locations)
            .get(location)
            .map(|c| c.reader.clone())
    }

    /// The storage of `location` as attached (moves, cleanup).
    fn location_store(&self, location: &str) -> Option<Storage> {
        crate::sync::read(&self.locations)
            .get(location)
            .map(|c| c.store.clone())
    }

    /// Every cold location this handle can reach and that belongs to this
    /// table, with its storage as attached and as queries read it.
    pub(crate) async fn cold_tiers(&self) -> Vec<(String, Storage, Storage)> {
        let attached: Vec<(String, ColdStorage)> = crate::sync::read(&self.locations)
            .iter()
            .map(|(l, c)| (l.clone(), c.clone()))
            .collect();
        let mut tiers = Vec::new();
        for (location, cold) in attached {
            match self.check_owner(&location, &cold.store, false).await {
                Ok(true) => tiers.push((location, cold.store, cold.reader)),
                Ok(false) => {} // nothing moved there yet
                Err(e) => log::warn!("table '{}': {e}", self.name()),
            }
        }
        tiers
    }

    /// Checks that parts may be read from `location` through `storage`
    /// (before attaching it, for a location the log names): its marker
    /// names this table, or it has none and is the table's current cold
    /// location (its first move claims it). A log naming another place
    /// (crafted, or a location claimed by another table since) is refused.
    pub async fn check_location(&self, location: &str, storage: &Storage) -> Result<()> {
        let location = location.trim_end_matches('/');
        let current = self.cached_snapshot().options.tiers.cold_location.clone();
        let owned = self.check_owner(location, storage, false).await?;
        if !owned && current.as_deref() != Some(location) {
            return Err(Error::Table(format!(
                "table '{}': parts are recorded at '{location}', but no marker there names this \
                 table",
                self.name()
            )));
        }
        Ok(())
    }

    /// The identity a cold location's marker holds: the table's own
    /// directory (canonical when local).
    fn identity(&self) -> String {
        place_of(self.storage())
    }

    /// Whether `store` (the cold location `location`) belongs to this
    /// table: its marker names it. With `claim`, a location without a
    /// marker is claimed (before a first move); without, it is `false`.
    /// A location that overlaps the table's own directory, or whose
    /// marker names another table, is an error.
    async fn check_owner(&self, location: &str, store: &Storage, claim: bool) -> Result<bool> {
        let ours = self.identity();
        let theirs = place_of(store);
        let (a, b) = (ours.as_str(), theirs.as_str());
        if a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/")) {
            return Err(Error::Table(format!(
                "cold location '{location}' overlaps the table's own directory '{ours}'; give \
                 the cold tier a location of its own"
            )));
        }
        let owner = match store.get(OWNER_FILE).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() && claim => {
                store.put_if_absent(OWNER_FILE, ours.clone()).await?;
                store.get(OWNER_FILE).await?
            }
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        if owner.as_ref() != ours.as_bytes() {
            return Err(Error::Table(format!(
                "cold location '{location}' belongs to the table at '{}'; give each table a \
                 cold location of its own",
                String::from_utf8_lossy(&owner)
            )));
        }
        Ok(true)
    }

    /// Moves parts to `to`: those named in `names`, or every part not yet
    /// there. A part already there is left alone; a name no live part has
    /// is an error. Parts are moved one at a time, each committed on its
    /// own, so an error keeps the moves before it.
    pub async fn move_parts(self: &Arc<Self>, to: Tier, names: Option<&[String]>) -> Result<Moved> {
        let _moving = self.move_lock.lock().await;
        let (pin, snapshot) = self.pinned_snapshot().await?;
        let entries: Vec<PartEntry> = match names {
            None => snapshot.parts.clone(),
            Some(names) => {
                let mut entries = Vec::with_capacity(names.len());
                for name in names {
                    let entry = snapshot.parts.iter().find(|p| &p.name == name);
                    entries.push(entry.cloned().ok_or_else(|| {
                        Error::Table(format!(
                            "table '{}': no live part '{name}' (see diagon_parts)",
                            self.name()
                        ))
                    })?);
                }
                entries
            }
        };
        let moved = self.move_entries(&snapshot, &entries, to).await;
        drop(pin);
        self.after_moves(moved).await
    }

    /// Applies the table's move policy once; returns what moved.
    pub async fn move_by_policy(self: &Arc<Self>) -> Result<Moved> {
        let _moving = self.move_lock.lock().await;
        let mut total = Moved::default();
        // Until the policy has nothing left: parts inserted while a move
        // ran (whose own triggers found the mover busy) are seen next round.
        loop {
            let (pin, snapshot) = self.pinned_snapshot().await?;
            let entries = self.policy_moves(&snapshot).await?;
            if entries.is_empty() {
                break;
            }
            let moved = self.move_entries(&snapshot, &entries, Tier::Cold).await;
            drop(pin);
            let moved = self.after_moves(moved).await?;
            if moved.parts == 0 {
                break; // every move lost to a concurrent change: next time
            }
            total.parts += moved.parts;
            total.bytes += moved.bytes;
        }
        Ok(total)
    }

    /// The parts of `snapshot` the move policy moves cold now.
    async fn policy_moves(&self, snapshot: &Snapshot) -> Result<Vec<PartEntry>> {
        let tiers = &snapshot.options.tiers;
        if !tiers.has_policy() {
            return Ok(Vec::new());
        }
        let mut dates = HashMap::new();
        if let Some(column) = &tiers.move_time_column {
            for entry in snapshot.parts.iter().filter(|p| p.location.is_none()) {
                let index = self.entry_index(snapshot, entry).await?;
                if let Some(newest) = newest_value_ms(&index, column) {
                    dates.insert(entry.name.clone(), newest);
                }
            }
        }
        let names = choose_moves(&snapshot.parts, &dates, tiers, now_ms());
        Ok(snapshot
            .parts
            .iter()
            .filter(|p| names.contains(&p.name))
            .cloned()
            .collect())
    }

    /// Cleans up after moves (once the mover's own pin is gone, the old
    /// copies of moved parts go now unless older readers remain).
    async fn after_moves(&self, moved: Result<Moved>) -> Result<Moved> {
        if moved.as_ref().is_ok_and(|m| m.parts > 0)
            && let Err(e) = self.collect_garbage().await
        {
            log::warn!("table '{}': cleanup after a move failed: {e}", self.name());
        }
        moved
    }

    async fn move_entries(
        self: &Arc<Self>,
        snapshot: &Snapshot,
        entries: &[PartEntry],
        to: Tier,
    ) -> Result<Moved> {
        let target_location =
            match to {
                Tier::Hot => None,
                Tier::Cold => Some(snapshot.options.tiers.cold_location.clone().ok_or_else(
                    || {
                        Error::Table(format!(
                            "table '{}' has no 'cold_location' to move parts to",
                            self.name()
                        ))
                    },
                )?),
            };
        let mut moved = Moved::default();
        for entry in entries {
            if entry.location == target_location {
                continue;
            }
            if let Some(bytes) = self.move_part(entry, target_location.as_deref()).await? {
                moved.parts += 1;
                moved.bytes += bytes;
            }
        }
        Ok(moved)
    }

    /// Copies `entry`'s files into a fresh directory of `target` (a cold
    /// location, or `None` for the table's own directory), verifies them
    /// and commits the entry there. Returns the bytes copied, or `None`
    /// when a concurrent change of the part (a merge, a DELETE, another
    /// move) won: the copy is then deleted and the part stays as that
    /// change left it.
    async fn move_part(
        self: &Arc<Self>,
        entry: &PartEntry,
        target: Option<&str>,
    ) -> Result<Option<u64>> {
        let ctx = |e: Error| {
            e.context(format!(
                "table '{}', part '{}': move to {}",
                self.name(),
                entry.name,
                target.unwrap_or("the table's directory")
            ))
        };
        let unreachable = |location: &str| {
            ctx(Error::Table(format!(
                "cold location '{location}' is not reachable from this session (register an \
                 object store for it)"
            )))
        };
        // Copies bypass the read cache and read-ahead: they read each byte
        // once, and must read back what landed in the store itself.
        let tier_store = |location: &Option<String>| match location {
            None => Ok(self.storage().clone()),
            Some(location) => self
                .location_store(location)
                .ok_or_else(|| unreachable(location)),
        };
        let source_tier = tier_store(&entry.location)?;
        let source = match &entry.dir {
            None => source_tier,
            Some(dir) => source_tier.at(dir),
        };
        let target_tier = tier_store(&target.map(str::to_string))?;
        if let Some(location) = target {
            self.check_owner(location, &target_tier, true)
                .await
                .map_err(ctx)?;
        }
        let dir = format!("{MOVED_DIR}/m_{}", uuid::Uuid::new_v4().simple());
        let moved = PartEntry {
            location: target.map(str::to_string),
            dir: Some(dir.clone()),
            ..entry.clone()
        };
        let destination = target_tier.at(&dir);
        let index = self.index_at(&source, &entry.name).await.map_err(ctx)?;
        // Protects the copy from cleanup until committed (or discarded).
        let mut in_flight = InFlight::new(self);
        in_flight.begin(moved.dir_path());
        let mut copied_paths = Vec::new();
        let copied = async {
            let mut bytes = 0;
            let part = part_dir(&entry.name);
            for (file, len) in part_files(&index, entry) {
                let path = format!("{part}/{file}");
                let len = match len {
                    Some(len) => len,
                    None => source.size(&path).await?.ok_or_else(|| {
                        Error::corrupt(source.location(&path), "the part's file is missing")
                    })?,
                };
                copied_paths.push(path.clone());
                bytes += copy_verified(&source, &destination, &path, len).await?;
            }
            destination.sync(copied_paths.clone()).await?;
            // As an insert does: a copy that took longer than
            // `old_parts_lifetime` may have met another handle's cleanup.
            for path in &copied_paths {
                if destination.size(path).await?.is_none() {
                    return Err(Error::Table(format!(
                        "'{}' vanished before the move committed (the copy took longer than \
                         old_parts_lifetime and another handle cleaned it up)",
                        destination.location(path)
                    )));
                }
            }
            Ok::<_, Error>(bytes)
        }
        .await;
        let bytes = match copied {
            Ok(bytes) => bytes,
            Err(e) => {
                discard_copy(&destination, &entry.name, &copied_paths).await;
                return Err(ctx(e));
            }
        };
        let committed = self
            .commit_checked("MOVE", |current| {
                let mut parts = current.parts.clone();
                let part = parts.iter_mut().find(|p| *p == entry)?;
                *part = moved.clone();
                Some(parts)
            })
            .await
            .map_err(ctx)?;
        match committed {
            Some(_) => Ok(Some(bytes)),
            None => {
                discard_copy(&destination, &entry.name, &copied_paths).await;
                Ok(None)
            }
        }
    }

    /// Applies the move policy in the background, if the table has one and
    /// a tokio runtime is running; errors are logged (nothing is lost: a
    /// failed move leaves the part where it was).
    pub fn schedule_moves(self: &Arc<Self>) {
        if !self.cached_snapshot().options.tiers.has_policy() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // At most one run waits while one runs: more would only pile up.
        if self.move_scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        let table = self.clone();
        // Cleared however the task ends, even dropped unpolled (a runtime
        // shutting down): else no insert would trigger the policy again.
        let scheduled = Scheduled(table.clone());
        handle.spawn(async move {
            let _moving = table.move_lock.lock().await;
            // Triggers from now on schedule the next run.
            drop(scheduled);
            drop(_moving);
            if let Err(e) = table.move_by_policy().await {
                log::warn!("moving parts of table '{}' failed: {e}", table.name());
            }
        });
    }

    /// Starts checking the move policy periodically (see
    /// [`set_move_check_period`]) until the last handle of the table is
    /// dropped. Once per handle; a no-op for a table without a policy
    /// (a reopen that sets one starts it) or without a tokio runtime.
    pub fn start_mover(self: &Arc<Self>) {
        if !self.cached_snapshot().options.tiers.has_policy() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.mover_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let table: Weak<Table> = Arc::downgrade(self);
        handle.spawn(async move {
            loop {
                let period = MOVE_CHECK_PERIOD_MS.load(Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(period)).await;
                let Some(table) = table.upgrade() else {
                    return;
                };
                if !table.cached_snapshot().options.tiers.has_policy() {
                    continue;
                }
                if let Err(e) = table.move_by_policy().await {
                    log::warn!("moving parts of table '{}' failed: {e}", table.name());
                }
            }
        });
    }
}
