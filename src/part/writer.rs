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
use super::index::{self, ColumnMeta, INDEX_FILE, PartIndex, PartMeta};
use crate::encoding::envelope::{self, FileKind};
use crate::encoding::{CodecChain, encode_block};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// How to lay out a part: the table options that matter to the writer.
#[derive(Debug, Clone)]
pub struct PartLayout {
    /// Rows per granule.
    pub granularity: usize,
    /// Positions of the sort-key columns in the batch schema.
    pub key: Vec<usize>,
    /// Codec of each column, by position.
    pub codecs: Vec<CodecChain>,
}

/// Directory of a part inside the table.
pub fn part_dir(name: &str) -> String {
    format!("parts/{name}")
}

/// A fresh, unique part name.
pub fn new_part_name() -> String {
    format!("p_{}", uuid::Uuid::new_v4().simple())
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

/// Writes `batch` (sorted) as a new part and returns its index.
pub async fn write_part(
    storage: &Storage,
    batch: &RecordBatch,
    layout: &PartLayout,
    level: u32,
) -> Result<PartIndex> {
    let name = new_part_name();
    let dir = part_dir(&name);
    let granularity = layout.granularity.max(1);
    let granule_count = batch.num_rows().div_ceil(granularity);
    let schema = batch.schema();

    let mut files = Vec::new();
    let mut column_metas = Vec::new();
    let mut encoded = Vec::new();
    for (i, array) in batch.columns().iter().enumerate() {
        let field = schema.field(i);
        let codec = &layout.codecs[i];
        let mut column = encode_column(array, granularity, codec)
            .map_err(|e| e.context(format!("column '{}'", field.name())))?;
        let file = format!("c{i}.bin");
        let file_len = column.bytes.len() as u64;
        column_metas.push(ColumnMeta {
            name: field.name().clone(),
            data_type: field.data_type().to_string(),
            nullable: field.is_nullable(),
            codec: codec.to_string(),
            file: file.clone(),
            file_len,
            data_end: file_len - envelope::ENVELOPE_FOOTER_LEN as u64,
            compressed_bytes: file_len,
            uncompressed_bytes: column.uncompressed,
        });
        files.push((format!("{dir}/{file}"), std::mem::take(&mut column.bytes)));
        encoded.push(column);
    }

    let granule_table = build_granule_table(batch, layout, granularity, granule_count, &encoded)?;
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

fn encode_column(
    array: &ArrayRef,
    granularity: usize,
    codec: &CodecChain,
) -> Result<EncodedColumn> {
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
    while offset < array.len() {
        let len = granularity.min(array.len() - offset);
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
    envelope::append_footer(&mut bytes);
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
    granularity: usize,
    granule_count: usize,
    columns: &[EncodedColumn],
) -> Result<RecordBatch> {
    let types: Vec<(String, DataType)> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let schema = index::granule_schema(&types, &layout.key);
    let rows: Vec<u32> = (0..granule_count)
        .map(|g| granularity.min(batch.num_rows() - g * granularity) as u32)
        .collect();
    let mut arrays: Vec<ArrayRef> = vec![index::counts_array(rows)];
    // Built from scalars, not `take`: a taken view array would share (and
    // the IPC writer would store) the whole column's string buffers.
    for &k in &layout.key {
        let firsts = (0..granule_count)
            .map(|g| ScalarValue::try_from_array(batch.column(k), g * granularity))
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
