//! A table written by the previous format (before components, checkpoints
//! and byte-encoded skip-index hashes: `tests/fixtures/format_v1`, made by
//! its `gen.sql`) opens and answers exactly as DataFusion does over the
//! same rows, with pruning on and off, before and after a merge rewrites
//! it in the current format, and after new rows join it.

use std::path::Path;

use datafusion::prelude::SessionContext;

/// The fixture's rows in a memory table, as `gen.sql` made them.
async fn oracle() -> SessionContext {
    let ctx = SessionContext::new();
    let rows = |from: i64, to: i64| {
        format!(
            "SELECT value AS id, CAST(value % 7 AS INT) AS k, 'v' || (value % 13) AS s, \
             'word' || (value % 5) || ' other' || (value % 3) AS body, \
             CAST(to_timestamp_seconds(1767225600 + value) AS TIMESTAMP) AS ts \
             FROM range({from}, {to}) WHERE value % 10 <> 3"
        )
    };
    let sql = format!(
        "CREATE TABLE t AS {} UNION ALL {}",
        rows(0, 200),
        rows(1000, 1010)
    );
    crate::common::query(&ctx, &sql).await;
    ctx
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

const QUERIES: &[&str] = &[
    "SELECT * FROM t ORDER BY id",
    "SELECT count(*), sum(id) FROM t",
    "SELECT id, s FROM t WHERE k = 3 ORDER BY id",
    "SELECT id FROM t WHERE s = 'v5' ORDER BY id",
    "SELECT id FROM t WHERE s IN ('v1', 'v12', 'nope') ORDER BY id",
    "SELECT id, body FROM t WHERE body LIKE '%word2 other1%' ORDER BY id",
    "SELECT id FROM t WHERE body = 'word4 other0' ORDER BY id",
    "SELECT count(*) FROM t WHERE id BETWEEN 50 AND 120",
    "SELECT max(ts), min(ts) FROM t WHERE id > 1000",
    "SELECT k, count(*) FROM t GROUP BY k ORDER BY k",
    "SELECT id FROM t ORDER BY id DESC LIMIT 3",
];

async fn answers(ctx: &SessionContext) -> Vec<String> {
    let mut out = Vec::new();
    for sql in QUERIES {
        out.push(crate::common::query(ctx, sql).await);
    }
    out
}

async fn diagon_session(dir: &Path, pruning: bool) -> SessionContext {
    let ctx = crate::common::context(2);
    crate::common::query(&ctx, &format!("SET diagon.enable_pruning = {pruning}")).await;
    crate::common::query(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE t STORED AS DIAGON LOCATION '{}'",
            dir.display()
        ),
    )
    .await;
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_the_previous_format_answers_the_same() {
    let fixture = crate::common::manifest_dir().join("tests/fixtures/format_v1/t");
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    copy_dir(&fixture, &table);
    let want = answers(&oracle().await).await;
    for pruning in [true, false] {
        let ctx = diagon_session(&table, pruning).await;
        assert_eq!(answers(&ctx).await, want, "pruning {pruning}");
    }

    // A merge rewrites it in the current format (components, a new commit
    // format); the answers stay.
    let ctx = diagon_session(&table, true).await;
    crate::common::query(&ctx, "SELECT * FROM diagon_optimize('t', true)").await;
    let parts = crate::common::query(&ctx, "SELECT count(*) FROM diagon_parts('t')").await;
    assert!(parts.contains("| 1 "), "{parts}");
    for pruning in [true, false] {
        let ctx = diagon_session(&table, pruning).await;
        assert_eq!(
            answers(&ctx).await,
            want,
            "after the merge, pruning {pruning}"
        );
    }

    // New rows join old ones in both.
    let insert =
        "INSERT INTO t VALUES (5000, 1, 'v5', 'word2 other1', TIMESTAMP '2026-06-01 00:00:00')";
    let oracle = oracle().await;
    crate::common::query(&oracle, insert).await;
    let ctx = diagon_session(&table, true).await;
    crate::common::query(&ctx, insert).await;
    assert_eq!(answers(&ctx).await, answers(&oracle).await);
}

/// Every storable type's name, as parts and the log record it, parses
/// back to the same type (a reopened table reads its columns by it).
#[test]
fn stored_type_names_parse_back() {
    use arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
    let types = [
        DataType::Decimal32(7, 2),
        DataType::Decimal64(15, 3),
        DataType::Decimal256(50, 4),
        DataType::Interval(IntervalUnit::YearMonth),
        DataType::Interval(IntervalUnit::DayTime),
        DataType::Interval(IntervalUnit::MonthDayNano),
        DataType::FixedSizeBinary(16),
        DataType::Timestamp(TimeUnit::Nanosecond, Some("+02:00".into())),
    ];
    for data_type in types {
        let name = data_type.to_string();
        assert_eq!(
            diagon::part::index::parse_type(&name).unwrap(),
            data_type,
            "{name}"
        );
        assert!(
            diagon::encoding::layout_of(&data_type).is_some(),
            "{name} is storable"
        );
    }
}

/// A table of the previous format (parts without column ids) altered:
/// renamed, added, dropped and widened columns read as the new schema,
/// with pruning on and off (k's set index was hashed as Int32), after a
/// reopen, and after a merge rewrites the parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_the_previous_format_can_be_altered() {
    let fixture = crate::common::manifest_dir().join("tests/fixtures/format_v1/t");
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    copy_dir(&fixture, &table);
    let ctx = diagon_session(&table, true).await;
    let alter = "ALTER TABLE t RENAME COLUMN s TO label, ADD COLUMN extra INT DEFAULT 5, \
                 DROP COLUMN body, ALTER COLUMN k TYPE BIGINT";
    diagon::sql::sql(&ctx, alter).await.unwrap();

    let oracle = oracle().await;
    crate::common::query(
        &oracle,
        "CREATE TABLE altered AS SELECT id, CAST(k AS BIGINT) AS k, s AS label, ts, \
         CAST(5 AS INT) AS extra FROM t",
    )
    .await;
    let queries = [
        "SELECT * FROM {t} ORDER BY id",
        "SELECT id, label FROM {t} WHERE k = 3 ORDER BY id",
        "SELECT id FROM {t} WHERE label = 'v5' AND extra = 5 ORDER BY id",
        "SELECT count(*) AS n, sum(k) AS s, arrow_typeof(max(k)) AS t FROM {t} WHERE k IN (1, 6)",
        "SELECT count(*) FROM {t} WHERE extra IS NULL",
    ];
    let run = |ctx: SessionContext, name: &'static str| async move {
        let mut out = Vec::new();
        for q in queries {
            out.push(crate::common::query(&ctx, &q.replace("{t}", name)).await);
        }
        out
    };
    let want = run(oracle.clone(), "altered").await;
    for pruning in [true, false] {
        let ctx = diagon_session(&table, pruning).await;
        assert_eq!(run(ctx, "t").await, want, "pruning {pruning}");
    }
    let ctx = diagon_session(&table, true).await;
    crate::common::query(&ctx, "SELECT * FROM diagon_optimize('t', true)").await;
    for pruning in [true, false] {
        let ctx = diagon_session(&table, pruning).await;
        assert_eq!(run(ctx, "t").await, want, "merged, pruning {pruning}");
    }
}
