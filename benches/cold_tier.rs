//! The cold tier: TPC-H lineitem (ordered by l_orderkey) with every part in
//! object storage, an S3 server on loopback answering each request after a
//! simulated latency, against DataFusion reading the same rows as Parquet
//! from the same server, in one run. Queries: Q1, Q6 and a 0.1% key range.
//!
//! Modes: `cold_empty` (a new process: the local read cache emptied, a new
//! table handle; Parquet from a new session), `cold_warm` (a new handle over
//! the read cache a first run filled; Parquet from a new session, which
//! caches nothing across sessions), and `hot` (the table on local disk,
//! Parquet from a local file). Requests and bytes each query costs the
//! server are printed before the timings.
//!
//! `cargo bench --bench cold_tier` (scale factor `DIAGON_BENCH_SF`, default
//! 1; latency `DIAGON_BENCH_LATENCY_MS`, default 20). Data is generated once
//! into the target directory (`DIAGON_BENCH_RELOAD=1` regenerates); the
//! upload to the server, through `diagon_move`'s path, is timed each run.

#[allow(dead_code)]
#[path = "../tests/it/s3.rs"]
mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use diagon::sql::DiagonTableProvider;
use diagon::storage::Storage;
use diagon::table::tier::{CACHE_DIR, Tier};
use diagon::{Table, TableOptions};
use object_store::ObjectStoreExt;
use tpchgen::generators::LineItemGenerator;
use tpchgen_arrow::LineItemArrow;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn scale_factor() -> f64 {
    std::env::var("DIAGON_BENCH_SF")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn latency() -> Duration {
    let ms = std::env::var("DIAGON_BENCH_LATENCY_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_millis(ms)
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cold-sf{}", scale_factor()))
}

fn lineitem() -> LineItemArrow {
    LineItemArrow::new(LineItemGenerator::new(scale_factor(), 1, 1)).with_batch_size(8192)
}

/// Generates the local table and the Parquet file unless they exist.
fn prepare(runtime: &tokio::runtime::Runtime) -> (PathBuf, PathBuf) {
    let dir = data_dir();
    let hot = dir.join("diagon-hot");
    let parquet = dir.join("lineitem.parquet");
    let reload = std::env::var_os("DIAGON_BENCH_RELOAD").is_some();
    if reload || !hot.join("_log").exists() || !parquet.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&hot).unwrap();
        runtime.block_on(async {
            let options = TableOptions {
                order_by: vec!["l_orderkey".into()],
                ..TableOptions::default()
            };
            let table = Table::create(
                "lineitem",
                Storage::local(&hot).unwrap(),
                LineItemArrow::schema_ref(),
                options,
            )
            .await
            .unwrap();
            let mut writer = table.insert();
            for batch in lineitem() {
                writer.write(batch.unwrap()).await.unwrap();
            }
            writer.commit().await.unwrap();
        });
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        let file = std::fs::File::create(&parquet).unwrap();
        let mut writer =
            ArrowWriter::try_new(file, LineItemArrow::schema_ref(), Some(props)).unwrap();
        for batch in lineitem() {
            writer.write(&batch.unwrap()).unwrap();
        }
        writer.close().unwrap();
    }
    (hot, parquet)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

const COLD_PREFIX: &str = "lineitem";
const PARQUET_KEY: &str = "parquet/lineitem.parquet";

fn cold_storage(server: &s3::S3Server) -> Storage {
    Storage::new(
        server.store(),
        object_store::path::Path::from(COLD_PREFIX),
        server.url(COLD_PREFIX),
    )
}

/// A copy of the hot table with every part moved to the server, and the
/// Parquet file uploaded next to it; prints what the upload took.
fn upload(
    runtime: &tokio::runtime::Runtime,
    server: &s3::S3Server,
    hot: &Path,
    parquet: &Path,
) -> PathBuf {
    let cold = data_dir().join("diagon-cold");
    let _ = std::fs::remove_dir_all(&cold);
    copy_dir(hot, &cold);
    runtime.block_on(async {
        let table = Table::open("lineitem", Storage::local(&cold).unwrap())
            .await
            .unwrap()
            .unwrap();
        let mut tiers = table.cached_snapshot().options.tiers.clone();
        tiers.cold_location = Some(server.url(COLD_PREFIX));
        table.set_tiers(tiers).await.unwrap();
        table.attach_location(&server.url(COLD_PREFIX), cold_storage(server));
        let started = Instant::now();
        let moved = table.move_parts(Tier::Cold, None).await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "move to the cold tier: {} parts, {} bytes in {secs:.1} s ({:.0} MB/s, read back and compared)",
            moved.parts,
            moved.bytes,
            moved.bytes as f64 / secs / 1e6
        );
        let bytes = std::fs::read(parquet).unwrap();
        let mut upload = server
            .store()
            .put_multipart(&object_store::path::Path::from(PARQUET_KEY))
            .await
            .unwrap();
        for chunk in bytes.chunks(10 << 20) {
            upload
                .put_part(bytes::Bytes::copy_from_slice(chunk).into())
                .await
                .unwrap();
        }
        upload.complete().await.unwrap();
    });
    cold
}

fn config() -> SessionConfig {
    SessionConfig::new().with_target_partitions(2)
}

/// A new handle on the cold table (nothing decoded in memory); with `empty`
/// the local read cache is emptied first.
async fn cold_session(server: &s3::S3Server, cold: &Path, empty: bool) -> SessionContext {
    if empty {
        let _ = std::fs::remove_dir_all(cold.join(CACHE_DIR));
    }
    let table = Table::open("lineitem", Storage::local(cold).unwrap())
        .await
        .unwrap()
        .unwrap();
    table.attach_location(&server.url(COLD_PREFIX), cold_storage(server));
    let ctx = diagon::sql::new_context(config());
    ctx.register_table("lineitem", Arc::new(DiagonTableProvider::new(table)))
        .unwrap();
    ctx
}

async fn hot_session(hot: &Path) -> SessionContext {
    let table = Table::open("lineitem", Storage::local(hot).unwrap())
        .await
        .unwrap()
        .unwrap();
    let ctx = diagon::sql::new_context(config());
    ctx.register_table("lineitem", Arc::new(DiagonTableProvider::new(table)))
        .unwrap();
    ctx
}

/// DataFusion over the Parquet file on the server, in a new session.
async fn parquet_s3_session(server: &s3::S3Server) -> SessionContext {
    let ctx = SessionContext::new_with_config(config());
    let url = url::Url::parse(&server.url("")).unwrap();
    ctx.register_object_store(&url, server.store());
    ctx.register_parquet(
        "lineitem",
        &server.url(PARQUET_KEY),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    ctx
}

async fn parquet_local_session(parquet: &Path) -> SessionContext {
    let ctx = SessionContext::new_with_config(config());
    ctx.register_parquet(
        "lineitem",
        parquet.to_str().unwrap(),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    ctx
}

/// The rows `sql` returns in the session `session` makes, and the GET
/// requests and bytes the server served meanwhile.
async fn measure(
    server: &s3::S3Server,
    session: impl std::future::Future<Output = SessionContext>,
    sql: &str,
) -> (Vec<String>, u64, u64) {
    let (_, gets, bytes) = server.control.counts();
    let ctx = session.await;
    let rows = run(&ctx, sql).await;
    let (_, gets_after, bytes_after) = server.control.counts();
    (rows, gets_after - gets, bytes_after - bytes)
}

async fn run(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (hot, parquet) = prepare(&runtime);
    let server = runtime.block_on(s3::S3Server::start());
    let cold = upload(&runtime, &server, &hot, &parquet);
    server.control.set_latency(latency());
    println!("simulated latency: {:?} per request", latency());

    let max_key = (6_000_000.0 * scale_factor()) as i64;
    let low = max_key / 2;
    let high = low + max_key / 1000;
    let queries = [
        ("q1", include_str!("tpch/q1.sql").to_string()),
        ("q6", include_str!("tpch/q6.sql").to_string()),
        (
            "orderkey_range_0.1pct",
            format!(
                "SELECT count(*), sum(l_extendedprice) FROM lineitem \
                 WHERE l_orderkey BETWEEN {low} AND {high}"
            ),
        ),
    ];
    for (name, sql) in &queries {
        // Same answers everywhere, and what one run costs the server
        // (the session's setup included: Parquet reads its footer there).
        let (expected, _, _) = runtime.block_on(measure(&server, hot_session(&hot), sql));
        let (rows, empty_gets, empty_bytes) =
            runtime.block_on(measure(&server, cold_session(&server, &cold, true), sql));
        assert_eq!(rows, expected, "{name}: cold diagon");
        let (rows, warm_gets, warm_bytes) =
            runtime.block_on(measure(&server, cold_session(&server, &cold, false), sql));
        assert_eq!(rows, expected, "{name}: warm diagon");
        let (rows, parquet_gets, parquet_bytes) =
            runtime.block_on(measure(&server, parquet_s3_session(&server), sql));
        assert_eq!(rows, expected, "{name}: parquet from the server");
        println!(
            "{name}: requests/bytes per query: diagon cold {empty_gets}/{empty_bytes}, \
             diagon warm cache {warm_gets}/{warm_bytes}, parquet {parquet_gets}/{parquet_bytes}"
        );

        let mut group = c.benchmark_group(*name);
        group.sample_size(10);
        group.bench_function("diagon_cold_empty", |b| {
            b.iter_batched(
                || runtime.block_on(cold_session(&server, &cold, true)),
                |ctx| runtime.block_on(run(&ctx, sql)),
                BatchSize::PerIteration,
            )
        });
        group.bench_function("diagon_cold_warm", |b| {
            b.iter_batched(
                || runtime.block_on(cold_session(&server, &cold, false)),
                |ctx| runtime.block_on(run(&ctx, sql)),
                BatchSize::PerIteration,
            )
        });
        group.bench_function("parquet_s3", |b| {
            b.iter_batched(
                || runtime.block_on(parquet_s3_session(&server)),
                |ctx| runtime.block_on(run(&ctx, sql)),
                BatchSize::PerIteration,
            )
        });
        let (d, p) = runtime.block_on(async {
            (
                hot_session(&hot).await,
                parquet_local_session(&parquet).await,
            )
        });
        group.bench_function("diagon_hot", |b| b.iter(|| runtime.block_on(run(&d, sql))));
        group.bench_function("parquet_local", |b| {
            b.iter(|| runtime.block_on(run(&p, sql)))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
