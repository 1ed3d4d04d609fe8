//! Pruners: each proves, from one source of knowledge, that some granules
//! hold no row a query wants, and marks them skipped with its reason.
//!
//! - [`StatsPruner`] over the sparse primary index (key columns only) or
//!   over every column's per-granule min/max, through DataFusion's
//!   `PruningPredicate` (one container per granule);
//! - [`SkipIndexPruner`] over one column's skip index component.
//!
//! The SQL layer turns a query's filters into these pruners' inputs; the
//! planner runs them in order, each seeing only the granules its
//! predecessors left to read, so each reason counts what it alone added.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use async_trait::async_trait;
use datafusion::common::{Column, ScalarValue};
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningStatistics};

use super::{Granule, SkipReason};
use crate::error::{Error, Result};
use crate::index::skip::{SkipCondition, SkipIndexReader, SkipSpec};
use crate::part::PartIndex;
use crate::storage::Storage;

/// What a pruner may look at for one part.
pub struct PartContext<'a> {
    pub index: &'a PartIndex,
    pub storage: &'a Storage,
}

/// One source of pruning knowledge.
#[async_trait]
pub trait Pruner: Send + Sync + fmt::Debug {
    /// The reason recorded on the granules this pruner skips.
    fn reason(&self) -> SkipReason;

    /// Marks granules of the part that cannot hold a match as
    /// `Skip(self.reason())` (or narrows them to a `Select`). Granules
    /// already skipped are left as they are. Returns whether the part had
    /// what this pruner consults (a skip index, say), pruning or not.
    async fn prune(&self, part: &PartContext<'_>, granules: &mut [Granule]) -> Result<bool>;

    /// What the pruner counted over the parts it pruned, by name (EXPLAIN
    /// shows these).
    fn report(&self) -> Vec<(String, usize)> {
        Vec::new()
    }

    /// What EXPLAIN shows of a pruner that also filters rows (a text
    /// query), since its filter no longer shows above the scan.
    fn describe(&self) -> Option<String> {
        None
    }
}

/// Which statistics a [`StatsPruner`] consults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stats {
    /// The sparse primary index: a granule spans from its first key to the
    /// next granule's first key.
    PrimaryKey,
    /// The min/max of every column in every granule.
    MinMax,
}

/// Prunes with a predicate over granule statistics.
pub struct StatsPruner {
    predicate: Arc<PruningPredicate>,
    stats: Stats,
}

impl fmt::Debug for StatsPruner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StatsPruner({:?}: {})",
            self.stats,
            self.predicate.orig_expr()
        )
    }
}

impl StatsPruner {
    pub fn new(predicate: Arc<PruningPredicate>, stats: Stats) -> Self {
        StatsPruner { predicate, stats }
    }

    /// Which granules of `part` may hold matching rows (`true` = may).
    pub fn may_match(&self, part: &PartIndex) -> Result<Vec<bool>> {
        let verdict = match self.stats {
            Stats::PrimaryKey => self.predicate.prune(&PrimaryIndexStats { part }),
            Stats::MinMax => self.predicate.prune(&GranuleStats { part }),
        };
        verdict.map_err(|e| Error::Table(format!("pruning part '{}': {e}", part.meta.name)))
    }
}

#[async_trait]
impl Pruner for StatsPruner {
    fn reason(&self) -> SkipReason {
        match self.stats {
            Stats::PrimaryKey => SkipReason::PrimaryKey,
            Stats::MinMax => SkipReason::MinMax,
        }
    }

    async fn prune(&self, part: &PartContext<'_>, granules: &mut [Granule]) -> Result<bool> {
        let verdict = self.may_match(part.index)?;
        for (granule, may) in granules.iter_mut().zip(verdict) {
            if granule.is_read() && !may {
                *granule = Granule::Skip(self.reason());
            }
        }
        Ok(true)
    }
}

/// Prunes blocks of granules with one column's skip index.
#[derive(Debug)]
pub struct SkipIndexPruner {
    pub column: String,
    pub data_type: DataType,
    /// The index as the table declares it (the condition was built for it).
    pub spec: SkipSpec,
    pub condition: SkipCondition,
}

#[async_trait]
impl Pruner for SkipIndexPruner {
    fn reason(&self) -> SkipReason {
        SkipReason::SkipIndex(self.column.clone())
    }

    async fn prune(&self, part: &PartContext<'_>, granules: &mut [Granule]) -> Result<bool> {
        let reader =
            SkipIndexReader::open(part.storage, part.index, &self.column, &self.data_type).await?;
        // A part without the index, or with one of another family (values
        // against words), is read in full.
        let Some(reader) = reader.filter(|r| r.spec.is_token() == self.spec.is_token()) else {
            return Ok(false);
        };
        if !self.condition.can_prune() {
            return Ok(true);
        }
        let step = reader.spec.granularity.max(1);
        for (b, start) in (0..granules.len()).step_by(step).enumerate() {
            let block_granules = start..(start + step).min(granules.len());
            if !granules[block_granules.clone()]
                .iter()
                .any(Granule::is_read)
            {
                continue;
            }
            let Some(block) = reader.block(b).await? else {
                break;
            };
            if !self.condition.may_match(&block) {
                for granule in &mut granules[block_granules] {
                    if granule.is_read() {
                        *granule = Granule::Skip(self.reason());
                    }
                }
            }
        }
        Ok(true)
    }
}

/// Min/max/null-count statistics of every column, one container per granule.
pub struct GranuleStats<'a> {
    pub part: &'a PartIndex,
}

/// Joins a struct column and the fields of a path to one of its leaves in
/// the names pruning gives leaves (`s` `\u{1f}` `a` for `s.a`).
pub const LEAF_SEPARATOR: char = '\u{1f}';

impl GranuleStats<'_> {
    fn position(&self, column: &Column) -> Option<usize> {
        self.part.column_position(&column.name)
    }

    /// A column's statistic `stat`, or a struct leaf's (its field in the
    /// struct's statistic, NULL where the struct's is). Whole nested
    /// values have none: only leaves are compared.
    fn values(
        &self,
        column: &Column,
        stat: fn(&PartIndex, usize) -> &ArrayRef,
    ) -> Option<ArrayRef> {
        // A column's own name first, even one holding the separator.
        if let Some(c) = self.position(column) {
            let array = stat(self.part, c);
            let nested = crate::encoding::layout_of(array.data_type())
                == Some(crate::encoding::Layout::Nested);
            return (!nested).then(|| array.clone());
        }
        let mut path = column.name.split(LEAF_SEPARATOR);
        let c = self.part.column_position(path.next()?)?;
        let mut array = stat(self.part, c).clone();
        for name in path {
            let parent = array.as_struct_opt()?;
            let child = parent.column_by_name(name)?;
            array = crate::part::stats::with_parent_nulls(child, parent.nulls()).ok()?;
        }
        let nested =
            crate::encoding::layout_of(array.data_type()) == Some(crate::encoding::Layout::Nested);
        (!nested).then_some(array)
    }
}

impl PruningStatistics for GranuleStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.values(column, PartIndex::min)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.values(column, PartIndex::max)
    }

    fn num_containers(&self) -> usize {
        self.part.num_granules()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        // A leaf's NULLs are not counted (the struct's are).
        let c = self.position(column)?;
        cast(self.part.null_counts(c), &DataType::UInt64).ok()
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(self.part.row_counts().clone())
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

/// The sparse primary index: for the first key column a granule spans from
/// its first key to the next granule's first key; other key columns use
/// their min/max. Non-key columns are unknown to this index.
pub struct PrimaryIndexStats<'a> {
    pub part: &'a PartIndex,
}

impl PrimaryIndexStats<'_> {
    fn key_position(&self, column: &Column) -> Option<usize> {
        self.part
            .meta
            .order_by
            .iter()
            .position(|k| *k == column.name)
    }

    fn granules(&self) -> GranuleStats<'_> {
        GranuleStats { part: self.part }
    }
}

impl PruningStatistics for PrimaryIndexStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        match self.key_position(column)? {
            0 => Some(self.part.primary_key(0).clone()),
            _ => self.granules().min_values(column),
        }
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        match self.key_position(column)? {
            // Granule g ends at or before the first key of granule g + 1.
            0 => self.part.primary_key_upper().cloned(),
            _ => self.granules().max_values(column),
        }
    }

    fn num_containers(&self) -> usize {
        self.part.num_granules()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        self.key_position(column)?;
        self.granules().null_counts(column)
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        self.granules().row_counts()
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}
