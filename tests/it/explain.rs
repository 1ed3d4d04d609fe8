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

/// `parts` parts of 100 rows in granules of 10, ids 0.. in order; each
/// granule's tag is its own, between an 'a' and a 'z' (so min/max cannot
/// prune on tags).
async fn table(dir: &std::path::Path, parts: i64) -> Arc<Table> {
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
    crate::common::table_with(
        crate::common::local_storage(dir),
        schema(),
        options,
        &batches,
    )
    .await
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
    let table = table(dir.path(), 3).await;
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
    let table = table(dir.path(), 2).await;
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
    let table = table(dir.path(), 40).await;
    let ctx = session(table);
    let bound = 64 * 1024;
    crate::common::query(&ctx, &format!("SET diagon.cache_bytes = {bound}")).await;
    for tag in ["t7", "t123", "t399", "t7"] {
        let rows =
            crate::common::query(&ctx, &format!("SELECT count(*) FROM t WHERE tag = '{tag}'"))
                .await;
        assert!(rows.contains("| 8 "), "{tag}: {rows}");
        assert!(
            Cache::global().weight() <= bound,
            "{} bytes cached over a bound of {bound}",
            Cache::global().weight()
        );
    }
    // Back to the default for the other tests of this process.
    let default = diagon::storage::cache::DEFAULT_CACHE_BYTES;
    crate::common::query(&ctx, &format!("SET diagon.cache_bytes = {default}")).await;
}
