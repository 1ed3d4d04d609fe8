//! Crash safety: a commit interrupted at each write (an I/O error before or
//! after the write lands, and nothing written after it) leaves a table that
//! opens and returns exactly the rows of a committed version.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use diagon::sql::DiagonTableProvider;
use diagon::storage::{Faults, Storage, Strike};
use diagon::{Table, TableOptions};

/// Storage over `dir` through the fault-injection decorator, which here
/// never fails but counts reads.
pub(crate) fn counting_storage(dir: &std::path::Path) -> (Storage, Arc<Faults>) {
    let faults = Faults::none();
    let storage = crate::common::local_storage(dir).with_faults(faults.clone());
    (storage, faults)
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
    ]))
}

fn batch(from: i64, n: i64) -> RecordBatch {
    let ids: Vec<i64> = (from..from + n).rev().collect();
    let strings: Vec<Option<String>> = ids
        .iter()
        .map(|i| (i % 5 != 0).then(|| format!("s{i}")))
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(strings)),
        ],
    )
    .unwrap()
}

async fn sum_and_count(storage: Storage) -> (i64, i64) {
    let table = Table::open("t", storage)
        .await
        .expect("reopen")
        .expect("table exists");
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table)))
        .unwrap();
    let batches = ctx
        .sql("SELECT count(*), coalesce(sum(id), 0), count(s) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let row = &batches[0];
    let count = row
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    let sum = row
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    (count, sum)
}

fn expected(batches: &[(i64, i64)]) -> (i64, i64) {
    let count = batches.iter().map(|(_, n)| n).sum();
    let sum = batches.iter().flat_map(|&(from, n)| from..from + n).sum();
    (count, sum)
}

/// Runs one insert of several parts with a failure at write `fail_at`.
async fn interrupted_insert(
    fail_at: usize,
    strike: Strike,
    min_bytes_for_wide_part: usize,
) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let clean = crate::common::local_storage(dir.path());
    let options = TableOptions {
        order_by: vec!["id".into()],
        granularity: 16,
        insert_block_rows: 100,
        min_bytes_for_wide_part,
        ..TableOptions::default()
    };
    // A committed first version that must survive whatever happens next.
    crate::common::table_with(clean.clone(), schema(), options, &[batch(0, 150)]).await;

    let faults = Faults::failing_at(fail_at, strike);
    let storage = clean.with_faults(faults.clone());
    let table = Table::open("t", storage).await.unwrap().unwrap();
    let mut writer = table.insert();
    let written = writer.write(batch(1000, 250)).await;
    let result = match written {
        Ok(()) => writer.commit().await.map(|_| ()),
        Err(e) => {
            // The statement failed with some of its parts written: a
            // commit, even once the store works again, must not keep
            // those rows and lose the others.
            faults.revive();
            let committed = writer.commit().await;
            assert!(
                committed.is_err(),
                "an insert whose write failed (at write {fail_at}) committed"
            );
            Err(e)
        }
    };
    let reached = faults.writes() > fail_at;

    let old = expected(&[(0, 150)]);
    let new = expected(&[(0, 150), (1000, 250)]);
    let seen = sum_and_count(clean).await;
    match (&result, strike) {
        (Ok(()), _) => assert_eq!(seen, new, "a successful insert is visible"),
        (Err(_), Strike::Before) => {
            assert_eq!(seen, old, "failure at write {fail_at} before it landed")
        }
        (Err(_), Strike::LostReply) => panic!("a landed commit was reported as failed"),
        (Err(_), Strike::After) => assert!(
            seen == old || seen == new,
            "failure at write {fail_at} after it landed left {seen:?}"
        ),
    }
    reached
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_at_any_step_keeps_a_committed_version() {
    // Wide parts write 3 files (2 columns + index), compact ones 2 (data +
    // index); the commit is the last write. Stop once an insert completes
    // without reaching the failure.
    for (wide_from, files_per_part) in [(0, 3), (usize::MAX, 2)] {
        for strike in [Strike::Before, Strike::After] {
            let mut fail_at = 0;
            while interrupted_insert(fail_at, strike, wide_from).await {
                fail_at += 1;
                assert!(fail_at < 100, "insert kept writing");
            }
            assert!(
                fail_at > 3 * files_per_part,
                "expected at least 3 parts and a commit, saw {fail_at} writes"
            );
        }
    }
}

#[tokio::test]
async fn a_second_writer_never_corrupts_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::common::local_storage(dir.path());
    let options = TableOptions {
        order_by: vec!["id".into()],
        ..TableOptions::default()
    };
    crate::common::table_with(storage.clone(), schema(), options, &[]).await;
    // Two handles, as two processes would have, insert concurrently.
    let a = Table::open("t", storage.clone()).await.unwrap().unwrap();
    let b = Table::open("t", storage.clone()).await.unwrap().unwrap();
    let insert = |table: Arc<Table>, from: i64| async move {
        for i in 0..5 {
            let mut writer = table.insert();
            writer.write(batch(from + i * 10, 10)).await.unwrap();
            writer.commit().await.unwrap();
        }
    };
    tokio::join!(insert(a, 0), insert(b, 1000));
    let want = expected(&[(0, 50), (1000, 50)]);
    assert_eq!(sum_and_count(storage).await, want);
}

#[tokio::test]
async fn creating_over_an_existing_table_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::common::local_storage(dir.path());
    crate::common::table_with(
        storage.clone(),
        schema(),
        TableOptions::default(),
        &[batch(0, 3)],
    )
    .await;
    let err = Table::create("t", storage.clone(), schema(), TableOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(sum_and_count(storage).await, expected(&[(0, 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_reply_was_lost_counts_once() {
    // The writer sees AlreadyExists for its own commit, recognises its
    // transaction id in that version, and neither fails nor appends twice.
    assert!(!interrupted_insert(usize::MAX, Strike::LostReply, 0).await);
}

/// The part and mask files under `parts/` of a table directory.
fn part_files(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    let parts = dir.join("parts");
    for part in std::fs::read_dir(&parts).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(part.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            files.push(format!(
                "{}/{}",
                part.file_name().to_string_lossy(),
                file.file_name().to_string_lossy()
            ));
        }
    }
    files.sort();
    files
}

/// Files the newest version references (each part's columns and index, and
/// its deletion mask).
async fn referenced_files(storage: Storage, dir: &std::path::Path) -> Vec<String> {
    let table = Table::open("t", storage).await.unwrap().unwrap();
    let snapshot = table.snapshot().await.unwrap();
    let mut files = Vec::new();
    for entry in &snapshot.parts {
        for file in std::fs::read_dir(dir.join("parts").join(&entry.name))
            .unwrap()
            .flatten()
        {
            let name = file.file_name().to_string_lossy().to_string();
            let is_mask = name.starts_with("del_");
            let live_mask = entry.deletes.as_ref().is_some_and(|d| d.file == name);
            if !is_mask || live_mask {
                files.push(format!("{}/{name}", entry.name));
            }
        }
    }
    files.sort();
    files
}

/// A merge (with a deletion to purge) interrupted at write `fail_at`.
async fn interrupted_merge(fail_at: usize, strike: Strike) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let clean = crate::common::local_storage(dir.path());
    let options = TableOptions {
        order_by: vec!["id".into()],
        granularity: 16,
        old_parts_lifetime: 0,
        merge: diagon::MergeOptions {
            background: false,
            ..Default::default()
        },
        ..TableOptions::default()
    };
    let batches = [batch(0, 100), batch(500, 60), batch(900, 40)];
    let table = crate::common::table_with(clean.clone(), schema(), options, &batches).await;
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table)))
        .unwrap();
    crate::common::query(&ctx, "DELETE FROM t WHERE id >= 900").await;

    let faults = Faults::failing_at(fail_at, strike);
    let storage = clean.with_faults(faults.clone());
    let table = Table::open("t", storage).await.unwrap().unwrap();
    let _ = table.optimize(true).await;
    let reached = faults.writes() > fail_at;

    // Whatever happened, the rows are those of the last committed version.
    let seen = sum_and_count(clean.clone()).await;
    assert_eq!(
        seen,
        expected(&[(0, 100), (500, 60)]),
        "merge failed at write {fail_at}"
    );
    // And a reopen's cleanup leaves exactly the referenced files.
    let reopened = Table::open("t", clean.clone()).await.unwrap().unwrap();
    reopened.collect_garbage().await.unwrap();
    assert_eq!(
        part_files(dir.path()),
        referenced_files(clean, dir.path()).await,
        "garbage left after a merge failed at write {fail_at} ({strike:?})"
    );
    reached
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_failing_at_any_step_loses_nothing_and_leaves_no_garbage() {
    for strike in [Strike::Before, Strike::After] {
        let mut fail_at = 0;
        while interrupted_merge(fail_at, strike).await {
            fail_at += 1;
            assert!(fail_at < 100, "merge kept writing");
        }
        assert!(
            fail_at >= 3,
            "a merge writes its data, an index and a commit"
        );
    }
}

/// Parts replaced by a merge stay on disk while a reader planned on the old
/// version is alive, and go once it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_parts_outlive_their_last_reader() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::common::local_storage(dir.path());
    let options = TableOptions {
        order_by: vec!["id".into()],
        old_parts_lifetime: 0,
        min_bytes_for_wide_part: 0,
        merge: diagon::MergeOptions {
            background: false,
            ..Default::default()
        },
        ..TableOptions::default()
    };
    let batches = [batch(0, 50), batch(100, 50)];
    let table = crate::common::table_with(storage, schema(), options, &batches).await;
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table.clone())))
        .unwrap();
    // Planned (snapshot pinned) before the merge, executed after it.
    let pending = ctx
        .sql("SELECT sum(id) FROM t WHERE id >= 0")
        .await
        .unwrap();
    let plan = pending.create_physical_plan().await.unwrap();
    let before = part_files(dir.path());
    table.optimize(true).await.unwrap();
    assert!(
        before.iter().all(|f| part_files(dir.path()).contains(f)),
        "a pinned reader's parts were deleted"
    );
    let out = datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx())
        .await
        .unwrap();
    let expected_sum: i64 = (0..50).chain(100..150).sum();
    let sum = out[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(sum, expected_sum);
    drop(plan);
    table.collect_garbage().await.unwrap();
    assert_eq!(
        part_files(dir.path()).len(),
        3,
        "one part: two columns and an index"
    );
}

/// Readers in other processes are protected only by time: a replaced part
/// stays until it has been unreferenced for `old_parts_lifetime`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_parts_wait_for_old_parts_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::common::local_storage(dir.path());
    let options = TableOptions {
        order_by: vec!["id".into()],
        old_parts_lifetime: 3600,
        merge: diagon::MergeOptions {
            background: false,
            ..Default::default()
        },
        ..TableOptions::default()
    };
    let batches = [batch(0, 50), batch(100, 50)];
    let table = crate::common::table_with(storage, schema(), options, &batches).await;
    let before = part_files(dir.path());
    table.optimize(true).await.unwrap();
    assert_eq!(table.collect_garbage().await.unwrap(), 0);
    let after = part_files(dir.path());
    assert!(
        before.iter().all(|f| after.contains(f)),
        "replaced parts deleted early"
    );
    assert_eq!(
        sum_and_count(crate::common::local_storage(dir.path()))
            .await
            .0,
        100
    );
}

/// With background merges on (the default), inserts past the policy's
/// threshold are merged without anyone asking, and no row is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_merges_bound_the_part_count() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::common::local_storage(dir.path());
    let options = TableOptions {
        order_by: vec!["id".into()],
        merge: diagon::MergeOptions {
            parts_per_merge: 4,
            ..Default::default()
        },
        ..TableOptions::default()
    };
    let batches: Vec<RecordBatch> = (0..12).map(|i| batch(i * 100, 100)).collect();
    let table = crate::common::table_with(storage, schema(), options, &batches).await;
    let mut parts = usize::MAX;
    for _ in 0..100 {
        parts = table.snapshot().await.unwrap().parts.len();
        if parts < 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(parts < 4, "12 inserts left {parts} parts");
    let all: Vec<(i64, i64)> = (0..12).map(|i| (i * 100, 100)).collect();
    assert_eq!(
        sum_and_count(crate::common::local_storage(dir.path())).await,
        expected(&all)
    );
}

/// A DROP TABLE interrupted after its marker (the process died while a plan
/// still held the table) is finished when the data directory is next opened,
/// and a table created in the meantime under the same name is kept.
#[tokio::test]
async fn an_interrupted_drop_is_finished_at_the_next_open() {
    use datafusion::prelude::SessionContext;
    let dir = tempfile::tempdir().unwrap();
    let ctx = SessionContext::new();
    diagon::sql::use_data_dir(&ctx, dir.path()).unwrap();
    ctx.sql("CREATE TABLE t AS VALUES (1), (2)").await.unwrap();
    // Hold the table the way a running plan does, then drop and recreate it.
    let held = ctx.table_provider("t").await.unwrap();
    ctx.sql("DROP TABLE t").await.unwrap();
    ctx.sql("CREATE TABLE t AS VALUES (3)").await.unwrap();
    let home = dir.path().join("public/t");
    let entries = |path: &std::path::Path| std::fs::read_dir(path).unwrap().count();
    assert_eq!(entries(&home), 3, "old table, its marker, new table");
    // The process "dies" with the plan still holding the old table.
    std::mem::forget(held);

    let ctx = SessionContext::new();
    diagon::sql::use_data_dir(&ctx, dir.path()).unwrap();
    assert_eq!(entries(&home), 1, "the dropped table is swept at open");
    let rows = ctx
        .sql("SELECT * FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let values: Vec<String> = datafusion::arrow::util::pretty::pretty_format_batches(&rows)
        .unwrap()
        .to_string()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(values.iter().any(|l| l.contains("| 3 ")), "{values:?}");
    assert!(!values.iter().any(|l| l.contains("| 1 ")), "{values:?}");
}

/// An ALTER TABLE interrupted at each of its writes (the commit, and a
/// checkpoint when one is due), by each kind of failure: the table opens
/// with either schema, never a mix, and its rows are intact; the ALTER
/// then succeeds once the store works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_alter_leaves_either_schema() {
    use diagon::table::alter::SchemaChange;
    for strike in [Strike::Before, Strike::After, Strike::LostReply] {
        for fail_at in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let clean = crate::common::local_storage(dir.path());
            let options = TableOptions {
                order_by: vec!["id".into()],
                checkpoint_interval: 2,
                ..TableOptions::default()
            };
            crate::common::table_with(clean.clone(), schema(), options, &[batch(0, 100)]).await;
            let faults = Faults::failing_at(fail_at, strike);
            let table = Table::open("t", clean.with_faults(faults.clone()))
                .await
                .unwrap()
                .unwrap();
            let change = SchemaChange::RenameColumn {
                from: "s".into(),
                to: "label".into(),
            };
            let result = table.alter(&change).await;
            let reopened = Table::open("t", clean.clone()).await.unwrap().unwrap();
            let names: Vec<String> = reopened
                .snapshot()
                .await
                .unwrap()
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            let renamed = names == ["id", "label"];
            assert!(
                renamed || names == ["id", "s"],
                "{strike:?} at write {fail_at}: columns {names:?}"
            );
            if result.is_ok() {
                assert!(
                    renamed,
                    "{strike:?} at write {fail_at}: a reported ALTER is lost"
                );
            }
            assert_eq!(rows_of(clean.clone()).await, (100, 4950));
            if !renamed {
                reopened.alter(&change).await.unwrap();
                assert_eq!(rows_of(clean).await, (100, 4950));
            }
        }
    }
}

/// The row count and the sum of `id`, whatever the other columns are called.
async fn rows_of(storage: Storage) -> (i64, i64) {
    let table = Table::open("t", storage).await.unwrap().unwrap();
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table)))
        .unwrap();
    let batches = ctx
        .sql("SELECT count(*), sum(id) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let value = |c: usize| {
        batches[0]
            .column(c)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    };
    (value(0), value(1))
}
