//! Codecs, block framing and column encoding round-trip every value, and
//! reject damage; checked against the original arrays (property tests).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Decimal128Array, Float32Array,
    Float64Array, Int8Array, Int64Array, LargeBinaryArray, LargeStringArray, StringArray,
    StringViewArray, TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::DataType;
use diagon::encoding::{Codec, CodecChain, Transform, ValueKind, decode_block, encode_block};
use diagon::part::column;
use proptest::prelude::*;

fn codecs() -> impl Strategy<Value = Codec> {
    prop_oneof![
        Just(Codec::Lz4),
        Just(Codec::None),
        Just(Codec::Auto),
        (1i8..=22).prop_map(Codec::Zstd)
    ]
}

/// Integer chains: every valid sequence of up to three transforms.
fn integer_transforms() -> impl Strategy<Value = Vec<Transform>> {
    use Transform::*;
    prop_oneof![
        Just(vec![]),
        Just(vec![Delta]),
        Just(vec![DoubleDelta]),
        Just(vec![T64]),
        Just(vec![Delta, T64]),
        Just(vec![Delta, DoubleDelta]),
        Just(vec![Delta, Delta, T64]),
    ]
}

fn float_transforms() -> impl Strategy<Value = Vec<Transform>> {
    prop_oneof![Just(vec![]), Just(vec![Transform::Gorilla])]
}

/// Value shapes the transforms care about: random bits, extremes, runs,
/// sorted and regular (timestamp-like) sequences.
fn shaped_i64s() -> impl Strategy<Value = Vec<Option<i64>>> {
    let extreme = prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0i64),
        Just(-1i64),
        any::<i64>()
    ];
    prop_oneof![
        proptest::collection::vec(proptest::option::of(any::<i64>()), 0..700),
        proptest::collection::vec(proptest::option::of(extreme), 0..300),
        (any::<i64>(), 0usize..600).prop_map(|(v, n)| vec![Some(v); n]),
        proptest::collection::vec(any::<i64>(), 0..600).prop_map(|mut v| {
            v.sort();
            v.into_iter().map(Some).collect()
        }),
        (
            any::<i64>(),
            -1000i64..1000,
            proptest::collection::vec(-3i64..3, 0..700)
        )
            .prop_map(|(start, step, jitter)| jitter
                .iter()
                .enumerate()
                .map(|(i, j)| Some(
                    start
                        .wrapping_add(step.wrapping_mul(i as i64))
                        .wrapping_add(*j)
                ))
                .collect()),
    ]
}

fn roundtrip(codec: Codec, array: &ArrayRef) -> ArrayRef {
    roundtrip_chain(&CodecChain::new(vec![], codec), array)
}

fn roundtrip_chain(chain: &CodecChain, array: &ArrayRef) -> ArrayRef {
    let codec = chain.compressor;
    let mut payload = Vec::new();
    column::encode(array.as_ref(), &chain.transforms, &mut payload).expect("encode");
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn integer_chains_roundtrip_every_width(transforms in integer_transforms(), codec in codecs(), values in shaped_i64s(), offset in 0usize..3) {
        let chain = CodecChain::new(transforms, codec);
        let start = offset.min(values.len());
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(values.clone())),
            Arc::new(UInt64Array::from(values.iter().map(|v| v.map(|x| x as u64)).collect::<Vec<_>>())),
            Arc::new(Int8Array::from(values.iter().map(|v| v.map(|x| x as i8)).collect::<Vec<_>>())),
            Arc::new(arrow::array::Int16Array::from(values.iter().map(|v| v.map(|x| x as i16)).collect::<Vec<_>>())),
            Arc::new(arrow::array::UInt32Array::from(values.iter().map(|v| v.map(|x| x as u32)).collect::<Vec<_>>())),
            Arc::new(arrow::array::Date32Array::from(values.iter().map(|v| v.map(|x| x as i32)).collect::<Vec<_>>())),
            Arc::new(TimestampNanosecondArray::from(values.clone())),
            Arc::new(
                Decimal128Array::from(values.iter().map(|v| v.map(|x| i128::from(x) * i128::from(x))).collect::<Vec<_>>())
                    .with_precision_and_scale(38, 2).unwrap(),
            ),
        ];
        for array in arrays {
            prop_assert!(chain.check(array.data_type()).is_ok(), "{chain} on {}", array.data_type());
            let sliced = array.slice(start, array.len() - start);
            let back = roundtrip_chain(&chain, &sliced);
            prop_assert_eq!(back.as_ref(), sliced.as_ref(), "{} on {}", chain, array.data_type());
        }
    }

    #[test]
    fn float_chains_roundtrip_bit_exact(transforms in float_transforms(), codec in codecs(), values in proptest::collection::vec(proptest::option::of(prop_oneof![any::<u64>(), Just(f64::NAN.to_bits()), Just(f64::INFINITY.to_bits()), Just((-0.0f64).to_bits()), (0u64..100).prop_map(|v| (v as f64 * 0.25).to_bits())]), 0..500)) {
        let chain = CodecChain::new(transforms, codec);
        let f64s: ArrayRef = Arc::new(Float64Array::from(values.iter().map(|v| v.map(f64::from_bits)).collect::<Vec<_>>()));
        let f32s: ArrayRef = Arc::new(Float32Array::from(values.iter().map(|v| v.map(|b| f32::from_bits(b as u32))).collect::<Vec<_>>()));
        for array in [f64s, f32s] {
            prop_assert!(chain.check(array.data_type()).is_ok());
            let (back, original) = (roundtrip_chain(&chain, &array).to_data(), array.to_data());
            prop_assert_eq!(back.buffers()[0].as_slice(), original.buffers()[0].as_slice());
            prop_assert_eq!(back.nulls(), original.nulls());
        }
    }

    /// Transforms see only CRC-verified blocks, but a block written by a
    /// buggy or hostile writer must still fail cleanly, never panic.
    #[test]
    fn decoding_garbage_with_a_transform_fails_cleanly(t in prop_oneof![Just(Transform::Delta), Just(Transform::DoubleDelta), Just(Transform::Gorilla), Just(Transform::T64)], width in prop_oneof![Just(1usize), Just(2), Just(4), Just(8), Just(16)], rows in 0usize..600, input in proptest::collection::vec(any::<u8>(), 0..700)) {
        let mut out = vec![0u8; rows * width];
        let _ = t.decode(&input, width, ValueKind::Signed, &mut out);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Few distinct values take the dictionary layout (1-byte indices up to
    /// 256 entries, 2-byte beyond); every representation round-trips.
    #[test]
    fn repeated_strings_roundtrip_through_the_dictionary(codec in codecs(), pool in 1usize..600, picks in proptest::collection::vec(proptest::option::weighted(0.9, any::<usize>()), 0..2000), offset in 0usize..3) {
        let values: Vec<Option<String>> = picks.iter().map(|p| p.map(|i| format!("value-{}", i % pool))).collect();
        let refs: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(refs.clone())),
            Arc::new(StringViewArray::from(refs.clone())),
            Arc::new(LargeBinaryArray::from(refs.iter().map(|v| v.map(str::as_bytes)).collect::<Vec<_>>())),
        ];
        for array in arrays {
            let start = offset.min(array.len());
            let sliced = array.slice(start, array.len() - start);
            let back = roundtrip(codec, &sliced);
            prop_assert_eq!(back.as_ref(), sliced.as_ref());
        }
    }
}

#[test]
fn a_low_cardinality_column_is_dictionary_encoded() {
    let modes = ["AIR", "MAIL", "RAIL", "SHIP", "TRUCK", "FOB", "REG AIR"];
    let values: Vec<&str> = (0..8192).map(|i| modes[(i * 7919) % modes.len()]).collect();
    let array: ArrayRef = Arc::new(StringArray::from(values));
    let mut payload = Vec::new();
    column::encode(array.as_ref(), &[], &mut payload).unwrap();
    // Dictionary: 7 entries and one byte a row, against 4 + ~4 bytes a row.
    assert!(payload.len() < 8192 + 200, "{} bytes", payload.len());
    assert_eq!(roundtrip(Codec::Lz4, &array).as_ref(), array.as_ref());
}

#[test]
fn t64_packs_narrow_ranges_into_few_bits() {
    // 1,000 values within 0..16 need 4 bits each: about 500 bytes plus
    // frame headers, against 8,000 raw.
    let values: Vec<u8> = (0..1000i64)
        .flat_map(|i| (1_000_000 + i % 16).to_le_bytes())
        .collect();
    let mut out = Vec::new();
    Transform::T64.encode(&values, 8, ValueKind::Signed, &mut out);
    assert!(out.len() < 600, "{} bytes", out.len());
    let mut back = vec![0u8; values.len()];
    Transform::T64
        .decode(&out, 8, ValueKind::Signed, &mut back)
        .unwrap();
    assert_eq!(back, values);
}

#[test]
fn chains_parse_print_and_check_types() {
    let chain: CodecChain = "DoubleDelta, LZ4".parse().unwrap();
    assert_eq!(
        chain,
        CodecChain::new(vec![Transform::DoubleDelta], Codec::Lz4)
    );
    assert_eq!(chain.to_string(), "doubledelta,lz4");
    let bare: CodecChain = "delta,t64".parse().unwrap();
    assert_eq!(bare.compressor, Codec::None, "no compressor means none");
    assert!(
        "lz4,delta".parse::<CodecChain>().is_err(),
        "compressor ends the chain"
    );
    assert!(
        "delta,delta,delta,t64".parse::<CodecChain>().is_err(),
        "four transforms"
    );
    assert!("rle".parse::<CodecChain>().is_err());
    let gorilla: CodecChain = "gorilla,zstd(1)".parse().unwrap();
    assert!(gorilla.check(&DataType::Float64).is_ok());
    let err = gorilla.check(&DataType::Int64).unwrap_err();
    assert!(err.contains("gorilla") && err.contains("Int64"), "{err}");
    assert!(
        "t64"
            .parse::<CodecChain>()
            .unwrap()
            .check(&DataType::Utf8)
            .is_err()
    );
    assert!(
        "delta"
            .parse::<CodecChain>()
            .unwrap()
            .check(&DataType::Float32)
            .is_err()
    );
    assert!(
        "t64,delta"
            .parse::<CodecChain>()
            .unwrap()
            .check(&DataType::Int32)
            .is_err(),
        "t64 must be last"
    );
    assert!(
        "delta,t64"
            .parse::<CodecChain>()
            .unwrap()
            .check(&DataType::Decimal128(12, 2))
            .is_ok()
    );
}

#[test]
fn unsupported_types_have_no_layout() {
    use arrow::datatypes::{Field, UnionFields, UnionMode};
    assert!(column::layout_of(&DataType::Null).is_none());
    let union = DataType::Union(UnionFields::empty(), UnionMode::Sparse);
    assert!(column::layout_of(&union).is_none());
    // A nested type is stored only when every type inside it is.
    assert_eq!(
        column::layout_of(&DataType::new_list(DataType::Int32, true)),
        Some(column::Layout::Nested)
    );
    assert!(column::layout_of(&DataType::new_list(DataType::Null, true)).is_none());
    let fields = vec![
        Field::new("a", DataType::Int8, true),
        Field::new("u", union, true),
    ];
    assert!(column::layout_of(&DataType::Struct(fields.into())).is_none());
}

#[test]
fn codec_names_parse_and_print() {
    assert_eq!("lz4".parse::<Codec>().unwrap(), Codec::Lz4);
    assert_eq!("ZSTD(7)".parse::<Codec>().unwrap(), Codec::Zstd(7));
    assert_eq!("zstd".parse::<Codec>().unwrap(), Codec::Zstd(3));
    assert_eq!(Codec::Zstd(9).to_string(), "zstd(9)");
    assert_eq!("None".parse::<Codec>().unwrap(), Codec::None);
    assert_eq!(Codec::None.to_string(), "none");
    assert_eq!("auto".parse::<Codec>().unwrap(), Codec::Auto);
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

/// Blocks written before lengths replaced offsets (layout 2) stay readable.
#[test]
fn offset_layout_strings_from_format_v1_still_decode() {
    let mut payload = Vec::new();
    for word in [2u32, 0, 0, 2] {
        payload.extend_from_slice(&word.to_le_bytes()); // rows, nulls, validity, layout
    }
    for offset in [0i32, 1, 3] {
        payload.extend_from_slice(&offset.to_le_bytes());
    }
    payload.resize(32, 0);
    payload.extend_from_slice(b"abc");
    let decoded = column::decode(&arrow::buffer::Buffer::from(payload), &DataType::Utf8).unwrap();
    let expected: ArrayRef = Arc::new(StringArray::from(vec!["a", "bc"]));
    assert_eq!(decoded.as_ref(), expected.as_ref());
}

#[test]
fn t64_divides_by_the_common_step() {
    // Quantities in cents: multiples of 100 pack like 1..=50 (6 bits).
    let values: Vec<u8> = (0..2048i128)
        .flat_map(|i| ((1 + (i * 37) % 50) * 100).to_le_bytes())
        .collect();
    let mut out = Vec::new();
    Transform::T64.encode(&values, 16, ValueKind::Signed, &mut out);
    assert!(out.len() < 2048 * 6 / 8 + 8 * 40, "{} bytes", out.len());
    let mut back = vec![0u8; values.len()];
    Transform::T64
        .decode(&out, 16, ValueKind::Signed, &mut back)
        .unwrap();
    assert_eq!(back, values);
}

/// Dictionary granules with byte-wide indices (written before indices were
/// bit-packed) stay readable.
#[test]
fn byte_indexed_dictionaries_still_decode() {
    let mut payload = Vec::new();
    for word in [3u32, 0, 0, 4] {
        payload.extend_from_slice(&word.to_le_bytes()); // rows, nulls, validity, layout
    }
    payload.extend_from_slice(&2u32.to_le_bytes()); // entries
    payload.extend_from_slice(&1u32.to_le_bytes()); // one byte per index
    payload.resize(32, 0);
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(&2u32.to_le_bytes());
    payload.resize(48, 0);
    payload.extend_from_slice(b"abc");
    payload.resize(64, 0);
    payload.extend_from_slice(&[1, 0, 1]);
    let decoded = column::decode(&arrow::buffer::Buffer::from(payload), &DataType::Utf8).unwrap();
    let expected: ArrayRef = Arc::new(StringArray::from(vec!["bc", "a", "bc"]));
    assert_eq!(decoded.as_ref(), expected.as_ref());
}

/// A block records its lengths in 32 bits: a granule of one column past
/// 4 GiB (a wide fixed-size binary can reach it) is an error naming the
/// options to lower, not a block whose length wrapped around.
#[test]
fn a_block_past_four_gib_is_an_error() {
    // Zeroed on demand: the check comes before any byte is read.
    let payload = vec![0u8; (u32::MAX as usize) + 1];
    let mut block = Vec::new();
    let error = encode_block(Codec::Lz4, &payload, &mut block).unwrap_err();
    assert!(error.to_string().contains("granularity"), "{error}");
    assert!(block.is_empty(), "nothing written");
}

/// A nested type: lists, large lists, fixed-size lists, structs and maps
/// over a few leaf types, up to three levels deep, fields nullable or not.
fn nested_type() -> impl Strategy<Value = DataType> {
    use arrow::datatypes::{Field, Fields};
    let leaf = prop_oneof![
        Just(DataType::Int32),
        Just(DataType::Int64),
        Just(DataType::Utf8),
        Just(DataType::Utf8View),
        Just(DataType::Boolean),
        Just(DataType::Float64),
        Just(DataType::LargeBinary),
        Just(DataType::Decimal128(10, 2)),
        Just(DataType::FixedSizeBinary(2)),
    ];
    let nested = leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), any::<bool>())
                .prop_map(|(t, n)| DataType::List(Arc::new(Field::new_list_field(t, n)))),
            inner
                .clone()
                .prop_map(|t| DataType::LargeList(Arc::new(Field::new("element", t, true)))),
            (inner.clone(), 0i32..3).prop_map(|(t, size)| DataType::FixedSizeList(
                Arc::new(Field::new_list_field(t, true)),
                size
            )),
            proptest::collection::vec((inner.clone(), any::<bool>()), 0..3).prop_map(|fields| {
                DataType::Struct(Fields::from(
                    fields
                        .into_iter()
                        .enumerate()
                        .map(|(i, (t, n))| Field::new(format!("f{i}"), t, n))
                        .collect::<Vec<_>>(),
                ))
            }),
            inner.prop_map(|t| {
                let entries = Fields::from(vec![
                    Field::new("key", DataType::Utf8, false),
                    Field::new("value", t, true),
                ]);
                DataType::Map(
                    Arc::new(Field::new("entries", DataType::Struct(entries), false)),
                    false,
                )
            }),
        ]
    });
    // A leaf alone is not nested.
    nested.prop_filter("nested", |t| t.is_nested())
}

/// A deterministic stream of numbers for building random arrays.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Validity of `rows` rows: about one in four NULL, none when the
    /// field is not nullable.
    fn nulls(&mut self, rows: usize, nullable: bool) -> Option<arrow::buffer::NullBuffer> {
        nullable.then(|| (0..rows).map(|_| self.below(4) != 0).collect())
    }
}

/// `rows` random values of `data_type`, NULLs at every level the type
/// allows, empty lists and lists of NULLs among them.
fn random_array(data_type: &DataType, rows: usize, nullable: bool, draws: &mut Draws) -> ArrayRef {
    use arrow::array::{
        FixedSizeBinaryArray, FixedSizeListArray, GenericListArray, Int32Array, MapArray,
        StructArray,
    };
    use arrow::buffer::OffsetBuffer;
    let nulls = draws.nulls(rows, nullable);
    let valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
    let small: Vec<Option<i64>> = (0..rows)
        .map(|i| valid(i).then(|| draws.below(7) as i64 - 3))
        .collect();
    match data_type {
        DataType::List(field) | DataType::LargeList(field) | DataType::Map(field, _) => {
            let lengths: Vec<usize> = (0..rows).map(|_| draws.below(4) as usize).collect();
            let total = lengths.iter().sum();
            let child = random_array(field.data_type(), total, field.is_nullable(), draws);
            match data_type {
                DataType::List(_) => Arc::new(GenericListArray::<i32>::new(
                    field.clone(),
                    OffsetBuffer::from_lengths(lengths),
                    child,
                    nulls,
                )),
                DataType::LargeList(_) => Arc::new(GenericListArray::<i64>::new(
                    field.clone(),
                    OffsetBuffer::from_lengths(lengths),
                    child,
                    nulls,
                )),
                _ => Arc::new(MapArray::new(
                    field.clone(),
                    OffsetBuffer::from_lengths(lengths),
                    child.as_struct().clone(),
                    nulls,
                    false,
                )),
            }
        }
        DataType::FixedSizeList(field, size) => {
            let child = random_array(
                field.data_type(),
                rows * *size as usize,
                field.is_nullable(),
                draws,
            );
            Arc::new(
                FixedSizeListArray::try_new_with_length(field.clone(), *size, child, nulls, rows)
                    .unwrap(),
            )
        }
        DataType::Struct(fields) => {
            let children = fields
                .iter()
                .map(|f| random_array(f.data_type(), rows, f.is_nullable(), draws))
                .collect();
            Arc::new(
                StructArray::try_new_with_length(fields.clone(), children, nulls, rows).unwrap(),
            )
        }
        DataType::Boolean => Arc::new(BooleanArray::from(
            small.iter().map(|v| v.map(|x| x > 0)).collect::<Vec<_>>(),
        )),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeBinary => {
            let strings = StringArray::from(
                small
                    .iter()
                    .map(|v| v.map(|x| "ab".repeat(x.unsigned_abs() as usize)))
                    .collect::<Vec<_>>(),
            );
            arrow::compute::cast(&strings, data_type).unwrap()
        }
        DataType::FixedSizeBinary(2) => Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                small.iter().map(|v| v.map(|x| [x as u8, 1])),
                2,
            )
            .unwrap(),
        ),
        DataType::Int32 => Arc::new(Int32Array::from(
            small
                .iter()
                .map(|v| v.map(|x| x as i32))
                .collect::<Vec<_>>(),
        )),
        other => arrow::compute::cast(&Int64Array::from(small), other).unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every nested type round-trips, sliced or not, with NULLs at every
    /// level, empty lists and lists of NULLs.
    #[test]
    fn nested_columns_roundtrip(data_type in nested_type(), rows in 0usize..60, seed in 1u64.., offset in 0usize..5, codec in codecs()) {
        let array = random_array(&data_type, rows, true, &mut Draws(seed));
        let start = offset.min(array.len());
        let sliced = array.slice(start, array.len() - start);
        let back = roundtrip(codec, &sliced);
        prop_assert_eq!(back.data_type(), sliced.data_type());
        prop_assert_eq!(back.as_ref(), sliced.as_ref());
        prop_assert_eq!(back.null_count(), sliced.null_count());
    }

    /// A damaged nested block is an error, never a panic or a wrong array:
    /// its payload (behind the block checksum) altered at one byte.
    #[test]
    fn a_damaged_nested_payload_fails_cleanly(data_type in nested_type(), rows in 1usize..40, seed in 1u64.., at in any::<prop::sample::Index>(), value in any::<u8>()) {
        let array = random_array(&data_type, rows, true, &mut Draws(seed));
        let mut payload = Vec::new();
        column::encode(array.as_ref(), &[], &mut payload).unwrap();
        let i = at.index(payload.len());
        let changed = payload[i] != value;
        payload[i] = value;
        let buffer = arrow::buffer::Buffer::from(payload);
        if let Ok(back) = column::decode(&buffer, &data_type) {
            back.to_data().validate_full().unwrap();
            prop_assert!(changed || back.as_ref() == array.as_ref());
        }
    }
}
