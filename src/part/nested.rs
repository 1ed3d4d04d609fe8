//! How one granule of a nested column (list, large list, fixed-size list,
//! struct, map) is laid out after the column block's header and validity
//! bitmap (see [`super::column`]): the parent's list lengths, then each
//! child as a whole column block of its own, recursively, so a list of
//! strings keeps the dictionary layout of strings and a struct's integer
//! field its fixed-width one.
//!
//! ```text
//! list, large list, map: rows u32 lengths, padded to 16
//! children (one for lists and maps, one per field for structs):
//!   len u64 | 8 zero bytes | the child's column block, padded to 16
//! ```
//! Lengths rather than offsets for the reason strings store them: runs of
//! equal lengths compress to almost nothing. A child holds exactly the
//! rows its parent addresses (the sum of the lengths; `rows × size` for a
//! fixed-size list; `rows` for a struct's fields). Values under a NULL list
//! row are kept as they were; a field under a NULL struct is stored NULL,
//! which is what reading the field means.
//! Offsets, validity and children share the block's codec, mark and
//! checksum with the rest of the granule.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, GenericListArray, MapArray, OffsetSizeTrait,
    StructArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, FieldRef};

use super::column;
use crate::encoding::{Transform, ValueKind};
use crate::error::{Error, Result};

/// Elements a granule's child may hold at most: list offsets are 32-bit.
const MAX_CHILD_ROWS: usize = i32::MAX as usize;

fn pad16(n: usize) -> usize {
    n.div_ceil(16) * 16
}

/// Writes the lengths and children of `array`, a nested array.
pub fn encode(array: &dyn Array, out: &mut Vec<u8>) -> Result<()> {
    match array.data_type() {
        DataType::List(_) => encode_list(array.as_list::<i32>(), out),
        DataType::LargeList(_) => encode_list(array.as_list::<i64>(), out),
        DataType::Map(_, _) => {
            let map = array.as_map();
            let (start, end) = encode_lengths(map.value_offsets(), out)?;
            let entries: ArrayRef = Arc::new(map.entries().slice(start, end - start));
            encode_child(entries.as_ref(), out)
        }
        DataType::FixedSizeList(_, size) => {
            let list = array.as_fixed_size_list();
            // A fixed-size list's values start at its first row (slicing
            // slices them), `size` per row.
            let needed = list.len() * (*size).max(0) as usize;
            if list.values().len() < needed {
                return Err(Error::Schema(format!(
                    "fixed-size list of {} rows has {} values, fewer than {needed}",
                    list.len(),
                    list.values().len()
                )));
            }
            encode_child(list.values().slice(0, needed).as_ref(), out)
        }
        DataType::Struct(_) => {
            let parent = array.as_struct();
            for field in parent.columns() {
                // A field of a NULL struct is NULL (`s.a` of a NULL `s`, as
                // Parquet reads it), whatever value the writer left there:
                // DataFusion's get_field would hand that value out.
                let field = super::stats::with_parent_nulls(field, parent.nulls())?;
                encode_child(field.as_ref(), out)?;
            }
            Ok(())
        }
        other => Err(Error::Schema(format!("{other} is not a nested type"))),
    }
}

fn encode_list<O: OffsetSizeTrait>(list: &GenericListArray<O>, out: &mut Vec<u8>) -> Result<()> {
    let (start, end) = encode_lengths(list.value_offsets(), out)?;
    encode_child(list.values().slice(start, end - start).as_ref(), out)
}

/// Writes each row's length (padded to 16) and returns the range of child
/// rows the offsets address.
fn encode_lengths<O: OffsetSizeTrait>(offsets: &[O], out: &mut Vec<u8>) -> Result<(usize, usize)> {
    let (start, end) = (offsets[0].as_usize(), offsets[offsets.len() - 1].as_usize());
    if end - start > MAX_CHILD_ROWS {
        return Err(Error::Schema(format!(
            "a granule of one list column holds {} elements, more than {MAX_CHILD_ROWS}; \
             lower 'granularity' or 'granularity_bytes'",
            end - start
        )));
    }
    for w in offsets.windows(2) {
        out.extend_from_slice(&((w[1] - w[0]).as_usize() as u32).to_le_bytes());
    }
    out.resize(pad16(out.len()), 0);
    Ok((start, end))
}

/// Appends one child as a length-prefixed column block.
fn encode_child(child: &dyn Array, out: &mut Vec<u8>) -> Result<()> {
    let at = out.len();
    out.extend_from_slice(&[0; 16]);
    // A leaf of fixed-width values takes a dictionary when few distinct
    // ones repeat, else integers take the t64 a column of them would; the
    // block's compressor follows. Each child block records its own layout,
    // so the decoder needs no configuration.
    let transforms = match crate::encoding::codec::value_kind(child.data_type()) {
        Some(ValueKind::Signed | ValueKind::Unsigned)
            if child.len() <= column::MAX_TRANSFORMED_CHILD_ROWS =>
        {
            vec![Transform::T64]
        }
        _ => Vec::new(),
    };
    column::encode_child(child, &transforms, out)?;
    let len = (out.len() - at - 16) as u64;
    out[at..at + 8].copy_from_slice(&len.to_le_bytes());
    out.resize(pad16(out.len()), 0);
    Ok(())
}

/// Reads what [`encode`] wrote from `pos` of `payload`: a nested array of
/// `data_type` with `rows` rows and validity `nulls`.
pub fn decode(
    payload: &Buffer,
    mut pos: usize,
    rows: usize,
    nulls: Option<NullBuffer>,
    data_type: &DataType,
) -> std::result::Result<ArrayRef, String> {
    let invalid = |e: arrow::error::ArrowError| format!("invalid {data_type} block: {e}");
    Ok(match data_type {
        DataType::List(field) => {
            let offsets = decode_lengths::<i32>(payload, &mut pos, rows)?;
            let child = decode_child(payload, &mut pos, field, child_rows(&offsets))?;
            Arc::new(
                GenericListArray::try_new(field.clone(), offsets, child, nulls).map_err(invalid)?,
            )
        }
        DataType::LargeList(field) => {
            let offsets = decode_lengths::<i64>(payload, &mut pos, rows)?;
            let child = decode_child(payload, &mut pos, field, child_rows(&offsets))?;
            Arc::new(
                GenericListArray::try_new(field.clone(), offsets, child, nulls).map_err(invalid)?,
            )
        }
        DataType::Map(field, sorted) => {
            let offsets = decode_lengths::<i32>(payload, &mut pos, rows)?;
            let entries = decode_child(payload, &mut pos, field, child_rows(&offsets))?;
            let entries = entries
                .as_struct_opt()
                .ok_or("map entries are not a struct")?
                .clone();
            Arc::new(
                MapArray::try_new(field.clone(), offsets, entries, nulls, *sorted)
                    .map_err(invalid)?,
            )
        }
        DataType::FixedSizeList(field, size) => {
            let values = rows
                .checked_mul((*size).max(0) as usize)
                .filter(|n| *n <= MAX_CHILD_ROWS)
                .ok_or("fixed-size list holds too many values")?;
            let child = decode_child(payload, &mut pos, field, values)?;
            Arc::new(
                FixedSizeListArray::try_new_with_length(field.clone(), *size, child, nulls, rows)
                    .map_err(invalid)?,
            )
        }
        DataType::Struct(fields) => {
            // A field of a NULL struct reads as NULL whatever the block
            // holds (blocks written before fields were stored so).
            let children = fields
                .iter()
                .map(|field| {
                    let child = decode_child(payload, &mut pos, field, rows)?;
                    super::stats::with_parent_nulls(&child, nulls.as_ref())
                        .map_err(|e| format!("field '{}': {e}", field.name()))
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            Arc::new(
                StructArray::try_new_with_length(fields.clone(), children, nulls, rows)
                    .map_err(invalid)?,
            )
        }
        other => return Err(format!("{other} is not a nested type")),
    })
}

fn child_rows<O: OffsetSizeTrait>(offsets: &OffsetBuffer<O>) -> usize {
    offsets.last().map_or(0, |o| o.as_usize())
}

/// Offsets from `rows` stored lengths at `pos`, which moves past them.
fn decode_lengths<O: OffsetSizeTrait>(
    payload: &Buffer,
    pos: &mut usize,
    rows: usize,
) -> std::result::Result<OffsetBuffer<O>, String> {
    let lengths = payload
        .as_slice()
        .get(*pos..*pos + rows * 4)
        .ok_or("list lengths truncated")?;
    let mut offsets = Vec::with_capacity(rows + 1);
    let mut end = 0usize;
    offsets.push(O::usize_as(0));
    for length in lengths.chunks_exact(4) {
        end += u32::from_le_bytes(length.try_into().unwrap()) as usize;
        if end > MAX_CHILD_ROWS {
            return Err(format!("list lengths pass {MAX_CHILD_ROWS} elements"));
        }
        offsets.push(O::usize_as(end));
    }
    *pos = pad16(*pos + rows * 4);
    // Non-negative and non-decreasing by construction.
    Ok(OffsetBuffer::new(ScalarBuffer::from(offsets)))
}

/// Reads the child block at `pos` (which moves past it): `rows` values of
/// `field`'s type.
fn decode_child(
    payload: &Buffer,
    pos: &mut usize,
    field: &FieldRef,
    rows: usize,
) -> std::result::Result<ArrayRef, String> {
    let bytes = payload.as_slice();
    let len = bytes
        .get(*pos..*pos + 8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .ok_or_else(|| format!("child '{}' truncated", field.name()))?;
    let start = *pos + 16;
    let len = usize::try_from(len)
        .ok()
        .filter(|len| {
            start
                .checked_add(*len)
                .is_some_and(|end| end <= bytes.len())
        })
        .ok_or_else(|| format!("child '{}' runs past the block", field.name()))?;
    let child = column::decode_rows(
        &payload.slice_with_length(start, len),
        field.data_type(),
        rows,
    )
    .map_err(|e| format!("child '{}': {e}", field.name()))?;
    *pos = pad16(start + len);
    Ok(child)
}
