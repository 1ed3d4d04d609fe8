//! The scan plan: which granules of which parts a query reads, and why the
//! rest were skipped. Built once in `TableProvider::scan`, printed by
//! EXPLAIN, executed by readers that do no planning of their own.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use arrow::buffer::BooleanBuffer;
use arrow::datatypes::DataType;

use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningStatistics};

use super::pruning::{GranuleStats, PrimaryIndexStats};
use super::skipping::ColumnIndex;
use crate::part::PartIndex;
use crate::part::skip::SkipIndex;
use crate::table::SnapshotPin;

/// What the indexes did, for EXPLAIN and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneCounts {
    pub parts_total: usize,
    pub parts_pruned: usize,
    pub granules_total: usize,
    pub granules_pruned_primary: usize,
    pub granules_pruned_minmax: usize,
}

/// The granules to read from one part, as ascending mark ranges.
#[derive(Debug, Clone)]
pub struct PartScan {
    pub part: Arc<PartIndex>,
    pub ranges: Vec<Range<usize>>,
}

impl PartScan {
    pub fn granule_count(&self) -> usize {
        self.ranges.iter().map(|r| r.len()).sum()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ScanPlan {
    pub parts: Vec<PartScan>,
    pub counts: PruneCounts,
    /// Deletion masks of the parts that have deleted rows, by part name.
    pub masks: HashMap<String, Arc<BooleanBuffer>>,
    /// Keeps the snapshot's files from being deleted while the plan lives.
    pub pin: Option<Arc<SnapshotPin>>,
    /// Granules each skip index pruned, by column.
    pub skip_pruned: BTreeMap<String, usize>,
}

/// Predicates derived from the query's filters.
pub struct Pruners {
    /// Conjuncts over sort-key columns only, checked against the primary index.
    pub primary: Option<Arc<PruningPredicate>>,
    /// All conjuncts, checked against per-granule min/max.
    pub minmax: Option<Arc<PruningPredicate>>,
    /// The query's filters, for skip indexes; empty when pruning is off.
    pub filters: Vec<datafusion::logical_expr::Expr>,
}

/// The skip indexes loaded for one part: column, its type, the index.
pub type PartSkipIndexes = Vec<(String, DataType, Arc<SkipIndex>)>;

/// Pairs loaded skip indexes with their column's type in `schema`.
pub fn with_types(
    schema: &arrow::datatypes::Schema,
    found: Vec<(String, Arc<SkipIndex>)>,
) -> PartSkipIndexes {
    found
        .into_iter()
        .filter_map(|(column, index)| {
            let data_type = schema.field_with_name(&column).ok()?.data_type().clone();
            Some((column, data_type, index))
        })
        .collect()
}

impl Pruners {
    /// The columns the filters mention: those whose skip indexes may help.
    pub fn filter_columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = self
            .filters
            .iter()
            .flat_map(|f| f.column_refs().into_iter().map(|c| c.name.clone()))
            .collect();
        columns.sort();
        columns.dedup();
        columns
    }

    /// Which granules of `part` may hold matching rows; counts what each
    /// index excluded.
    pub fn keep_granules(&self, part: &PartIndex, counts: &mut PruneCounts) -> Result<Vec<bool>> {
        let n = part.num_granules();
        counts.granules_total += n;
        let mut keep = vec![true; n];
        if let Some(primary) = &self.primary {
            counts.granules_pruned_primary +=
                apply(primary, &PrimaryIndexStats { part }, &mut keep)?;
        }
        if let Some(minmax) = &self.minmax {
            counts.granules_pruned_minmax += apply(minmax, &GranuleStats { part }, &mut keep)?;
        }
        Ok(keep)
    }

    /// Clears `keep` for blocks a skip index proves cannot match; returns
    /// the granules each index newly excluded.
    pub fn apply_skip_indexes(
        &self,
        indexes: &PartSkipIndexes,
        keep: &mut [bool],
    ) -> Vec<(String, usize)> {
        let mut pruned = Vec::new();
        if self.filters.is_empty() {
            return pruned;
        }
        for (column, data_type, index) in indexes {
            let evaluator = ColumnIndex {
                column,
                data_type,
                kind: index.spec.kind,
            };
            let step = index.spec.granularity.max(1);
            let mut count = 0;
            for (b, block) in index.blocks.iter().enumerate() {
                let granules = (b * step).min(keep.len())..((b + 1) * step).min(keep.len());
                if granules.clone().any(|g| keep[g]) && !evaluator.may_match(&self.filters, block) {
                    for g in granules {
                        if keep[g] {
                            keep[g] = false;
                            count += 1;
                        }
                    }
                }
            }
            pruned.push((column.clone(), count));
        }
        pruned
    }
}

impl ScanPlan {
    /// Plans a scan of `parts` with `pruners` (indexes disabled: both `None`).
    pub fn build(
        parts: Vec<Arc<PartIndex>>,
        skip: &HashMap<String, PartSkipIndexes>,
        pruners: &Pruners,
    ) -> Result<ScanPlan> {
        let mut plan = ScanPlan::default();
        for part in parts {
            plan.counts.parts_total += 1;
            let mut keep = pruners.keep_granules(&part, &mut plan.counts)?;
            if let Some(indexes) = skip.get(&part.meta.name) {
                for (column, n) in pruners.apply_skip_indexes(indexes, &mut keep) {
                    *plan.skip_pruned.entry(column).or_default() += n;
                }
            }
            let ranges = ranges_of(&keep);
            if ranges.is_empty() {
                plan.counts.parts_pruned += 1;
            } else {
                plan.parts.push(PartScan { part, ranges });
            }
        }
        Ok(plan)
    }

    pub fn granules_selected(&self) -> usize {
        self.parts.iter().map(PartScan::granule_count).sum()
    }
}

/// Clears `keep` where the predicate proves a granule cannot match; returns
/// how many granules this predicate newly excluded.
fn apply(
    predicate: &PruningPredicate,
    stats: &dyn PruningStatistics,
    keep: &mut [bool],
) -> Result<usize> {
    let verdict = predicate.prune(stats)?;
    let mut pruned = 0;
    for (k, v) in keep.iter_mut().zip(verdict) {
        if *k && !v {
            *k = false;
            pruned += 1;
        }
    }
    Ok(pruned)
}

pub use crate::part::index::ranges_of;

/// A unit of work for one output partition: granule ranges read in order.
#[derive(Debug, Clone)]
pub struct ScanTask {
    pub reads: Vec<(Arc<PartIndex>, Range<usize>)>,
}

/// Splits the plan into about `target` tasks whose rows stay sorted by the
/// table key.
///
/// Parts whose key ranges follow one another are chained into sorted runs
/// (a part must start at or after the previous one's last key), and each run
/// is cut into contiguous pieces. Reading a run backwards is then a descending
/// scan, and `ORDER BY key DESC LIMIT n` touches one granule per piece rather
/// than one per part.
///
/// Returns the tasks and whether each is sorted. When parts overlap so much
/// that there are more runs than `target`, runs are packed together to keep
/// the number of partitions (and the memory they hold) bounded, and the scan
/// then declares no order.
pub fn split_tasks(plan: &ScanPlan, target: usize, keyed: bool) -> (Vec<ScanTask>, bool) {
    let target = target.max(1);
    let mut runs = if keyed {
        sorted_runs(&plan.parts)
    } else {
        vec![plan.parts.iter().collect()]
    };
    let sorted = keyed && runs.len() <= target;
    if runs.len() > target {
        runs = pack(runs, target);
    }
    let total = plan.granules_selected().max(1);
    let mut tasks = Vec::new();
    for run in runs {
        let granules: usize = run.iter().map(|s| s.granule_count()).sum();
        if granules == 0 {
            continue;
        }
        let pieces = (target * granules).div_ceil(total).clamp(1, granules);
        let per_piece = granules.div_ceil(pieces);
        let mut current = ScanTask { reads: Vec::new() };
        let mut in_current = 0;
        for scan in run {
            for range in &scan.ranges {
                let mut start = range.start;
                while start < range.end {
                    let take = (per_piece - in_current).min(range.end - start);
                    current.reads.push((scan.part.clone(), start..start + take));
                    in_current += take;
                    start += take;
                    if in_current == per_piece {
                        tasks.push(std::mem::replace(
                            &mut current,
                            ScanTask { reads: Vec::new() },
                        ));
                        in_current = 0;
                    }
                }
            }
        }
        if !current.reads.is_empty() {
            tasks.push(current);
        }
    }
    (tasks, sorted)
}

/// Packs runs into `target` groups of similar granule counts.
fn pack(runs: Vec<Vec<&PartScan>>, target: usize) -> Vec<Vec<&PartScan>> {
    let mut groups: Vec<(usize, Vec<&PartScan>)> = (0..target).map(|_| (0, Vec::new())).collect();
    let mut parts: Vec<&PartScan> = runs.into_iter().flatten().collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.granule_count()));
    for part in parts {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(granules, _)| *granules)
            .expect("target >= 1");
        lightest.0 += part.granule_count();
        lightest.1.push(part);
    }
    groups
        .into_iter()
        .map(|(_, g)| g)
        .filter(|g| !g.is_empty())
        .collect()
}

/// The first sort-key column's range in a part. NULLs sort last, so a part
/// with NULL keys ends its run.
struct KeySpan {
    first: ScalarValue,
    last: ScalarValue,
    has_nulls: bool,
}

fn key_span(part: &PartIndex) -> Option<KeySpan> {
    let column = part.column_position(part.meta.order_by.first()?)?;
    let last_granule = part.num_granules().checked_sub(1)?;
    let first = ScalarValue::try_from_array(part.primary_key(0), 0).ok()?;
    let last = ScalarValue::try_from_array(part.max(column), last_granule).ok()?;
    if first.is_null() || last.is_null() {
        return None;
    }
    let has_nulls = part.null_counts(column).iter().any(|n| n.unwrap_or(0) > 0);
    Some(KeySpan {
        first,
        last,
        has_nulls,
    })
}

/// Parts chained in key order, and the span of the last one.
struct Run<'a> {
    parts: Vec<&'a PartScan>,
    tail: Option<KeySpan>,
}

impl Run<'_> {
    /// Whether a part spanning `next` may follow this run. A single-column
    /// key may continue on an equal key; with more key columns the rest of
    /// the tuple is unknown, so the next part must start strictly after.
    fn accepts(&self, next: &KeySpan, single_key: bool) -> bool {
        match &self.tail {
            Some(tail) if !tail.has_nulls => match tail.last.partial_cmp(&next.first) {
                Some(std::cmp::Ordering::Less) => true,
                Some(std::cmp::Ordering::Equal) => single_key,
                _ => false,
            },
            _ => false,
        }
    }
}

/// Groups parts into runs that can be read one after another in key order.
fn sorted_runs(parts: &[PartScan]) -> Vec<Vec<&PartScan>> {
    let mut spans: Vec<_> = parts.iter().map(|p| (p, key_span(&p.part))).collect();
    spans.sort_by(|a, b| match (&a.1, &b.1) {
        (Some(x), Some(y)) => x
            .first
            .partial_cmp(&y.first)
            .unwrap_or(std::cmp::Ordering::Equal),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let single_key = parts
        .first()
        .is_some_and(|p| p.part.meta.order_by.len() == 1);
    let mut runs: Vec<Run> = Vec::new();
    for (scan, span) in spans {
        let Some(span) = span else {
            runs.push(Run {
                parts: vec![scan],
                tail: None,
            });
            continue;
        };
        match runs.iter_mut().find(|run| run.accepts(&span, single_key)) {
            Some(run) => {
                run.parts.push(scan);
                run.tail = Some(span);
            }
            None => runs.push(Run {
                parts: vec![scan],
                tail: Some(span),
            }),
        }
    }
    runs.into_iter().map(|run| run.parts).collect()
}
