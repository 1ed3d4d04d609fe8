//! INSERT: buffers incoming batches up to a bounded size, sorts each buffer
//! by the table key, writes it as a part, and commits all parts of the
//! statement as one new version.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{
    SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch,
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
        }
    }

    fn context(&self, e: Error) -> Error {
        e.context(format!("table '{}'", self.table.name()))
    }

    /// Adds rows; writes a part whenever the buffer reaches its bound, so
    /// memory stays bounded whatever the size of the input.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.check(&batch).map_err(|e| self.context(e))?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.buffered_rows += batch.num_rows();
        self.buffered_bytes += sliced_bytes(&batch);
        self.buffer.push(batch);
        let (max_rows, max_bytes) = (
            self.base.options.insert_block_rows,
            self.base.options.insert_block_bytes,
        );
        while self.buffered_rows >= max_rows || self.buffered_bytes >= max_bytes {
            self.flush(max_rows).await?;
        }
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
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
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
    /// keeps the rest buffered.
    async fn flush(&mut self, max_rows: usize) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let schema = self.base.schema.clone();
        // The batches' own schemas may differ in metadata or nullability flags.
        let batches = std::mem::take(&mut self.buffer)
            .into_iter()
            .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let all = concat_batches(&schema, &batches)?;
        drop(batches);
        let take = all.num_rows().min(max_rows);
        let rest = all.num_rows() - take;
        if rest > 0 {
            self.buffer.push(all.slice(take, rest));
        }
        self.buffered_bytes = self.buffered_bytes * rest / all.num_rows();
        self.buffered_rows = rest;
        let batch = self.sort(all.slice(0, take))?;
        self.write_parts(&batch).await
    }

    /// Writes `batch` (sorted) as one part, or as several when the part's
    /// index builders reach `insert_index_bytes` first: the part is cut at
    /// that granule and the next one goes on. Cut from one sorted batch,
    /// the parts' key ranges are disjoint.
    async fn write_parts(&mut self, batch: &RecordBatch) -> Result<()> {
        let step = self.layout.granularity.max(1);
        let budget = self.base.options.insert_index_bytes;
        let mut at = 0;
        while at < batch.num_rows() {
            // Registered before the first file lands, so a concurrent
            // cleanup never takes the files of a part still being written.
            let name = new_part_name();
            self.table.begin_write(&name);
            let mut writer = PartWriter::new(
                self.table.storage(),
                &name,
                self.base.schema.clone(),
                self.layout.clone(),
                0,
                Table::component_builders(&self.base),
            );
            let written = async {
                while at < batch.num_rows() {
                    let rows = step.min(batch.num_rows() - at);
                    writer.write(&batch.slice(at, rows)).await?;
                    at += rows;
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
                    return Err(self.context(e));
                }
            };
            self.rows += part.meta.rows;
            self.parts.push(PartEntry::new(&part, 0));
        }
        Ok(())
    }

    fn sort(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.layout.key.is_empty() || batch.num_rows() < 2 {
            return Ok(batch);
        }
        let columns: Vec<SortColumn> = self
            .layout
            .key
            .iter()
            .map(|&k| SortColumn {
                values: batch.column(k).clone(),
                // ASC NULLS LAST: what SQL's `ORDER BY key` means, so scans can
                // declare this ordering to DataFusion.
                options: Some(SortOptions {
                    descending: false,
                    nulls_first: false,
                }),
            })
            .collect();
        let indices = lexsort_to_indices(&columns, None)?;
        Ok(take_record_batch(&batch, &indices)?)
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
        let max_rows = self.base.options.insert_block_rows;
        while !self.buffer.is_empty() {
            self.flush(max_rows).await?;
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
    }
}
