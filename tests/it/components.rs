//! Part components are read block by block: one block costs its own bytes
//! (and the directory once), and damage to one block is reported naming
//! the part, the component and the block.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use diagon::index::skip::SkipIndexReader;
use diagon::sql::DiagonTableProvider;
use diagon::{Table, TableOptions};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("host", DataType::Utf8, false),
    ]))
}

/// 40 granules of 50 rows, each with hosts of its own between an 'aaa' and
/// a 'zzz' (so min/max prune nothing).
async fn table(dir: &std::path::Path) -> Arc<Table> {
    let ids: Vec<i64> = (0..2000).collect();
    let hosts: Vec<String> = ids
        .iter()
        .map(|i| match i % 50 {
            0 => "aaa".to_string(),
            1 => "zzz".to_string(),
            _ => format!("host-{}-{}", i / 50, i % 7),
        })
        .collect();
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(hosts)),
        ],
    )
    .unwrap();
    let options: std::collections::HashMap<String, String> = [
        ("order_by", "id"),
        ("granularity", "50"),
        ("skip_index.host", "bloom_filter(0.01)"),
        ("merge.background", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let options = TableOptions::parse(&options, &schema()).unwrap();
    crate::common::table_with(
        crate::common::local_storage(dir),
        schema(),
        options,
        &[batch],
    )
    .await
}

#[tokio::test]
async fn reading_one_block_reads_only_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let written = table(dir.path()).await;
    let part = written.cached_snapshot().parts[0].name.clone();
    let (storage, faults) = crate::crash::counting_storage(dir.path());
    let table = Table::open("t", storage.clone()).await.unwrap().unwrap();
    let index = table.part_index(&part).await.unwrap();
    let meta = index.meta.components[0].clone();
    assert_eq!(
        (meta.kind.as_str(), meta.columns.as_slice()),
        ("skip_index", ["host".to_string()].as_slice())
    );
    let reader = SkipIndexReader::open(&storage, &index, "host", &DataType::Utf8)
        .await
        .unwrap()
        .expect("the part has the index");
    faults.reset_reads();
    let block = reader.block(17).await.unwrap().expect("block 17");
    assert_eq!(faults.reads(), 2, "the directory, then the block");
    let file = std::fs::read(dir.path().join("parts").join(&part).join(&meta.file)).unwrap();
    let offsets = block_offsets(&file, meta.directory);
    assert_eq!(offsets.len(), 41, "a block per granule");
    assert_eq!(
        faults.bytes_read(),
        meta.directory[1] + offsets[18] - offsets[17],
        "exactly the directory and block 17"
    );
    // The block answers for its own granule's hosts.
    let hashes = diagon::index::skip::value_hashes(&StringArray::from(vec!["host-17-3"])).unwrap();
    assert!(block.may_contain(hashes[0].unwrap()));
    // The directory is read once: another block costs its own bytes only.
    faults.reset_reads();
    reader.block(3).await.unwrap().expect("block 3");
    assert_eq!(faults.reads(), 1);
    assert_eq!(faults.bytes_read(), offsets[4] - offsets[3]);
}

/// The offsets of the blocks of a component file, from its directory.
fn block_offsets(file: &[u8], directory: [u64; 2]) -> Vec<u64> {
    let at = directory[0] as usize;
    let (payload, _) =
        diagon::encoding::decode_block(&file[at..at + directory[1] as usize]).unwrap();
    payload.as_slice()[4..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_index_block_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let written = table(dir.path()).await;
    let part = written.cached_snapshot().parts[0].name.clone();
    let index = written.part_index(&part).await.unwrap();
    let meta = index.meta.components[0].clone();
    let path = dir.path().join("parts").join(&part).join(&meta.file);
    let mut file = std::fs::read(&path).unwrap();
    let offsets = block_offsets(&file, meta.directory);
    // A bit in the middle of block 12's payload.
    let at = ((offsets[12] + offsets[13]) / 2) as usize;
    file[at] ^= 0x10;
    std::fs::write(&path, &file).unwrap();

    let table = Table::open("t", crate::common::local_storage(dir.path()))
        .await
        .unwrap()
        .unwrap();
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table)))
        .unwrap();
    let error = ctx
        .sql("SELECT count(*) FROM t WHERE host = 'host-30-1'")
        .await
        .unwrap()
        .collect()
        .await
        .expect_err("a damaged block is an error, not a silent answer")
        .to_string();
    for needle in [
        format!("part '{part}'"),
        "component skip_index(host)".to_string(),
        "block 12".to_string(),
        meta.file.clone(),
        "table 't'".to_string(),
    ] {
        assert!(error.contains(&needle), "{needle} missing from: {error}");
    }
    // A query the damaged block does not serve still answers.
    let rows = crate::common::query(&ctx, "SELECT count(*) FROM t WHERE id < 100").await;
    assert!(rows.contains("| 100 "), "{rows}");
}
