//! Streaming merges: random parts (with deleted rows, in both layouts, with
//! and without a sort key) merge into exactly their live rows, in key order
//! with ties in input order, and the row map sends every live input row to
//! the output row that holds it.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use diagon::part::{PartIndex, PartWriter, ReadStats, read_granules};
use diagon::sql::DiagonTableProvider;
use diagon::storage::Storage;
use diagon::table::merge::merge_into;
use diagon::{Table, TableOptions};
use proptest::prelude::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Utf8, false),
        Field::new("j", DataType::Int64, false),
    ]))
}

/// A part's rows: keys (NULL allowed), tagged with their part and row.
fn batch(part: usize, keys: &[Option<i64>]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(keys.to_vec())),
            Arc::new(StringArray::from_iter_values(
                (0..keys.len()).map(|j| format!("p{part}r{j}")),
            )),
            Arc::new(Int64Array::from_iter_values(0..keys.len() as i64)),
        ],
    )
    .unwrap()
}

/// Every row of a part, deleted or not, in part row order.
async fn all_rows(storage: &Storage, part: &PartIndex) -> RecordBatch {
    let schema = schema();
    let mut stats = ReadStats::default();
    let batches = read_granules(
        storage,
        part,
        &[0, 1, 2],
        &schema,
        0..part.num_granules(),
        &mut stats,
    )
    .await
    .unwrap();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

fn row(batch: &RecordBatch, i: usize) -> (Option<i64>, String, i64) {
    let k = batch.column(0).as_primitive::<Int64Type>();
    (
        k.is_valid(i).then(|| k.value(i)),
        batch.column(1).as_string::<i32>().value(i).to_string(),
        batch.column(2).as_primitive::<Int64Type>().value(i),
    )
}

async fn check_merge(parts: Vec<Vec<Option<i64>>>, keyed: bool, wide: bool, deleted_mod: i64) {
    let storage = Storage::memory("memory://merge");
    let options = TableOptions {
        order_by: if keyed { vec!["k".into()] } else { vec![] },
        granularity: 7,
        min_bytes_for_wide_part: if wide { 0 } else { usize::MAX },
        merge: diagon::MergeOptions {
            background: false,
            ..Default::default()
        },
        ..TableOptions::default()
    };
    let batches: Vec<RecordBatch> = parts
        .iter()
        .enumerate()
        .map(|(p, keys)| batch(p, keys))
        .collect();
    let table = crate::common::table_with(storage.clone(), schema(), options, &batches).await;
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(DiagonTableProvider::new(table.clone())))
        .unwrap();
    crate::common::query(&ctx, &format!("DELETE FROM t WHERE j % 3 = {deleted_mod}")).await;

    let snapshot = table.snapshot().await.unwrap();
    let plan = table.plan(&snapshot, &snapshot.parts, &[]).await.unwrap();
    let layout = Table::part_layout(&snapshot);
    let name = diagon::part::writer::new_part_name();
    let mut writer = PartWriter::new(&storage, &name, schema(), layout.clone(), 1, Vec::new());
    let map = merge_into(&plan, &schema(), &layout.key, &mut writer, 5, None)
        .await
        .unwrap();

    // What should come out: every live row, by key (NULLs last), ties in
    // input order then row order.
    let mut inputs = Vec::new();
    let mut expected = Vec::new();
    for (i, entry) in snapshot.parts.iter().enumerate() {
        let index = table.part_index(&entry.name).await.unwrap();
        let rows = all_rows(&storage, &index).await;
        let mask = table.deletion_mask(entry).await.unwrap();
        for r in 0..rows.num_rows() {
            if !mask.as_ref().is_some_and(|m| m.value(r)) {
                expected.push((i, r, row(&rows, r)));
            }
        }
        inputs.push(rows);
    }
    if keyed {
        expected.sort_by_key(|(i, r, (k, _, _))| (k.is_none(), *k, *i, *r));
    }
    assert_eq!(map.output_rows(), expected.len() as u64);
    if expected.is_empty() {
        return;
    }
    let part = writer.finish().await.unwrap();
    let output = all_rows(&storage, &part).await;
    let got: Vec<_> = (0..output.num_rows()).map(|o| row(&output, o)).collect();
    let want: Vec<_> = expected.iter().map(|(_, _, r)| r.clone()).collect();
    assert_eq!(got, want, "merged rows");

    // The row map, row by row.
    let mut seen = 0u64;
    map.for_each(|input, input_row, out| {
        assert_eq!(out, seen, "output rows in order");
        seen += 1;
        assert_eq!(
            row(&inputs[input], input_row as usize),
            got[out as usize],
            "input {input} row {input_row} -> output {out}"
        );
    });
    assert_eq!(seen, expected.len() as u64);
    for (i, (entry, rows)) in snapshot.parts.iter().zip(&inputs).enumerate() {
        let mask = table.deletion_mask(entry).await.unwrap();
        let of_input = map.of_input(i);
        assert_eq!(of_input.len(), rows.num_rows());
        for (r, out) in of_input.iter().enumerate() {
            let deleted = mask.as_ref().is_some_and(|m| m.value(r));
            assert_eq!(out.is_none(), deleted, "input {i} row {r}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn merges_keep_every_live_row_in_order(
        parts in proptest::collection::vec(
            proptest::collection::vec(proptest::option::weighted(0.9, 0i64..30), 1..40),
            1..5,
        ),
        keyed in any::<bool>(),
        wide in any::<bool>(),
        deleted_mod in 0i64..4,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(check_merge(parts, keyed, wide, deleted_mod));
    }
}
