//! How each Arrow type's values are laid out in a granule block: the
//! physical classes the codecs and the column format work with.

use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};

/// How a type's values are stored; `None` for types diagon does not store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Fixed(usize),
    Boolean,
    VarLen,
    /// Lists, structs and maps: validity and lengths per level, then each
    /// child's own layout (see `part::nested`).
    Nested,
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
        Decimal32(_, _) => Layout::Fixed(4),
        Decimal64(_, _) => Layout::Fixed(8),
        Decimal128(_, _) => Layout::Fixed(16),
        Decimal256(_, _) => Layout::Fixed(32),
        Interval(IntervalUnit::YearMonth) => Layout::Fixed(4),
        Interval(IntervalUnit::DayTime) => Layout::Fixed(8),
        Interval(IntervalUnit::MonthDayNano) => Layout::Fixed(16),
        FixedSizeBinary(width) if *width > 0 => Layout::Fixed(*width as usize),
        Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView => Layout::VarLen,
        List(field) | LargeList(field) | FixedSizeList(field, _) | Map(field, _) => {
            layout_of(field.data_type())?;
            Layout::Nested
        }
        Struct(fields) => {
            for field in fields {
                layout_of(field.data_type())?;
            }
            Layout::Nested
        }
        _ => return None,
    })
}

/// The type a column of `data_type` is stored as: its own, or for
/// dictionary and run-end encoded columns their value type (diagon's
/// layouts dictionary-encode repeated strings per granule themselves, and
/// a read casts back to the declared type). `None` if it cannot be stored.
pub fn storage_type(data_type: &DataType) -> Option<DataType> {
    match data_type {
        DataType::Dictionary(_, value) => {
            layout_of(value)?;
            Some(value.as_ref().clone())
        }
        DataType::RunEndEncoded(_, value) => {
            layout_of(value.data_type())?;
            Some(value.data_type().clone())
        }
        _ => layout_of(data_type).map(|_| data_type.clone()),
    }
}

/// Rows a granule of `data_type` may hold, if its keys bound them: a
/// dictionary's key type indexes at most that many distinct values, and a
/// run-end type counts rows up to its maximum.
pub fn rows_bound(data_type: &DataType) -> Option<usize> {
    let bound = |key: &DataType| match key {
        DataType::Int8 => Some(i8::MAX as usize + 1),
        DataType::UInt8 => Some(u8::MAX as usize + 1),
        DataType::Int16 => Some(i16::MAX as usize + 1),
        DataType::UInt16 => Some(u16::MAX as usize + 1),
        _ => None,
    };
    match data_type {
        DataType::Dictionary(key, _) => bound(key),
        // Run ends are row positions: the last equals the row count.
        DataType::RunEndEncoded(ends, _) => bound(ends.data_type()).map(|b| b - 1),
        _ => None,
    }
}
