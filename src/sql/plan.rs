//! The scan plan: which granules of which parts a query reads, and why the
//! rest were skipped. Built once in `TableProvider::scan`, printed by
//! EXPLAIN, executed by readers that do no planning of their own.

use std::ops::Range;
use std::sync::Arc;

use datafusion::error::Result;
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningStatistics};

use super::pruning::{GranuleStats, PrimaryIndexStats};
use crate::part::PartIndex;

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
}

/// Predicates derived from the query's filters.
pub struct Pruners {
    /// Conjuncts over sort-key columns only, checked against the primary index.
    pub primary: Option<Arc<PruningPredicate>>,
    /// All conjuncts, checked against per-granule min/max.
    pub minmax: Option<Arc<PruningPredicate>>,
}

impl ScanPlan {
    /// Plans a scan of `parts` with `pruners` (indexes disabled: both `None`).
    pub fn build(parts: Vec<Arc<PartIndex>>, pruners: &Pruners) -> Result<ScanPlan> {
        let mut plan = ScanPlan::default();
        for part in parts {
            let n = part.num_granules();
            plan.counts.parts_total += 1;
            plan.counts.granules_total += n;
            let mut keep = vec![true; n];
            if let Some(primary) = &pruners.primary {
                let pruned = apply(primary, &PrimaryIndexStats { part: &part }, &mut keep)?;
                plan.counts.granules_pruned_primary += pruned;
            }
            if let Some(minmax) = &pruners.minmax {
                let pruned = apply(minmax, &GranuleStats { part: &part }, &mut keep)?;
                plan.counts.granules_pruned_minmax += pruned;
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

    pub fn rows_selected(&self) -> u64 {
        self.parts
            .iter()
            .flat_map(|p| {
                p.ranges
                    .iter()
                    .map(move |r| p.part.granule_starts[r.end] - p.part.granule_starts[r.start])
            })
            .sum()
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

/// Maximal runs of `true` as ranges.
pub fn ranges_of(keep: &[bool]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = None;
    for (i, &k) in keep.iter().enumerate() {
        match (k, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                ranges.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        ranges.push(s..keep.len());
    }
    ranges
}

/// A unit of work for one output partition: granule ranges read in order.
#[derive(Debug, Clone)]
pub struct ScanTask {
    pub reads: Vec<(Arc<PartIndex>, Range<usize>)>,
}

/// Splits the plan into about `target` tasks. A task never spans two parts,
/// so each task's rows stay sorted by the key when the table has one.
pub fn split_tasks(plan: &ScanPlan, target: usize) -> Vec<ScanTask> {
    let total = plan.granules_selected().max(1);
    let mut tasks = Vec::new();
    for scan in &plan.parts {
        let granules = scan.granule_count();
        let pieces = (target * granules)
            .div_ceil(total)
            .clamp(1, granules.max(1));
        let per_piece = granules.div_ceil(pieces);
        let mut current = ScanTask { reads: Vec::new() };
        let mut in_current = 0;
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
        if !current.reads.is_empty() {
            tasks.push(current);
        }
    }
    tasks
}
