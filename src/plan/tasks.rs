//! Splits a plan into exactly as many tasks as the scan has partitions,
//! balanced by granules, so every core has the same work.
//!
//! Parts whose key ranges follow one another are chained into sorted runs
//! (a part must start at or after the previous one's last key). When there
//! are no more runs than partitions, each run is cut into contiguous
//! pieces, the pieces shared out in proportion to the runs' granules: every
//! task is then sorted by the key, and reading one backwards is a
//! descending scan (`ORDER BY key DESC LIMIT n` touches one granule per
//! task rather than one per part). Otherwise, or without a key, every
//! granule to read is laid end to end and cut into equal pieces, and the
//! scan declares no order.

use std::ops::Range;

use datafusion::common::ScalarValue;

use super::{PartPlan, ScanPlan};
use crate::part::PartIndex;

/// A unit of work for one output partition: granule ranges of parts (by
/// position in the plan), read in order.
#[derive(Debug, Clone, Default)]
pub struct ScanTask {
    pub reads: Vec<(usize, Range<usize>)>,
}

impl ScanTask {
    pub fn granules(&self) -> usize {
        self.reads.iter().map(|(_, r)| r.len()).sum()
    }
}

/// The plan's reads as `target` tasks (fewer only when there are fewer
/// granules), and whether each task is sorted by the table key.
pub fn split_tasks(plan: &ScanPlan, target: usize, keyed: bool) -> (Vec<ScanTask>, bool) {
    let target = target.max(1);
    let parts: Vec<usize> = (0..plan.parts.len())
        .filter(|&p| plan.parts[p].granules_read() > 0)
        .collect();
    if keyed {
        let runs = sorted_runs(plan, &parts);
        if runs.len() <= target {
            return (split_runs(plan, &runs, target), true);
        }
    }
    (cut(plan, &parts, target), false)
}

/// Granules each run reads.
fn run_granules(plan: &ScanPlan, run: &[usize]) -> usize {
    run.iter().map(|&p| plan.parts[p].granules_read()).sum()
}

/// Cuts each run into contiguous pieces, `target` pieces in all: each run
/// gets at least one, the rest go where they shorten the longest piece.
fn split_runs(plan: &ScanPlan, runs: &[Vec<usize>], target: usize) -> Vec<ScanTask> {
    let granules: Vec<usize> = runs.iter().map(|r| run_granules(plan, r)).collect();
    let total: usize = granules.iter().sum();
    let mut pieces = vec![1usize; runs.len()];
    let mut budget = target.min(total).saturating_sub(runs.len());
    while budget > 0 {
        // The run whose pieces are largest gets one more, if it can be cut.
        let next = (0..runs.len())
            .filter(|&r| pieces[r] < granules[r])
            .max_by(|&a, &b| (granules[a] * pieces[b]).cmp(&(granules[b] * pieces[a])));
        let Some(r) = next else { break };
        pieces[r] += 1;
        budget -= 1;
    }
    runs.iter()
        .zip(pieces)
        .flat_map(|(run, n)| cut(plan, run, n))
        .collect()
}

/// The granules to read of `parts`, in order, cut into `n` contiguous
/// tasks of nearly equal granule counts.
fn cut(plan: &ScanPlan, parts: &[usize], n: usize) -> Vec<ScanTask> {
    let total = run_granules(plan, parts);
    let n = n.clamp(1, total.max(1));
    let mut tasks = Vec::with_capacity(n);
    let mut current = ScanTask::default();
    let mut done = 0; // granules placed in finished tasks and `current`
    for &p in parts {
        for range in plan.parts[p].read_ranges() {
            let mut start = range.start;
            while start < range.end {
                // Task t ends after granule ceil((t + 1) * total / n).
                let end_of_task = ((tasks.len() + 1) * total).div_ceil(n);
                let take = (end_of_task - done).min(range.end - start);
                current.reads.push((p, start..start + take));
                done += take;
                start += take;
                if done == end_of_task {
                    tasks.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.reads.is_empty() {
        tasks.push(current);
    }
    tasks
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
struct Run {
    parts: Vec<usize>,
    tail: Option<KeySpan>,
}

impl Run {
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
fn sorted_runs(plan: &ScanPlan, parts: &[usize]) -> Vec<Vec<usize>> {
    let part = |p: usize| -> &PartPlan { &plan.parts[p] };
    let mut spans: Vec<_> = parts
        .iter()
        .map(|&p| (p, key_span(&part(p).index)))
        .collect();
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
        .is_some_and(|&p| part(p).index.meta.order_by.len() == 1);
    let mut runs: Vec<Run> = Vec::new();
    for (p, span) in spans {
        let Some(span) = span else {
            runs.push(Run {
                parts: vec![p],
                tail: None,
            });
            continue;
        };
        match runs.iter_mut().find(|run| run.accepts(&span, single_key)) {
            Some(run) => {
                run.parts.push(p);
                run.tail = Some(span);
            }
            None => runs.push(Run {
                parts: vec![p],
                tail: Some(span),
            }),
        }
    }
    runs.into_iter().map(|run| run.parts).collect()
}
