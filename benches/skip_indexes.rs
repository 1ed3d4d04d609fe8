//! Skip indexes: selective lookups on columns other than the sort key, where
//! min/max prunes nothing. The same 2,000,000 log rows are stored three
//! times: in diagon with a Bloom filter index on `trace` and a token Bloom
//! filter on `msg`, in diagon without indexes, and in Parquet (zstd(3), page
//! statistics, a Bloom filter on `trace`, read by DataFusion, which uses
//! Parquet Bloom filters by default). All three answer through DataFusion
//! and must agree before they are timed.
//!
//! `cargo bench --bench skip_indexes` (data is generated once into the
//! target directory; `DIAGON_BENCH_RELOAD=1` regenerates it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use diagon::sql::DiagonTableProvider;
use diagon::{Table, TableOptions};

/// Both engines run on the allocator datafusion-cli and DataFusion's own
/// benchmarks use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: i64 = 2_000_000;
const BATCH: i64 = 100_000;

/// A fixed pseudo-random permutation of row numbers (odd multiplier).
fn scramble(i: i64) -> i64 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64) >> 1) & i64::MAX
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("trace", DataType::Int64, false),
        Field::new("msg", DataType::Utf8, false),
    ]))
}

/// Rows in id order; `trace` is unique and random, and each `user<N>` word
/// appears in about two rows, anywhere in the table.
fn batches() -> impl Iterator<Item = RecordBatch> {
    (0..ROWS / BATCH).map(|b| {
        let ids: Vec<i64> = (b * BATCH..(b + 1) * BATCH).collect();
        let traces: Vec<i64> = ids.iter().map(|&i| scramble(i)).collect();
        let msgs: Vec<String> = ids
            .iter()
            .map(|&i| {
                let h = scramble(i + ROWS);
                format!(
                    "GET /api/v1/items/{} user{} {}",
                    h % 100_000,
                    (h >> 20) % 1_000_000,
                    ["ok", "not found", "timeout"][(h % 3) as usize]
                )
            })
            .collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Int64Array::from(traces)),
                Arc::new(StringArray::from(msgs)),
            ],
        )
        .unwrap()
    })
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("skip-indexes")
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
    for (name, indexes) in [
        (
            "indexed",
            vec![
                ("skip_index.trace", "bloom_filter(0.01)"),
                ("skip_index.msg", "tokenbf(0.01)"),
            ],
        ),
        ("plain", vec![]),
    ] {
        let mut options: HashMap<String, String> = indexes
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        options.insert("order_by".into(), "id".into());
        let options = TableOptions::parse(&options, &schema()).unwrap();
        runtime.block_on(async {
            let table = Table::create(name, storage(&dir.join(name)), schema(), options)
                .await
                .unwrap();
            let mut writer = table.insert();
            for batch in batches() {
                writer.write(batch).await.unwrap();
            }
            writer.commit().await.unwrap();
        });
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_bloom_filter_enabled("trace".into(), true)
        .build();
    let file = std::fs::File::create(dir.join("logs.parquet")).unwrap();
    let mut writer = ArrowWriter::try_new(file, schema(), Some(props)).unwrap();
    for batch in batches() {
        writer.write(&batch).unwrap();
    }
    writer.close().unwrap();
    std::fs::write(&done, b"").unwrap();
    dir
}

async fn run(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = prepare(&runtime);
    let config = || SessionConfig::new().with_target_partitions(2);
    let engines: Vec<(&str, SessionContext)> = runtime.block_on(async {
        let mut engines = Vec::new();
        for name in ["indexed", "plain"] {
            let ctx = diagon::sql::new_context(config());
            let table = Table::open(name, storage(&dir.join(name)))
                .await
                .unwrap()
                .unwrap();
            ctx.register_table("logs", Arc::new(DiagonTableProvider::new(table)))
                .unwrap();
            engines.push((name, ctx));
        }
        let parquet = SessionContext::new_with_config(config());
        let file = dir.join("logs.parquet");
        parquet
            .register_parquet(
                "logs",
                file.to_str().unwrap(),
                ParquetReadOptions::default(),
            )
            .await
            .unwrap();
        engines.push(("parquet", parquet));
        engines
    });
    // Values of existing rows: a trace, and the user of row 777.
    let (a, b) = (scramble(1_234_567), scramble(42));
    let user = format!("user{}", (scramble(777 + ROWS) >> 20) % 1_000_000);
    let queries = [
        (
            "trace_eq",
            format!("SELECT id, msg FROM logs WHERE trace = {a}"),
        ),
        (
            "trace_in",
            format!("SELECT id FROM logs WHERE trace IN ({a}, {b}, 12345) ORDER BY id"),
        ),
        (
            "msg_word",
            format!("SELECT count(*) FROM logs WHERE msg LIKE '% {user} %'"),
        ),
    ];
    for (name, sql) in &queries {
        let text = |batches: &[RecordBatch]| {
            arrow::util::pretty::pretty_format_batches(batches)
                .unwrap()
                .to_string()
        };
        let answers: Vec<String> = engines
            .iter()
            .map(|(_, ctx)| text(&runtime.block_on(run(ctx, sql))))
            .collect();
        assert!(
            answers.iter().all(|a| a == &answers[0]),
            "{name}: engines disagree: {answers:?}"
        );
        let mut group = c.benchmark_group(*name);
        group.sample_size(20);
        for (engine, ctx) in &engines {
            group.bench_function(*engine, |b| b.iter(|| runtime.block_on(run(ctx, sql))));
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
