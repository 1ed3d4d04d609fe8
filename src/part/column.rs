//! How one granule of one column is laid out before compression.
//!
//! ```text
//! rows u32 | null_count u32 | validity_len u32 | layout u32     (16 bytes)
//! validity bitmap (validity_len bytes, 0 when there are no nulls), padded to 16
//! values:
//!   fixed    rows × width little-endian values
//!   boolean  bit-packed values
//!   varlen   (rows + 1) i32 offsets, padded to 16, then the bytes
//! ```
//! Sections start at 16-byte boundaries of a 64-byte aligned buffer, so the
//! decoder hands Arrow the decompressed memory without copying it.

use arrow::array::{Array, ArrayData, ArrayRef, AsArray, make_array};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer};
use arrow::datatypes::{DataType, TimeUnit};

use crate::error::{Error, Result};

const HEADER_LEN: usize = 16;
const LAYOUT_FIXED: u32 = 0;
const LAYOUT_BOOLEAN: u32 = 1;
const LAYOUT_VARLEN: u32 = 2;

/// How a type's values are stored; `None` for types diagon does not store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Fixed(usize),
    Boolean,
    VarLen,
}

/// The layout of `data_type`, or `None` if this format version cannot store it.
pub fn layout_of(data_type: &DataType) -> Option<Layout> {
    use DataType::*;
    Some(match data_type {
        Boolean => Layout::Boolean,
        Int8 | UInt8 => Layout::Fixed(1),
        Int16 | UInt16 | Float16 => Layout::Fixed(2),
        Int32 | UInt32 | Float32 | Date32 => Layout::Fixed(4),
        Time32(TimeUnit::Second | TimeUnit::Millisecond) => Layout::Fixed(4),
        Int64 | UInt64 | Float64 | Date64 | Timestamp(_, _) | Duration(_) => Layout::Fixed(8),
        Time64(TimeUnit::Microsecond | TimeUnit::Nanosecond) => Layout::Fixed(8),
        Decimal128(_, _) => Layout::Fixed(16),
        Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView => Layout::VarLen,
        _ => return None,
    })
}

fn pad16(n: usize) -> usize {
    n.div_ceil(16) * 16
}

fn push_padded(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.resize(pad16(out.len()), 0);
}

/// Serialises `array` (any offset, any length) into `out`.
pub fn encode(array: &dyn Array, out: &mut Vec<u8>) -> Result<()> {
    let layout = layout_of(array.data_type())
        .ok_or_else(|| Error::Schema(format!("cannot encode type {}", array.data_type())))?;
    let rows = array.len();
    let validity = match array.logical_nulls() {
        Some(nulls) if nulls.null_count() > 0 => Some(nulls),
        _ => None,
    };
    let validity_bytes = validity.as_ref().map(|n| n.inner().sliced());
    let layout_id = match layout {
        Layout::Fixed(_) => LAYOUT_FIXED,
        Layout::Boolean => LAYOUT_BOOLEAN,
        Layout::VarLen => LAYOUT_VARLEN,
    };
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    out.extend_from_slice(&(array.null_count() as u32).to_le_bytes());
    out.extend_from_slice(&(validity_bytes.as_ref().map_or(0, |b| b.len()) as u32).to_le_bytes());
    out.extend_from_slice(&layout_id.to_le_bytes());
    if let Some(bytes) = &validity_bytes {
        push_padded(out, bytes.as_slice());
    }
    match layout {
        Layout::Fixed(width) => {
            let data = array.to_data();
            let values = &data.buffers()[0].as_slice()[data.offset() * width..][..rows * width];
            out.extend_from_slice(values);
        }
        Layout::Boolean => {
            let values = array.as_boolean().values().sliced();
            out.extend_from_slice(values.as_slice());
        }
        Layout::VarLen => encode_varlen(array, out)?,
    }
    Ok(())
}

/// Writes offsets rebased to zero, then the value bytes, whatever the source
/// representation (i32 or i64 offsets, or views).
fn encode_varlen(array: &dyn Array, out: &mut Vec<u8>) -> Result<()> {
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
    let offsets_start = out.len();
    out.resize(offsets_start + (array.len() + 1) * 4, 0);
    out.resize(pad16(out.len()), 0);
    let mut data = Vec::new();
    for (i, value) in values.enumerate() {
        data.extend_from_slice(value);
        let end = i32::try_from(data.len()).map_err(|_| {
            Error::Schema(
                "a granule of one column holds more than 2 GiB of values; lower 'granularity'"
                    .into(),
            )
        })?;
        let at = offsets_start + (i + 1) * 4;
        out[at..at + 4].copy_from_slice(&end.to_le_bytes());
    }
    out.extend_from_slice(&data);
    Ok(())
}

/// Rebuilds an array of `data_type` from a decoded block payload.
/// Errors are descriptions; the caller names the file and granule.
pub fn decode(payload: &Buffer, data_type: &DataType) -> std::result::Result<ArrayRef, String> {
    let layout =
        layout_of(data_type).ok_or_else(|| format!("type {data_type} cannot be decoded"))?;
    let bytes = payload.as_slice();
    if bytes.len() < HEADER_LEN {
        return Err("column block shorter than its header".into());
    }
    let word = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
    let (rows, null_count, validity_len, layout_id) = (word(0), word(1), word(2), word(3) as u32);
    let expected_id = match layout {
        Layout::Fixed(_) => LAYOUT_FIXED,
        Layout::Boolean => LAYOUT_BOOLEAN,
        Layout::VarLen => LAYOUT_VARLEN,
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
        pos = pad16(pos + validity_len);
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
        Layout::Fixed(width) => {
            need(pos, rows * width)?;
            builder(data_type.clone())
                .add_buffer(payload.slice_with_length(pos, rows * width))
                .build()
        }
        Layout::Boolean => {
            need(pos, rows.div_ceil(8))?;
            builder(DataType::Boolean)
                .add_buffer(payload.slice_with_length(pos, rows.div_ceil(8)))
                .build()
        }
        Layout::VarLen => {
            let offsets_len = (rows + 1) * 4;
            need(pos, offsets_len)?;
            let offsets = payload.slice_with_length(pos, offsets_len);
            let values_start = pad16(pos + offsets_len);
            let end =
                i32::from_le_bytes(bytes[pos + rows * 4..pos + offsets_len].try_into().unwrap());
            let values_len = usize::try_from(end).map_err(|_| "negative offset".to_string())?;
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

/// Converts the stored i32-offset representation into the table's type.
fn widen(array: ArrayRef, data_type: &DataType) -> std::result::Result<ArrayRef, String> {
    if array.data_type() == data_type {
        return Ok(array);
    }
    arrow::compute::cast(&array, data_type)
        .map_err(|e| format!("cannot convert to {data_type}: {e}"))
}
