//! TPC-H: all 8 tables in diagon (default codecs, each ordered by its key)
//! against the same rows in Parquet (zstd(3), page index) read by
//! DataFusion, in one run: bytes on disk per table, then queries 1, 3, 5, 6,
//! 10, 12, 14 and 19 end to end, after checking both engines agree.
//!
//! `cargo bench --bench tpch` (scale factor from `DIAGON_BENCH_SF`, default
//! 1). Data is generated once into the target directory and reused
//! (`DIAGON_BENCH_RELOAD=1` regenerates it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use diagon::sql::DiagonTableProvider;
use diagon::{Table, TableOptions};
use tpchgen::generators::*;
use tpchgen_arrow::*;

/// Both engines run on the allocator datafusion-cli and DataFusion's own
/// benchmarks use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const QUERIES: [(&str, &str); 8] = [
    ("q1", include_str!("tpch/q1.sql")),
    ("q3", include_str!("tpch/q3.sql")),
    ("q5", include_str!("tpch/q5.sql")),
    ("q6", include_str!("tpch/q6.sql")),
    ("q10", include_str!("tpch/q10.sql")),
    ("q12", include_str!("tpch/q12.sql")),
    ("q14", include_str!("tpch/q14.sql")),
    ("q19", include_str!("tpch/q19.sql")),
];

fn scale_factor() -> f64 {
    std::env::var("DIAGON_BENCH_SF")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tpch-all-sf{}", scale_factor()))
}

type Batches = Box<dyn Iterator<Item = RecordBatch>>;

/// A table: name, sort key, schema and a generator of its rows.
type TpchTable = (&'static str, &'static str, SchemaRef, fn(f64) -> Batches);

fn tables() -> Vec<TpchTable> {
    vec![
        (
            "lineitem",
            "l_orderkey",
            LineItemArrow::schema_ref(),
            |sf| {
                Box::new(
                    LineItemArrow::new(LineItemGenerator::new(sf, 1, 1))
                        .with_batch_size(8192)
                        .map(Result::unwrap),
                )
            },
        ),
        ("orders", "o_orderkey", OrderArrow::schema_ref(), |sf| {
            Box::new(
                OrderArrow::new(OrderGenerator::new(sf, 1, 1))
                    .with_batch_size(8192)
                    .map(Result::unwrap),
            )
        }),
        ("customer", "c_custkey", CustomerArrow::schema_ref(), |sf| {
            Box::new(
                CustomerArrow::new(CustomerGenerator::new(sf, 1, 1))
                    .with_batch_size(8192)
                    .map(Result::unwrap),
            )
        }),
        ("part", "p_partkey", PartArrow::schema_ref(), |sf| {
            Box::new(
                PartArrow::new(PartGenerator::new(sf, 1, 1))
                    .with_batch_size(8192)
                    .map(Result::unwrap),
            )
        }),
        (
            "partsupp",
            "ps_partkey",
            PartSuppArrow::schema_ref(),
            |sf| {
                Box::new(
                    PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1))
                        .with_batch_size(8192)
                        .map(Result::unwrap),
                )
            },
        ),
        ("supplier", "s_suppkey", SupplierArrow::schema_ref(), |sf| {
            Box::new(
                SupplierArrow::new(SupplierGenerator::new(sf, 1, 1))
                    .with_batch_size(8192)
                    .map(Result::unwrap),
            )
        }),
        ("nation", "n_nationkey", NationArrow::schema_ref(), |sf| {
            Box::new(NationArrow::new(NationGenerator::new(sf, 1, 1)).map(Result::unwrap))
        }),
        ("region", "r_regionkey", RegionArrow::schema_ref(), |sf| {
            Box::new(RegionArrow::new(RegionGenerator::new(sf, 1, 1)).map(Result::unwrap))
        }),
    ]
}

fn dir_bytes(path: &Path) -> u64 {
    if path.is_file() {
        return path.metadata().map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| dir_bytes(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

fn diagon_storage(dir: &Path) -> diagon::storage::Storage {
    std::fs::create_dir_all(dir).unwrap();
    diagon::storage::Storage::local(dir).unwrap()
}

/// Writes every table in both formats unless present; prints the bytes.
fn prepare(runtime: &tokio::runtime::Runtime) -> PathBuf {
    let dir = data_dir();
    let done = dir.join("done");
    if std::env::var_os("DIAGON_BENCH_RELOAD").is_some() || !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, key, schema, rows) in tables() {
            runtime.block_on(async {
                let options = TableOptions {
                    order_by: vec![key.into()],
                    ..TableOptions::default()
                };
                let storage = diagon_storage(&dir.join(format!("diagon-{name}")));
                let table = Table::create(name, storage, schema.clone(), options)
                    .await
                    .unwrap();
                let mut writer = table.insert();
                for batch in rows(scale_factor()) {
                    writer.write(batch).await.unwrap();
                }
                writer.commit().await.unwrap();
            });
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
                .set_statistics_enabled(EnabledStatistics::Page)
                .build();
            let file = std::fs::File::create(dir.join(format!("{name}.parquet"))).unwrap();
            let mut writer = ArrowWriter::try_new(file, schema, Some(props)).unwrap();
            for batch in rows(scale_factor()) {
                writer.write(&batch).unwrap();
            }
            writer.close().unwrap();
        }
        std::fs::write(&done, b"").unwrap();
    }
    println!("| table | diagon bytes | parquet bytes | diagon/parquet |");
    println!("|---|---:|---:|---:|");
    let (mut total_d, mut total_p) = (0, 0);
    for (name, ..) in tables() {
        let d = dir_bytes(&dir.join(format!("diagon-{name}")));
        let p = dir_bytes(&dir.join(format!("{name}.parquet")));
        println!("| {name} | {d} | {p} | {:.2} |", d as f64 / p as f64);
        total_d += d;
        total_p += p;
    }
    println!(
        "| **all 8** | {total_d} | {total_p} | {:.2} |",
        total_d as f64 / total_p as f64
    );
    dir
}

fn contexts(runtime: &tokio::runtime::Runtime, dir: &Path) -> (SessionContext, SessionContext) {
    let config = || SessionConfig::new().with_target_partitions(2);
    runtime.block_on(async {
        let d = diagon::sql::new_context(config());
        let p = SessionContext::new_with_config(config());
        for (name, ..) in tables() {
            let storage = diagon_storage(&dir.join(format!("diagon-{name}")));
            let table = Table::open(name, storage).await.unwrap().unwrap();
            d.register_table(name, Arc::new(DiagonTableProvider::new(table)))
                .unwrap();
            let file = dir.join(format!("{name}.parquet"));
            p.register_parquet(name, file.to_str().unwrap(), ParquetReadOptions::default())
                .await
                .unwrap();
        }
        (d, p)
    })
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
    let (d, p) = contexts(&runtime, &dir);
    let only = std::env::var("DIAGON_BENCH_QUERIES").ok();
    for (name, sql) in QUERIES {
        if only
            .as_ref()
            .is_some_and(|q| !q.split(',').any(|q| q == name))
        {
            continue;
        }
        let text = |batches: &[RecordBatch]| {
            arrow::util::pretty::pretty_format_batches(batches)
                .unwrap()
                .to_string()
        };
        let (ours, theirs) = (
            runtime.block_on(run(&d, sql)),
            runtime.block_on(run(&p, sql)),
        );
        assert_eq!(
            text(&ours),
            text(&theirs),
            "{name}: diagon and parquet disagree"
        );
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.bench_function("diagon", |b| b.iter(|| runtime.block_on(run(&d, sql))));
        group.bench_function("parquet", |b| b.iter(|| runtime.block_on(run(&p, sql))));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
