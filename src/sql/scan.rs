//! `DiagonSource`: the scan of a diagon table as a DataFusion `DataSource`
//! behind `DataSourceExec`, so projection, limit, sort and filter pushdown
//! follow DataFusion's own contract.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{RecordBatch, UInt32Array};
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

use super::plan::{ScanPlan, ScanTask};
use super::pruning::GranuleStats;
use crate::part::{PartIndex, ReadStats, read_granules};
use crate::storage::Storage;
use crate::table::deletes::apply_mask;

/// Granules fetched per read request; bounds memory per partition while
/// keeping requests large enough for object stores.
const GRANULES_PER_READ: usize = 8;

#[derive(Debug, Clone)]
pub struct DiagonSource {
    pub(crate) table_name: String,
    pub(crate) storage: Storage,
    pub(crate) plan: Arc<ScanPlan>,
    pub(crate) tasks: Arc<Vec<ScanTask>>,
    pub(crate) projected_schema: SchemaRef,
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
    /// Records the plan-time pruning counts, which EXPLAIN ANALYZE shows.
    pub(crate) fn record_plan_metrics(&self) {
        let c = self.plan.counts;
        let counter = |name: &'static str, value: usize| {
            MetricBuilder::new(&self.metrics)
                .global_counter(name)
                .add(value);
        };
        counter("parts_total", c.parts_total);
        counter("parts_pruned", c.parts_pruned);
        counter("granules_total", c.granules_total);
        counter("granules_pruned_by_primary_key", c.granules_pruned_primary);
        counter("granules_pruned_by_minmax", c.granules_pruned_minmax);
        for (column, pruned) in &self.plan.skip_pruned {
            MetricBuilder::new(&self.metrics)
                .global_counter(format!("granules_pruned_by_skip_index_{column}"))
                .add(*pruned);
        }
    }

    fn ordering(&self) -> Option<LexOrdering> {
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

    fn part_columns(&self, part: &PartIndex) -> Result<Vec<usize>> {
        self.projected_schema
            .fields()
            .iter()
            .map(|f| {
                part.column_position(f.name()).ok_or_else(|| {
                    DataFusionError::Execution(format!(
                        "table '{}': part '{}' lacks column '{}'",
                        self.table_name,
                        part.meta.name,
                        f.name()
                    ))
                })
            })
            .collect()
    }

    /// Statistics of what the scan emits before any LIMIT: the rows of the
    /// granules it reads. `partition` None is the whole scan.
    fn unlimited_statistics(&self, partition: Option<usize>) -> Result<Statistics> {
        let reads: Vec<(&Arc<PartIndex>, Range<usize>)> = match partition {
            None => self
                .plan
                .parts
                .iter()
                .flat_map(|p| p.ranges.iter().map(move |r| (&p.part, r.clone())))
                .collect(),
            Some(i) => self
                .tasks
                .get(i)
                .map(|t| t.reads.iter().map(|(p, r)| (p, r.clone())).collect())
                .unwrap_or_default(),
        };
        let mut rows: u64 = 0;
        let mut deleted: u64 = 0;
        for (p, r) in &reads {
            let (start, end) = (p.granule_starts[r.start], p.granule_starts[r.end]);
            rows += end - start;
            if let Some(mask) = self.plan.masks.get(&p.meta.name) {
                let slice = mask.slice(start as usize, (end - start) as usize);
                deleted += slice.count_set_bits() as u64;
            }
        }
        let mut stats = Statistics::new_unknown(&self.projected_schema)
            .with_num_rows(Precision::Exact((rows - deleted) as usize));
        for (i, field) in self.projected_schema.fields().iter().enumerate() {
            let column = column_statistics(&reads, field.name())?;
            // Granule statistics still count deleted rows: with deletions
            // they are bounds, not exact values.
            stats.column_statistics[i] = match deleted {
                0 => column,
                _ => column.to_inexact(),
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
fn column_statistics(
    reads: &[(&Arc<PartIndex>, Range<usize>)],
    name: &str,
) -> Result<ColumnStatistics> {
    let mut nulls = 0usize;
    let mut mins = Vec::new();
    let mut maxs = Vec::new();
    for (part, range) in reads {
        let Some(c) = part.column_position(name) else {
            return Ok(ColumnStatistics::new_unknown());
        };
        let counts = part.null_counts(c);
        let (min, max) = (part.min(c), part.max(c));
        for g in range.clone() {
            let granule_nulls = counts.value(g) as usize;
            nulls += granule_nulls;
            let all_null = granule_nulls as u64 == part.granule_rows(g);
            if min.is_null(g) && !all_null {
                return Ok(ColumnStatistics::new_unknown().with_null_count(Precision::Absent));
            }
        }
        mins.push(min.slice(range.start, range.len()));
        maxs.push(max.slice(range.start, range.len()));
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
        let task = self
            .tasks
            .get(partition)
            .cloned()
            .unwrap_or(ScanTask { reads: Vec::new() });
        let reads = read_order(&task, self.reverse);
        let metrics = PartitionMetrics::new(&self.metrics, partition);
        let state = ReadState {
            source: self.clone(),
            reads,
            remaining: self.fetch,
            metrics,
        };
        let stream = futures::stream::try_unfold(state, |mut state| async move {
            let batches = state.next_batches().await?;
            Ok::<_, DataFusionError>(batches.map(|b| (b, state)))
        })
        .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.projected_schema.clone(),
            stream,
        )))
    }

    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let c = self.plan.counts;
        let sep = if matches!(t, DisplayFormatType::TreeRender) {
            "\n"
        } else {
            ", "
        };
        write!(
            f,
            "table={}{sep}parts={}/{}{sep}granules={}/{}{sep}pruned_by_primary_key={}{sep}pruned_by_minmax={}",
            self.table_name,
            c.parts_total - c.parts_pruned,
            c.parts_total,
            self.plan.granules_selected(),
            c.granules_total,
            c.granules_pruned_primary,
            c.granules_pruned_minmax,
        )?;
        for (column, pruned) in &self.plan.skip_pruned {
            write!(f, "{sep}pruned_by_skip_index_{column}={pruned}")?;
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
                ", projection={:?}",
                self.projected_schema
                    .fields()
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
            )?;
        }
        Ok(())
    }

    fn output_partitioning(&self) -> Partitioning {
        Partitioning::UnknownPartitioning(self.tasks.len().max(1))
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
            self.tasks.len().max(1)
        } else {
            1
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
        // Rows are not filtered here (the FilterExec above stays), but dynamic
        // filters from TopK and joins tighten while the query runs, so they
        // are kept to skip granules at read time.
        let pushed = vec![PushedDown::No; filters.len()];
        let dynamic: Vec<_> = filters
            .into_iter()
            .filter(|f| DynamicFilterTracking::classify(f).contains_dynamic_filter())
            .collect();
        let result = FilterPushdownPropagation::with_parent_pushdown_result(pushed);
        if dynamic.is_empty() {
            return Ok(result);
        }
        let mut runtime_filters = self.runtime_filters.clone();
        runtime_filters.extend(dynamic);
        Ok(result.with_updated_node(Arc::new(DiagonSource {
            runtime_filters,
            ..self.clone()
        }) as Arc<dyn DataSource>))
    }

    fn try_pushdown_sort(
        &self,
        order: &[PhysicalSortExpr],
    ) -> Result<SortOrderPushdownResult<Arc<dyn DataSource>>> {
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
        for filter in &self.runtime_filters {
            if f(filter)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }
}

/// The task's reads cut into requests of at most [`GRANULES_PER_READ`]
/// granules, in the order they are to be read.
fn read_order(task: &ScanTask, reverse: bool) -> VecDeque<(Arc<PartIndex>, Range<usize>)> {
    let mut reads = VecDeque::new();
    for (part, range) in &task.reads {
        let mut start = range.start;
        while start < range.end {
            let end = (start + GRANULES_PER_READ).min(range.end);
            reads.push_back((part.clone(), start..end));
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
    bytes_read: Count,
    rows_read: Count,
    granules_read: Count,
    granules_pruned_dynamic: Count,
    decode_time: Time,
}

impl PartitionMetrics {
    fn new(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        PartitionMetrics {
            baseline: BaselineMetrics::new(metrics, partition),
            bytes_read: MetricBuilder::new(metrics).counter("bytes_read", partition),
            rows_read: MetricBuilder::new(metrics).counter("rows_read", partition),
            granules_read: MetricBuilder::new(metrics).counter("granules_read", partition),
            granules_pruned_dynamic: MetricBuilder::new(metrics)
                .counter("granules_pruned_by_dynamic_filter", partition),
            decode_time: MetricBuilder::new(metrics).subset_time("decode_time", partition),
        }
    }
}

struct ReadState {
    source: DiagonSource,
    reads: VecDeque<(Arc<PartIndex>, Range<usize>)>,
    remaining: Option<usize>,
    metrics: PartitionMetrics,
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
            let mut ranges = self.runtime_prune(&part, range)?;
            if self.source.reverse {
                ranges.reverse();
            }
            let mut out = Vec::new();
            for range in ranges {
                if self.remaining == Some(0) {
                    break;
                }
                let mut batches = self.read(&part, range).await?;
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

    /// The next granules to read. Under a LIMIT, only as many granules as
    /// the remaining rows need (from the end when reading backwards), so an
    /// `ORDER BY key LIMIT n` reads about n rows per partition.
    fn next_read(&mut self) -> Option<(Arc<PartIndex>, Range<usize>)> {
        let (part, range) = self.reads.pop_front()?;
        let Some(remaining) = self.remaining else {
            return Some((part, range));
        };
        let mut rows = 0;
        let mut needed = 0;
        let granules: Box<dyn Iterator<Item = usize>> = if self.source.reverse {
            Box::new(range.clone().rev())
        } else {
            Box::new(range.clone())
        };
        for g in granules {
            needed += 1;
            rows += part.granule_rows(g) as usize;
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
        self.reads.push_front((part.clone(), later));
        Some((part, now))
    }

    async fn read(&self, part: &Arc<PartIndex>, range: Range<usize>) -> Result<Vec<RecordBatch>> {
        let columns = self.source.part_columns(part)?;
        let mut stats = ReadStats::default();
        let granules = range.len();
        let batches = read_granules(
            &self.source.storage,
            part,
            &columns,
            &self.source.projected_schema,
            range.clone(),
            &mut stats,
        )
        .await
        .map_err(|e| e.context(format!("table '{}'", self.source.table_name)))?;
        let batches = match self.source.plan.masks.get(&part.meta.name) {
            None => batches,
            Some(mask) => range
                .clone()
                .zip(batches)
                .map(|(g, batch)| apply_mask(batch, mask, part.granule_starts[g] as usize))
                .filter(|b| b.as_ref().map_or(true, |b| b.num_rows() > 0))
                .collect::<crate::Result<Vec<_>>>()?,
        };
        self.metrics.bytes_read.add(stats.bytes_read as usize);
        self.metrics.rows_read.add(stats.rows_read as usize);
        self.metrics.granules_read.add(granules);
        self.metrics.decode_time.add_duration(stats.decode_time);
        // Decoding is this operator's CPU work.
        self.metrics
            .baseline
            .elapsed_compute()
            .add_duration(stats.decode_time);
        Ok(batches)
    }

    /// Applies the dynamic filters, as they stand now, to the granules of `range`.
    fn runtime_prune(&self, part: &PartIndex, range: Range<usize>) -> Result<Vec<Range<usize>>> {
        if self.source.runtime_filters.is_empty() {
            return Ok(vec![range]);
        }
        let predicate =
            datafusion::physical_expr::conjunction(self.source.runtime_filters.iter().cloned());
        let Some(pruning) = PruningPredicateBuilder::new()
            .with_file_schema(self.source.projected_schema.clone())
            .build(predicate)
        else {
            return Ok(vec![range]);
        };
        let keep = pruning.prune(&GranuleStats { part })?;
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
