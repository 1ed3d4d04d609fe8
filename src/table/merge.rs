//! Merges: many small parts become fewer large ones, and deleted rows are
//! purged, as in ClickHouse's MergeTree and Lucene's tiered merge policy.
//!
//! The policy groups parts into size tiers (each tier `size_ratio` times the
//! bytes of the one below) and merges `parts_per_merge` parts of a tier once
//! that many have piled up, so every row is rewritten about
//! log_ratio(table / smallest part) times and the part count stays bounded.
//! Parts at or above `max_part_bytes`, and merges that would exceed it, are
//! left alone, except by `diagon_optimize(..., true)`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;

use super::deletes::apply_mask;
use super::log::{PartEntry, now_ms};
use super::options::MergeOptions;
use super::{Snapshot, Table};
use crate::error::Result;

/// Merges that may run at once in this process, across all tables.
static POOL_SIZE: AtomicUsize = AtomicUsize::new(1);
static POOL: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();

/// Sets how many background merges may run at once in this process
/// (default 1). Takes effect if called before the first merge.
pub fn set_background_merge_threads(threads: usize) {
    POOL_SIZE.store(threads.max(1), Ordering::Relaxed);
}

fn pool() -> Arc<tokio::sync::Semaphore> {
    POOL.get_or_init(|| {
        Arc::new(tokio::sync::Semaphore::new(
            POOL_SIZE.load(Ordering::Relaxed),
        ))
    })
    .clone()
}

/// The parts the tiered policy would merge next, if any.
pub fn choose_merge(parts: &[PartEntry], options: &MergeOptions) -> Option<Vec<String>> {
    let floor = options.min_part_bytes.max(1) as f64;
    let ratio = (options.size_ratio as f64).max(2.0);
    let tier = |p: &PartEntry| -> u32 {
        let size = (p.bytes as f64).max(floor);
        ((size / floor).ln() / ratio.ln()).floor() as u32
    };
    let mut candidates: Vec<&PartEntry> = parts
        .iter()
        .filter(|p| p.bytes < options.max_part_bytes)
        .collect();
    candidates.sort_by_key(|p| (tier(p), p.bytes, p.created_ms));
    // The lowest tier with enough parts: small merges first keep the count
    // down cheaply.
    let mut start = 0;
    while start < candidates.len() {
        let t = tier(candidates[start]);
        let end = start
            + candidates[start..]
                .iter()
                .take_while(|p| tier(p) == t)
                .count();
        if end - start >= options.parts_per_merge {
            let mut chosen = Vec::new();
            let mut bytes = 0u64;
            for p in &candidates[start..end] {
                if chosen.len() == options.parts_per_merge
                    || (chosen.len() >= 2 && bytes + p.bytes > options.max_part_bytes)
                {
                    break;
                }
                bytes += p.bytes;
                chosen.push(p.name.clone());
            }
            if chosen.len() >= 2 {
                return Some(chosen);
            }
        }
        start = end;
    }
    None
}

impl Table {
    /// Runs the merge policy until it has nothing to do; returns the number
    /// of merges committed.
    pub async fn merge_by_policy(self: &Arc<Self>) -> Result<usize> {
        let _running = self.merge_lock.lock().await;
        let mut merges = 0;
        loop {
            let (_pin, snapshot) = self.pinned_snapshot().await?;
            let Some(names) = choose_merge(&snapshot.parts, &snapshot.options.merge) else {
                return Ok(merges);
            };
            if self.merge_parts(&snapshot, &names).await?.is_none() {
                return Ok(merges);
            }
            merges += 1;
        }
    }

    /// Merges now: by the policy, or with `full` every part (and every part
    /// with deleted rows) into one. Returns (merges, parts before, parts after).
    pub async fn optimize(self: &Arc<Self>, full: bool) -> Result<(usize, usize, usize)> {
        let before = self.snapshot().await?.parts.len();
        let merges = if full {
            let _running = self.merge_lock.lock().await;
            let (_pin, snapshot) = self.pinned_snapshot().await?;
            let all: Vec<String> = snapshot.parts.iter().map(|p| p.name.clone()).collect();
            let mut needed = all.len() > 1 || snapshot.parts.iter().any(|p| p.deletes.is_some());
            // A part lacking a declared skip index is rewritten to build it.
            for entry in &snapshot.parts {
                let index = self.part_index(&entry.name).await?;
                let missing = snapshot
                    .options
                    .skip_indexes
                    .iter()
                    .filter(|(_, spec)| spec.has_file())
                    .any(|(column, _)| {
                        !index.meta.skip_indexes.iter().any(|s| &s.column == column)
                    });
                needed |= missing;
            }
            match needed && self.merge_parts(&snapshot, &all).await?.is_some() {
                true => 1,
                false => 0,
            }
        } else {
            self.merge_by_policy().await?
        };
        self.collect_garbage().await?;
        let after = self.snapshot().await?.parts.len();
        Ok((merges, before, after))
    }

    /// Starts a policy merge in the background if the table allows it and a
    /// tokio runtime is running; errors are logged, never lost data.
    pub fn schedule_merge(self: &Arc<Self>) {
        let snapshot = self.cached_snapshot();
        if !snapshot.options.merge.background
            || choose_merge(&snapshot.parts, &snapshot.options.merge).is_none()
        {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let table = self.clone();
        handle.spawn(async move {
            let Ok(_permit) = pool().acquire_owned().await else {
                return;
            };
            if let Err(e) = table.merge_by_policy().await {
                log::warn!("background merge of table '{}' failed: {e}", table.name());
            }
            if let Err(e) = table.collect_garbage().await {
                log::warn!("cleanup of table '{}' failed: {e}", table.name());
            }
        });
    }

    /// Merges the parts `names` of `base` into one part (deleted rows
    /// dropped) and commits the replacement. `None` if a concurrent commit
    /// removed or changed one of them first (the merge is then discarded).
    pub async fn merge_parts(
        self: &Arc<Self>,
        base: &Arc<Snapshot>,
        names: &[String],
    ) -> Result<Option<u64>> {
        let sources: Vec<PartEntry> = base
            .parts
            .iter()
            .filter(|p| names.contains(&p.name))
            .cloned()
            .collect();
        let mut batches: Vec<RecordBatch> = Vec::new();
        for entry in &sources {
            let index = self.part_index(&entry.name).await?;
            let mask = self.deletion_mask(entry).await?;
            let whole_part = std::iter::once(0..index.num_granules()).collect::<Vec<_>>();
            for (start, batch) in self.read_part(&index, &whole_part).await? {
                let batch = match &mask {
                    Some(m) => apply_mask(batch, m, start)?,
                    None => batch,
                };
                if batch.num_rows() > 0 {
                    batches.push(batch);
                }
            }
        }
        let level = sources.iter().map(|p| p.level).max().unwrap_or(0) + 1;
        let merged = match batches.is_empty() {
            true => None,
            false => Some(self.write_merged(base, batches, level).await?),
        };
        let mut in_flight = super::gc::InFlight::new(self);
        in_flight.adopt(merged.iter().map(|p| p.name.clone()));
        let committed = self
            .commit_checked("MERGE", |current| {
                let unchanged = sources.iter().all(|s| {
                    current
                        .parts
                        .iter()
                        .any(|p| p.name == s.name && p.deletes == s.deletes)
                });
                if !unchanged {
                    return None;
                }
                // The merged part takes the place of the first source, so the
                // order of the others is kept.
                let mut parts = Vec::with_capacity(current.parts.len());
                let mut placed = false;
                for p in &current.parts {
                    if names.contains(&p.name) {
                        if !placed && let Some(m) = &merged {
                            parts.push(m.clone());
                        }
                        placed = true;
                    } else {
                        parts.push(p.clone());
                    }
                }
                Some(parts)
            })
            .await?;
        if committed.is_none() {
            self.delete_files(Vec::new(), merged.as_slice()).await;
        }
        Ok(committed)
    }

    /// Writes the rows of merged parts, sorted by the key, as one part.
    async fn write_merged(
        self: &Arc<Self>,
        base: &Arc<Snapshot>,
        batches: Vec<RecordBatch>,
        level: u32,
    ) -> Result<PartEntry> {
        let mut writer = self.insert_on(base.clone()).into_single_part();
        for batch in batches {
            writer.write(batch).await?;
        }
        let mut parts = writer.finish_parts().await?;
        let mut part = parts.pop().expect("a merge writes one part");
        part.level = level;
        part.created_ms = now_ms();
        Ok(part)
    }
}
