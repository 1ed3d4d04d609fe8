//! Outside data never panics or over-allocates: sizes read from files are
//! checked against the real bounds before they size anything, so files
//! crafted with huge lengths give a clear error without a large
//! allocation; and a panic in one query leaves the table working.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use diagon::TableOptions;
use diagon::encoding::envelope::{self, FileKind};
use diagon::encoding::{Codec, Transform, decode_block, encode_block};
use diagon::part::{PartIndex, column};
use diagon::plan::Pruner;
use diagon::sql::DiagonTableProvider;
use diagon::table::RowMatcher;

/// The system allocator, noting the largest request made on a thread that
/// is being watched.
pub struct Tracking;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = WATCHING.try_with(|w| {
        if w.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` on this thread and returns its result with the largest single
/// allocation it asked for.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    WATCHING.with(|w| w.set(true));
    let out = f();
    WATCHING.with(|w| w.set(false));
    (out, LARGEST.with(Cell::get))
}

const LIMIT: usize = 32 << 20;

/// A framed block whose header claims `claimed` bytes uncompressed, with a
/// correct checksum.
fn block_claiming(codec: Codec, claimed: u32) -> Vec<u8> {
    let mut block = Vec::new();
    encode_block(codec, &[7u8; 1000], &mut block).unwrap();
    block[4..8].copy_from_slice(&claimed.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&block[..12]);
    crc.update(&block[16..]);
    block[12..16].copy_from_slice(&crc.finalize().to_le_bytes());
    block
}

#[test]
fn a_block_claiming_gigabytes_is_rejected_without_allocating_them() {
    for codec in [Codec::Lz4, Codec::Zstd(3), Codec::None] {
        let block = block_claiming(codec, u32::MAX);
        let (result, largest) = largest_allocation(|| decode_block(&block));
        let error = result.expect_err("a block claiming 4 GiB");
        assert!(error.contains("uncompressed"), "{codec}: {error}");
        assert!(largest < LIMIT, "{codec}: allocated {largest} bytes");
    }
}

#[test]
fn a_granule_claiming_a_billion_rows_is_rejected() {
    let values: ArrayRef = Arc::new(Int64Array::from_iter_values(0..100));
    for transforms in [vec![], vec![Transform::T64], vec![Transform::Delta]] {
        let mut payload = Vec::new();
        column::encode(values.as_ref(), &transforms, &mut payload).unwrap();
        payload[..4].copy_from_slice(&(1u32 << 30).to_le_bytes());
        let (result, largest) =
            largest_allocation(|| column::decode(&Buffer::from(payload.clone()), &DataType::Int64));
        let error = result.expect_err("a granule of a billion rows");
        assert!(error.contains("rows"), "{error}");
        assert!(largest < LIMIT, "{transforms:?}: allocated {largest} bytes");
    }
}

/// A sealed part index whose granule table's first message claims a body
/// of a terabyte.
#[tokio::test]
async fn a_part_index_claiming_a_huge_message_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(0..100))],
    )
    .unwrap();
    let table = crate::common::table_with(
        crate::common::local_storage(dir.path()),
        schema,
        TableOptions::default(),
        &[batch],
    )
    .await;
    let part = table.cached_snapshot().parts[0].name.clone();
    let file = dir.path().join("parts").join(&part).join("index.dgi");
    let bytes = std::fs::read(&file).unwrap();
    let body = envelope::open("index", FileKind::PartIndex, &bytes).unwrap();
    let json_len = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
    let stream_at = 4 + json_len;
    for (what, crafted) in [
        ("metadata", craft_metadata_length(body, stream_at)),
        ("body", craft_body_length(body, stream_at)),
    ] {
        let sealed = envelope::seal(FileKind::PartIndex, &crafted);
        let (result, largest) = largest_allocation(|| PartIndex::decode("index.dgi", &sealed));
        let error = result.expect_err("a crafted granule table").to_string();
        assert!(error.contains("granule table"), "{what}: {error}");
        assert!(largest < LIMIT, "{what}: allocated {largest} bytes");
    }
}

/// The first IPC message's metadata length set to 2 GiB.
fn craft_metadata_length(body: &[u8], stream_at: usize) -> Vec<u8> {
    let mut crafted = body.to_vec();
    assert_eq!(
        &crafted[stream_at..stream_at + 4],
        &[0xff; 4],
        "continuation"
    );
    crafted[stream_at + 4..stream_at + 8].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    crafted
}

/// The record batch message's body length set to a terabyte (the field's
/// bytes patched in place; flatbuffers store it inline).
fn craft_body_length(body: &[u8], stream_at: usize) -> Vec<u8> {
    let mut crafted = body.to_vec();
    let stream = &body[stream_at..];
    // Skip the schema message to the record batch message.
    let mut pos = 0;
    for _ in 0..2 {
        let len = u32::from_le_bytes(stream[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let header = &stream[pos + 8..pos + 8 + len];
        let message = arrow::ipc::root_as_message(header).unwrap();
        let body_len = message.bodyLength();
        if body_len > 0 {
            let needle = body_len.to_le_bytes();
            let at = header
                .windows(8)
                .position(|w| w == needle)
                .expect("the body length in the message");
            let target = stream_at + pos + 8 + at;
            crafted[target..target + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
            return crafted;
        }
        pos += 8 + len + body_len as usize;
    }
    panic!("no record batch message");
}

#[tokio::test]
async fn a_read_past_a_short_file_is_rejected_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"short").unwrap();
    let storage = crate::common::local_storage(dir.path());
    let huge = 1u64 << 40;
    // The read runs on this thread for local storage.
    let future = storage.get_range("f", 0..huge, huge);
    let (result, largest) = largest_allocation(|| futures::executor::block_on(future));
    let error = result.expect_err("a read past the end").to_string();
    assert!(error.contains("truncated"), "{error}");
    assert!(largest < LIMIT, "allocated {largest} bytes");
}

/// A matcher that panics while rows are being matched.
struct Panics;

impl RowMatcher for Panics {
    fn pruners(&self) -> Vec<Arc<dyn Pruner>> {
        Vec::new()
    }

    fn matches(&self, _batch: &RecordBatch) -> diagon::Result<BooleanArray> {
        panic!("a bug in a predicate");
    }

    fn is_update(&self) -> bool {
        false
    }

    fn update(&self, matched: &RecordBatch) -> diagon::Result<RecordBatch> {
        Ok(matched.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_statement_leaves_the_table_working() {
    let dir = tempfile::tempdir().unwrap();
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let batch = |from: i64| {
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(from..from + 50))],
        )
        .unwrap()
    };
    let options = TableOptions {
        order_by: vec!["id".into()],
        old_parts_lifetime: 0,
        ..TableOptions::default()
    };
    let table = crate::common::table_with(
        crate::common::local_storage(dir.path()),
        schema.clone(),
        options,
        &[batch(0), batch(100)],
    )
    .await;
    let running = table.clone();
    let outcome = tokio::spawn(async move { running.mutate("DELETE", &Panics).await }).await;
    assert!(
        outcome.is_err_and(|e| e.is_panic()),
        "the statement panicked"
    );

    // Everything still works on the same handle.
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table.clone())))
        .unwrap();
    crate::common::query(&ctx, "INSERT INTO t VALUES (1000)").await;
    crate::common::query(&ctx, "DELETE FROM t WHERE id < 10").await;
    table.optimize(true).await.unwrap();
    table.collect_garbage().await.unwrap();
    let rows = crate::common::query(&ctx, "SELECT count(*), sum(id) FROM t").await;
    let sum: i64 = (10..50).chain(100..150).sum::<i64>() + 1000;
    assert!(rows.contains(&format!("| 91       | {sum} ")), "{rows}");
}
