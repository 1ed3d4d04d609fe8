//! Merges: many small parts become fewer large ones, and deleted rows are
//! purged, as in ClickHouse's MergeTree and Lucene's tiered merge policy.
//!
//! The policy groups parts into size tiers (each tier `size_ratio` times the
//! bytes of the one below) and merges `parts_per_merge` parts of a tier once
//! that many have piled up, so every row is rewritten about
//! log_ratio(table / smallest part) times and the part count stays bounded.
//! Parts at or above `max_part_bytes`, and merges that would exceed it, are
//! left alone, except by `diagon_optimize(..., true)`.
//!
//! A merge streams: it reads its inputs through the same plan a scan uses
//! (deleted rows are never read), one granule per input at a time, merges
//! them by the sort key (inputs are sorted; ties keep input order, then row
//! order) and feeds the result to a part writer, which writes granules as
//! they fill. Its memory is a few granules per input and the writer's
//! buffers, whatever the part sizes. It also yields the [`RowMap`] from
//! input rows to output rows, through which the inputs' text indexes are
//! remapped into the merged part's (skip indexes, cheap to build, are
//! built from the merged rows).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use arrow::array::{BooleanArray, RecordBatch, RecordBatchOptions};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{SortOptions, interleave_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};

use super::log::PartEntry;
use super::options::MergeOptions;
use super::{Snapshot, Table};
use crate::error::{Error, Result};
use crate::index::text::Analyzer;
use crate::index::text::component::TextIndexReader;
use crate::index::text::merge::DROPPED;
use crate::part::ReadStats;
use crate::part::writer::{PartWriter, new_part_name};
use crate::plan::{PartPlan, ScanPlan, projection, read_granules};

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
    // Merges write local parts: cold ones stay as they are.
    let mut candidates: Vec<&PartEntry> = parts
        .iter()
        .filter(|p| p.bytes < options.max_part_bytes && p.location.is_none())
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

/// Where each input row of a merge went.
///
/// Stored as the input of each output row (two bytes a row), with each
/// input's deleted rows: an input's rows reach the output in their own
/// order, so the n-th output row from input i is input i's n-th live row.
#[derive(Debug, Clone, Default)]
pub struct RowMap {
    /// Rows of each input.
    input_rows: Vec<u64>,
    /// Deleted rows of each input (bit set = deleted), if any.
    deleted: Vec<Option<Arc<BooleanBuffer>>>,
    /// The input of each output row.
    sources: Vec<u16>,
}

impl RowMap {
    pub fn inputs(&self) -> usize {
        self.input_rows.len()
    }

    pub fn output_rows(&self) -> u64 {
        self.sources.len() as u64
    }

    /// Calls `f(input, input_row, output_row)` for every row that reached
    /// the output, in output order.
    pub fn for_each(&self, mut f: impl FnMut(usize, u64, u64)) {
        let mut next: Vec<u64> = vec![0; self.input_rows.len()];
        for (out, &input) in self.sources.iter().enumerate() {
            let input = input as usize;
            let mut row = next[input];
            if let Some(deleted) = &self.deleted[input] {
                while deleted.value(row as usize) {
                    row += 1;
                }
            }
            next[input] = row + 1;
            f(input, row, out as u64);
        }
    }

    /// For each input, the output row of each of its rows
    /// ([`DROPPED`] for a deleted one), as the text index's merge takes
    /// them; `None` if the output has too many rows to number in a u32.
    pub fn row_maps(&self) -> Option<Vec<Vec<u32>>> {
        if self.output_rows() >= u64::from(DROPPED) {
            return None;
        }
        let mut maps: Vec<Vec<u32>> = self
            .input_rows
            .iter()
            .map(|&rows| vec![DROPPED; rows as usize])
            .collect();
        self.for_each(|input, row, out| maps[input][row as usize] = out as u32);
        Some(maps)
    }

    /// For input `input`, the output row of each of its rows (`None` for a
    /// deleted row).
    pub fn of_input(&self, input: usize) -> Vec<Option<u64>> {
        let mut map = vec![None; self.input_rows.get(input).copied().unwrap_or(0) as usize];
        self.for_each(|i, row, out| {
            if i == input {
                map[row as usize] = Some(out);
            }
        });
        map
    }
}

/// Granules a merge input reads per request. One is what keeps a merge of
/// lineitem SF1's 20 parts under 256 MB (236 MB; four peaked at 398 MB when
/// writers still copied large pieces, one at 294 MB), at one request per
/// granule and column of each input: on an object store, four times the
/// requests of four, a trade the cold tier may revisit per backend.
const GRANULES_AHEAD: usize = 1;

/// The rows of one input, one granule at a time.
struct Cursor<'a> {
    part: &'a PartPlan,
    projection: Vec<usize>,
    /// Granule runs left to read.
    ranges: VecDeque<Range<usize>>,
    /// Granules read ahead (a request may read several at once).
    ahead: VecDeque<RecordBatch>,
    /// The current granule's rows and their sort keys.
    batch: Option<RecordBatch>,
    keys: Option<Rows>,
    pos: usize,
    /// Where `batch` sits in the output chunk being gathered.
    slot: usize,
}

impl<'a> Cursor<'a> {
    fn new(part: &'a PartPlan, schema: &SchemaRef) -> Result<Self> {
        Ok(Cursor {
            projection: projection(part, schema)?,
            ranges: part.read_ranges().into(),
            part,
            ahead: VecDeque::new(),
            batch: None,
            keys: None,
            pos: 0,
            slot: 0,
        })
    }

    /// Moves to the next granule with rows; false at the end of the input.
    async fn advance(
        &mut self,
        schema: &SchemaRef,
        key: &[usize],
        converter: Option<&RowConverter>,
    ) -> Result<bool> {
        while self.ahead.is_empty() {
            let Some(range) = self.ranges.front_mut() else {
                self.batch = None;
                self.keys = None;
                return Ok(false);
            };
            let read = range.start..(range.start + GRANULES_AHEAD).min(range.end);
            range.start = read.end;
            if range.start >= range.end {
                self.ranges.pop_front();
            }
            let mut stats = ReadStats::default();
            let granules =
                read_granules(self.part, &self.projection, schema, read, &mut stats).await?;
            self.ahead.extend(granules.into_iter().map(|g| g.batch));
        }
        let Some(batch) = self.ahead.pop_front() else {
            return Ok(false);
        };
        if let Some(converter) = converter {
            let columns: Vec<_> = key.iter().map(|&k| batch.column(k).clone()).collect();
            self.keys = Some(converter.convert_columns(&columns)?);
        }
        self.batch = Some(batch);
        self.pos = 0;
        Ok(true)
    }

    fn rows(&self) -> usize {
        self.batch.as_ref().map_or(0, RecordBatch::num_rows)
    }
}

/// Merges the parts of `plan` (each sorted by `key`, positions in `schema`)
/// into `writer`, in key order; without a key, concatenates them in order.
/// Returns where each input row went.
pub async fn merge_into(
    plan: &ScanPlan,
    schema: &SchemaRef,
    key: &[usize],
    writer: &mut PartWriter,
    chunk_rows: usize,
    keep: Option<&KeepRows>,
) -> Result<RowMap> {
    if plan.parts.len() > u16::MAX as usize {
        return Err(Error::Table(format!(
            "a merge takes at most {} parts",
            u16::MAX
        )));
    }
    let converter = match key.is_empty() {
        true => None,
        false => Some(RowConverter::new(
            key.iter()
                .map(|&k| {
                    SortField::new_with_options(
                        schema.field(k).data_type().clone(),
                        SortOptions {
                            descending: false,
                            nulls_first: false,
                        },
                    )
                })
                .collect(),
        )?),
    };
    let mut map = RowMap {
        input_rows: plan.parts.iter().map(|p| p.index.meta.rows).collect(),
        deleted: plan.parts.iter().map(|p| p.mask.clone()).collect(),
        sources: Vec::new(),
    };
    let mut cursors = Vec::with_capacity(plan.parts.len());
    for part in &plan.parts {
        let mut cursor = Cursor::new(part, schema)?;
        cursor.advance(schema, key, converter.as_ref()).await?;
        cursors.push(cursor);
    }
    let mut chunk = Chunk::new(chunk_rows.max(1));
    for (i, cursor) in cursors.iter_mut().enumerate() {
        chunk.hold(i, cursor);
    }
    // A binary min-heap of live inputs by (current key, input).
    let mut heap: Vec<usize> = (0..cursors.len())
        .filter(|&i| cursors[i].rows() > 0)
        .collect();
    let less = |cursors: &[Cursor], a: usize, b: usize| -> bool {
        match (&cursors[a].keys, &cursors[b].keys) {
            (Some(ka), Some(kb)) => {
                let (ra, rb) = (ka.row(cursors[a].pos), kb.row(cursors[b].pos));
                ra < rb || (ra == rb && a < b)
            }
            _ => a < b,
        }
    };
    heapify(&mut heap, &cursors, &less);
    while let Some(&i) = heap.first() {
        let cursor = &mut cursors[i];
        chunk.take(cursor.slot, cursor.pos);
        map.sources.push(i as u16);
        cursor.pos += 1;
        if cursor.pos == cursor.rows() {
            if cursor.advance(schema, key, converter.as_ref()).await? {
                chunk.hold(i, cursor);
            } else {
                heap.swap_remove(0);
            }
        }
        sift_down(&mut heap, 0, &cursors, &less);
        if chunk.is_full() {
            chunk.flush(writer, &mut cursors, keep).await?;
        }
    }
    chunk.flush(writer, &mut cursors, keep).await?;
    Ok(map)
}

/// Output rows being gathered: (batch slot, row) pairs over the input
/// batches they come from.
struct Chunk {
    batches: Vec<RecordBatch>,
    indices: Vec<(usize, usize)>,
    limit: usize,
}

impl Chunk {
    fn new(limit: usize) -> Self {
        Chunk {
            batches: Vec::new(),
            indices: Vec::with_capacity(limit),
            limit,
        }
    }

    /// Keeps the cursor's current batch for the rows it will give.
    fn hold(&mut self, _input: usize, cursor: &mut Cursor) {
        if let Some(batch) = &cursor.batch {
            cursor.slot = self.batches.len();
            self.batches.push(batch.clone());
        }
    }

    fn take(&mut self, slot: usize, row: usize) {
        self.indices.push((slot, row));
    }

    fn is_full(&self) -> bool {
        self.indices.len() >= self.limit
    }

    /// Writes the gathered rows and starts over with only the batches the
    /// cursors still read from.
    async fn flush(
        &mut self,
        writer: &mut PartWriter,
        cursors: &mut [Cursor<'_>],
        keep: Option<&KeepRows>,
    ) -> Result<()> {
        if !self.indices.is_empty() {
            let out = match self.batches.first() {
                // A table without columns: only the count of rows to keep
                // (Arrow's interleave cannot build a batch without columns).
                Some(first) if first.num_columns() == 0 => {
                    let rows = RecordBatchOptions::new().with_row_count(Some(self.indices.len()));
                    RecordBatch::try_new_with_options(first.schema(), vec![], &rows)?
                }
                _ => {
                    let refs: Vec<&RecordBatch> = self.batches.iter().collect();
                    interleave_record_batch(&refs, &self.indices)?
                }
            };
            self.indices.clear();
            let out = match keep {
                Some(keep) => arrow::compute::filter_record_batch(&out, &keep(&out)?)?,
                None => out,
            };
            if out.num_rows() > 0 {
                writer.write(&out).await?;
            }
        }
        self.batches.clear();
        for (i, cursor) in cursors.iter_mut().enumerate() {
            self.hold(i, cursor);
        }
        Ok(())
    }
}

fn heapify<F: Fn(&[Cursor], usize, usize) -> bool>(
    heap: &mut [usize],
    cursors: &[Cursor],
    less: &F,
) {
    for i in (0..heap.len() / 2).rev() {
        sift_down(heap, i, cursors, less);
    }
}

fn sift_down<F: Fn(&[Cursor], usize, usize) -> bool>(
    heap: &mut [usize],
    mut i: usize,
    cursors: &[Cursor],
    less: &F,
) {
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut smallest = i;
        if l < heap.len() && less(cursors, heap[l], heap[smallest]) {
            smallest = l;
        }
        if r < heap.len() && less(cursors, heap[r], heap[smallest]) {
            smallest = r;
        }
        if smallest == i {
            return;
        }
        heap.swap(i, smallest);
        i = smallest;
    }
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

    /// Merges now: by the policy, or with `full` every part on local disk
    /// (and every one with deleted rows) into one; parts in the cold tier
    /// are left as they are. Returns (merges, parts before, parts after).
    pub async fn optimize(self: &Arc<Self>, full: bool) -> Result<(usize, usize, usize)> {
        let before = self.snapshot().await?.parts.len();
        let merges = if full {
            let _running = self.merge_lock.lock().await;
            let (_pin, snapshot) = self.pinned_snapshot().await?;
            let hot: Vec<&PartEntry> = snapshot
                .parts
                .iter()
                .filter(|p| p.location.is_none())
                .collect();
            let all: Vec<String> = hot.iter().map(|p| p.name.clone()).collect();
            let mut needed = all.len() > 1 || hot.iter().any(|p| p.deletes.is_some());
            // A part lacking a declared index component is rewritten to build it.
            for &entry in &hot {
                let index = self.entry_index(&snapshot, entry).await?;
                let missing = snapshot
                    .options
                    .skip_indexes
                    .iter()
                    .filter(|(_, spec)| spec.has_component())
                    .any(|(column, _)| {
                        !index.meta.components.iter().any(|c| {
                            c.kind == crate::index::skip::KIND
                                && c.version == crate::index::skip::VERSION
                                && c.columns.first() == Some(column)
                        })
                    });
                let missing_text = snapshot.options.text.indexes.iter().any(|(column, a)| {
                    crate::index::text_index_meta(&index.meta.components, column, a).is_none()
                });
                // A part written before an ALTER TABLE: rewritten as the
                // current schema (dropped columns purged, added ones stored).
                let stored = self
                    .index_at(&self.storage_for(entry)?, &entry.name)
                    .await?;
                needed |= missing || missing_text || !stored.stores(&snapshot.columns);
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
            if let Err(e) = table.collect_garbage_when_due().await {
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
        let sources = sources_of(base, names);
        let merged = self.write_merged(base, &sources, None).await?;
        self.commit_merged(&sources, merged).await
    }

    /// Commits `merged` in place of `sources`, or discards it and returns
    /// `None` if a concurrent commit removed or changed one of them.
    pub(crate) async fn commit_merged(
        self: &Arc<Self>,
        sources: &[PartEntry],
        merged: Option<PartEntry>,
    ) -> Result<Option<u64>> {
        let mut in_flight = super::gc::InFlight::new(self);
        in_flight.adopt(merged.iter().map(|p| p.name.clone()));
        let names: Vec<&String> = sources.iter().map(|s| &s.name).collect();
        let committed = self
            .commit_checked("MERGE", |current| {
                // A source moved meanwhile is no longer a local part to
                // merge: the move stands, the merge is dropped.
                let unchanged = sources.iter().all(|s| current.parts.contains(s));
                if !unchanged {
                    return None;
                }
                // The merged part takes the place of the first source, so the
                // order of the others is kept.
                let mut parts = Vec::with_capacity(current.parts.len());
                let mut placed = false;
                for p in &current.parts {
                    if names.contains(&&p.name) {
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
            self.delete_parts(merged.as_slice()).await;
        }
        Ok(committed)
    }

    /// Streams the live rows of `sources` into one new part, uncommitted
    /// (registered in flight until [`Self::commit_merged`] takes it); rows
    /// for which `keep` is false are left out. `None` when no row is left.
    pub(crate) async fn write_merged(
        self: &Arc<Self>,
        base: &Arc<Snapshot>,
        sources: &[PartEntry],
        keep: Option<&KeepRows>,
    ) -> Result<Option<PartEntry>> {
        let level = sources.iter().map(|p| p.level).max().unwrap_or(0) + 1;
        self.write_merged_at(base, sources, level, keep)
            .await
            .map_err(|e| e.context(format!("table '{}': merge", self.name())))
    }

    async fn write_merged_at(
        self: &Arc<Self>,
        base: &Arc<Snapshot>,
        sources: &[PartEntry],
        level: u32,
        keep: Option<&KeepRows>,
    ) -> Result<Option<PartEntry>> {
        let plan = self.plan(base, sources, &[]).await?;
        let live: u64 = plan.parts.iter().map(PartPlan::rows_read).sum();
        if live == 0 {
            return Ok(None);
        }
        let layout = Table::part_layout(base);
        let remapped = remapped_text_indexes(base, &plan).await?;
        if keep.is_some() && !remapped.is_empty() {
            return Err(Error::Table(
                "a merge that drops rows cannot remap text indexes".into(),
            ));
        }
        let options = &base.options;
        let mut builders = crate::index::skip_builders(&base.storage_schema, &options.skip_indexes);
        let mut rebuilt = options.text.indexes.clone();
        rebuilt.retain(|column, _| !remapped.iter().any(|r| &r.0 == column));
        builders.extend(crate::index::text_builders(&base.storage_schema, &rebuilt));
        let name = new_part_name();
        // Released on error or cancellation; kept for the caller on success.
        let mut in_flight = super::gc::InFlight::new(self);
        in_flight.begin(name.clone());
        let mut writer = PartWriter::new(
            &self.storage,
            &name,
            base.storage_schema.clone(),
            layout.clone(),
            level,
            builders,
        );
        let written = async {
            let map = merge_into(
                &plan,
                &base.storage_schema,
                &layout.key,
                &mut writer,
                layout.granularity,
                keep,
            )
            .await?;
            if writer.rows() == 0 {
                return Ok(None);
            }
            if !remapped.is_empty() {
                let maps = map.row_maps().ok_or_else(|| {
                    Error::Table(format!(
                        "a text-indexed part holds at most {} rows",
                        DROPPED - 1
                    ))
                })?;
                for (column, analyzer, inputs) in &remapped {
                    let index = crate::index::text::merge::merge(
                        column,
                        *analyzer,
                        inputs,
                        &maps,
                        map.output_rows(),
                    )
                    .await?;
                    writer.add_component(index);
                }
            }
            writer.finish().await.map(Some)
        }
        .await;
        let Some(part) = written? else {
            return Ok(None);
        };
        in_flight.keep();
        let mut entry = PartEntry::new(&part, level);
        entry.newest_row_ms = sources.iter().map(PartEntry::newest_commit_ms).max();
        Ok(Some(entry))
    }
}

/// The entries of `base` named in `names`, in snapshot order.
pub(crate) fn sources_of(base: &Snapshot, names: &[String]) -> Vec<PartEntry> {
    base.parts
        .iter()
        .filter(|p| names.contains(&p.name))
        .cloned()
        .collect()
}

/// Which rows of a batch a merge keeps (a filter evaluated per output chunk).
pub type KeepRows = dyn Fn(&RecordBatch) -> Result<BooleanArray> + Send + Sync;

/// The text indexes a merge remaps rather than rebuilds: each declared
/// column whose index every input has (built with the declared analyzer),
/// with the inputs' indexes in plan order. The others are built from the
/// merged rows.
async fn remapped_text_indexes(
    base: &Snapshot,
    plan: &ScanPlan,
) -> Result<Vec<(String, Analyzer, Vec<TextIndexReader>)>> {
    let mut remapped = Vec::new();
    'columns: for (column, analyzer) in &base.options.text.indexes {
        if base.schema.index_of(column).is_err() {
            continue;
        }
        let mut inputs = Vec::with_capacity(plan.parts.len());
        for part in &plan.parts {
            let index =
                crate::plan::text::open_text_index(&part.index, &part.storage, column, analyzer)
                    .await
                    .map_err(|e| e.context(format!("part '{}'", part.name())))?;
            match index {
                Some(index) => inputs.push(index),
                None => continue 'columns,
            }
        }
        remapped.push((column.clone(), *analyzer, inputs));
    }
    Ok(remapped)
}
