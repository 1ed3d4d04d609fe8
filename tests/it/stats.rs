//! Per-granule statistics (min, max, the sparse primary index's first
//! keys) concatenated over a part keep the column's exact type, and a view
//! column's share one data buffer.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryViewArray, StringViewArray};
use arrow::datatypes::DataType;
use diagon::part::stats::{concat, min_max, value_at};

/// Each granule's statistics, concatenated for a part, come back with
/// the column's exact type and, for view types, in one data buffer.
#[test]
fn statistics_keep_the_column_type() {
    let long = |i: usize| format!("a value longer than twelve bytes, number {i}");
    let granules: Vec<ArrayRef> = (0..4)
        .map(|g| {
            Arc::new(StringViewArray::from_iter_values(
                (0..3).map(|i| long(g * 10 + i)),
            )) as ArrayRef
        })
        .collect();
    let types = [
        DataType::Utf8,
        DataType::LargeUtf8,
        DataType::Utf8View,
        DataType::Binary,
        DataType::LargeBinary,
        DataType::BinaryView,
    ];
    for data_type in types {
        let (mut mins, mut maxs, mut firsts) = (vec![], vec![], vec![]);
        for granule in &granules {
            let granule = arrow::compute::cast(granule, &data_type).unwrap();
            let (min, max) = min_max(&granule).unwrap();
            mins.push(min);
            maxs.push(max);
            firsts.push(value_at(&granule, 1).unwrap());
        }
        for (values, row) in [(mins, 0), (maxs, 2), (firsts, 1)] {
            let array = concat(&values, &data_type).unwrap();
            assert_eq!(array.data_type(), &data_type);
            let text = arrow::compute::cast(&array, &DataType::Utf8).unwrap();
            let text = text.as_string::<i32>();
            for g in 0..granules.len() {
                assert_eq!(text.value(g), long(g * 10 + row), "{data_type} granule {g}");
            }
            match &data_type {
                DataType::Utf8View => {
                    let view = array.as_any().downcast_ref::<StringViewArray>().unwrap();
                    assert_eq!(view.data_buffers().len(), 1, "{data_type}");
                }
                DataType::BinaryView => {
                    let view = array.as_any().downcast_ref::<BinaryViewArray>().unwrap();
                    assert_eq!(view.data_buffers().len(), 1, "{data_type}");
                }
                _ => {}
            }
        }
    }
}
