//! The commit log with checkpoints: open reads the newest checkpoint and
//! the commits after it without listing; a checkpoint interrupted at any
//! write loses nothing; cleanup keeps what an open needs, and a damaged
//! checkpoint falls back to the one before it.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use diagon::encoding::envelope::{self, FileKind};
use diagon::storage::{Faults, Storage, Strike};
use diagon::{Table, TableOptions};
use serde_json::Value;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

fn options(checkpoint_interval: u64, log_retention: u64) -> TableOptions {
    TableOptions {
        order_by: vec!["id".into()],
        checkpoint_interval,
        log_retention,
        old_parts_lifetime: 0,
        merge: diagon::MergeOptions {
            background: false,
            ..Default::default()
        },
        ..TableOptions::default()
    }
}

async fn insert(table: &Arc<Table>, ids: std::ops::Range<i64>) -> diagon::Result<u64> {
    let batch =
        RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from_iter_values(ids))]).unwrap();
    let mut writer = table.insert();
    writer.write(batch).await?;
    writer.commit().await
}

/// Rows of the table as a fresh open sees them.
async fn rows(storage: Storage) -> u64 {
    let table = Table::open("t", storage).await.unwrap().expect("a table");
    table
        .snapshot()
        .await
        .unwrap()
        .parts
        .iter()
        .map(|p| p.live_rows())
        .sum()
}

fn log_files(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir.join("_log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.'))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reads_the_newest_checkpoint_without_listing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::common::local_storage(dir.path());
    let table = Table::create("t", storage, schema(), options(100, 3600))
        .await
        .unwrap();
    for i in 0..250 {
        insert(&table, i..i + 1).await.unwrap();
    }
    let files = log_files(dir.path());
    assert!(files.contains(&"00000000000000000200.checkpoint".to_string()));
    assert!(files.contains(&"_last_checkpoint".to_string()));

    let (storage, faults) = crate::crash::counting_storage(dir.path());
    let opened = Table::open("t", storage).await.unwrap().unwrap();
    assert_eq!(opened.cached_snapshot().version, 250);
    assert_eq!(faults.lists(), 0, "the log was listed");
    // The pointer, the checkpoint and the 50 commits after it.
    assert_eq!(faults.reads(), 52);
    assert_eq!(
        opened.cached_snapshot().parts,
        table.snapshot().await.unwrap().parts
    );
}

/// One insert whose commit is due a checkpoint, failing at write `fail_at`.
async fn interrupted_checkpoint(fail_at: usize, strike: Strike) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let clean = crate::common::local_storage(dir.path());
    let table = Table::create("t", clean.clone(), schema(), options(2, 3600))
        .await
        .unwrap();
    insert(&table, 0..10).await.unwrap();

    let faults = Faults::failing_at(fail_at, strike);
    let table = Table::open("t", clean.with_faults(faults.clone()))
        .await
        .unwrap()
        .unwrap();
    let result = insert(&table, 10..30).await;
    let reached = faults.writes() > fail_at;

    let seen = rows(clean.clone()).await;
    match (&result, strike) {
        (Ok(_), _) => assert_eq!(seen, 30, "write {fail_at}: a successful insert is visible"),
        (Err(_), Strike::Before) => assert_eq!(seen, 10, "write {fail_at} failed before landing"),
        (Err(_), _) => assert!(seen == 10 || seen == 30, "write {fail_at} left {seen} rows"),
    }
    // Whatever the checkpoint's fate, the table goes on: later commits
    // (which write the missing checkpoint) and opens see every row.
    let table = Table::open("t", clean.clone()).await.unwrap().unwrap();
    for i in 0..3 {
        insert(&table, 100 + i..101 + i).await.unwrap();
    }
    assert_eq!(rows(clean.clone()).await, seen + 3);
    reached
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_interrupted_at_any_write_loses_nothing() {
    for strike in [Strike::Before, Strike::After] {
        let mut fail_at = 0;
        while interrupted_checkpoint(fail_at, strike).await {
            fail_at += 1;
            assert!(fail_at < 50, "the insert kept writing");
        }
        // Data and index of the part, the commit, the checkpoint, the pointer.
        assert!(fail_at >= 5, "only {fail_at} writes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_keeps_what_opening_needs() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::common::local_storage(dir.path());
    let table = Table::create("t", storage.clone(), schema(), options(10, 0))
        .await
        .unwrap();
    // A second handle, as another process would hold, left behind.
    let other = Table::open("t", storage.clone()).await.unwrap().unwrap();
    for i in 0..35 {
        insert(&table, i..i + 1).await.unwrap();
    }
    table.collect_garbage().await.unwrap();
    let files = log_files(dir.path());
    // Checkpoints 20 and 30, every commit from 20 on, the pointer.
    let commits: Vec<&String> = files.iter().filter(|f| f.ends_with(".commit")).collect();
    assert_eq!(commits.len(), 16, "{files:?}");
    assert!(commits[0].starts_with("00000000000000000020"), "{files:?}");
    assert!(!files.iter().any(|f| f.starts_with("00000000000000000010.")));
    assert_eq!(rows(storage.clone()).await, 35);

    // The stale handle's commits are gone; it finds the newest state anyway.
    assert_eq!(other.snapshot().await.unwrap().version, 35);

    // A damaged newest checkpoint: the older one and its commits serve.
    let newest = dir.path().join("_log/00000000000000000030.checkpoint");
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&newest, bytes).unwrap();
    assert_eq!(rows(storage.clone()).await, 35);
}

/// Rewrites the log file `file` of `dir` with `change` applied to its JSON,
/// sealed again so that only its content is wrong.
fn craft(dir: &std::path::Path, file: &str, kind: FileKind, change: impl Fn(&mut Value)) {
    let path = dir.join("_log").join(file);
    let bytes = std::fs::read(&path).unwrap();
    let body = envelope::open(file, kind, &bytes).unwrap();
    let mut json: Value = serde_json::from_slice(body).unwrap();
    change(&mut json);
    let body = serde_json::to_vec(&json).unwrap();
    std::fs::write(&path, envelope::seal(kind, &body)).unwrap();
}

/// Points the first part name in `json` at a file outside the table.
fn escape_name(json: &mut Value) {
    fn walk(value: &mut Value) -> bool {
        match value {
            Value::Object(map) if map.contains_key("name") && map.contains_key("rows") => {
                map.insert("name".into(), Value::from("../escape"));
                true
            }
            Value::Object(map) => map.values_mut().any(walk),
            Value::Array(items) => items.iter_mut().any(walk),
            _ => false,
        }
    }
    assert!(walk(json), "no part entry in {json}");
}

fn bump_version(json: &mut Value) {
    let version = json["version"].as_u64().unwrap();
    json["version"] = Value::from(version + 1);
}

/// A commit crafted to name a file outside the table, or to hold another
/// version than its name says, is refused naming the file; a crafted
/// checkpoint is passed over for the commits it summarised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_log_files_are_refused() {
    let expectations = [
        (
            escape_name as fn(&mut Value),
            "invalid part or file name '../escape'",
        ),
        (bump_version, "holds version 5, expected 4"),
    ];
    for (change, message) in expectations {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::common::local_storage(dir.path());
        let table = Table::create("t", storage.clone(), schema(), options(2, 3600))
            .await
            .unwrap();
        for i in 0..4 {
            insert(&table, i * 10..i * 10 + 10).await.unwrap();
        }
        let files = log_files(dir.path());
        assert!(files.contains(&"00000000000000000004.checkpoint".to_string()));
        assert!(files.contains(&"00000000000000000002.checkpoint".to_string()));

        // The newest checkpoint crafted: the one before and its commits serve.
        craft(
            dir.path(),
            "00000000000000000004.checkpoint",
            FileKind::Checkpoint,
            change,
        );
        assert_eq!(rows(storage.clone()).await, 40);

        // The newest commit crafted: nothing can serve version 4.
        craft(
            dir.path(),
            "00000000000000000004.commit",
            FileKind::Commit,
            change,
        );
        let error = match Table::open("t", storage.clone()).await {
            Err(e) => e,
            Ok(_) => panic!("a table opened over a crafted commit"),
        };
        assert!(error.is_corruption(), "{error}");
        let text = error.to_string();
        assert!(text.contains("00000000000000000004.commit"), "{text}");
        assert!(text.contains(message), "{text}");
    }
}

/// Cleanup lists the log only when it can delete something: after a new
/// checkpoint, or once a file kept for its age has aged out; not after
/// every merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_lists_the_log_only_when_it_can_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, faults) = crate::crash::counting_storage(dir.path());
    let started = std::time::Instant::now();
    let table = Table::create("t", storage.clone(), schema(), options(10, 2))
        .await
        .unwrap();
    for i in 0..22 {
        insert(&table, i..i + 1).await.unwrap();
    }
    let old_commits = |dir: &std::path::Path| {
        log_files(dir)
            .iter()
            .filter(|f| f.as_str() < "00000000000000000010")
            .count()
    };
    let gc = || async {
        let before = faults.lists();
        table.collect_garbage().await.unwrap();
        faults.lists() - before
    };
    let first = gc().await; // the part directories and the log
    let young = started.elapsed() < std::time::Duration::from_millis(1500);
    if young {
        assert!(
            old_commits(dir.path()) > 0,
            "deleted before their retention"
        );
        assert_eq!(gc().await, first - 1, "the log was listed again");
    }
    // Aged out: the next cleanup lists the log and deletes them.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(gc().await, first);
    assert_eq!(old_commits(dir.path()), 0, "{:?}", log_files(dir.path()));
    assert_eq!(gc().await, first - 1, "nothing left to age out");
    // A new checkpoint makes cleanup due again.
    for i in 22..30 {
        insert(&table, i..i + 1).await.unwrap();
    }
    assert_eq!(gc().await, first);
    assert_eq!(rows(storage).await, 30);
}

/// Background cleanup (after each merge) lists the part directories at
/// most once per period when replaced parts are kept a while, and every
/// time when they are kept no time at all; the log is cleaned whenever a
/// new checkpoint lets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_cleanup_is_periodic_when_parts_are_kept() {
    for (lifetime, expected) in [(3600, 0), (0, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let (storage, faults) = crate::crash::counting_storage(dir.path());
        let mut options = options(4, 0);
        options.old_parts_lifetime = lifetime;
        let table = Table::create("t", storage.clone(), schema(), options)
            .await
            .unwrap();
        for i in 0..9 {
            insert(&table, i..i + 1).await.unwrap();
        }
        table.collect_garbage_when_due().await.unwrap();
        let commits = |below: &str| {
            log_files(dir.path())
                .into_iter()
                .filter(|f| f.ends_with(".commit") && f.as_str() < below)
                .count()
        };
        assert_eq!(commits("00000000000000000004"), 0);
        let before = faults.lists();
        table.collect_garbage_when_due().await.unwrap();
        assert_eq!(faults.lists() - before, expected, "lifetime {lifetime}");

        // Checkpoint 12: the log is listed and cleaned, whatever the period.
        for i in 9..12 {
            insert(&table, i..i + 1).await.unwrap();
        }
        assert!(commits("00000000000000000008") > 0);
        let before = faults.lists();
        table.collect_garbage_when_due().await.unwrap();
        assert_eq!(faults.lists() - before, expected + 1, "lifetime {lifetime}");
        assert_eq!(commits("00000000000000000008"), 0, "lifetime {lifetime}");
        assert_eq!(rows(storage).await, 12);
    }
}

/// The log of an altered table is format 2, which builds before ALTER
/// TABLE refuse (they would read parts by position and drop the column
/// ids); a table never altered keeps format 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_table_writes_a_log_older_builds_refuse() {
    use diagon::table::alter::SchemaChange;
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Int64, true),
    ]));
    let table = Table::create(
        "t",
        crate::common::local_storage(dir.path()),
        schema,
        TableOptions::default(),
    )
    .await
    .unwrap();
    let version_of = |v: u64| {
        let file = dir.path().join(format!("_log/{v:020}.commit"));
        let bytes = std::fs::read(file).unwrap();
        u16::from_le_bytes([bytes[8], bytes[9]])
    };
    assert_eq!(version_of(0), 1);
    let altered = table
        .alter(&SchemaChange::DropColumn { name: "b".into() })
        .await
        .unwrap();
    assert_eq!(version_of(altered), 2);

    // A change of options racing the ALTER (a reopen adding a skip index
    // to the dropped column) is refused before anything is written; the
    // table still opens.
    let spec: diagon::index::skip::SkipSpec = "set(10)".parse().unwrap();
    let error = table
        .add_skip_indexes(&[("b".to_string(), spec)])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("'b'"), "{error}");
    let reopened = Table::open("t", crate::common::local_storage(dir.path()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reopened.snapshot().await.unwrap().version, altered);
}
