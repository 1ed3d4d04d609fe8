//! `ORDER BY bm25(col, q) DESC [LIMIT k]` inside the scan: the scan emits
//! rows best first, so DataFusion drops its sort.
//!
//! The plan has already pruned granules (primary key, min/max, skip
//! indexes, `match` filters, deletes). Candidates are the rows the plan
//! reads, best score first (rows the query does not match score 0 and come
//! last, in table order); each is checked against the filters pushed into
//! the scan, a granule at a time and only for granules a candidate lands
//! in, until `k` pass. So `LIMIT k` returns exactly `k` rows whenever `k`
//! rows qualify, and filters never see granules no candidate reaches.
//! Equal scores keep table order (part, then row).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::interleave_record_batch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::buffer::BufferExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;

use super::scan::DiagonSource;
use crate::index::text::postings::END;
use crate::index::text::score::Hits;
use crate::index::text::topk::{Collector, Ranked, TopRows, search};
use crate::part::ReadStats;
use crate::plan::{PartPlan, read_granules};

/// What a top-k scan counted (EXPLAIN ANALYZE).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TopKCounts {
    /// Rows offered that the plan reads.
    pub candidates: usize,
    /// Rows whose score was computed in full.
    pub scored: usize,
    /// Runs of rows passed by their blocks' score bounds.
    pub blocks_skipped: usize,
    pub granules_checked: usize,
    pub rejected: usize,
    /// Granules read, to check filters and to emit rows.
    pub granules_read: usize,
    pub read: ReadStats,
}

/// The best `k` rows (all, best first, when `k` is `None`) by score
/// `request`, as output batches.
pub(crate) async fn top_k(
    source: &DiagonSource,
    request: usize,
    k: Option<usize>,
    counts: &mut TopKCounts,
) -> Result<Vec<RecordBatch>> {
    let k = k.unwrap_or(usize::MAX);
    if k == 0 {
        return Ok(Vec::new());
    }
    let plan = &source.plan;
    let score = source
        .scores
        .requests
        .get(request)
        .ok_or_else(|| DataFusionError::Internal(format!("no score {request}")))?;
    let mut checker = FilterCheck::new(source);
    let mut best = TopRows::new(k);
    for (p, part) in plan.parts.iter().enumerate() {
        if part.granules_read() == 0 {
            continue;
        }
        let mut collector = PartCollector {
            best: &mut best,
            part: p,
            plan: part,
            every_granule: part.granules.iter().all(|g| g.is_read()),
            current: None,
            checker: &mut checker,
            counts,
        };
        // Without a limit every match is wanted: no search can skip any.
        let searched = match k {
            usize::MAX => None,
            _ => {
                let reader = score.index(part).await?;
                search(&reader, &score.bound, &score.scoring, &mut collector).await?
            }
        };
        match searched {
            Some(found) => {
                collector.counts.scored += found.scored;
                collector.counts.blocks_skipped += found.blocks_skipped;
            }
            None => {
                let hits = source.scores.part(plan, p).await?[request].clone();
                collector.counts.scored += hits.len();
                for (&row, &score) in hits.rows.iter().zip(&hits.scores) {
                    if score > collector.threshold() {
                        collector.collect(row, score).await?;
                    }
                }
            }
        }
    }
    let mut accepted = best.into_sorted();
    // Then rows the query does not match, which score 0, in table order:
    // only when fewer than k matching rows qualified, so every matching
    // row that qualified is among those accepted.
    if accepted.len() < k {
        let mut taken: Vec<(usize, u32)> = accepted.iter().map(|c| (c.part, c.row)).collect();
        taken.sort_unstable();
        'parts: for (p, part) in plan.parts.iter().enumerate() {
            for row in part.rows_to_read() {
                if accepted.len() == k {
                    break 'parts;
                }
                if taken.binary_search(&(p, row)).is_ok() {
                    continue;
                }
                counts.candidates += 1;
                if checker.passes(p, row, counts).await? {
                    accepted.push(Ranked {
                        score: 0.0,
                        part: p,
                        row,
                    });
                }
            }
        }
    }
    materialize(source, request, &accepted, counts).await
}

/// Offers one part's rows to the best: a row counts if the plan reads it
/// (pruning, deletes, `match` filters) and it passes the scan's filters.
struct PartCollector<'a, 'b> {
    best: &'a mut TopRows,
    part: usize,
    plan: &'a PartPlan,
    /// Whether the plan reads every granule (then without filters every
    /// row is a candidate).
    every_granule: bool,
    /// The read granule the search is in.
    current: Option<CurrentGranule>,
    checker: &'a mut FilterCheck<'b>,
    counts: &'a mut TopKCounts,
}

#[async_trait]
impl Collector for PartCollector<'_, '_> {
    fn threshold(&self) -> f32 {
        self.best.threshold()
    }

    async fn collect(&mut self, row: u32, score: f32) -> crate::error::Result<()> {
        if let Some(taken) = self.collect_now(row, score) {
            return taken;
        }
        // A row of a read granule whose filters are not known yet.
        self.counts.candidates += 1;
        let passes = self
            .checker
            .passes(self.part, row, self.counts)
            .await
            .map_err(into_diagon)?;
        if passes {
            self.best.push(Ranked {
                score,
                part: self.part,
                row,
            });
        }
        Ok(())
    }

    /// A row is taken at once when its granule's filters are known (or
    /// there are none).
    fn collect_now(&mut self, row: u32, score: f32) -> Option<crate::error::Result<()>> {
        if !self.plan.reads_row(u64::from(row)) {
            return Some(Ok(()));
        }
        // Counted once: as a candidate here, or by `collect`.
        let counts = &mut *self.counts;
        let pass = self.checker.passes_now(self.part, row, counts)?;
        counts.candidates += 1;
        if pass {
            self.best.push(Ranked {
                score,
                part: self.part,
                row,
            });
        }
        Some(Ok(()))
    }

    /// The first row at or after `row` that may be taken, unscored
    /// before it: granules other filters pruned are passed over, and in
    /// a granule whose filters a candidate made known, rows that fail them.
    fn next_candidate(&mut self, mut row: u32) -> u32 {
        if self.every_granule && self.checker.source.filters.is_empty() {
            return row;
        }
        loop {
            let current = match &mut self.current {
                Some(c) if c.start <= row && row < c.end => c,
                _ => {
                    let Some(next) = self.plan.next_read_granule_row(u64::from(row)) else {
                        return END;
                    };
                    let g = self.plan.granule_of(next);
                    let index = &self.plan.index;
                    let start = index.granule_starts[g];
                    let end = start + index.granule_rows(g);
                    row = next as u32;
                    self.current.insert(CurrentGranule {
                        granule: g,
                        start: start as u32,
                        end: end.min(u64::from(END)) as u32,
                        passed: None,
                        generation: usize::MAX,
                    })
                }
            };
            if current.passed.is_none() && current.generation != self.checker.generation {
                current.generation = self.checker.generation;
                current.passed = self
                    .checker
                    .passed
                    .get(&(self.part, current.granule))
                    .cloned();
            }
            let Some(passed) = &current.passed else {
                return row;
            };
            let at = (row - current.start) as usize;
            match passed.slice(at, passed.len() - at).set_indices().next() {
                Some(i) => return row + i as u32,
                None if current.end == END => return END,
                None => row = current.end,
            }
        }
    }
}

/// The read granule a top-k search is in: its rows `start..end`, and
/// which of them pass the scan's filters once they are known (looked up
/// again only when the checker has evaluated another granule).
struct CurrentGranule {
    granule: usize,
    start: u32,
    end: u32,
    passed: Option<BooleanBuffer>,
    generation: usize,
}

/// A DataFusion error as diagon's: diagon's own errors (a corrupt file
/// while reading a granule) come back as they were.
fn into_diagon(error: DataFusionError) -> crate::error::Error {
    match error {
        DataFusionError::External(inner) => match inner.downcast::<crate::error::Error>() {
            Ok(diagon) => *diagon,
            Err(other) => crate::error::Error::Table(other.to_string()),
        },
        other => crate::error::Error::Table(other.to_string()),
    }
}

/// The filters pushed into the scan, evaluated a granule at a time.
struct FilterCheck<'a> {
    source: &'a DiagonSource,
    /// Whether a filter reads a score (then the part's scores are computed).
    reads_scores: bool,
    /// Per (part, granule): which of its rows pass (by row in granule).
    passed: HashMap<(usize, usize), BooleanBuffer>,
    /// Granules evaluated so far.
    generation: usize,
}

impl<'a> FilterCheck<'a> {
    fn new(source: &'a DiagonSource) -> Self {
        let reads_scores = source.filters.iter().any(|f| {
            collect_columns(f)
                .iter()
                .any(|c| source.score_positions.iter().any(|(p, _)| *p == c.index()))
        });
        FilterCheck {
            source,
            reads_scores,
            passed: HashMap::new(),
            generation: 0,
        }
    }

    async fn passes(&mut self, part: usize, row: u32, counts: &mut TopKCounts) -> Result<bool> {
        if let Some(pass) = self.passes_now(part, row, counts) {
            return Ok(pass);
        }
        let g = self.source.plan.parts[part].granule_of(u64::from(row));
        let mask = self.evaluate(part, g, counts).await?;
        counts.granules_checked += 1;
        self.passed.insert((part, g), mask);
        self.generation += 1;
        Ok(self
            .passes_now(part, row, counts)
            .expect("its granule's filters are known"))
    }

    /// Whether `row` of part `part` passes every filter, when that is
    /// known without reading (no filters, or its granule's evaluated).
    fn passes_now(&mut self, part: usize, row: u32, counts: &mut TopKCounts) -> Option<bool> {
        if self.source.filters.is_empty() {
            return Some(true);
        }
        let plan = &self.source.plan.parts[part];
        let g = plan.granule_of(u64::from(row));
        let mask = self.passed.get(&(part, g))?;
        let at = (u64::from(row) - plan.index.granule_starts[g]) as usize;
        let pass = mask.value(at);
        if !pass {
            counts.rejected += 1;
        }
        Some(pass)
    }

    /// Which rows of granule `g` of part `part` pass every filter.
    async fn evaluate(
        &self,
        part: usize,
        g: usize,
        counts: &mut TopKCounts,
    ) -> Result<BooleanBuffer> {
        let plan = &self.source.plan.parts[part];
        let len = plan.index.granule_rows(g) as usize;
        let mut bits = vec![false; len];
        let scores = match self.reads_scores {
            true => ScoreSource::Part,
            false => ScoreSource::Unread,
        };
        let (rows, batch) = read_granule(self.source, part, g, scores, counts).await?;
        let keep = evaluate_filters(&self.source.filters, &batch)?;
        let start = plan.index.granule_starts[g];
        for (i, row) in rows.into_iter().enumerate() {
            if keep.value(i) {
                bits[(row - start) as usize] = true;
            }
        }
        Ok(BooleanBuffer::from(bits))
    }
}

/// Which rows of `batch` pass every one of `filters` (NULL fails).
pub(crate) fn evaluate_filters(
    filters: &[Arc<dyn PhysicalExpr>],
    batch: &RecordBatch,
) -> Result<BooleanBuffer> {
    let mut keep = BooleanBuffer::new_set(batch.num_rows());
    for filter in filters {
        let result = filter.evaluate(batch)?.into_array(batch.num_rows())?;
        let result = result.as_boolean_opt().ok_or_else(|| {
            DataFusionError::Internal(format!("filter {filter} is not a predicate"))
        })?;
        let values = match result.nulls() {
            Some(nulls) => result.values() & nulls.inner(),
            None => result.values().clone(),
        };
        keep = &keep & &values;
    }
    Ok(keep)
}

/// Where the score columns of a granule read come from.
enum ScoreSource<'s> {
    /// Nothing reads them: zeros.
    Unread,
    /// The part's scores, every match scored.
    Part,
    /// The ranked rows' own scores for score `request` (the part's for
    /// any other score the scan computes).
    Ranked { request: usize, hits: &'s Hits },
}

/// The rows granule `g` of part `part` reads (part row numbers) and them
/// as the scan outputs them.
async fn read_granule(
    source: &DiagonSource,
    part: usize,
    g: usize,
    scores: ScoreSource<'_>,
    counts: &mut TopKCounts,
) -> Result<(Vec<u64>, RecordBatch)> {
    let plan = &source.plan.parts[part];
    let columns = crate::plan::projection(plan, &source.read_schema)?;
    counts.granules_read += 1;
    let mut batches = read_granules(
        plan,
        &columns,
        &source.read_schema,
        g..g + 1,
        &mut counts.read,
    )
    .await
    .map_err(|e| e.context(format!("table '{}'", source.table_name)))?;
    let Some(granule) = batches.pop() else {
        return Ok((
            Vec::new(),
            RecordBatch::new_empty(source.projected_schema.clone()),
        ));
    };
    let rows = granule.row_numbers();
    let requests = source.scores.requests.len();
    let hits: Vec<Arc<Hits>> = match scores {
        _ if source.score_positions.is_empty() => Vec::new(),
        ScoreSource::Unread => (0..requests).map(|_| Arc::new(Hits::default())).collect(),
        ScoreSource::Part => source.scores.part(&source.plan, part).await?.to_vec(),
        ScoreSource::Ranked { request, hits } if requests == 1 => {
            debug_assert_eq!(request, 0);
            vec![Arc::new(hits.clone())]
        }
        ScoreSource::Ranked { request, hits } => {
            let mut all = source.scores.part(&source.plan, part).await?.to_vec();
            all[request] = Arc::new(hits.clone());
            all
        }
    };
    let batch = source.with_scores(&hits, granule)?;
    Ok((rows, batch))
}

/// The output rows of `accepted`, in its order.
async fn materialize(
    source: &DiagonSource,
    request: usize,
    accepted: &[Ranked],
    counts: &mut TopKCounts,
) -> Result<Vec<RecordBatch>> {
    if accepted.is_empty() {
        return Ok(Vec::new());
    }
    // Each part's ranked rows with their scores, by row.
    let mut ranked: HashMap<usize, Vec<(u32, f32)>> = HashMap::new();
    for c in accepted {
        ranked.entry(c.part).or_default().push((c.row, c.score));
    }
    let ranked: HashMap<usize, Hits> = ranked
        .into_iter()
        .map(|(part, mut rows)| {
            rows.sort_unstable_by_key(|(row, _)| *row);
            let (rows, scores) = rows.into_iter().unzip();
            (part, Hits { rows, scores })
        })
        .collect();
    let mut granules: Vec<(usize, usize)> = accepted
        .iter()
        .map(|c| {
            (
                c.part,
                source.plan.parts[c.part].granule_of(u64::from(c.row)),
            )
        })
        .collect();
    granules.sort_unstable();
    granules.dedup();
    // Each granule read, with the part rows it yielded (ascending).
    let mut batches = Vec::with_capacity(granules.len());
    let mut read_rows = Vec::with_capacity(granules.len());
    for &(part, g) in &granules {
        let scores = ScoreSource::Ranked {
            request,
            hits: &ranked[&part],
        };
        let (rows, batch) = read_granule(source, part, g, scores, counts).await?;
        read_rows.push(rows);
        batches.push(batch);
    }
    let indices = accepted
        .iter()
        .map(|c| {
            let plan = &source.plan.parts[c.part];
            let row = u64::from(c.row);
            let b = granules
                .binary_search(&(c.part, plan.granule_of(row)))
                .map_err(|_| DataFusionError::Internal(format!("granule of row {row} not read")))?;
            let i = read_rows[b]
                .binary_search(&row)
                .map_err(|_| DataFusionError::Internal(format!("row {row} not read")))?;
            Ok((b, i))
        })
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    // Output in batches of the session's usual size.
    let mut out = Vec::new();
    for chunk in indices.chunks(8192) {
        out.push(interleave_record_batch(&refs, chunk)?);
    }
    Ok(out)
}

/// Hands the LIMIT above a scan that emits rows best first to the scan,
/// so that it knows `k`: DataFusion keeps the limit above the projection
/// a score's alias adds, where the scan would not see it.
#[derive(Debug, Default)]
pub struct ScoreLimitRule;

impl PhysicalOptimizerRule for ScoreLimitRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let limited = plan
            .transform_down(|node| {
                let fetch = if let Some(limit) = node.downcast_ref::<GlobalLimitExec>() {
                    limit.fetch().map(|f| f + limit.skip())
                } else {
                    node.downcast_ref::<LocalLimitExec>()
                        .map(LocalLimitExec::fetch)
                };
                let Some(fetch) = fetch else {
                    return Ok(Transformed::no(node));
                };
                let [child] = node.children()[..] else {
                    return Ok(Transformed::no(node));
                };
                match with_fetch_below(child, fetch)? {
                    Some(child) => Ok(Transformed::yes(replace_children_if_necessary(
                        node,
                        vec![child],
                    )?)),
                    None => Ok(Transformed::no(node)),
                }
            })
            .data()?;
        // Without a limit the scan would hold every row to order them:
        // DataFusion's sort, which can spill, does that instead.
        limited.transform_up(sort_unlimited).data()
    }

    fn name(&self) -> &str {
        "diagon_score_limit"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A best-first scan without a limit, as the scan unordered under a sort.
fn sort_unlimited(node: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
        return Ok(Transformed::no(node));
    };
    let Some(source) = exec.data_source().downcast_ref::<DiagonSource>() else {
        return Ok(Transformed::no(node));
    };
    let (Some(order), None) = (&source.score_order, source.fetch) else {
        return Ok(Transformed::no(node));
    };
    let ordering = LexOrdering::new([order.sort.clone()])
        .ok_or_else(|| DataFusionError::Internal("an empty score order".into()))?;
    let unordered = DiagonSource {
        score_order: None,
        ..source.clone()
    };
    let scan: Arc<dyn ExecutionPlan> = Arc::new(exec.clone().with_data_source(Arc::new(unordered)));
    let sort = SortExec::new(ordering.clone(), scan).with_preserve_partitioning(true);
    let merged = SortPreservingMergeExec::new(ordering, Arc::new(sort));
    Ok(Transformed::yes(Arc::new(merged)))
}

/// `plan` with `fetch` given to the best-first scan below it, through
/// nodes that keep every row in order (projections, cooperative and
/// buffering wrappers); `None` when there is no such scan.
fn with_fetch_below(
    plan: &Arc<dyn ExecutionPlan>,
    fetch: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(exec) = plan.downcast_ref::<DataSourceExec>() {
        let Some(source) = exec.data_source().downcast_ref::<DiagonSource>() else {
            return Ok(None);
        };
        if source.score_order.is_none() || source.fetch.is_some_and(|f| f <= fetch) {
            return Ok(None);
        }
        let limited = DiagonSource {
            fetch: Some(fetch),
            ..source.clone()
        };
        return Ok(Some(Arc::new(
            exec.clone().with_data_source(Arc::new(limited)),
        )));
    }
    let passes_rows = plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<CooperativeExec>().is_some()
        || plan.downcast_ref::<BufferExec>().is_some();
    let [child] = plan.children()[..] else {
        return Ok(None);
    };
    if !passes_rows {
        return Ok(None);
    }
    Ok(match with_fetch_below(child, fetch)? {
        Some(child) => Some(replace_children_if_necessary(plan.clone(), vec![child])?),
        None => None,
    })
}
