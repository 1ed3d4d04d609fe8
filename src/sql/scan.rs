//! `DiagonSource`: the scan of a diagon table as a DataFusion `DataSource`
//! behind `DataSourceExec`, so projection, limit, sort and filter pushdown
//! follow DataFusion's own contract. It executes a [`ScanPlan`] split into
//! one task per output partition; the only decision it makes while reading
//! is to skip granules that dynamic filters (TopK, joins) exclude.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{ArrayRef, Float32Array, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::datasource::source::DataSource;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr::{
    DynamicFilterTracking, EquivalenceProperties, LexOrdering, Partitioning, PhysicalExpr,
    PhysicalSortExpr,
};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::filter_pushdown::{FilterPushdownPropagation, PushedDown};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, RecordOutput, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayFormatType, SortOrderPushdownResult};
use datafusion_functions_aggregate_common::min_max::{max_batch, min_batch};
use futures::TryStreamExt;

use crate::index::text::counts::{Counter, SearchCounters, counted};
use crate::index::text::score::Hits;
use crate::part::{PartIndex, ReadStats};
use crate::plan::prune::Stats;
use crate::plan::text::ScanScores;
use crate::plan::{
    Granule, GranuleBatch, PartPlan, ScanPlan, ScanTask, SkipReason, StatsPruner, read_granules,
};
use crate::storage::counts::{StoreCounts, counted as store_counted};

/// Granules fetched per read request; bounds memory per partition while
/// keeping requests large enough for object stores.
const GRANULES_PER_READ: usize = 8;

/// Bytes of cold parts a partition announces ahead of its reads (see
/// `storage::read_ahead`): announced in rounds once half is read, so each
/// round's ranges merge into large requests.
const READ_AHEAD_BYTES: u64 = 16 << 20;

/// Ranges of one file to announce, and the file's length.
type Announcement = (Vec<Range<u64>>, u64);

/// The order of a scan that emits rows by a score, best first.
#[derive(Debug, Clone)]
pub(crate) struct ScoreOrder {
    /// The sort it satisfies (on the score's output column, descending).
    pub sort: PhysicalSortExpr,
    /// Which of the scan's scores.
    pub request: usize,
}

#[derive(Debug, Clone)]
pub struct DiagonSource {
    pub(crate) table_name: String,
    pub(crate) plan: Arc<ScanPlan>,
    pub(crate) tasks: Arc<Vec<ScanTask>>,
    pub(crate) projected_schema: SchemaRef,
    /// The projected columns read from parts: all but the scores.
    pub(crate) read_schema: SchemaRef,
    /// Each score column: its position in the output and its index among
    /// the parts' scores.
    pub(crate) score_positions: Vec<(usize, usize)>,
    /// The scores computed, part by part as they are read.
    pub(crate) scores: Arc<ScanScores>,
    /// Filters the scan applies to rows (pushed into a scan that computes
    /// scores, so a top-k by score can check them per candidate).
    pub(crate) filters: Vec<Arc<dyn PhysicalExpr>>,
    /// Emit rows best score first (a sort by a score pushed here).
    pub(crate) score_order: Option<ScoreOrder>,
    /// The text queries the scan answers (EXPLAIN).
    pub(crate) text: Vec<String>,
    /// The ascending sort-key ordering of the output, if the key is projected.
    pub(crate) key_ordering: Option<LexOrdering>,
    /// Whether the plan is told about `key_ordering`. Only once a sort asks
    /// for it (`try_pushdown_sort`): declared up front, DataFusion keeps
    /// the order through joins with order-preserving repartitions, which
    /// made TPC-H Q3 slower than over unordered Parquet.
    pub(crate) declare_ordering: bool,
    /// Read granules last to first and rows within them backwards.
    pub(crate) reverse: bool,
    pub(crate) fetch: Option<usize>,
    /// Dynamic filters (TopK, joins) checked against granule min/max at read time.
    pub(crate) runtime_filters: Vec<Arc<dyn PhysicalExpr>>,
    pub(crate) metrics: ExecutionPlanMetricsSet,
    /// Shared by the clones that pushdowns make; valid because they all read
    /// the same granules (only fetch, direction and runtime filters change).
    pub(crate) statistics: Arc<StatisticsCache>,
}

impl DiagonSource {
    /// Records the plan-time counts, which EXPLAIN ANALYZE shows.
    pub(crate) fn record_plan_metrics(&self) {
        let plan = &self.plan;
        let counter = |name: String, value: usize| {
            MetricBuilder::new(&self.metrics)
                .global_counter(name)
                .add(value);
        };
        counter("parts_total".into(), plan.parts_total());
        counter(
            "parts_pruned".into(),
            plan.parts_total() - plan.parts_read(),
        );
        counter("granules_total".into(), plan.granules_total());
        counter(
            "granules_pruned_by_primary_key".into(),
            plan.skipped_by(&SkipReason::PrimaryKey),
        );
        counter(
            "granules_pruned_by_minmax".into(),
            plan.skipped_by(&SkipReason::MinMax),
        );
        for reason in &plan.consulted {
            match reason {
                SkipReason::SkipIndex(column) => counter(
                    format!("granules_pruned_by_skip_index_{column}"),
                    plan.skipped_by(reason),
                ),
                SkipReason::Text(column) => counter(
                    format!("granules_pruned_by_text_{column}"),
                    plan.skipped_by(reason),
                ),
                _ => {}
            }
        }
        for (name, n) in &plan.counters {
            counter(name.clone(), *n);
        }
        counter(
            "granules_skipped_deleted".into(),
            plan.skipped_by(&SkipReason::Deleted),
        );
        counter("cache_hits".into(), plan.cache.hits() as usize);
        counter("cache_misses".into(), plan.cache.misses() as usize);
    }

    /// The rows of `granule` as the output schema has them: the scores
    /// inserted among the columns read.
    pub(crate) fn with_scores(
        &self,
        hits: &[Arc<Hits>],
        granule: GranuleBatch,
    ) -> Result<RecordBatch> {
        if self.score_positions.is_empty() {
            return Ok(granule.batch);
        }
        let rows = granule.row_numbers();
        let mut read = granule.batch.columns().iter();
        let mut columns = Vec::with_capacity(self.projected_schema.fields().len());
        for position in 0..self.projected_schema.fields().len() {
            match self.score_positions.iter().find(|(p, _)| *p == position) {
                Some((_, k)) => {
                    let scores = hits.get(*k).ok_or_else(|| {
                        DataFusionError::Internal(format!("score {k} was not computed"))
                    })?;
                    let values = scores.scores_of(rows.iter().copied());
                    columns.push(Arc::new(Float32Array::from(values)) as ArrayRef);
                }
                None => columns.push(read.next().cloned().ok_or_else(|| {
                    DataFusionError::Internal("fewer columns read than projected".into())
                })?),
            }
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        Ok(RecordBatch::try_new_with_options(
            self.projected_schema.clone(),
            columns,
            &options,
        )?)
    }

    /// Output partitions: one for a scan by score, else one per task.
    fn partitions(&self) -> usize {
        match self.score_order {
            Some(_) => 1,
            None => self.tasks.len().max(1),
        }
    }

    /// This scan emitting rows best first, if `order` is one score
    /// descending (ties broken any other way than table order are not).
    fn score_order_for(&self, order: &[PhysicalSortExpr]) -> Option<DiagonSource> {
        let [sort] = order else {
            return None;
        };
        if !sort.options.descending || self.fetch.is_some() || self.reverse {
            return None;
        }
        let column = sort
            .expr
            .downcast_ref::<datafusion::physical_expr::expressions::Column>()?;
        let (_, request) = self
            .score_positions
            .iter()
            .find(|(position, _)| *position == column.index())?;
        if self.projected_schema.field(column.index()).name() != column.name() {
            return None;
        }
        Some(DiagonSource {
            score_order: Some(ScoreOrder {
                sort: sort.clone(),
                request: *request,
            }),
            ..self.clone()
        })
    }

    /// The stream of a scan by score: partition 0 emits everything.
    fn open_top_k(&self, partition: usize, request: usize) -> SendableRecordBatchStream {
        let source = self.clone();
        let metrics = PartitionMetrics::new(self, partition);
        let candidates = MetricBuilder::new(&self.metrics).counter("topk_candidates", partition);
        let scored = MetricBuilder::new(&self.metrics).counter("topk_rows_scored", partition);
        let skipped = MetricBuilder::new(&self.metrics).counter("topk_blocks_skipped", partition);
        let checked = MetricBuilder::new(&self.metrics).counter("topk_granules_checked", partition);
        let rejected =
            MetricBuilder::new(&self.metrics).counter("topk_rejected_by_filters", partition);
        let stream = futures::stream::once(async move {
            if partition > 0 {
                return Ok(Vec::new());
            }
            let timer = metrics.baseline.elapsed_compute().timer();
            let mut counts = super::topk::TopKCounts::default();
            let searched = counted(
                &metrics.searches,
                super::topk::top_k(&source, request, source.fetch, &mut counts),
            )
            .await;
            metrics.record_searches();
            let batches = searched.map_err(|e| {
                DataFusionError::Context(format!("table '{}'", source.table_name), Box::new(e))
            })?;
            timer.done();
            candidates.add(counts.candidates);
            scored.add(counts.scored);
            skipped.add(counts.blocks_skipped);
            checked.add(counts.granules_checked);
            rejected.add(counts.rejected);
            metrics.granules_read.add(counts.granules_read);
            metrics.bytes_read.add(counts.read.bytes_read as usize);
            metrics.rows_read.add(counts.read.rows_read as usize);
            metrics.decode_time.add_duration(counts.read.decode_time);
            let batches: Vec<RecordBatch> = batches
                .into_iter()
                .map(|b| b.record_output(&metrics.baseline))
                .collect();
            metrics.baseline.done();
            Ok::<_, DataFusionError>(batches)
        })
        .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
        .try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(
            self.projected_schema.clone(),
            stream,
        ))
    }

    fn ordering(&self) -> Option<LexOrdering> {
        if let Some(order) = &self.score_order {
            return LexOrdering::new([order.sort.clone()]);
        }
        if !self.declare_ordering {
            return None;
        }
        self.available_ordering()
    }

    /// The order rows come out in, declared or not.
    fn available_ordering(&self) -> Option<LexOrdering> {
        let ordering = self.key_ordering.clone()?;
        if self.reverse {
            LexOrdering::new(ordering.iter().map(|e| e.clone().reverse()))
        } else {
            Some(ordering)
        }
    }

    /// The reads of one partition, or of all (`None`).
    fn reads(&self, partition: Option<usize>) -> Vec<(&PartPlan, Range<usize>)> {
        match partition {
            None => self
                .plan
                .parts
                .iter()
                .flat_map(|p| p.read_ranges().into_iter().map(move |r| (p, r)))
                .collect(),
            Some(i) => self
                .tasks
                .get(i)
                .map(|t| {
                    t.reads
                        .iter()
                        .map(|(p, r)| (&self.plan.parts[*p], r.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Statistics of what the scan emits before any LIMIT: the rows of the
    /// granules it reads. `partition` None is the whole scan.
    fn unlimited_statistics(&self, partition: Option<usize>) -> Result<Statistics> {
        let reads = self.reads(partition);
        let mut rows: u64 = 0;
        let mut narrowed = false;
        for (part, range) in &reads {
            for g in range.clone() {
                rows += match &part.granules[g] {
                    Granule::Scan => part.index.granule_rows(g),
                    Granule::Select(s) => {
                        narrowed = true;
                        s.rows.count_set_bits() as u64
                    }
                    Granule::Skip(_) => 0,
                };
            }
        }
        let mut stats = Statistics::new_unknown(&self.projected_schema)
            .with_num_rows(Precision::Exact(rows as usize));
        for (i, field) in self.projected_schema.fields().iter().enumerate() {
            let column = column_statistics(&reads, field.name())?;
            // Granule statistics count every row of a granule: where rows
            // are left out (deleted), they are bounds, not exact values.
            stats.column_statistics[i] = match narrowed {
                false => column,
                true => column.to_inexact(),
            };
        }
        Ok(stats)
    }
}

/// Statistics computed once per scan plan: the optimizer asks for them many
/// times while planning one query.
#[derive(Debug, Default)]
pub(crate) struct StatisticsCache {
    all: OnceLock<Statistics>,
    partitions: Mutex<HashMap<usize, Statistics>>,
}

/// Exact min/max/null count of one column over granule ranges, or unknown
/// where a granule's statistics are missing.
fn column_statistics(reads: &[(&PartPlan, Range<usize>)], name: &str) -> Result<ColumnStatistics> {
    let mut nulls = 0usize;
    let mut mins = Vec::new();
    let mut maxs = Vec::new();
    for (plan, range) in reads {
        let part = &plan.index;
        let Some(c) = part.column_position(name) else {
            return Ok(ColumnStatistics::new_unknown());
        };
        let counts = part.null_counts(c);
        let (min, max) = (part.min(c), part.max(c));
        // Nested values keep no min/max (and DataFusion has none for some,
        // maps): their null counts are exact all the same.
        let unordered = crate::encoding::layout_of(min.data_type())
            == Some(crate::encoding::Layout::Nested)
            || matches!(
                min.data_type(),
                arrow::datatypes::DataType::RunEndEncoded(..)
            );
        for g in range.clone() {
            let granule_nulls = counts.value(g) as usize;
            nulls += granule_nulls;
            let all_null = granule_nulls as u64 == part.granule_rows(g);
            if min.is_null(g) && !all_null && !unordered {
                return Ok(ColumnStatistics::new_unknown().with_null_count(Precision::Absent));
            }
        }
        if !unordered {
            mins.push(min.slice(range.start, range.len()));
            maxs.push(max.slice(range.start, range.len()));
        }
    }
    let mut stats = ColumnStatistics::new_unknown().with_null_count(Precision::Exact(nulls));
    if mins.is_empty() {
        return Ok(stats);
    }
    let concat = |arrays: &[arrow::array::ArrayRef]| {
        let refs: Vec<&dyn arrow::array::Array> = arrays.iter().map(|a| a.as_ref()).collect();
        arrow::compute::concat(&refs)
    };
    let min = min_batch(&concat(&mins)?)?;
    let max = max_batch(&concat(&maxs)?)?;
    if !min.is_null() {
        stats = stats.with_min_value(Precision::Exact(min));
    }
    if !max.is_null() {
        stats = stats.with_max_value(Precision::Exact(max));
    }
    Ok(stats)
}

impl DataSource for DiagonSource {
    fn open(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if let Some(order) = &self.score_order {
            return Ok(self.open_top_k(partition, order.request));
        }
        let task = self.tasks.get(partition).cloned().unwrap_or_default();
        let reads = read_order(&task, self.reverse);
        let metrics = PartitionMetrics::new(self, partition);
        let runtime = RuntimePruner::new(&self.runtime_filters, &self.projected_schema);
        let state = ReadState {
            source: self.clone(),
            reads,
            remaining: self.fetch,
            metrics,
            runtime,
            announced: VecDeque::new(),
            store: Arc::default(),
            parts_seen: Default::default(),
        };
        let stream = futures::stream::try_unfold(state, |mut state| async move {
            let before = state.store_totals();
            let batches = store_counted(state.store.clone(), state.next_batches()).await;
            state.record_store(before);
            Ok::<_, DataFusionError>(batches?.map(|b| (b, state)))
        })
        .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.projected_schema.clone(),
            stream,
        )))
    }

    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let plan = &self.plan;
        let sep = if matches!(t, DisplayFormatType::TreeRender) {
            "\n"
        } else {
            ", "
        };
        write!(
            f,
            "table={}{sep}parts={}/{}{sep}granules={}/{}{sep}pruned_by_primary_key={}{sep}pruned_by_minmax={}",
            self.table_name,
            plan.parts_read(),
            plan.parts_total(),
            plan.granules_read(),
            plan.granules_total(),
            plan.skipped_by(&SkipReason::PrimaryKey),
            plan.skipped_by(&SkipReason::MinMax),
        )?;
        for reason in &plan.consulted {
            match reason {
                SkipReason::SkipIndex(column) => write!(
                    f,
                    "{sep}pruned_by_skip_index_{column}={}",
                    plan.skipped_by(reason)
                )?,
                SkipReason::Text(column) => write!(
                    f,
                    "{sep}pruned_by_text_{column}={}",
                    plan.skipped_by(reason)
                )?,
                _ => {}
            }
        }
        for text in &self.text {
            write!(f, "{sep}{text}")?;
        }
        if let Some(order) = &self.score_order {
            write!(f, "{sep}best_first={}", order.sort)?;
        }
        if !self.filters.is_empty() {
            let filters: Vec<String> = self.filters.iter().map(|e| e.to_string()).collect();
            write!(f, "{sep}filters=[{}]", filters.join(", "))?;
        }
        for (name, n) in &plan.counters {
            write!(f, "{sep}{name}={n}")?;
        }
        let deleted = plan.skipped_by(&SkipReason::Deleted);
        if deleted > 0 {
            write!(f, "{sep}skipped_deleted={deleted}")?;
        }
        if let Some(fetch) = self.fetch {
            write!(f, "{sep}fetch={fetch}")?;
        }
        if self.reverse {
            write!(f, "{sep}reverse=true")?;
        }
        if matches!(t, DisplayFormatType::Verbose) {
            write!(
                f,
                ", projection={:?}, partitions={}",
                self.projected_schema
                    .fields()
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>(),
                self.tasks.len()
            )?;
            for line in plan.describe_parts() {
                write!(f, "\n  {line}")?;
            }
        }
        Ok(())
    }

    fn output_partitioning(&self) -> Partitioning {
        Partitioning::UnknownPartitioning(self.partitions())
    }

    fn eq_properties(&self) -> EquivalenceProperties {
        match self.ordering() {
            Some(ordering) => {
                EquivalenceProperties::new_with_orderings(self.projected_schema.clone(), [ordering])
            }
            None => EquivalenceProperties::new(self.projected_schema.clone()),
        }
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        let cache = &self.statistics;
        // A scan by score is one partition reading everything.
        let partition = partition.filter(|_| self.score_order.is_none());
        let base = match partition {
            None => match cache.all.get() {
                Some(stats) => stats.clone(),
                None => {
                    let stats = self.unlimited_statistics(None)?;
                    cache.all.get_or_init(|| stats).clone()
                }
            },
            Some(i) => {
                let cached = crate::sync::lock(&cache.partitions).get(&i).cloned();
                match cached {
                    Some(stats) => stats,
                    None => {
                        let stats = self.unlimited_statistics(Some(i))?;
                        crate::sync::lock(&cache.partitions).insert(i, stats.clone());
                        stats
                    }
                }
            }
        };
        // Under a LIMIT every partition may emit `fetch` rows.
        let partitions = if partition.is_none() {
            self.partitions()
        } else {
            1
        };
        // Filters taken by the scan drop rows the granule counts include.
        let base = match self.filters.is_empty() {
            true => base,
            false => base.to_inexact(),
        };
        Ok(Arc::new(base.with_fetch(self.fetch, 0, partitions)?))
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn DataSource>> {
        // A fetch already pushed here came from a LIMIT below whatever asks
        // now; the scan must honour the smaller of the two.
        let fetch = match (self.fetch, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Some(Arc::new(DiagonSource {
            fetch,
            ..self.clone()
        }))
    }

    fn fetch(&self) -> Option<usize> {
        self.fetch
    }

    fn metrics(&self) -> ExecutionPlanMetricsSet {
        self.metrics.clone()
    }

    fn try_swapping_with_projection(
        &self,
        _projection: &ProjectionExprs,
    ) -> Result<Option<Arc<dyn DataSource>>> {
        Ok(None)
    }

    fn try_pushdown_filters(
        &self,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn DataSource>>> {
        // Rows are not filtered here (the FilterExec above stays), except in
        // a scan computing scores, which takes the filters so that a top-k
        // by score checks them per candidate. Dynamic filters from TopK and
        // joins tighten while the query runs: they are kept to skip
        // granules at read time.
        let take_rows = !self.score_positions.is_empty();
        let mut pushed = Vec::with_capacity(filters.len());
        let mut source = self.clone();
        for filter in filters {
            if DynamicFilterTracking::classify(&filter).contains_dynamic_filter() {
                pushed.push(PushedDown::No);
                source.runtime_filters.push(filter);
            } else if take_rows {
                pushed.push(PushedDown::Yes);
                source.filters.push(filter);
            } else {
                pushed.push(PushedDown::No);
            }
        }
        let changed = source.runtime_filters.len() != self.runtime_filters.len()
            || source.filters.len() != self.filters.len();
        let result = FilterPushdownPropagation::with_parent_pushdown_result(pushed);
        if !changed {
            return Ok(result);
        }
        Ok(result.with_updated_node(Arc::new(source) as Arc<dyn DataSource>))
    }

    fn try_pushdown_sort(
        &self,
        order: &[PhysicalSortExpr],
    ) -> Result<SortOrderPushdownResult<Arc<dyn DataSource>>> {
        if let Some(scored) = self.score_order_for(order) {
            return Ok(SortOrderPushdownResult::Exact {
                inner: Arc::new(scored),
            });
        }
        let Some(requested) = LexOrdering::new(order.iter().cloned()) else {
            return Ok(SortOrderPushdownResult::Unsupported);
        };
        let declared = DiagonSource {
            declare_ordering: true,
            ..self.clone()
        };
        if declared
            .eq_properties()
            .ordering_satisfy(requested.clone())?
        {
            return Ok(SortOrderPushdownResult::Exact {
                inner: Arc::new(declared),
            });
        }
        // Flipping the direction changes which rows a pushed LIMIT keeps.
        if self.key_ordering.is_none() || self.fetch.is_some() {
            return Ok(SortOrderPushdownResult::Unsupported);
        }
        let flipped = DiagonSource {
            reverse: !self.reverse,
            declare_ordering: true,
            ..self.clone()
        };
        if flipped.eq_properties().ordering_satisfy(requested)? {
            return Ok(SortOrderPushdownResult::Exact {
                inner: Arc::new(flipped),
            });
        }
        Ok(SortOrderPushdownResult::Unsupported)
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for filter in self.runtime_filters.iter().chain(&self.filters) {
            if f(filter)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }
}

/// The task's reads cut into requests of at most [`GRANULES_PER_READ`]
/// granules, in the order they are to be read.
fn read_order(task: &ScanTask, reverse: bool) -> VecDeque<(usize, Range<usize>)> {
    let mut reads = VecDeque::new();
    for (part, range) in &task.reads {
        let mut start = range.start;
        while start < range.end {
            let end = (start + GRANULES_PER_READ).min(range.end);
            reads.push_back((*part, start..end));
            start = end;
        }
    }
    if reverse {
        reads.make_contiguous().reverse();
    }
    reads
}

struct PartitionMetrics {
    baseline: BaselineMetrics,
    /// What the scan's text searches did (scans that search text only).
    /// One metric per [`Counter::ALL`], in its order.
    text: Option<Vec<Count>>,
    searches: Arc<SearchCounters>,
    bytes_read: Count,
    rows_read: Count,
    granules_read: Count,
    /// Parts read on local disk and in the cold tier.
    hot_parts: Count,
    cold_parts: Count,
    /// Object-store requests sent and bytes they returned (cold parts).
    cold_requests: Count,
    cold_bytes_fetched: Count,
    /// Blocks the local read cache served, and did not hold.
    cold_cache_hits: Count,
    cold_cache_misses: Count,
    granules_pruned_dynamic: Count,
    dynamic_filter_rebuilds: Count,
    decode_time: Time,
}

impl PartitionMetrics {
    fn new(source: &DiagonSource, partition: usize) -> Self {
        let metrics = &source.metrics;
        let counter = |name: &'static str| MetricBuilder::new(metrics).counter(name, partition);
        let text = (!source.text.is_empty()).then(|| {
            Counter::ALL
                .iter()
                .map(|c| {
                    MetricBuilder::new(metrics).counter(format!("text_{}", c.name()), partition)
                })
                .collect()
        });
        PartitionMetrics {
            baseline: BaselineMetrics::new(metrics, partition),
            text,
            searches: Arc::default(),
            bytes_read: counter("bytes_read"),
            rows_read: counter("rows_read"),
            granules_read: counter("granules_read"),
            hot_parts: counter("hot_parts_read"),
            cold_parts: counter("cold_parts_read"),
            cold_requests: counter("cold_requests"),
            cold_bytes_fetched: counter("cold_bytes_fetched"),
            cold_cache_hits: counter("cold_cache_hits"),
            cold_cache_misses: counter("cold_cache_misses"),
            granules_pruned_dynamic: counter("granules_pruned_by_dynamic_filter"),
            dynamic_filter_rebuilds: counter("dynamic_filter_rebuilds"),
            decode_time: MetricBuilder::new(metrics).subset_time("decode_time", partition),
        }
    }

    /// Moves what the searches counted so far into the metrics.
    fn record_searches(&self) {
        let Some(text) = &self.text else {
            return;
        };
        for (metric, (_, n)) in text.iter().zip(self.searches.take()) {
            metric.add(n);
        }
    }
}

/// The dynamic filters of one partition's stream as a min/max pruner,
/// rebuilt only when one of them changes (as DataFusion's Parquet source
/// does), not for every read.
struct RuntimePruner {
    predicate: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    tracking: Option<DynamicFilterTracking>,
    /// The pruner for the filters as they stood when last built; `None`
    /// inside when they cannot prune.
    built: Option<Option<StatsPruner>>,
    /// Its verdict on each part's granules (by plan position), until the
    /// filters change.
    verdicts: HashMap<usize, Vec<bool>>,
}

impl RuntimePruner {
    fn new(filters: &[Arc<dyn PhysicalExpr>], schema: &SchemaRef) -> Self {
        let predicate = (!filters.is_empty())
            .then(|| datafusion::physical_expr::conjunction(filters.iter().cloned()));
        let tracking = predicate.as_ref().map(DynamicFilterTracking::classify);
        RuntimePruner {
            predicate,
            schema: schema.clone(),
            tracking,
            built: None,
            verdicts: HashMap::new(),
        }
    }

    /// Which granules of part `part` (`index`) the filters, as they stand
    /// now, may match; `None` when they cannot prune.
    fn may_match(
        &mut self,
        part: usize,
        index: &PartIndex,
        rebuilt: &Count,
    ) -> Result<Option<&[bool]>> {
        if self.current(rebuilt).is_none() {
            return Ok(None);
        }
        let Some(Some(pruner)) = &self.built else {
            return Ok(None);
        };
        let verdict = match self.verdicts.entry(part) {
            std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(pruner.may_match(index)?)
            }
        };
        Ok(Some(verdict.as_slice()))
    }

    /// The pruner for the filters as they stand now; `rebuilt` counts builds.
    fn current(&mut self, rebuilt: &Count) -> Option<&StatsPruner> {
        let predicate = self.predicate.as_ref()?;
        let changed = self
            .tracking
            .as_mut()
            .and_then(DynamicFilterTracking::watcher)
            .is_some_and(|w| w.changed());
        if self.built.is_none() || changed {
            rebuilt.add(1);
            self.verdicts.clear();
            let pruning = PruningPredicateBuilder::new()
                .with_file_schema(self.schema.clone())
                .build(predicate.clone());
            self.built = Some(pruning.map(|p| StatsPruner::new(p, Stats::MinMax)));
        }
        self.built.as_ref().and_then(Option::as_ref)
    }
}

struct ReadState {
    source: DiagonSource,
    reads: VecDeque<(usize, Range<usize>)>,
    remaining: Option<usize>,
    metrics: PartitionMetrics,
    runtime: RuntimePruner,
    /// Bytes each read at the front of `reads` announced (0 for reads of
    /// local parts): these reads were announced, the others not yet.
    announced: VecDeque<u64>,
    /// What this partition's reads cost the object store so far.
    store: Arc<StoreCounts>,
    /// The parts read so far, local and cold.
    parts_seen: std::collections::HashSet<usize>,
}

impl ReadState {
    /// Reads the next request's granules; `None` when the task is done.
    async fn next_batches(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        loop {
            if self.remaining == Some(0) {
                return Ok(None);
            }
            let Some((part, range)) = self.next_read() else {
                self.metrics.baseline.done();
                return Ok(None);
            };
            let mut ranges = self.runtime_prune(part, range)?;
            if self.source.reverse {
                ranges.reverse();
            }
            let mut out = Vec::new();
            for range in ranges {
                if self.remaining == Some(0) {
                    break;
                }
                let mut batches = self.read(part, range).await?;
                if self.source.reverse {
                    batches.reverse();
                }
                for batch in batches {
                    let batch = if self.source.reverse {
                        reverse_rows(&batch)?
                    } else {
                        batch
                    };
                    let batch = match &mut self.remaining {
                        Some(remaining) => {
                            let keep = batch.num_rows().min(*remaining);
                            *remaining -= keep;
                            batch.slice(0, keep)
                        }
                        None => batch,
                    };
                    let batch = batch.record_output(&self.metrics.baseline);
                    out.push(batch);
                    if self.remaining == Some(0) {
                        break;
                    }
                }
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
    }

    /// The object-store counters as they stand.
    fn store_totals(&self) -> [u64; 4] {
        let s = &self.store;
        [
            s.requests(),
            s.bytes_fetched(),
            s.cache_hits(),
            s.cache_misses(),
        ]
    }

    /// Adds what the object store did since `before` to the metrics.
    fn record_store(&self, before: [u64; 4]) {
        let now = self.store_totals();
        let m = &self.metrics;
        for (metric, (b, n)) in [
            &m.cold_requests,
            &m.cold_bytes_fetched,
            &m.cold_cache_hits,
            &m.cold_cache_misses,
        ]
        .into_iter()
        .zip(before.into_iter().zip(now))
        {
            metric.add(n.saturating_sub(b) as usize);
        }
    }

    /// Announces the coming reads of cold parts to their storage, up to
    /// [`READ_AHEAD_BYTES`] ahead of the reader, in rounds: once less than
    /// half of that is announced and unread, the next round goes out, one
    /// announcement per file with all of its ranges, which the store
    /// merges into few requests.
    fn announce(&mut self) {
        let mut ahead: u64 = self.announced.iter().sum();
        if ahead >= READ_AHEAD_BYTES / 2 {
            return;
        }
        // (part, file) → the ranges of it to announce, and its length.
        let mut round: HashMap<(usize, String), Announcement> = HashMap::new();
        while self.announced.len() < self.reads.len() && ahead < READ_AHEAD_BYTES {
            let (part, range) = self.reads[self.announced.len()].clone();
            let plan = &self.source.plan.parts[part];
            let mut bytes = 0;
            if plan.location.is_some()
                && let Ok(columns) = crate::plan::projection(plan, &self.source.read_schema)
            {
                for (file, ranges, len) in crate::part::granule_reads(&plan.index, &columns, range)
                {
                    bytes += ranges.iter().map(|r| r.end - r.start).sum::<u64>();
                    let announced = &mut round.entry((part, file)).or_insert((Vec::new(), len)).0;
                    for range in ranges {
                        if !announced.contains(&range) {
                            announced.push(range);
                        }
                    }
                }
            }
            self.announced.push_back(bytes);
            ahead += bytes;
        }
        for ((part, file), (ranges, len)) in round {
            self.source.plan.parts[part]
                .storage
                .prefetch(&file, &ranges, len);
        }
    }

    /// The next granules to read. Under a LIMIT, only as many granules as
    /// the remaining rows need (from the end when reading backwards), so an
    /// `ORDER BY key LIMIT n` reads about n rows per partition.
    fn next_read(&mut self) -> Option<(usize, Range<usize>)> {
        // No read-ahead under a LIMIT: the reads stop when it is met.
        if self.remaining.is_none() {
            self.announce();
        }
        let (part, range) = self.reads.pop_front()?;
        self.announced.pop_front();
        if self.parts_seen.insert(part) {
            let metric = match self.source.plan.parts[part].location {
                Some(_) => &self.metrics.cold_parts,
                None => &self.metrics.hot_parts,
            };
            metric.add(1);
        }
        let Some(remaining) = self.remaining else {
            return Some((part, range));
        };
        let index = &self.source.plan.parts[part].index;
        let mut rows = 0;
        let mut needed = 0;
        let granules: Box<dyn Iterator<Item = usize>> = if self.source.reverse {
            Box::new(range.clone().rev())
        } else {
            Box::new(range.clone())
        };
        for g in granules {
            needed += 1;
            rows += index.granule_rows(g) as usize;
            if rows >= remaining {
                break;
            }
        }
        if needed == range.len() {
            return Some((part, range));
        }
        let (now, later) = if self.source.reverse {
            (
                range.end - needed..range.end,
                range.start..range.end - needed,
            )
        } else {
            (
                range.start..range.start + needed,
                range.start + needed..range.end,
            )
        };
        self.reads.push_front((part, later));
        Some((part, now))
    }

    async fn read(&self, part: usize, range: Range<usize>) -> Result<Vec<RecordBatch>> {
        let plan = &self.source.plan.parts[part];
        let columns = crate::plan::projection(plan, &self.source.read_schema)
            .map_err(|e| e.context(format!("table '{}'", self.source.table_name)))?;
        let mut stats = ReadStats::default();
        let granules = range.len();
        let batches = read_granules(plan, &columns, &self.source.read_schema, range, &mut stats)
            .await
            .map_err(|e| e.context(format!("table '{}'", self.source.table_name)))?;
        self.metrics.bytes_read.add(stats.bytes_read as usize);
        self.metrics.rows_read.add(stats.rows_read as usize);
        self.metrics.granules_read.add(granules);
        self.metrics.decode_time.add_duration(stats.decode_time);
        // Decoding is this operator's CPU work.
        self.metrics
            .baseline
            .elapsed_compute()
            .add_duration(stats.decode_time);
        let hits = match self.source.score_positions.is_empty() {
            true => &[],
            false => {
                let scores = self.source.scores.part(&self.source.plan, part);
                let scored = counted(&self.metrics.searches, scores).await;
                self.metrics.record_searches();
                scored.map_err(|e| e.context(format!("table '{}'", self.source.table_name)))?
            }
        };
        let mut out = Vec::with_capacity(batches.len());
        for granule in batches {
            let batch = self.source.with_scores(hits, granule)?;
            let batch = match self.source.filters.is_empty() {
                true => batch,
                false => {
                    let keep = super::topk::evaluate_filters(&self.source.filters, &batch)?;
                    arrow::compute::filter_record_batch(
                        &batch,
                        &arrow::array::BooleanArray::new(keep, None),
                    )?
                }
            };
            if batch.num_rows() > 0 {
                out.push(batch);
            }
        }
        Ok(out)
    }

    /// Applies the dynamic filters, as they stand now, to the granules of `range`.
    fn runtime_prune(&mut self, part: usize, range: Range<usize>) -> Result<Vec<Range<usize>>> {
        let index = &self.source.plan.parts[part].index;
        let rebuilds = &self.metrics.dynamic_filter_rebuilds;
        let Some(keep) = self.runtime.may_match(part, index, rebuilds)? else {
            return Ok(vec![range]);
        };
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let mut pruned = 0;
        for g in range {
            if keep[g] {
                match ranges.last_mut() {
                    Some(last) if last.end == g => last.end = g + 1,
                    _ => ranges.push(g..g + 1),
                }
            } else {
                pruned += 1;
            }
        }
        self.metrics.granules_pruned_dynamic.add(pruned);
        Ok(ranges)
    }
}

fn reverse_rows(batch: &RecordBatch) -> Result<RecordBatch> {
    let n = batch.num_rows() as u32;
    let indices = UInt32Array::from_iter_values((0..n).rev());
    Ok(take_record_batch(batch, &indices)?)
}
