//! INSERT: one statement's batches, whatever their sizes, become parts of
//! at most `insert_block_rows` rows, in input order, each sorted by the
//! key, together holding every row once; with a text index (whose builder
//! runs beside the columns' encoding) the columns are the same.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use diagon::part::{ReadStats, read_granules};
use diagon::storage::Storage;
use diagon::{Table, TableOptions};
use proptest::prelude::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
    ]))
}

/// The input batches; each row's `seq` is its position in the input.
fn batches(keys: &[Vec<Option<i64>>]) -> Vec<RecordBatch> {
    let mut seq = 0;
    keys.iter()
        .map(|keys| {
            let first = seq;
            seq += keys.len() as i64;
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(Int64Array::from(keys.clone())),
                    Arc::new(StringArray::from_iter_values(
                        (first..seq).map(|s| format!("word{} row{s}", s % 7)),
                    )),
                    Arc::new(Int64Array::from_iter_values(first..seq)),
                ],
            )
            .unwrap()
        })
        .collect()
}

/// (key, value, seq) of each row of every part, part by part in row order.
async fn parts(table: &Table) -> Vec<Vec<(Option<i64>, String, i64)>> {
    let schema = schema();
    let snapshot = table.snapshot().await.unwrap();
    let mut parts = Vec::new();
    for entry in &snapshot.parts {
        let index = table.entry_index(entry).await.unwrap();
        let read = read_granules(
            table.storage(),
            &index,
            &[0, 1, 2],
            &schema,
            0..index.num_granules(),
            &mut ReadStats::default(),
        )
        .await
        .unwrap();
        let mut rows = Vec::new();
        for batch in read {
            let (k, v, seq) = (
                batch.column(0).as_primitive::<Int64Type>(),
                batch.column(1).as_string::<i32>(),
                batch.column(2).as_primitive::<Int64Type>(),
            );
            for i in 0..batch.num_rows() {
                rows.push((
                    k.is_valid(i).then(|| k.value(i)),
                    v.value(i).to_string(),
                    seq.value(i),
                ));
            }
        }
        parts.push(rows);
    }
    parts
}

async fn check_insert(
    keys: Vec<Vec<Option<i64>>>,
    keyed: bool,
    indexed: bool,
    block_rows: usize,
    granularity: usize,
) {
    let mut options = HashMap::from([
        ("insert_block_rows".to_string(), block_rows.to_string()),
        ("granularity".to_string(), granularity.to_string()),
        ("merge.background".to_string(), "false".to_string()),
    ]);
    if keyed {
        options.insert("order_by".into(), "k".into());
    }
    if indexed {
        options.insert("text_index".into(), "v".into());
    }
    let options = TableOptions::parse(&options, &schema()).unwrap();
    let table = Table::create("t", Storage::memory("memory://insert"), schema(), options)
        .await
        .unwrap();
    let input = batches(&keys);
    let mut writer = table.insert();
    for batch in &input {
        writer.write(batch.clone()).await.unwrap();
    }
    let total: usize = input.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(writer.commit().await.unwrap(), total as u64);

    let mut parts = parts(&table).await;
    // Part i holds input rows i * block_rows .. (i + 1) * block_rows.
    parts.sort_by_key(|rows| rows.iter().map(|r| r.2).min());
    assert_eq!(parts.len(), total.div_ceil(block_rows));
    let all: Vec<Option<i64>> = keys.concat();
    for (i, rows) in parts.iter().enumerate() {
        let mut seqs: Vec<i64> = rows.iter().map(|r| r.2).collect();
        if keyed {
            // ASC NULLS LAST.
            let order = |k: &Option<i64>| (k.is_none(), *k);
            assert!(
                rows.windows(2).all(|w| order(&w[0].0) <= order(&w[1].0)),
                "part {i} is not sorted by k: {rows:?}"
            );
        } else {
            assert!(seqs.is_sorted(), "part {i} is not in input order");
        }
        seqs.sort_unstable();
        let first = (i * block_rows) as i64;
        let expected: Vec<i64> = (first..(first + block_rows as i64).min(total as i64)).collect();
        assert_eq!(seqs, expected, "rows of part {i}");
        for (k, v, seq) in rows {
            assert_eq!(*k, all[*seq as usize], "key of row {seq}");
            assert_eq!(
                *v,
                format!("word{} row{seq}", seq % 7),
                "value of row {seq}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn an_insert_writes_sorted_parts_of_every_row(
        keys in proptest::collection::vec(
            proptest::collection::vec(proptest::option::weighted(0.9, 0i64..30), 1..50),
            1..8,
        ),
        keyed in any::<bool>(),
        indexed in any::<bool>(),
        block_rows in 1usize..80,
        granularity in 1usize..9,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(check_insert(keys, keyed, indexed, block_rows, granularity));
    }
}
