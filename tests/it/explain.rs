//! What EXPLAIN shows of the plan: per part under VERBOSE, the granule
//! ranges read and the counts skipped by each reason; under ANALYZE, the
//! cache's hits and misses. And the cache stays under its bound.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use diagon::sql::DiagonTableProvider;
use diagon::storage::Cache;
use diagon::{Table, TableOptions};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("tag", DataType::Utf8, false),
    ]))
}

/// `parts` parts of 100 rows in granules of 10, ids 0.. in order (cached in
/// `cache`: a test's own, so others sharing the process cannot disturb
/// what it counts); each
/// granule's tag is its own, between an 'a' and a 'z' (so min/max cannot
/// prune on tags).
async fn table(dir: &std::path::Path, parts: i64, cache: Arc<Cache>) -> Arc<Table> {
    let batches: Vec<RecordBatch> = (0..parts)
        .map(|p| {
            let ids: Vec<i64> = (p * 100..p * 100 + 100).collect();
            let tags: Vec<String> = ids
                .iter()
                .map(|i| match i % 10 {
                    0 => "a".to_string(),
                    9 => "z".to_string(),
                    _ => format!("t{}", i / 10),
                })
                .collect();
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(tags)),
                ],
            )
            .unwrap()
        })
        .collect();
    let options: std::collections::HashMap<String, String> = [
        ("order_by", "id"),
        ("granularity", "10"),
        ("skip_index.tag", "set(100)"),
        ("merge.background", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let options = TableOptions::parse(&options, &schema()).unwrap();
    let storage = crate::common::local_storage(dir).with_cache(cache);
    crate::common::table_with(storage, schema(), options, &batches).await
}

fn session(table: Arc<Table>) -> SessionContext {
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table)))
        .unwrap();
    ctx
}

#[tokio::test]
async fn explain_verbose_shows_each_part() {
    let dir = tempfile::tempdir().unwrap();
    let table = table(dir.path(), 3, Arc::new(Cache::new(1 << 20))).await;
    let parts: Vec<String> = table
        .cached_snapshot()
        .parts
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let ctx = session(table);
    crate::common::query(&ctx, "DELETE FROM t WHERE id >= 290").await;
    let sql = "SELECT count(*) FROM t WHERE id >= 150 AND tag IN ('t25', 't29')";
    let rows = crate::common::query(&ctx, sql).await;
    assert!(rows.contains("| 8 "), "{rows}");
    let plan = crate::common::query(&ctx, &format!("EXPLAIN VERBOSE {sql}")).await;
    let line = |part: &str| -> String {
        plan.lines()
            .find(|l| l.contains(&format!("part={part}")))
            .unwrap_or_else(|| panic!("no line for {part} in\n{plan}"))
            .to_string()
    };
    let has = |line: &str, items: &[&str]| {
        for item in items {
            assert!(line.contains(item), "{item} missing from {line}");
        }
    };
    // Part 0 holds ids 0..100: the primary key rules it out.
    has(
        &line(&parts[0]),
        &["granules=0/10 read=[]", "skipped_by_primary_key=10"],
    );
    // Part 1 (100..200): the primary key rules out granules 0..4, min/max
    // granule 4 (its keys end at 149), the skip index the rest.
    has(
        &line(&parts[1]),
        &[
            "granules=0/10 read=[]",
            "skipped_by_primary_key=4",
            "skipped_by_minmax=1",
            "skipped_by_skip_index_tag=5",
        ],
    );
    // Part 2 (200..300): the skip index keeps granules 5 (t25) and 9
    // (t29), whose rows are all deleted.
    has(
        &line(&parts[2]),
        &[
            "granules=1/10 read=[5..6]",
            "skipped_by_skip_index_tag=8",
            "skipped_by_deleted=1",
        ],
    );
    assert!(plan.contains("skipped_deleted=1"), "{plan}");
}

#[tokio::test]
async fn explain_analyze_counts_cache_hits_and_misses() {
    let dir = tempfile::tempdir().unwrap();
    let table = table(dir.path(), 2, Arc::new(Cache::new(1 << 20))).await;
    let ctx = session(table);
    let sql = "EXPLAIN ANALYZE SELECT count(*) FROM t WHERE tag = 't3'";
    let first = crate::common::query(&ctx, sql).await;
    let second = crate::common::query(&ctx, sql).await;
    let count = |plan: &str, name: &str| -> usize {
        let at = plan
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("{name} in {plan}"));
        plan[at + name.len() + 1..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(count(&first, "cache_misses") > 0, "{first}");
    // The second plan finds the part indexes and index blocks cached.
    assert_eq!(count(&second, "cache_misses"), 0, "{second}");
    assert!(count(&second, "cache_hits") >= 2, "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_under_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let bound = 256 * 1024;
    let cache = Arc::new(Cache::new(bound));
    // 40 parts: their indexes and index blocks take several times the bound.
    let table = table(dir.path(), 40, cache.clone()).await;
    let ctx = session(table);
    let mut weights = Vec::new();
    for tag in ["t7", "t123", "t399", "t7", "t250"] {
        let rows =
            crate::common::query(&ctx, &format!("SELECT count(*) FROM t WHERE tag = '{tag}'"))
                .await;
        assert!(rows.contains("| 8 "), "{tag}: {rows}");
        weights.push(cache.weight());
    }
    assert!(
        weights.iter().all(|w| *w <= bound),
        "cached {weights:?} over a bound of {bound}"
    );
    assert!(
        weights.iter().all(|w| *w > 0),
        "the cache holds something: {weights:?}"
    );
    let (hits, misses) = cache.hits_and_misses();
    assert!(
        misses > 40,
        "more parts than fit are read again: {hits} hits, {misses} misses"
    );
}
