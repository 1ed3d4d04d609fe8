//! Skip index blocks: never a false negative, declarations parse and print,
//! files round-trip and reject damage; LIKE patterns yield only whole words.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use diagon::index::skip::{Block, SkipSpec, decode_legacy, encode_legacy, tokens, value_hashes};
use diagon::sql::skipping::whole_words;
use proptest::prelude::*;

fn specs() -> impl Strategy<Value = SkipSpec> {
    prop_oneof![
        Just("set(3)"),
        Just("set(1000)"),
        Just("bloom_filter(0.01)"),
        Just("bloom_filter(0.3) granularity 2"),
    ]
    .prop_map(|s| s.parse().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every value of a block is reported as possibly present (no false
    /// negatives), for integers and strings, through encode and decode.
    #[test]
    fn a_block_contains_every_value_it_summarises(spec in specs(), values in proptest::collection::vec(proptest::option::of(-50i64..50), 0..300)) {
        let ints: ArrayRef = Arc::new(Int64Array::from(values.clone()));
        let strings: ArrayRef = Arc::new(StringArray::from(values.iter().map(|v| v.map(|x| format!("v{x}"))).collect::<Vec<_>>()));
        for array in [ints, strings] {
            let blocks = vec![Block::build(&spec, &array).unwrap()];
            let back = decode_legacy("test", spec, &encode_legacy(&blocks)).unwrap();
            prop_assert_eq!(&back, &blocks);
            for (i, h) in value_hashes(array.as_ref()).unwrap().into_iter().enumerate() {
                if let Some(h) = h {
                    prop_assert!(back[0].may_contain(h), "row {} missing from {}", i, spec);
                }
            }
        }
    }

    #[test]
    fn damaged_skip_index_files_are_errors(spec in specs(), at in any::<prop::sample::Index>(), values in proptest::collection::vec(-5i64..5, 1..50)) {
        let array: ArrayRef = Arc::new(Int64Array::from(values));
        let mut file = encode_legacy(&[Block::build(&spec, &array).unwrap()]);
        let i = at.index(file.len());
        file[i] ^= 0x40;
        prop_assert!(decode_legacy("test", spec, &file).is_err());
    }
}

#[test]
fn a_set_that_overflows_prunes_nothing() {
    let spec: SkipSpec = "set(2)".parse().unwrap();
    let array: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    let block = Block::build(&spec, &array).unwrap();
    assert!(
        block.may_contain(12345),
        "an overflowed set must keep every block"
    );
    let small: ArrayRef = Arc::new(Int64Array::from(vec![1, 1, 2]));
    let block = Block::build(&spec, &small).unwrap();
    let seven: ArrayRef = Arc::new(Int64Array::from(vec![7]));
    let absent = value_hashes(seven.as_ref()).unwrap()[0].unwrap();
    assert!(!block.may_contain(absent));
}

#[test]
fn declarations_parse_and_print() {
    let spec: SkipSpec = "Bloom_Filter(0.01) GRANULARITY 4".parse().unwrap();
    assert_eq!(spec.to_string(), "bloom_filter(0.01) granularity 4");
    assert_eq!(spec.to_string().parse::<SkipSpec>().unwrap(), spec);
    assert_eq!("tokenbf".parse::<SkipSpec>().unwrap().granularity, 1);
    assert!("set(0)".parse::<SkipSpec>().is_err());
    assert!("bloom_filter(1.5)".parse::<SkipSpec>().is_err());
    assert!("set(3) granularity 0".parse::<SkipSpec>().is_err());
    assert!("minhash".parse::<SkipSpec>().is_err());
}

#[test]
fn like_patterns_yield_only_whole_words() {
    assert!(
        whole_words("%failure%").is_empty(),
        "could be part of a longer word"
    );
    assert_eq!(whole_words("% disk failure %"), vec!["disk", "failure"]);
    assert_eq!(whole_words("%disk failure on%"), vec!["failure"]);
    assert!(whole_words("disk failure").is_empty());
    assert_eq!(
        tokens("a-b  c42").collect::<Vec<_>>(),
        vec!["a", "b", "c42"]
    );
}

/// `minmax` is accepted like any declaration but is built in (every granule
/// keeps every column's min/max), so parts get no component for it.
#[tokio::test]
async fn minmax_is_declared_but_writes_no_file() {
    let spec: SkipSpec = "MINMAX granularity 4".parse().unwrap();
    assert_eq!(spec.to_string(), "minmax granularity 4");
    assert!(!spec.has_component());
    assert!(spec.check(&arrow::datatypes::DataType::Float64).is_ok());

    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("a", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new("b", arrow::datatypes::DataType::Int64, false),
    ]));
    let options: std::collections::HashMap<String, String> =
        [("skip_index.a", "minmax"), ("skip_index.b", "set(8)")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let options = diagon::TableOptions::parse(&options, &schema).unwrap();
    let column: ArrayRef = Arc::new(Int64Array::from_iter_values(0..100));
    let batch =
        arrow::array::RecordBatch::try_new(schema.clone(), vec![column.clone(), column]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::common::local_storage(dir.path());
    let table = crate::common::table_with(storage.clone(), schema, options, &[batch]).await;
    let snapshot = table.snapshot().await.unwrap();
    let index = table.part_index(&snapshot.parts[0].name).await.unwrap();
    let files: Vec<(&str, &str, &str)> = index
        .meta
        .components
        .iter()
        .map(|c| (c.kind.as_str(), c.columns[0].as_str(), c.file.as_str()))
        .collect();
    assert_eq!(files, vec![("skip_index", "b", "k0.cmp")]);
    assert_eq!(
        table.optimize(true).await.unwrap().0,
        0,
        "a table with every file-backed index built needs no rewrite"
    );
}

/// DELETE and UPDATE prune with skip indexes as queries do: on a column
/// whose min/max prunes nothing, the indexed table reads a fraction of what
/// the same table without the index reads, and both change the same rows.
#[tokio::test]
async fn delete_and_update_read_less_with_a_skip_index() {
    let mut read = Vec::new();
    let mut answers = Vec::new();
    for index in ["", ", 'skip_index.host' 'set(10)'"] {
        let dir = tempfile::tempdir().unwrap();
        let ctx = crate::common::context(1);
        let create = format!(
            "CREATE EXTERNAL TABLE t (id BIGINT NOT NULL, host VARCHAR, payload VARCHAR) STORED AS DIAGON \
             LOCATION '{}' OPTIONS ('order_by' 'id', 'granularity' '100', \
             'min_bytes_for_wide_part' '0', 'merge.background' 'false'{index})",
            dir.path().display()
        );
        crate::common::query(&ctx, &create).await;
        // Every granule holds 'aaa', 'zzz' and one host of its own; the
        // payload makes data, not metadata, most of what a full read reads.
        crate::common::query(
            &ctx,
            "INSERT INTO t SELECT value, CASE value % 10 WHEN 0 THEN 'aaa' WHEN 1 THEN 'zzz' \
             ELSE 'host-' || (value / 100) END, md5(value::varchar) FROM generate_series(0, 1999)",
        )
        .await;
        let (storage, store) = crate::crash::counting_storage(dir.path());
        let table = diagon::Table::open("t", storage).await.unwrap().unwrap();
        let ctx = crate::common::context(1);
        ctx.register_table("t", Arc::new(diagon::sql::DiagonTableProvider::new(table)))
            .unwrap();
        let before = store.bytes_read();
        let deleted = crate::common::query(&ctx, "DELETE FROM t WHERE host = 'host-3'").await;
        let updated = crate::common::query(
            &ctx,
            "UPDATE t SET host = 'moved' WHERE host IN ('host-5', 'host-17')",
        )
        .await;
        read.push(store.bytes_read() - before);
        let rows = crate::common::query(
            &ctx,
            "SELECT host, count(*) FROM t GROUP BY host ORDER BY host",
        )
        .await;
        answers.push((deleted, updated, rows));
    }
    assert_eq!(answers[0], answers[1], "the index changes no answer");
    assert!(answers[0].0.contains("| 80 "), "{:?}", answers[0]);
    assert!(
        read[1] * 4 < read[0],
        "with the index DELETE and UPDATE read {} bytes, without {}",
        read[1],
        read[0]
    );
}

/// A Bloom filter is sized by the distinct values (or words) of its block:
/// a value repeated in every row costs what one value costs.
#[test]
fn bloom_filters_are_sized_by_distinct_values() {
    let size = |spec: &str, values: Vec<&str>| {
        let spec: SkipSpec = spec.parse().unwrap();
        let array: ArrayRef = Arc::new(StringArray::from(values));
        match Block::build(&spec, &array).unwrap() {
            Block::Bloom { bits, .. } => bits.len(),
            other => panic!("not a bloom filter: {other:?}"),
        }
    };
    let one = size("bloom_filter(0.01)", vec!["a"]);
    assert_eq!(size("bloom_filter(0.01)", vec!["a"; 8192]), one);
    let words = size("tokenbf(0.01)", vec!["GET /api ok"]);
    assert_eq!(size("tokenbf(0.01)", vec!["GET /api ok"; 8192]), words);
    let distinct: Vec<String> = (0..1000).map(|i| format!("v{i}")).collect();
    let many = size(
        "bloom_filter(0.01)",
        distinct.iter().map(String::as_str).collect(),
    );
    assert!(
        many > 100 * one,
        "1,000 distinct values: {many} bytes, one: {one}"
    );
}
