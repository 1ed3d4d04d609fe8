//! INSERT: buffers incoming batches up to a bounded size, sorts each buffer
//! by the table key, writes it as a part, and commits all parts of the
//! statement as one new version.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, RecordBatchOptions};
use arrow::buffer::ScalarBuffer;
use arrow::compute::{
    SortColumn, SortOptions, concat, interleave_record_batch, lexsort_to_indices,
};

use super::log::PartEntry;
use super::{Snapshot, Table};
use crate::error::{Error, Result};
use crate::part::PartLayout;
use crate::part::writer::{PartWriter, new_part_name, sliced_bytes};

/// An insert in progress. Dropping it without [`commit`](Self::commit)
/// leaves the table unchanged (written parts stay unreferenced).
pub struct InsertWriter {
    table: Arc<Table>,
    base: Arc<Snapshot>,
    layout: PartLayout,
    buffer: Vec<RecordBatch>,
    buffered_rows: usize,
    buffered_bytes: usize,
    parts: Vec<PartEntry>,
    rows: u64,
    /// Whether a flush failed or was cancelled: some of the statement's
    /// rows are in parts and others are lost, so it must not commit.
    failed: bool,
    /// The part being written, registered in flight: released if the
    /// write fails, or is cancelled and the writer dropped.
    writing: Option<String>,
}

impl InsertWriter {
    pub(super) fn new(table: Arc<Table>, base: Arc<Snapshot>) -> Self {
        let layout = Table::part_layout(&base);
        InsertWriter {
            table,
            base,
            layout,
            buffer: Vec::new(),
            buffered_rows: 0,
            buffered_bytes: 0,
            parts: Vec::new(),
            rows: 0,
            failed: false,
            writing: None,
        }
    }

    fn context(&self, e: Error) -> Error {
        e.context(format!("table '{}'", self.table.name()))
    }

    /// Adds rows; writes a part whenever the buffer reaches its bound, so
    /// memory stays bounded whatever the size of the input.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.check_usable()?;
        self.check(&batch).map_err(|e| self.context(e))?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = self.to_storage(batch)?;
        self.buffered_rows += batch.num_rows();
        self.buffered_bytes += sliced_bytes(&batch);
        self.buffer.push(batch);
        let (max_rows, max_bytes) = (
            self.base.options.insert_block_rows,
            self.base.options.insert_block_bytes,
        );
        while self.buffered_rows >= max_rows || self.buffered_bytes >= max_bytes {
            self.checked_flush(max_rows).await?;
        }
        Ok(())
    }

    /// `batch` (of the table's types) with the types parts store:
    /// dictionary and run-end encoded columns as their values, before they
    /// are buffered, sorted and interleaved (which could overflow narrow
    /// dictionary keys).
    fn to_storage(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let storage = &self.base.storage_schema;
        if Arc::ptr_eq(storage, &self.base.schema) {
            return Ok(batch);
        }
        super::schema::cast_batch(&batch, storage)
    }

    /// An error once a flush failed: the statement is half written.
    fn check_usable(&self) -> Result<()> {
        match self.failed {
            true => Err(self.context(Error::Table(
                "an earlier write of this insert failed; it cannot go on or commit".into(),
            ))),
            false => Ok(()),
        }
    }

    /// [`Self::flush`], marking the insert failed unless it completes (an
    /// error, or the future dropped midway).
    async fn checked_flush(&mut self, max_rows: usize) -> Result<()> {
        self.failed = true;
        self.flush(max_rows).await?;
        self.failed = false;
        Ok(())
    }

    /// Rejects batches whose columns do not match the table, and NULLs in
    /// NOT NULL columns.
    fn check(&self, batch: &RecordBatch) -> Result<()> {
        let schema = &self.base.schema;
        if batch.num_columns() != schema.fields().len() {
            return Err(Error::Schema(format!(
                "insert has {} columns, the table has {}",
                batch.num_columns(),
                schema.fields().len()
            )));
        }
        for ((field, column), given) in schema
            .fields()
            .iter()
            .zip(batch.columns())
            .zip(batch.schema().fields())
        {
            // A session that planned the insert before an ALTER TABLE
            // renamed, dropped or added columns.
            if given.name() != field.name() {
                return Err(Error::Schema(format!(
                    "the insert gives column '{}' where the table has '{}' (the table was \
                     altered since the statement was planned?)",
                    given.name(),
                    field.name()
                )));
            }
            if column.data_type() != field.data_type() {
                return Err(Error::Schema(format!(
                    "column '{}' expects {}, insert gives {}",
                    field.name(),
                    field.data_type(),
                    column.data_type()
                )));
            }
            if !field.is_nullable() && column.null_count() > 0 {
                return Err(Error::Schema(format!(
                    "column '{}' is NOT NULL but the insert has NULLs",
                    field.name()
                )));
            }
        }
        Ok(())
    }

    /// Writes the first `max_rows` buffered rows, sorted, as one part and
    /// keeps the rest buffered. The buffer is never copied whole: the
    /// batches are read in place, or through the sort's permutation one
    /// granule at a time.
    async fn flush(&mut self, max_rows: usize) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let schema = self.base.storage_schema.clone();
        let (mut taken, mut rest) = (Vec::new(), Vec::new());
        let mut rows = 0;
        for batch in std::mem::take(&mut self.buffer) {
            // The batches' own schemas may differ in metadata or nullability
            // flags. (The row count keeps the rows of a table without columns.)
            let count = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            let batch = RecordBatch::try_new_with_options(
                schema.clone(),
                batch.columns().to_vec(),
                &count,
            )?;
            let take = (max_rows - rows).min(batch.num_rows());
            if take < batch.num_rows() {
                rest.push(batch.slice(take, batch.num_rows() - take));
            }
            if take > 0 {
                taken.push(batch.slice(0, take));
                rows += take;
            }
        }
        let all = self.buffered_rows;
        self.buffered_bytes = self.buffered_bytes * (all - rows) / all;
        self.buffered_rows = all - rows;
        self.buffer = rest;
        let mut sorted = SortedRows::new(taken, &self.layout.key)?;
        self.write_parts(&mut sorted).await
    }

    /// Writes `rows` as one part, or as several when the part's index
    /// builders reach `insert_index_bytes` first: the part is cut at that
    /// granule and the next one goes on. Cut from rows in sorted order,
    /// the parts' key ranges do not overlap, but for equal keys at a cut.
    async fn write_parts(&mut self, rows: &mut SortedRows) -> Result<()> {
        let step = self.layout.granularity.max(1);
        let budget = self.base.options.insert_index_bytes;
        while rows.remaining() > 0 {
            // Registered before the first file lands, so a concurrent
            // cleanup never takes the files of a part still being written.
            let name = new_part_name();
            self.table.begin_write(&name);
            self.writing = Some(name.clone());
            let mut writer = PartWriter::new(
                self.table.storage(),
                &name,
                self.base.storage_schema.clone(),
                self.layout.clone(),
                0,
                Table::component_builders(&self.base),
            );
            let written = async {
                while rows.remaining() > 0 {
                    for batch in rows.next(step)? {
                        writer.write(&batch).await?;
                    }
                    if writer.component_memory() >= budget {
                        break;
                    }
                }
                writer.finish().await
            }
            .await;
            let part = match written {
                Ok(part) => part,
                Err(e) => {
                    self.table.end_writes([&name]);
                    self.writing = None;
                    return Err(self.context(e));
                }
            };
            self.writing = None;
            self.rows += part.meta.rows;
            self.parts.push(PartEntry::new(&part, 0));
        }
        Ok(())
    }

    /// The names of the parts written so far (all of them after
    /// [`Self::flush_all`]).
    pub fn part_names(&self) -> Vec<String> {
        self.parts.iter().map(|p| p.name.clone()).collect()
    }

    /// Parts written so far, plus one if rows are still buffered.
    pub fn pending_parts(&self) -> usize {
        self.parts.len() + usize::from(!self.buffer.is_empty())
    }

    /// Writes what is buffered and commits the statement's parts as one
    /// version. Returns the number of rows inserted.
    pub async fn commit(mut self) -> Result<u64> {
        self.flush_all().await?;
        if self.parts.is_empty() {
            return Ok(0);
        }
        let current = self.table.snapshot().await?;
        if current.schema != self.base.schema || current.options != self.base.options {
            return Err(self.context(Error::Table(
                "the table's schema or options changed during the insert".into(),
            )));
        }
        let parts = std::mem::take(&mut self.parts);
        self.check_parts_exist(&parts).await?;
        let committed = self.table.commit_append("INSERT", parts.clone()).await;
        self.table.end_writes(parts.iter().map(|p| &p.name));
        committed?;
        self.table.schedule_merge();
        self.table.schedule_moves();
        Ok(self.rows)
    }

    /// A cleanup in another process deletes unreferenced parts older than
    /// `old_parts_lifetime`; an insert that ran longer must fail, not commit
    /// parts whose files are gone.
    async fn check_parts_exist(&self, parts: &[PartEntry]) -> Result<()> {
        for p in parts {
            let index = format!(
                "{}/{}",
                crate::part::part_dir(&p.name),
                crate::part::index::INDEX_FILE
            );
            if !self.table.storage().exists(&index).await? {
                return Err(self.context(Error::Table(format!(
                    "part '{}' was deleted before the insert committed (the insert ran longer \
                     than 'old_parts_lifetime' and another process cleaned it up)",
                    p.name
                ))));
            }
        }
        Ok(())
    }

    /// Writes every buffered row as parts (uncommitted until
    /// [`Self::commit`]), so [`Self::pending_parts`] counts them all.
    pub async fn flush_all(&mut self) -> Result<()> {
        self.check_usable()?;
        let max_rows = self.base.options.insert_block_rows;
        while !self.buffer.is_empty() {
            self.checked_flush(max_rows).await?;
        }
        Ok(())
    }

    /// Writes what is buffered and returns the parts written, uncommitted
    /// (for mutations and merges, which commit them with other changes).
    pub(super) async fn finish_parts(mut self) -> Result<Vec<PartEntry>> {
        self.flush_all().await?;
        Ok(std::mem::take(&mut self.parts))
    }
}

impl Drop for InsertWriter {
    /// An insert abandoned before its commit: its parts are garbage, which
    /// the next cleanup may take.
    fn drop(&mut self) {
        self.table.end_writes(self.parts.iter().map(|p| &p.name));
        self.table.end_writes(self.writing.iter());
    }
}

/// The rows of one flush in the table's order, handed out a granule at a
/// time: the batches themselves when the table has no key (slices, no
/// copy), or gathered through the key's sort permutation.
struct SortedRows {
    batches: Vec<RecordBatch>,
    /// The rows in key order, as positions in the batches one after the
    /// other; `None` when the batches are in order as they are.
    order: Option<ScalarBuffer<u32>>,
    /// The position of each batch's first row.
    starts: Vec<usize>,
    /// Rows handed out so far.
    at: usize,
    /// Where the next row is in `batches`, when `order` is `None`.
    batch: usize,
    offset: usize,
    rows: usize,
}

impl SortedRows {
    /// Sorts `batches` (all of the table's schema) by the `key` columns,
    /// ASC NULLS LAST: what SQL's `ORDER BY key` means, so scans can
    /// declare this ordering to DataFusion. Only the key columns are
    /// copied to sort.
    fn new(batches: Vec<RecordBatch>, key: &[usize]) -> Result<Self> {
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let order = match key.is_empty() || rows < 2 {
            true => None,
            false => {
                let columns = key
                    .iter()
                    .map(|&k| {
                        let parts: Vec<&dyn Array> =
                            batches.iter().map(|b| b.column(k).as_ref()).collect();
                        Ok(SortColumn {
                            values: concat(&parts)?,
                            options: Some(SortOptions {
                                descending: false,
                                nulls_first: false,
                            }),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let indices = lexsort_to_indices(&columns, None)?;
                drop(columns);
                Some(indices.into_parts().1)
            }
        };
        let starts = batches
            .iter()
            .scan(0, |start, b| {
                let first = *start;
                *start += b.num_rows();
                Some(first)
            })
            .collect();
        Ok(SortedRows {
            batches,
            order,
            starts,
            at: 0,
            batch: 0,
            offset: 0,
            rows,
        })
    }

    fn remaining(&self) -> usize {
        self.rows - self.at
    }

    /// The next `len` rows (fewer at the end), as one batch or as
    /// consecutive slices of the input.
    fn next(&mut self, len: usize) -> Result<Vec<RecordBatch>> {
        let len = len.min(self.remaining());
        let start = self.at;
        self.at += len;
        if let Some(order) = &self.order {
            let rows: Vec<(usize, usize)> = order[start..start + len]
                .iter()
                .map(|&i| {
                    let i = i as usize;
                    let batch = self.starts.partition_point(|&s| s <= i) - 1;
                    (batch, i - self.starts[batch])
                })
                .collect();
            let batches: Vec<&RecordBatch> = self.batches.iter().collect();
            return Ok(vec![interleave_record_batch(&batches, &rows)?]);
        }
        let mut out = Vec::new();
        let mut left = len;
        while left > 0 {
            let batch = &self.batches[self.batch];
            let take = left.min(batch.num_rows() - self.offset);
            out.push(batch.slice(self.offset, take));
            self.offset += take;
            left -= take;
            if self.offset == batch.num_rows() {
                (self.batch, self.offset) = (self.batch + 1, 0);
            }
        }
        Ok(out)
    }
}
