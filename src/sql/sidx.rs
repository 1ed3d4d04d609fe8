//! The SQL face of a secondary index (see `crate::sidx`): a table created
//! with `OPTIONS ('sidx' 'true')` has the columns `series_id BIGINT
//! UNSIGNED`, `key BIGINT`, `data BYTEA` and its tags, and is read through
//! the index's ordered merge.
//!
//! - Filters on `series_id` (`=`, `IN`), on `key` (comparisons, `BETWEEN`)
//!   and on tags (`=`, `IN`, int ranges, `array_has`/`array_has_any` on
//!   list tags, combined with AND and OR) go into the index's request and
//!   are answered exactly; others are applied above the scan.
//! - The scan yields rows ordered by (key, series_id) ascending; a sort by
//!   `key DESC[, series_id DESC]` is answered by the scan in reverse, and
//!   a LIMIT stops it, so `ORDER BY key DESC LIMIT n` reads only the
//!   granules its rows come from, with no sort.
//! - INSERT writes memory parts (visible at once); `diagon_flush('t')`
//!   persists them, `diagon_optimize('t')` merges.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, UInt64Array};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ScalarValue, SchemaExt, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PhysicalExpr, PlanProperties,
    SortOrderPushdownResult,
};
use futures::{StreamExt, TryStreamExt};

use crate::sidx::{Order, QueryRequest, Sidx, TagFilter, TagType, TagValue};
use crate::table::Table;
use crate::table::options::SIDX_ORDER_BY;

/// Fills in what a `'sidx' 'true'` table leaves implicit: the hidden
/// `_seq` column after `data`, the sort key and merges on request only.
/// Returns the schema with `_seq`, or `None` for a table that is not a
/// secondary index.
pub fn declare(options: &mut HashMap<String, String>, schema: &Schema) -> Option<SchemaRef> {
    let is_sidx = stated_sidx(options) == Some(true);
    if !is_sidx {
        return None;
    }
    set_default(options, "order_by", SIDX_ORDER_BY.join(","));
    set_default(options, "merge.background", "false".into());
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .clone()
                .with_data_type(tag_storage_type(f.data_type()))
        })
        .collect();
    if !fields.iter().any(|f| f.name() == "_seq") {
        let at = fields
            .iter()
            .position(|f| f.name() == "data")
            .map_or(fields.len(), |p| p + 1);
        fields.insert(at, Field::new("_seq", DataType::UInt64, false));
    }
    Some(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

/// What the `sidx` option says, if given (a value that is not a boolean
/// reads as given, for the options parser to refuse).
pub fn stated_sidx(options: &HashMap<String, String>) -> Option<bool> {
    let (key, value) = options
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("sidx"))?;
    Some(crate::table::options::parse_bool(key, value).unwrap_or(true))
}

/// SQL's string and binary types as a tag stores them (`VARCHAR` is
/// `Utf8View` in DataFusion; a tag is `Utf8`).
fn tag_storage_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::List(item) | DataType::LargeList(item) => {
            let item = item
                .as_ref()
                .clone()
                .with_data_type(tag_storage_type(item.data_type()));
            DataType::List(Arc::new(item))
        }
        other => other.clone(),
    }
}

/// What a new secondary index gets unless its CREATE says otherwise: the
/// index's granularity and a bloom filter on every string, bytes and list
/// tag.
pub fn creation_defaults(options: &mut HashMap<String, String>, schema: &Schema) {
    set_default(
        options,
        "granularity",
        crate::sidx::DEFAULT_GRANULARITY.to_string(),
    );
    for field in schema.fields() {
        let t = TagType::of(field.data_type());
        if !crate::sidx::element::is_reserved(field.name()) && t.is_some_and(|t| t != TagType::Int)
        {
            set_default(
                options,
                &format!("skip_index.{}", field.name()),
                "bloom_filter(0.01) granularity 1".into(),
            );
        }
    }
}

fn set_default(options: &mut HashMap<String, String>, key: &str, value: String) {
    if !options.keys().any(|k| k.eq_ignore_ascii_case(key)) {
        options.insert(key.to_string(), value);
    }
}

/// The provider of an open table: a secondary index's own, or the table's.
pub async fn provider_for(table: Arc<Table>) -> Result<Arc<dyn TableProvider>> {
    if table.cached_snapshot().options.sidx.is_some() {
        let index = Sidx::for_table(table, None).await?;
        return Ok(Arc::new(SidxProvider::new(index)));
    }
    Ok(Arc::new(super::provider::DiagonTableProvider::new(table)))
}

/// A secondary index as a table.
#[derive(Debug)]
pub struct SidxProvider {
    index: Arc<Sidx>,
}

impl SidxProvider {
    pub fn new(index: Arc<Sidx>) -> Self {
        SidxProvider { index }
    }

    pub fn index(&self) -> &Arc<Sidx> {
        &self.index
    }

    pub fn table(&self) -> &Arc<Table> {
        self.index.table()
    }
}

/// The index's columns as SQL sees them: without `_seq`. Tags are only
/// ever appended, so positions planned against an earlier schema hold.
fn sql_schema(index: &Sidx) -> SchemaRef {
    let schema = index.schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != "_seq")
        .map(|f| f.as_ref().clone())
        .collect();
    Arc::new(Schema::new(fields))
}

#[async_trait]
impl TableProvider for SidxProvider {
    fn schema(&self) -> SchemaRef {
        sql_schema(&self.index)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let schema = self.schema();
        Ok(filters
            .iter()
            .map(|f| {
                let mut request = Pushed::default();
                match request.add(f, &schema) {
                    true => TableProviderFilterPushDown::Exact,
                    false => TableProviderFilterPushDown::Unsupported,
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let mut pushed = Pushed::default();
        for filter in filters {
            if !pushed.add(filter, &schema) {
                return plan_err!("filter {filter} cannot be answered by the secondary index");
            }
        }
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        let projected = Arc::new(schema.project(&projection)?);
        let tags: Vec<String> = projected
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| !crate::sidx::element::is_reserved(n))
            .collect();
        let (mut request, empty) = pushed.request(tags);
        request.data = projected.field_with_name("data").is_ok();
        // Unordered until a sort asks for an order (`try_pushdown_sort`):
        // declared up front, the order would make DataFusion keep it
        // through plans that do not need it, and the merge costs memory.
        let exec = SidxScanExec::new(
            self.index.clone(),
            request,
            empty,
            projected,
            Order::Unordered,
            limit,
        );
        Ok(Arc::new(exec))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return plan_err!(
                "{insert_op} is not supported for secondary index '{}'; use INSERT INTO",
                self.index.name()
            );
        }
        let schema = self.schema();
        schema.logically_equivalent_names_and_types(&input.schema())?;
        let sink = SidxSink {
            index: self.index.clone(),
            schema,
            metrics: ExecutionPlanMetricsSet::new(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// Filters taken by the index, gathered from a query's conjuncts.
#[derive(Debug, Default, Clone)]
struct Pushed {
    /// `None`: every series.
    series: Option<BTreeSet<u64>>,
    min_key: Option<i64>,
    max_key: Option<i64>,
    tags: Vec<TagFilter>,
    /// A conjunct no row satisfies (`key > i64::MAX`, `series_id = 0`).
    empty: bool,
}

impl Pushed {
    /// Takes `expr` if the index answers it exactly; false (and `self`
    /// unchanged) otherwise.
    fn add(&mut self, expr: &Expr, schema: &Schema) -> bool {
        let mut next = self.clone();
        if next.take(expr, schema) {
            *self = next;
            return true;
        }
        false
    }

    fn take(&mut self, expr: &Expr, schema: &Schema) -> bool {
        if let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) = expr
        {
            return self.take(left, schema) && self.take(right, schema);
        }
        if let Some(ids) = series_condition(expr) {
            let ids: BTreeSet<u64> = ids.into_iter().filter(|&s| s > 0).collect();
            self.series = Some(match self.series.take() {
                Some(known) => known.intersection(&ids).copied().collect(),
                None => ids,
            });
            return true;
        }
        if let Some((min, max)) = key_condition(expr) {
            match (min, max) {
                (Some(Bound::Empty), _) | (_, Some(Bound::Empty)) => self.empty = true,
                _ => {}
            }
            if let Some(Bound::At(m)) = min {
                self.min_key = Some(self.min_key.map_or(m, |k| k.max(m)));
            }
            if let Some(Bound::At(m)) = max {
                self.max_key = Some(self.max_key.map_or(m, |k| k.min(m)));
            }
            return true;
        }
        match tag_condition(expr, schema) {
            Some(filter) => {
                self.tags.push(filter);
                true
            }
            None => false,
        }
    }

    /// The request, and whether no row can match.
    fn request(self, tags: Vec<String>) -> (QueryRequest, bool) {
        let mut empty = self.empty || self.series.as_ref().is_some_and(BTreeSet::is_empty);
        if let (Some(min), Some(max)) = (self.min_key, self.max_key) {
            empty |= min > max;
        }
        let filter = match self.tags.len() {
            0 => None,
            1 => self.tags.into_iter().next(),
            _ => Some(TagFilter::And(self.tags)),
        };
        let request = QueryRequest {
            series_ids: self
                .series
                .map(|s| s.into_iter().collect())
                .unwrap_or_default(),
            min_key: if empty { None } else { self.min_key },
            max_key: if empty { None } else { self.max_key },
            filter,
            tags,
            ..QueryRequest::default()
        };
        (request, empty)
    }
}

/// One side of a key range from a comparison.
#[derive(Debug, Clone, Copy)]
enum Bound {
    At(i64),
    /// Past the end of i64: no key.
    Empty,
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) => Some(c.name.as_str()),
        _ => None,
    }
}

fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

/// `col op lit` or `lit op col` (flipped) over the column `name`.
fn comparison<'a>(expr: &'a Expr, name: &str) -> Option<(Operator, &'a ScalarValue)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return None;
    };
    if column_name(left) == Some(name) {
        return Some((*op, literal(right)?));
    }
    if column_name(right) == Some(name) {
        return Some((op.swap()?, literal(left)?));
    }
    None
}

fn as_i64(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int64(Some(n)) => Some(*n),
        ScalarValue::Int32(Some(n)) => Some(i64::from(*n)),
        ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok(),
        ScalarValue::UInt32(Some(n)) => Some(i64::from(*n)),
        _ => None,
    }
}

fn as_u64(v: &ScalarValue) -> Option<u64> {
    match v {
        ScalarValue::UInt64(Some(n)) => Some(*n),
        ScalarValue::Int64(Some(n)) => u64::try_from(*n).ok(),
        ScalarValue::UInt32(Some(n)) => Some(u64::from(*n)),
        ScalarValue::Int32(Some(n)) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// `series_id = v`, `series_id IN (...)` or an OR of them (DataFusion
/// writes a short IN list so): the ids.
fn series_condition(expr: &Expr) -> Option<Vec<u64>> {
    if let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Or,
        right,
    }) = expr
    {
        let mut ids = series_condition(left)?;
        ids.extend(series_condition(right)?);
        return Some(ids);
    }
    if let Some((Operator::Eq, v)) = comparison(expr, "series_id") {
        return Some(vec![as_u64(v)?]);
    }
    if let Expr::InList(list) = expr
        && !list.negated
        && column_name(&list.expr) == Some("series_id")
    {
        return list
            .list
            .iter()
            .map(|e| literal(e).and_then(as_u64))
            .collect();
    }
    None
}

/// A comparison or BETWEEN on `key`: its (min, max) bounds.
fn key_condition(expr: &Expr) -> Option<(Option<Bound>, Option<Bound>)> {
    if let Expr::Between(Between {
        expr: e,
        negated: false,
        low,
        high,
    }) = expr
        && column_name(e) == Some("key")
    {
        let (low, high) = (as_i64(literal(low)?)?, as_i64(literal(high)?)?);
        return Some((Some(Bound::At(low)), Some(Bound::At(high))));
    }
    let (op, v) = comparison(expr, "key")?;
    let v = as_i64(v)?;
    let above = |v: i64| Some(v.checked_add(1).map_or(Bound::Empty, Bound::At));
    let below = |v: i64| Some(v.checked_sub(1).map_or(Bound::Empty, Bound::At));
    Some(match op {
        Operator::Eq => (Some(Bound::At(v)), Some(Bound::At(v))),
        Operator::GtEq => (Some(Bound::At(v)), None),
        Operator::Gt => (above(v), None),
        Operator::LtEq => (None, Some(Bound::At(v))),
        Operator::Lt => (None, below(v)),
        _ => return None,
    })
}

/// A condition on tags the index answers exactly, as a tag filter.
fn tag_condition(expr: &Expr, schema: &Schema) -> Option<TagFilter> {
    let tag_type = |name: &str| -> Option<TagType> {
        if crate::sidx::element::is_reserved(name) {
            return None;
        }
        TagType::of(schema.field_with_name(name).ok()?.data_type())
    };
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => Some(tag_condition(left, schema)?.or(tag_condition(right, schema)?)),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => Some(tag_condition(left, schema)?.and(tag_condition(right, schema)?)),
        Expr::BinaryExpr(BinaryExpr { left, right, .. }) => {
            let name = column_name(left).or_else(|| column_name(right))?;
            let t = tag_type(name)?;
            let (op, v) = comparison(expr, name)?;
            match (t, op) {
                (TagType::Int, _) => {
                    let v = as_i64(v)?;
                    let range =
                        |min: Option<i64>, max: Option<i64>| Some(TagFilter::range(name, min, max));
                    match op {
                        Operator::Eq => Some(TagFilter::eq(name, v)),
                        Operator::GtEq => range(Some(v), None),
                        Operator::Gt => range(Some(v.checked_add(1)?), None),
                        Operator::LtEq => range(None, Some(v)),
                        Operator::Lt => range(None, Some(v.checked_sub(1)?)),
                        _ => None,
                    }
                }
                (TagType::Str | TagType::Bytes, Operator::Eq) => {
                    Some(TagFilter::Eq(name.to_string(), tag_value(t, v)?))
                }
                _ => None,
            }
        }
        Expr::Between(Between {
            expr: e,
            negated: false,
            low,
            high,
        }) => {
            let name = column_name(e)?;
            if tag_type(name)? != TagType::Int {
                return None;
            }
            let (low, high) = (as_i64(literal(low)?)?, as_i64(literal(high)?)?);
            Some(TagFilter::range(name, Some(low), Some(high)))
        }
        Expr::InList(list) if !list.negated => {
            let name = column_name(&list.expr)?;
            let t = tag_type(name)?;
            if matches!(t, TagType::StrList | TagType::IntList | TagType::BytesList) {
                return None;
            }
            let values = list
                .list
                .iter()
                .map(|e| tag_value(t, literal(e)?))
                .collect::<Option<Vec<_>>>()?;
            Some(TagFilter::In(name.to_string(), values))
        }
        Expr::ScalarFunction(call) => {
            let (Some(column), Some(arg)) = (call.args.first(), call.args.get(1)) else {
                return None;
            };
            let name = column_name(column)?;
            let item = match tag_type(name)? {
                TagType::StrList => TagType::Str,
                TagType::IntList => TagType::Int,
                TagType::BytesList => TagType::Bytes,
                _ => return None,
            };
            match (call.name(), call.args.len()) {
                ("array_has", 2) => Some(TagFilter::Eq(
                    name.to_string(),
                    tag_value(item, literal(arg)?)?,
                )),
                ("array_has_any", 2) => {
                    let values = list_values(arg)?
                        .iter()
                        .map(|v| tag_value(item, v))
                        .collect::<Option<Vec<_>>>()?;
                    Some(TagFilter::In(name.to_string(), values))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The values of a list literal or of `make_array` of literals.
fn list_values(expr: &Expr) -> Option<Vec<ScalarValue>> {
    match expr {
        Expr::ScalarFunction(call) if call.name() == "make_array" => call
            .args
            .iter()
            .map(|a| literal(a).cloned())
            .collect::<Option<Vec<_>>>(),
        Expr::Literal(ScalarValue::List(list), _) if list.len() == 1 && !list.is_null(0) => {
            let values = list.value(0);
            (0..values.len())
                .map(|i| ScalarValue::try_from_array(&values, i).ok())
                .collect()
        }
        _ => None,
    }
}

/// A literal as a value of tag type `t` (a NULL literal matches nothing,
/// which the index cannot say: not taken).
fn tag_value(t: TagType, v: &ScalarValue) -> Option<TagValue> {
    match (t, v) {
        (
            TagType::Str,
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
        ) => Some(TagValue::Str(s.clone())),
        (TagType::Int, v) => as_i64(v).map(TagValue::Int),
        (
            TagType::Bytes,
            ScalarValue::Binary(Some(b))
            | ScalarValue::BinaryView(Some(b))
            | ScalarValue::LargeBinary(Some(b)),
        ) => Some(TagValue::Bytes(b.clone())),
        _ => None,
    }
}

/// Reads a secondary index: one partition, in (key, series_id) order or
/// its reverse.
#[derive(Debug)]
pub struct SidxScanExec {
    index: Arc<Sidx>,
    request: QueryRequest,
    /// No row can match (a contradictory filter): nothing is read.
    empty: bool,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SidxScanExec {
    fn new(
        index: Arc<Sidx>,
        mut request: QueryRequest,
        empty: bool,
        schema: SchemaRef,
        order: Order,
        limit: Option<usize>,
    ) -> Self {
        request.order = order;
        request.limit = limit;
        let properties = Arc::new(PlanProperties::new(
            equivalence(&schema, order),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        SidxScanExec {
            index,
            request,
            empty,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    fn with(&self, order: Order, limit: Option<usize>) -> Self {
        Self::new(
            self.index.clone(),
            self.request.clone(),
            self.empty,
            self.schema.clone(),
            order,
            limit,
        )
    }
}

/// The order of the scan's rows: by key, then series, in `order`.
fn equivalence(schema: &SchemaRef, order: Order) -> EquivalenceProperties {
    if order == Order::Unordered {
        return EquivalenceProperties::new(schema.clone());
    }
    let options = arrow::compute::SortOptions {
        descending: order == Order::Desc,
        nulls_first: false,
    };
    let mut sort = Vec::new();
    for name in ["key", "series_id"] {
        let Ok(at) = schema.index_of(name) else {
            break;
        };
        let column = Arc::new(datafusion::physical_expr::expressions::Column::new(
            name, at,
        ));
        sort.push(PhysicalSortExpr::new(column, options));
    }
    match LexOrdering::new(sort) {
        Some(ordering) => EquivalenceProperties::new_with_orderings(schema.clone(), [ordering]),
        None => EquivalenceProperties::new(schema.clone()),
    }
}

impl DisplayAs for SidxScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let r = &self.request;
        write!(f, "SidxScanExec: index={}", self.index.name())?;
        if !r.series_ids.is_empty() {
            write!(f, ", series={:?}", r.series_ids)?;
        }
        if r.min_key.is_some() || r.max_key.is_some() {
            let bound = |b: Option<i64>| b.map_or("*".to_string(), |k| k.to_string());
            write!(f, ", keys=[{}, {}]", bound(r.min_key), bound(r.max_key))?;
        }
        if let Some(filter) = &r.filter {
            write!(f, ", tags={filter:?}")?;
        }
        let order = match r.order {
            Order::Asc => "asc",
            Order::Desc => "desc",
            Order::Unordered => "none",
        };
        write!(f, ", order={order}")?;
        if let Some(limit) = r.limit {
            write!(f, ", limit={limit}")?;
        }
        if self.empty {
            write!(f, ", empty=true")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for SidxScanExec {
    fn name(&self) -> &str {
        "SidxScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.is_empty() {
            true => Ok(self),
            false => plan_err!("SidxScanExec has no children"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return plan_err!("SidxScanExec has one partition, not {partition}");
        }
        let schema = self.schema.clone();
        if self.empty {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        }
        let index = self.index.clone();
        let request = self.request.clone();
        let metrics = self.metrics.clone();
        let out = schema.clone();
        let stream = futures::stream::once(async move {
            let stream = index.query(request).await?;
            let query_metrics = stream.metrics();
            let done = Reporter {
                metrics,
                query: query_metrics,
            };
            Ok::<_, DataFusionError>(stream.map_err(DataFusionError::from).map(move |batch| {
                let _keep = &done;
                batch.and_then(|b| project(&b, &out))
            }))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        let limit = match (limit, self.request.limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Some(Arc::new(self.with(self.request.order, limit)))
    }

    fn fetch(&self) -> Option<usize> {
        self.request.limit
    }

    fn try_pushdown_sort(
        &self,
        order: &[PhysicalSortExpr],
    ) -> Result<SortOrderPushdownResult<Arc<dyn ExecutionPlan>>> {
        let wanted = |descending: bool| -> bool {
            let names = ["key", "series_id"];
            !order.is_empty()
                && order.len() <= names.len()
                && order.iter().zip(names).all(|(sort, name)| {
                    sort.options.descending == descending
                        && sort
                            .expr
                            .downcast_ref::<datafusion::physical_expr::expressions::Column>()
                            .is_some_and(|c| c.name() == name)
                })
        };
        let order = match (wanted(false), wanted(true)) {
            (true, _) => Order::Asc,
            (_, true) => Order::Desc,
            _ => return Ok(SortOrderPushdownResult::Unsupported),
        };
        // A limit already set stays with the order it was set for.
        if self.request.limit.is_some() && order != self.request.order {
            return Ok(SortOrderPushdownResult::Unsupported);
        }
        Ok(SortOrderPushdownResult::Exact {
            inner: Arc::new(self.with(order, self.request.limit)),
        })
    }
}

/// Copies a finished query's numbers into the scan's metrics (EXPLAIN
/// ANALYZE) when its stream is dropped.
struct Reporter {
    metrics: ExecutionPlanMetricsSet,
    query: Arc<crate::sidx::QueryMetrics>,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let q = &self.query;
        for (name, value) in [
            ("memory_parts", q.memory_parts.load(Relaxed)),
            ("disk_parts", q.disk_parts.load(Relaxed)),
            ("granules_total", q.granules_total.load(Relaxed)),
            ("granules_planned", q.granules_planned.load(Relaxed)),
            ("granules_read", q.granules_read.load(Relaxed)),
            ("bytes_read", q.bytes_read.load(Relaxed)),
            ("runs", q.runs.load(Relaxed)),
        ] {
            MetricBuilder::new(&self.metrics)
                .global_counter(name)
                .add(value as usize);
        }
        MetricBuilder::new(&self.metrics)
            .output_rows(0)
            .add(q.rows_emitted.load(Relaxed) as usize);
    }
}

/// A query's batch (`series_id`, `key`, `data`, the projected tags) as
/// the scan's columns.
fn project(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| {
            batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                DataFusionError::Internal(format!("the index returned no column '{}'", f.name()))
            })
        })
        .collect::<Result<_>>()?;
    let rows = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &rows,
    )?)
}

/// INSERT INTO a secondary index: memory parts, visible at once.
#[derive(Debug)]
struct SidxSink {
    index: Arc<Sidx>,
    schema: SchemaRef,
    metrics: ExecutionPlanMetricsSet,
}

impl DisplayAs for SidxSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SidxSink: index={}", self.index.name())
    }
}

/// Rows gathered into one memory part at most.
const SINK_ROWS: usize = 64 * 1024;

#[async_trait]
impl DataSink for SidxSink {
    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        // A statement of up to SINK_ROWS rows becomes one memory part; a
        // larger one goes straight to disk parts committed as one version,
        // so it is atomic and never waits on memory only a flush frees.
        let mut buffer: Vec<RecordBatch> = Vec::new();
        let mut buffered = 0;
        let mut bulk = None;
        while let Some(batch) = data.next().await.transpose()? {
            buffered += batch.num_rows();
            buffer.push(cast_to(&batch, &self.schema)?);
            if buffered >= SINK_ROWS {
                let writer = match &mut bulk {
                    Some(writer) => writer,
                    None => bulk.insert(self.index.bulk_write(&self.schema).await?),
                };
                writer.write(concat_batches(&self.schema, &buffer)?).await?;
                buffer.clear();
                buffered = 0;
            }
        }
        let (rows, how) = match bulk {
            Some(mut writer) => {
                if buffered > 0 {
                    writer.write(concat_batches(&self.schema, &buffer)?).await?;
                }
                (writer.commit().await?, "disk_rows_written")
            }
            None if buffered > 0 => {
                let batch = concat_batches(&self.schema, &buffer)?;
                self.index.write_batch_flushing(batch).await?;
                (buffered as u64, "memory_rows_written")
            }
            None => (0, "memory_rows_written"),
        };
        MetricBuilder::new(&self.metrics)
            .global_counter(how)
            .add(rows as usize);
        Ok(rows)
    }
}

/// `batch` with the types of `schema` (an INSERT's strings may come as
/// views).
fn cast_to(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    Ok(crate::table::schema::cast_batch(batch, schema)?)
}

/// `diagon_flush('t')`: persists a secondary index's memory parts.
#[derive(Debug, Default)]
pub struct DiagonFlushFunction;

fn flush_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("elements_flushed", DataType::UInt64, false),
        Field::new("disk_parts", DataType::UInt64, false),
    ]))
}

impl TableFunctionImpl for DiagonFlushFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let name = match args.exprs() {
            [Expr::Literal(ScalarValue::Utf8(Some(n)) | ScalarValue::Utf8View(Some(n)), _)] => {
                n.clone()
            }
            _ => {
                return plan_err!(
                    "diagon_flush() takes a secondary index table's name as a string, e.g. \
                     diagon_flush('traces')"
                );
            }
        };
        Ok(Arc::new(FlushTable {
            table: datafusion::common::TableReference::from(name.as_str()),
        }))
    }
}

#[derive(Debug)]
struct FlushTable {
    table: datafusion::common::TableReference,
}

#[async_trait]
impl TableProvider for FlushTable {
    fn schema(&self) -> SchemaRef {
        flush_schema()
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
        let (provider, table) = super::functions::diagon_provider(state, &self.table).await?;
        let Some(sidx) = (provider.as_ref() as &dyn std::any::Any).downcast_ref::<SidxProvider>()
        else {
            return plan_err!(
                "table '{}' is not a secondary index ('sidx' 'true'); it has nothing to flush",
                table.name()
            );
        };
        let index = sidx.index().clone();
        let what = format!("diagon_flush({})", index.name());
        super::functions::deferred(flush_schema(), projection, what, move || {
            let index = index.clone();
            Box::pin(async move {
                let flushed = index.flush().await?;
                let parts = index.stats().await?.disk_parts;
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(arrow::array::StringArray::from(vec![
                        index.name().to_string(),
                    ])),
                    Arc::new(UInt64Array::from(vec![flushed])),
                    Arc::new(UInt64Array::from(vec![parts as u64])),
                ];
                Ok(RecordBatch::try_new(flush_schema(), columns)?)
            })
        })
    }
}
