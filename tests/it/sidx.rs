//! The secondary index (sidx), against a brute-force reference: every
//! element kept in a vector, filtered and sorted by (key, series, write
//! order) for each query. Replays BanyanDB's sidx behaviours, strictly.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, UInt64Type};
use diagon::sidx::{
    Backpressure, Element, MergeRequest, MergeSelection, Options, Order, QueryRequest, Sidx,
    TagFilter, TagType, TagValue,
};
use diagon::storage::{Faults, Storage, Strike};
use futures::{StreamExt, TryStreamExt};
use proptest::prelude::*;

/// One element as the reference keeps it.
#[derive(Debug, Clone)]
struct Row {
    series: u64,
    key: i64,
    /// Write order.
    seq: u64,
    data: Vec<u8>,
    tags: Vec<(String, TagValue)>,
    flushed: bool,
}

impl Row {
    fn tag(&self, name: &str) -> Option<&TagValue> {
        self.tags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// What a query returns, row by row: series, key, data, projected tags.
type Out = (u64, i64, Vec<u8>, Vec<Option<TagValue>>);

#[derive(Debug, Default)]
struct Reference {
    rows: Vec<Row>,
    next_seq: u64,
}

impl Reference {
    fn write(&mut self, elements: &[Element]) {
        for e in elements {
            self.rows.push(Row {
                series: e.series_id,
                key: e.key,
                seq: self.next_seq,
                data: e.data.clone(),
                tags: e
                    .tags
                    .iter()
                    .map(|t| (t.name.clone(), t.value.clone()))
                    .collect(),
                flushed: false,
            });
            self.next_seq += 1;
        }
    }

    fn flush(&mut self) {
        self.rows.iter_mut().for_each(|r| r.flushed = true);
    }

    /// A crash: what was not flushed is gone.
    fn crash(&mut self) {
        self.rows.retain(|r| r.flushed);
    }

    fn query(&self, q: &QueryRequest) -> Vec<Out> {
        let mut rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| q.series_ids.is_empty() || q.series_ids.contains(&r.series))
            .filter(|r| q.min_key.is_none_or(|m| r.key >= m))
            .filter(|r| q.max_key.is_none_or(|m| r.key <= m))
            .filter(|r| q.filter.as_ref().is_none_or(|f| matches(f, r)))
            .collect();
        rows.sort_by_key(|r| (r.key, r.series, r.seq));
        if q.order == Order::Desc {
            rows.reverse();
        }
        let mut seen = HashSet::new();
        rows.into_iter()
            .filter(|r| !q.distinct_data || seen.insert(r.data.clone()))
            .take(q.limit.unwrap_or(usize::MAX))
            .map(|r| {
                let tags = q.tags.iter().map(|t| r.tag(t).cloned()).collect();
                (r.series, r.key, r.data.clone(), tags)
            })
            .collect()
    }
}

/// Lucene-free brute force of a tag filter on one row.
fn matches(f: &TagFilter, r: &Row) -> bool {
    let holds = |v: &TagValue, want: &TagValue| match (v, want) {
        (TagValue::StrList(items), TagValue::Str(s)) => items.contains(s),
        (TagValue::IntList(items), TagValue::Int(n)) => items.contains(n),
        (TagValue::BytesList(items), TagValue::Bytes(b)) => items.contains(b),
        (v, want) => v == want,
    };
    match f {
        TagFilter::Eq(tag, want) => r.tag(tag).is_some_and(|v| holds(v, want)),
        TagFilter::In(tag, wants) => r
            .tag(tag)
            .is_some_and(|v| wants.iter().any(|w| holds(v, w))),
        TagFilter::Range { tag, min, max } => match r.tag(tag) {
            Some(TagValue::Int(n)) => min.is_none_or(|m| *n >= m) && max.is_none_or(|m| *n <= m),
            _ => false,
        },
        TagFilter::And(all) => all.iter().all(|f| matches(f, r)),
        TagFilter::Or(any) => any.iter().any(|f| matches(f, r)),
    }
}

/// The rows of a query's batches.
fn rows_of(batches: &[RecordBatch], tags: &[String]) -> Vec<Out> {
    rows_with(batches, tags, true)
}

/// The rows of a query's batches (`data` empty when not returned).
fn rows_with(batches: &[RecordBatch], tags: &[String], with_data: bool) -> Vec<Out> {
    let first_tag = 2 + usize::from(with_data);
    let mut out = Vec::new();
    for b in batches {
        assert_eq!(
            b.num_columns(),
            first_tag + tags.len(),
            "columns of {:?}",
            b.schema()
        );
        let series = b.column(0).as_primitive::<UInt64Type>();
        let keys = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let data = match with_data {
                true => b.column(2).as_binary::<i32>().value(i).to_vec(),
                false => Vec::new(),
            };
            let tags = (0..tags.len())
                .map(|t| tag_value(b.column(first_tag + t).as_ref(), i))
                .collect();
            out.push((series.value(i), keys.value(i), data, tags));
        }
    }
    out
}

fn tag_value(column: &dyn Array, i: usize) -> Option<TagValue> {
    if column.is_null(i) {
        return None;
    }
    Some(match column.data_type() {
        arrow::datatypes::DataType::Utf8 => {
            TagValue::Str(column.as_string::<i32>().value(i).into())
        }
        arrow::datatypes::DataType::Int64 => {
            TagValue::Int(column.as_primitive::<Int64Type>().value(i))
        }
        arrow::datatypes::DataType::Binary => {
            TagValue::Bytes(column.as_binary::<i32>().value(i).to_vec())
        }
        _ => {
            let list = column.as_list::<i32>().value(i);
            match list.data_type() {
                arrow::datatypes::DataType::Utf8 => TagValue::StrList(
                    list.as_string::<i32>()
                        .iter()
                        .map(|s| s.unwrap().to_string())
                        .collect(),
                ),
                arrow::datatypes::DataType::Int64 => {
                    TagValue::IntList(list.as_primitive::<Int64Type>().values().to_vec())
                }
                _ => TagValue::BytesList(
                    list.as_binary::<i32>()
                        .iter()
                        .map(|s| s.unwrap().to_vec())
                        .collect(),
                ),
            }
        }
    })
}

async fn run(index: &Sidx, q: &QueryRequest) -> Vec<RecordBatch> {
    index
        .query(q.clone())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Runs `q` on the index and the reference and compares them, with every
/// batch within the batch size.
async fn check(index: &Sidx, reference: &Reference, q: &QueryRequest) {
    let batches = run(index, q).await;
    for b in &batches {
        assert!(b.num_rows() > 0, "an empty batch");
        assert!(b.num_rows() <= q.batch_size, "a batch over the batch size");
    }
    let mut got = rows_with(&batches, &q.tags, q.data);
    let strip = |mut rows: Vec<Out>| {
        if !q.data {
            rows.iter_mut().for_each(|r| r.2.clear());
        }
        rows
    };
    if q.order != Order::Unordered {
        assert_eq!(got, strip(reference.query(q)), "query {q:?}");
        return;
    }
    // Any order: the rows are some `limit` of those that match.
    let all = QueryRequest {
        order: Order::Asc,
        limit: None,
        ..q.clone()
    };
    let mut want = strip(reference.query(&all));
    let key = |r: &Out| (r.0, r.1, r.2.clone(), format!("{:?}", r.3));
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(
        got.len(),
        want.len().min(q.limit.unwrap_or(usize::MAX)),
        "query {q:?}"
    );
    let mut at = 0;
    for row in &got {
        while at < want.len() && key(&want[at]) != key(row) {
            at += 1;
        }
        assert!(
            at < want.len(),
            "query {q:?} returned {row:?}, which does not match"
        );
        at += 1;
    }
}

fn options(granularity: usize) -> Options {
    Options {
        granularity,
        ..Options::default()
    }
}

fn storage(dir: &std::path::Path) -> Storage {
    crate::common::local_storage(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ranges_are_inclusive_and_order_is_strict_across_parts() {
    let dir = tempfile::tempdir().unwrap();
    let index = Sidx::create(storage(dir.path()), options(2)).await.unwrap();
    let mut reference = Reference::default();
    // Series 1 and 2 with overlapping keys, written in three parts (two
    // flushed, one in memory), with equal keys across and within parts.
    let parts: [Vec<Element>; 3] = [
        vec![
            Element::new(1, 10, b"a".to_vec()),
            Element::new(2, 10, b"b".to_vec()),
            Element::new(1, 30, b"c".to_vec()),
            Element::new(2, 5, b"d".to_vec()),
        ],
        vec![
            Element::new(2, 20, b"e".to_vec()),
            Element::new(1, 10, b"f".to_vec()),
            Element::new(1, 20, b"g".to_vec()),
            Element::new(2, 40, b"h".to_vec()),
            Element::new(2, 20, b"i".to_vec()),
        ],
        vec![
            Element::new(1, 10, b"j".to_vec()),
            Element::new(2, 30, b"k".to_vec()),
            Element::new(3, 10, b"l".to_vec()),
        ],
    ];
    for (i, part) in parts.iter().enumerate() {
        index.write(part).await.unwrap();
        reference.write(part);
        if i < 2 {
            index.flush().await.unwrap();
            reference.flush();
        }
    }
    let stats = index.stats().await.unwrap();
    assert_eq!((stats.disk_parts, stats.memory_parts), (2, 1));
    for order in [Order::Asc, Order::Desc] {
        for batch_size in [1, 2, 3, 100] {
            for (min, max) in [
                (None, None),
                (Some(10), Some(10)),
                (Some(20), Some(20)),
                (Some(11), Some(19)),
                (Some(10), Some(30)),
                (None, Some(10)),
                (Some(30), None),
            ] {
                for series in [vec![1], vec![2], vec![1, 2], vec![2, 1, 3], vec![]] {
                    let q = QueryRequest::new()
                        .series(series)
                        .keys(min, max)
                        .order(order)
                        .batch_size(batch_size);
                    check(&index, &reference, &q).await;
                    check(&index, &reference, &q.clone().limit(3)).await;
                }
            }
        }
    }
    // Equal (series, key): write order, exactly reversed descending.
    let q = QueryRequest::new().series([1]).keys(Some(10), Some(10));
    let data: Vec<Vec<u8>> = rows_of(&run(&index, &q).await, &[])
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(data, vec![b"a".to_vec(), b"f".to_vec(), b"j".to_vec()]);
    let desc = rows_of(&run(&index, &q.clone().order(Order::Desc)).await, &[]);
    let desc: Vec<Vec<u8>> = desc.into_iter().map(|r| r.2).collect();
    assert_eq!(desc, vec![b"j".to_vec(), b"f".to_vec(), b"a".to_vec()]);
}

fn tagged() -> Vec<Element> {
    vec![
        Element::new(1, 1, b"d1".to_vec())
            .tag("service", "checkout")
            .tag("status", 200)
            .tag("labels", vec!["slow", "db"]),
        Element::new(1, 2, b"d2".to_vec())
            .tag("service", "cart")
            .tag("status", 500),
        // No tags at all.
        Element::new(2, 3, b"d3".to_vec()),
        Element::new(2, 4, b"d4".to_vec())
            .tag("service", "checkout")
            .tag("labels", vec!["db"])
            .tag("blob", vec![0u8, 1, 2]),
        Element::new(3, 5, b"d5".to_vec())
            .tag("status", 404)
            .tag("codes", vec![1i64, 2, 3]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_and_projection_match_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let index = Sidx::create(storage(dir.path()), options(2)).await.unwrap();
    let mut reference = Reference::default();
    let elements = tagged();
    // Half on disk, half in memory.
    index.write(&elements[..3]).await.unwrap();
    reference.write(&elements[..3]);
    index.flush().await.unwrap();
    reference.flush();
    index.write(&elements[3..]).await.unwrap();
    reference.write(&elements[3..]);
    let filters = vec![
        TagFilter::eq("service", "checkout"),
        TagFilter::eq("service", "nowhere"),
        TagFilter::eq("status", 500),
        TagFilter::eq("service", "checkout").and(TagFilter::eq("status", 200)),
        TagFilter::eq("service", "cart").or(TagFilter::range("status", Some(400), None)),
        TagFilter::eq("labels", "db"),
        TagFilter::eq("labels", "slow"),
        TagFilter::is_in("labels", vec!["slow".into(), "fast".into()]),
        TagFilter::is_in("service", vec!["cart".into(), "checkout".into()]),
        TagFilter::range("status", Some(200), Some(404)),
        TagFilter::range("status", None, Some(200)),
        TagFilter::eq("blob", vec![0u8, 1, 2]),
        TagFilter::eq("codes", 2),
        // A tag never written matches nothing.
        TagFilter::eq("unknown", "x"),
        TagFilter::eq("unknown", "x").or(TagFilter::eq("status", 404)),
    ];
    let all_tags = ["service", "status", "labels", "blob", "codes"];
    for filter in filters {
        for order in [Order::Asc, Order::Desc] {
            let q = QueryRequest::new()
                .filter(filter.clone())
                .tags(all_tags)
                .order(order);
            check(&index, &reference, &q).await;
            check(&index, &reference, &q.clone().series([1, 2])).await;
        }
    }
    // Projected tags come back, also after a flush and with a subset.
    index.flush().await.unwrap();
    reference.flush();
    for tags in [vec![], vec!["labels"], vec!["codes", "service"]] {
        let q = QueryRequest::new().tags(tags);
        check(&index, &reference, &q).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_and_reopen_restore_exactly_the_flushed_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut reference = Reference::default();
    {
        let index = Sidx::create(storage(dir.path()), options(3)).await.unwrap();
        let first: Vec<Element> = (0..20)
            .map(|i| Element::new(1 + i % 3, i as i64 % 7, format!("x{i}").into_bytes()))
            .collect();
        index.write(&first).await.unwrap();
        reference.write(&first);
        assert_eq!(index.flush().await.unwrap(), 20);
        reference.flush();
        let lost = vec![Element::new(1, 3, b"lost".to_vec())];
        index.write(&lost).await.unwrap();
        reference.write(&lost);
        check(&index, &reference, &QueryRequest::new()).await;
        // Dropped without close: a crash. Unflushed elements are gone.
    }
    reference.crash();
    let index = Sidx::open(storage(dir.path()), options(3)).await.unwrap();
    check(&index, &reference, &QueryRequest::new()).await;
    // Write sequence numbers go on after the flushed ones: a new element
    // with an equal (series, key) sorts after the old ones.
    let more = vec![Element::new(1, 3, b"after".to_vec())];
    index.write(&more).await.unwrap();
    reference.write(&more);
    check(&index, &reference, &QueryRequest::new().series([1])).await;
    // close() flushes.
    index.close().await.unwrap();
    assert!(
        index.write(&more).await.is_err(),
        "a closed index takes writes"
    );
    drop(index);
    reference.flush();
    let index = Sidx::open(storage(dir.path()), options(3)).await.unwrap();
    check(&index, &reference, &QueryRequest::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_keeps_duplicates_and_the_keep_predicate_drops() {
    let dir = tempfile::tempdir().unwrap();
    let index = Sidx::create(storage(dir.path()), options(2)).await.unwrap();
    let mut reference = Reference::default();
    for round in 0..3 {
        // The same elements each round: duplicates of (series, key, data).
        let elements: Vec<Element> = (0..5)
            .map(|i| Element::new(1 + i % 2, i as i64, format!("v{}", i % 3).into_bytes()))
            .collect();
        index.write(&elements).await.unwrap();
        reference.write(&elements);
        index.flush().await.unwrap();
        reference.flush();
        assert_eq!(index.stats().await.unwrap().disk_parts, round + 1);
    }
    let before = run(&index, &QueryRequest::new()).await;
    let merged = index.merge(MergeRequest::default()).await.unwrap();
    assert_eq!(
        (merged.merges, merged.parts_before, merged.parts_after),
        (1, 3, 1)
    );
    assert_eq!(merged.dropped, 0);
    let after = run(&index, &QueryRequest::new()).await;
    assert_eq!(
        rows_of(&before, &[]),
        rows_of(&after, &[]),
        "a merge changed answers"
    );
    check(&index, &reference, &QueryRequest::new()).await;
    // distinct_data drops repeats in output order.
    check(&index, &reference, &QueryRequest::new().distinct_data(true)).await;
    check(
        &index,
        &reference,
        &QueryRequest::new()
            .distinct_data(true)
            .order(Order::Desc)
            .limit(2),
    )
    .await;
    // The keep predicate drops elements whose data it rejects.
    let keep: diagon::sidx::KeepData = Arc::new(|data: &[u8]| data != b"v1");
    let merged = index
        .merge(MergeRequest {
            parts: MergeSelection::All,
            keep: Some(keep),
        })
        .await
        .unwrap();
    let dropped = reference.rows.iter().filter(|r| r.data == b"v1").count() as u64;
    assert_eq!(merged.dropped, dropped);
    reference.rows.retain(|r| r.data != b"v1");
    check(&index, &reference, &QueryRequest::new()).await;
    // Dropping everything leaves no part.
    let none: diagon::sidx::KeepData = Arc::new(|_| false);
    index
        .merge(MergeRequest {
            parts: MergeSelection::All,
            keep: Some(none),
        })
        .await
        .unwrap();
    reference.rows.clear();
    check(&index, &reference, &QueryRequest::new()).await;
    assert_eq!(index.stats().await.unwrap().disk_parts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let index = Sidx::create(storage(dir.path()), options(8)).await.unwrap();
    let error = |e: diagon::Error| e.to_string();
    let e = error(
        index
            .write(&[Element::new(0, 1, b"x".to_vec())])
            .await
            .unwrap_err(),
    );
    assert!(e.contains("series id 0"), "{e}");
    let e = error(
        index
            .write(&[Element::new(1, 1, Vec::new())])
            .await
            .unwrap_err(),
    );
    assert!(e.contains("data is empty"), "{e}");
    let e = error(
        index
            .write(&[Element::new(1, 1, b"x".to_vec()).tag("", "v")])
            .await
            .unwrap_err(),
    );
    assert!(e.contains("empty name"), "{e}");
    index
        .write(&[Element::new(1, 1, b"x".to_vec()).tag("status", 200)])
        .await
        .unwrap();
    let e = error(
        index
            .write(&[Element::new(1, 2, b"y".to_vec()).tag("status", "ok")])
            .await
            .unwrap_err(),
    );
    assert!(e.contains("tag 'status'") && e.contains("Int"), "{e}");
    let e = error(
        index
            .write(&[
                Element::new(1, 2, b"y".to_vec()).tag("t", 1),
                Element::new(1, 3, b"z".to_vec()).tag("t", "s"),
            ])
            .await
            .unwrap_err(),
    );
    assert!(e.contains("element 1") && e.contains("tag 't'"), "{e}");
    let query_error = |q: QueryRequest| {
        let index = index.clone();
        async move {
            index
                .query(q)
                .await
                .err()
                .expect("an invalid query")
                .to_string()
        }
    };
    let e = query_error(QueryRequest::new().keys(Some(5), Some(4))).await;
    assert!(
        e.contains("minimum key 5 is greater than the maximum key 4"),
        "{e}"
    );
    let e = query_error(QueryRequest::new().batch_size(0)).await;
    assert!(e.contains("batch size 0"), "{e}");
    let e = query_error(QueryRequest::new().series([0])).await;
    assert!(e.contains("series id 0"), "{e}");
    let e = query_error(QueryRequest::new().tags(["nope"])).await;
    assert!(e.contains("'nope'"), "{e}");
    let e = query_error(QueryRequest::new().filter(TagFilter::eq("status", "ok"))).await;
    assert!(e.contains("tag 'status'"), "{e}");
    let e =
        query_error(QueryRequest::new().filter(TagFilter::range("status", Some(3), Some(1)))).await;
    assert!(e.contains("greater than its maximum"), "{e}");
    // Nothing of the refused writes is visible.
    let rows = rows_of(&run(&index, &QueryRequest::new()).await, &[]);
    assert_eq!(rows.len(), 1);
    // Declaring a tag with another type at open is refused too.
    let e = Sidx::open(
        storage(dir.path()),
        Options {
            tags: vec![("status".into(), TagType::Str)],
            ..options(8)
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("tag 'status'"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_is_separate_from_batch_size_and_exact() {
    let dir = tempfile::tempdir().unwrap();
    let index = Sidx::create(storage(dir.path()), options(4)).await.unwrap();
    let elements: Vec<Element> = (0..100)
        .map(|i| Element::new(1 + i % 5, (i * 7 % 31) as i64, vec![i as u8 + 1]))
        .collect();
    index.write(&elements[..60]).await.unwrap();
    index.flush().await.unwrap();
    index.write(&elements[60..]).await.unwrap();
    for (limit, batch_size) in [(1, 1), (7, 3), (10, 100), (100, 7), (1000, 13)] {
        let batches = run(
            &index,
            &QueryRequest::new().limit(limit).batch_size(batch_size),
        )
        .await;
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(total, limit.min(100), "limit {limit} batch {batch_size}");
        assert!(batches.iter().all(|b| b.num_rows() <= batch_size));
        // Every batch but the last is full.
        for b in &batches[..batches.len() - 1] {
            assert_eq!(b.num_rows(), batch_size);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_query_reads_only_the_granules_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let index = Sidx::create(storage(dir.path()), options(16))
        .await
        .unwrap();
    // Five parts, each of 20 series of 40 elements, the keys of part j
    // within [1000 j, 1000 j + 40): a run of each series in each part.
    for j in 0..5i64 {
        let elements: Vec<Element> = (0..800)
            .map(|i| {
                Element::new(
                    1 + i % 20,
                    1000 * j + i as i64 / 20,
                    format!("{i}").into_bytes(),
                )
            })
            .collect();
        index.write(&elements).await.unwrap();
        index.flush().await.unwrap();
    }
    for order in [Order::Asc, Order::Desc] {
        let stream = index
            .query(QueryRequest::new().series([3, 4]).order(order).limit(10))
            .await
            .unwrap();
        let metrics = stream.metrics();
        let rows: usize = stream
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 10);
        let read = metrics
            .granules_read
            .load(std::sync::atomic::Ordering::Relaxed);
        let planned = metrics
            .granules_planned
            .load(std::sync::atomic::Ordering::Relaxed);
        // Ten runs (two series in five parts) of three granules each: the
        // first ten elements lie in the first (last) part, in one or two
        // granules of each series.
        assert!(
            read <= 4,
            "read {read} granules of {planned} for LIMIT 10 ({order:?})"
        );
        assert!(planned >= 20, "planned {planned}");
    }
}

/// An index over a table whose replaced parts are deleted at once when no
/// reader holds them (no grace period for other processes).
async fn index_without_grace(dir: &std::path::Path, granularity: usize) -> Arc<Sidx> {
    let options = Options {
        granularity,
        ..Options::default()
    };
    let mut table_options = diagon::sidx::table_options(&options, &[]);
    table_options.old_parts_lifetime = 0;
    let schema = Arc::new(arrow::datatypes::Schema::new(
        diagon::table::options::SIDX_COLUMNS
            .iter()
            .map(|(n, t)| arrow::datatypes::Field::new(*n, t.clone(), false))
            .collect::<Vec<_>>(),
    ));
    let table = diagon::Table::create("t", storage(dir), schema, table_options)
        .await
        .unwrap();
    Sidx::for_table(table, None).await.unwrap()
}

fn part_dirs(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("parts"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_stream_midway_releases_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_without_grace(dir.path(), 8).await;
    let elements: Vec<Element> = (0..500)
        .map(|i| Element::new(1 + i % 4, i as i64, format!("{i}").into_bytes()))
        .collect();
    for chunk in elements.chunks(100) {
        index.write(chunk).await.unwrap();
        index.flush().await.unwrap();
    }
    let before = part_dirs(dir.path());
    assert_eq!(before.len(), 5, "{before:?}");
    let mut stream = index
        .query(QueryRequest::new().batch_size(10))
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.num_rows(), 10);
    // The merge replaces the parts the stream reads: while it lives, they
    // stay; once it is dropped mid-way, cleanup deletes them.
    index.merge(MergeRequest::default()).await.unwrap();
    index.table().collect_garbage().await.unwrap();
    assert!(
        before.is_subset(&part_dirs(dir.path())),
        "parts deleted under a reader"
    );
    let rest: usize = stream
        .by_ref()
        .take(2)
        .map(|b| b.unwrap().num_rows())
        .collect::<Vec<_>>()
        .await
        .iter()
        .sum();
    assert_eq!(rest, 20, "the stream goes on over its snapshot");
    drop(stream);
    index.table().collect_garbage().await.unwrap();
    let after = part_dirs(dir.path());
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after.is_disjoint(&before));
    let rows: usize = run(&index, &QueryRequest::new())
        .await
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(rows, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_bounded_by_backpressure() {
    let dir = tempfile::tempdir().unwrap();
    let small = Options {
        memory_limit: 64 << 10,
        backpressure: Backpressure::Error,
        ..Options::default()
    };
    let index = Sidx::create(storage(dir.path()), small).await.unwrap();
    let chunk = |n: usize| -> Vec<Element> {
        (0..200)
            .map(|i| Element::new(1, (n * 1000 + i) as i64, vec![7u8; 100]))
            .collect()
    };
    let mut written = 0;
    let error = loop {
        match index.write(&chunk(written)).await {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 100, "memory grew without bound");
    };
    assert!(matches!(error, diagon::Error::Context { .. }));
    assert!(error.to_string().contains("sidx.memory_limit"), "{error}");
    let used = index.stats().await.unwrap().memory_bytes;
    assert!(used <= 64 << 10, "memory parts hold {used} bytes");
    index.flush().await.unwrap();
    assert_eq!(index.stats().await.unwrap().memory_bytes, 0);
    index.write(&chunk(written)).await.unwrap();
    drop(index);

    // Waiting: the write returns once a flush frees memory.
    let dir = tempfile::tempdir().unwrap();
    let waiting = Options {
        memory_limit: 64 << 10,
        backpressure: Backpressure::Wait,
        ..Options::default()
    };
    let index = Sidx::create(storage(dir.path()), waiting).await.unwrap();
    let mut n = 0;
    loop {
        let elements = chunk(n);
        let write = index.write(&elements);
        match tokio::time::timeout(std::time::Duration::from_millis(200), write).await {
            Ok(done) => done.unwrap(),
            Err(_) => break,
        }
        n += 1;
        assert!(n < 100, "memory grew without bound");
    }
    let writer = {
        let index = index.clone();
        tokio::spawn(async move { index.write(&chunk(999)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!writer.is_finished(), "a write passed the bound");
    index.flush().await.unwrap();
    writer.await.unwrap().unwrap();
    let stats = index.stats().await.unwrap();
    assert!(stats.write_waits >= 1);
    assert_eq!(stats.memory_elements, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_fill_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let index = Sidx::create(storage(dir.path()), options(4)).await.unwrap();
    index.write(&tagged()).await.unwrap();
    index.flush().await.unwrap();
    index.write(&tagged()).await.unwrap();
    index.flush().await.unwrap();
    index
        .write(&[Element::new(9, -50, b"m".to_vec())])
        .await
        .unwrap();
    index.merge(MergeRequest::default()).await.unwrap();
    run(&index, &QueryRequest::new()).await;
    let s = index.stats().await.unwrap();
    assert_eq!((s.memory_parts, s.memory_elements), (1, 1));
    assert!(s.memory_bytes > 0);
    assert_eq!((s.disk_parts, s.disk_elements), (1, 10));
    assert!(s.disk_bytes > 0);
    assert_eq!((s.min_key, s.max_key), (Some(-50), Some(5)));
    assert_eq!(s.tags, 5);
    assert_eq!((s.writes, s.elements_written), (3, 11));
    assert_eq!(
        (s.flushes, s.elements_flushed, s.merges, s.queries),
        (2, 10, 1, 1)
    );
    assert!(s.flush_time > std::time::Duration::ZERO);
    assert!(s.merge_time > std::time::Duration::ZERO);
    assert!(s.epoch >= 6 && s.version > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_flush_keeps_either_state() {
    let dir0 = tempfile::tempdir().unwrap();
    // Writes a flush makes: find how many, then fail at each.
    let counting = Faults::none();
    let index = Sidx::create(
        storage(dir0.path()).with_faults(counting.clone()),
        options(4),
    )
    .await
    .unwrap();
    let elements: Vec<Element> = (0..50)
        .map(|i| Element::new(1 + i % 3, i as i64, format!("{i}").into_bytes()))
        .collect();
    index.write(&elements).await.unwrap();
    let before = counting.writes();
    index.flush().await.unwrap();
    let flush_writes = counting.writes() - before;
    assert!(flush_writes >= 2);
    drop(index);
    for fail_at in 0..flush_writes {
        for strike in [Strike::Before, Strike::After] {
            let dir = tempfile::tempdir().unwrap();
            let faults = Faults::none();
            let index = Sidx::create(storage(dir.path()).with_faults(faults.clone()), options(4))
                .await
                .unwrap();
            let first = &elements[..10];
            index.write(first).await.unwrap();
            index.flush().await.unwrap();
            index.write(&elements[10..]).await.unwrap();
            let at = faults.writes() + fail_at;
            faults.fail_from(at, strike);
            let flushed = index.flush().await;
            // A failed flush leaves the elements visible in memory.
            if flushed.is_err() {
                let rows: usize = run(&index, &QueryRequest::new())
                    .await
                    .iter()
                    .map(RecordBatch::num_rows)
                    .sum();
                assert_eq!(rows, 50, "a failed flush lost memory parts");
            }
            drop(index);
            let reopened = Sidx::open(storage(dir.path()), options(4)).await.unwrap();
            let rows: usize = run(&reopened, &QueryRequest::new())
                .await
                .iter()
                .map(RecordBatch::num_rows)
                .sum();
            match (&flushed, strike) {
                (Ok(_), _) => assert_eq!(rows, 50),
                (Err(_), Strike::Before) => assert_eq!(rows, 10, "fail at {fail_at}"),
                (Err(_), _) => assert!(rows == 10 || rows == 50, "fail at {fail_at}: {rows}"),
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<Element>),
    Flush,
    Merge(Option<u8>),
    Crash,
    Query(QueryRequest),
}

fn element() -> impl Strategy<Value = Element> {
    (
        1u64..5,
        -4i64..5,
        0u8..6,
        proptest::option::of(prop_oneof![Just("a"), Just("b"), Just("c")]),
        proptest::option::of(0i64..4),
        proptest::option::of(proptest::collection::vec(
            prop_oneof![Just("x"), Just("y"), Just("z")],
            0..3,
        )),
    )
        .prop_map(|(series, key, data, svc, n, labels)| {
            let mut e = Element::new(series, key, vec![b'd', data]);
            if let Some(svc) = svc {
                e = e.tag("svc", svc);
            }
            if let Some(n) = n {
                e = e.tag("n", n);
            }
            if let Some(labels) = labels {
                e = e.tag("labels", labels);
            }
            e
        })
}

fn filter() -> impl Strategy<Value = TagFilter> {
    let leaf = prop_oneof![
        prop_oneof![Just("a"), Just("b"), Just("q")].prop_map(|v| TagFilter::eq("svc", v)),
        (proptest::option::of(0i64..4), proptest::option::of(0i64..4)).prop_map(|(a, b)| {
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
                other => other,
            };
            TagFilter::range("n", a, b)
        }),
        prop_oneof![Just("x"), Just("z")].prop_map(|v| TagFilter::eq("labels", v)),
        Just(TagFilter::is_in("svc", vec!["a".into(), "c".into()])),
        Just(TagFilter::is_in("labels", vec!["y".into(), "q".into()])),
    ];
    leaf.prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..3).prop_map(TagFilter::And),
            proptest::collection::vec(inner, 1..3).prop_map(TagFilter::Or),
        ]
    })
}

fn query() -> impl Strategy<Value = QueryRequest> {
    (
        proptest::collection::btree_set(1u64..6, 0..4),
        proptest::option::of(-5i64..6),
        proptest::option::of(0i64..6),
        proptest::option::of(filter()),
        proptest::bool::ANY,
        proptest::option::of(1usize..12),
        1usize..6,
        proptest::bool::ANY,
        proptest::bool::ANY,
        0u8..3,
        proptest::bool::ANY,
    )
        .prop_map(
            |(series, min, width, filter, _desc, limit, batch, distinct, project, order, data)| {
                let series: BTreeSet<u64> = series;
                QueryRequest {
                    series_ids: series.into_iter().collect(),
                    min_key: min,
                    max_key: width.map(|w| min.unwrap_or(-5) + w),
                    filter,
                    tags: match project {
                        true => vec!["labels".into(), "svc".into(), "n".into()],
                        false => vec![],
                    },
                    order: [Order::Asc, Order::Desc, Order::Unordered][order as usize],
                    limit,
                    batch_size: batch,
                    // Which repeat an unordered scan drops is unspecified.
                    distinct_data: distinct && order != 2,
                    data,
                }
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(element(), 1..12).prop_map(Op::Write),
        2 => Just(Op::Flush),
        1 => proptest::option::of(0u8..6).prop_map(Op::Merge),
        1 => Just(Op::Crash),
        4 => query().prop_map(Op::Query),
    ]
}

async fn replay(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let declared = Options {
        granularity: 3,
        // Every tag declared, so a query may name one before its first write.
        tags: vec![
            ("svc".into(), TagType::Str),
            ("n".into(), TagType::Int),
            ("labels".into(), TagType::StrList),
        ],
        ..Options::default()
    };
    let mut index = Sidx::create(storage(dir.path()), declared.clone())
        .await
        .unwrap();
    let mut reference = Reference::default();
    for op in ops {
        match op {
            Op::Write(elements) => {
                index.write(&elements).await.unwrap();
                reference.write(&elements);
            }
            Op::Flush => {
                index.flush().await.unwrap();
                reference.flush();
            }
            Op::Merge(drop_data) => {
                let keep: Option<diagon::sidx::KeepData> = drop_data
                    .map(|d| Arc::new(move |data: &[u8]| data[1] != d) as diagon::sidx::KeepData);
                index
                    .merge(MergeRequest {
                        parts: MergeSelection::All,
                        keep,
                    })
                    .await
                    .unwrap();
                if let Some(d) = drop_data {
                    reference.rows.retain(|r| !r.flushed || r.data[1] != d);
                }
            }
            Op::Crash => {
                drop(index);
                reference.crash();
                index = Sidx::open(storage(dir.path()), declared.clone())
                    .await
                    .unwrap();
            }
            Op::Query(q) => check(&index, &reference, &q).await,
        }
    }
    // A last look at everything, both orders.
    check(&index, &reference, &QueryRequest::new()).await;
    check(&index, &reference, &QueryRequest::new().order(Order::Desc)).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sidx_answers_like_a_sorted_vector(ops in proptest::collection::vec(op(), 1..30)) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(replay(ops));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_its_caller_abandons_still_completes_once() {
    let dir = tempfile::tempdir().unwrap();
    let index = Sidx::create(storage(dir.path()), options(4)).await.unwrap();
    let mut reference = Reference::default();
    for round in 0..5 {
        let elements: Vec<Element> = (0..200)
            .map(|i| {
                Element::new(
                    1 + i % 7,
                    (i * 13 % 50) as i64,
                    format!("{round}-{i}").into_bytes(),
                )
            })
            .collect();
        index.write(&elements).await.unwrap();
        reference.write(&elements);
        // Abandoned at once: the flush goes on in its own task.
        let _ = tokio::time::timeout(std::time::Duration::from_micros(1), index.flush()).await;
        check(&index, &reference, &QueryRequest::new()).await;
    }
    index.flush().await.unwrap();
    reference.flush();
    check(&index, &reference, &QueryRequest::new()).await;
    assert_eq!(index.stats().await.unwrap().memory_parts, 0);
    drop(index);
    let index = Sidx::open(storage(dir.path()), options(4)).await.unwrap();
    check(&index, &reference, &QueryRequest::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_flushes_merges_and_queries_see_each_element_once() {
    let dir = tempfile::tempdir().unwrap();
    let index = Sidx::create(storage(dir.path()), options(16))
        .await
        .unwrap();
    const WRITERS: u64 = 3;
    const ROUNDS: u64 = 40;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let index = index.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..ROUNDS {
                let elements: Vec<Element> = (0..25)
                    .map(|i| {
                        // A new tag now and then: schema changes race too.
                        let e = Element::new(
                            1 + (w * 7 + i) % 11,
                            (r * 25 + i) as i64,
                            format!("{w}-{r}-{i}").into_bytes(),
                        );
                        match r % 10 {
                            9 => e.tag(format!("t{w}{r}"), i as i64),
                            _ => e.tag("svc", "x"),
                        }
                    })
                    .collect();
                index.write(&elements).await.unwrap();
            }
        }));
    }
    let maintenance = {
        let index = index.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                index.flush().await.unwrap();
                if i % 5 == 4 {
                    index.merge(MergeRequest::default()).await.unwrap();
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let reader = {
        let index = index.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for _ in 0..60 {
                let batches = run(&index, &QueryRequest::new().order(Order::Desc)).await;
                let rows = rows_of(&batches, &[]);
                let distinct: HashSet<&Vec<u8>> = rows.iter().map(|r| &r.2).collect();
                assert_eq!(distinct.len(), rows.len(), "an element seen twice");
                assert!(
                    rows.len() >= last,
                    "elements went missing: {} after {last}",
                    rows.len()
                );
                assert!(
                    rows.windows(2)
                        .all(|w| (w[0].1, w[0].0) >= (w[1].1, w[1].0))
                );
                last = rows.len();
                tokio::task::yield_now().await;
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    maintenance.await.unwrap();
    reader.await.unwrap();
    index.flush().await.unwrap();
    let total = (WRITERS * ROUNDS * 25) as usize;
    let rows = rows_of(&run(&index, &QueryRequest::new()).await, &[]);
    assert_eq!(rows.len(), total);
    drop(index);
    let index = Sidx::open(storage(dir.path()), options(16)).await.unwrap();
    let rows = rows_of(&run(&index, &QueryRequest::new()).await, &[]);
    assert_eq!(rows.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_a_write_blocked_on_memory_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let waiting = Options {
        memory_limit: 16 << 10,
        backpressure: Backpressure::Wait,
        ..Options::default()
    };
    let index = Sidx::create(storage(dir.path()), waiting.clone())
        .await
        .unwrap();
    let chunk = |n: usize| -> Vec<Element> {
        (0..100)
            .map(|i| Element::new(1, (n * 1000 + i) as i64, vec![1u8; 100]))
            .collect()
    };
    index.write(&chunk(0)).await.unwrap();
    // Two writes wait for memory: a flush admits only one of them.
    let blocked: Vec<_> = (1..3)
        .map(|n| {
            let index = index.clone();
            tokio::spawn(async move { index.write(&chunk(n)).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        blocked.iter().all(|b| !b.is_finished()),
        "a write did not wait"
    );
    // Two closes at once: both succeed, one does the work.
    let (a, b) = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures::future::join(index.close(), index.close()),
    )
    .await
    .expect("close deadlocked");
    a.unwrap();
    b.unwrap();
    for b in blocked {
        b.await.unwrap().unwrap();
    }
    assert!(
        index
            .bulk_write(&arrow::datatypes::Schema::empty())
            .await
            .is_err(),
        "a closed index takes a bulk write"
    );
    assert!(index.write(&chunk(2)).await.is_err());
    drop(index);
    let index = Sidx::open(storage(dir.path()), waiting).await.unwrap();
    let rows: usize = run(&index, &QueryRequest::new())
        .await
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(rows, 300, "close lost a write it let finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_write_commits_once_and_orders_with_memory_parts() {
    let dir = tempfile::tempdir().unwrap();
    let index = Sidx::create(storage(dir.path()), options(8)).await.unwrap();
    let mut reference = Reference::default();
    let first: Vec<Element> = (0..30)
        .map(|i| {
            Element::new(1 + i % 3, i as i64 % 5, format!("m{i}").into_bytes()).tag("svc", "a")
        })
        .collect();
    index.write(&first).await.unwrap();
    reference.write(&first);
    let bulk_elements: Vec<Element> = (0..300)
        .map(|i| {
            Element::new(1 + i % 3, i as i64 % 5, format!("b{i}").into_bytes()).tag("svc", "b")
        })
        .collect();
    let batch = diagon::sidx::element::to_batch(&bulk_elements).unwrap();
    let versions = index.stats().await.unwrap().version;
    let mut bulk = index.bulk_write(&batch.schema()).await.unwrap();
    for i in 0..3 {
        bulk.write(batch.slice(i * 100, 100)).await.unwrap();
    }
    // Nothing visible before the commit.
    assert_eq!(
        rows_of(&run(&index, &QueryRequest::new()).await, &[]).len(),
        30
    );
    assert_eq!(bulk.commit().await.unwrap(), 300);
    reference.write(&bulk_elements);
    assert_eq!(
        index.stats().await.unwrap().version,
        versions + 1,
        "one commit"
    );
    let q = QueryRequest::new().tags(["svc"]);
    check(&index, &reference, &q).await;
    check(&index, &reference, &q.clone().order(Order::Desc)).await;
    // A list tag whose item field is named otherwise is the same tag type.
    let item = arrow::datatypes::Field::new("element", arrow::datatypes::DataType::Utf8, false);
    let values = arrow::array::StringArray::from(vec!["x"]);
    let list = arrow::array::ListArray::new(
        Arc::new(item),
        arrow::buffer::OffsetBuffer::from_lengths([1]),
        Arc::new(values),
        None,
    );
    index
        .write(&[Element::new(1, 1, b"l".to_vec()).tag("labels", vec!["y"])])
        .await
        .unwrap();
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("series_id", arrow::datatypes::DataType::UInt64, false),
        arrow::datatypes::Field::new("key", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new("data", arrow::datatypes::DataType::Binary, false),
        arrow::datatypes::Field::new("labels", list.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(arrow::array::UInt64Array::from(vec![1u64])),
            Arc::new(arrow::array::Int64Array::from(vec![2i64])),
            Arc::new(arrow::array::BinaryArray::from_vec(vec![b"m"])),
            Arc::new(list),
        ],
    )
    .unwrap();
    index.write_batch(batch).await.unwrap();
    let found = run(
        &index,
        &QueryRequest::new().filter(TagFilter::eq("labels", "x")),
    )
    .await;
    assert_eq!(rows_of(&found, &[]).len(), 1);
}
