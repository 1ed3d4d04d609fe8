//! Garbage: files no version references any more (parts replaced by merges,
//! superseded deletion masks, leftovers of writers that died).
//!
//! A reader in this process pins its snapshot's version; a replaced file is
//! deleted only once no pin older than its replacement remains and it has
//! been unreferenced for `old_parts_lifetime` seconds, the grace period that
//! protects readers in other processes, which this one cannot see. Part
//! files an insert of this process is still writing are never touched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::Table;
use super::log::now_ms;
use crate::error::Result;

/// The longest a background cleanup waits after the one before it (ms).
pub const BACKGROUND_CLEANUP_PERIOD_MS: i64 = 10_000;

/// Versions pinned by live readers, with reference counts.
pub(crate) type Pins = Arc<Mutex<BTreeMap<u64, usize>>>;

/// Keeps the files of one version alive while a reader uses it.
#[derive(Debug)]
pub struct SnapshotPin {
    pins: Pins,
    version: u64,
}

impl Drop for SnapshotPin {
    fn drop(&mut self) {
        let mut pins = crate::sync::lock(&self.pins);
        if let Some(count) = pins.get_mut(&self.version) {
            *count -= 1;
            if *count == 0 {
                pins.remove(&self.version);
            }
        }
    }
}

/// Names this process is writing, released when the guard drops: after the
/// commit, or on any error path, so cleanup can take abandoned files.
pub(crate) struct InFlight<'a> {
    table: &'a Table,
    names: Vec<String>,
}

impl<'a> InFlight<'a> {
    pub(crate) fn new(table: &'a Table) -> Self {
        InFlight {
            table,
            names: Vec::new(),
        }
    }

    /// Registers a name before its first byte is written.
    pub(crate) fn begin(&mut self, name: String) {
        self.table.begin_write(&name);
        self.names.push(name);
    }

    /// Takes over names registered elsewhere (parts of an insert writer).
    pub(crate) fn adopt(&mut self, names: impl IntoIterator<Item = String>) {
        self.names.extend(names);
    }

    /// Hands the names on still registered (to a guard that `adopt`s them
    /// with no await in between).
    pub(crate) fn keep(mut self) {
        self.names.clear();
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.table.end_writes(&self.names);
    }
}

/// Files replaced at some version, waiting for their readers.
#[derive(Debug, Default)]
pub(crate) struct Retired {
    /// [`tier_key`] of a part directory or mask file → version that
    /// replaced it.
    pub entries: HashMap<String, u64>,
}

/// Names a part directory or mask file in one tier: its path from the
/// tier's root (`parts/<name>`, `moved/<id>/parts/<name>/del_...`),
/// prefixed by the location outside the table's own directory. A move's
/// directory is unique wherever it lies, so its path alone names it: a
/// location reached under two spellings (a path and its `file://` URL)
/// can never see the other's live parts as garbage.
pub(crate) fn tier_key(location: Option<&str>, path: &str) -> String {
    let moved = path.starts_with(&format!("{}/", super::log::MOVED_DIR));
    match location {
        Some(location) if !moved => format!("{location}|{path}"),
        _ => path.to_string(),
    }
}

/// The directory of the part a file listed under a tier's root belongs to
/// (`parts/<name>` or `moved/<id>/parts/<name>`), if any.
fn part_dir_of(file: &str) -> Option<&str> {
    let segments = match file.starts_with(&format!("{}/", super::log::MOVED_DIR)) {
        true => 4,
        false => 2,
    };
    let mut end = 0;
    for (i, segment) in file.split('/').enumerate() {
        if i == segments {
            return Some(&file[..end - 1]);
        }
        end += segment.len() + 1;
    }
    None
}

/// The longest the cold tiers go uncleaned while the table is busy (ms):
/// cleaning lists the cold location, a request per thousand files.
pub const COLD_CLEANUP_PERIOD_MS: i64 = 300_000;

/// What one tier's cleanup deleted.
#[derive(Default)]
struct Deleted {
    /// File paths and part directories, from the tier's root.
    files: Vec<String>,
    parts: Vec<String>,
    /// Their tier keys.
    keys: Vec<String>,
}

impl Table {
    /// Pins the version this handle last saw, then returns the newest
    /// snapshot: files of that snapshot cannot be deleted (replacements of
    /// them come after the pinned version) until the guard is dropped.
    pub async fn pinned_snapshot(&self) -> Result<(SnapshotPin, Arc<super::Snapshot>)> {
        let pin = self.pin(self.cached_snapshot().version);
        Ok((pin, self.snapshot().await?))
    }

    /// Pins `version` until the returned guard is dropped.
    pub fn pin(&self, version: u64) -> SnapshotPin {
        *crate::sync::lock(&self.pins).entry(version).or_default() += 1;
        SnapshotPin {
            pins: self.pins.clone(),
            version,
        }
    }

    fn oldest_pin(&self) -> Option<u64> {
        crate::sync::lock(&self.pins).keys().next().copied()
    }

    /// Records the parts and masks of `base` that `next` (committed as
    /// `version`) no longer references, in the tier each was in: readers
    /// of older versions may still need them.
    pub(crate) fn retire_replaced(
        &self,
        base: &super::Snapshot,
        next: &[super::PartEntry],
        version: u64,
    ) {
        let kept = referenced_keys(next);
        let mut retired = crate::sync::lock(&self.retired);
        for p in &base.parts {
            let location = p.location.as_deref();
            let dir = p.dir_path();
            let mut gone = vec![dir.clone()];
            if let Some(d) = &p.deletes {
                gone.push(format!("{dir}/{}", d.file));
            }
            // The clock of `old_parts_lifetime` starts when a cleanup first
            // sees the file unreferenced, not here: this may be an attempt
            // that loses its commit.
            for path in gone {
                let key = tier_key(location, &path);
                if !kept.contains(&key) {
                    retired.entries.insert(key, version);
                }
            }
        }
    }

    /// Marks part names (or mask file paths) as being written by this process.
    pub(crate) fn begin_write(&self, part: &str) {
        crate::sync::lock(&self.inflight).insert(part.to_string());
    }

    pub(crate) fn end_writes<'a>(&self, parts: impl IntoIterator<Item = &'a String>) {
        let mut inflight = crate::sync::lock(&self.inflight);
        for p in parts {
            inflight.remove(p);
        }
    }

    /// Forgets cached indexes, masks and skip indexes of files and part
    /// directories (paths from the tier's root) deleted from `storage`, so
    /// a long-running process does not keep every merged-away part in
    /// memory.
    fn evict(storage: &crate::storage::Storage, files: &[String], parts: &[String]) {
        if files.is_empty() && parts.is_empty() {
            return;
        }
        let prefixes: Vec<String> = files
            .iter()
            .map(|file| format!("{}#", storage.cache_key(file)))
            .chain(
                parts
                    .iter()
                    .map(|dir| format!("{}/", storage.cache_key(dir))),
            )
            .collect();
        storage.cache().remove_prefixes(&prefixes);
    }

    /// Deletes parts this process wrote (locally) for a change that was not
    /// committed. Failures are left for [`Table::collect_garbage`].
    pub(crate) async fn delete_parts(&self, parts: &[super::PartEntry]) {
        for p in parts {
            let _ = self.delete_part_files(&p.name).await;
        }
    }

    async fn delete_part_files(&self, part: &str) -> Result<()> {
        let dir = crate::part::part_dir(part);
        for f in self.storage().list(&dir).await? {
            self.storage().delete(&f.name).await?;
        }
        self.storage().remove_empty_dir(&dir).await
    }

    /// Cleanup after a background merge. The log is cleaned when that can
    /// delete something (see [`Table::clean_log`]); part directories at
    /// once for a table that keeps replaced parts no time, else at most
    /// every [`BACKGROUND_CLEANUP_PERIOD_MS`] (or `old_parts_lifetime`, if
    /// shorter). That cleanup lists every file of every part directory,
    /// the replaced parts kept for their lifetime included: after every
    /// merge of a table taking many small inserts, the listing grew with
    /// the parts awaiting deletion (ClickHouse cleans on a timer too).
    /// Cold tiers are cleaned at most every [`COLD_CLEANUP_PERIOD_MS`].
    pub async fn collect_garbage_when_due(&self) -> Result<usize> {
        let options = &self.cached_snapshot().options;
        let lifetime_ms = (options.old_parts_lifetime as i64)
            .saturating_mul(1000)
            .min(BACKGROUND_CLEANUP_PERIOD_MS);
        let now = now_ms();
        let last = self.last_cleanup_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= lifetime_ms {
            self.last_cleanup_ms.store(now, Ordering::Relaxed);
            let last_cold = self.last_cold_cleanup_ms.load(Ordering::Relaxed);
            let cold = now.saturating_sub(last_cold) >= COLD_CLEANUP_PERIOD_MS;
            return self.collect_garbage_in(cold).await;
        }
        let retention_ms = (options.log_retention as i64).saturating_mul(1000);
        self.clean_log(retention_ms, self.oldest_pin()).await
    }

    /// Deletes unreferenced files that no reader can need any more: replaced
    /// ones whose readers in this process are gone, anything unreferenced
    /// for longer than `old_parts_lifetime`, and log files older than the
    /// second newest checkpoint and `log_retention`; in the table's own
    /// directory and in every cold location this handle can reach (a
    /// failure there is logged, not returned: the local cleanup stands).
    /// Returns the number of files deleted.
    pub async fn collect_garbage(&self) -> Result<usize> {
        self.collect_garbage_in(true).await
    }

    async fn collect_garbage_in(&self, cold: bool) -> Result<usize> {
        // The order matters. A file listed here was written by a writer that
        // had registered it as in flight; if it is no longer in flight when
        // the set is copied, its commit (if any) is in the snapshot read
        // after that. So nothing committed or being written is deleted.
        // Moves into the table's directory need a table with tiers.
        let current = self.cached_snapshot();
        let tiered = current.options.tiers.cold_location.is_some()
            || current.parts.iter().any(|p| p.dir.is_some());
        let local = list_parts(self.storage(), true, tiered).await?;
        let mut tiers = Vec::new();
        if cold {
            self.last_cold_cleanup_ms.store(now_ms(), Ordering::Relaxed);
            for (location, storage, reader) in self.cold_tiers().await {
                match list_parts(&storage, false, true).await {
                    Ok(files) => tiers.push((location, storage, reader, files)),
                    Err(e) => ::log::warn!(
                        "table '{}': cleanup of cold location '{location}' skipped: {e}",
                        self.name()
                    ),
                }
            }
        }
        let inflight = crate::sync::lock(&self.inflight).clone();
        let snapshot = self.snapshot().await?;
        let mut since = crate::sync::lock(&self.unreferenced_since).clone();
        let mut sweep = Sweep {
            table: self,
            inflight: &inflight,
            snapshot: &snapshot,
            oldest_pin: self.oldest_pin(),
            lifetime_ms: i64::try_from(snapshot.options.old_parts_lifetime)
                .ok()
                .and_then(|s| s.checked_mul(1000))
                .unwrap_or(i64::MAX),
            now: now_ms(),
            since: &mut since,
        };
        let deleted = sweep
            .tier(self.storage(), self.storage(), None, local)
            .await?;
        let mut count = deleted.files.len();
        let mut keys = deleted.keys;
        for (location, storage, reader, files) in tiers {
            match sweep.tier(&storage, &reader, Some(&location), files).await {
                Ok(deleted) => {
                    count += deleted.files.len();
                    keys.extend(deleted.keys);
                }
                Err(e) => ::log::warn!(
                    "table '{}': cleanup of cold location '{location}' failed: {e}",
                    self.name()
                ),
            }
        }
        {
            let mut retired = crate::sync::lock(&self.retired);
            for key in &keys {
                retired.entries.remove(key);
                since.remove(key);
            }
        }
        // Remembered first sightings, minus what is referenced again.
        let referenced = referenced_keys(&snapshot.parts);
        since.retain(|key, _| !referenced.contains(key));
        *crate::sync::lock(&self.unreferenced_since) = since;
        let retention_ms = (snapshot.options.log_retention as i64).saturating_mul(1000);
        let log_files = self.clean_log(retention_ms, self.oldest_pin()).await?;
        Ok(count + log_files)
    }

    /// Cleans the log when that can delete something: a checkpoint landed
    /// since the last cleanup, or a file it kept for its age has aged out.
    /// Listing the log costs a call per file (a `stat` each, locally), and
    /// with the default retention an hour of commits stays: listing it
    /// after every merge made inserts slower as the log grew.
    async fn clean_log(&self, retention_ms: i64, oldest_pin: Option<u64>) -> Result<usize> {
        let pointer = super::log::read_pointer(self.storage()).await?;
        let last = *crate::sync::lock(&self.log_cleanup);
        let due = match last {
            None => true,
            Some((checkpoint, cleaned)) => {
                checkpoint != pointer || cleaned.next_due_ms.is_some_and(|t| now_ms() >= t)
            }
        };
        if !due {
            return Ok(0);
        }
        let cleaned = super::log::clean(self.storage(), retention_ms, oldest_pin).await?;
        *crate::sync::lock(&self.log_cleanup) = Some((pointer, cleaned));
        Ok(cleaned.deleted)
    }
}

/// The files under a tier's root that belong to parts: `parts/` (written
/// by inserts and merges, in the table's own directory only) and, with
/// `moved`, `moved/` (written by moves).
async fn list_parts(
    storage: &crate::storage::Storage,
    root: bool,
    moved: bool,
) -> Result<Vec<crate::storage::FileInfo>> {
    let mut files = match root {
        true => storage.list("parts").await?,
        false => Vec::new(),
    };
    if moved {
        files.extend(storage.list(super::log::MOVED_DIR).await?);
    }
    Ok(files)
}

/// The tier keys of every part directory and mask file `parts` name.
fn referenced_keys(parts: &[super::PartEntry]) -> HashSet<String> {
    let mut referenced = HashSet::new();
    for p in parts {
        let location = p.location.as_deref();
        let dir = p.dir_path();
        if let Some(d) = &p.deletes {
            referenced.insert(tier_key(location, &format!("{dir}/{}", d.file)));
        }
        referenced.insert(tier_key(location, &dir));
    }
    referenced
}

/// One cleanup's view, applied to each tier in turn.
struct Sweep<'a> {
    table: &'a Table,
    inflight: &'a HashSet<String>,
    snapshot: &'a super::Snapshot,
    oldest_pin: Option<u64>,
    lifetime_ms: i64,
    now: i64,
    /// When this handle first saw each unreferenced file (by tier key).
    since: &'a mut HashMap<String, i64>,
}

impl Sweep<'_> {
    /// Whether a reader of a pinned version may still need the file.
    fn protected(&self, key: &str) -> bool {
        let retired = crate::sync::lock(&self.table.retired);
        retired
            .entries
            .get(key)
            .is_some_and(|&at| self.oldest_pin.is_some_and(|pin| pin < at))
    }

    /// Old enough: the files were written, and this handle has known them
    /// unreferenced, at least `old_parts_lifetime` ago. The second clock
    /// protects readers in other processes of parts replaced just now.
    fn old(&mut self, key: &str, modified: i64) -> bool {
        let first_seen = *self.since.entry(key.to_string()).or_insert(self.now);
        self.now.saturating_sub(modified) >= self.lifetime_ms
            && self.now.saturating_sub(first_seen) >= self.lifetime_ms
    }

    /// Deletes what is garbage among `files` (the listing of `parts/` and
    /// `moved/` of the tier at `location`, `None` for the table's own
    /// directory, through `storage`); forgets what `reader` cached of it.
    async fn tier(
        &mut self,
        storage: &crate::storage::Storage,
        reader: &crate::storage::Storage,
        location: Option<&str>,
        files: Vec<crate::storage::FileInfo>,
    ) -> Result<Deleted> {
        let mut dirs: BTreeMap<String, (Vec<String>, i64)> = BTreeMap::new();
        for f in files {
            let Some(dir) = part_dir_of(&f.name) else {
                continue;
            };
            let entry = dirs.entry(dir.to_string()).or_default();
            entry.0.push(f.name.clone());
            entry.1 = entry.1.max(f.modified_ms);
        }
        let referenced = referenced_keys(&self.snapshot.parts);
        let mut deleted = Deleted::default();
        for (dir, (files, newest)) in dirs {
            // Being written: a part an insert or merge writes (by name), a
            // move's fresh copy (by directory).
            let name = dir.rsplit('/').next().unwrap_or(&dir);
            if self.inflight.contains(name) || self.inflight.contains(&dir) {
                continue;
            }
            let dir_key = tier_key(location, &dir);
            if referenced.contains(&dir_key) {
                // A live part: only superseded deletion masks can go.
                for f in files {
                    let key = tier_key(location, &f);
                    let is_mask = f.rsplit('/').next().is_some_and(|n| n.starts_with("del_"));
                    let keep = referenced.contains(&key)
                        || self.inflight.contains(&f)
                        || self.protected(&key);
                    if is_mask && !keep && self.old(&key, newest) {
                        storage.delete(&f).await?;
                        deleted.keys.push(key);
                        deleted.files.push(f);
                    }
                }
            } else if !self.protected(&dir_key) && self.old(&dir_key, newest) {
                for f in &files {
                    storage.delete(f).await?;
                }
                storage.remove_empty_dir(&dir).await?;
                if let Some((moved, _)) = dir.rsplit_once("/parts/") {
                    storage.remove_empty_dir(&format!("{moved}/parts")).await?;
                    storage.remove_empty_dir(moved).await?;
                }
                deleted
                    .keys
                    .extend(files.iter().map(|f| tier_key(location, f)));
                deleted.keys.push(dir_key);
                deleted.files.extend(files);
                deleted.parts.push(dir);
            }
        }
        Table::evict(reader, &deleted.files, &deleted.parts);
        Ok(deleted)
    }
}
