//! An index's numbers: what it holds in memory and on disk, and what it
//! has done since it was opened.

use std::sync::Mutex;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;

use super::introducer::SidxSnapshot;
use crate::part::PartIndex;

/// A secondary index's numbers, every field filled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// The snapshot's epoch (increases with every write, flush and merge).
    pub epoch: u64,
    /// The committed table version the disk parts come from.
    pub version: u64,
    pub memory_parts: usize,
    pub memory_elements: u64,
    /// Bytes memory parts hold (what `memory_limit` bounds).
    pub memory_bytes: u64,
    pub disk_parts: usize,
    pub disk_elements: u64,
    /// Compressed bytes of the disk parts.
    pub disk_bytes: u64,
    /// The smallest and largest key over memory and disk (`None`: empty).
    pub min_key: Option<i64>,
    pub max_key: Option<i64>,
    /// The tags and their types.
    pub tags: usize,
    /// Since this process opened the index:
    pub writes: u64,
    pub elements_written: u64,
    /// Writes that waited for a flush (backpressure).
    pub write_waits: u64,
    pub queries: u64,
    /// Time spent planning queries (reading is the caller's).
    pub query_planning: Duration,
    pub flushes: u64,
    pub elements_flushed: u64,
    pub flush_time: Duration,
    pub merges: u64,
    pub merge_time: Duration,
}

/// What the index counts as it works.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    inner: Mutex<Stats>,
}

impl Counters {
    pub fn written(&self, elements: u64) {
        let mut s = crate::sync::lock(&self.inner);
        s.writes += 1;
        s.elements_written += elements;
    }

    pub fn queried(&self, planning: Duration) {
        let mut s = crate::sync::lock(&self.inner);
        s.queries += 1;
        s.query_planning += planning;
    }

    pub fn flushed(&self, elements: u64, took: Duration) {
        let mut s = crate::sync::lock(&self.inner);
        s.flushes += 1;
        s.elements_flushed += elements;
        s.flush_time += took;
    }

    pub fn merged(&self, merges: usize, took: Duration) {
        let mut s = crate::sync::lock(&self.inner);
        s.merges += merges as u64;
        s.merge_time += took;
    }
}

/// The numbers of `snapshot` (with its parts' `indexes`) and the counters.
pub(crate) fn collect(
    snapshot: &SidxSnapshot,
    indexes: &[std::sync::Arc<PartIndex>],
    counters: &Counters,
    memory_bytes: usize,
    write_waits: u64,
) -> Stats {
    let mut stats = crate::sync::lock(&counters.inner).clone();
    stats.epoch = snapshot.epoch;
    stats.version = snapshot.disk.version;
    stats.memory_parts = snapshot.memory.len();
    stats.memory_elements = snapshot.memory.iter().map(|m| m.rows() as u64).sum();
    stats.memory_bytes = memory_bytes as u64;
    stats.disk_parts = snapshot.disk.parts.len();
    stats.disk_elements = snapshot.disk.parts.iter().map(|p| p.rows).sum();
    stats.disk_bytes = snapshot.disk.parts.iter().map(|p| p.bytes).sum();
    stats.write_waits = write_waits;
    stats.tags = super::tags_of(&snapshot.disk.schema).len();
    let mut keys: Vec<(i64, i64)> = snapshot
        .memory
        .iter()
        .map(|m| (m.min_key, m.max_key))
        .collect();
    for index in indexes {
        let Some(at) = index.column_position("key") else {
            continue;
        };
        let min = arrow::compute::min(index.min(at).as_primitive::<Int64Type>());
        let max = arrow::compute::max(index.max(at).as_primitive::<Int64Type>());
        if let (Some(min), Some(max)) = (min, max) {
            keys.push((min, max));
        }
    }
    stats.min_key = keys.iter().map(|k| k.0).min();
    stats.max_key = keys.iter().map(|k| k.1).max();
    stats
}
