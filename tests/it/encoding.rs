//! Codecs, block framing and column encoding round-trip every value, and
//! reject damage; checked against the original arrays (property tests).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Decimal128Array, Float32Array, Float64Array,
    Int8Array, Int64Array, LargeBinaryArray, LargeStringArray, StringArray, StringViewArray,
    TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::DataType;
use diagon::encoding::{Codec, decode_block, encode_block};
use diagon::part::column;
use proptest::prelude::*;

fn codecs() -> impl Strategy<Value = Codec> {
    prop_oneof![
        Just(Codec::Lz4),
        Just(Codec::None),
        (1i8..=22).prop_map(Codec::Zstd)
    ]
}

fn roundtrip(codec: Codec, array: &ArrayRef) -> ArrayRef {
    let mut payload = Vec::new();
    column::encode(array.as_ref(), &mut payload).expect("encode");
    let mut block = Vec::new();
    encode_block(codec, &payload, &mut block).expect("block");
    let (decoded, used) = decode_block(&block).expect("decode block");
    assert_eq!(used, block.len());
    assert_eq!(decoded.as_slice(), payload.as_slice());
    column::decode(&decoded, array.data_type()).expect("decode column")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn blocks_roundtrip_any_bytes(codec in codecs(), bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let mut block = Vec::new();
        encode_block(codec, &bytes, &mut block).unwrap();
        let (decoded, used) = decode_block(&block).unwrap();
        prop_assert_eq!(used, block.len());
        prop_assert_eq!(decoded.as_slice(), bytes.as_slice());
    }

    #[test]
    fn a_flipped_bit_is_detected(codec in codecs(), bytes in proptest::collection::vec(any::<u8>(), 1..2000), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut block = Vec::new();
        encode_block(codec, &bytes, &mut block).unwrap();
        let i = at.index(block.len());
        block[i] ^= 1 << bit;
        prop_assert!(decode_block(&block).is_err());
    }

    #[test]
    fn a_truncated_block_is_detected(codec in codecs(), bytes in proptest::collection::vec(any::<u8>(), 1..2000), keep in any::<prop::sample::Index>()) {
        let mut block = Vec::new();
        encode_block(codec, &bytes, &mut block).unwrap();
        let keep = keep.index(block.len());
        prop_assert!(decode_block(&block[..keep]).is_err());
    }

    #[test]
    fn integers_roundtrip(codec in codecs(), values in proptest::collection::vec(proptest::option::of(any::<i64>()), 0..500), offset in 0usize..3) {
        let array: ArrayRef = Arc::new(Int64Array::from(values.clone()));
        let sliced = array.slice(offset.min(array.len()), array.len() - offset.min(array.len()));
        let back = roundtrip(codec, &sliced);
        prop_assert_eq!(back.as_ref(), sliced.as_ref());
        let unsigned: ArrayRef = Arc::new(UInt64Array::from(values.iter().map(|v| v.map(|x| x as u64)).collect::<Vec<_>>()));
        let back = roundtrip(codec, &unsigned);
        prop_assert_eq!(back.as_ref(), unsigned.as_ref());
        let small: ArrayRef = Arc::new(Int8Array::from(values.iter().map(|v| v.map(|x| x as i8)).collect::<Vec<_>>()));
        let back = roundtrip(codec, &small);
        prop_assert_eq!(back.as_ref(), small.as_ref());
    }

    #[test]
    fn floats_roundtrip_bit_exact(codec in codecs(), values in proptest::collection::vec(proptest::option::of(any::<u64>()), 0..300)) {
        // Any bit pattern: NaNs with payloads, infinities, -0.0, subnormals.
        let array = Float64Array::from(values.iter().map(|v| v.map(f64::from_bits)).collect::<Vec<_>>());
        let array: ArrayRef = Arc::new(array);
        let (back, original) = (roundtrip(codec, &array).to_data(), array.to_data());
        prop_assert_eq!(back.buffers()[0].as_slice(), original.buffers()[0].as_slice());
        prop_assert_eq!(back.nulls(), original.nulls());
        let f32s: ArrayRef = Arc::new(Float32Array::from(values.iter().map(|v| v.map(|b| f32::from_bits(b as u32))).collect::<Vec<_>>()));
        let (back, original) = (roundtrip(codec, &f32s).to_data(), f32s.to_data());
        prop_assert_eq!(back.buffers()[0].as_slice(), original.buffers()[0].as_slice());
    }

    #[test]
    fn strings_and_binary_roundtrip(codec in codecs(), values in proptest::collection::vec(proptest::option::of(".{0,40}"), 0..200), offset in 0usize..3) {
        let refs: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(refs.clone())),
            Arc::new(LargeStringArray::from(refs.clone())),
            Arc::new(StringViewArray::from(refs.clone())),
            Arc::new(BinaryArray::from(refs.iter().map(|v| v.map(str::as_bytes)).collect::<Vec<_>>())),
            Arc::new(LargeBinaryArray::from(refs.iter().map(|v| v.map(str::as_bytes)).collect::<Vec<_>>())),
        ];
        for array in arrays {
            let start = offset.min(array.len());
            let sliced = array.slice(start, array.len() - start);
            let back = roundtrip(codec, &sliced);
        prop_assert_eq!(back.as_ref(), sliced.as_ref());
        }
    }

    #[test]
    fn booleans_decimals_timestamps_roundtrip(codec in codecs(), values in proptest::collection::vec(proptest::option::of(any::<i64>()), 0..300), offset in 0usize..9) {
        let start = offset.min(values.len());
        let bools: ArrayRef = Arc::new(BooleanArray::from(values.iter().map(|v| v.map(|x| x % 3 == 0)).collect::<Vec<_>>()));
        let decimals: ArrayRef = Arc::new(
            Decimal128Array::from(values.iter().map(|v| v.map(|x| i128::from(x) * 1_000_003)).collect::<Vec<_>>())
                .with_precision_and_scale(38, 4).unwrap(),
        );
        let timestamps: ArrayRef = Arc::new(TimestampNanosecondArray::from(values.clone()).with_timezone("+05:30"));
        for array in [bools, decimals, timestamps] {
            let sliced = array.slice(start, array.len() - start);
            let back = roundtrip(codec, &sliced);
        prop_assert_eq!(back.as_ref(), sliced.as_ref());
        }
    }
}

#[test]
fn unsupported_types_have_no_layout() {
    assert!(column::layout_of(&DataType::new_list(DataType::Int32, true)).is_none());
    assert!(column::layout_of(&DataType::Null).is_none());
}

#[test]
fn codec_names_parse_and_print() {
    assert_eq!("lz4".parse::<Codec>().unwrap(), Codec::Lz4);
    assert_eq!("ZSTD(7)".parse::<Codec>().unwrap(), Codec::Zstd(7));
    assert_eq!("zstd".parse::<Codec>().unwrap(), Codec::Zstd(3));
    assert_eq!(Codec::Zstd(9).to_string(), "zstd(9)");
    assert_eq!("None".parse::<Codec>().unwrap(), Codec::None);
    assert_eq!(Codec::None.to_string(), "none");
    assert!("zstd(0)".parse::<Codec>().is_err());
    assert!("gzip".parse::<Codec>().is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Decompressors see only CRC-verified blocks, but must still fail
    /// cleanly (never read out of bounds) on arbitrary input.
    #[test]
    fn decompressing_garbage_fails_cleanly(codec in codecs(), input in proptest::collection::vec(any::<u8>(), 0..600), out_len in 0usize..4096) {
        let mut out = vec![0u8; out_len];
        let _ = codec.decompress(&input, &mut out);
    }
}
