//! Nested columns: a generated log table of 1,000,000 rows with a list of
//! tags (one to five of 300, a few common, most rare, and `needle` in about
//! ten rows), a struct (host,
//! status, latency) and a list of structs (spans), stored in diagon (a
//! Bloom filter index on `tags`, which indexes their elements) and in
//! Parquet (zstd(3), page statistics, read by DataFusion). Both answer
//! through DataFusion and must agree before they are timed; the bytes of
//! each are printed.
//!
//! `cargo bench --bench nested` (data is generated once into the target
//! directory; `DIAGON_BENCH_RELOAD=1` regenerates it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
    StructArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
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

const ROWS: i64 = 1_000_000;
const BATCH: i64 = 50_000;
const TAGS: u64 = 300;

/// A fixed pseudo-random permutation of row numbers (odd multiplier).
fn scramble(i: i64) -> u64 {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7
}

fn host_fields() -> Fields {
    Fields::from(vec![
        Field::new("host", DataType::Utf8, true),
        Field::new("status", DataType::Int32, true),
        Field::new("latency_ms", DataType::Float64, true),
    ])
}

fn span_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("ms", DataType::Float64, true),
    ])
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("tags", DataType::new_list(DataType::Utf8, true), true),
        Field::new("req", DataType::Struct(host_fields()), true),
        Field::new(
            "spans",
            DataType::new_list(DataType::Struct(span_fields()), true),
            true,
        ),
    ]))
}

/// Tag `n` of a row: the square of a uniform draw skews it toward the
/// first tags (tag-0 in about one row in ten, tag-299 in one in 5,000).
fn tag(h: u64) -> String {
    let u = (h % 10_000) as f64 / 10_000.0;
    format!("tag-{}", (u * u * TAGS as f64) as u64)
}

fn batch(b: i64) -> RecordBatch {
    let ids: Vec<i64> = (b * BATCH..(b + 1) * BATCH).collect();
    let mut tag_lengths = Vec::new();
    let mut tags = Vec::new();
    let mut span_lengths = Vec::new();
    let (mut span_names, mut span_ms) = (Vec::new(), Vec::new());
    let (mut hosts, mut statuses, mut latencies) = (Vec::new(), Vec::new(), Vec::new());
    let mut valid = Vec::new();
    for &i in &ids {
        let h = scramble(i);
        let n = 1 + (h % 5) as usize;
        // About ten rows in the table carry the tag `needle` too.
        let needle = scramble(i * 31 + 5).is_multiple_of(100_000);
        tag_lengths.push(n + usize::from(needle));
        tags.extend((0..n).map(|j| Some(tag(scramble(i * 7 + j as i64)))));
        if needle {
            tags.push(Some("needle".to_string()));
        }
        let spans = (h >> 8) as usize % 4;
        span_lengths.push(spans);
        for j in 0..spans {
            let s = scramble(i * 13 + j as i64);
            span_names.push(Some(["db", "cache", "auth", "render"][(s % 4) as usize]));
            span_ms.push(Some((s % 5_000) as f64 / 10.0));
        }
        valid.push(!h.is_multiple_of(50));
        hosts.push(Some(format!("web-{:02}", (h >> 16) % 40)));
        statuses.push(Some(
            [200, 200, 200, 200, 301, 404, 500][((h >> 24) % 7) as usize],
        ));
        latencies.push((!(h >> 32).is_multiple_of(97)).then(|| ((h >> 40) % 20_000) as f64 / 10.0));
    }
    let tags: ArrayRef = Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Utf8, true)),
        OffsetBuffer::from_lengths(tag_lengths),
        Arc::new(StringArray::from(tags)),
        None,
    ));
    let req: ArrayRef = Arc::new(StructArray::new(
        host_fields(),
        vec![
            Arc::new(StringArray::from(hosts)),
            Arc::new(Int32Array::from(statuses)),
            Arc::new(Float64Array::from(latencies)),
        ],
        Some(NullBuffer::from(valid)),
    ));
    let span_values = StructArray::new(
        span_fields(),
        vec![
            Arc::new(StringArray::from(span_names)),
            Arc::new(Float64Array::from(span_ms)),
        ],
        None,
    );
    let spans: ArrayRef = Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Struct(span_fields()), true)),
        OffsetBuffer::from_lengths(span_lengths),
        Arc::new(span_values),
        None,
    ));
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(Int64Array::from(ids)), tags, req, spans],
    )
    .unwrap()
}

fn batches() -> impl Iterator<Item = RecordBatch> {
    (0..ROWS / BATCH).map(batch)
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("nested")
}

fn storage(dir: &Path) -> diagon::storage::Storage {
    std::fs::create_dir_all(dir).unwrap();
    diagon::storage::Storage::local(dir).unwrap()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            match e.file_type().unwrap().is_dir() {
                true => dir_bytes(&e.path()),
                false => e.metadata().unwrap().len(),
            }
        })
        .sum()
}

fn prepare(runtime: &tokio::runtime::Runtime) -> PathBuf {
    let dir = data_dir();
    let done = dir.join("done");
    if std::env::var_os("DIAGON_BENCH_RELOAD").is_none() && done.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let options: HashMap<String, String> = [
        ("order_by", "id"),
        ("skip_index.tags", "bloom_filter(0.01)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let options = TableOptions::parse(&options, &schema()).unwrap();
    runtime.block_on(async {
        let table = Table::create("logs", storage(&dir.join("diagon")), schema(), options)
            .await
            .unwrap();
        let mut writer = table.insert();
        for batch in batches() {
            writer.write(batch).await.unwrap();
        }
        writer.commit().await.unwrap();
        table.optimize(true).await.unwrap();
    });
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_statistics_enabled(EnabledStatistics::Page)
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
    let diagon_bytes = dir_bytes(&dir.join("diagon"));
    let parquet_bytes = std::fs::metadata(dir.join("logs.parquet")).unwrap().len();
    println!(
        "bytes: diagon {diagon_bytes}, parquet {parquet_bytes}, ratio {:.3}",
        diagon_bytes as f64 / parquet_bytes as f64
    );
    let config = || SessionConfig::new().with_target_partitions(2);
    let engines: Vec<(&str, SessionContext)> = runtime.block_on(async {
        let diagon = diagon::sql::new_context(config());
        let table = Table::open("logs", storage(&dir.join("diagon")))
            .await
            .unwrap()
            .unwrap();
        diagon
            .register_table("logs", Arc::new(DiagonTableProvider::new(table)))
            .unwrap();
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
        vec![("diagon", diagon), ("parquet", parquet)]
    });
    let queries = [
        // Every value of every column is read.
        (
            "full_scan",
            "SELECT count(*), sum(cardinality(tags)), count(req.host), sum(req.status), \
             max(req.latency_ms), sum(cardinality(spans)) FROM logs",
        ),
        // A rare tag (about ten rows): the Bloom filter of elements skips
        // most granules.
        (
            "array_has_rare",
            "SELECT count(*), min(id) FROM logs WHERE array_has(tags, 'needle')",
        ),
        // A tag in about one row of 200, in every granule.
        (
            "array_has_tail",
            "SELECT count(*), min(id) FROM logs WHERE array_has(tags, 'tag-299')",
        ),
        // A common tag: in every granule, nothing to skip.
        (
            "array_has_common",
            "SELECT count(*), min(id) FROM logs WHERE array_has(tags, 'tag-0')",
        ),
        (
            "struct_field",
            "SELECT req.host, count(*) FROM logs WHERE req.status = 500 \
             GROUP BY req.host ORDER BY req.host LIMIT 5",
        ),
        (
            "unnest",
            "SELECT s['name'], count(*), sum(CAST(s['ms'] AS DECIMAL(12, 1))) FROM \
             (SELECT unnest(spans) AS s FROM logs) GROUP BY s['name'] ORDER BY s['name']",
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
        group.sample_size(10);
        for (engine, ctx) in &engines {
            group.bench_function(*engine, |b| b.iter(|| runtime.block_on(run(ctx, sql))));
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
