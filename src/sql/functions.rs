//! Operations as table functions: `diagon_parts('t')` lists a table's live
//! parts, `diagon_columns('t')` its columns with their codecs and sizes,
//! `diagon_terms('t', 'col' [, 'prefix'])` a text index's terms with the
//! live rows holding each, `diagon_optimize('t' [, final])` merges parts
//! and `diagon_move('t', 'cold' | 'hot' [, 'part'])` moves them between
//! tiers, when executed.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, TableReference, plan_err};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use futures::future::BoxFuture;

use super::provider::DiagonTableProvider;
use crate::part::PartIndex;
use crate::table::tier::Tier;
use crate::table::{PartEntry, Snapshot, Table};

/// Which listing a function produces.
#[derive(Debug, Clone)]
enum Listing {
    Parts,
    Columns,
    /// Merge now; `true` merges everything into one part.
    Optimize(bool),
    /// Move parts (one, or all not there yet) to a tier.
    Move {
        tier: Tier,
        part: Option<String>,
    },
    /// A text-indexed column's terms starting with a prefix.
    Terms {
        column: String,
        prefix: String,
    },
}

/// `diagon_parts('t')` or `diagon_columns('t')`.
#[derive(Debug)]
pub struct DiagonListingFunction {
    listing: Listing,
}

impl DiagonListingFunction {
    pub fn parts() -> Self {
        DiagonListingFunction {
            listing: Listing::Parts,
        }
    }

    pub fn columns() -> Self {
        DiagonListingFunction {
            listing: Listing::Columns,
        }
    }

    pub fn optimize() -> Self {
        DiagonListingFunction {
            listing: Listing::Optimize(false),
        }
    }

    pub fn move_parts() -> Self {
        DiagonListingFunction {
            listing: Listing::Move {
                tier: Tier::Cold,
                part: None,
            },
        }
    }

    pub fn terms() -> Self {
        DiagonListingFunction {
            listing: Listing::Terms {
                column: String::new(),
                prefix: String::new(),
            },
        }
    }

    fn name(&self) -> &'static str {
        match self.listing {
            Listing::Parts => "diagon_parts",
            Listing::Columns => "diagon_columns",
            Listing::Optimize(_) => "diagon_optimize",
            Listing::Move { .. } => "diagon_move",
            Listing::Terms { .. } => "diagon_terms",
        }
    }
}

impl TableFunctionImpl for DiagonListingFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let name = |e: &Expr| match e {
            Expr::Literal(ScalarValue::Utf8(Some(n)) | ScalarValue::Utf8View(Some(n)), _) => {
                Some(n.clone())
            }
            _ => None,
        };
        let (table, listing) = match (args.exprs(), self.listing.clone()) {
            ([t, c, rest @ ..], Listing::Terms { .. })
                if name(t).is_some()
                    && name(c).is_some()
                    && rest.len() <= 1
                    && rest.iter().all(|p| name(p).is_some()) =>
            {
                let listing = Listing::Terms {
                    column: name(c).expect("checked"),
                    prefix: rest.first().and_then(name).unwrap_or_default(),
                };
                (name(t), listing)
            }
            (_, Listing::Terms { .. }) => {
                return plan_err!(
                    "diagon_terms() takes a table name, a text-indexed column and \
                     optionally a prefix, as strings, e.g. diagon_terms('docs', 'body', 'wire')"
                );
            }
            ([t, tier, rest @ ..], Listing::Move { .. })
                if name(t).is_some()
                    && name(tier).is_some()
                    && rest.len() <= 1
                    && rest.iter().all(|p| name(p).is_some()) =>
            {
                let tier = Tier::parse(&name(tier).expect("checked"))
                    .map_err(|e| DataFusionError::Plan(format!("diagon_move(): {e}")))?;
                let part = rest.first().and_then(name);
                (name(t), Listing::Move { tier, part })
            }
            (_, Listing::Move { .. }) => {
                return plan_err!(
                    "diagon_move() takes a table name, a tier ('cold' or 'hot') and optionally \
                     a part name, as strings, e.g. diagon_move('logs', 'cold')"
                );
            }
            ([t], listing) if name(t).is_some() => (name(t), listing),
            ([t, Expr::Literal(ScalarValue::Boolean(Some(full)), _)], Listing::Optimize(_))
                if name(t).is_some() =>
            {
                (name(t), Listing::Optimize(*full))
            }
            (_, Listing::Optimize(_)) => {
                return plan_err!(
                    "diagon_optimize() takes a table name as a string and optionally \
                     true to merge into one part, e.g. diagon_optimize('docs', true)"
                );
            }
            _ => {
                return plan_err!(
                    "{}() takes one argument: a table name as a string, e.g. {}('docs')",
                    self.name(),
                    self.name()
                );
            }
        };
        let table = table.expect("matched above");
        Ok(Arc::new(ListingTable {
            listing,
            table: TableReference::from(table.as_str()),
        }))
    }
}

/// The table a listing function returns; it reads the named table when scanned.
#[derive(Debug)]
struct ListingTable {
    listing: Listing,
    table: TableReference,
}

fn parts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("part", DataType::Utf8, false),
        Field::new("level", DataType::UInt32, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("deleted_rows", DataType::UInt64, false),
        Field::new("granules", DataType::UInt64, false),
        Field::new("layout", DataType::Utf8, false),
        Field::new("bytes_on_disk", DataType::UInt64, false),
        Field::new("key_min", DataType::Utf8, true),
        Field::new("key_max", DataType::Utf8, true),
        Field::new(
            "created",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("components", DataType::Utf8, false),
        Field::new("tier", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, true),
    ]))
}

fn move_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("tier", DataType::Utf8, false),
        Field::new("parts_moved", DataType::UInt64, false),
        Field::new("bytes_moved", DataType::UInt64, false),
    ]))
}

fn terms_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("term", DataType::Utf8, false),
        Field::new("doc_freq", DataType::UInt64, false),
    ]))
}

fn optimize_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("merges", DataType::UInt64, false),
        Field::new("parts_before", DataType::UInt64, false),
        Field::new("parts_after", DataType::UInt64, false),
    ]))
}

fn columns_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("column", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("codec", DataType::Utf8, false),
        Field::new("compressed_bytes", DataType::UInt64, false),
        Field::new("uncompressed_bytes", DataType::UInt64, false),
    ]))
}

impl ListingTable {
    /// Finds the diagon table the function names in the session's catalog.
    async fn resolve(&self, state: &dyn Session) -> Result<Arc<Table>> {
        Ok(diagon_provider(state, &self.table).await?.1)
    }
}

/// The provider of the diagon table `table` names in the session's
/// catalog, and the table, or an error saying it is missing or not a
/// diagon table.
pub(crate) async fn diagon_provider(
    state: &dyn Session,
    table: &TableReference,
) -> Result<(Arc<dyn TableProvider>, Arc<Table>)> {
    let options = state.config_options();
    let resolved = table.clone().resolve(
        &options.catalog.default_catalog,
        &options.catalog.default_schema,
    );
    let schema = state
        .catalog_list()
        .catalog(&resolved.catalog)
        .and_then(|c| c.schema(&resolved.schema));
    let provider = match schema {
        Some(schema) => schema.table(&resolved.table).await?,
        None => None,
    };
    let Some(provider) = provider else {
        return plan_err!("table '{table}' not found");
    };
    let any = provider.as_ref() as &dyn std::any::Any;
    let diagon = match any.downcast_ref::<DiagonTableProvider>() {
        Some(d) => Some(d.table().clone()),
        None => any
            .downcast_ref::<super::sidx::SidxProvider>()
            .map(|s| s.table().clone()),
    };
    match diagon {
        Some(diagon) => Ok((provider, diagon)),
        None => plan_err!("table '{table}' is not a diagon table"),
    }
}

#[async_trait]
impl TableProvider for ListingTable {
    fn schema(&self) -> SchemaRef {
        match self.listing {
            Listing::Parts => parts_schema(),
            Listing::Columns => columns_schema(),
            Listing::Optimize(_) => optimize_schema(),
            Listing::Move { .. } => move_schema(),
            Listing::Terms { .. } => terms_schema(),
        }
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = self.resolve(state).await?;
        if let Listing::Optimize(full) = self.listing {
            let what = format!("diagon_optimize({})", table.name());
            return deferred(optimize_schema(), projection, what, move || {
                let table = table.clone();
                Box::pin(async move {
                    let (merges, before, after) = optimize(&table, full).await?;
                    let columns: Vec<ArrayRef> = vec![
                        Arc::new(StringArray::from(vec![table.name().to_string()])),
                        Arc::new(UInt64Array::from(vec![merges as u64])),
                        Arc::new(UInt64Array::from(vec![before as u64])),
                        Arc::new(UInt64Array::from(vec![after as u64])),
                    ];
                    Ok(RecordBatch::try_new(optimize_schema(), columns)?)
                })
            });
        }
        if let Listing::Move { tier, part } = &self.listing {
            let what = format!("diagon_move({}, {})", table.name(), tier.name());
            let (tier, part) = (*tier, part.clone());
            return deferred(move_schema(), projection, what, move || {
                let (table, part) = (table.clone(), part.clone());
                Box::pin(async move {
                    let names = part.map(|p| vec![p]);
                    let moved = table.move_parts(tier, names.as_deref()).await?;
                    let columns: Vec<ArrayRef> = vec![
                        Arc::new(StringArray::from(vec![table.name().to_string()])),
                        Arc::new(StringArray::from(vec![tier.name()])),
                        Arc::new(UInt64Array::from(vec![moved.parts as u64])),
                        Arc::new(UInt64Array::from(vec![moved.bytes])),
                    ];
                    Ok(RecordBatch::try_new(move_schema(), columns)?)
                })
            });
        }
        let snapshot = table.snapshot().await?;
        let indexes = table.part_indexes(&snapshot).await?;
        let batch = match &self.listing {
            Listing::Parts => parts_batch(&snapshot, &indexes)?,
            Listing::Columns => columns_batch(&snapshot, &indexes)?,
            Listing::Terms { column, prefix } => {
                let terms = table.text_terms(&snapshot, column, prefix).await?;
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(StringArray::from_iter_values(terms.iter().map(|t| &t.0))),
                    Arc::new(UInt64Array::from_iter_values(terms.iter().map(|t| t.1))),
                ];
                RecordBatch::try_new(terms_schema(), columns)?
            }
            Listing::Optimize(_) | Listing::Move { .. } => unreachable!("handled above"),
        };
        let exec =
            MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}

/// Computes a batch when the plan executes.
type Run = Box<dyn Fn() -> BoxFuture<'static, Result<RecordBatch>> + Send + Sync>;

/// A one-partition plan whose one batch `run` computes when the plan
/// executes, not when it is planned: EXPLAIN of a table function that acts
/// (merges, flushes, alters) changes nothing.
pub(crate) fn deferred(
    schema: SchemaRef,
    projection: Option<&Vec<usize>>,
    what: String,
    run: impl Fn() -> BoxFuture<'static, Result<RecordBatch>> + Send + Sync + 'static,
) -> Result<Arc<dyn ExecutionPlan>> {
    let stream = Arc::new(Deferred {
        schema: schema.clone(),
        what,
        run: Box::new(run),
    });
    Ok(Arc::new(StreamingTableExec::try_new(
        schema,
        vec![stream],
        projection,
        Vec::<LexOrdering>::new(),
        false,
        None,
    )?))
}

struct Deferred {
    schema: SchemaRef,
    what: String,
    run: Run,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl PartitionStream for Deferred {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once((self.run)()),
        ))
    }
}

/// Merges a table now: a secondary index through its own merge (its
/// snapshot coordinator must introduce the result), others by
/// [`Table::optimize`].
async fn optimize(table: &Arc<Table>, full: bool) -> Result<(usize, usize, usize)> {
    if table.cached_snapshot().options.sidx.is_none() {
        return Ok(table.optimize(full).await?);
    }
    let index = crate::sidx::Sidx::for_table(table.clone(), None).await?;
    let parts = match full {
        true => crate::sidx::MergeSelection::All,
        false => crate::sidx::MergeSelection::Policy,
    };
    let outcome = index
        .merge(crate::sidx::MergeRequest { parts, keep: None })
        .await?;
    table.collect_garbage().await?;
    Ok((outcome.merges, outcome.parts_before, outcome.parts_after))
}

fn parts_batch(snapshot: &Snapshot, indexes: &[Arc<PartIndex>]) -> Result<RecordBatch> {
    let entries: &[PartEntry] = &snapshot.parts;
    let key_range = |index: &PartIndex| -> Result<(Option<String>, Option<String>)> {
        let Some(column) = index
            .meta
            .order_by
            .first()
            .and_then(|k| index.column_position(k))
        else {
            return Ok((None, None));
        };
        let min = datafusion_functions_aggregate_common::min_max::min_batch(index.min(column))?;
        let max = datafusion_functions_aggregate_common::min_max::max_batch(index.max(column))?;
        let show = |v: ScalarValue| (!v.is_null()).then(|| v.to_string());
        Ok((show(min), show(max)))
    };
    let ranges = indexes
        .iter()
        .map(|i| key_range(i))
        .collect::<Result<Vec<_>>>()?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            entries.iter().map(|p| p.name.as_str()),
        )),
        Arc::new(UInt32Array::from_iter_values(
            entries.iter().map(|p| p.level),
        )),
        Arc::new(UInt64Array::from_iter_values(
            entries.iter().map(|p| p.rows),
        )),
        Arc::new(UInt64Array::from_iter_values(
            entries.iter().map(|p| p.rows - p.live_rows()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            indexes.iter().map(|i| i.num_granules() as u64),
        )),
        Arc::new(StringArray::from_iter_values(indexes.iter().map(|i| {
            let compact = i
                .meta
                .columns
                .iter()
                .filter(|c| !c.file.is_empty()) // columns the part lacks
                .all(|c| c.file == crate::part::writer::COMPACT_FILE);
            if compact { "compact" } else { "wide" }
        }))),
        Arc::new(UInt64Array::from_iter_values(
            entries.iter().map(|p| p.bytes),
        )),
        Arc::new(StringArray::from_iter(ranges.iter().map(|r| r.0.clone()))),
        Arc::new(StringArray::from_iter(ranges.iter().map(|r| r.1.clone()))),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(entries.iter().map(|p| p.created_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(indexes.iter().map(|i| {
            let components: Vec<String> = i
                .meta
                .components
                .iter()
                .map(|c| format!("{} {}", c.describe(), c.params))
                .collect();
            components.join(", ")
        }))),
        Arc::new(StringArray::from_iter_values(
            entries.iter().map(|p| Tier::of(p).name()),
        )),
        Arc::new(StringArray::from_iter(
            entries.iter().map(|p| p.location.as_deref()),
        )),
    ];
    RecordBatch::try_new(parts_schema(), columns).map_err(DataFusionError::from)
}

fn columns_batch(snapshot: &Snapshot, indexes: &[Arc<PartIndex>]) -> Result<RecordBatch> {
    let fields = snapshot.schema.fields();
    let mut compressed = vec![0u64; fields.len()];
    let mut uncompressed = vec![0u64; fields.len()];
    for index in indexes {
        for (i, field) in fields.iter().enumerate() {
            if let Some(c) = index.column_position(field.name()) {
                compressed[i] += index.meta.columns[c].compressed_bytes;
                uncompressed[i] += index.meta.columns[c].uncompressed_bytes;
            }
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            fields.iter().map(|f| f.name().as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            fields.iter().map(|f| f.data_type().to_string()),
        )),
        Arc::new(StringArray::from_iter_values(
            fields.iter().map(|f| snapshot.options.codec(f).to_string()),
        )),
        Arc::new(UInt64Array::from(compressed)),
        Arc::new(UInt64Array::from(uncompressed)),
    ];
    RecordBatch::try_new(columns_schema(), columns).map_err(DataFusionError::from)
}
