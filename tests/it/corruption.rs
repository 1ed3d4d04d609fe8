//! Corruption: every kind of file, with a flipped byte or truncated, gives an
//! error naming the table, part and file; never a panic, never wrong rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use diagon::sql::DiagonTableProvider;
use diagon::{Table, TableOptions};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
        Field::new("x", DataType::Float64, true),
    ]))
}

fn batch() -> RecordBatch {
    let n = 300;
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| (i % 7 != 0).then(|| format!("value {i}"))),
            )),
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| i as f64 * 1.5),
            )),
        ],
    )
    .unwrap()
}

/// Writes a table, returns its directory and the answer of `SQL` over it.
async fn fixture() -> (tempfile::TempDir, String) {
    fixture_with(Layout::Wide).await
}

/// Part layouts: a file per column, or one data file for all (compact).
#[derive(Debug, Clone, Copy)]
enum Layout {
    Wide,
    Compact,
}

async fn fixture_with(layout: Layout) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let options = TableOptions {
        order_by: vec!["id".into()],
        granularity: 64,
        min_bytes_for_wide_part: match layout {
            Layout::Wide => 0,
            Layout::Compact => usize::MAX,
        },
        ..TableOptions::default()
    };
    crate::common::table_with(
        crate::common::local_storage(dir.path()),
        schema(),
        options,
        &[batch()],
    )
    .await;
    let answer = answer(dir.path()).await.expect("intact table answers");
    (dir, answer)
}

const SQL: &str = "SELECT id, s, x FROM t ORDER BY id";

/// Opens the table afresh (no caches) and runs `SQL`.
async fn answer(dir: &Path) -> Result<String, String> {
    let table = Table::open("t", crate::common::local_storage(dir))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no table")?;
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table)))
        .unwrap();
    let batches = ctx
        .sql(SQL)
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string())
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        if entry.to_string_lossy().ends_with(suffix) {
            out.push(entry);
        }
    }
    assert!(!out.is_empty(), "no {suffix} file");
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Byte positions worth damaging: every envelope byte that matters, and a
/// spread of positions through the body.
fn positions(len: usize) -> Vec<usize> {
    let mut at: Vec<usize> = (0..10).collect(); // magic, kind, version
    at.extend(len - 4..len); // end magic
    at.extend((12..len - 8).step_by(((len - 20) / 40).max(1)));
    at
}

/// The damaged file must be named, along with table context, and the
/// intact answer must never be replaced by a different one.
fn assert_named_error(result: Result<String, String>, intact: &str, file: &Path, what: &str) {
    match result {
        Err(message) => {
            let name = file.file_name().unwrap().to_string_lossy();
            assert!(
                message.contains(name.as_ref()),
                "{what}: error does not name {name}: {message}"
            );
            assert!(
                message.contains("table 't'"),
                "{what}: error does not name the table: {message}"
            );
        }
        Ok(rows) => panic!(
            "{what}: damage went unnoticed (same answer: {})",
            rows == intact
        ),
    }
}

async fn damage_each_byte(suffix: &str, name_part: bool) {
    damage_each_byte_in(Layout::Wide, suffix, name_part).await
}

async fn damage_each_byte_in(layout: Layout, suffix: &str, name_part: bool) {
    let (dir, intact) = fixture_with(layout).await;
    assert!(!files(dir.path(), suffix).is_empty(), "no {suffix} file");
    for file in files(dir.path(), suffix) {
        let original = std::fs::read(&file).unwrap();
        for at in positions(original.len()) {
            let mut bytes = original.clone();
            bytes[at] ^= 0x5a;
            std::fs::write(&file, &bytes).unwrap();
            let result = answer(dir.path()).await;
            if let (true, Err(e)) = (name_part, &result) {
                assert!(e.contains("/parts/p_"), "error does not name the part: {e}");
            }
            assert_named_error(
                result,
                &intact,
                &file,
                &format!("{} byte {at}", file.display()),
            );
        }
        for keep in [
            0,
            5,
            12,
            original.len() / 2,
            original.len() - 5,
            original.len() - 1,
        ] {
            std::fs::write(&file, &original[..keep]).unwrap();
            assert_named_error(
                answer(dir.path()).await,
                &intact,
                &file,
                &format!("{} truncated to {keep}", file.display()),
            );
        }
        std::fs::write(&file, &original).unwrap();
        assert_eq!(
            answer(dir.path()).await.unwrap(),
            intact,
            "restored file answers again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_newest_commit_is_reported() {
    // Only the newest log entry is read when a table opens.
    damage_each_byte("00000000000000000001.commit", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_part_indexes_are_reported() {
    damage_each_byte("index.dgi", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_column_files_are_reported() {
    damage_each_byte_in(Layout::Wide, ".bin", true).await;
    damage_each_byte_in(Layout::Compact, "data.bin", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_part_file_is_reported() {
    for (layout, data) in [(Layout::Wide, "c1.bin"), (Layout::Compact, "data.bin")] {
        missing_files_are_reported_in(layout, data).await;
    }
}

async fn missing_files_are_reported_in(layout: Layout, data: &str) {
    let (dir, intact) = fixture_with(layout).await;
    for file in [files(dir.path(), data), files(dir.path(), "index.dgi")].concat() {
        let original = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_named_error(answer(dir.path()).await, &intact, &file, "missing file");
        std::fs::write(&file, original).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_index_cannot_point_outside_the_table() {
    let (dir, intact) = fixture().await;
    let file = files(dir.path(), "index.dgi").remove(0);
    let original = std::fs::read(&file).unwrap();
    let location = file.display().to_string();
    let mut index = diagon::part::PartIndex::decode(&location, &original).unwrap();
    index.meta.columns[1].file = "../../../elsewhere/c1.bin".into();
    std::fs::write(&file, index.encode().unwrap()).unwrap();
    let result = answer(dir.path()).await;
    assert!(
        matches!(&result, Err(e) if e.contains("invalid file name")),
        "{result:?}"
    );
    std::fs::write(&file, &original).unwrap();
    assert_eq!(answer(dir.path()).await.unwrap(), intact);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_out_of_order_are_rejected() {
    let (dir, intact) = fixture().await;
    let file = files(dir.path(), "index.dgi").remove(0);
    let original = std::fs::read(&file).unwrap();
    let index = diagon::part::PartIndex::decode(&file.display().to_string(), &original).unwrap();
    // A sealed, checksummed index whose marks for column 1 run backwards.
    let granules = &index.granules;
    let at = granules.schema().index_of("mark.1").unwrap();
    let mut marks: Vec<u64> = granules
        .column(at)
        .as_any()
        .downcast_ref::<arrow::array::UInt64Array>()
        .unwrap()
        .values()
        .to_vec();
    marks.swap(1, 2);
    let mut columns = granules.columns().to_vec();
    columns[at] = Arc::new(arrow::array::UInt64Array::from(marks));
    let damaged = RecordBatch::try_new(granules.schema(), columns).unwrap();
    let damaged = diagon::part::PartIndex::new(index.meta.clone(), damaged).unwrap();
    std::fs::write(&file, damaged.encode().unwrap()).unwrap();
    let result = answer(dir.path()).await;
    assert!(
        matches!(&result, Err(e) if e.contains("out of order")),
        "{result:?}"
    );
    std::fs::write(&file, &original).unwrap();
    assert_eq!(answer(dir.path()).await.unwrap(), intact);
}
