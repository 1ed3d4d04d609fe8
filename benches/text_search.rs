//! Text search against tantivy on the same documents, same analysis, one
//! thread, warm, in one run (the search-benchmark-game's method).
//!
//! - Corpus: `../shared/scripts/build-corpus.py` output (136k documents,
//!   120 MB; the `body` field), at `DIAGON_TEXT_CORPUS` (default
//!   `~/.cache/diagon-bench/corpus.jsonl`).
//! - Analysis: the same on both sides: diagon's `simple` analyzer (split
//!   on non-alphanumeric characters, lowercase, tokens over 255 bytes
//!   dropped, their positions kept) and tantivy's `SimpleTokenizer`,
//!   `LowerCaser` and `RemoveLongFilter::limit(256)` (tantivy's default
//!   drops tokens over 40 bytes, which left 14,043 of the corpus's terms
//!   out of its index but not diagon's). Counts are compared and
//!   differences reported.
//! - Indexing: tantivy with one indexing thread and a 1 GB budget, one
//!   commit, then merged into one segment; diagon writing batches of
//!   10,000 documents in one insert (it also stores the `body` column
//!   itself, zstd-compressed), one commit, then `optimize(true)` into one
//!   part (nothing to do when the insert wrote one). Both wall clock,
//!   from the same in-memory documents. Also the memory the text index
//!   builder holds after taking every document into one part.
//! - Queries: `../shared/data/queries-aol-962.jsonl`, grouped by their
//!   first tag (term, intersection, union, phrase, ...). Modes COUNT,
//!   TOP_10, TOP_10_COUNT, TOP_100. Each query runs once to warm up and
//!   then `DIAGON_TEXT_RUNS` times (default 5); its time is the median.
//!   Reported per group and mode: the median time of each engine over
//!   the group's queries, and the distribution (p10, p50, p90) of the
//!   per-query ratio diagon / tantivy. Both parse each query once, before
//!   timing it; diagon answers through its library calls
//!   (`Table::search_bound`, `Table::count_bound`); the SQL path
//!   (`ORDER BY bm25(...) DESC LIMIT 10` through DataFusion) is timed on
//!   the TOP_10 queries too, as its difference from the library call.
//! - Filtered top-k: each TOP_10 query AND a range of ids keeping 1% of
//!   the documents, diagon through SQL (`WHERE match(...) AND id BETWEEN
//!   ... ORDER BY bm25 DESC LIMIT 10`) against tantivy with the range as
//!   a fast-field range clause of a boolean query.
//!
//! `cargo bench --bench text_search` (indexes are built once under the
//! target directory; `DIAGON_BENCH_RELOAD=1` rebuilds them, as does a
//! change of the format or analysis recorded in `built_as.txt` beside
//! them).
//! `DIAGON_TEXT_DOCS=n` limits the documents, `DIAGON_TEXT_QUERIES=n`
//! the queries; `DIAGON_TEXT_QUERY_FILE` reads queries from another file
//! of the same form. `DIAGON_TEXT_PROFILE=count|top10|sql_top10` runs
//! only diagon's calls of that mode (`sql_top10`: the TOP_10 through
//! SQL), every query (parsed before) `DIAGON_TEXT_RUNS` times, for a
//! profiler (`perf record -g`); `tantivy_count|tantivy_top10`
//! runs tantivy's, to compare the two engines on a query file;
//! `diagon_index|tantivy_index` builds only that engine's index, from the
//! corpus, into a scratch directory.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::SessionConfig;
use diagon::sql::DiagonTableProvider;
use diagon::table::TextTarget;
use diagon::{Table, TableOptions};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::QueryParser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 10_000;

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn corpus_path() -> PathBuf {
    match std::env::var_os("DIAGON_TEXT_CORPUS") {
        Some(p) => p.into(),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/diagon-bench/corpus.jsonl")
        }
    }
}

fn queries_path() -> PathBuf {
    match std::env::var_os("DIAGON_TEXT_QUERY_FILE") {
        Some(p) => p.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/queries-aol-962.jsonl"),
    }
}

fn read_corpus(limit: Option<usize>) -> Vec<String> {
    let file = std::fs::File::open(corpus_path()).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with ../shared/scripts/build-corpus.py",
            corpus_path().display()
        )
    });
    std::io::BufReader::new(file)
        .lines()
        .take(limit.unwrap_or(usize::MAX))
        .map(|line| {
            let doc: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            doc["body"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

fn read_queries(limit: Option<usize>) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(queries_path()).unwrap();
    text.lines()
        .take(limit.unwrap_or(usize::MAX))
        .map(|line| {
            let q: serde_json::Value = serde_json::from_str(line).unwrap();
            let tag = q["tags"][0].as_str().unwrap_or("other").to_string();
            (tag, q["query"].as_str().unwrap().to_string())
        })
        .collect()
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("body", DataType::Utf8, false),
    ]))
}

/// Bytes of the files under `dir`, but fast fields (the `id` column,
/// which the filtered top-k needs and diagon keeps as a column too).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += match meta.is_dir() {
            true => dir_bytes(&entry.path()),
            false if entry.path().extension().is_some_and(|e| e == "fast") => 0,
            false => meta.len(),
        };
    }
    total
}

/// The memory diagon's text index builder holds after taking every
/// document into one part, in granules of 8192 (before it encodes), and
/// the time it took to take them and to encode the component (the share
/// of an insert's time that is the text index's).
fn builder_cost(docs: &[String]) -> (usize, Duration, Duration) {
    use diagon::part::component::ComponentBuilder;
    let mut builder = diagon::index::text::component::TextIndexBuilder::new(
        1,
        "body",
        diagon::index::text::Analyzer::Simple,
    );
    let batches: Vec<RecordBatch> = docs
        .chunks(8192)
        .enumerate()
        .map(|(g, chunk)| {
            let first = (g * 8192) as i64;
            let ids = Int64Array::from_iter_values(first..first + chunk.len() as i64);
            let bodies = StringArray::from_iter_values(chunk.iter());
            RecordBatch::try_new(schema(), vec![Arc::new(ids), Arc::new(bodies)]).unwrap()
        })
        .collect();
    let started = Instant::now();
    for (g, batch) in batches.iter().enumerate() {
        builder.add_granule((g * 8192) as u64, batch).unwrap();
    }
    let taken = started.elapsed();
    let held = builder.memory_bytes();
    let started = Instant::now();
    Box::new(builder).finish().unwrap();
    (held, taken, started.elapsed())
}

/// What the kept indexes are, in the file `BUILT_AS` beside them.
const INDEXES: &str = "diagon text_index 4 (list leads); tantivy with diagon's simple analysis\n";
const BUILT_AS: &str = "built_as.txt";

/// The name tantivy knows diagon's analysis by.
const SIMPLE: &str = "diagon_simple";

/// Registers diagon's `simple` analysis with tantivy (an index opened
/// from disk needs it again for its queries).
fn register_analysis(index: &tantivy::Index) {
    use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
    let limit = diagon::index::text::analysis::MAX_TERM_BYTES + 1;
    let analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(LowerCaser)
        .filter(RemoveLongFilter::limit(limit))
        .build();
    index.tokenizers().register(SIMPLE, analyzer);
}

/// Builds (or opens) tantivy's index; returns it with the time taken to
/// build it, if built now.
fn tantivy_index(dir: &Path, docs: &[String], reload: bool) -> (tantivy::Index, Option<Duration>) {
    let path = dir.join("tantivy");
    if !reload && path.join("meta.json").exists() {
        let index = tantivy::Index::open_in_dir(&path).unwrap();
        register_analysis(&index);
        return (index, None);
    }
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    let mut builder = tantivy::schema::Schema::builder();
    let indexing = tantivy::schema::TextFieldIndexing::default()
        .set_tokenizer(SIMPLE)
        .set_index_option(tantivy::schema::IndexRecordOption::WithFreqsAndPositions);
    let body = builder.add_text_field(
        "body",
        tantivy::schema::TextOptions::default().set_indexing_options(indexing),
    );
    let id = builder.add_i64_field("id", tantivy::schema::FAST | tantivy::schema::INDEXED);
    let index = tantivy::Index::create_in_dir(&path, builder.build()).unwrap();
    register_analysis(&index);
    let started = Instant::now();
    let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 1_000_000_000).unwrap();
    for (i, text) in docs.iter().enumerate() {
        writer
            .add_document(tantivy::doc!(body => text.as_str(), id => i as i64))
            .unwrap();
    }
    writer.commit().unwrap();
    let segments = index.searchable_segment_ids().unwrap();
    if segments.len() > 1 {
        writer.merge(&segments).wait().unwrap();
    }
    writer.wait_merging_threads().unwrap();
    (index, Some(started.elapsed()))
}

/// Builds (or opens) diagon's table; returns it with the insert and
/// optimize times, if built now.
async fn diagon_table(
    dir: &Path,
    docs: &[String],
    reload: bool,
) -> (Arc<Table>, Option<(Duration, Duration)>) {
    let path = dir.join("diagon");
    let storage = diagon::storage::Storage::local(&path).unwrap();
    if !reload && let Some(table) = Table::open("docs", storage.clone()).await.unwrap() {
        return (table, None);
    }
    let _ = std::fs::remove_dir_all(&path);
    let storage = diagon::storage::Storage::local(&path).unwrap();
    let options: std::collections::HashMap<String, String> = [
        ("text_index", "body"),
        ("analyzer.body", "simple"),
        ("merge.background", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let options = TableOptions::parse(&options, &schema()).unwrap();
    let table = Table::create("docs", storage, schema(), options)
        .await
        .unwrap();
    let started = Instant::now();
    let mut writer = table.insert();
    for (b, chunk) in docs.chunks(BATCH).enumerate() {
        let first = (b * BATCH) as i64;
        let ids = Int64Array::from_iter_values(first..first + chunk.len() as i64);
        let bodies = StringArray::from_iter_values(chunk.iter());
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(ids), Arc::new(bodies)]).unwrap();
        writer.write(batch).await.unwrap();
    }
    writer.commit().await.unwrap();
    let inserted = started.elapsed();
    let started = Instant::now();
    table.optimize(true).await.unwrap();
    (table, Some((inserted, started.elapsed())))
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed()
            })
            .collect(),
    )
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Mode {
    Count,
    Top10,
    Top10Count,
    Top100,
}

fn main() {
    let reload = std::env::var_os("DIAGON_BENCH_RELOAD").is_some();
    let runs = env_usize("DIAGON_TEXT_RUNS").unwrap_or(5);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-data")
        .join("text_search");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| PathBuf::from(t).join("bench-data/text_search"))
        .unwrap_or(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Indexing alone, for a profiler: one engine builds its index from
    // the corpus into a scratch directory, and nothing else runs.
    if let Ok(mode) = std::env::var("DIAGON_TEXT_PROFILE")
        && let Some(engine) = mode.strip_suffix("_index")
    {
        let docs = read_corpus(env_usize("DIAGON_TEXT_DOCS"));
        let scratch = dir.join("profile");
        let started = Instant::now();
        match engine {
            "diagon" => drop(runtime.block_on(diagon_table(&scratch, &docs, true))),
            "tantivy" => drop(tantivy_index(&scratch, &docs, true)),
            _ => panic!("DIAGON_TEXT_PROFILE={mode}: diagon_index or tantivy_index"),
        }
        println!(
            "{engine} indexing: {:.2} s",
            started.elapsed().as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&scratch);
        return;
    }
    // Indexes an earlier bench built with another format or analysis
    // are built again.
    let built_as = std::fs::read_to_string(dir.join(BUILT_AS)).unwrap_or_default();
    let needs_docs = reload
        || built_as != INDEXES
        || !dir.join("tantivy/meta.json").exists()
        || !dir.join("diagon").exists();
    let docs = match needs_docs {
        true => read_corpus(env_usize("DIAGON_TEXT_DOCS")),
        false => Vec::new(),
    };
    if needs_docs {
        let text: usize = docs.iter().map(String::len).sum();
        let (held, taken, encoded) = builder_cost(&docs);
        println!(
            "text index builder: {:.1} MB held for {:.1} MB of text ({:.2} bytes per byte); \
             rows taken in {:.2} s, component encoded in {:.2} s",
            held as f64 / 1e6,
            text as f64 / 1e6,
            held as f64 / text as f64,
            taken.as_secs_f64(),
            encoded.as_secs_f64()
        );
    }
    let (index, tantivy_built) = tantivy_index(&dir, &docs, needs_docs);
    let (table, diagon_built) = runtime.block_on(diagon_table(&dir, &docs, needs_docs));
    std::fs::write(dir.join(BUILT_AS), INDEXES).unwrap();
    drop(docs);

    let snapshot = runtime.block_on(table.snapshot()).unwrap();
    let rows: u64 = snapshot.parts.iter().map(|p| p.rows).sum();
    let text_bytes: u64 = runtime.block_on(async {
        let mut total = 0;
        for entry in &snapshot.parts {
            let index = table.entry_index(&snapshot, entry).await.unwrap();
            total += index
                .meta
                .components
                .iter()
                .filter(|c| c.kind == "text_index")
                .map(|c| c.length)
                .sum::<u64>();
        }
        total
    });
    let tantivy_bytes = dir_bytes(&dir.join("tantivy"));
    println!("documents: {rows} (parts: {})", snapshot.parts.len());
    if let (Some(t), Some((inserted, optimized))) = (tantivy_built, diagon_built) {
        let d = inserted + optimized;
        println!(
            "indexing: diagon {:.1} s (insert {:.1} s + optimize {:.1} s), tantivy {:.1} s: ratio {:.2}",
            d.as_secs_f64(),
            inserted.as_secs_f64(),
            optimized.as_secs_f64(),
            t.as_secs_f64(),
            d.as_secs_f64() / t.as_secs_f64()
        );
    }
    println!(
        "index bytes: diagon text index {text_bytes}, tantivy directory {tantivy_bytes}: ratio {:.3}",
        text_bytes as f64 / tantivy_bytes as f64
    );

    let reader = index.reader().unwrap();
    let searcher = reader.searcher();
    let body = index.schema().get_field("body").unwrap();
    let parser = QueryParser::for_index(&index, vec![body]);
    let ctx = diagon::sql::new_context(SessionConfig::new().with_target_partitions(1));
    ctx.register_table("docs", Arc::new(DiagonTableProvider::new(table.clone())))
        .unwrap();

    let queries = read_queries(env_usize("DIAGON_TEXT_QUERIES"));
    if let Ok(mode) = std::env::var("DIAGON_TEXT_PROFILE") {
        // Each query's fastest run, summed: steadier than a mean on a
        // noisy machine.
        let mut fastest = vec![Duration::MAX; queries.len()];
        // A warm-up pass, then the measured ones (`measured_call`, a name
        // to give callgrind's --toggle-collect).
        const MODES: [&str; 5] = [
            "count",
            "top10",
            "sql_top10",
            "tantivy_count",
            "tantivy_top10",
        ];
        assert!(
            MODES.contains(&mode.as_str()),
            "DIAGON_TEXT_PROFILE={mode}: one of {MODES:?}"
        );
        let engines = Engines {
            runtime: &runtime,
            table: &table,
            snapshot: &snapshot,
            searcher: &searcher,
            ctx: &ctx,
        };
        // Parsed and bound once, as in the comparison below.
        let parsed: Vec<Parsed> = queries
            .iter()
            .map(|(_, text)| Parsed {
                tantivy: parser.parse_query(text).ok(),
                diagon: TextTarget::of(&snapshot.options, "body").bind(text).ok(),
                sql: top10_sql(text),
            })
            .collect();
        let unparsed = parsed
            .iter()
            .filter(|p| p.tantivy.is_none() || p.diagon.is_none())
            .count();
        for query in &parsed {
            call(&engines, &mode, query);
        }
        for _ in 0..runs {
            for (query, best) in parsed.iter().zip(fastest.iter_mut()) {
                let started = Instant::now();
                measured_call(&engines, &mode, query);
                *best = (*best).min(started.elapsed());
            }
        }
        let total: Duration = fastest.iter().sum();
        let mut sorted: Vec<f64> = fastest.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{mode}: {} queries ({unparsed} not parsed by one engine, not run by it) \
             x {runs} runs; fastest runs: mean {:.4} ms, p50 {:.4} ms",
            queries.len(),
            total.as_secs_f64() * 1e3 / queries.len() as f64,
            quantile(&sorted, 0.5)
        );
        return;
    }
    // (group, mode) -> per query (diagon, tantivy)
    let mut times: BTreeMap<(String, Mode), Vec<(Duration, Duration)>> = BTreeMap::new();
    let mut sql_extra: Vec<f64> = Vec::new();
    // Per query (diagon, tantivy) of the filtered TOP_10.
    let mut filtered: Vec<(Duration, Duration)> = Vec::new();
    let id_field = index.schema().get_field("id").unwrap();
    let mut count_mismatches = Vec::new();
    let mut skipped = 0;
    for (group, text) in &queries {
        let Ok(query) = parser.parse_query(text) else {
            skipped += 1;
            continue;
        };
        let Ok(expected) = runtime.block_on(table.count_matches(&snapshot, "body", text)) else {
            skipped += 1;
            continue;
        };
        // Parsed and bound once, as tantivy's query is.
        let bound = TextTarget::of(&snapshot.options, "body")
            .bind(text)
            .unwrap();
        let counted = searcher.search(&query, &Count).unwrap() as u64;
        if counted != expected {
            count_mismatches.push((text.clone(), expected, counted));
        }
        for mode in [Mode::Count, Mode::Top10, Mode::Top10Count, Mode::Top100] {
            let d = time(runs, || {
                runtime.block_on(async {
                    match mode {
                        Mode::Count => {
                            std::hint::black_box(
                                table.count_bound(&snapshot, "body", &bound).await.unwrap(),
                            );
                        }
                        Mode::Top10 | Mode::Top100 => {
                            let k = if mode == Mode::Top10 { 10 } else { 100 };
                            std::hint::black_box(
                                table
                                    .search_bound(&snapshot, "body", &bound, k)
                                    .await
                                    .unwrap(),
                            );
                        }
                        Mode::Top10Count => {
                            std::hint::black_box(
                                table
                                    .search_bound(&snapshot, "body", &bound, 10)
                                    .await
                                    .unwrap(),
                            );
                            std::hint::black_box(
                                table.count_bound(&snapshot, "body", &bound).await.unwrap(),
                            );
                        }
                    }
                })
            });
            let t = time(runs, || match mode {
                Mode::Count => {
                    std::hint::black_box(searcher.search(&query, &Count).unwrap());
                }
                Mode::Top10 | Mode::Top100 => {
                    let k = if mode == Mode::Top10 { 10 } else { 100 };
                    std::hint::black_box(
                        searcher
                            .search(&query, &TopDocs::with_limit(k).order_by_score())
                            .unwrap(),
                    );
                }
                Mode::Top10Count => {
                    std::hint::black_box(
                        searcher
                            .search(&query, &(TopDocs::with_limit(10).order_by_score(), Count))
                            .unwrap(),
                    );
                }
            });
            times.entry((group.clone(), mode)).or_default().push((d, t));
            if mode == Mode::Top10 {
                let sql = top10_sql(text);
                let s = time(runs, || {
                    runtime.block_on(async {
                        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                        std::hint::black_box(batches);
                    })
                });
                sql_extra.push(s.as_secs_f64() * 1e3 - d.as_secs_f64() * 1e3);
                filtered.push(filtered_top10(
                    &runtime,
                    &ctx,
                    &searcher,
                    query.as_ref(),
                    id_field,
                    (text, filtered.len(), rows, runs),
                ));
            }
        }
    }
    println!(
        "queries: {} ({} not parsed by one of the engines); count mismatches: {}",
        queries.len(),
        skipped,
        count_mismatches.len()
    );
    for (text, d, t) in count_mismatches.iter().take(10) {
        println!("  count differs: {text:?} diagon {d} tantivy {t}");
    }
    println!(
        "\n{:<20} {:<12} {:>7} {:>12} {:>12} {:>8} {:>8} {:>8}",
        "group", "mode", "queries", "diagon p50", "tantivy p50", "r p10", "r p50", "r p90"
    );
    let mut all: BTreeMap<Mode, Vec<(Duration, Duration)>> = BTreeMap::new();
    for ((group, mode), list) in &times {
        all.entry(*mode).or_default().extend(list.iter().copied());
        report(group, *mode, list);
    }
    for (mode, list) in &all {
        report("all", *mode, list);
    }
    if !filtered.is_empty() {
        println!();
        report("filtered 1%", Mode::Top10, &filtered);
    }
    if !sql_extra.is_empty() {
        sql_extra.sort_by(f64::total_cmp);
        println!(
            "\nSQL path minus library call, TOP_10: p10 {:.3} ms, p50 {:.3} ms, p90 {:.3} ms",
            quantile(&sql_extra, 0.1),
            quantile(&sql_extra, 0.5),
            quantile(&sql_extra, 0.9)
        );
    }
}

/// The times of `text` AND a range of ids keeping 1% of the `rows`
/// documents (a different range for the `n`-th query), best 10 by score:
/// diagon through SQL, tantivy with a fast-field range clause. Both find
/// as many rows.
fn filtered_top10(
    runtime: &tokio::runtime::Runtime,
    ctx: &datafusion::prelude::SessionContext,
    searcher: &tantivy::Searcher,
    query: &dyn tantivy::query::Query,
    id: tantivy::schema::Field,
    (text, n, rows, runs): (&str, usize, u64, usize),
) -> (Duration, Duration) {
    use std::ops::Bound::{Excluded, Included};
    let width = (rows / 100).max(1) as i64;
    let lo = (n as i64 * 7919) % (rows as i64 - width).max(1);
    let hi = lo + width;
    let escaped = text.replace('\'', "''");
    let sql = format!(
        "SELECT id, bm25(body, '{escaped}') AS s FROM docs \
         WHERE match(body, '{escaped}') AND id >= {lo} AND id < {hi} ORDER BY s DESC LIMIT 10"
    );
    let range = tantivy::query::RangeQuery::new(
        Included(tantivy::Term::from_field_i64(id, lo)),
        Excluded(tantivy::Term::from_field_i64(id, hi)),
    );
    let both = tantivy::query::BooleanQuery::new(vec![
        (tantivy::query::Occur::Must, query.box_clone()),
        (tantivy::query::Occur::Must, Box::new(range)),
    ]);
    let mut found = (0, 0);
    let d = time(runs, || {
        runtime.block_on(async {
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            found.0 = batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        })
    });
    let t = time(runs, || {
        let top = searcher
            .search(&both, &TopDocs::with_limit(10).order_by_score())
            .unwrap();
        found.1 = top.len();
    });
    if found.0 != found.1 {
        println!(
            "  filtered top 10 of {text:?}: diagon {} rows, tantivy {}",
            found.0, found.1
        );
    }
    (d, t)
}

/// What the profiled mode runs its queries on.
struct Engines<'a> {
    runtime: &'a tokio::runtime::Runtime,
    table: &'a Table,
    snapshot: &'a diagon::table::Snapshot,
    searcher: &'a tantivy::Searcher,
    ctx: &'a datafusion::prelude::SessionContext,
}

/// A query as each engine parsed it (`None` where it did not).
struct Parsed {
    tantivy: Option<Box<dyn tantivy::query::Query>>,
    diagon: Option<diagon::index::text::bound::Bound>,
    /// The TOP_10 query through SQL, as the comparison times it.
    sql: String,
}

/// `text`'s TOP_10 through SQL.
fn top10_sql(text: &str) -> String {
    let escaped = text.replace('\'', "''");
    format!(
        "SELECT id, bm25(body, '{escaped}') AS s FROM docs \
         WHERE match(body, '{escaped}') ORDER BY s DESC LIMIT 10"
    )
}

/// [`call`], measured (a name for callgrind's --toggle-collect, which
/// leaves the warm-up pass's calls out).
#[inline(never)]
fn measured_call(e: &Engines, mode: &str, query: &Parsed) {
    call(e, mode, query)
}

/// One call of the profiled mode: `count`, `top10` and `sql_top10` (the
/// same through SQL) on diagon,
/// `tantivy_count` and `tantivy_top10` on tantivy (to compare the two
/// engines' instructions on the same queries).
fn call(e: &Engines, mode: &str, query: &Parsed) {
    match (mode, &query.tantivy, &query.diagon) {
        ("count", _, Some(bound)) => {
            let counted = e.table.count_bound(e.snapshot, "body", bound);
            let _ = std::hint::black_box(e.runtime.block_on(counted));
        }
        ("top10", _, Some(bound)) => {
            let found = e.table.search_bound(e.snapshot, "body", bound, 10);
            let _ = std::hint::black_box(e.runtime.block_on(found));
        }
        ("sql_top10", _, Some(_)) => {
            let batches = async { e.ctx.sql(&query.sql).await?.collect().await };
            std::hint::black_box(e.runtime.block_on(batches).ok());
        }
        ("tantivy_count", Some(query), _) => {
            std::hint::black_box(e.searcher.search(query, &Count).ok());
        }
        ("tantivy_top10", Some(query), _) => {
            let top = TopDocs::with_limit(10).order_by_score();
            std::hint::black_box(e.searcher.search(query, &top).ok());
        }
        _ => {}
    }
}

fn report(group: &str, mode: Mode, list: &[(Duration, Duration)]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let d = median(list.iter().map(|(d, _)| *d).collect());
    let t = median(list.iter().map(|(_, t)| *t).collect());
    let mut ratios: Vec<f64> = list
        .iter()
        .map(|(d, t)| d.as_secs_f64() / t.as_secs_f64().max(1e-9))
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "{:<20} {:<12} {:>7} {:>9.3} ms {:>9.3} ms {:>8.2} {:>8.2} {:>8.2}",
        group,
        format!("{mode:?}"),
        list.len(),
        ms(d),
        ms(t),
        quantile(&ratios, 0.1),
        quantile(&ratios, 0.5),
        quantile(&ratios, 0.9)
    );
}
