//! Reads a part: its index file, and ranges of granules of some columns.
//!
//! The reader does no planning: it is told which granules to read.

use std::ops::Range;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, SchemaRef};
use bytes::Bytes;

use super::column;
use super::index::{INDEX_FILE, PartIndex};
use super::writer::part_dir;
use crate::encoding::decode_block;
use crate::encoding::envelope::{self, ENVELOPE_FOOTER_LEN, ENVELOPE_HEADER_LEN, FileKind};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// Work done by reads, for scan metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadStats {
    pub bytes_read: u64,
    pub rows_read: u64,
    pub decode_time: Duration,
}

/// Loads and validates a part's index file.
pub async fn read_index(storage: &Storage, part: &str) -> Result<PartIndex> {
    let name = format!("{}/{INDEX_FILE}", part_dir(part));
    let bytes = storage.get(&name).await.map_err(|e| match e {
        Error::NotFound { path } => Error::corrupt(path, "index file is missing"),
        other => other,
    })?;
    let index = PartIndex::decode(&storage.location(&name), &bytes)?;
    if index.meta.name != part {
        return Err(Error::corrupt(
            storage.location(&name),
            format!("belongs to part '{}', not '{part}'", index.meta.name),
        ));
    }
    Ok(index)
}

/// The ranges of a column file's envelope a first read checks: its header
/// and its end marker. A recorded length shorter than the envelope is
/// damage.
fn envelope_ranges(location: &str, file_len: u64) -> Result<[Range<u64>; 2]> {
    let min_len = (ENVELOPE_HEADER_LEN + ENVELOPE_FOOTER_LEN) as u64;
    if file_len < min_len {
        return Err(Error::corrupt(
            location,
            "recorded length is shorter than the envelope",
        ));
    }
    Ok([0..ENVELOPE_HEADER_LEN as u64, file_len - 4..file_len])
}

/// Reads `range` of a column file, checking with the first read of each
/// file its header and footer magic (a file of the wrong kind or a newer
/// format version, a truncated footer), which granule reads alone would
/// not notice: in one request with the data where the store merges them.
async fn read_column(
    storage: &Storage,
    part: &PartIndex,
    column: usize,
    file: &str,
    range: Range<u64>,
) -> Result<Bytes> {
    let file_len = part.meta.columns[column].file_len;
    if part.envelope_checked[column].get().is_some() {
        return storage.get_range(file, range, file_len).await;
    }
    let location = storage.location(file);
    let [header, footer] = envelope_ranges(&location, file_len)?;
    let mut read = storage
        .get_ranges(file, &[header, range, footer], file_len)
        .await?;
    let (Some(footer), Some(data), Some(header)) = (read.pop(), read.pop(), read.pop()) else {
        return Err(Error::store(location, "a read returned too few ranges"));
    };
    envelope::check_header(&location, FileKind::ColumnData, &header)?;
    if !envelope::is_end_magic(&footer) {
        return Err(Error::corrupt(&location, "truncated or damaged footer"));
    }
    let _ = part.envelope_checked[column].set(());
    Ok(data)
}

/// `rows` copies of the one-row `value`, as `data_type`.
fn repeat(value: &ArrayRef, rows: usize, data_type: &DataType) -> Result<ArrayRef> {
    let indices = arrow::array::UInt32Array::from(vec![0u32; rows]);
    let array = arrow::compute::take(value.as_ref(), &indices, None)?;
    Ok(match array.data_type() == data_type {
        true => array,
        false => arrow::compute::cast(&array, data_type)?,
    })
}

/// What reading granules `granules` of columns `projection` (positions in
/// the part) reads: per column stored in the part, its file (in the
/// storage's terms), the byte ranges and the file's length. A file's first
/// read also reads its envelope's header and end marker, which are then
/// among its ranges.
pub fn granule_reads(
    part: &PartIndex,
    projection: &[usize],
    granules: Range<usize>,
) -> Vec<(String, Vec<Range<u64>>, u64)> {
    let dir = part_dir(&part.meta.name);
    projection
        .iter()
        .filter(|&&c| part.fill(c).is_none())
        .map(|&c| {
            let meta = &part.meta.columns[c];
            let mut ranges = vec![part.mark_range(c, granules.start, granules.end)];
            if part.envelope_checked[c].get().is_none()
                && let Ok(envelope) = envelope_ranges("", meta.file_len)
            {
                ranges.extend(envelope);
            }
            (format!("{dir}/{}", meta.file), ranges, meta.file_len)
        })
        .collect()
}

/// Reads granules `granules` of columns `projection` (positions in the part),
/// returning one batch per granule with `schema` (the projected table schema).
pub async fn read_granules(
    storage: &Storage,
    part: &PartIndex,
    projection: &[usize],
    schema: &SchemaRef,
    granules: Range<usize>,
    stats: &mut ReadStats,
) -> Result<Vec<RecordBatch>> {
    let dir = part_dir(&part.meta.name);
    let fetches = projection.iter().map(|&c| {
        let meta = &part.meta.columns[c];
        let file = format!("{dir}/{}", meta.file);
        let range = part.mark_range(c, granules.start, granules.end);
        async move {
            if part.fill(c).is_some() {
                return Ok(Bytes::new()); // a column the part lacks: no file
            }
            read_column(storage, part, c, &file, range).await
        }
    });
    let column_bytes: Vec<Bytes> = futures::future::try_join_all(fetches).await?;
    stats.bytes_read += column_bytes.iter().map(|b| b.len() as u64).sum::<u64>();

    let started = Instant::now();
    let mut columns: Vec<Vec<ArrayRef>> = Vec::with_capacity(projection.len());
    for ((&c, bytes), field) in projection.iter().zip(&column_bytes).zip(schema.fields()) {
        if let Some(fill) = part.fill(c) {
            let arrays = granules
                .clone()
                .map(|g| repeat(fill, part.granule_rows(g) as usize, field.data_type()))
                .collect::<Result<Vec<_>>>()?;
            columns.push(arrays);
            continue;
        }
        let file = storage.location(&format!("{dir}/{}", part.meta.columns[c].file));
        let data_type = part.data_type(c);
        let mut arrays = Vec::with_capacity(granules.len());
        let mut pos = 0;
        for g in granules.clone() {
            let corrupt = |reason: String| Error::corrupt(&file, format!("granule {g}: {reason}"));
            let (payload, used) = decode_block(&bytes[pos..]).map_err(corrupt)?;
            pos += used;
            let array = column::decode(&payload, data_type).map_err(corrupt)?;
            if array.len() as u64 != part.granule_rows(g) {
                return Err(corrupt(format!(
                    "{} rows, index says {}",
                    array.len(),
                    part.granule_rows(g)
                )));
            }
            // A column widened since the part was written (ALTER TABLE)
            // reads as its new type.
            let array = match array.data_type() == field.data_type() {
                true => array,
                false => arrow::compute::cast(&array, field.data_type())?,
            };
            arrays.push(array);
        }
        columns.push(arrays);
    }
    stats.decode_time += started.elapsed();

    let mut batches = Vec::with_capacity(granules.len());
    for (i, g) in granules.enumerate() {
        let rows = part.granule_rows(g) as usize;
        let arrays: Vec<ArrayRef> = columns.iter().map(|c| c[i].clone()).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        batches.push(RecordBatch::try_new_with_options(
            schema.clone(),
            arrays,
            &options,
        )?);
        stats.rows_read += rows as u64;
    }
    Ok(batches)
}
