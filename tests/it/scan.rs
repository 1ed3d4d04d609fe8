//! What a scan reads: EXPLAIN ANALYZE metrics show pruning, and ORDER BY key
//! [DESC] LIMIT reads only the granules it needs.

use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;

/// Runs `sql`, returning its rows and the named metric summed over the plan.
async fn run_with_metric(ctx: &SessionContext, sql: &str, metric: &str) -> (usize, usize) {
    let df = ctx.sql(sql).await.unwrap();
    let plan = df.create_physical_plan().await.unwrap();
    let batches = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
    (crate::common::rows(&batches), metric_sum(&plan, metric))
}

/// Sums a metric over the plan's scans (wrappers such as CooperativeExec
/// report their child's metrics as their own, so only scans are counted).
fn metric_sum(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
    let own = if plan.name() == "DataSourceExec" {
        plan.metrics()
            .and_then(|m| m.sum_by_name(name))
            .map(|v| v.as_usize())
            .unwrap_or(0)
    } else {
        0
    };
    own + plan
        .children()
        .iter()
        .map(|c| metric_sum(c, name))
        .sum::<usize>()
}

async fn table(ctx: &SessionContext, dir: &std::path::Path) {
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE t (k BIGINT NOT NULL, v VARCHAR) STORED AS DIAGON LOCATION '{}' \
         OPTIONS ('order_by' 'k', 'granularity' '100', 'insert_block_rows' '2500')",
        dir.display()
    ))
    .await
    .unwrap();
    // One input partition keeps the insert order, so parts hold 1..2500,
    // 2501..5000, ... and the expected granule counts below are exact.
    let target = ctx.state().config().target_partitions();
    ctx.sql("SET datafusion.execution.target_partitions = 1")
        .await
        .unwrap();
    ctx.sql("INSERT INTO t SELECT value, 'v' || value FROM generate_series(1, 10000)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    ctx.sql(&format!(
        "SET datafusion.execution.target_partitions = {target}"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_by_key_limit_reads_few_granules() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = crate::common::context(4);
    table(&ctx, dir.path()).await;
    let (rows, all) = run_with_metric(&ctx, "SELECT * FROM t", "granules_read").await;
    assert_eq!((rows, all), (10000, 100));
    for sql in [
        "SELECT * FROM t ORDER BY k LIMIT 10",
        "SELECT * FROM t ORDER BY k DESC LIMIT 10",
        "SELECT k FROM t ORDER BY k DESC LIMIT 150",
    ] {
        let (rows, read) = run_with_metric(&ctx, sql, "granules_read").await;
        let limit = if sql.ends_with("150") { 150 } else { 10 };
        assert_eq!(rows, limit, "{sql}");
        // Each of the 4 parts is a partition; each reads the granules (of 100
        // rows) that its first `limit` rows need, never the table.
        let per_partition = limit.div_ceil(100);
        assert_eq!(read, 4 * per_partition, "{sql} read {read} of 100 granules");
    }
    let top = crate::common::query(&ctx, "SELECT k FROM t ORDER BY k DESC LIMIT 3").await;
    assert!(
        top.contains("10000") && top.contains("9998") && !top.contains("9997"),
        "{top}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_counts_pruned_granules() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = crate::common::context(2);
    table(&ctx, dir.path()).await;
    let sql = "SELECT count(*) FROM t WHERE k BETWEEN 1001 AND 1200";
    let (_, read) = run_with_metric(&ctx, sql, "granules_read").await;
    // Granule 9 (901..1000) ends at the next key, 1001, so the sparse primary
    // index keeps it; its max rules it out.
    assert_eq!(read, 2, "the two granules holding 1001..1200");
    let (_, primary) = run_with_metric(&ctx, sql, "granules_pruned_by_primary_key").await;
    let (_, parts_pruned) = run_with_metric(&ctx, sql, "parts_pruned").await;
    let (_, minmax) = run_with_metric(&ctx, sql, "granules_pruned_by_minmax").await;
    assert_eq!((primary, minmax, parts_pruned), (97, 1, 3));
    let text = crate::common::query(&ctx, &format!("EXPLAIN ANALYZE {sql}")).await;
    for metric in [
        "granules_pruned_by_primary_key=97",
        "granules_pruned_by_minmax=",
        "bytes_read=",
        "decode_time=",
        "parts_total=4",
    ] {
        assert!(
            text.contains(metric),
            "EXPLAIN ANALYZE lacks {metric}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topk_on_a_non_key_column_prunes_with_the_dynamic_filter() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = crate::common::context(1);
    table(&ctx, dir.path()).await;
    // v is not the sort key, so a TopK sort runs and feeds its bound back
    // to the scan, which skips granules whose max is below it.
    let (rows, pruned) = run_with_metric(
        &ctx,
        "SELECT v FROM t ORDER BY v DESC LIMIT 5",
        "granules_pruned_by_dynamic_filter",
    )
    .await;
    assert_eq!(rows, 5);
    assert!(
        pruned > 50,
        "the TopK bound on v should skip most granules, skipped {pruned}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_lives_in_any_registered_object_store() {
    let ctx = crate::common::context(2);
    let url = url::Url::parse("memory://bucket").unwrap();
    ctx.register_object_store(&url, Arc::new(object_store::memory::InMemory::new()));
    ctx.sql(
        "CREATE EXTERNAL TABLE m (k INT, v VARCHAR) STORED AS DIAGON \
         LOCATION 'memory://bucket/tables/m' OPTIONS ('order_by' 'k')",
    )
    .await
    .unwrap();
    ctx.sql("INSERT INTO m VALUES (2, 'b'), (1, 'a')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    // A second session over the same store reopens the table.
    let other = crate::common::context(2);
    other.register_object_store(
        &url,
        ctx.runtime_env()
            .object_store(
                datafusion::execution::object_store::ObjectStoreUrl::parse("memory://bucket")
                    .unwrap(),
            )
            .unwrap(),
    );
    other
        .sql("CREATE EXTERNAL TABLE m STORED AS DIAGON LOCATION 'memory://bucket/tables/m'")
        .await
        .unwrap();
    let text = crate::common::query(&other, "SELECT k, v FROM m ORDER BY k").await;
    assert!(
        text.contains("| 1 | a |") && text.contains("| 2 | b |"),
        "{text}"
    );
}
