//! The secondary index (sidx): 10,000,000 elements over 10,000 series
//! (1,000 each), keys random within each series, 16 bytes of data, a
//! string tag and an int tag. Written in arrival order (series
//! interleaved) in batches of 10,000 through `Sidx::write_batch`, flushed
//! every 1,000,000 elements, then merged into one part; the write rate is
//! printed. The same elements also go into a plain diagon table ordered by
//! (series_id, key) and into Parquet sorted the same way (zstd(3), page
//! statistics and index), both read by DataFusion.
//!
//! Queries: series + key range, ascending and descending, with LIMIT 100
//! and without; for each, the time to the first batch and to the last.
//! Every engine must return the same rows in the same order first.
//!
//! `cargo bench --bench sidx` (data is generated once into the target
//! directory; `DIAGON_BENCH_RELOAD=1` regenerates it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use diagon::sidx::{Options, Order, QueryRequest, Sidx};
use diagon::sql::DiagonTableProvider;
use diagon::{Table, TableOptions};
use futures::StreamExt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERIES: u64 = 10_000;
const PER_SERIES: u64 = 1_000;
const ELEMENTS: u64 = SERIES * PER_SERIES;
const BATCH: u64 = 10_000;
const FLUSH_EVERY: u64 = 1_000_000;
/// Keys are drawn from [0, KEY_SPACE): ties within a series are rare.
const KEY_SPACE: u64 = 1 << 40;

fn scramble(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Element `i` of the arrival order: series interleaved.
fn element(i: u64) -> (u64, i64, [u8; 16], String, i64) {
    let series = i % SERIES + 1;
    let h = scramble(i);
    let key = (h % KEY_SPACE) as i64;
    let mut data = [0u8; 16];
    data[..8].copy_from_slice(&i.to_le_bytes());
    data[8..].copy_from_slice(&h.to_le_bytes());
    let service = format!("svc-{}", h % 20);
    let status = [200, 200, 200, 404, 500][(h >> 40) as usize % 5];
    (series, key, data, service, status)
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt64, false),
        Field::new("key", DataType::Int64, false),
        Field::new("data", DataType::Binary, false),
        Field::new("service", DataType::Utf8, true),
        Field::new("status", DataType::Int64, true),
    ]))
}

fn batch_of(elements: impl Iterator<Item = (u64, i64, [u8; 16], String, i64)>) -> RecordBatch {
    let rows: Vec<_> = elements.collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.3))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4))),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

/// Batches in arrival order.
fn arrivals() -> impl Iterator<Item = RecordBatch> {
    (0..ELEMENTS / BATCH).map(|b| batch_of((b * BATCH..(b + 1) * BATCH).map(element)))
}

/// Batches sorted by (series_id, key), 100 series each.
fn sorted() -> impl Iterator<Item = RecordBatch> {
    (0..SERIES / 100).map(|b| {
        let mut rows: Vec<_> = (b * 100..(b + 1) * 100)
            .flat_map(|s| (0..PER_SERIES).map(move |j| element(s + j * SERIES)))
            .collect();
        rows.sort_by_key(|r| (r.0, r.1));
        batch_of(rows.into_iter())
    })
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("sidx")
}

fn storage(dir: &Path) -> diagon::storage::Storage {
    std::fs::create_dir_all(dir).unwrap();
    diagon::storage::Storage::local(dir).unwrap()
}

fn prepare(runtime: &tokio::runtime::Runtime) -> PathBuf {
    let dir = data_dir();
    let done = dir.join("done");
    if std::env::var_os("DIAGON_BENCH_RELOAD").is_none() && done.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    runtime.block_on(async {
        let index = Sidx::create(storage(&dir.join("sidx")), Options::default())
            .await
            .unwrap();
        let started = Instant::now();
        let mut written = 0;
        let mut flush_time = std::time::Duration::ZERO;
        for batch in arrivals() {
            written += batch.num_rows() as u64;
            index.write_batch(batch).await.unwrap();
            if written % FLUSH_EVERY == 0 {
                let f = Instant::now();
                index.flush().await.unwrap();
                flush_time += f.elapsed();
            }
        }
        let took = started.elapsed();
        let merge = Instant::now();
        index.merge(Default::default()).await.unwrap();
        let merge = merge.elapsed();
        index.close().await.unwrap();
        println!(
            "sidx write: {ELEMENTS} elements in {:.1} s ({:.0} elements/s; flushes {:.1} s \
             of it), merge into one part {:.1} s",
            took.as_secs_f64(),
            ELEMENTS as f64 / took.as_secs_f64(),
            flush_time.as_secs_f64(),
            merge.as_secs_f64()
        );

        let options = TableOptions {
            order_by: vec!["series_id".into(), "key".into()],
            ..TableOptions::default()
        };
        let started = Instant::now();
        let table = Table::create("plain", storage(&dir.join("plain")), schema(), options)
            .await
            .unwrap();
        let mut writer = table.insert();
        for batch in arrivals() {
            writer.write(batch).await.unwrap();
        }
        writer.commit().await.unwrap();
        let took = started.elapsed();
        table.optimize(true).await.unwrap();
        println!(
            "plain diagon table insert: {:.0} elements/s",
            ELEMENTS as f64 / took.as_secs_f64()
        );
    });
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    let file = std::fs::File::create(dir.join("sorted.parquet")).unwrap();
    let mut writer = ArrowWriter::try_new(file, schema(), Some(props)).unwrap();
    for batch in sorted() {
        writer.write(&batch).unwrap();
    }
    writer.close().unwrap();
    std::fs::write(&done, b"").unwrap();
    dir
}

/// One query: the series, the key range, the order, the limit.
struct Query {
    name: &'static str,
    series: Vec<u64>,
    min: i64,
    max: i64,
}

impl Query {
    fn request(&self, order: Order, limit: Option<usize>) -> QueryRequest {
        let mut r = QueryRequest::new()
            .series(self.series.clone())
            .keys(Some(self.min), Some(self.max))
            .order(order)
            .batch_size(8192);
        r.limit = limit;
        r
    }

    fn sql(&self, order: Order, limit: Option<usize>) -> String {
        let ids: Vec<String> = self.series.iter().map(u64::to_string).collect();
        let dir = match order {
            Order::Asc | Order::Unordered => "",
            Order::Desc => " DESC",
        };
        format!(
            "SELECT series_id, key, data FROM t WHERE series_id IN ({}) AND key BETWEEN {} AND {} \
             ORDER BY key{dir}, series_id{dir}{}",
            ids.join(", "),
            self.min,
            self.max,
            limit.map_or(String::new(), |l| format!(" LIMIT {l}"))
        )
    }
}

/// Rows as (series, key, data) for comparing engines.
fn rows(batches: &[RecordBatch]) -> Vec<(u64, i64, Vec<u8>)> {
    use arrow::array::AsArray;
    let mut out = Vec::new();
    for b in batches {
        let s = b.column(0).as_primitive::<arrow::datatypes::UInt64Type>();
        let k = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        // DataFusion reads Parquet binary as views.
        let d = arrow::compute::cast(b.column(2), &DataType::Binary).unwrap();
        let d = d.as_binary::<i32>();
        for i in 0..b.num_rows() {
            out.push((s.value(i), k.value(i), d.value(i).to_vec()));
        }
    }
    out
}

/// (first batch, all batches) of an engine's answer.
async fn first_and_all(
    engine: &Engine,
    q: &Query,
    order: Order,
    limit: Option<usize>,
    all: bool,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    match engine {
        Engine::Api(index) => {
            let mut stream = index.query(q.request(order, limit)).await.unwrap();
            while let Some(b) = stream.next().await {
                out.push(b.unwrap());
                if !all {
                    break;
                }
            }
        }
        Engine::Sql(ctx) => {
            let mut stream = ctx
                .sql(&q.sql(order, limit))
                .await
                .unwrap()
                .execute_stream()
                .await
                .unwrap();
            while let Some(b) = stream.next().await {
                let b = b.unwrap();
                if b.num_rows() == 0 {
                    continue;
                }
                out.push(b);
                if !all {
                    break;
                }
            }
        }
    }
    out
}

enum Engine {
    Api(Arc<Sidx>),
    Sql(SessionContext),
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = prepare(&runtime);
    // The live parts' bytes (merged-away parts wait for cleanup on disk).
    let live = |name: &str| {
        runtime.block_on(async {
            let table = Table::open(name, storage(&dir.join(name)))
                .await
                .unwrap()
                .unwrap();
            let snapshot = table.snapshot().await.unwrap();
            snapshot.parts.iter().map(|p| p.bytes).sum::<u64>()
        })
    };
    let parquet = std::fs::metadata(dir.join("sorted.parquet")).unwrap().len();
    let (sidx, plain) = (live("sidx"), live("plain"));
    println!(
        "bytes: sidx {sidx} ({:.3}x parquet), plain diagon {plain} ({:.3}x), parquet {parquet}",
        sidx as f64 / parquet as f64,
        plain as f64 / parquet as f64
    );
    let config = || SessionConfig::new().with_target_partitions(2);
    let engines: Vec<(&str, Engine)> = runtime.block_on(async {
        let index = Sidx::open(storage(&dir.join("sidx")), Options::default())
            .await
            .unwrap();
        let sidx_sql = diagon::sql::new_context(config());
        sidx_sql
            .register_table(
                "t",
                Arc::new(diagon::sql::sidx::SidxProvider::new(index.clone())),
            )
            .unwrap();
        let plain = diagon::sql::new_context(config());
        let table = Table::open("plain", storage(&dir.join("plain")))
            .await
            .unwrap()
            .unwrap();
        plain
            .register_table("t", Arc::new(DiagonTableProvider::new(table)))
            .unwrap();
        let parquet = SessionContext::new_with_config(config());
        parquet
            .register_parquet(
                "t",
                dir.join("sorted.parquet").to_str().unwrap(),
                ParquetReadOptions::default(),
            )
            .await
            .unwrap();
        vec![
            ("sidx_api", Engine::Api(index)),
            ("sidx_sql", Engine::Sql(sidx_sql)),
            ("diagon_table", Engine::Sql(plain)),
            ("parquet", Engine::Sql(parquet)),
        ]
    });
    let span = KEY_SPACE as i64;
    let queries = [
        // One series, a tenth of its keys: about 100 elements.
        Query {
            name: "one_series",
            series: vec![4242],
            min: span / 10 * 3,
            max: span / 10 * 4,
        },
        // Ten series spread over the index, half of their keys: about
        // 5,000 elements.
        Query {
            name: "ten_series",
            series: (0..10).map(|i| 17 + i * 997).collect(),
            min: span / 4,
            max: span / 4 * 3,
        },
    ];
    for q in &queries {
        for order in [Order::Asc, Order::Desc] {
            for limit in [Some(100), None] {
                let answers: Vec<Vec<(u64, i64, Vec<u8>)>> = engines
                    .iter()
                    .map(|(_, e)| rows(&runtime.block_on(first_and_all(e, q, order, limit, true))))
                    .collect();
                for (i, a) in answers.iter().enumerate() {
                    assert_eq!(
                        a, &answers[0],
                        "{}: {} disagrees with {}",
                        q.name, engines[i].0, engines[0].0
                    );
                }
                assert!(!answers[0].is_empty(), "{}: no rows", q.name);
                let name = format!(
                    "{}_{}_{}",
                    q.name,
                    if order == Order::Asc { "asc" } else { "desc" },
                    limit.map_or("all".to_string(), |l| format!("limit{l}"))
                );
                for (what, all) in [("first_batch", false), ("full", true)] {
                    let mut group = c.benchmark_group(format!("{name}/{what}"));
                    group.sample_size(20);
                    for (engine, e) in &engines {
                        group.bench_function(*engine, |b| {
                            b.iter(|| runtime.block_on(first_and_all(e, q, order, limit, all)))
                        });
                    }
                    group.finish();
                }
            }
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
