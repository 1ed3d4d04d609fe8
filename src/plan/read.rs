//! Executes a part's plan: reads runs of granules and keeps each granule's
//! selected rows. Scans, mutations and merges all read through here.

use std::ops::Range;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;

use super::{Granule, PartPlan};
use crate::error::{Error, Result};
use crate::part::{ReadStats, read_granules as read_part_granules};

/// The rows one granule contributes.
#[derive(Debug, Clone)]
pub struct GranuleBatch {
    pub granule: usize,
    /// Part row number of the granule's first row.
    pub first_row: u64,
    /// Which of the granule's rows `batch` holds, when not all of them.
    pub selection: Option<BooleanBuffer>,
    pub batch: RecordBatch,
}

impl GranuleBatch {
    /// The part row number of each row of `batch`.
    pub fn row_numbers(&self) -> Vec<u64> {
        match &self.selection {
            None => (self.first_row..self.first_row + self.batch.num_rows() as u64).collect(),
            Some(rows) => rows
                .set_indices()
                .map(|i| self.first_row + i as u64)
                .collect(),
        }
    }
}

/// Positions in `part` of the columns of `schema`; a part lacking one is
/// damaged (every part holds every column of the table).
pub fn projection(part: &PartPlan, schema: &arrow::datatypes::Schema) -> Result<Vec<usize>> {
    schema
        .fields()
        .iter()
        .map(|f| {
            part.index.column_position(f.name()).ok_or_else(|| {
                Error::corrupt(
                    part.storage.location(&crate::part::part_dir(part.name())),
                    format!("part has no column '{}'", f.name()),
                )
            })
        })
        .collect()
}

/// Reads granules `range` of `part` (each to be read by its plan) for the
/// part's columns `projection`, as `schema`, keeping only selected rows.
/// Granules left with no rows are dropped.
pub async fn read_granules(
    part: &PartPlan,
    projection: &[usize],
    schema: &SchemaRef,
    range: Range<usize>,
    stats: &mut ReadStats,
) -> Result<Vec<GranuleBatch>> {
    let index = &part.index;
    if let Some(g) = range.clone().find(|&g| !part.granules[g].is_read()) {
        return Err(Error::Table(format!(
            "part '{}': granule {g} is not to be read",
            part.name()
        )));
    }
    let batches = read_part_granules(
        &part.storage,
        index,
        projection,
        schema,
        range.clone(),
        stats,
    )
    .await?;
    let mut out = Vec::with_capacity(batches.len());
    for (g, batch) in range.zip(batches) {
        let first_row = index.granule_starts[g];
        let (batch, selection) = match &part.granules[g] {
            Granule::Select(selection) => {
                let keep = BooleanArray::new(selection.rows.clone(), None);
                (
                    filter_record_batch(&batch, &keep)?,
                    Some(selection.rows.clone()),
                )
            }
            _ => (batch, None),
        };
        if batch.num_rows() > 0 {
            out.push(GranuleBatch {
                granule: g,
                first_row,
                selection,
                batch,
            });
        }
    }
    Ok(out)
}
