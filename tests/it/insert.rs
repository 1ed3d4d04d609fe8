//! INSERT: one statement's batches, whatever their sizes, become parts of
//! at most `insert_block_rows` rows, in input order, each sorted by the
//! key, together holding every row once, compact or wide; with a text
//! index (whose builder runs beside the columns' encoding, and whose
//! memory may cut parts early) the columns are the same and every row is
//! found by its own words.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use diagon::part::{ReadStats, read_granules};
use diagon::sql::DiagonTableProvider;
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
        let index = table.entry_index(&snapshot, entry).await.unwrap();
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

/// How the table of a case is laid out.
#[derive(Debug, Clone, Copy)]
struct Layout {
    keyed: bool,
    /// A text index on `v`, and whether its memory budget is small
    /// enough to cut parts early.
    indexed: bool,
    small_budget: bool,
    wide: bool,
    block_rows: usize,
    granularity: usize,
}

async fn check_insert(keys: Vec<Vec<Option<i64>>>, layout: Layout) {
    let block_rows = layout.block_rows;
    let mut options = HashMap::from([
        ("insert_block_rows".to_string(), block_rows.to_string()),
        ("granularity".to_string(), layout.granularity.to_string()),
        ("merge.background".to_string(), "false".to_string()),
    ]);
    if layout.keyed {
        options.insert("order_by".into(), "k".into());
    }
    if layout.wide {
        options.insert("min_bytes_for_wide_part".into(), "0".into());
    }
    let cut_early = layout.indexed && layout.small_budget;
    if layout.indexed {
        options.insert("text_index".into(), "v".into());
    }
    if cut_early {
        options.insert("insert_index_bytes".into(), "1024".into());
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
    parts.sort_by_key(|rows| rows.iter().map(|r| r.2).min());
    if !cut_early {
        assert_eq!(parts.len(), total.div_ceil(block_rows));
    }
    // Each block of `block_rows` input rows (a flush) is written as one
    // part, or as several cut at granules when the index budget is small.
    let mut seen = vec![0; total];
    let all: Vec<Option<i64>> = keys.concat();
    for (i, rows) in parts.iter().enumerate() {
        let seqs: Vec<i64> = rows.iter().map(|r| r.2).collect();
        let flush = seqs[0] as usize / block_rows;
        assert!(
            seqs.iter().all(|&s| s as usize / block_rows == flush),
            "part {i} holds rows of two flushes: {seqs:?}"
        );
        if layout.keyed {
            // ASC NULLS LAST.
            let order = |k: &Option<i64>| (k.is_none(), *k);
            assert!(
                rows.windows(2).all(|w| order(&w[0].0) <= order(&w[1].0)),
                "part {i} is not sorted by k: {rows:?}"
            );
        } else {
            assert!(seqs.is_sorted(), "part {i} is not in input order");
        }
        for (k, v, seq) in rows {
            seen[*seq as usize] += 1;
            assert_eq!(*k, all[*seq as usize], "key of row {seq}");
            assert_eq!(
                *v,
                format!("word{} row{seq}", seq % 7),
                "value of row {seq}"
            );
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "rows seen {seen:?} times");
    if layout.indexed {
        check_text_index(&table, total).await;
    }
}

/// Every row is found by the word only it holds, and the rows sharing a
/// word are all found by it.
async fn check_text_index(table: &Arc<Table>, total: usize) {
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table.clone())))
        .unwrap();
    let found = |sql: String| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let mut seqs: Vec<i64> = batches
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
                .collect();
            seqs.sort_unstable();
            seqs
        }
    };
    for seq in 0..total as i64 {
        let sql = format!("SELECT seq FROM t WHERE match(v, 'row{seq}')");
        assert_eq!(found(sql).await, vec![seq], "row{seq}");
    }
    let word3: Vec<i64> = (0..total as i64).filter(|s| s % 7 == 3).collect();
    assert_eq!(
        found("SELECT seq FROM t WHERE match(v, 'word3')".into()).await,
        word3
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn an_insert_writes_sorted_parts_of_every_row(
        keys in proptest::collection::vec(
            proptest::collection::vec(proptest::option::weighted(0.9, 0i64..30), 1..50),
            1..8,
        ),
        (keyed, indexed, small_budget, wide) in any::<(bool, bool, bool, bool)>(),
        block_rows in 1usize..80,
        granularity in 1usize..9,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let layout = Layout { keyed, indexed, small_budget, wide, block_rows, granularity };
        runtime.block_on(check_insert(keys, layout));
    }
}

/// A table with no columns (which DataFusion's own tables allow) takes
/// rows without values and counts them, through a merge and a reopen.
#[tokio::test]
async fn a_table_without_columns_counts_its_rows() {
    use arrow::array::RecordBatchOptions;
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::common::local_storage(dir.path());
    let empty = Arc::new(Schema::empty());
    let table = Table::create("t", storage.clone(), empty.clone(), TableOptions::default())
        .await
        .unwrap();
    let mut writer = table.insert();
    for rows in [3, 0, 5] {
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(empty.clone(), vec![], &options).unwrap();
        writer.write(batch).await.unwrap();
    }
    assert_eq!(writer.commit().await.unwrap(), 8);
    // Another insert and a full merge of the two parts: the count follows.
    let mut writer = table.insert();
    let options = RecordBatchOptions::new().with_row_count(Some(4));
    writer
        .write(RecordBatch::try_new_with_options(empty.clone(), vec![], &options).unwrap())
        .await
        .unwrap();
    writer.commit().await.unwrap();
    table.optimize(true).await.unwrap();
    assert_eq!(table.snapshot().await.unwrap().parts.len(), 1);
    drop(table);
    let table = Table::open("t", storage).await.unwrap().unwrap();
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table)))
        .unwrap();
    let counted = ctx
        .sql("SELECT count(*) AS n FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n = counted[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(n, 12);
}

/// A dictionary column with narrow keys: refused while a granule could
/// hold more distinct values than its keys index, stored by value and read
/// back as the declared dictionary type otherwise, through a merge too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrow_dictionary_is_bounded_by_the_granularity() {
    let dictionary = DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("d", dictionary.clone(), true),
    ]));
    let options = |granularity: &str| {
        let map: HashMap<String, String> = [("order_by", "id"), ("granularity", granularity)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TableOptions::parse(&map, &schema)
    };
    let error = options("8192").unwrap_err().to_string();
    assert!(
        error.contains("column 'd' of type Dictionary(Int8, Utf8) indexes at most 128"),
        "{error}"
    );
    let dir = tempfile::tempdir().unwrap();
    let table = Table::create(
        "t",
        crate::common::local_storage(dir.path()),
        schema.clone(),
        options("128").unwrap(),
    )
    .await
    .unwrap();
    // A part of 18,000 distinct values, more granules (of 128 rows) than
    // Int8 keys index: its granule statistics must not be one dictionary.
    for commit in 0..3i64 {
        let mut writer = table.insert();
        // Batches of 100 rows: each fits Int8 keys.
        for chunk in 0..60i64 {
            let ids: Vec<i64> = (chunk * 100..(chunk + 1) * 100)
                .map(|i| i * 3 + commit)
                .collect();
            let values =
                StringArray::from_iter(ids.iter().map(|i| (i % 11 != 0).then(|| format!("v{i}"))));
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    arrow::compute::cast(&values, &dictionary).unwrap(),
                ],
            )
            .unwrap();
            writer.write(batch).await.unwrap();
        }
        writer.commit().await.unwrap();
    }
    assert_eq!(table.optimize(true).await.unwrap().0, 1);
    // A part stored as a new one would be is not rewritten again.
    assert_eq!(table.optimize(true).await.unwrap().0, 0);
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table)))
        .unwrap();
    let got = crate::common::query(
        &ctx,
        "SELECT count(d) AS n, count(DISTINCT d) AS k, min(d) AS lo, max(d) AS hi FROM t",
    )
    .await;
    assert!(got.contains("| 16363 | 16363 | v1 | v9998 |"), "{got}");
    let got = crate::common::query(&ctx, "SELECT count(*) AS n FROM t WHERE d = 'v777'").await;
    assert!(got.contains("| 1 |"), "{got}");
    let got = crate::common::query(&ctx, "SELECT arrow_typeof(d) AS t FROM t LIMIT 1").await;
    assert!(got.contains("| Dictionary(Int8, Utf8) |"), "{got}");
}

/// Dictionaries of values Arrow cannot pack back (booleans, nested
/// values) are refused at CREATE, not written and then unreadable.
#[tokio::test]
async fn a_dictionary_that_cannot_be_read_back_is_refused() {
    for value in [DataType::Boolean, DataType::new_list(DataType::Int32, true)] {
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(value));
        let schema = Arc::new(Schema::new(vec![Field::new("d", dictionary.clone(), true)]));
        let dir = tempfile::tempdir().unwrap();
        let error = Table::create(
            "t",
            crate::common::local_storage(dir.path()),
            schema,
            TableOptions::default(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(&format!(
                "column 'd' has type {dictionary}, which diagon does not support"
            )),
            "{error}"
        );
    }
}
