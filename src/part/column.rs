//! How one granule of one column is laid out before compression.
//!
//! ```text
//! rows u32 | null_count u32 | validity_len u32 | layout u32     (16 bytes)
//! validity bitmap (validity_len bytes, 0 when there are no nulls), padded to 16
//! values:
//!   fixed    rows × width little-endian values, or with transforms the
//!            output of the last transform (up to the end of the block)
//!   boolean  bit-packed values
//!   varlen   rows u32 lengths, padded to 16, then the bytes
//!            (layout 2, written before lengths, has (rows + 1) i32 offsets)
//!   dict     entries u32 | index width u32, padded to 16; entries u32
//!            lengths, padded to 16; entry bytes, padded to 16; rows indices
//!            of 1 or 2 bytes. Chosen per granule when few distinct values
//!            repeat (flags, modes, categories), as Parquet's dictionary pages.
//! ```
//! Sections start at 16-byte boundaries of a 64-byte aligned buffer, so the
//! decoder hands Arrow the decompressed memory without copying it.
//!
//! The layout word holds the layout id in its low byte and the ids of up to
//! three transforms (applied in order) in the bytes above; blocks written
//! before transforms existed have zeros there.

use std::sync::Arc;

use arrow::array::builder::make_view;
use arrow::array::{
    Array, ArrayData, ArrayRef, AsArray, BinaryViewArray, StringViewArray, make_array,
};
use arrow::buffer::ScalarBuffer;
use arrow::buffer::{BooleanBuffer, Buffer, MutableBuffer, NullBuffer};
use arrow::datatypes::DataType;

use crate::encoding::codec::{MAX_TRANSFORMS, value_kind};
use crate::encoding::{Transform, ValueKind};
use crate::error::{Error, Result};

const HEADER_LEN: usize = 16;

/// Rows a granule may hold at most (the largest `granularity`). A block
/// header claiming more is damaged, and is rejected before its rows size
/// any allocation.
pub const MAX_GRANULE_ROWS: usize = 1 << 20;

/// Values a nested column's child block may hold when transformed: a
/// transform's output is allocated from the row count alone, which a
/// damaged header must not make huge.
pub const MAX_TRANSFORMED_CHILD_ROWS: usize = 16 * MAX_GRANULE_ROWS;
const LAYOUT_FIXED: u32 = 0;
const LAYOUT_BOOLEAN: u32 = 1;
/// Varlen with offsets (format v1 writers); still read.
const LAYOUT_VARLEN_OFFSETS: u32 = 2;
/// Varlen with lengths: runs of equal lengths compress far better than
/// ever-growing offsets (a one-letter flag column shrinks about 10×).
const LAYOUT_VARLEN: u32 = 3;
const LAYOUT_VARLEN_DICT: u32 = 4;
/// Lists, structs and maps (see [`super::nested`]).
const LAYOUT_NESTED: u32 = 5;
/// Fixed-width values as a dictionary: nested columns' children only.
const LAYOUT_FIXED_DICT: u32 = 6;
/// Floating-point values as byte planes (the first byte of every value,
/// then the second, ...), as Parquet's BYTE_STREAM_SPLIT: exponents and
/// high mantissa bytes repeat, and the compressor sees them together.
/// Nested columns' children only.
const LAYOUT_FIXED_SPLIT: u32 = 7;

/// Dictionary index encodings (the "index width" word): 1 and 2 are raw
/// bytes per index (written first), 3 is t64-packed u16 indices.
const DICT_INDEX_PACKED: u32 = 3;

/// A granule is dictionary-encoded when its dictionary and indices take at
/// most this fraction of the plain layout.
const DICT_MAX_FRACTION: f64 = 0.5;

pub use crate::encoding::layout::{Layout, layout_of};

fn pad16(n: usize) -> usize {
    n.div_ceil(16) * 16
}

fn push_padded(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.resize(pad16(out.len()), 0);
}

/// Serialises `array` (any offset, any length) into `out`, passing fixed-width
/// values through `transforms` (checked against the type at CREATE).
pub fn encode(array: &dyn Array, transforms: &[Transform], out: &mut Vec<u8>) -> Result<()> {
    encode_as(array, transforms, false, out)
}

/// Serialises a nested column's child: fixed-width values take a
/// dictionary when few distinct ones repeat (a status, a rounded
/// latency), as Parquet's dictionary pages, else `transforms`.
pub(super) fn encode_child(
    array: &dyn Array,
    transforms: &[Transform],
    out: &mut Vec<u8>,
) -> Result<()> {
    encode_as(array, transforms, true, out)
}

fn encode_as(
    array: &dyn Array,
    transforms: &[Transform],
    fixed_dictionary: bool,
    out: &mut Vec<u8>,
) -> Result<()> {
    let layout = layout_of(array.data_type())
        .ok_or_else(|| Error::Schema(format!("cannot encode type {}", array.data_type())))?;
    let rows = array.len();
    let validity = match array.logical_nulls() {
        Some(nulls) if nulls.null_count() > 0 => Some(nulls),
        _ => None,
    };
    let validity_bytes = validity.as_ref().map(|n| n.inner().sliced());
    let varlen = match layout {
        Layout::VarLen => Some(varlen_values(array)?),
        _ => None,
    };
    let dictionary = varlen.as_deref().and_then(Dictionary::build);
    // Fixed-width values, read in place (other layouts need no ArrayData).
    let data = matches!(layout, Layout::Fixed(_)).then(|| array.to_data());
    let fixed_values = match (layout, &data) {
        (Layout::Fixed(width), Some(data)) => {
            Some(&data.buffers()[0].as_slice()[data.offset() * width..][..rows * width])
        }
        _ => None,
    };
    let fixed = match layout {
        Layout::Fixed(width) if fixed_dictionary => {
            fixed_values.and_then(|values| FixedDictionary::build(values, width))
        }
        _ => None,
    };
    let transforms = if fixed.is_some() { &[][..] } else { transforms };
    let split = fixed_dictionary
        && fixed.is_none()
        && transforms.is_empty()
        && value_kind(array.data_type()) == Some(ValueKind::Float);
    let layout_id = match layout {
        Layout::Fixed(_) if fixed.is_some() => LAYOUT_FIXED_DICT,
        Layout::Fixed(_) if split => LAYOUT_FIXED_SPLIT,
        Layout::Fixed(_) => LAYOUT_FIXED,
        Layout::Boolean => LAYOUT_BOOLEAN,
        Layout::VarLen if dictionary.is_some() => LAYOUT_VARLEN_DICT,
        Layout::VarLen => LAYOUT_VARLEN,
        Layout::Nested => LAYOUT_NESTED,
    };
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    out.extend_from_slice(&(array.null_count() as u32).to_le_bytes());
    out.extend_from_slice(&(validity_bytes.as_ref().map_or(0, |b| b.len()) as u32).to_le_bytes());
    let transforms = match (layout, value_kind(array.data_type())) {
        (Layout::Fixed(_), Some(kind)) if transforms.len() <= MAX_TRANSFORMS => {
            transforms.iter().map(|t| (*t, kind)).collect::<Vec<_>>()
        }
        _ if transforms.is_empty() => Vec::new(),
        _ => {
            return Err(Error::Schema(format!(
                "transforms cannot encode {}",
                array.data_type()
            )));
        }
    };
    let mut word = layout_id;
    for (i, (t, _)) in transforms.iter().enumerate() {
        word |= u32::from(t.id()) << (8 * (i + 1));
    }
    out.extend_from_slice(&word.to_le_bytes());
    if let Some(bytes) = &validity_bytes {
        push_padded(out, bytes.as_slice());
    }
    match layout {
        Layout::Fixed(width) => match fixed {
            Some(dictionary) => dictionary.encode(width, out),
            None => {
                let values = fixed_values.unwrap_or_default();
                match split {
                    true => split_bytes(values, width, out),
                    false => encode_values(values, width, &transforms, out),
                }
            }
        },
        Layout::Boolean => {
            let values = array.as_boolean().values().sliced();
            out.extend_from_slice(values.as_slice());
        }
        Layout::VarLen => match dictionary {
            Some(dictionary) => dictionary.encode(out),
            None => encode_varlen(varlen.as_deref().unwrap_or_default(), out)?,
        },
        Layout::Nested => super::nested::encode(array, out)?,
    }
    Ok(())
}

/// The distinct values of a granule and each row's index into them.
struct Dictionary<'a> {
    entries: Vec<&'a [u8]>,
    indices: Vec<u16>,
}

impl<'a> Dictionary<'a> {
    /// A dictionary when it pays: at most 65,536 entries taking at most
    /// [`DICT_MAX_FRACTION`] of the plain layout.
    fn build(values: &[&'a [u8]]) -> Option<Self> {
        let plain: usize = values.iter().map(|v| v.len() + 4).sum();
        let mut seen: std::collections::HashMap<&[u8], u16> = std::collections::HashMap::new();
        let mut entries = Vec::new();
        let mut entry_bytes = 0;
        let mut indices = Vec::with_capacity(values.len());
        for v in values {
            let next = entries.len();
            let index = match seen.get(v) {
                Some(&i) => i,
                None => {
                    let i = u16::try_from(next).ok()?;
                    entry_bytes += v.len() + 4;
                    if entry_bytes as f64 > plain as f64 * DICT_MAX_FRACTION {
                        return None;
                    }
                    seen.insert(v, i);
                    entries.push(*v);
                    i
                }
            };
            indices.push(index);
        }
        let width = if entries.len() <= 256 { 1 } else { 2 };
        let size = entry_bytes + values.len() * width;
        (size as f64 <= plain as f64 * DICT_MAX_FRACTION).then_some(Dictionary { entries, indices })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&DICT_INDEX_PACKED.to_le_bytes());
        out.resize(pad16(out.len()), 0);
        for e in &self.entries {
            out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        }
        out.resize(pad16(out.len()), 0);
        for e in &self.entries {
            out.extend_from_slice(e);
        }
        out.resize(pad16(out.len()), 0);
        // Indices bit-packed (t64 over u16): 2 bits a row for four values,
        // which byte-wide indices under zstd's Huffman coding cannot reach.
        let raw: Vec<u8> = self.indices.iter().flat_map(|i| i.to_le_bytes()).collect();
        Transform::T64.encode(&raw, 2, ValueKind::Unsigned, out);
    }
}

/// Appends `values` (`width` bytes each) as byte planes.
fn split_bytes(values: &[u8], width: usize, out: &mut Vec<u8>) {
    let rows = values.len() / width;
    let start = out.len();
    out.resize(start + values.len(), 0);
    let planes = &mut out[start..];
    for (i, value) in values.chunks_exact(width).enumerate() {
        for (j, byte) in value.iter().enumerate() {
            planes[j * rows + i] = *byte;
        }
    }
}

/// Inverts [`split_bytes`] for `rows` values of `width` bytes.
fn join_bytes(planes: &[u8], rows: usize, width: usize) -> Buffer {
    // Aligned for any value type, as Arrow requires.
    let mut values = MutableBuffer::from_len_zeroed(rows * width);
    for (i, value) in values.as_slice_mut().chunks_exact_mut(width).enumerate() {
        for (j, byte) in value.iter_mut().enumerate() {
            *byte = planes[j * rows + i];
        }
    }
    values.into()
}

/// The distinct fixed-width values of a granule and each row's index.
struct FixedDictionary<'a> {
    entries: Vec<&'a [u8]>,
    indices: Vec<u16>,
}

impl<'a> FixedDictionary<'a> {
    /// A dictionary when it pays: at most 65,536 entries, taking at most
    /// [`DICT_MAX_FRACTION`] of the plain values with two-byte indices.
    fn build(values: &'a [u8], width: usize) -> Option<Self> {
        let rows = values.len() / width.max(1);
        // The decoder refuses more (its output is sized by the count).
        if width < 2 || !(64..=MAX_TRANSFORMED_CHILD_ROWS).contains(&rows) {
            return None;
        }
        let budget = values.len() as f64 * DICT_MAX_FRACTION;
        let mut seen: std::collections::HashMap<&[u8], u16> = std::collections::HashMap::new();
        let mut entries = Vec::new();
        let mut indices = Vec::with_capacity(rows);
        for value in values.chunks_exact(width) {
            let index = match seen.get(value) {
                Some(&i) => i,
                None => {
                    let i = u16::try_from(entries.len()).ok()?;
                    if ((entries.len() + 1) * width) as f64 > budget {
                        return None;
                    }
                    seen.insert(value, i);
                    entries.push(value);
                    i
                }
            };
            indices.push(index);
        }
        // Indices are t64-packed: about log2(entries) bits a row.
        let bits = usize::BITS - (entries.len().max(2) - 1).leading_zeros();
        let size = entries.len() * width + rows * bits as usize / 8;
        (size as f64 <= budget).then_some(FixedDictionary { entries, indices })
    }

    fn encode(&self, width: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&(width as u32).to_le_bytes());
        out.resize(pad16(out.len()), 0);
        for e in &self.entries {
            out.extend_from_slice(e);
        }
        out.resize(pad16(out.len()), 0);
        let raw: Vec<u8> = self.indices.iter().flat_map(|i| i.to_le_bytes()).collect();
        Transform::T64.encode(&raw, 2, ValueKind::Unsigned, out);
    }
}

/// The little-endian u32 of a dictionary header at `at`.
fn dictionary_word(bytes: &[u8], at: usize) -> std::result::Result<usize, String> {
    bytes
        .get(at..at + 4)
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()) as usize)
        .ok_or_else(|| "dictionary header truncated".to_string())
}

/// Rebuilds fixed-width values from a [`FixedDictionary`] at `pos`.
fn decode_fixed_dictionary(
    bytes: &[u8],
    pos: usize,
    rows: usize,
    width: usize,
) -> std::result::Result<Buffer, String> {
    let word = |at: usize| dictionary_word(bytes, at);
    let (count, stored_width) = (word(pos)?, word(pos + 4)?);
    if stored_width != width {
        return Err(format!(
            "dictionary of {stored_width}-byte values for a {width}-byte type"
        ));
    }
    let entries_at = pad16(pos + 8);
    let entries = bytes
        .get(entries_at..entries_at + count * width)
        .ok_or("dictionary entries truncated")?;
    let indices_at = pad16(entries_at + count * width);
    let packed = bytes
        .get(indices_at..)
        .ok_or("dictionary indices truncated")?;
    let indices = crate::encoding::transform::decode_t64_u16(packed, rows)
        .map_err(|e| format!("dictionary indices: {e}"))?;
    // Sized by untrusted counts: at most what a block can hold.
    let size = rows
        .checked_mul(width)
        .filter(|n| *n <= u32::MAX as usize)
        .ok_or_else(|| format!("dictionary block of {rows} values of {width} bytes"))?;
    let mut values = MutableBuffer::with_capacity(size);
    for &i in &indices {
        let at = usize::from(i) * width;
        let entry = entries
            .get(at..at + width)
            .ok_or_else(|| format!("dictionary index {i} of {count} entries"))?;
        values.extend_from_slice(entry);
    }
    Ok(values.into())
}

/// Runs the transform chain over `values`; each stage after the first sees
/// the previous stage's output (delta yields signed values).
fn encode_values(
    values: &[u8],
    width: usize,
    transforms: &[(Transform, ValueKind)],
    out: &mut Vec<u8>,
) {
    let Some(((last, _), init)) = transforms.split_last() else {
        out.extend_from_slice(values);
        return;
    };
    let mut current = values.to_vec();
    let mut kind = transforms[0].1;
    for (t, _) in init {
        let mut next = Vec::with_capacity(current.len());
        t.encode(&current, width, kind, &mut next);
        kind = t.output_kind();
        current = next;
    }
    last.encode(&current, width, kind, out);
}

/// Inverts [`encode_values`] into an aligned buffer of `rows * width` bytes.
fn decode_values(
    input: &[u8],
    rows: usize,
    width: usize,
    kind: ValueKind,
    transforms: &[Transform],
) -> std::result::Result<Buffer, String> {
    if transforms.is_empty() {
        return Ok(Buffer::from(input));
    }
    crate::encoding::transform::decode_chain(transforms, input, rows, width, kind)
}

/// The byte length of each value of a variable-length array (0 for NULL).
pub fn value_lengths(array: &dyn Array) -> Vec<usize> {
    varlen_values(array)
        .map(|values| values.iter().map(|v| v.len()).collect())
        .unwrap_or_else(|_| vec![0; array.len()])
}

/// The bytes each row of `array` takes in a block, about: a fixed width,
/// a bit for booleans (counted as a byte), a length word and the bytes of
/// a variable-length value, and for nested values the length word and the
/// sizes of the children the row holds.
pub fn row_sizes(array: &dyn Array) -> Vec<usize> {
    let rows = array.len();
    let within = |offsets: &[usize], child: &dyn Array| -> Vec<usize> {
        let child = row_sizes(child);
        offsets
            .windows(2)
            .map(|w| {
                4 + child[w[0] - offsets[0]..w[1] - offsets[0]]
                    .iter()
                    .sum::<usize>()
            })
            .collect()
    };
    let offsets_of = |offsets: Vec<usize>, values: &ArrayRef| {
        let (start, end) = (offsets[0], offsets[offsets.len() - 1]);
        within(&offsets, values.slice(start, end - start).as_ref())
    };
    match array.data_type() {
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let offsets = list.value_offsets().iter().map(|o| *o as usize).collect();
            offsets_of(offsets, list.values())
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            let offsets = list.value_offsets().iter().map(|o| *o as usize).collect();
            offsets_of(offsets, list.values())
        }
        DataType::Map(_, _) => {
            let map = array.as_map();
            let offsets = map.value_offsets().iter().map(|o| *o as usize).collect();
            let entries: ArrayRef = Arc::new(map.entries().clone());
            offsets_of(offsets, &entries)
        }
        DataType::FixedSizeList(_, size) => {
            let size = (*size).max(0) as usize;
            let offsets: Vec<usize> = (0..=rows).map(|r| r * size).collect();
            let values = array.as_fixed_size_list().values();
            within(&offsets, values.slice(0, rows * size).as_ref())
        }
        DataType::Struct(_) => {
            let mut sizes = vec![0; rows];
            for field in array.as_struct().columns() {
                for (size, child) in sizes.iter_mut().zip(row_sizes(field.as_ref())) {
                    *size += child;
                }
            }
            sizes
        }
        _ => match layout_of(array.data_type()) {
            Some(Layout::Fixed(width)) => vec![width; rows],
            Some(Layout::VarLen) => value_lengths(array).iter().map(|l| l + 4).collect(),
            _ => vec![1; rows],
        },
    }
}

/// The bytes of each value (empty for NULL), whatever the source
/// representation (i32 or i64 offsets, or views).
pub fn varlen_values(array: &dyn Array) -> Result<Vec<&[u8]>> {
    let values: Box<dyn Iterator<Item = &[u8]>> = match array.data_type() {
        DataType::Utf8 => Box::new(
            array
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or("").as_bytes()),
        ),
        DataType::LargeUtf8 => Box::new(
            array
                .as_string::<i64>()
                .iter()
                .map(|v| v.unwrap_or("").as_bytes()),
        ),
        DataType::Utf8View => Box::new(
            array
                .as_string_view()
                .iter()
                .map(|v| v.unwrap_or("").as_bytes()),
        ),
        DataType::Binary => Box::new(array.as_binary::<i32>().iter().map(|v| v.unwrap_or(b""))),
        DataType::LargeBinary => {
            Box::new(array.as_binary::<i64>().iter().map(|v| v.unwrap_or(b"")))
        }
        DataType::BinaryView => Box::new(array.as_binary_view().iter().map(|v| v.unwrap_or(b""))),
        other => {
            return Err(Error::Schema(format!(
                "{other} is not a variable-length type"
            )));
        }
    };
    Ok(values.collect())
}

/// Writes each value's length, then the value bytes.
fn encode_varlen(values: &[&[u8]], out: &mut Vec<u8>) -> Result<()> {
    let lengths_start = out.len();
    out.resize(lengths_start + values.len() * 4, 0);
    out.resize(pad16(out.len()), 0);
    let mut data = Vec::new();
    for (i, value) in values.iter().enumerate() {
        data.extend_from_slice(value);
        if i32::try_from(data.len()).is_err() {
            return Err(Error::Schema(
                "a granule of one column holds more than 2 GiB of values; lower 'granularity'"
                    .into(),
            ));
        }
        let at = lengths_start + i * 4;
        out[at..at + 4].copy_from_slice(&(value.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(&data);
    Ok(())
}

/// Rebuilds an array of `data_type` from a decoded block payload.
/// Errors are descriptions; the caller names the file and granule.
pub fn decode(payload: &Buffer, data_type: &DataType) -> std::result::Result<ArrayRef, String> {
    decode_block(payload, data_type, None)
}

/// Decodes the block of a nested column's child, which must hold exactly
/// `rows` values (the rows its parent addresses).
pub(super) fn decode_rows(
    payload: &Buffer,
    data_type: &DataType,
    rows: usize,
) -> std::result::Result<ArrayRef, String> {
    decode_block(payload, data_type, Some(rows))
}

fn decode_block(
    payload: &Buffer,
    data_type: &DataType,
    expected_rows: Option<usize>,
) -> std::result::Result<ArrayRef, String> {
    let layout =
        layout_of(data_type).ok_or_else(|| format!("type {data_type} cannot be decoded"))?;
    let bytes = payload.as_slice();
    if bytes.len() < HEADER_LEN {
        return Err("column block shorter than its header".into());
    }
    let word = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
    let (rows, null_count, validity_len, layout_word) = (word(0), word(1), word(2), word(3) as u32);
    match expected_rows {
        None if rows > MAX_GRANULE_ROWS => {
            return Err(format!(
                "block claims {rows} rows; a granule holds at most {MAX_GRANULE_ROWS}"
            ));
        }
        Some(expected) if rows != expected => {
            return Err(format!(
                "block holds {rows} values; its parent addresses {expected}"
            ));
        }
        Some(_) if rows > MAX_TRANSFORMED_CHILD_ROWS && layout_word >> 8 != 0 => {
            return Err(format!(
                "transformed block claims {rows} values; at most {MAX_TRANSFORMED_CHILD_ROWS}"
            ));
        }
        _ => {}
    }
    let layout_id = layout_word & 0xff;
    let transforms = layout_word
        .to_le_bytes()
        .iter()
        .skip(1)
        .take_while(|id| **id != 0)
        .map(|id| Transform::from_id(*id).ok_or_else(|| format!("unknown transform id {id}")))
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let expected_id = match layout {
        Layout::Fixed(_) if layout_id == LAYOUT_FIXED_DICT && expected_rows.is_some() => {
            LAYOUT_FIXED_DICT
        }
        Layout::Fixed(_) if layout_id == LAYOUT_FIXED_SPLIT && expected_rows.is_some() => {
            LAYOUT_FIXED_SPLIT
        }
        Layout::Fixed(_) => LAYOUT_FIXED,
        Layout::Boolean => LAYOUT_BOOLEAN,
        Layout::VarLen if layout_id == LAYOUT_VARLEN_OFFSETS => LAYOUT_VARLEN_OFFSETS,
        Layout::VarLen if layout_id == LAYOUT_VARLEN_DICT => LAYOUT_VARLEN_DICT,
        Layout::VarLen => LAYOUT_VARLEN,
        Layout::Nested => LAYOUT_NESTED,
    };
    if layout_id != expected_id {
        return Err(format!(
            "block layout {layout_id} does not match type {data_type}"
        ));
    }
    let mut pos = HEADER_LEN;
    let nulls = if validity_len > 0 {
        if validity_len < rows.div_ceil(8) || pos + validity_len > bytes.len() {
            return Err("validity bitmap truncated".into());
        }
        let bits = BooleanBuffer::new(payload.slice_with_length(pos, validity_len), 0, rows);
        pos = pad16(pos + validity_len).min(bytes.len());
        let nulls = NullBuffer::new(bits);
        if nulls.null_count() != null_count {
            return Err("null count does not match validity bitmap".into());
        }
        Some(nulls)
    } else {
        if null_count != 0 {
            return Err("null count without validity bitmap".into());
        }
        None
    };
    let need = |pos: usize, len: usize| {
        if pos + len > bytes.len() {
            Err(format!(
                "values truncated: need {} bytes, have {}",
                pos + len,
                bytes.len()
            ))
        } else {
            Ok(())
        }
    };
    let builder = |dt: DataType| ArrayData::builder(dt).len(rows).nulls(nulls.clone());
    let data = match layout {
        Layout::Fixed(width) if layout_id == LAYOUT_FIXED_DICT => {
            if rows > MAX_TRANSFORMED_CHILD_ROWS {
                return Err(format!("dictionary block claims {rows} values"));
            }
            let values = decode_fixed_dictionary(bytes, pos, rows, width)?;
            builder(data_type.clone()).add_buffer(values).build()
        }
        Layout::Fixed(width) if layout_id == LAYOUT_FIXED_SPLIT => {
            need(pos, rows * width)?;
            let values = join_bytes(&bytes[pos..pos + rows * width], rows, width);
            builder(data_type.clone()).add_buffer(values).build()
        }
        Layout::Fixed(width) if !transforms.is_empty() => {
            let kind = value_kind(data_type).unwrap_or(ValueKind::Unsigned);
            let values = decode_values(&bytes[pos..], rows, width, kind, &transforms)?;
            builder(data_type.clone()).add_buffer(values).build()
        }
        Layout::Fixed(width) => {
            need(pos, rows * width)?;
            builder(data_type.clone())
                .add_buffer(payload.slice_with_length(pos, rows * width))
                .build()
        }
        _ if !transforms.is_empty() => {
            return Err(format!(
                "transforms on {data_type}, which has no fixed-width values"
            ));
        }
        Layout::Boolean => {
            need(pos, rows.div_ceil(8))?;
            builder(DataType::Boolean)
                .add_buffer(payload.slice_with_length(pos, rows.div_ceil(8)))
                .build()
        }
        Layout::Nested => return super::nested::decode(payload, pos, rows, nulls, data_type),
        Layout::VarLen if layout_id == LAYOUT_VARLEN_DICT => {
            let array = decode_dictionary(payload, pos, rows, nulls.clone(), data_type)?;
            return widen(array, data_type);
        }
        Layout::VarLen => {
            let (offsets, values_start, values_len) = if layout_id == LAYOUT_VARLEN_OFFSETS {
                let offsets_len = (rows + 1) * 4;
                need(pos, offsets_len)?;
                let end = i32::from_le_bytes(
                    bytes[pos + rows * 4..pos + offsets_len].try_into().unwrap(),
                );
                let values_len = usize::try_from(end).map_err(|_| "negative offset".to_string())?;
                let offsets = payload.slice_with_length(pos, offsets_len);
                (offsets, pad16(pos + offsets_len), values_len)
            } else {
                need(pos, rows * 4)?;
                let (offsets, values_len) = offsets_from_lengths(&bytes[pos..pos + rows * 4])?;
                (offsets, pad16(pos + rows * 4), values_len)
            };
            need(values_start, values_len)?;
            let values = payload.slice_with_length(values_start, values_len);
            let narrow = match data_type {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
                _ => DataType::Binary,
            };
            builder(narrow)
                .add_buffer(offsets)
                .add_buffer(values)
                .build()
        }
    }
    .map_err(|e| format!("invalid column block: {e}"))?;
    let array = make_array(data);
    widen(array, data_type)
}

/// Rebuilds a dictionary-encoded granule: the entries as an array, gathered
/// by index with `take` (NULL rows take the validity bitmap).
fn decode_dictionary(
    payload: &Buffer,
    pos: usize,
    rows: usize,
    nulls: Option<NullBuffer>,
    data_type: &DataType,
) -> std::result::Result<ArrayRef, String> {
    let bytes = payload.as_slice();
    let word = |at: usize| dictionary_word(bytes, at);
    let (count, width) = (word(pos)?, word(pos + 4)?);
    if !(1..=DICT_INDEX_PACKED as usize).contains(&width) {
        return Err(format!("dictionary index width {width}"));
    }
    let lengths_at = pad16(pos + 8);
    let lengths = bytes
        .get(lengths_at..lengths_at + count * 4)
        .ok_or("dictionary lengths truncated")?;
    let (offsets, entry_bytes) = offsets_from_lengths(lengths)?;
    let entries_at = pad16(lengths_at + count * 4);
    let indices_at = pad16(entries_at + entry_bytes);
    let packed = bytes
        .get(indices_at..)
        .ok_or("dictionary indices truncated")?;
    let indices: Vec<u16> = match width {
        1 => packed
            .get(..rows)
            .ok_or("dictionary indices truncated")?
            .iter()
            .map(|&i| u16::from(i))
            .collect(),
        2 => packed
            .get(..rows * 2)
            .ok_or("dictionary indices truncated")?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
        _ => crate::encoding::transform::decode_t64_u16(packed, rows)
            .map_err(|e| format!("dictionary indices: {e}"))?,
    };
    let text = matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    let entries = ArrayData::builder(if text {
        DataType::Utf8
    } else {
        DataType::Binary
    })
    .len(count)
    .add_buffer(offsets)
    .add_buffer(payload.slice_with_length(entries_at, entry_bytes))
    .build()
    .map_err(|e| format!("invalid dictionary: {e}"))?;
    if let Some(&bad) = indices
        .iter()
        .max()
        .filter(|&&max| usize::from(max) >= count)
    {
        return Err(format!("dictionary index {bad} of {count} entries"));
    }
    if matches!(data_type, DataType::Utf8View | DataType::BinaryView) {
        return Ok(dictionary_views(
            &entries,
            &indices,
            payload.slice_with_length(entries_at, entry_bytes),
            nulls,
            text,
        ));
    }
    let indices =
        arrow::array::UInt32Array::from_iter_values(indices.iter().map(|&i| u32::from(i)));
    let indices = arrow::array::UInt32Array::new(indices.values().clone(), nulls);
    let entries = make_array(entries);
    arrow::compute::take(&entries, &indices, None).map_err(|e| e.to_string())
}

/// A view array whose views point into the dictionary's bytes: one view per
/// entry, copied per row, and no value bytes copied at all.
fn dictionary_views(
    entries: &ArrayData,
    indices: &[u16],
    bytes: Buffer,
    nulls: Option<NullBuffer>,
    text: bool,
) -> ArrayRef {
    let offsets = entries.buffer::<i32>(0);
    let data = bytes.as_slice();
    let entry_views: Vec<u128> = offsets
        .windows(2)
        .map(|w| {
            let (start, end) = (w[0] as usize, w[1] as usize);
            make_view(&data[start..end], 0, start as u32)
        })
        .collect();
    let views: ScalarBuffer<u128> = indices
        .iter()
        .map(|&i| entry_views[usize::from(i)])
        .collect();
    // SAFETY: `entries` passed ArrayData validation (offsets in bounds and,
    // for text, UTF-8 between them), and every view is a copy of a view
    // made from one of those entries over the same bytes.
    unsafe {
        match text {
            true => Arc::new(StringViewArray::new_unchecked(views, vec![bytes], nulls)),
            false => Arc::new(BinaryViewArray::new_unchecked(views, vec![bytes], nulls)),
        }
    }
}

/// Arrow i32 offsets from stored u32 lengths, and the total value bytes.
fn offsets_from_lengths(lengths: &[u8]) -> std::result::Result<(Buffer, usize), String> {
    let mut offsets = MutableBuffer::with_capacity((lengths.len() / 4 + 1) * 4);
    let mut end: i32 = 0;
    offsets.push(end);
    for length in lengths.chunks_exact(4) {
        let length = u32::from_le_bytes(length.try_into().unwrap());
        end = i32::try_from(length)
            .ok()
            .and_then(|l| end.checked_add(l))
            .ok_or("value lengths exceed 2 GiB")?;
        offsets.push(end);
    }
    Ok((offsets.into(), end as usize))
}

/// Converts the stored i32-offset representation into the table's type.
fn widen(array: ArrayRef, data_type: &DataType) -> std::result::Result<ArrayRef, String> {
    if array.data_type() == data_type {
        return Ok(array);
    }
    arrow::compute::cast(&array, data_type)
        .map_err(|e| format!("cannot convert to {data_type}: {e}"))
}
