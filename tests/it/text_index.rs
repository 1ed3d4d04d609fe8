//! A part's text index component against brute force: every term's rows,
//! frequencies and positions, every row's length code, and the column
//! statistics equal what analysing each row gives; across term info,
//! norm and postings block boundaries; for every string type.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use diagon::index::text::Analyzer;
use diagon::index::text::bm25::{decode_length, encode_length};
use diagon::index::text::component::{NORMS_PER_BLOCK, Summary, TextIndexBuilder, TextIndexReader};
use diagon::index::text::merge::{DROPPED, merge};
use diagon::index::text::postings::END;
use diagon::index::text::topk::{Plan, SearchCounts, search_planned};
use diagon::part::component::{BuiltComponent, Component, ComponentBuilder};
use diagon::storage::Storage;
use proptest::prelude::*;

/// Per term: (row, positions) in row order.
type Expected = BTreeMap<String, Vec<(u32, Vec<u32>)>>;

fn brute_force(analyzer: Analyzer, rows: &[Option<String>]) -> (Expected, Vec<u32>) {
    let mut terms: Expected = BTreeMap::new();
    let mut lens = Vec::new();
    for (row, text) in rows.iter().enumerate() {
        let mut positions: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut distinct = std::collections::BTreeSet::new();
        if let Some(text) = text {
            analyzer.analyze(text, |t| {
                positions
                    .entry(t.term.to_string())
                    .or_default()
                    .push(t.position);
                distinct.insert(t.position);
            });
        }
        lens.push(distinct.len() as u32);
        for (term, p) in positions {
            terms.entry(term).or_default().push((row as u32, p));
        }
    }
    (terms, lens)
}

async fn build(
    analyzer: Analyzer,
    rows: &[Option<String>],
    granule: usize,
    data_type: &DataType,
) -> TextIndexReader {
    let built = built(analyzer, rows, granule, data_type);
    open(&built, "part").await
}

/// The text index component of `rows`, fed in granules of `granule`.
fn built(
    analyzer: Analyzer,
    rows: &[Option<String>],
    granule: usize,
    data_type: &DataType,
) -> BuiltComponent {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "body",
        data_type.clone(),
        true,
    )]));
    let mut builder: Box<dyn ComponentBuilder> =
        Box::new(TextIndexBuilder::new(0, "body", analyzer));
    for (g, chunk) in rows.chunks(granule).enumerate() {
        let array: ArrayRef = Arc::new(StringArray::from(chunk.to_vec()));
        let array = arrow::compute::cast(&array, data_type).unwrap();
        let batch = RecordBatch::try_new(schema.clone(), vec![array]).unwrap();
        builder.add_granule((g * granule) as u64, &batch).unwrap();
    }
    builder.finish().unwrap()
}

/// `built` written as part `part`'s component, opened.
async fn open(built: &BuiltComponent, part: &str) -> TextIndexReader {
    let (bytes, meta) = built.encode("text_body.cmp").unwrap();
    let storage = Storage::memory("memory://text");
    storage
        .put(&format!("{part}/text_body.cmp"), bytes)
        .await
        .unwrap();
    let component = Component::open(&storage, part, &meta).unwrap();
    TextIndexReader::open(component).await.unwrap()
}

async fn check(
    analyzer: Analyzer,
    rows: &[Option<String>],
    granule: usize,
    data_type: &DataType,
) -> TextIndexReader {
    let reader = build(analyzer, rows, granule, data_type).await;
    let (terms, lens) = brute_force(analyzer, rows);
    let summary = reader.summary();
    assert_eq!(summary.part_rows, rows.len() as u64);
    assert_eq!(summary.terms, terms.len() as u64);
    assert_eq!(
        summary.stats.rows,
        lens.iter().filter(|&&l| l > 0).count() as u64
    );
    assert_eq!(
        summary.stats.total_len,
        lens.iter().map(|&l| u64::from(l)).sum::<u64>()
    );
    let coded: u64 = lens
        .iter()
        .filter(|&&l| l > 0)
        .map(|&l| u64::from(decode_length(encode_length(l))))
        .sum();
    assert_eq!(summary.coded_len, coded);
    assert_eq!(reader.analyzer(), analyzer);

    let mut positions = Vec::new();
    for (term, expected) in &terms {
        let info = reader.term(term).await.unwrap().expect(term);
        assert_eq!(info.doc_freq as usize, expected.len(), "{term}");
        let bytes = reader.postings(&info).await.unwrap();
        let list = bytes.open(&reader).unwrap();
        let mut cursor = list.cursor().unwrap();
        for (row, expected_positions) in expected {
            assert_eq!(cursor.row(), *row, "{term}");
            assert_eq!(cursor.freq() as usize, expected_positions.len());
            cursor.positions(&mut positions).unwrap();
            assert_eq!(&positions, expected_positions, "{term} row {row}");
            cursor.advance().unwrap();
        }
        assert_eq!(cursor.row(), END, "{term}");
    }
    assert_eq!(reader.term("no-such-term").await.unwrap(), None);
    for (b, chunk) in lens.chunks(NORMS_PER_BLOCK).enumerate() {
        let norms = reader.norms(b).await.unwrap();
        let expected: Vec<u8> = chunk.iter().map(|&l| encode_length(l)).collect();
        assert_eq!(norms.as_slice(), expected.as_slice(), "norm block {b}");
    }
    reader
}

pub(crate) fn corpus() -> impl Strategy<Value = Vec<Option<String>>> {
    let word = prop_oneof![
        Just("the".to_string()),
        Just("Wireless".to_string()),
        Just("headphones".to_string()),
        Just("noise-cancelling".to_string()),
        Just("café".to_string()),
        "[a-e]{1,3}",
        "[a-z]{4,9}",
    ];
    let text = proptest::collection::vec(word, 0..12).prop_map(|w| w.join(" "));
    proptest::collection::vec(proptest::option::weighted(0.9, text), 1..300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_part_index_equals_brute_force(
        rows in corpus(),
        granule in 1usize..64,
        analyzer in prop_oneof![
            Just("standard"), Just("english"), Just("simple"), Just("ngram(2,3)")
        ],
        view in any::<bool>(),
    ) {
        let data_type = if view { DataType::Utf8View } else { DataType::LargeUtf8 };
        let analyzer = Analyzer::parse("analyzer.body", analyzer).unwrap();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(check(analyzer, &rows, granule, &data_type));
    }
}

/// Merges `inputs` as a part merge would: input `i`'s row `r` is deleted
/// when `(r + i) % delete_every == 1` (never with 0), and the live rows
/// interleave as `picks` choose. Returns the output rows and the row maps.
fn merged_rows(
    inputs: &[Vec<Option<String>>],
    delete_every: usize,
    picks: &[u8],
) -> (Vec<Option<String>>, Vec<Vec<u32>>) {
    let live = |i: usize, r: usize| delete_every == 0 || (r + i) % delete_every != 1;
    let mut maps: Vec<Vec<u32>> = inputs
        .iter()
        .map(|rows| vec![DROPPED; rows.len()])
        .collect();
    let mut queues: Vec<std::collections::VecDeque<usize>> = inputs
        .iter()
        .enumerate()
        .map(|(i, rows)| (0..rows.len()).filter(|&r| live(i, r)).collect())
        .collect();
    let mut output = Vec::new();
    let mut picks = picks.iter();
    loop {
        let open: Vec<usize> = (0..queues.len())
            .filter(|&i| !queues[i].is_empty())
            .collect();
        let Some(&first) = open.first() else {
            break;
        };
        let i = picks
            .next()
            .map_or(first, |&p| open[p as usize % open.len()]);
        let r = queues[i].pop_front().unwrap();
        maps[i][r] = output.len() as u32;
        output.push(inputs[i][r].clone());
    }
    (output, maps)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The index a merge writes from its inputs' postings through the row
    /// map is the index of the merged rows, byte for byte (but the
    /// summary's exact total length, which deleted long rows blur).
    #[test]
    fn a_merged_index_is_the_index_of_the_merged_rows(
        inputs in proptest::collection::vec(corpus(), 1..4),
        delete_every in 0usize..4,
        picks in proptest::collection::vec(any::<u8>(), 0..900),
        analyzer in prop_oneof![Just("standard"), Just("english"), Just("ngram(2,3)")],
    ) {
        let analyzer = Analyzer::parse("analyzer.body", analyzer).unwrap();
        let (output, maps) = merged_rows(&inputs, delete_every, &picks);
        let expected = built(analyzer, &output, 13, &DataType::Utf8);
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let mut readers = Vec::new();
            for (i, rows) in inputs.iter().enumerate() {
                let built = built(analyzer, rows, 1 + i * 5, &DataType::Utf8);
                readers.push(open(&built, &format!("in{i}")).await);
            }
            let merged = merge("body", analyzer, &readers, &maps, output.len() as u64)
                .await
                .unwrap();
            assert_eq!(
                (&merged.kind, &merged.columns, merged.version, &merged.params),
                (&expected.kind, &expected.columns, expected.version, &expected.params)
            );
            assert_eq!(merged.blocks.len(), expected.blocks.len());
            for (b, (m, e)) in merged.blocks.iter().zip(&expected.blocks).enumerate().skip(1) {
                assert!(m == e, "block {b} of {} differs", merged.blocks.len());
            }
            let m = open(&merged, "m").await.summary().clone();
            let e = open(&expected, "e").await.summary().clone();
            assert!(m.stats.total_len >= e.stats.total_len);
            if delete_every == 0 {
                assert_eq!(m, e);
            }
            assert_eq!((m.stats.rows, m.coded_len, m.terms), (e.stats.rows, e.coded_len, e.terms));
        });
    }
}

/// A merge's input index that is damaged fails the merge naming the
/// component; it never writes a wrong index.
#[tokio::test]
async fn a_damaged_input_fails_the_merge() {
    let rows: Vec<Option<String>> = (0..500)
        .map(|i| Some(format!("w{} x{}", i % 13, i % 5)))
        .collect();
    let good = built(Analyzer::Standard, &rows, 64, &DataType::Utf8);
    let maps = vec![(0..500).collect::<Vec<u32>>()];
    let last = good.blocks.len() - 1;
    for damage in 0..3 {
        let mut bad = good.clone();
        let block = &mut bad.blocks[last];
        match damage {
            0 => block.truncate(block.len() / 2),
            1 => block.iter_mut().skip(8).step_by(7).for_each(|b| *b ^= 0x5a),
            _ => block.iter_mut().for_each(|b| *b = 0xff),
        }
        let reader = open(&bad, "in").await;
        match merge("body", Analyzer::Standard, &[reader], &maps, 500).await {
            Err(e) => assert!(e.to_string().contains("text_index(body)"), "{e}"),
            Ok(merged) => assert!(
                merged.blocks == good.blocks,
                "damage {damage} merged into a different index"
            ),
        }
    }
}

/// More terms than a term info block, more rows than a norm block, and a
/// posting list longer than a postings block.
#[tokio::test]
async fn large_parts_cross_every_block_boundary() {
    let rows: Vec<Option<String>> = (0..NORMS_PER_BLOCK + 5000)
        .map(|i| {
            let repeated = if i % 3 == 0 {
                " common".repeat(40)
            } else {
                String::new()
            };
            Some(format!("w{} x{}{repeated}", i % 5000, i % 7))
        })
        .collect();
    let reader = check(Analyzer::Standard, &rows, 8192, &DataType::Utf8).await;
    let summary = reader.summary();
    assert!(summary.info_blocks >= 2, "{summary:?}");
    assert_eq!(summary.norm_blocks, 2);
    assert!(summary.postings_blocks >= 3, "{summary:?}");
}

fn options(pairs: &[(&str, &str)], schema: &Schema) -> diagon::Result<diagon::TableOptions> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    diagon::TableOptions::parse(&map, schema)
}

fn docs_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("title", DataType::Utf8, true),
        Field::new("body", DataType::Utf8View, true),
    ]))
}

#[test]
fn text_search_options_parse_and_read_back() {
    let schema = docs_schema();
    let parsed = options(
        &[
            ("text_index", "title, BODY"),
            ("analyzer.body", "english"),
            ("bm25.k1", "1.5"),
            ("bm25.b", "0.5"),
            ("default_operator", "AND"),
        ],
        &schema,
    )
    .unwrap();
    assert_eq!(parsed.text.indexes["title"], Analyzer::Standard);
    assert_eq!(parsed.text.indexes["body"], Analyzer::English);
    assert_eq!((parsed.text.bm25.k1, parsed.text.bm25.b), (1.5, 0.5));
    let stored: std::collections::HashMap<String, String> = parsed.to_map().into_iter().collect();
    assert_eq!(
        diagon::TableOptions::parse(&stored, &schema).unwrap(),
        parsed
    );
    // Without a text index nothing of it is stored.
    let plain = options(&[], &schema).unwrap().to_map();
    assert!(
        !plain
            .keys()
            .any(|k| k.contains("bm25") || k.contains("text"))
    );
}

#[test]
fn bad_text_search_options_name_the_option() {
    let schema = docs_schema();
    for (pairs, says) in [
        (
            vec![("text_index", "id")],
            "column 'id' has type Int64; a text index takes strings",
        ),
        (vec![("text_index", "nope")], "no column 'nope'"),
        (vec![("text_index", "title,")], "an empty column name"),
        (
            vec![("analyzer.body", "english")],
            "column 'body' is not in 'text_index'",
        ),
        (
            vec![("text_index", "body"), ("analyzer.body", "elvish")],
            "unknown analyzer 'elvish'",
        ),
        (vec![("bm25.b", "2")], "bm25.b"),
        (vec![("bm25.k1", "x")], "'x' is not a number"),
        (vec![("default_operator", "xor")], "neither OR nor AND"),
    ] {
        let key = pairs.last().unwrap().0;
        let error = options(&pairs, &schema).unwrap_err().to_string();
        assert!(
            error.contains(key) && error.contains(says),
            "{pairs:?}: {error}"
        );
    }
}

fn docs_batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let titles: Vec<String> = ids.clone().map(|i| format!("title {i}")).collect();
    let bodies: Vec<String> = ids
        .clone()
        .map(|i| format!("body words w{}", i % 7))
        .collect();
    RecordBatch::try_new(
        docs_schema(),
        vec![
            Arc::new(arrow::array::Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(titles)),
            Arc::new(arrow::array::StringViewArray::from_iter_values(bodies)),
        ],
    )
    .unwrap()
}

async fn text_components(table: &Arc<diagon::Table>) -> Vec<Vec<String>> {
    let snapshot = table.snapshot().await.unwrap();
    let mut out = Vec::new();
    for index in table.part_indexes(&snapshot).await.unwrap() {
        out.push(
            index
                .meta
                .components
                .iter()
                .filter(|c| c.kind == "text_index")
                .map(|c| format!("{}:{}", c.columns[0], c.params))
                .collect(),
        );
    }
    out
}

/// Inserts write the declared text indexes; declaring one later and
/// optimizing builds it for the parts written before.
#[tokio::test]
async fn parts_carry_their_text_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::common::local_storage(dir.path());
    let mut opts = options(
        &[("text_index", "body"), ("analyzer.body", "english")],
        &docs_schema(),
    )
    .unwrap();
    opts.merge.background = false;
    let table = diagon::Table::create("docs", storage, docs_schema(), opts.clone())
        .await
        .unwrap();
    for range in [0..50, 50..120] {
        let mut writer = table.insert();
        writer.write(docs_batch(range)).await.unwrap();
        writer.commit().await.unwrap();
    }
    assert_eq!(
        text_components(&table).await,
        vec![vec!["body:english".to_string()]; 2]
    );

    // A part's index answers: `w3` is in ids 3, 10, 17, ... (rows = ids here).
    let snapshot = table.snapshot().await.unwrap();
    let index = table
        .entry_index(&snapshot, &snapshot.parts[0])
        .await
        .unwrap();
    let meta = index
        .meta
        .components
        .iter()
        .find(|c| c.kind == "text_index")
        .unwrap();
    let part_dir = diagon::part::part_dir(&snapshot.parts[0].name);
    let component = Component::open(table.storage(), &part_dir, meta).unwrap();
    let reader = TextIndexReader::open(component).await.unwrap();
    let info = reader.term("w3").await.unwrap().unwrap();
    assert_eq!(
        info.doc_freq as usize,
        (0..50).filter(|i| i % 7 == 3).count()
    );
    // Terms are stored analysed: English stems `words` to `word`.
    assert_eq!(reader.analyzer().terms("words"), ["word"]);
    assert_eq!(reader.term("word").await.unwrap().unwrap().doc_freq, 50);
    assert_eq!(reader.term("words").await.unwrap(), None);
    assert_eq!(
        reader.term("title").await.unwrap(),
        None,
        "title is not indexed"
    );

    // Declared anew: title too, body with another analyzer.
    let text = options(&[("text_index", "title,body")], &docs_schema())
        .unwrap()
        .text;
    table.set_text_search(text).await.unwrap();
    table.optimize(true).await.unwrap();
    assert_eq!(
        text_components(&table).await,
        vec![vec![
            "body:standard".to_string(),
            "title:standard".to_string()
        ]]
    );
}

/// Random queries of every syntax over the words the corpus uses.
pub(crate) fn query_text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("a"),
        Just("b"),
        Just("ab"),
        Just("abc"),
        Just("cd"),
        Just("the"),
        Just("wireless"),
        Just("headphones"),
        Just("noise"),
        Just("cancelling"),
        Just("café"),
        Just("cafe"),
    ];
    let leaf = prop_oneof![
        word.clone().prop_map(str::to_string),
        word.clone().prop_map(|w| format!("{w}*")),
        (word.clone(), 1u8..=2).prop_map(|(w, d)| format!("{w}~{d}")),
        (proptest::collection::vec(word, 2..4), 0u32..4).prop_map(|(words, slop)| {
            let phrase = format!("\"{}\"", words.join(" "));
            match slop {
                0 => phrase,
                s => format!("{phrase}~{s}"),
            }
        }),
        Just("noise-cancelling".to_string()),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("(+{a} -{b})")),
            inner.clone().prop_map(|a| format!("NOT {a}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} -{b})")),
            inner.prop_map(|a| format!("({a})^2")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The rows a query matches through a part's index are the rows whose
    /// values match it when analysed one by one.
    #[test]
    fn the_index_matches_what_brute_force_matches(
        rows in corpus(),
        queries in proptest::collection::vec(query_text(), 1..6),
        analyzer in prop_oneof![Just("standard"), Just("english"), Just("ngram(2,3)")],
        and in any::<bool>(),
    ) {
        use diagon::index::text::bound::Bound;
        use diagon::index::text::{DefaultOperator, Query};
        let analyzer = Analyzer::parse("analyzer.body", analyzer).unwrap();
        let default = if and { DefaultOperator::And } else { DefaultOperator::Or };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let reader = runtime.block_on(build(analyzer, &rows, 50, &DataType::Utf8));
        for text in queries {
            let query = Query::parse(&text, default).unwrap();
            let bound = Bound::bind(&query, "body", analyzer).unwrap();
            let found = runtime
                .block_on(diagon::index::text::search::matching_rows(&reader, &bound))
                .unwrap();
            let found: Vec<u32> = found
                .into_iter()
                .filter(|&r| rows[r as usize].is_some())
                .collect();
            let expected: Vec<u32> = rows
                .iter()
                .enumerate()
                .filter(|(_, v)| v.as_deref().is_some_and(|v| bound.matches(analyzer, v)))
                .map(|(i, _)| i as u32)
                .collect();
            prop_assert_eq!(found, expected, "query {} bound as {:?}", text, bound);
        }
    }
}

/// Table-wide BM25 statistics count live rows only: after a DELETE they
/// equal those of a table holding just the rows left, and brute force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_cover_live_rows_across_parts() {
    let bodies = |ids: std::ops::Range<i64>| -> Vec<String> {
        ids.map(|i| {
            let long = if i % 5 == 0 {
                " pad".repeat(60)
            } else {
                String::new()
            };
            format!(
                "w{} shared{}{long}",
                i % 4,
                if i % 2 == 0 { " even" } else { "" }
            )
        })
        .collect()
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("body", DataType::Utf8, true),
    ]));
    let batch = |ids: std::ops::Range<i64>| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow::array::Int64Array::from_iter_values(ids.clone())),
                Arc::new(StringArray::from(bodies(ids))),
            ],
        )
        .unwrap()
    };
    let mut opts = options(&[("text_index", "body")], &schema).unwrap();
    opts.merge.background = false;
    opts.order_by = vec!["id".into()];
    let dir = tempfile::tempdir().unwrap();
    let table = diagon::Table::create(
        "t",
        crate::common::local_storage(&dir.path().join("t")),
        schema.clone(),
        opts.clone(),
    )
    .await
    .unwrap();
    for range in [0..40, 40..100, 100..130] {
        let mut writer = table.insert();
        writer.write(batch(range)).await.unwrap();
        writer.commit().await.unwrap();
    }
    let ctx = crate::common::context(2);
    ctx.register_table(
        "t",
        Arc::new(diagon::sql::DiagonTableProvider::new(table.clone())),
    )
    .unwrap();
    crate::common::query(
        &ctx,
        "DELETE FROM t WHERE id % 3 = 0 OR id BETWEEN 95 AND 110",
    )
    .await;

    let live: Vec<i64> = (0..130)
        .filter(|i| !(i % 3 == 0 || (95..=110).contains(i)))
        .collect();
    let terms: Vec<String> = ["w0", "w1", "shared", "even", "pad", "absent"]
        .map(String::from)
        .to_vec();
    let snapshot = table.snapshot().await.unwrap();
    let stats = table
        .text_statistics(&snapshot, "body", &terms)
        .await
        .unwrap();

    // Brute force over the live rows.
    let mut expected = diagon::table::text::TextStatistics {
        doc_freqs: vec![0; terms.len()],
        ..Default::default()
    };
    for &id in &live {
        let body = &bodies(id..id + 1)[0];
        let found = Analyzer::Standard.terms(body);
        let mut positions = std::collections::BTreeSet::new();
        Analyzer::Standard.analyze(body, |t| {
            positions.insert(t.position);
        });
        expected.column.rows += 1;
        expected.column.total_len +=
            u64::from(decode_length(encode_length(positions.len() as u32)));
        for (term, df) in terms.iter().zip(expected.doc_freqs.iter_mut()) {
            *df += u64::from(found.contains(term));
        }
    }
    assert_eq!(stats, expected);

    // A table of just the live rows, in one part, agrees.
    let fresh = diagon::Table::create(
        "fresh",
        crate::common::local_storage(&dir.path().join("fresh")),
        schema.clone(),
        opts,
    )
    .await
    .unwrap();
    let ids = arrow::array::Int64Array::from(live.clone());
    let texts: Vec<String> = live.iter().map(|&i| bodies(i..i + 1).remove(0)).collect();
    let live_batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(ids), Arc::new(StringArray::from(texts))],
    )
    .unwrap();
    let mut writer = fresh.insert();
    writer.write(live_batch).await.unwrap();
    writer.commit().await.unwrap();
    let fresh_snapshot = fresh.snapshot().await.unwrap();
    assert_eq!(
        fresh
            .text_statistics(&fresh_snapshot, "body", &terms)
            .await
            .unwrap(),
        stats
    );
}

proptest! {
    /// The union of sorted row lists, by bitmap or by sorting, is every row
    /// of any list once, in order.
    #[test]
    fn union_all_equals_sorting_every_row(
        lists in proptest::collection::vec(
            proptest::collection::btree_set(0u32..2_000, 0..300), 0..6),
        part_rows in prop_oneof![Just(2_000usize), Just(1_000_000usize), Just(1_000usize)],
    ) {
        let lists: Vec<Vec<u32>> = lists.into_iter().map(|l| l.into_iter().collect()).collect();
        let mut expected: Vec<u32> = lists.concat();
        expected.sort_unstable();
        expected.dedup();
        let found = diagon::index::text::search::union_all(lists, part_rows);
        prop_assert_eq!(found, expected);
    }
}

/// A merge whose output has more terms than a term info block, more rows
/// than a norm block and lists longer than a postings block writes the
/// index a build of its rows writes, block for block.
#[tokio::test]
async fn a_large_merge_crosses_every_block_boundary() {
    let row = |i: usize| {
        let repeated = if i.is_multiple_of(3) {
            " common".repeat(40)
        } else {
            String::new()
        };
        Some(format!("w{} x{}{repeated}", i % 5000, i % 7))
    };
    let half = (NORMS_PER_BLOCK + 10_000) / 2;
    let inputs: Vec<Vec<Option<String>>> = (0..2)
        .map(|input| (0..half).map(|i| row(2 * i + input)).collect())
        .collect();
    // Every 11th row of each input deleted; the rest interleave.
    let picks: Vec<u8> = (0..2 * half).map(|i| (i % 2) as u8).collect();
    let (output, maps) = merged_rows(&inputs, 11, &picks);
    let expected = built(Analyzer::Standard, &output, 8192, &DataType::Utf8);
    let mut readers = Vec::new();
    for (i, rows) in inputs.iter().enumerate() {
        let built = built(Analyzer::Standard, rows, 8192, &DataType::Utf8);
        readers.push(open(&built, &format!("in{i}")).await);
    }
    let merged = merge(
        "body",
        Analyzer::Standard,
        &readers,
        &maps,
        output.len() as u64,
    )
    .await
    .unwrap();
    let summary = open(&merged, "m").await.summary().clone();
    assert!(
        summary.info_blocks >= 2 && summary.norm_blocks == 2,
        "{summary:?}"
    );
    assert!(summary.postings_blocks >= 3, "{summary:?}");
    assert_eq!(merged.blocks.len(), expected.blocks.len());
    for (b, (m, e)) in merged
        .blocks
        .iter()
        .zip(&expected.blocks)
        .enumerate()
        .skip(1)
    {
        assert!(m == e, "block {b} differs");
    }
}

/// Rows offered by a top-k search, none refused (its bounds never prune).
#[derive(Default)]
struct TakeAll(Vec<u32>);

#[async_trait::async_trait]
impl diagon::index::text::topk::Collector for TakeAll {
    fn threshold(&self) -> f32 {
        f32::NEG_INFINITY
    }

    async fn collect(&mut self, row: u32, _score: f32) -> diagon::Result<()> {
        self.0.push(row);
        Ok(())
    }
}

/// Impacts that do not decode (here a block's count of pairs 0, under a
/// valid checksum) fail a top-k search of a union or an intersection,
/// naming the component, whether the search reads the blocks' leads
/// alone (scoring by the part's statistics) or their impacts too: a
/// search reads them lazily, and must not pass them by silently.
#[tokio::test]
async fn undecodable_impacts_fail_the_top_k_search() {
    use diagon::index::text::bm25::{Bm25, ColumnStats};
    use diagon::index::text::bound::Bound;
    use diagon::index::text::score::Scoring;
    use diagon::index::text::{DefaultOperator, Query};

    let rows: Vec<Option<String>> = (0..512).map(|_| Some("a b".to_string())).collect();
    let good = built(Analyzer::Standard, &rows, 128, &DataType::Utf8);
    let summary = open(&good, "good").await.summary().clone();
    // `a`, the first term, is the first list of the first postings block:
    // 4 full blocks, so its last row, 4 skip entries, two one-byte
    // varints (no tail; short impacts), the list's lead (a frequency of
    // one byte and a length code), its blocks' data, then block 0's
    // impacts, whose first byte counts its pairs.
    let mut bad = good.clone();
    let postings = first_postings_block(&mut bad, &summary);
    let data_end = u32::from_le_bytes(postings[4 + 3 * 16 + 4..][..4].try_into().unwrap());
    postings[4 + 4 * 16 + 4 + data_end as usize] = 0;
    let reader = open(&bad, "bad").await;
    let terms = ["a".to_string(), "b".to_string()];
    for (query, total_len) in [
        ("a b", 1024),
        ("+a +b", 1024),
        ("a b", 3000),
        ("+a +b", 3000),
    ] {
        let stats = ColumnStats {
            rows: 512,
            total_len,
        };
        let scoring = Scoring::new(Bm25::default(), stats, &terms, &[512, 512]);
        let parsed = Query::parse(query, DefaultOperator::Or).unwrap();
        let bound = Bound::bind(&parsed, "body", Analyzer::Standard).unwrap();
        let mut taken = TakeAll::default();
        // MaxScore: scoring every row of a union reads no impacts.
        let found = search_planned(&reader, &bound, &scoring, &mut taken, Plan::MaxScore).await;
        let error = found.err().unwrap_or_else(|| panic!("{query}: no error"));
        assert!(error.to_string().contains("text_index(body)"), "{error}");
    }
}

/// A search that scores as the part does bounds blocks by their leads
/// alone, never reading their other impacts: with every block's count of
/// impacts of the first list damaged (its lead intact), a top-k search
/// by the part's statistics answers as on the undamaged part, and one by
/// other statistics, which must read them, fails naming the component.
#[tokio::test]
async fn a_search_scoring_as_the_part_reads_only_the_leads() {
    use diagon::index::text::bm25::{Bm25, ColumnStats};
    use diagon::index::text::bound::Bound;
    use diagon::index::text::score::Scoring;
    use diagon::index::text::{DefaultOperator, Query};

    // Two competitive impacts in every block of `a`'s 4 full blocks:
    // (1, length 2) and (3, length 12).
    let rows: Vec<Option<String>> = (0..512)
        .map(|i| match i % 2 {
            0 => Some("a b".to_string()),
            _ => Some("a a a b c d e f g h i j".to_string()),
        })
        .collect();
    let good = built(Analyzer::Standard, &rows, 128, &DataType::Utf8);
    let good_reader = open(&good, "good").await;
    let summary = good_reader.summary().clone();
    // `a`'s list: its last row, 4 skip entries, two one-byte varints, its
    // lead (two bytes), its blocks' data, then each block's impacts, the
    // first byte of which counts its pairs: 2, made 127.
    let mut bad = good.clone();
    let postings = first_postings_block(&mut bad, &summary);
    let data_end = u32::from_le_bytes(postings[4 + 3 * 16 + 4..][..4].try_into().unwrap());
    let impacts = 4 + 4 * 16 + 4 + data_end as usize;
    assert_eq!(postings[impacts], 2, "block 0 of `a` has two impacts");
    postings[impacts] = 127;
    let reader = open(&bad, "bad").await;
    let terms = ["a".to_string(), "b".to_string()];
    let own = summary.scored_stats();
    let other = ColumnStats {
        rows: own.rows,
        total_len: own.total_len * 2,
    };
    for query in ["a b", "+a +b", "a"] {
        let parsed = Query::parse(query, DefaultOperator::Or).unwrap();
        let bound = Bound::bind(&parsed, "body", Analyzer::Standard).unwrap();
        let own_scoring = Scoring::new(Bm25::default(), own, &terms, &[512, 512]);
        // MaxScore: scoring every row of a union reads no impacts.
        let plan = Plan::MaxScore;
        let expected = best_ten(&good_reader, &bound, &own_scoring, plan).await;
        let found = best_ten(&reader, &bound, &own_scoring, plan).await;
        assert_eq!(found.unwrap().1, expected.unwrap().1, "{query}");
        let other_scoring = Scoring::new(Bm25::default(), other, &terms, &[512, 512]);
        let error = best_ten(&reader, &bound, &other_scoring, plan)
            .await
            .err()
            .unwrap_or_else(|| panic!("{query}: no error under other statistics"));
        assert!(error.to_string().contains("text_index(body)"), "{error}");
    }
}

/// The best 10 rows of a top-k search as `plan` says, and what it counted.
async fn best_ten(
    reader: &TextIndexReader,
    bound: &diagon::index::text::bound::Bound,
    scoring: &diagon::index::text::score::Scoring,
    plan: Plan,
) -> diagon::Result<(SearchCounts, Vec<diagon::index::text::topk::Ranked>)> {
    let mut best = Best {
        top: diagon::index::text::topk::TopRows::new(10),
        filter: None,
        skips: false,
        known: Default::default(),
        last: None,
    };
    let counts = search_planned(reader, bound, scoring, &mut best, plan)
        .await?
        .expect("a query of terms is searched");
    Ok((counts, best.top.into_sorted()))
}

/// The first postings block of a built text index component (after its
/// summary, dictionary, term infos and length codes).
fn first_postings_block<'b>(built: &'b mut BuiltComponent, summary: &Summary) -> &'b mut Vec<u8> {
    &mut built.blocks[2 + (summary.info_blocks + summary.norm_blocks) as usize]
}

/// A list whose row lies past the part's last (damaged, under a valid
/// checksum) fails a union's top-k search by either plan, naming the
/// component: scoring every row must not start the window again for
/// ever, MaxScore must not read a length code that is not there.
#[tokio::test]
async fn a_row_past_the_part_fails_the_top_k_search() {
    use diagon::index::text::bm25::{Bm25, ColumnStats};
    use diagon::index::text::bound::Bound;
    use diagon::index::text::score::Scoring;
    use diagon::index::text::{DefaultOperator, Query};

    // `a`, the first term, is held by row 5 alone: its list, the first
    // of the first postings block, starts with that row as a one-byte
    // varint, which becomes 127, past the 100 rows.
    let rows: Vec<Option<String>> = (0..100)
        .map(|i| Some(if i == 5 { "a b" } else { "b" }.to_string()))
        .collect();
    let good = built(Analyzer::Standard, &rows, 100, &DataType::Utf8);
    let summary = open(&good, "good").await.summary().clone();
    let mut bad = good.clone();
    let postings = first_postings_block(&mut bad, &summary);
    assert_eq!(postings[0], 5, "the list of `a` starts with its row");
    postings[0] = 127;
    let reader = open(&bad, "bad").await;
    let terms = ["a".to_string(), "b".to_string()];
    let stats = ColumnStats {
        rows: 100,
        total_len: 101,
    };
    let scoring = Scoring::new(Bm25::default(), stats, &terms, &[1, 100]);
    let parsed = Query::parse("a b", DefaultOperator::Or).unwrap();
    let bound = Bound::bind(&parsed, "body", Analyzer::Standard).unwrap();
    for plan in [Plan::ByCost, Plan::MaxScore, Plan::EveryRow] {
        let mut taken = TakeAll::default();
        let found = search_planned(&reader, &bound, &scoring, &mut taken, plan).await;
        let error = found.err().unwrap_or_else(|| panic!("{plan:?}: no error"));
        assert!(error.to_string().contains("text_index(body)"), "{error}");
    }
}

/// The default plan scores every row of a union of short lists, and
/// runs MaxScore once the lists hold more postings in all than that is
/// worth: every match scored in the first, blocks passed by their
/// bounds in the second.
#[tokio::test]
async fn a_union_scores_every_row_of_short_lists_only() {
    use diagon::index::text::bm25::Bm25;
    use diagon::index::text::bound::Bound;
    use diagon::index::text::score::Scoring;
    use diagon::index::text::{DefaultOperator, Query};

    // `f` in every row, more often in some; `r` in a few.
    let corpus = |n: u32| -> Vec<Option<String>> {
        (0..n)
            .map(|i| {
                let f = vec!["f"; 1 + (i as usize * 7) % 4].join(" ");
                Some(if i % 997 == 0 { format!("{f} r") } else { f })
            })
            .collect()
    };
    let parsed = Query::parse("f r", DefaultOperator::Or).unwrap();
    let bound = Bound::bind(&parsed, "body", Analyzer::Standard).unwrap();
    let terms = ["f".to_string(), "r".to_string()];
    for (rows, every_row) in [(10_000u32, true), (40_000, false)] {
        let reader = build(Analyzer::Standard, &corpus(rows), 1000, &DataType::Utf8).await;
        let doc_freqs = [u64::from(rows), u64::from(rows.div_ceil(997))];
        let scoring = Scoring::new(
            Bm25::default(),
            reader.summary().scored_stats(),
            &terms,
            &doc_freqs,
        );
        let (counts, _) = best_ten(&reader, &bound, &scoring, Plan::ByCost)
            .await
            .unwrap();
        match every_row {
            true => assert_eq!(counts.scored, rows as usize, "{rows} rows"),
            false => assert!(
                counts.blocks_skipped > 0 && counts.scored < rows as usize / 2,
                "{rows} rows: {counts:?}"
            ),
        }
    }
}

/// A top-k collector over one part (searched after an earlier part, as
/// part 1): the best `k` rows, with an optional filter on granules of
/// rows (a row fails when `(row / granule) % modulus == 0`) that, like a
/// scan's, it learns for a granule only once a row of it is offered,
/// and then, when `skips`, tells the search to pass that granule's
/// rows. It checks that rows come in rising order and beat the
/// threshold.
struct Best {
    top: diagon::index::text::topk::TopRows,
    filter: Option<(u32, u32)>,
    skips: bool,
    known: std::collections::BTreeSet<u32>,
    last: Option<u32>,
}

impl Best {
    fn fails(&self, row: u32) -> bool {
        self.filter
            .is_some_and(|(granule, modulus)| (row / granule).is_multiple_of(modulus))
    }
}

#[async_trait::async_trait]
impl diagon::index::text::topk::Collector for Best {
    fn threshold(&self) -> f32 {
        self.top.threshold()
    }

    async fn collect(&mut self, row: u32, score: f32) -> diagon::Result<()> {
        assert!(
            score > self.top.threshold(),
            "row {row} offered below the threshold"
        );
        assert!(
            self.last.is_none_or(|l| row > l),
            "row {row} offered after {:?}",
            self.last
        );
        self.last = Some(row);
        if let Some((granule, _)) = self.filter {
            self.known.insert(row / granule);
        }
        if !self.fails(row) {
            self.top.push(diagon::index::text::topk::Ranked {
                score,
                part: 1,
                row,
            });
        }
        Ok(())
    }

    fn next_candidate(&mut self, mut row: u32) -> u32 {
        let Some((granule, _)) = self.filter.filter(|_| self.skips) else {
            return row;
        };
        while row != END && self.known.contains(&(row / granule)) && self.fails(row) {
            row = (row / granule + 1).checked_mul(granule).unwrap_or(END);
        }
        row
    }
}

/// A corpus of `rows` values over a vocabulary whose low-numbered words
/// are far more frequent (as in text), from `seed`.
fn skewed_corpus(seed: u64, rows: usize, words: usize) -> Vec<Option<String>> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..rows)
        .map(|_| {
            let len = (next() % 24) as usize;
            let text: Vec<String> = (0..len)
                .map(|_| {
                    let r = (next() % 1000) as f64 / 1000.0;
                    format!("w{}", ((r * r * r) * words as f64) as usize)
                })
                .collect();
            let mut text = text.join(" ");
            // Rare words, a few rows in thousands: lists of one block
            // whose windows span many of the frequent words' blocks.
            if next() % 300 == 0 {
                text.push_str(&format!(" r{}", next() % 4));
            }
            (next() % 20 != 0).then_some(text)
        })
        .collect()
}

/// Queries of the shapes the top-k search takes: disjunctions (boosted
/// or not), conjunctions with optional terms, exclusions.
fn top_k_query(words: usize) -> impl Strategy<Value = String> {
    let word = prop_oneof![
        4 => (0..words + 2).prop_map(|w| format!("w{w}")),
        1 => (0..4usize).prop_map(|w| format!("r{w}")),
    ];
    let boosted = (
        word.clone(),
        prop_oneof![Just(""), Just("^2"), Just("^0.5")],
    )
        .prop_map(|(w, b)| format!("{w}{b}"));
    prop_oneof![
        proptest::collection::vec(boosted, 1..6).prop_map(|w| w.join(" ")),
        (
            proptest::collection::vec(word.clone(), 1..3),
            proptest::collection::vec(word.clone(), 0..3)
        )
            .prop_map(|(must, should)| {
                let must: Vec<String> = must.iter().map(|w| format!("+{w}")).collect();
                format!("{} {}", must.join(" "), should.join(" "))
            }),
        (proptest::collection::vec(word.clone(), 1..4), word)
            .prop_map(|(should, not)| format!("{} -{not}", should.join(" "))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The rows a top-k search of a part collects, and their scores to
    /// the bit, are the best `k` of scoring every match (ties keep the
    /// earlier row), with and without a filter on granules of rows,
    /// whether or not the collector says which rows to pass, and whether
    /// the top k starts empty or holds rows of an earlier part: across
    /// posting blocks and the disjunction's windows. Counting the
    /// matches gives their number.
    #[test]
    fn top_k_equals_scoring_every_match(
        seed in any::<u64>(),
        rows in 1usize..9000,
        queries in proptest::collection::vec(top_k_query(30), 1..5),
        k in 1usize..40,
        filter in proptest::option::of((prop_oneof![Just(1u32), Just(64), Just(1000), Just(5000)], 2u32..5)),
        skips in any::<bool>(),
        earlier in any::<bool>(),
        scoring in 0usize..4,
        plan in prop_oneof![Just(Plan::ByCost), Just(Plan::MaxScore), Just(Plan::EveryRow)],
    ) {
        let corpus = skewed_corpus(seed, rows, 30);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let reader = runtime.block_on(build(Analyzer::Standard, &corpus, 100, &DataType::Utf8));
        let case = TopK { k, filter, skips, earlier, scoring, plan };
        for text in queries {
            check_top_k(&runtime, &reader, &text, case)?;
        }
    }
}

/// How `check_top_k` searches: the best `k`; a granule filter of rows
/// `(granule, m)`, passing every `m`-th granule of `granule` rows; whether
/// the collector says which rows to pass; whether the top k starts with
/// an earlier part's rows; and the scoring (0: the part's own statistics,
/// under which the blocks' leads bound them exactly; 1 and 2: a table's
/// whose rows are longer or shorter, with other parameters, the leads
/// scaled (2's `b` of 0 ignores lengths: a block's best row under it is
/// often not its lead); 3: `k1` 0, which no lead bounds); and how a
/// disjunction is searched.
#[derive(Debug, Clone, Copy)]
struct TopK {
    k: usize,
    filter: Option<(u32, u32)>,
    skips: bool,
    earlier: bool,
    scoring: usize,
    plan: Plan,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Counting a query's live matches equals analysing every live row,
    /// for unions few for the part (listed) and many (a bitmap), with
    /// excluded words and deleted rows.
    #[test]
    fn counting_matches_equals_brute_force(
        seed in any::<u64>(),
        rows in 600usize..9000,
        queries in proptest::collection::vec(
            prop_oneof![
                3 => top_k_query(30),
                // Rare unions (listed), with a repeated word, exclusions,
                // prefixes and fuzzy words; and a prefix of nothing.
                1 => prop_oneof![
                    Just("r1 r1 -w0"),
                    Just("r0 r2 -r3 -w1"),
                    Just("r0 r1 r2 r3 -w2"),
                    Just("r*"),
                    Just("w2*"),
                    Just("r1~1"),
                    Just("zz*"),
                ]
                .prop_map(String::from),
            ],
            1..5,
        ),
        deleted_every in 2usize..12,
    ) {
        use arrow::buffer::BooleanBuffer;
        use diagon::index::text::bound::Bound;
        use diagon::index::text::search::count_matching;
        use diagon::index::text::{DefaultOperator, Query};

        let corpus = skewed_corpus(seed, rows, 30);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let reader = runtime.block_on(build(Analyzer::Standard, &corpus, 100, &DataType::Utf8));
        let deleted = BooleanBuffer::from_iter((0..rows).map(|r| (r * 7 + 3) % deleted_every == 0));
        for text in queries {
            let query = Query::parse(&text, DefaultOperator::Or).unwrap();
            let bound = Bound::bind(&query, "body", Analyzer::Standard).unwrap();
            let expected = corpus
                .iter()
                .enumerate()
                .filter(|(r, v)| {
                    !deleted.value(*r)
                        && v.as_deref().is_some_and(|v| bound.matches(Analyzer::Standard, v))
                })
                .count() as u64;
            let counted = runtime
                .block_on(count_matching(&reader, &bound, Some(&deleted)))
                .unwrap();
            prop_assert_eq!(counted, expected, "query {}", text);
        }
    }
}

/// Checks a top-k search of `text` over `reader` against scoring every
/// match (see `top_k_equals_scoring_every_match`).
fn check_top_k(
    runtime: &tokio::runtime::Runtime,
    reader: &TextIndexReader,
    text: &str,
    case: TopK,
) -> Result<(), TestCaseError> {
    use diagon::index::text::bm25::{Bm25, ColumnStats};
    use diagon::index::text::bound::Bound;
    use diagon::index::text::score::{Scoring, scored_rows, scored_terms};
    use diagon::index::text::topk::{Ranked, TopRows};
    use diagon::index::text::{DefaultOperator, Query};

    let query = Query::parse(text, DefaultOperator::Or).unwrap();
    let bound = Bound::bind(&query, "body", Analyzer::Standard).unwrap();
    let terms = scored_terms(&bound);
    let doc_freqs: Vec<u64> = terms
        .iter()
        .map(|t| {
            runtime
                .block_on(reader.term(t))
                .unwrap()
                .map_or(0, |i| u64::from(i.doc_freq))
        })
        .collect();
    let TopK {
        k,
        filter,
        skips,
        earlier,
        scoring,
        plan,
    } = case;
    let part = reader.summary().scored_stats();
    let (bm25, stats) = match scoring {
        0 => (Bm25::default(), part),
        1 => (
            Bm25::new(1.5, 0.9).unwrap(),
            ColumnStats {
                rows: part.rows,
                total_len: part.total_len * 3 / 2 + 1,
            },
        ),
        2 => (
            Bm25::new(0.8, 0.0).unwrap(),
            ColumnStats {
                rows: part.rows + 5,
                total_len: part.total_len / 2,
            },
        ),
        _ => (Bm25::new(0.0, 0.75).unwrap(), part),
    };
    let scoring = Scoring::new(bm25, stats, &terms, &doc_freqs);
    let hits = runtime
        .block_on(scored_rows(reader, &bound, &scoring))
        .unwrap();
    // Counting (a bitmap for frequent unions) agrees.
    let counted = runtime
        .block_on(diagon::index::text::search::count_matching(
            reader, &bound, None,
        ))
        .unwrap();
    prop_assert_eq!(counted as usize, hits.rows.len(), "count of {}", text);
    let mut expected: Vec<Ranked> = hits
        .rows
        .iter()
        .zip(&hits.scores)
        .map(|(&row, &score)| Ranked {
            score,
            part: 1,
            row,
        })
        .filter(|r| filter.is_none_or(|(g, m)| !(r.row / g).is_multiple_of(m)))
        .collect();
    // An earlier part's k rows, scoring as the median match: the
    // search starts with a threshold, and ties keep those rows.
    let mut top = TopRows::new(k);
    if earlier && !hits.scores.is_empty() {
        let mut scores = hits.scores.clone();
        scores.sort_by(f32::total_cmp);
        let median = scores[scores.len() / 2];
        for row in 0..k as u32 {
            let ranked = Ranked {
                score: median,
                part: 0,
                row,
            };
            top.push(ranked);
            expected.push(ranked);
        }
    }
    let mut best = Best {
        top,
        filter,
        skips,
        known: Default::default(),
        last: None,
    };
    let searched = runtime
        .block_on(search_planned(reader, &bound, &scoring, &mut best, plan))
        .unwrap();
    prop_assert!(searched.is_some(), "{} is not searched", text);
    let found: Vec<(usize, u32, f32)> = best
        .top
        .into_sorted()
        .iter()
        .map(|r| (r.part, r.row, r.score))
        .collect();
    expected.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then((a.part, a.row).cmp(&(b.part, b.row)))
    });
    expected.truncate(k);
    let expected: Vec<(usize, u32, f32)> =
        expected.iter().map(|r| (r.part, r.row, r.score)).collect();
    prop_assert_eq!(found, expected, "query {}", text);
    Ok(())
}

/// A frequent term under a rare one: once the frequent term is weak in
/// a window of its own blocks, the rare term's one block is the next
/// window, over many of the frequent term's blocks, which bounds it by
/// its list's best (its lead); the best rows hold the frequent term only,
/// late in the part, past blocks whose bounds are lower.
#[test]
fn top_k_bounds_a_frequent_term_by_its_list_under_a_rare_one() {
    let corpus: Vec<Option<String>> = (0..20_000u32)
        .map(|i| {
            // The frequent term's best rows come late in the part.
            let f = match i < 15_000 {
                true => 1 + i as usize % 2,
                false => 3 + i as usize % 4,
            };
            let mut words = vec!["f"; f];
            words.extend(std::iter::repeat_n("x", (i as usize * 13) % 11));
            if i % 5000 == 17 {
                words.push("r");
            }
            Some(words.join(" "))
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reader = runtime.block_on(build(Analyzer::Standard, &corpus, 100, &DataType::Utf8));
    for text in ["r f", "f r", "r^0.2 f"] {
        for (k, scoring) in [(10, 0), (10, 1), (40, 0), (3, 2)] {
            for plan in [Plan::MaxScore, Plan::EveryRow] {
                let case = TopK {
                    k,
                    filter: None,
                    skips: false,
                    earlier: false,
                    scoring,
                    plan,
                };
                check_top_k(&runtime, &reader, text, case).unwrap();
            }
        }
    }
}

/// One essential term whose rows lie twice in each granule of 64, one
/// at its start: once a granule's filter is known to fail, the search
/// passes to the next granule's start, which holds the term and must be
/// offered (the top k starts full, so the weak term is not essential).
#[test]
fn top_k_passes_to_a_granule_start_holding_the_one_essential_term() {
    let corpus: Vec<Option<String>> = (0..20_000u32)
        .map(|i| {
            let mut words = vec!["x"; 1 + (i as usize * 7) % 5];
            if i % 64 == 0 || i % 64 == 5 {
                words.push("e");
            }
            if i % 97 == 0 {
                words.push("a");
            }
            Some(words.join(" "))
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reader = runtime.block_on(build(Analyzer::Standard, &corpus, 100, &DataType::Utf8));
    for (k, filter) in [(200, (64, 2)), (50, (64, 3)), (400, (128, 2))] {
        for plan in [Plan::MaxScore, Plan::EveryRow] {
            let case = TopK {
                k,
                filter: Some(filter),
                skips: true,
                earlier: true,
                scoring: 0,
                plan,
            };
            check_top_k(&runtime, &reader, "e^3 a", case).unwrap();
        }
    }
}

/// Rare terms whose single blocks span a part of 20,000 rows: the
/// disjunction gathers their rows in several sub-windows of one window,
/// and a filter on granules makes it pass rows (`d` holds the first row
/// of every granule of 64, where a pass lands); all matches are due or
/// half of them, so no row may be missed at a sub-window's edge.
#[test]
fn top_k_crosses_sub_windows_of_rare_terms() {
    let corpus: Vec<Option<String>> = (0..20_000u32)
        .map(|i| {
            let mut text = String::from("x");
            for (word, every) in [("a", 97), ("b", 89), ("c", 4099), ("d", 64)] {
                if i.is_multiple_of(every) {
                    text.push(' ');
                    text.push_str(word);
                }
            }
            Some(text)
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reader = runtime.block_on(build(Analyzer::Standard, &corpus, 100, &DataType::Utf8));
    for text in ["a b", "a b c", "c a", "a b^2 -c", "d^3 a", "d^3 a b"] {
        for (filter, skips, earlier, scoring) in [
            (None, false, false, 0),
            (Some((64, 3)), true, false, 1),
            (Some((1000, 2)), true, true, 2),
            (Some((5000, 2)), false, true, 0),
        ] {
            for plan in [Plan::MaxScore, Plan::EveryRow] {
                let case = TopK {
                    k: 500,
                    filter,
                    skips,
                    earlier,
                    scoring,
                    plan,
                };
                check_top_k(&runtime, &reader, text, case).unwrap();
            }
        }
    }
}

/// Every-row scoring over a part of three norms blocks: its windows are
/// the blocks, so terms whose rows straddle their edges (`a` holds the
/// last row of each and the first of the next) must be scored in both,
/// and rows passed by a filter or a collector that skips land in either.
#[test]
fn top_k_scores_every_row_across_norms_blocks() {
    let blocks = NORMS_PER_BLOCK as u32;
    let corpus: Vec<Option<String>> = (0..2 * blocks + 300)
        .map(|i| {
            let mut text = String::from("x");
            let edge = (i + 1) % blocks <= 1;
            for (word, holds) in [
                ("a", edge || i % 1009 == 0),
                ("b", i % 89 == 0),
                ("c", i % 7919 == 0),
            ] {
                if holds {
                    text.push(' ');
                    text.push_str(word);
                }
            }
            (i % 50 != 7).then_some(text)
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reader = runtime.block_on(build(Analyzer::Standard, &corpus, 1000, &DataType::Utf8));
    for text in ["a b", "a^5 c", "c b a", "a b -c"] {
        for (k, filter, skips, earlier) in [
            (20, None, false, false),
            (2000, None, false, true),
            (300, Some((1000, 3)), true, false),
            (50, Some((8192, 2)), false, true),
        ] {
            let case = TopK {
                k,
                filter,
                skips,
                earlier,
                scoring: 0,
                plan: Plan::EveryRow,
            };
            check_top_k(&runtime, &reader, text, case).unwrap();
        }
    }
}
