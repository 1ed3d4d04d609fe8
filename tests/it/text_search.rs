//! `match()` and `bm25()` through SQL against a brute-force reference:
//! every live row analysed one by one, Lucene's BM25 computed from scratch
//! over the live rows, for random corpora split into parts, with deletes,
//! and random queries of every syntax.

use std::collections::HashMap;

use arrow::array::AsArray;
use arrow::datatypes::{Float32Type, Int64Type};
use datafusion::prelude::SessionContext;
use diagon::index::text::bm25::{decode_length, encode_length};
use diagon::index::text::bound::{Bound, within_edits};
use diagon::index::text::{Analyzer, DefaultOperator, Occur, Query};
use proptest::prelude::*;

use crate::text_index::{corpus, query_text};

const K1: f64 = 1.2;
const B: f64 = 0.75;

/// One value analysed: its terms' positions and its length as BM25 sees it.
struct Doc {
    positions: HashMap<String, Vec<u32>>,
    /// Distinct token positions, through the one-byte length code.
    len: f64,
}

impl Doc {
    fn of(analyzer: Analyzer, value: &str) -> Doc {
        let mut positions: HashMap<String, Vec<u32>> = HashMap::new();
        let mut distinct = std::collections::BTreeSet::new();
        analyzer.analyze(value, |t| {
            positions
                .entry(t.term.to_string())
                .or_default()
                .push(t.position);
            distinct.insert(t.position);
        });
        let len = decode_length(encode_length(distinct.len() as u32)) as f64;
        Doc { positions, len }
    }
}

/// Lucene's BM25 over a set of live documents.
struct Reference {
    docs: Vec<(i64, Doc)>,
    /// Documents holding each term.
    doc_freqs: HashMap<String, f64>,
    /// Documents with a token, and their lengths summed.
    rows: f64,
    avg_len: f64,
}

impl Reference {
    fn new(analyzer: Analyzer, live: &[(i64, String)]) -> Reference {
        let docs: Vec<(i64, Doc)> = live
            .iter()
            .map(|(id, v)| (*id, Doc::of(analyzer, v)))
            .collect();
        let counted: Vec<&Doc> = docs
            .iter()
            .map(|(_, d)| d)
            .filter(|d| !d.positions.is_empty())
            .collect();
        let rows = counted.len() as f64;
        let total: f64 = counted.iter().map(|d| d.len).sum();
        let avg_len = if rows > 0.0 { total / rows } else { 1.0 };
        let mut doc_freqs: HashMap<String, f64> = HashMap::new();
        for (_, doc) in &docs {
            for term in doc.positions.keys() {
                *doc_freqs.entry(term.clone()).or_default() += 1.0;
            }
        }
        Reference {
            docs,
            doc_freqs,
            rows,
            avg_len,
        }
    }

    fn idf(&self, term: &str) -> f64 {
        let df = self.doc_freqs.get(term).copied().unwrap_or(0.0);
        (1.0 + (self.rows - df + 0.5) / (df + 0.5)).ln()
    }

    fn tf(&self, freq: f64, doc: &Doc) -> f64 {
        freq / (freq + K1 * (1.0 - B + B * doc.len / self.avg_len))
    }

    /// The score of `doc` for `bound`, `None` when it does not match.
    fn score(&self, bound: &Bound, doc: &Doc) -> Option<f64> {
        match bound {
            Bound::Term { term, boost } => {
                let freq = doc.positions.get(term)?.len() as f64;
                Some(*boost as f64 * self.idf(term) * self.tf(freq, doc))
            }
            Bound::Phrase { terms, slop, boost } => {
                let freq = phrase_freq(terms, *slop, doc);
                if freq == 0.0 {
                    return None;
                }
                let idf: f64 = terms.iter().map(|(t, _)| self.idf(t)).sum();
                Some(*boost as f64 * idf * self.tf(freq, doc))
            }
            Bound::Prefix { prefix, boost } => doc
                .positions
                .keys()
                .any(|t| t.starts_with(prefix.as_str()))
                .then_some(*boost as f64),
            Bound::Fuzzy { term, edits, boost } => doc
                .positions
                .keys()
                .any(|t| within_edits(term, t, *edits as usize))
                .then_some(*boost as f64),
            Bound::Boolean(clauses) => {
                let mut sum = 0.0;
                let (mut any_must, mut any_should, mut should_matched) = (false, false, false);
                for (occur, clause) in clauses {
                    let score = self.score(clause, doc);
                    match occur {
                        Occur::Must => {
                            sum += score?;
                            any_must = true;
                        }
                        Occur::MustNot if score.is_some() => return None,
                        Occur::MustNot => {}
                        Occur::Should => {
                            any_should = true;
                            if let Some(s) = score {
                                sum += s;
                                should_matched = true;
                            }
                        }
                    }
                }
                (any_must || !any_should || should_matched).then_some(sum)
            }
            Bound::Nothing => None,
        }
    }
}

/// A phrase's frequency by enumeration: every start (a term's position
/// minus its offset) at which some assignment of positions (a repeated
/// term's in phrase order) puts
/// every term within `slop` of its place, with the least term exactly
/// there, adds `1 / (1 + distance)` for the tightest such assignment.
fn phrase_freq(terms: &[(String, u32)], slop: u32, doc: &Doc) -> f64 {
    let Some(lists) = terms
        .iter()
        .map(|(t, _)| doc.positions.get(t))
        .collect::<Option<Vec<_>>>()
    else {
        return 0.0;
    };
    let mut starts: Vec<i64> = terms
        .iter()
        .zip(&lists)
        .flat_map(|((_, o), l)| l.iter().map(move |&p| p as i64 - *o as i64))
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let mut freq = 0.0;
    for start in starts {
        let mut best: Option<i64> = None;
        let mut chosen = Vec::new();
        tightest(terms, &lists, slop, start, 0, &mut chosen, &mut best);
        if let Some(distance) = best {
            freq += 1.0 / (1.0 + distance as f64);
        }
    }
    freq
}

/// Searches every assignment of term `i..` (a repeated term's positions
/// increasing), keeping
/// in `best` the least spread of one whose least adjusted position is
/// `start`.
fn tightest(
    terms: &[(String, u32)],
    lists: &[&Vec<u32>],
    slop: u32,
    start: i64,
    i: usize,
    chosen: &mut Vec<(String, u32)>,
    best: &mut Option<i64>,
) {
    if i == terms.len() {
        let adjusted: Vec<i64> = chosen
            .iter()
            .zip(terms)
            .map(|((_, p), (_, o))| *p as i64 - *o as i64)
            .collect();
        let (lo, hi) = (
            *adjusted.iter().min().unwrap(),
            *adjusted.iter().max().unwrap(),
        );
        if lo == start && best.is_none_or(|b| hi - lo < b) {
            *best = Some(hi - lo);
        }
        return;
    }
    let offset = terms[i].1 as i64;
    for &p in lists[i] {
        let adjusted = p as i64 - offset;
        // A repeated term's occurrences are taken in phrase order.
        let taken = chosen.iter().any(|(t, q)| *t == terms[i].0 && *q >= p);
        if adjusted < start || adjusted > start + slop as i64 || taken {
            continue;
        }
        chosen.push((terms[i].0.clone(), p));
        tightest(terms, lists, slop, start, i + 1, chosen, best);
        chosen.pop();
    }
}

async fn sql(ctx: &SessionContext, query: &str) -> Vec<arrow::array::RecordBatch> {
    ctx.sql(query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// (id, score) of every row of the result, in its order.
fn scored(batches: &[arrow::array::RecordBatch]) -> Vec<(i64, f32)> {
    let mut out = Vec::new();
    for batch in batches {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let scores = batch.column(1).as_primitive::<Float32Type>();
        for i in 0..batch.num_rows() {
            out.push((ids.value(i), scores.value(i)));
        }
    }
    out
}

fn ids(batches: &[arrow::array::RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

fn close(found: f32, expected: f64) -> bool {
    let diff = (found as f64 - expected).abs();
    diff <= 1e-5 * expected.abs().max(1e-6)
}

/// Creates table `name` with `rows` (id = position) inserted in `chunks`
/// commits of consecutive rows.
async fn table(
    ctx: &SessionContext,
    dir: &std::path::Path,
    name: &str,
    analyzer: &str,
    rows: &[(i64, Option<String>)],
    chunks: usize,
) {
    let location = dir.join(name);
    sql(
        ctx,
        &format!(
            "CREATE EXTERNAL TABLE {name} (id BIGINT, body VARCHAR) STORED AS DIAGON \
             LOCATION '{}' OPTIONS ('order_by' 'id', 'granularity' '16', \
             'text_index' 'body', 'analyzer.body' '{analyzer}', 'merge.background' 'false')",
            location.display()
        ),
    )
    .await;
    let size = rows.len().div_ceil(chunks.max(1)).max(1);
    let chunks: Vec<Vec<(i64, Option<String>)>> = rows.chunks(size).map(<[_]>::to_vec).collect();
    insert(ctx, name, &chunks).await;
}

/// Inserts each of `chunks` in a commit of its own.
async fn insert(ctx: &SessionContext, name: &str, chunks: &[Vec<(i64, Option<String>)>]) {
    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
        let values: Vec<String> = chunk
            .iter()
            .map(|(id, v)| match v {
                Some(v) => format!("({id}, '{v}')"),
                None => format!("({id}, NULL)"),
            })
            .collect();
        sql(
            ctx,
            &format!("INSERT INTO {name} VALUES {}", values.join(", ")),
        )
        .await;
    }
}

async fn check(
    values: Vec<Option<String>>,
    queries: Vec<String>,
    analyzer_name: &str,
    chunks: usize,
    delete_every: i64,
    and: bool,
    merge: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let ctx = crate::common::context(2);
    let rows: Vec<(i64, Option<String>)> = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v))
        .collect();
    match merge {
        // Rows dealt round-robin: the parts' rows interleave by id, and a
        // merge (after the delete) interleaves their postings.
        true => {
            table(&ctx, dir.path(), "t", analyzer_name, &[], 1).await;
            let dealt: Vec<Vec<(i64, Option<String>)>> = (0..chunks)
                .map(|c| rows.iter().skip(c).step_by(chunks).cloned().collect())
                .collect();
            insert(&ctx, "t", &dealt).await;
        }
        false => table(&ctx, dir.path(), "t", analyzer_name, &rows, chunks).await,
    }
    if and {
        // Reopened with the AND operator: options a reopen states apply.
        sql(&ctx, "DROP TABLE t").await;
        sql(
            &ctx,
            &format!(
                "CREATE EXTERNAL TABLE t STORED AS DIAGON LOCATION '{}' \
                 OPTIONS ('default_operator' 'and')",
                dir.path().join("t").display()
            ),
        )
        .await;
    }
    sql(
        &ctx,
        &format!("DELETE FROM t WHERE id % {delete_every} = 1"),
    )
    .await;
    if merge {
        // The text index of the merged part is remapped from the parts'.
        sql(&ctx, "SELECT * FROM diagon_optimize('t', true)").await;
    }
    let live: Vec<(i64, String)> = rows
        .iter()
        .filter(|(id, _)| id % delete_every != 1)
        .filter_map(|(id, v)| v.clone().map(|v| (*id, v)))
        .collect();
    let analyzer = Analyzer::parse("analyzer.body", analyzer_name).unwrap();
    let reference = Reference::new(analyzer, &live);
    let operator = if and {
        DefaultOperator::And
    } else {
        DefaultOperator::Or
    };
    let opened = diagon::Table::open("t", crate::common::local_storage(&dir.path().join("t")))
        .await
        .unwrap()
        .unwrap();
    let snapshot = opened.snapshot().await.unwrap();
    // A boolean of no clauses (which binding never builds) matches every
    // value, as `Bound::matches` says.
    let everything = Bound::Boolean(Vec::new());
    let all = opened
        .count_bound(&snapshot, "body", &everything)
        .await
        .unwrap();
    assert_eq!(all as usize, live.len());
    for text in queries {
        let query = Query::parse(&text, operator).unwrap();
        let bound = Bound::bind(&query, "body", analyzer).unwrap();
        let expected: Vec<(i64, f64)> = reference
            .docs
            .iter()
            .filter_map(|(id, doc)| reference.score(&bound, doc).map(|s| (*id, s)))
            .collect();
        let matched = sql(
            &ctx,
            &format!(
                "SELECT id, bm25(body, '{text}') FROM t WHERE match(body, '{text}') ORDER BY id"
            ),
        )
        .await;
        let found = scored(&matched);
        let found_ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
        let expected_ids: Vec<i64> = expected.iter().map(|(id, _)| *id).collect();
        assert_eq!(found_ids, expected_ids, "query {text} bound as {bound:?}");
        let counted = opened
            .count_matches(&snapshot, "body", &text)
            .await
            .unwrap();
        assert_eq!(counted as usize, expected_ids.len(), "count of {text}");
        // The library's top k: as many rows as match (NULLs never do),
        // with the best scores.
        let k = 1 + (expected.len() % 5);
        let hits = opened.search(&snapshot, "body", &text, k).await.unwrap();
        let mut best: Vec<f64> = expected.iter().map(|(_, s)| *s).collect();
        best.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(hits.len(), k.min(expected.len()), "search {text} top {k}");
        for (hit, due) in hits.iter().zip(&best) {
            assert!(
                close(hit.score, *due),
                "search {text}: {} where {due} is due",
                hit.score
            );
        }
        for ((id, score), (_, reference)) in found.iter().zip(&expected) {
            assert!(
                close(*score, *reference),
                "query {text}, row {id}: scored {score}, Lucene's formula gives {reference}"
            );
        }
        // The best k with another filter, inside the scan: exactly
        // min(k, qualifying) rows, each with its score, best first.
        let k = 1 + (expected.len() % 7);
        let top = scored(
            &sql(
                &ctx,
                &format!(
                    "SELECT id, bm25(body, '{text}') AS s FROM t \
                     WHERE match(body, '{text}') AND id % 3 <> 2 ORDER BY s DESC LIMIT {k}"
                ),
            )
            .await,
        );
        let mut qualifying: Vec<(i64, f64)> = expected
            .iter()
            .filter(|(id, _)| id % 3 != 2)
            .copied()
            .collect();
        qualifying.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(top.len(), k.min(qualifying.len()), "top {k} of {text}");
        for ((id, score), (_, best)) in top.iter().zip(&qualifying) {
            let reference = expected.iter().find(|(e, _)| e == id).map(|(_, s)| *s);
            assert!(id % 3 != 2, "{id} fails the filter");
            assert!(
                reference.is_some_and(|r| close(*score, r)),
                "{text}: {id} {score}"
            );
            assert!(
                close(*score, *best),
                "{text}: top {k} has {score} where {best} is due"
            );
        }
        // A range of ids, which prunes granules (the key is the id): the
        // search passes over the pruned granules' rows.
        let (lo, hi) = (rows.len() as i64 / 3, 2 * rows.len() as i64 / 3);
        let ranged = scored(
            &sql(
                &ctx,
                &format!(
                    "SELECT id, bm25(body, '{text}') AS s FROM t \
                     WHERE match(body, '{text}') AND id >= {lo} AND id < {hi} \
                     ORDER BY s DESC LIMIT {k}"
                ),
            )
            .await,
        );
        let mut in_range: Vec<(i64, f64)> = expected
            .iter()
            .filter(|(id, _)| (lo..hi).contains(id))
            .copied()
            .collect();
        in_range.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(
            ranged.len(),
            k.min(in_range.len()),
            "top {k} of {text} in range"
        );
        for ((id, score), (_, best)) in ranged.iter().zip(&in_range) {
            assert!((lo..hi).contains(id), "{id} is out of range");
            assert!(
                close(*score, *best),
                "{text} in range: top {k} has {score} where {best} is due"
            );
        }
        // diagon_search with the filter outside: the same best rows.
        let searched = scored(
            &sql(
                &ctx,
                &format!(
                    "SELECT id, _score FROM diagon_search('t', 'body', '{text}', {k}) \
                     WHERE id % 3 <> 2"
                ),
            )
            .await,
        );
        assert_eq!(searched.len(), top.len(), "diagon_search top {k} of {text}");
        for ((id, score), (_, best)) in searched.iter().zip(&qualifying) {
            assert!(id % 3 != 2, "diagon_search: {id} fails the filter");
            assert!(
                close(*score, *best),
                "diagon_search {text}: top {k} has {score} where {best} is due"
            );
        }
        // The same rows with the index bypassed, every value analysed.
        sql(&ctx, "SET diagon.enable_text_index = false").await;
        let bypassed = ids(&sql(
            &ctx,
            &format!("SELECT id FROM t WHERE match(body, '{text}') ORDER BY id"),
        )
        .await);
        sql(&ctx, "SET diagon.enable_text_index = true").await;
        assert_eq!(bypassed, expected_ids, "query {text} without the index");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Matching rows and scores through SQL equal brute force and Lucene's
    /// formula over the live rows, for any split into parts and deletes,
    /// and after the parts are merged.
    #[test]
    fn match_and_bm25_equal_the_reference(
        values in corpus(),
        queries in proptest::collection::vec(query_text(), 1..5),
        analyzer in prop_oneof![Just("standard"), Just("english"), Just("ngram(2,3)")],
        chunks in 1usize..4,
        delete_every in 2i64..6,
        and in any::<bool>(),
        merge in any::<bool>(),
    ) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(check(values, queries, analyzer, chunks, delete_every, and, merge));
    }
}

/// `n` rows (id, text) of 1 to 11 words drawn from six, spread so that
/// every word is in many rows at several frequencies.
fn six_word_rows(n: i64) -> Vec<(i64, Option<String>)> {
    let words = [
        "wireless",
        "headphones",
        "cable",
        "speaker",
        "noise",
        "music",
    ];
    (0..n)
        .map(|i| {
            let len = 1 + (i * 7 % 11) as usize;
            let text: Vec<&str> = (0..len)
                .map(|k| words[(i as usize * 31 + k * 17 + (k * k) % 5) % 6])
                .collect();
            (i, Some(text.join(" ")))
        })
        .collect()
}

/// After a DELETE every row scores what it scores in a table holding only
/// the live rows, whatever the parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_after_delete_equal_a_table_of_the_live_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = crate::common::context(2);
    let rows = six_word_rows(400);
    table(&ctx, dir.path(), "full", "english", &rows, 3).await;
    sql(&ctx, "DELETE FROM full WHERE id % 3 = 0 OR id > 350").await;
    let live: Vec<(i64, Option<String>)> = rows
        .iter()
        .filter(|(id, _)| id % 3 != 0 && *id <= 350)
        .cloned()
        .collect();
    table(&ctx, dir.path(), "live", "english", &live, 1).await;
    for query in [
        "headphones",
        "wireless headphones",
        "\"headphones noise\"~2",
        "+cable -speaker",
    ] {
        let score =
            |table: &str| format!("SELECT id, bm25(body, '{query}') FROM {table} ORDER BY id");
        let full = scored(&sql(&ctx, &score("full")).await);
        let only_live = scored(&sql(&ctx, &score("live")).await);
        assert_eq!(full, only_live, "{query}");
        assert!(
            full.iter().any(|(_, s)| *s > 0.0),
            "{query} matches something"
        );
    }
}

/// A column declared for text search after rows were written: `match`
/// answers the same from parts without the index (analysing values) and
/// with it; `bm25` asks for the index to be built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_without_the_index_answer_match_and_refuse_bm25() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = crate::common::context(2);
    let location = dir.path().join("t");
    sql(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE t (id BIGINT, body VARCHAR) STORED AS DIAGON LOCATION '{}' \
             OPTIONS ('order_by' 'id', 'merge.background' 'false')",
            location.display()
        ),
    )
    .await;
    sql(
        &ctx,
        "INSERT INTO t VALUES (1, 'wireless headphones'), (2, 'a cable')",
    )
    .await;
    sql(&ctx, "DROP TABLE t").await;
    sql(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE t STORED AS DIAGON LOCATION '{}' OPTIONS ('text_index' 'body')",
            location.display()
        ),
    )
    .await;
    sql(&ctx, "INSERT INTO t VALUES (3, 'headphones and a cable')").await;
    let found = ids(&sql(
        &ctx,
        "SELECT id FROM t WHERE match(body, 'headphones') ORDER BY id",
    )
    .await);
    assert_eq!(found, vec![1, 3]);
    let plan = crate::common::query(
        &ctx,
        "EXPLAIN SELECT id FROM t WHERE match(body, 'headphones')",
    )
    .await;
    assert!(plan.contains("text_body_parts_unindexed=1"), "{plan}");
    assert!(plan.contains("text_body_parts_indexed=1"), "{plan}");
    let error = ctx
        .sql("SELECT bm25(body, 'headphones') FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("run diagon_optimize('t', true)"), "{error}");
    sql(&ctx, "SELECT * FROM diagon_optimize('t', true)").await;
    let scores = scored(
        &sql(
            &ctx,
            "SELECT id, bm25(body, 'headphones') FROM t WHERE match(body, 'headphones') ORDER BY id",
        )
        .await,
    );
    assert_eq!(
        scores.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert!(scores.iter().all(|(_, s)| *s > 0.0), "{scores:?}");
}

/// Rows over several posting blocks with skewed word frequencies: the
/// best k by block-max search equal Lucene's formula's best k, with and
/// without another filter, and a frequent term's top 10 scores far fewer
/// rows than match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_k_search_skips_blocks_and_equals_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = crate::common::context(2);
    let vocabulary: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let rows: Vec<(i64, Option<String>)> = (0..6000)
        .map(|id| {
            let len = 1 + (next() % 30) as usize;
            let words: Vec<&str> = (0..len)
                .map(|_| {
                    // Skewed: low word numbers are far more frequent.
                    let r = (next() % 1000) as f64 / 1000.0;
                    vocabulary[((r * r * r) * 40.0) as usize].as_str()
                })
                .collect();
            (id, Some(words.join(" ")))
        })
        .collect();
    table(&ctx, dir.path(), "t", "standard", &rows, 2).await;
    let live: Vec<(i64, String)> = rows
        .iter()
        .filter_map(|(id, v)| v.clone().map(|v| (*id, v)))
        .collect();
    let reference = Reference::new(Analyzer::Standard, &live);
    let queries = [
        "w0",
        "w0 w1",
        "w3 w17 w30",
        "+w0 +w2",
        "+w1 w5 w20",
        "+w30 w0",
        "w2 -w0",
        "+w9 +w0 -w1",
        "\"w0 w1\"~3",
    ];
    let table = diagon::Table::open("t", crate::common::local_storage(&dir.path().join("t")))
        .await
        .unwrap()
        .unwrap();
    let snapshot = table.snapshot().await.unwrap();
    for text in queries {
        let query = Query::parse(text, DefaultOperator::Or).unwrap();
        let bound = Bound::bind(&query, "body", Analyzer::Standard).unwrap();
        for filtered in [false, true] {
            let mut expected: Vec<(i64, f64)> = reference
                .docs
                .iter()
                .filter(|(id, _)| !filtered || id % 4 != 0)
                .filter_map(|(id, doc)| reference.score(&bound, doc).map(|s| (*id, s)))
                .collect();
            expected.sort_by(|a, b| b.1.total_cmp(&a.1));
            for k in [1, 10, 50] {
                let filter = if filtered { "AND id % 4 <> 0" } else { "" };
                let found = scored(
                    &sql(
                        &ctx,
                        &format!(
                            "SELECT id, bm25(body, '{text}') AS s FROM t \
                             WHERE match(body, '{text}') {filter} ORDER BY s DESC LIMIT {k}"
                        ),
                    )
                    .await,
                );
                assert_eq!(found.len(), k.min(expected.len()), "{text} top {k}");
                if !filtered {
                    // The library call finds the same scores.
                    let hits = table.search(&snapshot, "body", text, k).await.unwrap();
                    let library: Vec<f32> = hits.iter().map(|h| h.score).collect();
                    let through_sql: Vec<f32> = found.iter().map(|(_, s)| *s).collect();
                    assert_eq!(library, through_sql, "{text} top {k}");
                    let count = table.count_matches(&snapshot, "body", text).await.unwrap();
                    assert_eq!(count as usize, expected.len(), "{text} count");
                }
                for ((id, score), (_, due)) in found.iter().zip(&expected) {
                    assert!(
                        close(*score, *due),
                        "{text} top {k}: {id} has {score}, {due} due"
                    );
                    assert!(!filtered || id % 4 != 0, "{id} fails the filter");
                }
            }
        }
    }
    let matches = reference
        .docs
        .iter()
        .filter(|(_, d)| d.positions.contains_key("w0"))
        .count();
    let analyzed = crate::common::query(
        &ctx,
        "EXPLAIN ANALYZE SELECT id, bm25(body, 'w0') AS s FROM t ORDER BY s DESC LIMIT 10",
    )
    .await;
    let scored_rows: usize = analyzed
        .split("topk_rows_scored=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no topk_rows_scored in {analyzed}"));
    assert!(
        scored_rows * 4 < matches,
        "top 10 of {matches} matches scored {scored_rows} rows"
    );
}

/// The answers of `queries` over the table at `location`, opened afresh
/// (a new storage handle, so nothing comes from the cache), as text; or
/// the first error.
async fn fresh_answers(
    location: &std::path::Path,
    queries: &[&str],
) -> Result<Vec<String>, String> {
    let ctx = crate::common::context(2);
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE t (id BIGINT, body VARCHAR) STORED AS DIAGON LOCATION '{}'",
        location.display()
    ))
    .await
    .map_err(|e| e.to_string())?;
    let mut answers = Vec::new();
    for query in queries {
        let batches = match ctx.sql(query).await {
            Ok(frame) => frame.collect().await,
            Err(e) => Err(e),
        }
        .map_err(|e| e.to_string())?;
        answers.push(
            arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string(),
        );
    }
    Ok(answers)
}

/// A damaged or truncated text index: every search answers as the intact
/// index does (the damage lies where it does not read) or fails with an
/// error naming the part and the component file; never other rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_text_indexes_are_reported_never_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = crate::common::context(2);
    let rows = six_word_rows(600);
    table(&ctx, dir.path(), "t", "english", &rows, 1).await;
    let location = dir.path().join("t");
    let queries = [
        "SELECT id FROM t WHERE match(body, 'wireless') ORDER BY id",
        "SELECT id, bm25(body, 'wireless cable') AS s FROM t \
         WHERE match(body, 'wireless cable') ORDER BY s DESC, id LIMIT 5",
        "SELECT count(*) FROM t WHERE match(body, '\"noise music\" +speaker')",
        "SELECT id FROM t WHERE match(body, 'head* OR musik~1') ORDER BY id",
    ];
    let intact = fresh_answers(&location, &queries).await.unwrap();
    let file = walk_files(&location)
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "cmp"))
        .expect("a text index component");
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let original = std::fs::read(&file).unwrap();
    let mut reported = 0;
    let mut check = |result: Result<Vec<String>, String>, what: String| match result {
        Ok(answers) => assert_eq!(answers, intact, "{what}: other rows"),
        Err(e) => {
            assert!(
                e.contains(&name) && e.contains("/parts/p_"),
                "{what}: the error names neither {name} nor its part: {e}"
            );
            reported += 1;
        }
    };
    let step = (original.len() / 80).max(1);
    for at in (0..original.len())
        .step_by(step)
        .chain(original.len() - 8..original.len())
    {
        let mut bytes = original.clone();
        bytes[at] ^= 0x5a;
        std::fs::write(&file, &bytes).unwrap();
        check(
            fresh_answers(&location, &queries).await,
            format!("byte {at}"),
        );
    }
    for keep in [0, 7, original.len() / 3, original.len() - 1] {
        std::fs::write(&file, &original[..keep]).unwrap();
        check(
            fresh_answers(&location, &queries).await,
            format!("truncated to {keep}"),
        );
    }
    // The searches read most of the index: most damage is seen.
    assert!(
        reported > 40,
        "only {reported} damaged copies were reported"
    );
    std::fs::write(&file, &original).unwrap();
    assert_eq!(fresh_answers(&location, &queries).await.unwrap(), intact);
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => out.extend(walk_files(&path)),
            false => out.push(path),
        }
    }
    out
}

/// An insert cuts a part once its text index builders hold
/// `insert_index_bytes`: several parts with disjoint key ranges, cut at
/// granules, every row searchable as in one part.
#[tokio::test]
async fn an_insert_cuts_parts_at_the_index_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = crate::common::context(2);
    for (name, budget) in [("bounded", 64 << 10), ("unbounded", 1 << 30)] {
        sql(
            &ctx,
            &format!(
                "CREATE EXTERNAL TABLE {name} (id BIGINT, body VARCHAR) STORED AS DIAGON \
                 LOCATION '{}' OPTIONS ('order_by' 'id', 'granularity' '256', \
                 'text_index' 'body', 'insert_index_bytes' '{budget}', \
                 'merge.background' 'false')",
                dir.path().join(name).display()
            ),
        )
        .await;
        sql(
            &ctx,
            &format!(
                "INSERT INTO {name} SELECT value, concat('w', value % 97, ' x', value % 13, \
                 ' t', value) FROM range(20000)"
            ),
        )
        .await;
    }
    let parts = |name: &str| format!("SELECT rows FROM diagon_parts('{name}')");
    let bounded = sql(&ctx, &parts("bounded")).await;
    let rows: Vec<i64> = bounded
        .iter()
        .flat_map(|b| {
            let rows = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64);
            rows.unwrap().as_primitive::<Int64Type>().values().to_vec()
        })
        .collect();
    assert!(rows.len() > 2, "parts of {rows:?} rows");
    assert_eq!(rows.iter().sum::<i64>(), 20000);
    assert!(
        rows[..rows.len() - 1].iter().all(|r| r % 256 == 0),
        "{rows:?}"
    );
    assert_eq!(sql(&ctx, &parts("unbounded")).await[0].num_rows(), 1);
    for query in ["w5", "x7 AND w11", "t19999", "\"w3 x3\""] {
        let of = |name: &str| {
            format!(
                "SELECT id, bm25(body, '{query}') FROM {name} WHERE match(body, '{query}') \
                 ORDER BY id"
            )
        };
        let (b, u) = (
            sql(&ctx, &of("bounded")).await,
            sql(&ctx, &of("unbounded")).await,
        );
        assert_eq!(ids(&b), ids(&u), "{query}");
        assert!(!ids(&u).is_empty(), "{query}");
        for ((_, x), (_, y)) in scored(&b).iter().zip(&scored(&u)) {
            assert!(close(*x, f64::from(*y)), "{query}: {x} vs {y}");
        }
    }
}

/// The metric `name` of an EXPLAIN ANALYZE text (summed over the
/// operators that have it).
fn metric(analyzed: &str, name: &str) -> usize {
    let found: Vec<usize> = analyzed
        .split("metrics=[")
        .skip(1)
        .filter_map(|metrics| {
            let metrics = metrics.split(']').next()?;
            let value = metrics.split(&format!(" {name}=")).nth(1)?;
            value
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!found.is_empty(), "no {name} in {analyzed}");
    found.iter().sum()
}

/// EXPLAIN ANALYZE counts what the text index did: terms looked up,
/// postings blocks decoded and skipped, rows scored.
#[tokio::test]
async fn explain_analyze_counts_the_text_search() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = crate::common::context(1);
    sql(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE t (id BIGINT, body VARCHAR) STORED AS DIAGON \
             LOCATION '{}' OPTIONS ('order_by' 'id', 'text_index' 'body', \
             'granularity' '128')",
            dir.path().display()
        ),
    )
    .await;
    // `w0` in the 500 even rows (4 blocks of 128), `rare` in rows 2 and 998
    // (metrics under 1000: EXPLAIN prints larger ones rounded).
    sql(
        &ctx,
        "INSERT INTO t SELECT value, concat('w', value % 2, \
         CASE WHEN value IN (2, 998) THEN ' rare' ELSE '' END) FROM range(1000)",
    )
    .await;
    let analyze = |query: &str| {
        let ctx = ctx.clone();
        let query = format!("EXPLAIN ANALYZE {query}");
        async move { crate::common::query(&ctx, &query).await }
    };
    let listed = analyze("SELECT id FROM t WHERE match(body, 'w0')").await;
    assert_eq!(metric(&listed, "text_body_terms_looked_up"), 1, "{listed}");
    assert_eq!(
        metric(&listed, "text_body_postings_blocks_decoded"),
        4,
        "{listed}"
    );
    assert_eq!(
        metric(&listed, "text_body_postings_blocks_skipped"),
        0,
        "{listed}"
    );

    // The rare term's rows are sought in w0's list: its middle blocks are
    // passed over by their skip entries.
    let both = analyze("SELECT id FROM t WHERE match(body, '+w0 +rare')").await;
    assert_eq!(metric(&both, "text_body_terms_looked_up"), 2, "{both}");
    let decoded = metric(&both, "text_body_postings_blocks_decoded");
    let skipped = metric(&both, "text_body_postings_blocks_skipped");
    assert!(decoded <= 3 && skipped >= 2, "{both}");

    // A top 3 among ids from 768 (the last two granules): the search
    // passes over w0's first three blocks, whose granules are pruned.
    let top =
        analyze("SELECT id, bm25(body, 'w0') AS s FROM t WHERE id >= 768 ORDER BY s DESC LIMIT 3")
            .await;
    // Each of w0's 4 blocks once: its first decoded when the list opened,
    // the next two passed, the tail scored.
    assert_eq!(metric(&top, "text_postings_blocks_skipped"), 2, "{top}");
    assert_eq!(metric(&top, "text_postings_blocks_decoded"), 2, "{top}");

    // ids 700..760 lie inside granule 5 (640..768): once the first
    // candidate there makes its filter known, the search passes the rows
    // before 700 that fail it unoffered, for one term (scored a block at
    // a time) and for a union.
    for words in ["w0", "w0 rare"] {
        let top3 = format!(
            "SELECT id, bm25(body, '{words}') AS s FROM t WHERE id >= 700 AND id < 760 \
             ORDER BY s DESC"
        );
        let inside = analyze(&format!("{top3} LIMIT 3")).await;
        assert!(metric(&inside, "topk_rejected_by_filters") <= 1, "{inside}");
        let found = sql(&ctx, &format!("{top3}, id LIMIT 3")).await;
        assert_eq!(ids(&found), [700, 702, 704], "{words}");
    }

    // A top k of words no row holds: rows score 0 and come in table order.
    let none = sql(
        &ctx,
        "SELECT id, bm25(body, 'nowhere OR neither') AS s FROM t ORDER BY s DESC LIMIT 3",
    )
    .await;
    assert_eq!(ids(&none), [0, 1, 2]);

    let scored = analyze("SELECT id, bm25(body, 'w0') FROM t WHERE match(body, 'w0')").await;
    assert_eq!(metric(&scored, "text_rows_scored"), 500, "{scored}");
    assert!(
        metric(&scored, "text_postings_blocks_decoded") >= 4,
        "{scored}"
    );
}

/// A merge remaps the text index of a column whose parts all have it and
/// rebuilds one whose parts do not (here `body`, declared with another
/// analyzer after the first insert): both answer as the values do, and
/// the merged part lists its indexes in the order an insert writes them.
#[tokio::test]
async fn a_merge_remaps_some_text_indexes_and_rebuilds_others() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("t");
    let ctx = crate::common::context(2);
    let create = |options: &str| {
        format!(
            "CREATE EXTERNAL TABLE t (id BIGINT, title VARCHAR, body VARCHAR) STORED AS DIAGON \
             LOCATION '{}' OPTIONS ('order_by' 'id', 'granularity' '16', \
             'merge.background' 'false'{options})",
            location.display()
        )
    };
    sql(&ctx, &create(", 'text_index' 'title,body'")).await;
    let insert = |range: std::ops::Range<i64>| {
        let values: Vec<String> = range
            .map(|i| {
                format!(
                    "({i}, 'title{} common', 'running runs w{} body{}')",
                    i % 5,
                    i % 7,
                    i % 3
                )
            })
            .collect();
        format!("INSERT INTO t VALUES {}", values.join(", "))
    };
    // Interleaved ids, so the merge interleaves rows of both parts.
    sql(&ctx, &insert(0..100)).await;
    sql(&ctx, "DROP TABLE t").await;
    sql(
        &ctx,
        &create(", 'text_index' 'title,body', 'analyzer.body' 'english'"),
    )
    .await;
    sql(&ctx, &insert(50..160)).await;
    sql(&ctx, "DELETE FROM t WHERE id % 11 = 3").await;
    let queries = [
        ("title", "title3"),
        ("title", "common AND title1"),
        ("body", "run"),
        ("body", "running AND w2"),
        ("body", "\"run w4\""),
    ];
    let answers = |ctx: SessionContext| async move {
        let mut all = Vec::new();
        for (column, query) in queries {
            let found = sql(
                &ctx,
                &format!("SELECT id FROM t WHERE match({column}, '{query}') ORDER BY id"),
            )
            .await;
            all.push(ids(&found));
        }
        all
    };
    sql(&ctx, "SELECT * FROM diagon_optimize('t', true)").await;
    let components = sql(&ctx, "SELECT components FROM diagon_parts('t')").await;
    let components = arrow::util::pretty::pretty_format_batches(&components)
        .unwrap()
        .to_string();
    assert!(
        components.contains("text_index(body) english, text_index(title) standard"),
        "{components}"
    );
    let indexed = answers(ctx.clone()).await;
    sql(&ctx, "SET diagon.enable_text_index = false").await;
    let analysed = answers(ctx.clone()).await;
    assert_eq!(indexed, analysed);
    assert!(indexed.iter().all(|rows| !rows.is_empty()), "{indexed:?}");
}
