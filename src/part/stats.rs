//! Per-granule statistics computed with Arrow's own kernels: the minimum
//! and maximum of a granule, and single values copied out of a batch (the
//! sparse primary index). Every result is a one-row array that owns its
//! memory, so statistics kept for a whole part never pin the batches they
//! came from. Strings and binaries are kept in their plain form until
//! [`concat`] makes the column's type of them, so a view column's
//! statistics share one data buffer rather than one per granule.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, PrimitiveArray, StringArray,
    downcast_primitive_array,
};
use arrow::compute::kernels::aggregate;
use arrow::datatypes::{ArrowPrimitiveType, DataType};

use crate::error::Result;

fn one<T: ArrowPrimitiveType>(like: &PrimitiveArray<T>, value: Option<T::Native>) -> ArrayRef {
    Arc::new(PrimitiveArray::<T>::from_iter([value]).with_data_type(like.data_type().clone()))
}

/// A one-row plain string or binary array holding `value` (see [`concat`]).
fn bytes_value(value: Option<&[u8]>, text: bool) -> Result<ArrayRef> {
    Ok(match text {
        // The bytes came from a string array, so they are UTF-8.
        true => Arc::new(StringArray::from(vec![
            value.map(|v| std::str::from_utf8(v).unwrap_or_default()),
        ])),
        false => Arc::new(BinaryArray::from(vec![value])),
    })
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
            bytes_value(min.map(str::as_bytes), true)?,
            bytes_value(max.map(str::as_bytes), true)?,
        ))
    };
    let binary = |min: Option<&[u8]>, max: Option<&[u8]>| -> Result<(ArrayRef, ArrayRef)> {
        Ok((bytes_value(min, false)?, bytes_value(max, false)?))
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
        DataType::Boolean => {
            let a = array.as_boolean();
            Ok((
                Arc::new(BooleanArray::from(vec![aggregate::min_boolean(a)])) as ArrayRef,
                Arc::new(BooleanArray::from(vec![aggregate::max_boolean(a)])) as ArrayRef,
            ))
        }
        _ => Ok((unknown(data_type), unknown(data_type)))
    )
}

/// Row `row` of `array` as a one-row array with its own memory.
pub fn value_at(array: &dyn Array, row: usize) -> Result<ArrayRef> {
    let data_type = array.data_type();
    let valid = array.is_valid(row);
    downcast_primitive_array!(
        array => Ok(one(array, valid.then(|| array.value(row)))),
        DataType::Utf8 => bytes_value(
            valid.then(|| array.as_string::<i32>().value(row).as_bytes()), true),
        DataType::LargeUtf8 => bytes_value(
            valid.then(|| array.as_string::<i64>().value(row).as_bytes()), true),
        DataType::Utf8View => bytes_value(
            valid.then(|| array.as_string_view().value(row).as_bytes()), true),
        DataType::Binary => bytes_value(
            valid.then(|| array.as_binary::<i32>().value(row)), false),
        DataType::LargeBinary => bytes_value(
            valid.then(|| array.as_binary::<i64>().value(row)), false),
        DataType::BinaryView => bytes_value(
            valid.then(|| array.as_binary_view().value(row)), false),
        DataType::Boolean => Ok(Arc::new(BooleanArray::from(vec![
            valid.then(|| array.as_boolean().value(row)),
        ])) as ArrayRef),
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
