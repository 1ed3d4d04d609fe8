//! Granule statistics in the shape DataFusion's `PruningPredicate` reads.
//!
//! Each granule of a part is one "container". Two views exist: the sparse
//! primary index (sort-key columns only) and the per-granule min/max of every
//! column. Pruning with them separately lets EXPLAIN ANALYZE say which index
//! skipped a granule.

use arrow::array::{ArrayRef, BooleanArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::{Column, ScalarValue};
use datafusion::physical_optimizer::pruning::PruningStatistics;
use std::collections::HashSet;

use crate::part::PartIndex;

/// Min/max/null-count statistics of every column, one container per granule.
pub struct GranuleStats<'a> {
    pub part: &'a PartIndex,
}

impl GranuleStats<'_> {
    fn position(&self, column: &Column) -> Option<usize> {
        self.part.column_position(&column.name)
    }
}

impl PruningStatistics for GranuleStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.position(column).map(|c| self.part.min(c).clone())
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.position(column).map(|c| self.part.max(c).clone())
    }

    fn num_containers(&self) -> usize {
        self.part.num_granules()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
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
