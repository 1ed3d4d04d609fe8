//! Many small inserts: 10,000 inserts of 100 rows each into one table with
//! background merges on, reporting every 500 inserts the live part count,
//! the median latency of a point query (`WHERE id = ?` through DataFusion),
//! the mean insert latency, the time to open the table afresh and the files
//! in its log. With merges off, the same run shows what they prevent.
//!
//! `cargo bench --bench merges` (`DIAGON_BENCH_INSERTS` changes the number
//! of inserts, `DIAGON_BENCH_ROWS` the rows per insert;
//! `DIAGON_BENCH_MERGES=off` turns merges off; `DIAGON_BENCH_LIFETIME`
//! keeps merged-away parts that many seconds, default 0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use diagon::sql::DiagonTableProvider;
use diagon::{MergeOptions, Table, TableOptions};

/// The allocator the diagon CLI (like datafusion-cli) runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REPORT_EVERY: usize = 500;

fn rows_per_insert() -> i64 {
    std::env::var("DIAGON_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("payload", DataType::Utf8, false),
    ]))
}

fn batch(insert: i64) -> RecordBatch {
    let rows = rows_per_insert();
    let ids: Vec<i64> = (0..rows).map(|i| insert * rows + i).collect();
    let payload: Vec<String> = ids.iter().map(|i| format!("event {i}")).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(payload)),
        ],
    )
    .unwrap()
}

fn storage(dir: &std::path::Path) -> diagon::storage::Storage {
    diagon::storage::Storage::local(dir).unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let inserts: usize = std::env::var("DIAGON_BENCH_INSERTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let merges = std::env::var("DIAGON_BENCH_MERGES").map_or(true, |v| v != "off");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // Insert latency is mostly fsync: let writes of earlier processes (a
    // build, a previous run's deleted files) reach the disk first, or the
    // first hundreds of inserts wait behind them (8-11 ms against 2.4).
    let _ = std::process::Command::new("sync").status();
    runtime.block_on(async {
        let options = TableOptions {
            order_by: vec!["id".into()],
            // Merged-away parts are deleted at once unless
            // DIAGON_BENCH_LIFETIME (seconds) says otherwise.
            old_parts_lifetime: std::env::var("DIAGON_BENCH_LIFETIME")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            merge: MergeOptions {
                background: merges,
                ..MergeOptions::default()
            },
            ..TableOptions::default()
        };
        let table = Table::create("events", storage(dir.path()), schema(), options)
            .await
            .unwrap();
        let ctx = diagon::sql::new_context(
            datafusion::prelude::SessionConfig::new().with_target_partitions(2),
        );
        ctx.register_table("events", Arc::new(DiagonTableProvider::new(table.clone())))
            .unwrap();
        println!("merges {}", if merges { "on" } else { "off" });
        println!(
            "| inserts | rows | live parts | point query (median of 21) | insert (mean) | open (median of 5) | log files |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        let mut insert_time = Duration::ZERO;
        for i in 0..inserts {
            let started = Instant::now();
            let mut writer = table.insert();
            writer.write(batch(i as i64)).await.unwrap();
            writer.commit().await.unwrap();
            insert_time += started.elapsed();
            let done = i + 1;
            if done == 100 {
                println!(
                    "first 100 inserts: {:.2} ms mean, open {:.2} ms",
                    insert_time.as_secs_f64() * 1e3 / 100.0,
                    open_time(dir.path()).await.as_secs_f64() * 1e3
                );
            }
            if done % REPORT_EVERY == 0 {
                let rows = done as i64 * rows_per_insert();
                let mut times = Vec::new();
                for q in 0..21 {
                    let id = (q * 7919 + done as i64 * 31) % rows;
                    let sql = format!("SELECT * FROM events WHERE id = {id}");
                    let started = Instant::now();
                    let out = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                    times.push(started.elapsed());
                    let found: usize = out.iter().map(|b| b.num_rows()).sum();
                    assert_eq!(found, 1, "id {id} after {done} inserts");
                }
                times.sort();
                let parts = table.snapshot().await.unwrap().parts.len();
                let open = open_time(dir.path()).await;
                let log_files = std::fs::read_dir(dir.path().join("_log")).unwrap().count();
                println!(
                    "| {done} | {rows} | {parts} | {:.2} ms | {:.2} ms | {:.2} ms | {log_files} |",
                    times[10].as_secs_f64() * 1e3,
                    insert_time.as_secs_f64() * 1e3 / REPORT_EVERY as f64,
                    open.as_secs_f64() * 1e3
                );
                insert_time = Duration::ZERO;
            }
        }
    });
}

/// The median of 5 opens of the table at `dir` by a new handle (a process
/// starting up), to its newest snapshot.
async fn open_time(dir: &std::path::Path) -> Duration {
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let table = Table::open("events", storage(dir)).await.unwrap().unwrap();
        table.snapshot().await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    times[2]
}
