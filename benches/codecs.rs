//! Per codec chain: compression ratio and decode speed on TPC-H columns,
//! granule by granule exactly as parts store them. This is the measurement
//! behind each type's default codec (`CodecChain::default_for`).
//!
//! `cargo bench --bench codecs` (scale factor from `DIAGON_CODEC_SF`,
//! default 0.25). Prints one markdown table row per column and chain.

use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::DataType;
use diagon::encoding::{CodecChain, ValueKind, codec::value_kind, decode_block, encode_block};
use diagon::part::column;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, OrderGenerator, PartGenerator, PartSuppGenerator,
};
use tpchgen_arrow::{CustomerArrow, LineItemArrow, OrderArrow, PartArrow, PartSuppArrow};

/// The allocator the diagon CLI (like datafusion-cli) runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GRANULE: usize = 8192;

fn scale_factor() -> f64 {
    std::env::var("DIAGON_CODEC_SF")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.25)
}

fn concat(batches: impl Iterator<Item = RecordBatch>) -> RecordBatch {
    let batches: Vec<RecordBatch> = batches.collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// TPC-H has no floating-point columns; these are its decimal money columns
/// as the Float64 a user loading the same CSV without a schema would get.
fn floats(lineitem: &RecordBatch, orders: &RecordBatch) -> RecordBatch {
    let cast = |batch: &RecordBatch, name: &str| {
        let array = batch.column_by_name(name).unwrap();
        (
            format!("{name}_f64"),
            arrow::compute::cast(array, &DataType::Float64).unwrap(),
        )
    };
    let columns = [
        cast(lineitem, "l_extendedprice"),
        cast(lineitem, "l_discount"),
        cast(orders, "o_totalprice"),
    ];
    let rows = columns.iter().map(|(_, a)| a.len()).min().unwrap();
    RecordBatch::try_from_iter(columns.into_iter().map(|(n, a)| (n, a.slice(0, rows)))).unwrap()
}

fn tables() -> Vec<(&'static str, RecordBatch)> {
    let mut tables = generated();
    let derived = floats(&tables[0].1, &tables[1].1);
    tables.push(("derived", derived));
    tables
}

fn generated() -> Vec<(&'static str, RecordBatch)> {
    let sf = scale_factor();
    vec![
        (
            "lineitem",
            concat(LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)).map(|b| b.unwrap())),
        ),
        (
            "orders",
            concat(OrderArrow::new(OrderGenerator::new(sf, 1, 1)).map(|b| b.unwrap())),
        ),
        (
            "partsupp",
            concat(PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)).map(|b| b.unwrap())),
        ),
        (
            "part",
            concat(PartArrow::new(PartGenerator::new(sf, 1, 1)).map(|b| b.unwrap())),
        ),
        (
            "customer",
            concat(CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)).map(|b| b.unwrap())),
        ),
    ]
}

fn candidates(data_type: &DataType) -> Vec<&'static str> {
    match value_kind(data_type) {
        Some(ValueKind::Float) => vec!["lz4", "zstd(1)", "gorilla,lz4", "gorilla,zstd(1)"],
        Some(_) => vec![
            "lz4",
            "zstd(1)",
            "zstd(3)",
            "t64",
            "t64,lz4",
            "t64,zstd(1)",
            "delta,lz4",
            "delta,t64,lz4",
            "delta,zstd(1)",
            "doubledelta,lz4",
        ],
        None => vec!["lz4", "zstd(1)", "zstd(3)", "zstd(6)"],
    }
}

/// Encoded blocks of one column, and its uncompressed payload bytes.
fn encode(array: &ArrayRef, chain: &CodecChain) -> (Vec<Vec<u8>>, usize) {
    let mut blocks = Vec::new();
    let mut raw = 0;
    let mut payload = Vec::new();
    for start in (0..array.len()).step_by(GRANULE) {
        let granule = array.slice(start, GRANULE.min(array.len() - start));
        // The ratio is against the plain payload, before any transform.
        payload.clear();
        column::encode(granule.as_ref(), &[], &mut payload).unwrap();
        raw += payload.len();
        payload.clear();
        column::encode(granule.as_ref(), &chain.transforms, &mut payload).unwrap();
        let mut block = Vec::new();
        encode_block(chain.compressor, &payload, &mut block).unwrap();
        blocks.push(block);
    }
    (blocks, raw)
}

/// Best of three full decodes, in seconds.
fn decode_secs(blocks: &[Vec<u8>], data_type: &DataType) -> f64 {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            for block in blocks {
                let (payload, _) = decode_block(block).unwrap();
                std::hint::black_box(column::decode(&payload, data_type).unwrap());
            }
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!(
        "scale factor {}, granules of {GRANULE} rows",
        scale_factor()
    );
    println!("| table.column | type | chain | ratio | decode MB/s |");
    println!("|---|---|---|---:|---:|");
    for (table, batch) in tables() {
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            let data_type = field.data_type();
            let mut best: Option<(f64, String)> = None;
            for name in candidates(data_type) {
                let chain: CodecChain = name.parse().unwrap();
                let (blocks, raw) = encode(array, &chain);
                let stored: usize = blocks.iter().map(Vec::len).sum();
                let secs = decode_secs(&blocks, data_type);
                let ratio = raw as f64 / stored as f64;
                let speed = raw as f64 / secs / 1e6;
                println!(
                    "| {table}.{} | {data_type} | {name} | {ratio:.2} | {speed:.0} |",
                    field.name()
                );
                if best.as_ref().is_none_or(|(r, _)| ratio > *r) {
                    best = Some((ratio, name.to_string()));
                }
            }
            let (ratio, name) = best.unwrap();
            println!(
                "| **{table}.{}** | | best: {name} | {ratio:.2} | |",
                field.name()
            );
        }
    }
}
