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
use super::deletes::mask_path;
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
    /// Part directory name or mask file path → version that replaced it.
    pub entries: HashMap<String, u64>,
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
    /// `version`) no longer references: readers of older versions may
    /// still need them.
    pub(crate) fn retire_replaced(
        &self,
        base: &super::Snapshot,
        next: &[super::PartEntry],
        version: u64,
    ) {
        let kept: HashSet<(&str, Option<&str>)> = next
            .iter()
            .map(|p| (p.name.as_str(), p.deletes.as_ref().map(|d| d.file.as_str())))
            .collect();
        let names: HashSet<&str> = next.iter().map(|p| p.name.as_str()).collect();
        let mut retired = crate::sync::lock(&self.retired);
        for p in &base.parts {
            let mask = p.deletes.as_ref().map(|d| d.file.as_str());
            if kept.contains(&(p.name.as_str(), mask)) {
                continue;
            }
            let mut gone = Vec::new();
            if let Some(file) = mask {
                gone.push(mask_path(&p.name, file));
            }
            if !names.contains(p.name.as_str()) {
                gone.push(p.name.clone());
            }
            // The clock of `old_parts_lifetime` starts when a cleanup first
            // sees the file unreferenced, not here: this may be an attempt
            // that loses its commit.
            for name in gone {
                retired.entries.insert(name, version);
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

    /// Forgets cached indexes, masks and skip indexes of deleted files, so a
    /// long-running process does not keep every merged-away part in memory.
    fn evict(&self, files: &[String], parts: &[String]) {
        if files.is_empty() && parts.is_empty() {
            return;
        }
        let storage = self.storage();
        let prefixes: Vec<String> = files
            .iter()
            .map(|file| format!("{}#", storage.cache_key(file)))
            .chain(
                parts
                    .iter()
                    .map(|part| format!("{}/", storage.cache_key(&crate::part::part_dir(part)))),
            )
            .collect();
        storage.cache().remove_prefixes(&prefixes);
    }

    /// Deletes files this process wrote for a change that was not committed.
    /// Failures are left for [`Table::collect_garbage`].
    pub(crate) async fn delete_files(&self, files: Vec<String>, parts: &[super::PartEntry]) {
        for f in files {
            let _ = self.storage().delete(&f).await;
        }
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
    pub async fn collect_garbage_when_due(&self) -> Result<usize> {
        let options = &self.cached_snapshot().options;
        let lifetime_ms = (options.old_parts_lifetime as i64)
            .saturating_mul(1000)
            .min(BACKGROUND_CLEANUP_PERIOD_MS);
        let now = now_ms();
        let last = self.last_cleanup_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= lifetime_ms {
            self.last_cleanup_ms.store(now, Ordering::Relaxed);
            return self.collect_garbage().await;
        }
        let retention_ms = (options.log_retention as i64).saturating_mul(1000);
        self.clean_log(retention_ms, self.oldest_pin()).await
    }

    /// Deletes unreferenced files that no reader can need any more: replaced
    /// ones whose readers in this process are gone, anything unreferenced
    /// for longer than `old_parts_lifetime`, and log files older than the
    /// second newest checkpoint and `log_retention`. Returns the number of
    /// files deleted.
    pub async fn collect_garbage(&self) -> Result<usize> {
        // The order matters. A file listed here was written by a writer that
        // had registered it as in flight; if it is no longer in flight when
        // the set is copied, its commit (if any) is in the snapshot read
        // after that. So nothing committed or being written is deleted.
        let mut dirs: BTreeMap<String, (Vec<String>, i64)> = BTreeMap::new();
        for f in self.storage().list("parts").await? {
            let Some(part) = f.name.split('/').nth(1) else {
                continue;
            };
            let entry = dirs.entry(part.to_string()).or_default();
            entry.0.push(f.name.clone());
            entry.1 = entry.1.max(f.modified_ms);
        }
        let inflight = crate::sync::lock(&self.inflight).clone();
        let snapshot = self.snapshot().await?;
        let oldest_pin = self.oldest_pin();

        let lifetime_ms = i64::try_from(snapshot.options.old_parts_lifetime)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .unwrap_or(i64::MAX);
        let now = now_ms();
        let mut referenced: HashSet<String> = HashSet::new();
        for p in &snapshot.parts {
            referenced.insert(p.name.clone());
            if let Some(d) = &p.deletes {
                referenced.insert(mask_path(&p.name, &d.file));
            }
        }
        let protected = |name: &str| {
            let retired = crate::sync::lock(&self.retired);
            retired
                .entries
                .get(name)
                .is_some_and(|&at| oldest_pin.is_some_and(|pin| pin < at))
        };
        // Old enough: the files were written, and this handle has known them
        // unreferenced, at least `old_parts_lifetime` ago. The second clock
        // protects readers in other processes of parts replaced just now.
        let mut since = crate::sync::lock(&self.unreferenced_since).clone();
        let mut old = |name: &str, modified: i64| {
            let first_seen = *since.entry(name.to_string()).or_insert(now);
            now.saturating_sub(modified) >= lifetime_ms
                && now.saturating_sub(first_seen) >= lifetime_ms
        };
        let mut deleted = Vec::new(); // file paths
        let mut deleted_parts = Vec::new();
        for (part, (files, newest)) in dirs {
            if inflight.contains(&part) {
                continue;
            }
            if referenced.contains(&part) {
                // A live part: only superseded deletion masks can go.
                for f in files {
                    let is_mask = f.rsplit('/').next().is_some_and(|n| n.starts_with("del_"));
                    let keep = referenced.contains(&f) || inflight.contains(&f) || protected(&f);
                    if is_mask && !keep && old(&f, newest) {
                        self.storage().delete(&f).await?;
                        deleted.push(f);
                    }
                }
            } else if !protected(&part) && old(&part, newest) {
                for f in &files {
                    self.storage().delete(f).await?;
                }
                self.storage()
                    .remove_empty_dir(&crate::part::part_dir(&part))
                    .await?;
                deleted.extend(files);
                deleted_parts.push(part);
            }
        }
        {
            let mut retired = crate::sync::lock(&self.retired);
            for name in deleted.iter().chain(&deleted_parts) {
                retired.entries.remove(name);
                since.remove(name);
            }
        }
        self.evict(&deleted, &deleted_parts);
        // Remembered first sightings, minus what is gone or referenced again.
        since.retain(|name, _| !referenced.contains(name));
        *crate::sync::lock(&self.unreferenced_since) = since;
        let retention_ms = (snapshot.options.log_retention as i64).saturating_mul(1000);
        let log_files = self.clean_log(retention_ms, oldest_pin).await?;
        Ok(deleted.len() + log_files)
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
