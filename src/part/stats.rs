//! Per-granule statistics computed with Arrow's own kernels: the minimum
//! and maximum of a granule, and single values copied out of a batch (the
//! sparse primary index). Every result is a one-row array that owns its
//! memory, so statistics kept for a whole part never pin the batches they
//! came from. Strings and binaries are kept in their plain form until
//! [`concat`] makes the column's type of them, so a view column's
//! statistics share one data buffer rather than one per granule (the
//! plain form of large and view types has 64-bit offsets).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, FixedSizeBinaryArray, LargeBinaryArray,
    LargeStringArray, PrimitiveArray, StringArray, StructArray, downcast_primitive_array,
};
use arrow::buffer::NullBuffer;
use arrow::compute::kernels::aggregate;
use arrow::datatypes::{ArrowPrimitiveType, DataType};

use crate::error::Result;

fn one<T: ArrowPrimitiveType>(like: &PrimitiveArray<T>, value: Option<T::Native>) -> ArrayRef {
    Arc::new(PrimitiveArray::<T>::from_iter([value]).with_data_type(like.data_type().clone()))
}

/// A one-row plain string or binary array holding `value`, a statistic of
/// a column of `data_type` (see [`concat`]). Large and view columns get
/// 64-bit offsets: their statistics over a whole part may pass 2 GiB.
fn bytes_value(value: Option<&[u8]>, data_type: &DataType) -> ArrayRef {
    // The bytes of a string type came from a string array, so they are UTF-8.
    let text = || value.map(|v| std::str::from_utf8(v).unwrap_or_default());
    match data_type {
        DataType::Utf8 => Arc::new(StringArray::from(vec![text()])),
        DataType::LargeUtf8 | DataType::Utf8View => Arc::new(LargeStringArray::from(vec![text()])),
        DataType::Binary => Arc::new(BinaryArray::from(vec![value])),
        _ => Arc::new(LargeBinaryArray::from(vec![value])),
    }
}

/// A one-row fixed-size binary array of `width` bytes holding `value`.
fn fixed_value(value: Option<&[u8]>, width: i32) -> Result<ArrayRef> {
    Ok(Arc::new(
        FixedSizeBinaryArray::try_from_sparse_iter_with_size(std::iter::once(value), width)?,
    ))
}

/// A one-row NULL of `data_type`: the statistic is unknown.
fn unknown(data_type: &DataType) -> ArrayRef {
    arrow::array::new_null_array(data_type, 1)
}

/// The minimum and maximum of `array` (NULLs ignored; NULL when every value
/// is NULL or the type has no order Arrow's kernels know). Floats follow
/// Arrow's total order, as the comparisons pruning makes do.
pub fn min_max(array: &dyn Array) -> Result<(ArrayRef, ArrayRef)> {
    let data_type = array.data_type();
    let text = |min: Option<&str>, max: Option<&str>| -> Result<(ArrayRef, ArrayRef)> {
        Ok((
            bytes_value(min.map(str::as_bytes), data_type),
            bytes_value(max.map(str::as_bytes), data_type),
        ))
    };
    let binary = |min: Option<&[u8]>, max: Option<&[u8]>| -> Result<(ArrayRef, ArrayRef)> {
        Ok((bytes_value(min, data_type), bytes_value(max, data_type)))
    };
    downcast_primitive_array!(
        array => Ok((one(array, aggregate::min(array)), one(array, aggregate::max(array)))),
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            text(aggregate::min_string(a), aggregate::max_string(a))
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            text(aggregate::min_string(a), aggregate::max_string(a))
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            text(aggregate::min_string_view(a), aggregate::max_string_view(a))
        }
        DataType::Binary => {
            let a = array.as_binary::<i32>();
            binary(aggregate::min_binary(a), aggregate::max_binary(a))
        }
        DataType::LargeBinary => {
            let a = array.as_binary::<i64>();
            binary(aggregate::min_binary(a), aggregate::max_binary(a))
        }
        DataType::BinaryView => {
            let a = array.as_binary_view();
            binary(aggregate::min_binary_view(a), aggregate::max_binary_view(a))
        }
        DataType::FixedSizeBinary(width) => {
            // Bytes compare as Arrow's kernels compare them: lexicographically.
            let values = array.as_fixed_size_binary().iter().flatten();
            let (min, max) = (values.clone().min(), values.max());
            Ok((fixed_value(min, *width)?, fixed_value(max, *width)?))
        }
        DataType::Boolean => {
            let a = array.as_boolean();
            Ok((
                Arc::new(BooleanArray::from(vec![aggregate::min_boolean(a)])) as ArrayRef,
                Arc::new(BooleanArray::from(vec![aggregate::max_boolean(a)])) as ArrayRef,
            ))
        }
        DataType::Struct(_) => struct_min_max(array.as_struct()),
        _ => Ok((unknown(data_type), unknown(data_type)))
    )
}

/// Field by field statistics of a struct: each field's minimum and maximum
/// over the rows where the struct is not NULL (`s.a` of a NULL struct is
/// NULL), as a one-row struct. Leaf by leaf bounds also bound the structs
/// in DataFusion's field-by-field order, but only the leaves are used for
/// pruning (`s.a > 5`). A row that cannot be built (a NOT NULL field with
/// no value) is a NULL struct: unknown.
fn struct_min_max(array: &StructArray) -> Result<(ArrayRef, ArrayRef)> {
    let fields = array.fields();
    let (mut mins, mut maxs) = (Vec::new(), Vec::new());
    for (field, child) in fields.iter().zip(array.columns()) {
        let child = with_parent_nulls(child, array.nulls())?;
        let (min, max) = min_max(child.as_ref())?;
        mins.push(arrow::compute::cast(&min, field.data_type())?);
        maxs.push(arrow::compute::cast(&max, field.data_type())?);
    }
    let build = |values: Vec<ArrayRef>| -> ArrayRef {
        match StructArray::try_new(fields.clone(), values, None) {
            Ok(row) => Arc::new(row),
            Err(_) => arrow::array::new_null_array(array.data_type(), 1),
        }
    };
    match fields.is_empty() {
        true => Ok((unknown(array.data_type()), unknown(array.data_type()))),
        false => Ok((build(mins), build(maxs))),
    }
}

/// `child` with its parent's NULLs added to its own: the values a field
/// access sees.
pub fn with_parent_nulls(child: &ArrayRef, parent: Option<&NullBuffer>) -> Result<ArrayRef> {
    let Some(parent) = parent.filter(|n| n.null_count() > 0) else {
        return Ok(child.clone());
    };
    let parent_null = BooleanArray::new(!parent.inner(), None);
    Ok(arrow::compute::nullif(child.as_ref(), &parent_null)?)
}

/// Row `row` of `array` as a one-row array with its own memory.
pub fn value_at(array: &dyn Array, row: usize) -> Result<ArrayRef> {
    let data_type = array.data_type();
    let valid = array.is_valid(row);
    downcast_primitive_array!(
        array => Ok(one(array, valid.then(|| array.value(row)))),
        DataType::Utf8 => Ok(bytes_value(
            valid.then(|| array.as_string::<i32>().value(row).as_bytes()), data_type)),
        DataType::LargeUtf8 => Ok(bytes_value(
            valid.then(|| array.as_string::<i64>().value(row).as_bytes()), data_type)),
        DataType::Utf8View => Ok(bytes_value(
            valid.then(|| array.as_string_view().value(row).as_bytes()), data_type)),
        DataType::Binary => Ok(bytes_value(
            valid.then(|| array.as_binary::<i32>().value(row)), data_type)),
        DataType::LargeBinary => Ok(bytes_value(
            valid.then(|| array.as_binary::<i64>().value(row)), data_type)),
        DataType::BinaryView => Ok(bytes_value(
            valid.then(|| array.as_binary_view().value(row)), data_type)),
        DataType::Boolean => Ok(Arc::new(BooleanArray::from(vec![
            valid.then(|| array.as_boolean().value(row)),
        ])) as ArrayRef),
        DataType::FixedSizeBinary(width) => fixed_value(
            valid.then(|| array.as_fixed_size_binary().value(row)), *width),
        _ => Ok(unknown(data_type))
    )
}

/// One array of `data_type` from one-row arrays (a statistic's column over
/// all granules); an empty one when there are none.
pub fn concat(values: &[ArrayRef], data_type: &DataType) -> Result<ArrayRef> {
    if values.is_empty() {
        return Ok(arrow::array::new_empty_array(data_type));
    }
    let refs: Vec<&dyn Array> = values.iter().map(|a| a.as_ref()).collect();
    let array = arrow::compute::concat(&refs)?;
    match array.data_type() == data_type {
        true => Ok(array),
        false => Ok(arrow::compute::cast(&array, data_type)?),
    }
}
