//! The scan plan as data: for each part, where it lives, its deletion mask,
//! and for each granule one of
//!
//! ```text
//!   part p_1   granule: 0     1     2     3     4     5
//!                       Scan  Skip  Skip  Sel.  Scan  Skip
//!                             (pk)  (pk)  (rows       (skip_index_user_id)
//!                                         3,7,9)
//! ```
//! - `Scan`: read every row of the granule;
//! - `Select(rows)`: read the granule, keep these rows (the rows a deletion
//!   mask leaves, the rows a text query matches);
//! - `Skip(reason)`: do not read it, and say why.
//!
//! [`build`] runs the [`Pruner`]s over every part, in order, each looking
//! only at granules still to be read and recording what it skipped, then
//! applies the deletion masks. The plan is built once; EXPLAIN prints it;
//! scans, DELETE, UPDATE and merges execute it through [`read`], which does
//! no planning of its own.

pub mod prune;
pub mod read;
pub mod tasks;
pub mod text;

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use arrow::buffer::BooleanBuffer;

use crate::error::Result;
use crate::part::PartIndex;
use crate::storage::{CacheCounts, Storage};

pub use prune::{PartContext, Pruner, SkipIndexPruner, StatsPruner};
pub use read::{GranuleBatch, projection, read_granules};
pub use tasks::{ScanTask, split_tasks};

/// Why a granule is not read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// The sparse primary index proves no row matches.
    PrimaryKey,
    /// The granule's min/max prove no row matches.
    MinMax,
    /// The skip index on this column proves no row matches.
    SkipIndex(String),
    /// The text index on this column (or, in a part without one, the
    /// column's values analysed) shows no row matches the text query.
    Text(String),
    /// Every row of the granule is deleted.
    Deleted,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::PrimaryKey => write!(f, "primary_key"),
            SkipReason::MinMax => write!(f, "minmax"),
            SkipReason::SkipIndex(column) => write!(f, "skip_index_{column}"),
            SkipReason::Text(column) => write!(f, "text_{column}"),
            SkipReason::Deleted => write!(f, "deleted"),
        }
    }
}

/// Rows of one granule to read.
#[derive(Debug, Clone)]
pub struct Selection {
    /// One bit per row of the granule, set for the rows to read.
    pub rows: BooleanBuffer,
}

impl Selection {
    pub fn rows(rows: BooleanBuffer) -> Self {
        Selection { rows }
    }
}

/// What to do with one granule.
#[derive(Debug, Clone)]
pub enum Granule {
    Scan,
    Select(Selection),
    Skip(SkipReason),
}

impl Granule {
    pub fn is_read(&self) -> bool {
        !matches!(self, Granule::Skip(_))
    }
}

/// A part as the planner receives it.
#[derive(Debug, Clone)]
pub struct PartInput {
    pub index: Arc<PartIndex>,
    /// Where the part's files live.
    pub storage: Storage,
    /// The cold location the part lives at; `None` on local disk.
    pub location: Option<String>,
    /// Deleted rows (bit set = deleted), if any.
    pub mask: Option<Arc<BooleanBuffer>>,
}

/// The plan for one part.
#[derive(Debug, Clone)]
pub struct PartPlan {
    pub index: Arc<PartIndex>,
    pub storage: Storage,
    /// The cold location the part lives at; `None` on local disk.
    pub location: Option<String>,
    pub mask: Option<Arc<BooleanBuffer>>,
    /// One entry per granule of the part.
    pub granules: Vec<Granule>,
}

impl PartPlan {
    pub fn name(&self) -> &str {
        &self.index.meta.name
    }

    /// Maximal runs of granules to read, ascending and disjoint.
    pub fn read_ranges(&self) -> Vec<Range<usize>> {
        let read: Vec<bool> = self.granules.iter().map(Granule::is_read).collect();
        crate::part::index::ranges_of(&read)
    }

    pub fn granules_read(&self) -> usize {
        self.granules.iter().filter(|g| g.is_read()).count()
    }

    /// The rows the plan reads, in order.
    pub fn rows_to_read(&self) -> impl Iterator<Item = u32> + Send + '_ {
        self.granules
            .iter()
            .enumerate()
            .flat_map(move |(g, granule)| {
                let start = self.index.granule_starts[g] as u32;
                let rows: Box<dyn Iterator<Item = u32> + Send> = match granule {
                    Granule::Scan => Box::new(start..start + self.index.granule_rows(g) as u32),
                    Granule::Select(s) => {
                        Box::new(s.rows.set_indices().map(move |i| start + i as u32))
                    }
                    Granule::Skip(_) => Box::new(std::iter::empty()),
                };
                rows
            })
    }

    /// The granule holding part row `row`.
    pub fn granule_of(&self, row: u64) -> usize {
        let starts = &self.index.granule_starts;
        starts.partition_point(|&s| s <= row).saturating_sub(1)
    }

    /// The first row at or after `row` in a granule the plan reads (not
    /// necessarily a row it reads: a granule may select some of its
    /// rows), or `None` past the last such granule.
    pub fn next_read_granule_row(&self, row: u64) -> Option<u64> {
        let starts = &self.index.granule_starts;
        let first = self.granule_of(row);
        (first..self.granules.len())
            .find(|&g| self.granules[g].is_read() && row < starts[g] + self.index.granule_rows(g))
            .map(|g| row.max(starts[g]))
    }

    /// Whether the plan reads part row `row`.
    pub fn reads_row(&self, row: u64) -> bool {
        let starts = &self.index.granule_starts;
        let g = self.granule_of(row);
        match self.granules.get(g) {
            Some(Granule::Scan) => row < starts[g] + self.index.granule_rows(g),
            Some(Granule::Select(s)) => {
                let at = (row - starts[g]) as usize;
                at < s.rows.len() && s.rows.value(at)
            }
            Some(Granule::Skip(_)) | None => false,
        }
    }

    /// Granules skipped, by reason.
    pub fn skipped(&self) -> BTreeMap<SkipReason, usize> {
        let mut counts = BTreeMap::new();
        for g in &self.granules {
            if let Granule::Skip(reason) = g {
                *counts.entry(reason.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// Rows the plan reads from this part (selections and masks applied).
    pub fn rows_read(&self) -> u64 {
        let index = &self.index;
        self.granules
            .iter()
            .enumerate()
            .map(|(g, granule)| match granule {
                Granule::Scan => index.granule_rows(g),
                Granule::Select(s) => s.rows.count_set_bits() as u64,
                Granule::Skip(_) => 0,
            })
            .sum()
    }
}

/// The plan of a scan, a mutation or a merge.
#[derive(Default)]
pub struct ScanPlan {
    /// Every part of the snapshot, in snapshot order, including those with
    /// nothing to read.
    pub parts: Vec<PartPlan>,
    /// Keeps the snapshot's files from being deleted while the plan lives.
    pub keep_alive: Option<Arc<dyn Any + Send + Sync>>,
    /// Cache lookups made while planning.
    pub cache: Arc<CacheCounts>,
    /// Reasons of the pruners that found something to consult in some part
    /// (a skip index on a column mentioned by the query), pruning or not.
    pub consulted: std::collections::BTreeSet<SkipReason>,
    /// What the pruners counted while planning (terms looked up, parts
    /// searched without an index), by name, for EXPLAIN.
    pub counters: BTreeMap<String, usize>,
}

impl fmt::Debug for ScanPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanPlan")
            .field("parts", &self.parts)
            .finish()
    }
}

impl ScanPlan {
    pub fn parts_total(&self) -> usize {
        self.parts.len()
    }

    /// Parts with at least one granule to read.
    pub fn parts_read(&self) -> usize {
        self.parts.iter().filter(|p| p.granules_read() > 0).count()
    }

    pub fn granules_total(&self) -> usize {
        self.parts.iter().map(|p| p.granules.len()).sum()
    }

    pub fn granules_read(&self) -> usize {
        self.parts.iter().map(PartPlan::granules_read).sum()
    }

    /// Granules skipped over all parts, by reason.
    pub fn skipped(&self) -> BTreeMap<SkipReason, usize> {
        let mut total = BTreeMap::new();
        for part in &self.parts {
            for (reason, n) in part.skipped() {
                *total.entry(reason).or_default() += n;
            }
        }
        total
    }

    pub fn skipped_by(&self, reason: &SkipReason) -> usize {
        self.parts
            .iter()
            .flat_map(|p| &p.granules)
            .filter(|g| matches!(g, Granule::Skip(r) if r == reason))
            .count()
    }

    /// One line per part: the granule ranges read and the counts skipped by
    /// each reason (EXPLAIN VERBOSE).
    pub fn describe_parts(&self) -> Vec<String> {
        self.parts
            .iter()
            .map(|part| {
                let ranges: Vec<String> = part
                    .read_ranges()
                    .iter()
                    .map(|r| format!("{}..{}", r.start, r.end))
                    .collect();
                let mut line = format!(
                    "part={} granules={}/{} read=[{}]",
                    part.name(),
                    part.granules_read(),
                    part.granules.len(),
                    ranges.join(", ")
                );
                for (reason, n) in part.skipped() {
                    line.push_str(&format!(" skipped_by_{reason}={n}"));
                }
                line
            })
            .collect()
    }
}

/// Plans `parts`: each pruner in turn marks granules it proves hold no
/// match, then the deletion masks skip or narrow what is left.
pub async fn build(parts: Vec<PartInput>, pruners: &[Arc<dyn Pruner>]) -> Result<ScanPlan> {
    let mut plan = ScanPlan::default();
    for part in parts {
        let mut granules = vec![Granule::Scan; part.index.num_granules()];
        let context = PartContext {
            index: &part.index,
            storage: &part.storage,
        };
        let in_part =
            |e: crate::error::Error| e.context(format!("part '{}'", part.index.meta.name));
        for pruner in pruners {
            if !granules.iter().any(Granule::is_read) {
                break;
            }
            if pruner
                .prune(&context, &mut granules)
                .await
                .map_err(in_part)?
            {
                plan.consulted.insert(pruner.reason());
            }
        }
        if let Some(mask) = &part.mask {
            apply_mask(&part.index, mask, &mut granules);
        }
        plan.parts.push(PartPlan {
            index: part.index,
            storage: part.storage,
            location: part.location,
            mask: part.mask,
            granules,
        });
    }
    for pruner in pruners {
        for (name, n) in pruner.report() {
            *plan.counters.entry(name).or_default() += n;
        }
    }
    Ok(plan)
}

/// Granules whose rows are all deleted are skipped; those with some
/// deleted rows read only the others.
fn apply_mask(index: &PartIndex, mask: &BooleanBuffer, granules: &mut [Granule]) {
    for (g, granule) in granules.iter_mut().enumerate() {
        let start = index.granule_starts[g] as usize;
        let deleted = mask.slice(start, index.granule_rows(g) as usize);
        if deleted.count_set_bits() == 0 {
            continue;
        }
        let live = !&deleted;
        *granule = match std::mem::replace(granule, Granule::Scan) {
            Granule::Skip(reason) => Granule::Skip(reason),
            _ if live.count_set_bits() == 0 => Granule::Skip(SkipReason::Deleted),
            Granule::Scan => Granule::Select(Selection::rows(live)),
            Granule::Select(s) => narrow(s, &live),
        };
    }
}

/// `selection` without the rows `live` does not have.
fn narrow(selection: Selection, live: &BooleanBuffer) -> Granule {
    let rows = &selection.rows & live;
    if rows.count_set_bits() == 0 {
        return Granule::Skip(SkipReason::Deleted);
    }
    Granule::Select(Selection { rows })
}
