//! The cold tier against an S3 server on loopback: parts move to object
//! storage and back by hand and by policy, queries answer the same in any
//! mix of tiers, a move interrupted at any write loses nothing and leaves
//! nothing cleanup cannot find, and a failing store gives errors that name
//! what failed, never partial answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::prelude::SessionContext;
use diagon::sql::DiagonTableProvider;
use diagon::storage::{Faults, Storage, Strike};
use diagon::table::tier::Tier;
use diagon::{Table, TableOptions};

use crate::s3::{Fault, FaultKind, S3Server};

const DAY_MS: i64 = 86_400_000;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

/// Rows `from..from + n`, dated `ts_ms` and after.
fn batch(from: i64, n: i64, ts_ms: i64) -> RecordBatch {
    let ids: Vec<i64> = (from..from + n).collect();
    let strings: Vec<Option<String>> = ids
        .iter()
        .map(|i| (i % 7 != 0).then(|| format!("row {i} {}", "x".repeat((*i % 13) as usize))))
        .collect();
    let ts: Vec<i64> = ids.iter().map(|i| ts_ms + (i - from)).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(strings)),
            Arc::new(TimestampMillisecondArray::from(ts)),
        ],
    )
    .unwrap()
}

fn options(extra: &[(&str, &str)]) -> TableOptions {
    let mut map: HashMap<String, String> = [
        ("order_by", "id"),
        ("granularity", "256"),
        ("old_parts_lifetime", "0"),
        ("merge.background", "false"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    map.retain(|_, v| !v.is_empty());
    TableOptions::parse(&map, &schema()).unwrap()
}

/// Inserts each batch as its own part.
async fn insert(table: &Arc<Table>, batches: &[RecordBatch]) {
    for batch in batches {
        let mut writer = table.insert();
        writer.write(batch.clone()).await.unwrap();
        writer.commit().await.unwrap();
    }
}

/// Five parts, the first dated ten days ago, each a day later.
fn five_batches(now_ms: i64) -> Vec<RecordBatch> {
    (0..5)
        .map(|i| batch(i * 3_000, 3_000, now_ms - (10 - i) * DAY_MS))
        .collect()
}

/// The cold storage of `server` at `prefix`.
fn cold(server: &S3Server, prefix: &str) -> Storage {
    Storage::new(
        server.store(),
        object_store::path::Path::from(prefix),
        server.url(prefix),
    )
}

/// A table in a fresh local directory with its cold location at `prefix`
/// of `server` (and `extra` options), attached.
struct Tiered {
    dir: tempfile::TempDir,
    local: Storage,
    url: String,
    table: Arc<Table>,
}

async fn tiered(server: &S3Server, prefix: &str, extra: &[(&str, &str)]) -> Tiered {
    let dir = tempfile::tempdir().unwrap();
    let url = server.url(prefix);
    let local = Storage::local(dir.path()).unwrap();
    let mut all = vec![("cold_location", url.as_str())];
    all.extend_from_slice(extra);
    let table = Table::create("t", local.clone(), schema(), options(&all))
        .await
        .unwrap();
    table.attach_location(&url, cold(server, prefix));
    Tiered {
        dir,
        local,
        url,
        table,
    }
}

const QUERIES: &[&str] = &[
    "SELECT count(*), sum(id), count(s), min(ts), max(ts) FROM t",
    "SELECT id, s FROM t WHERE id BETWEEN 2990 AND 3010 ORDER BY id",
    "SELECT id FROM t WHERE s LIKE '%xxxxxxxxxxxx' ORDER BY id DESC LIMIT 7",
    "SELECT length(s) AS l, count(*) FROM t GROUP BY l ORDER BY l",
    "SELECT * FROM t ORDER BY id LIMIT 3",
];

/// Every query's answer.
async fn answers(table: &Arc<Table>) -> Vec<String> {
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table.clone())))
        .unwrap();
    let mut out = Vec::new();
    for sql in QUERIES {
        out.push(crate::common::query(&ctx, sql).await);
    }
    out
}

/// The tier of each live part, by name.
async fn tiers(table: &Table) -> Vec<(String, Tier)> {
    let snapshot = table.snapshot().await.unwrap();
    snapshot
        .parts
        .iter()
        .map(|p| (p.name.clone(), Tier::of(p)))
        .collect()
}

/// The parts with files in `storage` (under `parts/`, or a move's
/// `moved/<id>/parts/`), by name, once per directory.
async fn part_dirs(storage: &Storage) -> Vec<String> {
    let mut files = storage.list("parts").await.unwrap();
    files.extend(storage.list("moved").await.unwrap());
    let mut dirs: Vec<(String, String)> = files
        .into_iter()
        .filter_map(|f| {
            let (dir, rest) = f.name.split_once("parts/")?;
            let name = rest.split('/').next()?;
            Some((dir.to_string(), name.to_string()))
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut names: Vec<String> = dirs.into_iter().map(|(_, name)| name).collect();
    names.sort();
    names
}

/// Checks that each tier holds exactly the directories of its live parts.
async fn assert_no_strays(table: &Table, local: &Storage, cold: &Storage) {
    let snapshot = table.snapshot().await.unwrap();
    let mut hot: Vec<String> = Vec::new();
    let mut cold_parts: Vec<String> = Vec::new();
    for p in &snapshot.parts {
        match Tier::of(p) {
            Tier::Hot => hot.push(p.name.clone()),
            Tier::Cold => cold_parts.push(p.name.clone()),
        }
    }
    hot.sort();
    cold_parts.sort();
    assert_eq!(part_dirs(local).await, hot, "local part directories");
    assert_eq!(part_dirs(cold).await, cold_parts, "cold part directories");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_move_cold_and_back_with_the_same_answers() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local = Storage::local(dir.path()).unwrap();
    let url = server.url("t1");
    let now = diagon::table::log::now_ms();
    let table = Table::create(
        "t",
        local.clone(),
        schema(),
        options(&[("cold_location", &url)]),
    )
    .await
    .unwrap();
    table.attach_location(&url, cold(&server, "t1"));
    insert(&table, &five_batches(now)).await;
    let expected = answers(&table).await;

    // Two parts by name.
    let names: Vec<String> = tiers(&table).await.into_iter().map(|(n, _)| n).collect();
    let moved = table
        .move_parts(Tier::Cold, Some(&names[1..3]))
        .await
        .unwrap();
    assert_eq!(moved.parts, 2);
    assert!(moved.bytes > 0);
    let now_tiers = tiers(&table).await;
    assert_eq!(
        now_tiers.iter().map(|t| t.1).collect::<Vec<_>>(),
        [Tier::Hot, Tier::Cold, Tier::Cold, Tier::Hot, Tier::Hot]
    );
    assert_eq!(answers(&table).await, expected, "two parts cold");
    assert_no_strays(&table, &local, &cold(&server, "t1")).await;
    // The server holds the moved parts' files.
    assert!(
        server
            .files("t1")
            .iter()
            .any(|f| f.starts_with("t1/moved/") && f.contains(&format!("/parts/{}/", names[1])))
    );

    // A reopen finds them there.
    let reopened = Table::open("t", local.clone()).await.unwrap().unwrap();
    reopened.attach_location(&url, cold(&server, "t1"));
    assert_eq!(answers(&reopened).await, expected, "reopened");

    // Everything cold; moving again does nothing.
    assert_eq!(table.move_parts(Tier::Cold, None).await.unwrap().parts, 3);
    assert_eq!(table.move_parts(Tier::Cold, None).await.unwrap().parts, 0);
    assert_eq!(answers(&table).await, expected, "all cold");
    assert_no_strays(&table, &local, &cold(&server, "t1")).await;

    // A DELETE touching cold parts writes their masks beside them; inserts
    // stay local.
    let ctx = SessionContext::new();
    diagon::register(&ctx);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table.clone())))
        .unwrap();
    crate::common::query(&ctx, "DELETE FROM t WHERE id % 10 = 3").await;
    insert(&table, &[batch(20_000, 500, now)]).await;
    let after_delete = answers(&table).await;
    assert_ne!(after_delete, expected);
    let snapshot = table.snapshot().await.unwrap();
    assert_eq!(
        snapshot
            .parts
            .iter()
            .filter(|p| p.deletes.is_some())
            .count(),
        5
    );
    assert_eq!(Tier::of(snapshot.parts.last().unwrap()), Tier::Hot);

    // And back: the masks come along.
    assert_eq!(table.move_parts(Tier::Hot, None).await.unwrap().parts, 5);
    assert_eq!(answers(&table).await, after_delete, "all hot again");
    assert_no_strays(&table, &local, &cold(&server, "t1")).await;
    // Only the marker naming the table the location belongs to is left.
    assert_eq!(server.files("t1"), ["t1/_diagon_table"]);

    // Errors name what is wrong.
    let err = table
        .move_parts(Tier::Cold, Some(&["p_nope".to_string()]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("p_nope") && err.contains("'t'"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_moves_parts_by_age_and_by_local_bytes() {
    let server = S3Server::start().await;
    let now = diagon::table::log::now_ms();

    // By the newest row of a time column: parts older than 7 days.
    let dir = tempfile::tempdir().unwrap();
    let url = server.url("by_time");
    let table = Table::create(
        "t",
        Storage::local(dir.path()).unwrap(),
        schema(),
        options(&[
            ("cold_location", &url),
            ("move_after", "7d"),
            ("move_time_column", "ts"),
        ]),
    )
    .await
    .unwrap();
    table.attach_location(&url, cold(&server, "by_time"));
    insert(&table, &five_batches(now)).await;
    let expected = answers(&table).await;
    // Inserts start the policy in the background too: whichever ran, the
    // parts dated 10, 9 and 8 days ago moved.
    table.move_by_policy().await.unwrap();
    let t: Vec<Tier> = tiers(&table).await.into_iter().map(|t| t.1).collect();
    assert_eq!(
        t,
        [Tier::Cold, Tier::Cold, Tier::Cold, Tier::Hot, Tier::Hot]
    );
    assert_eq!(answers(&table).await, expected);
    assert_eq!(table.move_by_policy().await.unwrap().parts, 0);

    // By commit age: every part was committed just now.
    let Tiered {
        dir: _dir,
        local: _local,
        url: _url,
        table,
    } = tiered(&server, "by_commit", &[("move_after", "1h")]).await;
    insert(&table, &five_batches(now)).await;
    assert_eq!(table.move_by_policy().await.unwrap().parts, 0);

    // By local bytes: the oldest move until the rest fits.
    let Tiered {
        dir: _dir,
        local: _local,
        url: _url,
        table,
    } = tiered(&server, "by_bytes", &[]).await;
    insert(&table, &five_batches(now)).await;
    let snapshot = table.snapshot().await.unwrap();
    let sizes: Vec<u64> = snapshot.parts.iter().map(|p| p.bytes).collect();
    let limit = sizes[3] + sizes[4];
    let mut tiers_options = snapshot.options.tiers.clone();
    tiers_options.move_when_local_bytes_above = Some(limit);
    table.set_tiers(tiers_options).await.unwrap();
    assert_eq!(table.move_by_policy().await.unwrap().parts, 3);
    let t: Vec<Tier> = tiers(&table).await.into_iter().map(|t| t.1).collect();
    assert_eq!(
        t,
        [Tier::Cold, Tier::Cold, Tier::Cold, Tier::Hot, Tier::Hot]
    );

    // In the background, checked periodically.
    let Tiered {
        dir: _dir,
        local: _local,
        url: _url,
        table,
    } = tiered(&server, "background", &[("move_after", "0s")]).await;
    insert(&table, &five_batches(now)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tiers(&table).await.iter().any(|t| t.1 == Tier::Hot) {
        assert!(
            std::time::Instant::now() < deadline,
            "the background mover did not move every part"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A move interrupted at each of its writes (the process dies there: the
/// write and everything after it fail), in both directions: on reopen the
/// table answers as before, and a cleanup leaves each tier holding exactly
/// its live parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_interrupted_at_any_write_loses_nothing() {
    let server = S3Server::start().await;
    let now = diagon::table::log::now_ms();
    for to in [Tier::Cold, Tier::Hot] {
        for strike in [Strike::Before, Strike::After] {
            let mut n = 0;
            loop {
                let dir = tempfile::tempdir().unwrap();
                let prefix = format!("crash_{}_{strike:?}_{n}", to.name());
                let url = server.url(&prefix);
                let local = Storage::local(dir.path()).unwrap();
                let table = Table::create(
                    "t",
                    local.clone(),
                    schema(),
                    options(&[("cold_location", &url)]),
                )
                .await
                .unwrap();
                table.attach_location(&url, cold(&server, &prefix));
                insert(&table, &five_batches(now)[..2]).await;
                if to == Tier::Hot {
                    table.move_parts(Tier::Cold, None).await.unwrap();
                }
                let expected = answers(&table).await;
                drop(table);

                // The dying process: both tiers through one set of faults.
                let faults = Faults::none();
                let dying = Table::open("t", local.with_faults(faults.clone()))
                    .await
                    .unwrap()
                    .unwrap();
                dying.attach_location(&url, cold(&server, &prefix).with_faults(faults.clone()));
                faults.fail_from(faults.writes() + n, strike);
                let result = dying.move_parts(to, None).await;
                let died = faults.is_dead();
                drop(dying);

                let table = Table::open("t", local.clone()).await.unwrap().unwrap();
                table.attach_location(&url, cold(&server, &prefix));
                assert_eq!(
                    answers(&table).await,
                    expected,
                    "move to {} interrupted at write {n} ({strike:?})",
                    to.name()
                );
                table.collect_garbage().await.unwrap();
                assert_no_strays(&table, &local, &cold(&server, &prefix)).await;
                if !died {
                    result.unwrap();
                    let all_there = tiers(&table).await.iter().all(|t| t.1 == to);
                    assert!(all_there, "a move that met no fault moved everything");
                    break;
                }
                n += 1;
            }
            assert!(n > 4, "the moves wrote only {n} times");
        }
    }
}

/// A store failing or unreachable: moves and cold reads fail with errors
/// naming the table, part and location after bounded retries, never with
/// partial answers; inserts, which are local, go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_gives_errors_not_partial_answers() {
    let server = S3Server::start().await;
    let now = diagon::table::log::now_ms();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url("faults");
    let local = Storage::local(dir.path()).unwrap();
    let table = Table::create(
        "t",
        local.clone(),
        schema(),
        options(&[("cold_location", &url)]),
    )
    .await
    .unwrap();
    let store = server.store_with(2, Duration::from_millis(500));
    table.attach_location(
        &url,
        Storage::new(store, object_store::path::Path::from("faults"), url.clone()),
    );
    insert(&table, &five_batches(now)).await;
    let expected = answers(&table).await;
    let names: Vec<String> = tiers(&table).await.into_iter().map(|(n, _)| n).collect();

    // Every PUT fails: the move fails, naming table, part and location.
    server
        .control
        .inject(Fault::new(Some("PUT"), "/faults/", FaultKind::Status(503)));
    let err = table
        .move_parts(Tier::Cold, Some(&names[..1]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'t'") && err.contains(&names[0]) && err.contains(&url),
        "{err}"
    );
    server.control.clear_faults();
    assert!(tiers(&table).await.iter().all(|t| t.1 == Tier::Hot));
    assert_eq!(answers(&table).await, expected);

    // Moved; then every GET hangs past the client's timeout.
    table
        .move_parts(Tier::Cold, Some(&names[..2]))
        .await
        .unwrap();
    server.control.inject(Fault::new(
        Some("GET"),
        "/faults/",
        FaultKind::Hang(Duration::from_secs(3)),
    ));
    let reopened = Table::open("t", local.clone()).await.unwrap().unwrap();
    reopened.attach_location(
        &url,
        Storage::new(
            server.store_with(1, Duration::from_millis(300)),
            object_store::path::Path::from("faults"),
            url.clone(),
        ),
    );
    let ctx = SessionContext::new();
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(reopened.clone())))
        .unwrap();
    let err = ctx
        .sql("SELECT count(*), sum(id) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("'t'") && err.contains(&url), "{err}");
    // Inserts are local: the outage does not block them.
    insert(&reopened, &[batch(50_000, 10, now)]).await;
    server.control.clear_faults();
    let ctx = SessionContext::new();
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(reopened.clone())))
        .unwrap();
    let count = crate::common::query(&ctx, "SELECT count(*) FROM t").await;
    assert!(count.contains("15010"), "{count}");
}

/// A multipart upload that fails midway is retried, then aborted: no
/// upload is left on the server, and the part stays where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_failing_midway_is_aborted() {
    let server = S3Server::start().await;
    let now = diagon::table::log::now_ms();
    let Tiered {
        dir: _dir,
        local,
        url,
        table,
    } = tiered(&server, "multipart", &[("codec.s", "none")]).await;
    // One part whose string column is over 20 MiB: a multipart upload.
    let big: Vec<RecordBatch> = (0..4)
        .map(|i| wide_batch(i * 50_000, 50_000, now))
        .collect();
    let mut writer = table.insert();
    for b in &big {
        writer.write(b.clone()).await.unwrap();
    }
    writer.commit().await.unwrap();
    let expected = answers(&table).await;
    // The second part upload fails, every retry too.
    server.control.inject(Fault::new(
        Some("PUT"),
        "partNumber=2",
        FaultKind::Status(500),
    ));
    let err = table.move_parts(Tier::Cold, None).await.unwrap_err();
    assert!(err.to_string().contains(&url), "{err}");
    assert!(
        server
            .control
            .failed
            .load(std::sync::atomic::Ordering::Relaxed)
            > 1
    );
    // The abort runs in the background when a writer fails.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.pending_uploads().is_empty() {
        assert!(std::time::Instant::now() < deadline, "upload not aborted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tiers(&table).await.iter().all(|t| t.1 == Tier::Hot));
    assert_eq!(answers(&table).await, expected);
    server.control.clear_faults();
    assert_eq!(table.move_parts(Tier::Cold, None).await.unwrap().parts, 1);
    assert_eq!(answers(&table).await, expected);
    assert_no_strays(&table, &local, &cold(&server, "multipart")).await;
}

/// Rows with 100-byte strings of little redundancy.
fn wide_batch(from: i64, n: i64, ts_ms: i64) -> RecordBatch {
    let ids: Vec<i64> = (from..from + n).collect();
    let strings: Vec<Option<String>> = ids
        .iter()
        .map(|i| {
            let mut x = (*i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let s: String = (0..100)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'a' + (x % 26) as u8)
                })
                .collect();
            Some(s)
        })
        .collect();
    let ts: Vec<i64> = ids.iter().map(|i| ts_ms + i).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(strings)),
            Arc::new(TimestampMillisecondArray::from(ts)),
        ],
    )
    .unwrap()
}

/// Transient failures (a few 503s, a slow store) are retried by the
/// client: the answers do not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_store_failures_are_retried() {
    let server = S3Server::start().await;
    let now = diagon::table::log::now_ms();
    let Tiered {
        dir: _dir,
        local,
        url,
        table,
    } = tiered(&server, "transient", &[]).await;
    insert(&table, &five_batches(now)).await;
    let expected = answers(&table).await;
    table.move_parts(Tier::Cold, None).await.unwrap();

    let reopened = Table::open("t", local.clone()).await.unwrap().unwrap();
    reopened.attach_location(&url, cold(&server, "transient"));
    server.control.set_latency(Duration::from_millis(2));
    let (_, gets_before, bytes_before) = server.control.counts();
    // The third GET and the two after it fail; each is retried.
    server.control.inject(
        Fault::new(Some("GET"), "/transient/", FaultKind::Status(503))
            .skip(2)
            .times(3),
    );
    assert_eq!(answers(&reopened).await, expected);
    let (_, gets, bytes) = server.control.counts();
    assert_eq!(
        server
            .control
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert!(gets > gets_before && bytes > bytes_before);
}

/// The metrics EXPLAIN ANALYZE of one run of `sql` shows, each summed
/// over the plan's operators and partitions.
async fn metrics(table: &Arc<Table>, sql: &str) -> HashMap<String, u64> {
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table.clone())))
        .unwrap();
    let plan = crate::common::query(&ctx, &format!("EXPLAIN ANALYZE {sql}")).await;
    // Sizes print as `1.5 MB` (DataFusion's human-readable bytes).
    let words: Vec<&str> = plan
        .split([',', ' ', '[', ']'])
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = HashMap::new();
    for (i, word) in words.iter().enumerate() {
        let Some((name, value)) = word.split_once('=') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let scale = match words.get(i + 1).copied() {
            Some("KB") => 1024.0,
            Some("MB") => 1024.0 * 1024.0,
            Some("GB") => 1024.0 * 1024.0 * 1024.0,
            _ => 1.0,
        };
        *out.entry(name.to_string()).or_default() += (value * scale) as u64;
    }
    out
}

/// Cold reads are few requests (the scan announces what it will read and
/// the store merges it), go through the local read cache, which serves the
/// next query and the next process without a request and refetches an
/// entry it finds damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_reads_are_merged_cached_and_checked() {
    let server = S3Server::start().await;
    let now = diagon::table::log::now_ms();
    let Tiered {
        dir,
        local,
        url,
        table,
    } = tiered(&server, "cached", &[("codec.s", "none")]).await;
    // One part of 400 granules, its string column 16 cache blocks.
    insert(&table, &[batch(0, 100_000, now)]).await;
    let expected = answers(&table).await;
    table.move_parts(Tier::Cold, None).await.unwrap();
    drop(table);

    let sql = "SELECT count(*), sum(id), max(length(s)) FROM t";
    let open = || async {
        let table = Table::open("t", local.clone()).await.unwrap().unwrap();
        table.attach_location(&url, cold(&server, "cached"));
        table
    };
    let table = open().await;
    let (_, gets_before, bytes_before) = server.control.counts();
    let cold = metrics(&table, sql).await;
    let (_, gets, bytes) = server.control.counts();
    let first = gets - gets_before;
    // Per tier: the part read is cold, and what it cost the store is the
    // server's count (but the part index, read before the scan).
    assert!(
        cold["cold_parts_read"] >= 1 && cold["hot_parts_read"] == 0,
        "{cold:?}"
    );
    assert_eq!(cold["cold_requests"], first - 1, "{cold:?}");
    let fetched = cold["cold_bytes_fetched"];
    let served = (bytes - bytes_before) as f64;
    assert!(
        fetched > 0 && fetched as f64 <= served * 1.05,
        "{cold:?} of {served}"
    );
    assert!(
        cold["cold_cache_misses"] > 0 && cold["cold_cache_hits"] == 0,
        "{cold:?}"
    );
    // The part index, each column's envelope (header and footer), and a
    // few merged requests per column and partition for its 400 granules
    // (50 reads of 8 granules).
    // Without read-ahead, 20.
    assert!(first > 0 && first <= 14, "{first} GETs for a cold scan");
    assert_eq!(answers(&table).await, expected);
    // Cached now: no request.
    let (_, gets_before, _) = server.control.counts();
    let warm = metrics(&table, sql).await;
    assert_eq!(warm["cold_requests"], 0, "{warm:?}");
    assert!(
        warm["cold_cache_hits"] > 0 && warm["cold_cache_misses"] == 0,
        "{warm:?}"
    );
    assert_eq!(server.control.counts().1, gets_before);
    drop(table);

    // A new process finds the cache as the last one left it.
    let table = open().await;
    let (_, gets_before, _) = server.control.counts();
    assert_eq!(answers(&table).await, expected);
    assert_eq!(
        server.control.counts().1,
        gets_before,
        "cached across a restart"
    );
    drop(table);

    // A damaged entry is found, dropped and fetched again.
    let cache = dir.path().join(diagon::table::tier::CACHE_DIR);
    let mut files: Vec<std::path::PathBuf> = walk_files(&cache);
    files.sort();
    assert!(!files.is_empty());
    for file in files.iter().filter(|f| f.to_string_lossy().ends_with(".0")) {
        let mut bytes = std::fs::read(file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x5a;
        std::fs::write(file, bytes).unwrap();
    }
    let table = open().await;
    let (_, gets_before, _) = server.control.counts();
    assert_eq!(answers(&table).await, expected);
    assert!(
        server.control.counts().1 > gets_before,
        "damaged entries refetched"
    );
    let (_, gets_before, _) = server.control.counts();
    assert_eq!(answers(&table).await, expected);
    assert_eq!(server.control.counts().1, gets_before, "and cached again");
    // A local part reads as hot.
    insert(&table, &[batch(200_000, 10, now)]).await;
    let mixed = metrics(&table, sql).await;
    assert!(
        mixed["hot_parts_read"] >= 1 && mixed["cold_parts_read"] >= 1,
        "{mixed:?}"
    );
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A query running while its parts move, back and forth, reads the copies
/// of its snapshot to the end: each move writes a fresh directory, and
/// cleanup keeps the old copies until the query is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_outlives_moves_of_its_parts() {
    use futures::StreamExt;
    let server = S3Server::start().await;
    let now = diagon::table::log::now_ms();
    let Tiered {
        dir: _dir,
        local,
        url: _url,
        table,
    } = tiered(&server, "racing", &[]).await;
    insert(&table, &five_batches(now)).await;
    let expected = answers(&table).await;

    let ctx = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new()
            .with_batch_size(100)
            .with_target_partitions(1),
    );
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table.clone())))
        .unwrap();
    let mut stream = ctx
        .sql("SELECT id FROM t")
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap();
    let mut rows = stream.next().await.unwrap().unwrap().num_rows();
    for to in [Tier::Cold, Tier::Hot, Tier::Cold] {
        table.move_parts(to, None).await.unwrap();
        table.collect_garbage().await.unwrap();
    }
    while let Some(batch) = stream.next().await {
        rows += batch.unwrap().num_rows();
    }
    assert_eq!(rows, 15_000);
    drop(stream);
    table.collect_garbage().await.unwrap();
    assert_eq!(answers(&table).await, expected);
    assert_no_strays(&table, &local, &cold(&server, "racing")).await;
}

/// A cold location belongs to one table, and never overlaps the table's
/// own directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_location_belongs_to_one_table() {
    let server = S3Server::start().await;
    let now = diagon::table::log::now_ms();
    let url = server.url("shared");
    let mut tables = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::create(
            "t",
            Storage::local(dir.path()).unwrap(),
            schema(),
            options(&[("cold_location", &url)]),
        )
        .await
        .unwrap();
        table.attach_location(&url, cold(&server, "shared"));
        insert(&table, &five_batches(now)[..1]).await;
        tables.push(table);
        dirs.push(dir);
    }
    tables[0].move_parts(Tier::Cold, None).await.unwrap();
    let err = tables[1]
        .move_parts(Tier::Cold, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("belongs to the table at"), "{err}");
    // Its cleanup leaves the other table's parts alone.
    tables[1].collect_garbage().await.unwrap();
    assert_eq!(answers(&tables[0]).await.len(), QUERIES.len());
    assert_eq!(part_dirs(&cold(&server, "shared")).await.len(), 1);

    // The table's own directory as its cold location.
    let dir = tempfile::tempdir().unwrap();
    let own = format!("file://{}", dir.path().display());
    let local = Storage::local(dir.path()).unwrap();
    let table = Table::create(
        "t",
        local.clone(),
        schema(),
        options(&[("cold_location", &own)]),
    )
    .await
    .unwrap();
    table.attach_location(&own, local.clone());
    insert(&table, &five_batches(now)[..1]).await;
    let err = table
        .move_parts(Tier::Cold, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("overlaps the table's own directory"), "{err}");
    assert!(tiers(&table).await.iter().all(|t| t.1 == Tier::Hot));
}

/// One cold location under two spellings (a path, then its `file://` URL):
/// cleanup through either never takes the other's live parts for garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_location_renamed_keeps_its_parts() {
    let now = diagon::table::log::now_ms();
    let dir = tempfile::tempdir().unwrap();
    let cold_dir = tempfile::tempdir().unwrap();
    let path = cold_dir.path().display().to_string();
    let url = format!("file://{path}");
    let local = Storage::local(dir.path()).unwrap();
    let table = Table::create(
        "t",
        local.clone(),
        schema(),
        options(&[("cold_location", &path)]),
    )
    .await
    .unwrap();
    table.attach_location(&path, Storage::local(cold_dir.path()).unwrap());
    insert(&table, &five_batches(now)).await;
    let expected = answers(&table).await;
    table.move_parts(Tier::Cold, None).await.unwrap();
    let mut tiers_options = table.cached_snapshot().options.tiers.clone();
    tiers_options.cold_location = Some(url.clone());
    table.set_tiers(tiers_options).await.unwrap();
    table.attach_location(&url, Storage::local(cold_dir.path()).unwrap());
    let names: Vec<String> = tiers(&table).await.into_iter().map(|t| t.0).collect();
    table
        .move_parts(Tier::Hot, Some(&names[..1]))
        .await
        .unwrap();
    table
        .move_parts(Tier::Cold, Some(&names[..1]))
        .await
        .unwrap();
    table.collect_garbage().await.unwrap();
    table.collect_garbage().await.unwrap();
    assert_eq!(answers(&table).await, expected);
    // A log naming a place no marker there gives to this table is refused.
    let stranger = tempfile::tempdir().unwrap();
    let err = table
        .check_location(
            &stranger.path().display().to_string(),
            &Storage::local(stranger.path()).unwrap(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no marker there names this table"), "{err}");
}

/// A reopen while the cold store refuses requests still opens the table:
/// inserts (local) go on, and a query that needs the cold parts fails
/// naming the location and why, never answering without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopen_with_the_store_down_still_takes_inserts() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store_options = format!(
        "'aws.endpoint' '{}', 'aws.allow_http' 'true', 'aws.region' 'us-east-1', \
         'aws.access_key_id' 'diagon-test', 'aws.secret_access_key' 'diagon-test-secret'",
        server.endpoint
    );
    let location = dir.path().join("t").display().to_string();
    let ctx = crate::common::context(2);
    crate::common::query(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE t (id BIGINT NOT NULL) STORED AS DIAGON LOCATION '{location}' \
             OPTIONS ('cold_location' 's3://diagon/down', {store_options})"
        ),
    )
    .await;
    crate::common::query(&ctx, "INSERT INTO t VALUES (1), (2)").await;
    crate::common::query(&ctx, "SELECT * FROM diagon_move('t', 'cold')").await;

    // Every request to the cold location is refused (403: not retried).
    server
        .control
        .inject(Fault::new(None, "/down/", FaultKind::Status(403)));
    let ctx = crate::common::context(2);
    crate::common::query(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE t STORED AS DIAGON LOCATION '{location}' \
             OPTIONS ({store_options})"
        ),
    )
    .await;
    crate::common::query(&ctx, "INSERT INTO t VALUES (3)").await;
    let err = ctx
        .sql("SELECT count(*) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("s3://diagon/down") && err.contains("'t'"),
        "{err}"
    );
    server.control.clear_faults();
    let ctx = crate::common::context(2);
    crate::common::query(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE t STORED AS DIAGON LOCATION '{location}' \
             OPTIONS ({store_options})"
        ),
    )
    .await;
    let count = crate::common::query(&ctx, "SELECT count(*), sum(id) FROM t").await;
    assert!(count.contains("| 3 ") && count.contains("| 6 "), "{count}");
}
