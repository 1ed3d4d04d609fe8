//! TPC-H lineitem in diagon (ordered by l_orderkey) against the same rows in
//! Parquet (zstd, page index) read by DataFusion, in one run.
//!
//! `cargo bench --bench tpch_lineitem` (scale factor from `DIAGON_BENCH_SF`,
//! default 1). Data is generated once into the target directory and reused;
//! the load numbers are printed when it is generated
//! (`DIAGON_BENCH_RELOAD=1` forces a new load).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use diagon::sql::DiagonTableProvider;
use diagon::{Table, TableOptions};
use tpchgen::generators::LineItemGenerator;
use tpchgen_arrow::LineItemArrow;

/// Both engines run on the allocator datafusion-cli and DataFusion's own
/// benchmarks use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn scale_factor() -> f64 {
    std::env::var("DIAGON_BENCH_SF")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tpch-sf{}", scale_factor()))
}

fn lineitem() -> LineItemArrow {
    LineItemArrow::new(LineItemGenerator::new(scale_factor(), 1, 1)).with_batch_size(8192)
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

/// Generates and loads both copies unless they exist; prints load numbers.
fn prepare(runtime: &tokio::runtime::Runtime) -> (PathBuf, PathBuf) {
    let dir = data_dir();
    let diagon_dir = dir.join("diagon-lineitem");
    let parquet_file = dir.join("lineitem.parquet");
    let reload = std::env::var_os("DIAGON_BENCH_RELOAD").is_some();
    if reload || !diagon_dir.join("_log").exists() || !parquet_file.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();

        let started = Instant::now();
        let rows = runtime.block_on(async {
            let storage = diagon_storage(&diagon_dir);
            let options = TableOptions {
                order_by: vec!["l_orderkey".into()],
                ..TableOptions::default()
            };
            let table = Table::create("lineitem", storage, LineItemArrow::schema_ref(), options)
                .await
                .unwrap();
            let mut writer = table.insert();
            for batch in lineitem() {
                writer.write(batch.unwrap()).await.unwrap();
            }
            writer.commit().await.unwrap()
        });
        let diagon_secs = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        let file = std::fs::File::create(&parquet_file).unwrap();
        let mut writer =
            ArrowWriter::try_new(file, LineItemArrow::schema_ref(), Some(props)).unwrap();
        for batch in lineitem() {
            writer.write(&batch.unwrap()).unwrap();
        }
        writer.close().unwrap();
        let parquet_secs = started.elapsed().as_secs_f64();

        let (d, p) = (dir_bytes(&diagon_dir), dir_bytes(&parquet_file));
        println!("load: {rows} rows");
        println!(
            "load diagon:  {:.0} rows/s ({diagon_secs:.1} s), {d} bytes on disk",
            rows as f64 / diagon_secs
        );
        println!(
            "load parquet: {:.0} rows/s ({parquet_secs:.1} s), {p} bytes on disk",
            rows as f64 / parquet_secs
        );
        println!("bytes on disk diagon/parquet: {:.2}", d as f64 / p as f64);
    }
    (diagon_dir, parquet_file)
}

fn diagon_storage(dir: &Path) -> diagon::storage::Storage {
    std::fs::create_dir_all(dir).unwrap();
    diagon::storage::Storage::local(dir).unwrap()
}

fn contexts(
    runtime: &tokio::runtime::Runtime,
    diagon_dir: &Path,
    parquet: &Path,
) -> (SessionContext, SessionContext) {
    let config = || SessionConfig::new().with_target_partitions(2);
    runtime.block_on(async {
        let d = diagon::sql::new_context(config());
        let table = Table::open("lineitem", diagon_storage(diagon_dir))
            .await
            .unwrap()
            .unwrap();
        d.register_table("lineitem", Arc::new(DiagonTableProvider::new(table)))
            .unwrap();
        let p = SessionContext::new_with_config(config());
        p.register_parquet(
            "lineitem",
            parquet.to_str().unwrap(),
            ParquetReadOptions::default(),
        )
        .await
        .unwrap();
        (d, p)
    })
}

async fn run(ctx: &SessionContext, sql: &str) -> usize {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches.iter().map(|b| b.num_rows()).sum()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (diagon_dir, parquet) = prepare(&runtime);
    let (d, p) = contexts(&runtime, &diagon_dir, &parquet);

    // 0.1% of the l_orderkey range (SF1 keys run to 6,000,000).
    let max_key = (6_000_000.0 * scale_factor()) as i64;
    let low = max_key / 2;
    let high = low + max_key / 1000;
    let queries = [
        (
            "orderkey_range_0.1pct",
            format!(
                "SELECT count(*), sum(l_extendedprice) FROM lineitem WHERE l_orderkey BETWEEN {low} AND {high}"
            ),
        ),
        (
            "sum_extendedprice",
            "SELECT sum(l_extendedprice) FROM lineitem".to_string(),
        ),
        (
            "orderkey_desc_limit_10",
            "SELECT * FROM lineitem ORDER BY l_orderkey DESC LIMIT 10".to_string(),
        ),
    ];
    for (name, sql) in &queries {
        // Both engines must return the same rows before they are timed (rows
        // tied on l_orderkey may come in either order).
        let rows = |ctx: &SessionContext| {
            runtime.block_on(async {
                let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                let text = arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string();
                let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                lines.sort();
                lines
            })
        };
        assert_eq!(rows(&d), rows(&p), "{name}: diagon and parquet disagree");
        let mut group = c.benchmark_group(*name);
        group.sample_size(10);
        group.bench_function("diagon", |bench| {
            bench.iter(|| runtime.block_on(run(&d, sql)))
        });
        group.bench_function("parquet", |bench| {
            bench.iter(|| runtime.block_on(run(&p, sql)))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
