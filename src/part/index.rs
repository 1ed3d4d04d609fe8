//! A part's index file (`index.dgi`): everything a planner needs without
//! touching column data.
//!
//! The body is a JSON [`PartMeta`] (columns, codecs, files) followed by an
//! Arrow IPC stream holding one row per granule:
//!
//! | column        | meaning                                              |
//! |---------------|------------------------------------------------------|
//! | `rows`        | rows in the granule                                  |
//! | `pk.{j}`      | sparse primary index: first value of key column j    |
//! | `min.{i}`     | minimum of column i in the granule (null: unknown)   |
//! | `max.{i}`     | maximum of column i                                  |
//! | `nulls.{i}`   | null count of column i                               |
//! | `mark.{i}`    | offset of the granule's block in column i's file     |
//!
//! Storing statistics as Arrow arrays of the column's own type means the
//! pruning code compares them with the same kernels as the query would.

use std::io::Cursor;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type, UInt64Type};
use serde::{Deserialize, Serialize};

use super::component::ComponentMeta;
use crate::encoding::envelope::{self, FileKind};
use crate::error::{Error, Result};

pub const INDEX_FILE: &str = "index.dgi";

/// Columns per table column in the granule table: min, max, nulls, mark.
const STATS_PER_COLUMN: usize = 4;

/// One column of a part, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnMeta {
    pub name: String,
    /// Arrow type in its `Display` form, parsed back with `DataType::from_str`.
    pub data_type: String,
    pub nullable: bool,
    pub codec: String,
    /// File name inside the part directory.
    pub file: String,
    /// Total length of the column file, envelope included.
    pub file_len: u64,
    /// Offset of the column's first block: right after the header in a
    /// wide part's own file, anywhere in a compact part's shared file.
    #[serde(default = "header_len")]
    pub data_start: u64,
    /// Offset just past the column's last block.
    pub data_end: u64,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    /// The column's stable id in its table (see `conform`); absent in
    /// parts written before ids existed, where it is the position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
}

fn header_len() -> u64 {
    crate::encoding::ENVELOPE_HEADER_LEN as u64
}

/// The JSON half of the index file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartMeta {
    pub name: String,
    pub rows: u64,
    /// 0 for parts written by INSERT; merges (a later format feature) raise it.
    pub level: u32,
    pub granularity: u32,
    /// Names of the sort-key columns, in key order.
    pub order_by: Vec<String>,
    pub columns: Vec<ColumnMeta>,
    /// Components built beside the columns (skip indexes, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentMeta>,
    /// Skip index files of parts written before components existed (each
    /// read whole); new parts list theirs in `components`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_indexes: Vec<SkipIndexMeta>,
}

/// One skip index file of a part written before components existed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkipIndexMeta {
    pub column: String,
    /// The declaration, as `SkipSpec` prints it.
    pub spec: String,
    /// File name inside the part directory.
    pub file: String,
}

/// A loaded part index: metadata plus the per-granule table.
#[derive(Debug)]
pub struct PartIndex {
    pub meta: PartMeta,
    pub granules: RecordBatch,
    /// Row offset of each granule inside the part (prefix sums of `rows`).
    pub granule_starts: Vec<u64>,
    /// Column types, parsed once from `meta`.
    types: Vec<DataType>,
    /// Derived once for pruning: see [`Self::row_counts`].
    row_counts: ArrayRef,
    /// Derived once for pruning: see [`Self::primary_key_upper`].
    primary_upper: Option<ArrayRef>,
    /// Set once a column file's envelope (magic, kind, version, length) has
    /// been checked, so each file is checked once per process.
    pub(crate) envelope_checked: Vec<std::sync::OnceLock<()>>,
    /// Per column, the value of a column the part lacks (one row; see
    /// `conform`): such a column has no file and reads as this value.
    fills: Vec<Option<ArrayRef>>,
}

/// The schema of the per-granule table for a part's columns and key.
pub fn granule_schema(columns: &[(String, DataType)], key: &[usize]) -> SchemaRef {
    let mut fields = vec![Field::new("rows", DataType::UInt32, false)];
    for (j, &k) in key.iter().enumerate() {
        fields.push(Field::new(format!("pk.{j}"), columns[k].1.clone(), true));
    }
    for (i, (_, data_type)) in columns.iter().enumerate() {
        fields.push(Field::new(format!("min.{i}"), data_type.clone(), true));
        fields.push(Field::new(format!("max.{i}"), data_type.clone(), true));
        fields.push(Field::new(format!("nulls.{i}"), DataType::UInt32, false));
        fields.push(Field::new(format!("mark.{i}"), DataType::UInt64, false));
    }
    Arc::new(Schema::new(fields))
}

impl PartIndex {
    pub fn new(meta: PartMeta, granules: RecordBatch) -> Result<Self> {
        let mut starts = Vec::with_capacity(granules.num_rows() + 1);
        let mut at = 0u64;
        for rows in granule_rows(&granules)?.values() {
            if *rows as usize > crate::part::column::MAX_GRANULE_ROWS {
                return Err(Error::Schema(format!(
                    "part '{}' has a granule of {rows} rows",
                    meta.name
                )));
            }
            starts.push(at);
            at += u64::from(*rows);
        }
        starts.push(at);
        if at != meta.rows {
            return Err(Error::Schema(format!(
                "part '{}' granules hold {at} rows, metadata says {}",
                meta.name, meta.rows
            )));
        }
        let types = meta
            .columns
            .iter()
            .map(|c| parse_type(&c.data_type))
            .collect::<Result<Vec<_>>>()?;
        let envelope_checked = meta
            .columns
            .iter()
            .map(|_| std::sync::OnceLock::new())
            .collect();
        let row_counts: ArrayRef = Arc::new(UInt64Array::from_iter_values(
            starts.windows(2).map(|w| w[1] - w[0]),
        ));
        let fills = vec![None; types.len()];
        let mut index = PartIndex {
            meta,
            granules,
            granule_starts: starts,
            types,
            row_counts,
            primary_upper: None,
            envelope_checked,
            fills,
        };
        index.primary_upper = index.compute_primary_upper()?;
        Ok(index)
    }

    fn compute_primary_upper(&self) -> Result<Option<ArrayRef>> {
        let Some(first_key) = self.meta.order_by.first() else {
            return Ok(None);
        };
        let n = self.num_granules();
        let Some(column) = self.column_position(first_key).filter(|_| n > 0) else {
            return Ok(None);
        };
        let pk = self.primary_key(0);
        let last = self.max(column).slice(n - 1, 1);
        Ok(Some(arrow::compute::concat(&[
            pk.slice(1, n - 1).as_ref(),
            last.as_ref(),
        ])?))
    }

    /// Bytes this index holds in memory (for the cache's bound).
    pub fn memory_size(&self) -> u64 {
        let derived = self.row_counts.get_array_memory_size()
            + self
                .primary_upper
                .as_ref()
                .map_or(0, |a| a.get_array_memory_size());
        let meta = 256 * (self.meta.columns.len() + self.meta.components.len() + 1);
        (self.granules.get_array_memory_size() + derived + meta + 8 * self.granule_starts.len())
            as u64
    }

    pub fn num_granules(&self) -> usize {
        self.granules.num_rows()
    }

    pub fn granule_rows(&self, granule: usize) -> u64 {
        self.granule_starts[granule + 1] - self.granule_starts[granule]
    }

    /// Column `offset` (min, max, nulls, mark) of table column `column` in
    /// the granule table, whose layout [`granule_schema`] fixes and decoding
    /// validates.
    fn stat(&self, column: usize, offset: usize) -> &ArrayRef {
        self.granules.column(self.stat_position(column, offset))
    }

    /// Where [`Self::stat`] finds its column in the granule table.
    pub(crate) fn stat_position(&self, column: usize, offset: usize) -> usize {
        1 + self.meta.order_by.len() + STATS_PER_COLUMN * column + offset
    }

    /// The stored type of each column.
    pub(crate) fn types(&self) -> &[DataType] {
        &self.types
    }

    /// The value every row of a column the part lacks reads as, if
    /// `column` is one (see `conform`).
    pub fn fill(&self, column: usize) -> Option<&ArrayRef> {
        self.fills.get(column).and_then(Option::as_ref)
    }

    /// A conformed index (see `conform`): `fills` names the columns the
    /// part lacks.
    pub(crate) fn conformed(
        meta: PartMeta,
        granules: RecordBatch,
        types: Vec<DataType>,
        fills: Vec<Option<ArrayRef>>,
    ) -> Result<Self> {
        let mut index = PartIndex::new(meta, granules)?;
        index.types = types;
        index.fills = fills;
        Ok(index)
    }

    pub fn min(&self, column: usize) -> &ArrayRef {
        self.stat(column, 0)
    }

    pub fn max(&self, column: usize) -> &ArrayRef {
        self.stat(column, 1)
    }

    pub fn null_counts(&self, column: usize) -> &UInt32Array {
        self.stat(column, 2).as_primitive::<UInt32Type>()
    }

    fn marks(&self, column: usize) -> &UInt64Array {
        self.stat(column, 3).as_primitive::<UInt64Type>()
    }

    /// The sparse primary index: first value of key column `key_position`
    /// in each granule.
    pub fn primary_key(&self, key_position: usize) -> &ArrayRef {
        self.granules.column(1 + key_position)
    }

    /// Upper bound of the first key column in each granule: the next
    /// granule's first key, and the part's last key for the last granule.
    pub fn primary_key_upper(&self) -> Option<&ArrayRef> {
        self.primary_upper.as_ref()
    }

    /// Rows per granule, as the UInt64 array pruning statistics use.
    pub fn row_counts(&self) -> &ArrayRef {
        &self.row_counts
    }

    /// Byte range of granules `first..last` (exclusive) in column `column`'s file.
    pub fn mark_range(&self, column: usize, first: usize, last: usize) -> std::ops::Range<u64> {
        let marks = self.marks(column);
        let end = if last < marks.len() {
            marks.value(last)
        } else {
            self.meta.columns[column].data_end
        };
        marks.value(first)..end
    }

    pub fn data_type(&self, column: usize) -> &DataType {
        &self.types[column]
    }

    pub fn column_position(&self, name: &str) -> Option<usize> {
        self.meta.columns.iter().position(|c| c.name == name)
    }

    /// Serialises the index into a sealed file.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(&self.meta)
            .map_err(|e| Error::Schema(format!("cannot serialise part metadata: {e}")))?;
        let mut body = Vec::new();
        body.extend_from_slice(&(json.len() as u32).to_le_bytes());
        body.extend_from_slice(&json);
        let mut writer =
            arrow::ipc::writer::StreamWriter::try_new(&mut body, &self.granules.schema())?;
        writer.write(&self.granules)?;
        writer.finish()?;
        drop(writer);
        Ok(envelope::seal(FileKind::PartIndex, &body))
    }

    /// Parses and validates a sealed index file; `file` names it in errors.
    pub fn decode(file: &str, bytes: &[u8]) -> Result<Self> {
        let body = envelope::open(file, FileKind::PartIndex, bytes)?;
        let corrupt = |reason: String| Error::corrupt(file, reason);
        if body.len() < 4 {
            return Err(corrupt("index body truncated".into()));
        }
        let json_len = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
        let json = body
            .get(4..4 + json_len)
            .ok_or_else(|| corrupt("index metadata truncated".into()))?;
        let meta: PartMeta =
            serde_json::from_slice(json).map_err(|e| corrupt(format!("bad part metadata: {e}")))?;
        let names = std::iter::once(&meta.name)
            .chain(meta.columns.iter().map(|c| &c.file))
            .chain(meta.components.iter().map(|c| &c.file))
            .chain(meta.skip_indexes.iter().map(|s| &s.file));
        if let Some(bad) = names
            .into_iter()
            .find(|n| !crate::storage::is_plain_name(n))
        {
            return Err(corrupt(format!(
                "invalid file name '{bad}' in part metadata"
            )));
        }
        let stream = &body[4 + json_len..];
        check_ipc_lengths(stream).map_err(|e| corrupt(format!("bad granule table: {e}")))?;
        let mut reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(stream), None)
            .map_err(|e| corrupt(format!("bad granule table: {e}")))?;
        let granules = reader
            .next()
            .ok_or_else(|| corrupt("granule table missing".into()))?
            .map_err(|e| corrupt(format!("bad granule table: {e}")))?;
        let types = meta
            .columns
            .iter()
            .map(|c| Ok((c.name.clone(), parse_type(&c.data_type)?)))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| corrupt(e.to_string()))?;
        let key = meta
            .order_by
            .iter()
            .map(|k| types.iter().position(|(n, _)| n == k))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| corrupt("sort key names a column the part lacks".into()))?;
        let expected = granule_schema(&types, &key);
        if granules.schema().fields() != expected.fields() {
            return Err(corrupt(
                "granule table does not match the part's columns".into(),
            ));
        }
        let index = PartIndex::new(meta, granules).map_err(|e| corrupt(e.to_string()))?;
        index.check_marks().map_err(corrupt)?;
        Ok(index)
    }

    /// Marks must rise from just after the file header to the end of the
    /// data, which must lie inside the file, so every range read is valid.
    fn check_marks(&self) -> std::result::Result<(), String> {
        let header = crate::encoding::ENVELOPE_HEADER_LEN as u64;
        let footer = crate::encoding::ENVELOPE_FOOTER_LEN as u64;
        for (c, column) in self.meta.columns.iter().enumerate() {
            if column.data_start < header
                || column.data_start > column.data_end
                || column
                    .data_end
                    .checked_add(footer)
                    .is_none_or(|end| end > column.file_len)
            {
                return Err(format!(
                    "column '{}': data range and file length disagree",
                    column.name
                ));
            }
            // The first block starts at the column's data; the others in
            // order, none past the end of the data.
            let mut previous = column.data_start;
            for (g, &mark) in self.marks(c).values().iter().enumerate() {
                let misplaced = if g == 0 {
                    mark != column.data_start
                } else {
                    mark < previous
                };
                if misplaced || mark > column.data_end {
                    return Err(format!(
                        "column '{}': mark {g} ({mark}) out of order",
                        column.name
                    ));
                }
                previous = mark;
            }
        }
        Ok(())
    }
}

/// Checks that every message of an Arrow IPC stream lies inside `stream`
/// before the IPC reader, which allocates what a message's header claims,
/// sees it.
fn check_ipc_lengths(stream: &[u8]) -> std::result::Result<(), String> {
    let mut pos = 0usize;
    let word = |at: usize| -> std::result::Result<u32, String> {
        stream
            .get(at..at + 4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
            .ok_or_else(|| "stream truncated".to_string())
    };
    loop {
        let mut len = word(pos)?;
        pos += 4;
        if len == 0xFFFF_FFFF {
            len = word(pos)?;
            pos += 4;
        }
        if len == 0 {
            return Ok(());
        }
        let header = stream
            .get(pos..pos + len as usize)
            .ok_or("message header runs past the end")?;
        let message = arrow::ipc::root_as_message(header).map_err(|e| e.to_string())?;
        let body = usize::try_from(message.bodyLength()).map_err(|_| "negative body length")?;
        pos += len as usize;
        if body > stream.len() - pos {
            return Err(format!(
                "message body of {body} bytes runs past the end ({} left)",
                stream.len() - pos
            ));
        }
        pos += body;
    }
}

fn granule_rows(granules: &RecordBatch) -> Result<&UInt32Array> {
    granules
        .column_by_name("rows")
        .and_then(|c| c.as_primitive_opt::<UInt32Type>())
        .ok_or_else(|| Error::Schema("granule table lacks 'rows'".into()))
}

/// Parses a stored type name.
pub fn parse_type(name: &str) -> Result<DataType> {
    name.parse::<DataType>()
        .map_err(|e| Error::Schema(format!("unknown stored type '{name}': {e}")))
}

/// Builds the `mark.{i}` column from block offsets.
pub fn marks_array(offsets: Vec<u64>) -> ArrayRef {
    Arc::new(UInt64Array::from(offsets))
}

/// Builds a `nulls.{i}` or `rows` column.
pub fn counts_array(counts: Vec<u32>) -> ArrayRef {
    Arc::new(UInt32Array::from(counts))
}

/// Maximal runs of `true` as ranges.
pub fn ranges_of(keep: &[bool]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = None;
    for (i, &k) in keep.iter().enumerate() {
        match (k, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                ranges.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        ranges.push(s..keep.len());
    }
    ranges
}
