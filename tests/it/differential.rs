//! Differential property test: random schemas, data inserted in several
//! commits, random predicates, projections and orderings. Every query must
//! return what DataFusion returns over the same rows in a `MemTable`, with
//! pruning on and with pruning off.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, FixedSizeListArray, Float64Array, Int64Array,
    IntervalDayTimeArray, IntervalMonthDayNanoArray, IntervalYearMonthArray, LargeListArray,
    ListArray, MapArray, RecordBatch, StringArray, StructArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Field, Fields, IntervalDayTime, IntervalMonthDayNano, IntervalUnit, Schema,
    SchemaRef, TimeUnit,
};
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::{Expr, SessionContext, col, lit};
use diagon::TableOptions;
use diagon::sql::DiagonTableProvider;
use proptest::prelude::*;

use crate::common::{local_storage, table_with};

const TYPES: &[fn() -> DataType] = &[
    || DataType::Int8,
    || DataType::Int16,
    || DataType::Int32,
    || DataType::UInt8,
    || DataType::UInt32,
    || DataType::UInt64,
    || DataType::Float32,
    || DataType::Float64,
    || DataType::Boolean,
    || DataType::Utf8,
    || DataType::LargeUtf8,
    || DataType::Utf8View,
    || DataType::Binary,
    || DataType::LargeBinary,
    || DataType::Date32,
    || DataType::Date64,
    || DataType::Timestamp(TimeUnit::Millisecond, None),
    || DataType::Timestamp(TimeUnit::Nanosecond, Some("+02:00".into())),
    || DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
    || DataType::Timestamp(TimeUnit::Microsecond, None),
    || DataType::Decimal128(12, 2),
    || DataType::Time64(TimeUnit::Microsecond),
    || DataType::Decimal32(7, 2),
    || DataType::Decimal64(15, 3),
    || DataType::Decimal256(40, 3),
    || DataType::Interval(IntervalUnit::YearMonth),
    || DataType::Interval(IntervalUnit::DayTime),
    || DataType::Interval(IntervalUnit::MonthDayNano),
    || DataType::FixedSizeBinary(3),
    // Stored by value, read back as declared.
    || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
    || DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Int64)),
    // Nested: lists, a fixed-size list, structs (one inside a list) and a map.
    || DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
    || DataType::LargeList(Arc::new(Field::new_list_field(DataType::Utf8, true))),
    || DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Int64, true)), 2),
    || DataType::Struct(nested_fields()),
    || {
        DataType::List(Arc::new(Field::new_list_field(
            DataType::Struct(nested_fields()),
            true,
        )))
    },
    || {
        let entries = Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Int32, true),
        ]);
        DataType::Map(
            Arc::new(Field::new("entries", DataType::Struct(entries), false)),
            false,
        )
    },
];

fn nested_fields() -> Fields {
    Fields::from(vec![
        Field::new("a", DataType::Int32, true),
        Field::new("b", DataType::Utf8, true),
    ])
}

/// A nested value per row from a small integer `x`: lists of `x mod 4`
/// elements counting up from `x` (an element NULL where it is a multiple
/// of 5), structs whose string field is NULL when `x` is a multiple of 4.
fn nested_column(values: &[Option<i64>], data_type: &DataType) -> ArrayRef {
    let lengths = || {
        values
            .iter()
            .map(|v| v.map_or(0, |x| x.rem_euclid(4) as usize))
            .collect::<Vec<_>>()
    };
    let elements = || -> Vec<Option<i64>> {
        values
            .iter()
            .flat_map(|v| {
                let x = v.unwrap_or(0);
                (0..v.map_or(0, |x| x.rem_euclid(4)))
                    .map(move |j| Some(x + j).filter(|e| e % 5 != 0))
            })
            .collect()
    };
    let nulls: Option<NullBuffer> = Some(values.iter().map(Option::is_some).collect());
    match data_type {
        DataType::List(field) | DataType::LargeList(field) | DataType::Map(field, _) => {
            let child = match field.data_type() {
                DataType::Struct(_) if !matches!(data_type, DataType::Map(..)) => {
                    nested_column(&elements(), field.data_type())
                }
                DataType::Int32 | DataType::Utf8 => column(&elements(), field.data_type()),
                // Map entries: key k<j> (never NULL), the element as value.
                _ => {
                    let keys: Vec<String> = lengths()
                        .iter()
                        .flat_map(|&n| (0..n).map(|j| format!("k{j}")))
                        .collect();
                    let DataType::Struct(fields) = field.data_type() else {
                        unreachable!()
                    };
                    Arc::new(StructArray::new(
                        fields.clone(),
                        vec![
                            Arc::new(StringArray::from(keys)),
                            column(&elements(), &DataType::Int32),
                        ],
                        None,
                    ))
                }
            };
            let offsets = OffsetBuffer::<i32>::from_lengths(lengths());
            match data_type {
                DataType::List(_) => Arc::new(ListArray::new(field.clone(), offsets, child, nulls)),
                DataType::LargeList(_) => Arc::new(LargeListArray::new(
                    field.clone(),
                    OffsetBuffer::from_lengths(lengths()),
                    child,
                    nulls,
                )),
                _ => Arc::new(MapArray::new(
                    field.clone(),
                    offsets,
                    child.as_struct().clone(),
                    nulls,
                    false,
                )),
            }
        }
        DataType::FixedSizeList(field, 2) => {
            let pairs: Vec<Option<i64>> = values
                .iter()
                .flat_map(|v| {
                    let x = v.unwrap_or(0);
                    [Some(x), Some(x * 3).filter(|_| x % 3 != 0)]
                })
                .collect();
            Arc::new(FixedSizeListArray::new(
                field.clone(),
                2,
                column(&pairs, &DataType::Int64),
                nulls,
            ))
        }
        DataType::Struct(fields) => {
            // Under a NULL struct its fields hold values (a reader must not
            // see them): 40, beyond every real value.
            let numbers: Vec<Option<i64>> = values.iter().map(|v| v.or(Some(40))).collect();
            let strings: Vec<Option<i64>> =
                numbers.iter().map(|v| v.filter(|x| x % 4 != 0)).collect();
            Arc::new(StructArray::new(
                fields.clone(),
                vec![
                    column(&numbers, &DataType::Int32),
                    column(&strings, &DataType::Utf8),
                ],
                nulls,
            ))
        }
        other => unreachable!("{other} is not drawn"),
    }
}

#[derive(Debug, Clone)]
struct Case {
    types: Vec<usize>,
    /// Per commit, per row: the key and one small integer per column (None = NULL).
    commits: Vec<Vec<(i64, Vec<Option<i64>>)>>,
    order_by_extra: Option<usize>,
    keyed: bool,
    granularity: usize,
    predicates: Vec<Pred>,
    /// Applied to both tables before the queries.
    mutations: Vec<Mutation>,
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(Pred),
    /// `UPDATE SET column = <a value of that column from some row> WHERE pred`.
    Update(Pred, usize, usize),
    /// `diagon_optimize`, by the policy or into one part (diagon only).
    Optimize(bool),
}

fn mutation(columns: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        pred(columns).prop_map(Mutation::Delete),
        (pred(columns), 0..columns, any::<usize>()).prop_map(|(p, c, r)| Mutation::Update(p, c, r)),
        any::<bool>().prop_map(Mutation::Optimize),
    ]
}

#[derive(Debug, Clone)]
enum Pred {
    Cmp {
        column: usize,
        op: u8,
        row: usize,
    },
    Between {
        column: usize,
        low: usize,
        high: usize,
    },
    In {
        column: usize,
        rows: Vec<usize>,
    },
    IsNull {
        column: usize,
        negated: bool,
    },
    Not(Box<Pred>),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
}

fn pred(columns: usize) -> impl Strategy<Value = Pred> {
    let leaf = prop_oneof![
        (0..columns, 0u8..6, any::<usize>()).prop_map(|(column, op, row)| Pred::Cmp {
            column,
            op,
            row
        }),
        (0..columns, any::<usize>(), any::<usize>())
            .prop_map(|(column, low, high)| Pred::Between { column, low, high }),
        (0..columns, proptest::collection::vec(any::<usize>(), 1..4))
            .prop_map(|(column, rows)| Pred::In { column, rows }),
        (0..columns, any::<bool>()).prop_map(|(column, negated)| Pred::IsNull { column, negated }),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|p| Pred::Not(Box::new(p))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Pred::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Pred::Or(Box::new(a), Box::new(b))),
        ]
    })
}

fn case() -> impl Strategy<Value = Case> {
    proptest::collection::vec(0..TYPES.len(), 1..4).prop_flat_map(|types| {
        let n = types.len();
        let row = (
            -40i64..40,
            proptest::collection::vec(proptest::option::weighted(0.85, -20i64..20), n),
        );
        (
            Just(types),
            proptest::collection::vec(proptest::collection::vec(row, 0..120), 1..4),
            proptest::option::of(0..n),
            any::<bool>(),
            1usize..40,
            proptest::collection::vec(pred(n + 1), 3),
            proptest::collection::vec(mutation(n + 1), 0..4),
        )
            .prop_map(
                |(types, commits, order_by_extra, keyed, granularity, predicates, mutations)| {
                    Case {
                        types,
                        commits,
                        order_by_extra,
                        keyed,
                        granularity,
                        predicates,
                        mutations,
                    }
                },
            )
    })
}

fn schema(case: &Case) -> SchemaRef {
    let mut fields = vec![Field::new("k", DataType::Int64, false)];
    for (i, &t) in case.types.iter().enumerate() {
        fields.push(Field::new(format!("c{i}"), TYPES[t](), true));
    }
    Arc::new(Schema::new(fields))
}

/// Builds a column of `data_type` from small integers: floats get fractions,
/// NaN and infinity; strings sort differently from numbers.
fn column(values: &[Option<i64>], data_type: &DataType) -> ArrayRef {
    match data_type {
        _ if data_type.is_nested() => nested_column(values, data_type),
        DataType::Float32 | DataType::Float64 => {
            let floats = Float64Array::from(
                values
                    .iter()
                    .map(|v| {
                        v.map(|x| match x {
                            -20 => f64::NAN,
                            19 => f64::INFINITY,
                            x => x as f64 / 4.0,
                        })
                    })
                    .collect::<Vec<_>>(),
            );
            cast(&floats, data_type).unwrap()
        }
        DataType::Binary | DataType::LargeBinary => {
            let strings = cast(&Int64Array::from(values.to_vec()), &DataType::Utf8).unwrap();
            cast(&strings, data_type).unwrap()
        }
        DataType::Boolean => cast(
            &Int64Array::from(values.iter().map(|v| v.map(|x| x % 2)).collect::<Vec<_>>()),
            data_type,
        )
        .unwrap(),
        DataType::Time64(_) => cast(
            &Int64Array::from(
                values
                    .iter()
                    .map(|v| v.map(|x| (x + 20) * 1_000_000))
                    .collect::<Vec<_>>(),
            ),
            data_type,
        )
        .unwrap(),
        // Intervals of several fields, equal in one and not the others.
        DataType::Interval(IntervalUnit::YearMonth) => Arc::new(IntervalYearMonthArray::from(
            values
                .iter()
                .map(|v| v.map(|x| x as i32))
                .collect::<Vec<_>>(),
        )),
        DataType::Interval(IntervalUnit::DayTime) => Arc::new(IntervalDayTimeArray::from(
            values
                .iter()
                .map(|v| v.map(|x| IntervalDayTime::new(x as i32 / 3, x as i32 * 1000)))
                .collect::<Vec<_>>(),
        )),
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            Arc::new(IntervalMonthDayNanoArray::from(
                values
                    .iter()
                    .map(|v| v.map(|x| IntervalMonthDayNano::new(x as i32 % 3, x as i32, x * 7)))
                    .collect::<Vec<_>>(),
            ))
        }
        // Bytes whose order is not the numbers' order.
        DataType::FixedSizeBinary(3) => Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                values
                    .iter()
                    .map(|v| v.map(|x| [(x * 37) as u8, x as u8, 7])),
                3,
            )
            .unwrap(),
        ),
        _ => cast(&Int64Array::from(values.to_vec()), data_type).unwrap(),
    }
}

fn batches(case: &Case, schema: &SchemaRef) -> Vec<RecordBatch> {
    case.commits
        .iter()
        .map(|rows| {
            let mut arrays: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            ))];
            for (i, _) in case.types.iter().enumerate() {
                let values: Vec<Option<i64>> = rows.iter().map(|r| r.1[i]).collect();
                arrays.push(column(&values, schema.field(i + 1).data_type()));
            }
            RecordBatch::try_new(schema.clone(), arrays).unwrap()
        })
        .collect()
}

/// `array` with every struct field NULL where its struct is (in lists too).
fn well_formed(array: &ArrayRef) -> ArrayRef {
    use diagon::part::stats::with_parent_nulls;
    match array.data_type() {
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let children = s
                .columns()
                .iter()
                .map(|c| well_formed(&with_parent_nulls(c, s.nulls()).unwrap()))
                .collect();
            Arc::new(StructArray::new(
                fields.clone(),
                children,
                s.nulls().cloned(),
            ))
        }
        DataType::List(field) => {
            let l = array.as_list::<i32>();
            Arc::new(ListArray::new(
                field.clone(),
                l.offsets().clone(),
                well_formed(l.values()),
                l.nulls().cloned(),
            ))
        }
        _ => array.clone(),
    }
}

/// A literal taken from the data (or NULL when the table is empty).
fn literal(all: &[ArrayRef], column: usize, row: usize) -> ScalarValue {
    let array = &all[column];
    if array.is_empty() {
        return ScalarValue::try_from(array.data_type()).unwrap();
    }
    ScalarValue::try_from_array(array, row % array.len()).unwrap()
}

fn to_expr(p: &Pred, schema: &Schema, all: &[ArrayRef]) -> Expr {
    let name = |c: usize| col(format!("\"{}\"", schema.field(c).name()));
    match p {
        Pred::Cmp { column, op, row } => {
            let (c, v) = match schema.field(*column).data_type() {
                // A struct's field, as `s.a > 3` (pruned by its leaf min/max).
                DataType::Struct(_) => {
                    let value = match literal(all, *column, *row) {
                        ScalarValue::Struct(s) if s.is_valid(0) => {
                            ScalarValue::try_from_array(s.column(0), 0).unwrap()
                        }
                        _ => ScalarValue::Int32(None),
                    };
                    (
                        datafusion::functions::core::expr_fn::get_field(name(*column), "a"),
                        lit(value),
                    )
                }
                _ => (name(*column), lit(literal(all, *column, *row))),
            };
            match op {
                0 => c.eq(v),
                1 => c.not_eq(v),
                2 => c.lt(v),
                3 => c.lt_eq(v),
                4 => c.gt(v),
                _ => c.gt_eq(v),
            }
        }
        Pred::Between { column, low, high } => name(*column).between(
            lit(literal(all, *column, *low)),
            lit(literal(all, *column, *high)),
        ),
        Pred::In { column, rows } => name(*column).in_list(
            rows.iter()
                .map(|r| lit(literal(all, *column, *r)))
                .collect(),
            false,
        ),
        Pred::IsNull { column, negated } => {
            if *negated {
                name(*column).is_not_null()
            } else {
                name(*column).is_null()
            }
        }
        Pred::Not(inner) => !to_expr(inner, schema, all),
        Pred::And(a, b) => to_expr(a, schema, all).and(to_expr(b, schema, all)),
        Pred::Or(a, b) => to_expr(a, schema, all).or(to_expr(b, schema, all)),
    }
}

async fn answer(
    ctx: &SessionContext,
    table: &str,
    filter: Option<Expr>,
    order_desc: Option<(bool, usize)>,
) -> String {
    let mut df = ctx.table(table).await.unwrap();
    if let Some(filter) = filter {
        df = df.filter(filter).unwrap();
    }
    let columns: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| col(format!("\"{}\"", f.name())))
        .collect();
    df = match order_desc {
        // ORDER BY the key with a limit: what the ordered scan serves.
        Some((desc, limit)) => df
            .sort(vec![col("k").sort(!desc, desc)])
            .unwrap()
            .limit(0, Some(limit))
            .unwrap()
            .select(vec![col("k")])
            .unwrap(),
        None => df
            .sort(columns.iter().map(|c| c.clone().sort(true, true)).collect())
            .unwrap(),
    };
    // DataFusion's own optimizer refuses some predicates over nested
    // values (comparing lists of structs holding NULLs): both engines must
    // then fail alike.
    match df.collect().await {
        Ok(batches) => arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string(),
        Err(e) if e.to_string().contains("Uncomparable values") => format!("error: {e}"),
        Err(e) => panic!("{e}"),
    }
}

async fn check(case: Case) {
    let schema = schema(&case);
    let batches = batches(&case, &schema);
    let dir = tempfile::tempdir().unwrap();
    // Layouts and adaptive granularity vary with the case (without growing
    // the strategy): wide or compact parts, byte-cut granules or not.
    let mut options = TableOptions {
        granularity: case.granularity,
        min_bytes_for_wide_part: if case.granularity.is_multiple_of(2) {
            0
        } else {
            usize::MAX
        },
        granularity_bytes: if case.granularity.is_multiple_of(3) {
            1024
        } else {
            10 << 20
        },
        ..TableOptions::default()
    };
    // Skip indexes on the key and the first column (where the type allows),
    // so every predicate also runs through them.
    let kinds = [
        "set(4)",
        "bloom_filter(0.05) granularity 2",
        "set(1000) granularity 3",
    ];
    let kind = kinds[case.granularity % kinds.len()];
    for field in schema.fields().iter().take(2) {
        let spec: diagon::index::skip::SkipSpec = kind.parse().unwrap();
        if spec.check(field.data_type()).is_ok() {
            options.skip_indexes.insert(field.name().clone(), spec);
        }
    }
    if case.keyed {
        options.order_by.push("k".into());
        if let Some(extra) = case.order_by_extra.filter(|&e| {
            let t = schema.field(e + 1).data_type();
            !t.is_nested() && !matches!(t, DataType::Dictionary(..))
        }) {
            // Every type as the first key too (its primary index, runs
            // and reverse scans), in some of the cases.
            match case.granularity % 3 == 1 {
                true => options.order_by.insert(0, format!("c{extra}")),
                false => options.order_by.push(format!("c{extra}")),
            }
        }
    }
    // In half the cases, every other part moves to a cold location on an
    // S3 server on loopback (deletes then write masks there, merges leave
    // those parts alone).
    let server = match case.granularity % 2 {
        1 => Some(crate::s3::S3Server::start().await),
        _ => None,
    };
    if let Some(server) = &server {
        options.tiers.cold_location = Some(server.url("cold"));
    }
    let table = table_with(local_storage(dir.path()), schema.clone(), options, &batches).await;
    if let Some(server) = &server {
        let url = server.url("cold");
        let cold = diagon::storage::Storage::new(
            server.store(),
            object_store::path::Path::from("cold"),
            url.clone(),
        );
        table.attach_location(&url, cold);
        let snapshot = table.snapshot().await.unwrap();
        let names: Vec<String> = snapshot
            .parts
            .iter()
            .step_by(2)
            .map(|p| p.name.clone())
            .collect();
        table
            .move_parts(diagon::table::tier::Tier::Cold, Some(&names))
            .await
            .unwrap();
    }
    let all: Vec<ArrayRef> = (0..schema.fields().len())
        .map(|c| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            arrow::compute::concat(&parts).unwrap()
        })
        .collect();

    let ctx = crate::common::context(3);
    let diagon = Arc::new(DiagonTableProvider::new(table.clone()));
    // DataFusion's own tables hand out a struct's field values under NULL
    // structs (get_field returns the field array as it is); diagon reads
    // them as NULL, as Parquet does. The oracle gets well-formed structs.
    let well_formed: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let columns = b.columns().iter().map(well_formed).collect();
            RecordBatch::try_new(b.schema(), columns).unwrap()
        })
        .collect();
    let memory = Arc::new(MemTable::try_new(schema.clone(), vec![well_formed]).unwrap());
    ctx.register_table("d", diagon.clone()).unwrap();
    ctx.register_table("m", memory.clone()).unwrap();
    let state = ctx.state();
    for m in &case.mutations {
        let providers: [Arc<dyn TableProvider>; 2] = [diagon.clone(), memory.clone()];
        let mut counts = Vec::new();
        for provider in providers {
            let plan = match m {
                Mutation::Delete(p) => provider
                    .delete_from(&state, vec![to_expr(p, &schema, &all)])
                    .await
                    .unwrap(),
                Mutation::Update(p, column, row) => {
                    let name = schema.field(*column).name().clone();
                    let value = Expr::Literal(literal(&all, *column, *row), None);
                    provider
                        .update(&state, vec![(name, value)], vec![to_expr(p, &schema, &all)])
                        .await
                        .unwrap()
                }
                Mutation::Optimize(full) => {
                    table.optimize(*full).await.unwrap();
                    break;
                }
            };
            let out = datafusion::physical_plan::collect(plan, ctx.task_ctx())
                .await
                .unwrap();
            counts.push(
                arrow::util::pretty::pretty_format_batches(&out)
                    .unwrap()
                    .to_string(),
            );
        }
        if counts.len() == 2 {
            assert_eq!(counts[0], counts[1], "rows matched by {m:?}");
        }
    }

    for pruning in ["true", "false"] {
        ctx.sql(&format!("SET diagon.enable_pruning = {pruning}"))
            .await
            .unwrap();
        for p in &case.predicates {
            let filter = to_expr(p, &schema, &all);
            let expected = answer(&ctx, "m", Some(filter.clone()), None).await;
            let actual = answer(&ctx, "d", Some(filter.clone()), None).await;
            assert_eq!(actual, expected, "filter {filter} with pruning={pruning}");
        }
        assert_eq!(
            answer(&ctx, "d", None, None).await,
            answer(&ctx, "m", None, None).await
        );
        for (desc, limit) in [(false, 7), (true, 7), (true, 1000)] {
            assert_eq!(
                answer(&ctx, "d", None, Some((desc, limit))).await,
                answer(&ctx, "m", None, Some((desc, limit))).await,
                "ORDER BY k desc={desc} LIMIT {limit}"
            );
        }
        // Aggregates the optimizer may answer from statistics.
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                // DataFusion has no min/max of maps or lists of structs:
                // of nested values their sizes, or a struct's field.
                let value = match f.data_type() {
                    DataType::Struct(_) => format!("\"{}\"['a']", f.name()),
                    t if t.is_nested() => format!("cardinality(\"{}\")", f.name()),
                    _ => format!("\"{}\"", f.name()),
                };
                format!(
                    "min({value}) AS min{i}, max({value}) AS max{i}, count(\"{0}\") AS n{i}",
                    f.name()
                )
            })
            .collect();
        let sql = format!("SELECT count(*) AS n, {} FROM ", columns.join(", "));
        assert_eq!(
            crate::common::query(&ctx, &format!("{sql} d")).await,
            crate::common::query(&ctx, &format!("{sql} m")).await,
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn diagon_answers_like_a_memtable(case in case()) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(check(case));
    }
}

/// Each type as the first sort key, by hand: a random case draws that
/// rarely, and the primary index, ordered runs and range predicates over
/// many small granules are what such a key exercises.
#[test]
fn every_type_leads_the_sort_key() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let commit = |salt: i64| -> Vec<(i64, Vec<Option<i64>>)> {
        (0..80)
            .map(|i| {
                let value = (i * 7 + salt) % 40 - 20;
                (i % 13, vec![(i % 11 != salt).then_some(value)])
            })
            .collect()
    };
    for (t, data_type) in TYPES.iter().enumerate() {
        if data_type().is_nested() || matches!(data_type(), DataType::Dictionary(..)) {
            continue; // nested and dictionary columns cannot be sort keys
        }
        for op in 0..6u8 {
            let row = (op as usize) * 37;
            let predicates = vec![
                Pred::Cmp { column: 1, op, row },
                Pred::Between {
                    column: 1,
                    low: row,
                    high: row + 90,
                },
                Pred::Or(
                    Box::new(Pred::Cmp {
                        column: 1,
                        op: 5 - op,
                        row: row + 3,
                    }),
                    Box::new(Pred::IsNull {
                        column: 1,
                        negated: false,
                    }),
                ),
            ];
            runtime.block_on(check(Case {
                types: vec![t],
                commits: vec![commit(1), commit(4)],
                order_by_extra: Some(0),
                keyed: true,
                // 4 % 3 == 1: the extra column leads the key.
                granularity: 4,
                predicates,
                mutations: if op == 5 {
                    vec![Mutation::Optimize(true)]
                } else {
                    Vec::new()
                },
            }));
        }
    }
}
