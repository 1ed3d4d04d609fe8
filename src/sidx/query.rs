//! Queries: the elements of some series within a key range that pass a tag
//! filter, in strict order of (key, series_id, write sequence), ascending
//! or its exact reverse, over memory and disk parts alike.
//!
//! Within a part, the rows of one series are contiguous and sorted by
//! (key, _seq): a *run*. The query merges every run of the requested series
//! in every part with a heap. Runs on disk are read lazily, one granule at a
//! time: a run not yet read sits in the heap under a bound of its next
//! granule (the granule's minimum key ascending, maximum descending), which
//! no row it holds can precede, so a granule is read only when its rows may
//! come next. A query with a LIMIT thus reads only the granules its first
//! rows come from. Granules shared by several runs (a granule holds the
//! ends of neighbouring series) are read once and kept until the last run
//! needing them has taken its rows.
//!
//! Rows are emitted in slices: the run on top of the heap gives every row
//! that precedes the next run's head at once, so one run's rows cost a
//! binary search, not a heap operation each.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use arrow::array::{AsArray, Int64Array, PrimitiveArray, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::{filter_record_batch, take_record_batch};
use arrow::datatypes::{Field, Int64Type, Schema, SchemaRef, UInt64Type};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, lit};
use datafusion::physical_expr::PhysicalExpr;
use futures::Stream;
use futures::stream::BoxStream;

use super::filter::TagFilter;
use super::introducer::SidxSnapshot;
use crate::error::{Error, Result};
use crate::part::ReadStats;
use crate::plan::{PartPlan, ScanPlan, projection, read_granules};

/// The order of a query's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// By (key, series_id, write sequence) ascending.
    #[default]
    Asc,
    /// The exact reverse of `Asc`.
    Desc,
    /// Any order: parts are streamed as stored, with no merge (the
    /// cheapest way to read many elements, as SQL does for aggregates).
    Unordered,
}

/// What a query asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRequest {
    /// The series to read; empty reads every series.
    pub series_ids: Vec<u64>,
    /// Inclusive key bounds; `None` leaves that side open.
    pub min_key: Option<i64>,
    pub max_key: Option<i64>,
    pub filter: Option<TagFilter>,
    /// Tags to return, as columns after `series_id`, `key` and `data`.
    pub tags: Vec<String>,
    pub order: Order,
    /// At most this many elements in all.
    pub limit: Option<usize>,
    /// At most this many elements per batch (default 1024).
    pub batch_size: usize,
    /// Drops an element whose `data` equals that of one returned before.
    pub distinct_data: bool,
    /// Returns the `data` column (default true; false leaves it out and
    /// does not read it unless `distinct_data` needs it).
    pub data: bool,
}

pub const DEFAULT_BATCH_SIZE: usize = 1024;

impl Default for QueryRequest {
    fn default() -> Self {
        QueryRequest {
            series_ids: Vec::new(),
            min_key: None,
            max_key: None,
            filter: None,
            tags: Vec::new(),
            order: Order::Asc,
            limit: None,
            batch_size: DEFAULT_BATCH_SIZE,
            distinct_data: false,
            data: true,
        }
    }
}

impl QueryRequest {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn series(mut self, ids: impl IntoIterator<Item = u64>) -> Self {
        self.series_ids = ids.into_iter().collect();
        self
    }

    /// Inclusive key bounds.
    pub fn keys(mut self, min: Option<i64>, max: Option<i64>) -> Self {
        self.min_key = min;
        self.max_key = max;
        self
    }

    pub fn filter(mut self, filter: TagFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    pub fn tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows;
        self
    }

    pub fn distinct_data(mut self, distinct: bool) -> Self {
        self.distinct_data = distinct;
        self
    }

    /// Refuses what cannot be answered, naming it.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Invalid(
                "batch size 0: a batch holds at least one element".into(),
            ));
        }
        if let (Some(min), Some(max)) = (self.min_key, self.max_key)
            && min > max
        {
            return Err(Error::Invalid(format!(
                "key range: the minimum key {min} is greater than the maximum key {max}"
            )));
        }
        if self.series_ids.contains(&0) {
            return Err(Error::Invalid(
                "series id 0 requested; series ids start at 1".into(),
            ));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if tag.is_empty() {
                return Err(Error::Invalid(format!(
                    "projected tag {i} has an empty name"
                )));
            }
        }
        Ok(())
    }
}

/// What a query did, for EXPLAIN ANALYZE and stats.
#[derive(Debug, Default)]
pub struct QueryMetrics {
    pub memory_parts: AtomicU64,
    pub disk_parts: AtomicU64,
    /// Granules of the disk parts, and those the plan kept.
    pub granules_total: AtomicU64,
    pub granules_planned: AtomicU64,
    /// Granules actually read (a LIMIT stops early).
    pub granules_read: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Runs (part × series) merged.
    pub runs: AtomicU64,
    pub rows_emitted: AtomicU64,
}

/// The results of a query: batches of `series_id`, `key`, `data` and the
/// projected tags, in the requested order. Dropping it mid-way releases the
/// snapshot it reads.
pub struct QueryStream {
    schema: SchemaRef,
    metrics: Arc<QueryMetrics>,
    inner: BoxStream<'static, Result<RecordBatch>>,
}

impl QueryStream {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn metrics(&self) -> Arc<QueryMetrics> {
        self.metrics.clone()
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Where a run's rows come from.
enum Source {
    /// Granules of disk part `part` holding the series, in output order.
    Disk {
        part: usize,
        granules: VecDeque<usize>,
    },
    /// A memory part's rows, taken at the first load.
    Memory { rows: Option<RecordBatch> },
}

/// One series in one part.
struct Run {
    series: u64,
    source: Source,
    /// Rows loaded and not yet emitted from `pos` on, in output order.
    batch: Option<RecordBatch>,
    pos: usize,
    /// Where `batch` sits among the output's source batches, once it gave
    /// a row to the batch being gathered.
    slot: Option<usize>,
}

/// A run's place in the heap: the (key, phase, series, seq) of its next
/// row, mapped so that smaller comes first in either order. A run not yet
/// loaded has phase 0 and its bound as key, so it is loaded before any row
/// at that key is emitted.
type HeapKey = (u64, u8, u64, u64);

/// `key` as an unsigned number of the same order (reversed descending).
fn order_key(key: i64, desc: bool) -> u64 {
    let k = (key as u64) ^ (1 << 63);
    if desc { !k } else { k }
}

fn order_u64(v: u64, desc: bool) -> u64 {
    if desc { !v } else { v }
}

/// A query being answered.
pub(crate) struct Merge {
    snapshot: Arc<SidxSnapshot>,
    plan: ScanPlan,
    /// The columns read: `series_id`, `key`, `_seq`, `data`, then tags.
    read_schema: SchemaRef,
    projections: Vec<Vec<usize>>,
    row_filter: Option<Arc<dyn PhysicalExpr>>,
    /// Positions in `read_schema` of the output columns.
    output: Vec<usize>,
    desc: bool,
    runs: Vec<Run>,
    heap: BinaryHeap<Reverse<(HeapKey, usize)>>,
    /// Disk granules read and filtered, until the last run needing them
    /// has taken its rows.
    granules: HashMap<(usize, usize), RecordBatch>,
    /// The runs still to take rows from each disk granule.
    users: HashMap<(usize, usize), usize>,
    /// The batch being gathered: (slot, row) pairs over the source batches
    /// (projected to the output columns) in `slots`. Rows are picked one
    /// by one from interleaving runs, so they are gathered by index and
    /// copied once, not sliced and concatenated.
    slots: Vec<RecordBatch>,
    indices: Vec<(usize, usize)>,
    remaining: usize,
    batch_size: usize,
    seen: Option<HashSet<Vec<u8>>>,
    min_key: Option<i64>,
    max_key: Option<i64>,
    metrics: Arc<QueryMetrics>,
    /// What an unordered scan has left to read.
    unordered: Option<Unordered>,
    /// Whether the query has a limit (and may stop before reading all the
    /// granules it planned).
    limited: bool,
}

/// An unordered scan's place: memory parts first, then each disk part's
/// granule ranges.
struct Unordered {
    memory: VecDeque<Arc<super::memory::MemPart>>,
    /// (part, granules) still to read, in order.
    granules: VecDeque<(usize, std::ops::Range<usize>)>,
    /// Rows read and filtered, not yet emitted.
    rows: VecDeque<RecordBatch>,
}

/// Granules an ordered query without a limit reads per request.
const READ_AHEAD: usize = 16;

/// Granules an unordered scan reads per request.
const UNORDERED_GRANULES: usize = 8;

/// Plans `request` on `snapshot`: disk parts pruned by key range, series
/// and tag filter, runs set up, nothing read yet.
pub(crate) async fn start(
    table: &crate::table::Table,
    session: &datafusion::execution::SessionState,
    snapshot: Arc<SidxSnapshot>,
    request: &QueryRequest,
) -> Result<QueryStream> {
    request.validate()?;
    let disk = snapshot.disk.clone();
    let schema = disk.schema.clone();
    let mut series: Vec<u64> = request.series_ids.clone();
    series.sort_unstable();
    series.dedup();
    // Columns to read: the fixed ones, the projected tags, the filtered ones.
    let mut names: Vec<String> = ["series_id", "key", "_seq"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Read when returned or compared; always at position 3 when read.
    let data = request.data || request.distinct_data;
    if data {
        names.push("data".into());
    }
    for tag in &request.tags {
        if super::element::is_reserved(tag) || schema.field_with_name(tag).is_err() {
            return Err(Error::Invalid(format!(
                "projected tag '{tag}' is not a tag of this index"
            )));
        }
        if !names.contains(tag) {
            names.push(tag.clone());
        }
    }
    if let Some(filter) = &request.filter {
        for tag in filter.tags() {
            if schema.field_with_name(tag).is_ok()
                && !super::element::is_reserved(tag)
                && !names.iter().any(|n| n == tag)
            {
                names.push(tag.to_string());
            }
        }
    }
    let read_schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| schema.field_with_name(n).cloned())
            .collect::<std::result::Result<Vec<Field>, _>>()?,
    ));
    let filter_expr = request
        .filter
        .as_ref()
        .map(|f| f.to_expr(&schema))
        .transpose()?;
    let key = || Expr::Column(Column::new_unqualified("key"));
    let mut conditions: Vec<Expr> = Vec::new();
    conditions.extend(request.min_key.map(|m| key().gt_eq(lit(m))));
    conditions.extend(request.max_key.map(|m| key().lt_eq(lit(m))));
    conditions.extend(filter_expr);
    let mut pruning = conditions.clone();
    let unordered = request.order == Order::Unordered;
    // Runs select their series; a scan with no runs filters rows by it.
    if unordered && !series.is_empty() {
        let ids = series
            .iter()
            .map(|&s| lit(ScalarValue::UInt64(Some(s))))
            .collect();
        conditions.push(Expr::Column(Column::new_unqualified("series_id")).in_list(ids, false));
    }
    // Longer lists do not prune (DataFusion's pruning skips them); runs
    // are found from each granule's series range anyway.
    if !series.is_empty() && series.len() <= 20 {
        let ids = series
            .iter()
            .map(|&s| lit(ScalarValue::UInt64(Some(s))))
            .collect();
        pruning.push(Expr::Column(Column::new_unqualified("series_id")).in_list(ids, false));
    }
    let invalid = |e: datafusion::error::DataFusionError| Error::Invalid(e.to_string());
    let pruners =
        crate::sql::pruning::pruners(session, &schema, &disk.options, &pruning).map_err(invalid)?;
    let plan = table.plan(&disk, &disk.parts, &pruners).await?;
    let row_filter = match conditions.into_iter().reduce(Expr::and) {
        None => None,
        Some(expr) => {
            let df_schema = DFSchema::try_from(read_schema.as_ref().clone()).map_err(invalid)?;
            Some(
                datafusion::catalog::Session::create_physical_expr(session, expr, &df_schema)
                    .map_err(invalid)?,
            )
        }
    };
    let projections = plan
        .parts
        .iter()
        .map(|p| projection(p, &read_schema))
        .collect::<Result<Vec<_>>>()?;
    let mut output = vec![0, 1];
    if request.data {
        output.push(3);
    }
    output.extend(request.tags.iter().map(|t| {
        names
            .iter()
            .position(|n| n == t)
            .expect("projected tags are read")
    }));
    let output_schema = Arc::new(read_schema.project(&output)?);
    let metrics = Arc::new(QueryMetrics::default());
    let desc = request.order == Order::Desc;
    let mut merge = Merge {
        snapshot,
        plan,
        read_schema,
        projections,
        row_filter,
        output,
        desc,
        runs: Vec::new(),
        heap: BinaryHeap::new(),
        granules: HashMap::new(),
        users: HashMap::new(),
        slots: Vec::new(),
        indices: Vec::new(),
        remaining: request.limit.unwrap_or(usize::MAX),
        batch_size: request.batch_size,
        seen: request.distinct_data.then(HashSet::new),
        min_key: request.min_key,
        max_key: request.max_key,
        metrics: metrics.clone(),
        unordered: None,
        limited: request.limit.is_some(),
    };
    if unordered {
        merge.start_unordered(&series)?;
    } else {
        merge.add_disk_runs(&series, request).await?;
        merge.add_memory_runs(&series)?;
    }
    let stream = futures::stream::try_unfold(merge, |mut merge| async move {
        let batch = merge.next_batch().await?;
        Ok(batch.map(|b| (b, merge)))
    });
    Ok(QueryStream {
        schema: output_schema,
        metrics,
        inner: Box::pin(stream),
    })
}

impl Merge {
    /// What the plan holds, for the metrics.
    fn record_plan(&self) {
        let m = &self.metrics;
        m.disk_parts
            .store(self.plan.parts.len() as u64, Ordering::Relaxed);
        m.granules_total
            .store(self.plan.granules_total() as u64, Ordering::Relaxed);
        m.granules_planned
            .store(self.plan.granules_read() as u64, Ordering::Relaxed);
        m.memory_parts
            .store(self.snapshot.memory.len() as u64, Ordering::Relaxed);
    }

    /// A run per requested series in each disk part, over the planned
    /// granules whose series range holds it.
    async fn add_disk_runs(&mut self, series: &[u64], request: &QueryRequest) -> Result<()> {
        self.record_plan();
        for p in 0..self.plan.parts.len() {
            let part = &self.plan.parts[p];
            let (mins, maxs) = series_bounds(part)?;
            let (key_mins, key_maxs) = key_bounds(part)?;
            let planned: Vec<usize> = (0..part.granules.len())
                .filter(|&g| part.granules[g].is_read())
                .collect();
            let found: Vec<u64> = match series.is_empty() {
                true => self.series_in(p, &planned).await?,
                false => series.to_vec(),
            };
            for s in found {
                // Granules are sorted by series: those holding `s` are
                // contiguous among the planned ones.
                let first = planned.partition_point(|&g| maxs.value(g) < s);
                let mut granules: VecDeque<usize> = planned[first..]
                    .iter()
                    .copied()
                    .take_while(|&g| mins.value(g) <= s)
                    .filter(|&g| {
                        // A granule of this series alone has exact key bounds.
                        mins.value(g) != s
                            || maxs.value(g) != s
                            || (request.min_key.is_none_or(|m| key_maxs.value(g) >= m)
                                && request.max_key.is_none_or(|m| key_mins.value(g) <= m))
                    })
                    .collect();
                if granules.is_empty() {
                    continue;
                }
                if self.desc {
                    granules = granules.into_iter().rev().collect();
                }
                for &g in &granules {
                    *self.users.entry((p, g)).or_default() += 1;
                }
                let bound = self.granule_bound(p, granules[0]);
                self.runs.push(Run {
                    series: s,
                    source: Source::Disk { part: p, granules },
                    batch: None,
                    pos: 0,
                    slot: None,
                });
                let run = self.runs.len() - 1;
                self.metrics.runs.fetch_add(1, Ordering::Relaxed);
                self.heap
                    .push(Reverse(((bound, 0, order_u64(s, self.desc), 0), run)));
            }
        }
        Ok(())
    }

    /// The series present in the planned granules of part `p` (a query
    /// over every series reads the series column to find its runs).
    async fn series_in(&mut self, p: usize, planned: &[usize]) -> Result<Vec<u64>> {
        let part = &self.plan.parts[p];
        let schema = Arc::new(self.read_schema.project(&[0])?);
        let projection = vec![self.projections[p][0]];
        let mut found: Vec<u64> = Vec::new();
        let mut stats = ReadStats::default();
        for range in crate::part::index::ranges_of(
            &(0..part.granules.len())
                .map(|g| planned.binary_search(&g).is_ok())
                .collect::<Vec<_>>(),
        ) {
            for g in read_granules(part, &projection, &schema, range, &mut stats).await? {
                let ids = g.batch.column(0).as_primitive::<UInt64Type>().clone();
                for &s in ids.values() {
                    if found.last() != Some(&s) {
                        found.push(s);
                    }
                }
            }
        }
        self.metrics
            .bytes_read
            .fetch_add(stats.bytes_read, Ordering::Relaxed);
        found.dedup();
        Ok(found)
    }

    /// The order key no row of granule `g` of part `p` precedes: its
    /// minimum key ascending (its maximum descending), within the request's
    /// range.
    fn granule_bound(&self, p: usize, g: usize) -> u64 {
        let index = &self.plan.parts[p].index;
        let key_at = index
            .column_position("key")
            .expect("checked when runs were made");
        let bound = match self.desc {
            false => {
                let min = index.min(key_at).as_primitive::<Int64Type>().value(g);
                self.min_key.map_or(min, |m| min.max(m))
            }
            true => {
                let max = index.max(key_at).as_primitive::<Int64Type>().value(g);
                self.max_key.map_or(max, |m| max.min(m))
            }
        };
        order_key(bound, self.desc)
    }

    /// A run per requested series in each memory part, loaded at once
    /// (memory parts are bounded and already decoded).
    fn add_memory_runs(&mut self, series: &[u64]) -> Result<()> {
        let memory = self.snapshot.memory.clone();
        for part in memory.iter() {
            let batch = self.conform(&part.batch)?;
            let batch = self.filter(batch)?;
            if batch.num_rows() == 0 {
                continue;
            }
            let ids = batch.column(0).as_primitive::<UInt64Type>().clone();
            let present: Vec<u64> = match series.is_empty() {
                true => {
                    let mut all: Vec<u64> = ids.values().to_vec();
                    all.dedup();
                    all
                }
                false => series.to_vec(),
            };
            for s in present {
                let rows = self.series_rows(&batch, s)?;
                if rows.num_rows() == 0 {
                    continue;
                }
                self.runs.push(Run {
                    series: s,
                    source: Source::Memory { rows: Some(rows) },
                    batch: None,
                    pos: 0,
                    slot: None,
                });
                let run = self.runs.len() - 1;
                self.metrics.runs.fetch_add(1, Ordering::Relaxed);
                // Loaded on first pop; its first row is its exact bound.
                let Source::Memory { rows: Some(rows) } = &self.runs[run].source else {
                    unreachable!("just made")
                };
                let first = rows.column(1).as_primitive::<Int64Type>().value(0);
                self.heap.push(Reverse((
                    (order_key(first, self.desc), 0, order_u64(s, self.desc), 0),
                    run,
                )));
            }
        }
        Ok(())
    }

    /// `batch` (a memory part's columns) as `read_schema`: tags added after
    /// it was written are NULL.
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        super::conform(batch, &self.read_schema)
    }

    /// The rows of `batch` the key range and tag filter keep.
    fn filter(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some(filter) = &self.row_filter else {
            return Ok(batch);
        };
        let keep = filter
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(filter_record_batch(&batch, keep.as_boolean())?)
    }

    /// The rows of series `s` in `batch` (sorted by series), in output
    /// order.
    fn series_rows(&self, batch: &RecordBatch, s: u64) -> Result<RecordBatch> {
        let ids = batch.column(0).as_primitive::<UInt64Type>();
        let values = ids.values();
        let start = values.partition_point(|&v| v < s);
        let end = values.partition_point(|&v| v <= s);
        let rows = batch.slice(start, end - start);
        if !self.desc || rows.num_rows() < 2 {
            return Ok(rows);
        }
        let reversed = UInt32Array::from_iter_values((0..rows.num_rows() as u32).rev());
        Ok(take_record_batch(&rows, &reversed)?)
    }

    /// Granule `g` of part `p`, read and filtered, kept while runs still
    /// need it.
    async fn granule(&mut self, p: usize, g: usize) -> Result<RecordBatch> {
        if !self.granules.contains_key(&(p, g)) {
            self.read_ahead(p, g).await?;
        }
        // Each run takes each of its granules once: the last one frees it.
        let users = self.users.entry((p, g)).or_insert(1);
        *users = users.saturating_sub(1);
        let batch = match *users {
            0 => self.granules.remove(&(p, g)),
            _ => self.granules.get(&(p, g)).cloned(),
        };
        Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(self.read_schema.clone())))
    }

    /// Reads granule `g` of part `p` into the cache, with (when the query
    /// has no limit, so every needed granule will be read) the needed
    /// granules after it in the order of the runs, in one request per
    /// column: runs of neighbouring series share their boundary granules.
    async fn read_ahead(&mut self, p: usize, g: usize) -> Result<()> {
        let needed = |g: usize| {
            self.users.get(&(p, g)).is_some_and(|&u| u > 0) && !self.granules.contains_key(&(p, g))
        };
        let (mut first, mut last) = (g, g);
        if !self.limited {
            while last - first + 1 < READ_AHEAD {
                match self.desc {
                    false if needed(last + 1) => last += 1,
                    true if first > 0 && needed(first - 1) => first -= 1,
                    _ => break,
                }
            }
        }
        let part: &PartPlan = &self.plan.parts[p];
        let mut stats = ReadStats::default();
        let read = read_granules(
            part,
            &self.projections[p],
            &self.read_schema,
            first..last + 1,
            &mut stats,
        )
        .await
        .map_err(|e| e.context(format!("part '{}'", part.name())))?;
        self.metrics
            .granules_read
            .fetch_add((last + 1 - first) as u64, Ordering::Relaxed);
        self.metrics
            .bytes_read
            .fetch_add(stats.bytes_read, Ordering::Relaxed);
        for granule in read {
            let batch = self.filter(granule.batch)?;
            self.granules.insert((p, granule.granule), batch);
        }
        Ok(())
    }

    /// Loads the run's next rows; false when it has none left.
    async fn load(&mut self, run: usize) -> Result<bool> {
        loop {
            let next = match &mut self.runs[run].source {
                Source::Memory { rows } => match rows.take() {
                    Some(rows) => {
                        self.runs[run].batch = Some(rows);
                        self.runs[run].pos = 0;
                        self.runs[run].slot = None;
                        return Ok(true);
                    }
                    None => return Ok(false),
                },
                Source::Disk { part, granules } => match granules.pop_front() {
                    Some(g) => (*part, g),
                    None => return Ok(false),
                },
            };
            let granule = self.granule(next.0, next.1).await?;
            let rows = self.series_rows(&granule, self.runs[run].series)?;
            if rows.num_rows() > 0 {
                self.runs[run].batch = Some(rows);
                self.runs[run].pos = 0;
                self.runs[run].slot = None;
                return Ok(true);
            }
        }
    }

    /// The heap key of a loaded run's next row.
    fn row_key(&self, run: usize) -> HeapKey {
        let r = &self.runs[run];
        let batch = r.batch.as_ref().expect("a loaded run");
        let key = batch.column(1).as_primitive::<Int64Type>().value(r.pos);
        let seq = batch.column(2).as_primitive::<UInt64Type>().value(r.pos);
        (
            order_key(key, self.desc),
            1,
            order_u64(r.series, self.desc),
            order_u64(seq, self.desc),
        )
    }

    /// Puts `run` back in the heap: under its next row, or its next
    /// granule's bound, or not at all when it is done.
    fn requeue(&mut self, run: usize) {
        let r = &self.runs[run];
        if r.batch.as_ref().is_some_and(|b| r.pos < b.num_rows()) {
            let key = self.row_key(run);
            self.heap.push(Reverse((key, run)));
            return;
        }
        self.runs[run].batch = None;
        let next = match &self.runs[run].source {
            Source::Disk { part, granules } => granules.front().map(|&g| (*part, g)),
            Source::Memory { .. } => None,
        };
        if let Some((p, g)) = next {
            let bound = self.granule_bound(p, g);
            let series = order_u64(self.runs[run].series, self.desc);
            self.heap.push(Reverse(((bound, 0, series, 0), run)));
        }
    }

    /// Emits the rows of `run` (on top of the heap) that precede the next
    /// run's head, within the limit and the batch.
    fn emit(&mut self, run: usize) -> Result<()> {
        let next = self.heap.peek().map(|Reverse((k, _))| *k);
        let r = &self.runs[run];
        let batch = r.batch.clone().expect("a loaded run");
        let pos = r.pos;
        let rest = batch.num_rows() - pos;
        let keys = batch.column(1).as_primitive::<Int64Type>();
        let seqs = batch.column(2).as_primitive::<UInt64Type>();
        let series = order_u64(r.series, self.desc);
        let before_next = match next {
            None => rest,
            Some(next) => partition(rest, |i| {
                let key = (
                    order_key(keys.value(pos + i), self.desc),
                    1,
                    series,
                    order_u64(seqs.value(pos + i), self.desc),
                );
                key < next
            }),
        };
        // The top of the heap precedes every other run's rows: at least
        // its first row goes.
        let room = self.remaining.min(self.batch_size - self.indices.len());
        let n = before_next.max(1).min(room);
        let slot = match self.runs[run].slot {
            Some(slot) => slot,
            None => {
                let slot = self.slot_for(&batch)?;
                self.runs[run].slot = Some(slot);
                slot
            }
        };
        self.runs[run].pos += n;
        self.push_rows(slot, &batch, pos..pos + n);
        Ok(())
    }

    /// Queues the planned granules of every disk part (those whose series
    /// range holds a requested series, when some are), in runs.
    fn start_unordered(&mut self, series: &[u64]) -> Result<()> {
        let mut granules = VecDeque::new();
        for (p, part) in self.plan.parts.iter().enumerate() {
            let (mins, maxs) = series_bounds(part)?;
            let read: Vec<bool> = (0..part.granules.len())
                .map(|g| {
                    part.granules[g].is_read()
                        && (series.is_empty() || {
                            // Any requested series within [min, max].
                            let at = series.partition_point(|&s| s < mins.value(g));
                            at < series.len() && series[at] <= maxs.value(g)
                        })
                })
                .collect();
            for range in crate::part::index::ranges_of(&read) {
                let mut start = range.start;
                while start < range.end {
                    let end = (start + UNORDERED_GRANULES).min(range.end);
                    granules.push_back((p, start..end));
                    start = end;
                }
            }
        }
        self.record_plan();
        self.unordered = Some(Unordered {
            memory: self.snapshot.memory.iter().cloned().collect(),
            granules,
            rows: VecDeque::new(),
        });
        Ok(())
    }

    /// The next rows of an unordered scan, filtered; `None` at the end.
    async fn next_unordered(&mut self) -> Result<Option<RecordBatch>> {
        let Some(scan) = self.unordered.as_mut() else {
            return Ok(None);
        };
        if let Some(rows) = scan.rows.pop_front() {
            return Ok(Some(rows));
        }
        if let Some(part) = scan.memory.pop_front() {
            let batch = self.conform(&part.batch)?;
            return Ok(Some(self.filter(batch)?));
        }
        let Some((p, range)) = scan.granules.pop_front() else {
            return Ok(None);
        };
        let part = &self.plan.parts[p];
        let mut stats = ReadStats::default();
        let read = read_granules(
            part,
            &self.projections[p],
            &self.read_schema,
            range.clone(),
            &mut stats,
        )
        .await
        .map_err(|e| e.context(format!("part '{}'", part.name())))?;
        self.metrics
            .granules_read
            .fetch_add(range.len() as u64, Ordering::Relaxed);
        self.metrics
            .bytes_read
            .fetch_add(stats.bytes_read, Ordering::Relaxed);
        let mut rows = VecDeque::new();
        for g in read {
            rows.push_back(self.filter(g.batch)?);
        }
        let scan = self.unordered.as_mut().expect("checked above");
        scan.rows = rows;
        Ok(Some(RecordBatch::new_empty(self.read_schema.clone())))
    }

    /// Fills the pending output from an unordered scan.
    async fn fill_unordered(&mut self) -> Result<()> {
        while self.remaining > 0 && self.indices.len() < self.batch_size {
            let Some(rows) = self.next_unordered().await? else {
                return Ok(());
            };
            let mut at = 0;
            while at < rows.num_rows() && self.remaining > 0 {
                let room = self.remaining.min(self.batch_size - self.indices.len());
                if room == 0 {
                    // The batch is full: keep the rest for the next one.
                    let rest = rows.slice(at, rows.num_rows() - at);
                    let scan = self.unordered.as_mut().expect("an unordered scan");
                    scan.rows.push_front(rest);
                    return Ok(());
                }
                let n = room.min(rows.num_rows() - at);
                self.take(rows.slice(at, n))?;
                at += n;
            }
        }
        Ok(())
    }

    /// Adds `slice` (rows in output order) to the pending output, without
    /// repeated data when asked.
    fn take(&mut self, slice: RecordBatch) -> Result<()> {
        let slot = self.slot_for(&slice)?;
        self.push_rows(slot, &slice, 0..slice.num_rows());
        Ok(())
    }

    /// Makes `batch` (read columns) a source of the batch being gathered.
    fn slot_for(&mut self, batch: &RecordBatch) -> Result<usize> {
        self.slots.push(batch.project(&self.output)?);
        Ok(self.slots.len() - 1)
    }

    /// Adds rows `rows` of `batch` (in slot `slot`) to the batch being
    /// gathered, without repeated data when asked.
    fn push_rows(&mut self, slot: usize, batch: &RecordBatch, rows: std::ops::Range<usize>) {
        let before = self.indices.len();
        match &mut self.seen {
            None => self.indices.extend(rows.map(|i| (slot, i))),
            Some(seen) => {
                let data = batch.column(3).as_binary::<i32>();
                self.indices.extend(
                    rows.filter(|&i| seen.insert(data.value(i).to_vec()))
                        .map(|i| (slot, i)),
                );
            }
        }
        self.remaining -= self.indices.len() - before;
    }

    /// The next batch of results, `None` at the end.
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.unordered.is_some() {
            self.fill_unordered().await?;
        }
        while self.unordered.is_none() && self.remaining > 0 && self.indices.len() < self.batch_size
        {
            let Some(Reverse((key, run))) = self.heap.pop() else {
                break;
            };
            if key.1 == 0 {
                // Not loaded: read its next rows, and queue it by them.
                if self.load(run).await? {
                    let key = self.row_key(run);
                    self.heap.push(Reverse((key, run)));
                }
                continue;
            }
            self.emit(run)?;
            self.requeue(run);
        }
        if self.indices.is_empty() {
            return Ok(None);
        }
        let sources: Vec<&RecordBatch> = self.slots.iter().collect();
        let batch = arrow::compute::interleave_record_batch(&sources, &self.indices)?;
        self.slots.clear();
        self.indices.clear();
        for run in &mut self.runs {
            run.slot = None;
        }
        self.metrics
            .rows_emitted
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(Some(batch))
    }
}

/// Each granule's smallest and largest series id in `part`.
fn series_bounds(part: &PartPlan) -> Result<(UInt64Array, UInt64Array)> {
    bounds::<UInt64Type>(part, "series_id")
}

/// Each granule's smallest and largest key in `part`.
fn key_bounds(part: &PartPlan) -> Result<(Int64Array, Int64Array)> {
    bounds::<Int64Type>(part, "key")
}

/// Each granule's min and max of `column` in `part`.
fn bounds<T: arrow::datatypes::ArrowPrimitiveType>(
    part: &PartPlan,
    column: &str,
) -> Result<(PrimitiveArray<T>, PrimitiveArray<T>)> {
    let index = &part.index;
    let damaged = || {
        Error::corrupt(
            part.name(),
            format!("a secondary index part without {column} statistics"),
        )
    };
    let at = index.column_position(column).ok_or_else(damaged)?;
    let min = index.min(at).as_primitive_opt::<T>().ok_or_else(damaged)?;
    let max = index.max(at).as_primitive_opt::<T>().ok_or_else(damaged)?;
    Ok((min.clone(), max.clone()))
}

/// The number of leading positions of `0..len` where `pred` holds (it
/// holds on a prefix).
fn partition(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}
