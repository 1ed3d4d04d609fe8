//! Writes one immutable part from rows already sorted by the table's key.
//!
//! Column files are written first, the index file last; none of them is
//! visible to readers until the table commits the part to its log.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion_functions_aggregate_common::min_max::{max_batch, min_batch};
use futures::{StreamExt, TryStreamExt};

use super::column;
use super::index::{self, ColumnMeta, INDEX_FILE, PartIndex, PartMeta, SkipIndexMeta};
use super::skip::{Block, SkipIndex, SkipSpec};
use crate::encoding::envelope::{self, FileKind};
use crate::encoding::{CodecChain, encode_block};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// How to lay out a part: the table options that matter to the writer.
#[derive(Debug, Clone)]
pub struct PartLayout {
    /// Rows per granule, at most.
    pub granularity: usize,
    /// Uncompressed bytes per granule, at most (a granule has at least one
    /// row): wide strings make granules of fewer rows, not huge ones.
    pub granularity_bytes: usize,
    /// Parts whose rows take fewer bytes (in memory) than this are written
    /// compact: all columns in one data file.
    pub min_bytes_for_wide_part: usize,
    /// Positions of the sort-key columns in the batch schema.
    pub key: Vec<usize>,
    /// Codec of each column, by position.
    pub codecs: Vec<CodecChain>,
    /// Skip indexes: column position and declaration.
    pub skip_indexes: Vec<(usize, SkipSpec)>,
}

/// Directory of a part inside the table.
pub fn part_dir(name: &str) -> String {
    format!("parts/{name}")
}

/// A fresh, unique part name.
pub fn new_part_name() -> String {
    format!("p_{}", uuid::Uuid::new_v4().simple())
}

/// The data file of a compact part.
pub const COMPACT_FILE: &str = "data.bin";

/// Row counts of the granules of `batch`: up to `granularity` rows, and
/// up to `granularity_bytes` bytes of values (at least one row each).
fn granule_sizes(batch: &RecordBatch, granularity: usize, granularity_bytes: usize) -> Vec<usize> {
    let rows = batch.num_rows();
    let fixed: usize = batch
        .columns()
        .iter()
        .map(|c| match column::layout_of(c.data_type()) {
            Some(column::Layout::Fixed(width)) => width,
            _ => 1,
        })
        .sum();
    let varlen: Vec<Vec<usize>> = batch
        .columns()
        .iter()
        .filter(|c| {
            matches!(
                column::layout_of(c.data_type()),
                Some(column::Layout::VarLen)
            )
        })
        .map(|c| column::value_lengths(c.as_ref()))
        .collect();
    let mut sizes = Vec::new();
    let (mut count, mut bytes) = (0, 0);
    for row in 0..rows {
        let row_bytes = fixed + varlen.iter().map(|l| l[row] + 4).sum::<usize>();
        if count > 0 && (count == granularity || bytes + row_bytes > granularity_bytes) {
            sizes.push(count);
            (count, bytes) = (0, 0);
        }
        count += 1;
        bytes += row_bytes;
    }
    if count > 0 {
        sizes.push(count);
    }
    sizes
}

/// One column's encoded file and what the index records about it.
struct EncodedColumn {
    bytes: Vec<u8>,
    marks: Vec<u64>,
    mins: Vec<ScalarValue>,
    maxs: Vec<ScalarValue>,
    nulls: Vec<u32>,
    uncompressed: u64,
}

/// Writes `batch` (sorted) as the new part `name` (from [`new_part_name`])
/// and returns its index.
pub async fn write_part(
    storage: &Storage,
    name: &str,
    batch: &RecordBatch,
    layout: &PartLayout,
    level: u32,
) -> Result<PartIndex> {
    let name = name.to_string();
    let dir = part_dir(&name);
    let granularity = layout.granularity.max(1);
    let sizes = granule_sizes(batch, granularity, layout.granularity_bytes.max(1));
    let schema = batch.schema();
    let compact = batch.get_array_memory_size() < layout.min_bytes_for_wide_part;

    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut column_metas = Vec::new();
    let mut encoded = Vec::new();
    // A compact part's data file: every column's blocks, one column after
    // the other, in one envelope.
    let mut shared = envelope::header(FileKind::ColumnData).to_vec();
    for (i, array) in batch.columns().iter().enumerate() {
        let field = schema.field(i);
        let codec = &layout.codecs[i];
        let mut column = encode_column(array, &sizes, codec)
            .map_err(|e| e.context(format!("column '{}'", field.name())))?;
        let blocks = &column.bytes[envelope::ENVELOPE_HEADER_LEN..];
        let (file, data_start, data_end) = if compact {
            let start = shared.len() as u64;
            let shift = start - envelope::ENVELOPE_HEADER_LEN as u64;
            column.marks.iter_mut().for_each(|m| *m += shift);
            shared.extend_from_slice(blocks);
            (COMPACT_FILE.to_string(), start, shared.len() as u64)
        } else {
            let header = envelope::ENVELOPE_HEADER_LEN as u64;
            let end = header + blocks.len() as u64;
            let mut bytes = std::mem::take(&mut column.bytes);
            envelope::append_footer(&mut bytes);
            let file = format!("c{i}.bin");
            files.push((format!("{dir}/{file}"), bytes));
            (file, header, end)
        };
        column_metas.push(ColumnMeta {
            name: field.name().clone(),
            data_type: field.data_type().to_string(),
            nullable: field.is_nullable(),
            codec: codec.to_string(),
            file,
            file_len: 0, // set below, once the file is complete
            data_start,
            data_end,
            compressed_bytes: data_end - data_start,
            uncompressed_bytes: column.uncompressed,
        });
        encoded.push(column);
    }
    if compact {
        envelope::append_footer(&mut shared);
        files.push((format!("{dir}/{COMPACT_FILE}"), shared));
    }
    for meta in &mut column_metas {
        let path = format!("{dir}/{}", meta.file);
        meta.file_len = files
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(0, |(_, bytes)| bytes.len() as u64);
    }

    let mut skip_metas = Vec::new();
    for &(c, spec) in layout.skip_indexes.iter().filter(|(_, s)| s.has_file()) {
        let column = batch.column(c);
        let mut blocks = Vec::new();
        let mut start = 0;
        for block in sizes.chunks(spec.granularity.max(1)) {
            let rows: usize = block.iter().sum();
            blocks.push(Block::build(&spec, &column.slice(start, rows))?);
            start += rows;
        }
        let file = format!("k{c}.skp");
        files.push((format!("{dir}/{file}"), SkipIndex { spec, blocks }.encode()));
        skip_metas.push(SkipIndexMeta {
            column: schema.field(c).name().clone(),
            spec: spec.to_string(),
            file,
        });
    }

    let granule_table = build_granule_table(batch, layout, &sizes, &encoded)?;
    let meta = PartMeta {
        name: name.clone(),
        rows: batch.num_rows() as u64,
        level,
        granularity: granularity as u32,
        order_by: layout
            .key
            .iter()
            .map(|&k| schema.field(k).name().clone())
            .collect(),
        columns: column_metas,
        skip_indexes: skip_metas,
    };
    let part = PartIndex::new(meta, granule_table)?;

    let mut names: Vec<String> = files.iter().map(|(path, _)| path.clone()).collect();
    futures::stream::iter(files)
        .map(|(path, bytes)| async move { storage.put(&path, bytes).await })
        .buffer_unordered(4)
        .try_collect::<Vec<_>>()
        .await?;
    let index = format!("{dir}/{INDEX_FILE}");
    storage.put(&index, part.encode()?).await?;
    // Durable before any commit can name the part.
    names.push(index);
    storage.sync(names).await?;
    Ok(part)
}

/// A column's blocks after an envelope header (no footer yet), one block
/// per granule of `sizes` rows.
fn encode_column(array: &ArrayRef, sizes: &[usize], codec: &CodecChain) -> Result<EncodedColumn> {
    let mut bytes = envelope::header(FileKind::ColumnData).to_vec();
    let mut payload = Vec::new();
    let mut out = EncodedColumn {
        bytes: Vec::new(),
        marks: Vec::new(),
        mins: Vec::new(),
        maxs: Vec::new(),
        nulls: Vec::new(),
        uncompressed: 0,
    };
    let mut offset = 0;
    for &len in sizes {
        let granule = array.slice(offset, len);
        payload.clear();
        column::encode(granule.as_ref(), &codec.transforms, &mut payload)?;
        out.uncompressed += payload.len() as u64;
        out.marks.push(bytes.len() as u64);
        encode_block(codec.compressor, &payload, &mut bytes)?;
        let (min, max) = min_max(&granule)?;
        out.mins.push(min);
        out.maxs.push(max);
        out.nulls.push(granule.null_count() as u32);
        offset += len;
    }
    out.bytes = bytes;
    Ok(out)
}

/// Minimum and maximum of a granule; null scalars where the type has no
/// order the statistics kernels know (pruning then keeps the granule).
fn min_max(granule: &ArrayRef) -> Result<(ScalarValue, ScalarValue)> {
    let unknown = || ScalarValue::try_from(granule.data_type());
    match (min_batch(granule), max_batch(granule)) {
        (Ok(min), Ok(max)) => Ok((min, max)),
        _ => {
            let null = unknown().map_err(|e| Error::Schema(e.to_string()))?;
            Ok((null.clone(), null))
        }
    }
}

fn build_granule_table(
    batch: &RecordBatch,
    layout: &PartLayout,
    sizes: &[usize],
    columns: &[EncodedColumn],
) -> Result<RecordBatch> {
    let types: Vec<(String, DataType)> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let schema = index::granule_schema(&types, &layout.key);
    let rows: Vec<u32> = sizes.iter().map(|&n| n as u32).collect();
    let starts: Vec<usize> = sizes
        .iter()
        .scan(0, |start, &n| {
            let first = *start;
            *start += n;
            Some(first)
        })
        .collect();
    let mut arrays: Vec<ArrayRef> = vec![index::counts_array(rows)];
    // Built from scalars, not `take`: a taken view array would share (and
    // the IPC writer would store) the whole column's string buffers.
    for &k in &layout.key {
        let firsts = starts
            .iter()
            .map(|&row| ScalarValue::try_from_array(batch.column(k), row))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Schema(format!("cannot build the primary index: {e}")))?;
        arrays.push(scalars_to_array(&firsts)?);
    }
    for column in columns {
        arrays.push(scalars_to_array(&column.mins)?);
        arrays.push(scalars_to_array(&column.maxs)?);
        arrays.push(index::counts_array(column.nulls.clone()));
        arrays.push(index::marks_array(column.marks.clone()));
    }
    Ok(RecordBatch::try_new(schema, arrays)?)
}

fn scalars_to_array(values: &[ScalarValue]) -> Result<ArrayRef> {
    ScalarValue::iter_to_array(values.iter().cloned())
        .map_err(|e| Error::Schema(format!("cannot build statistics: {e}")))
}
