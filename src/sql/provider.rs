//! The `TableProvider` of a diagon table: plans scans (pruning parts and
//! granules with the primary index and min/max) and inserts.

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{
    Constraints, DFSchema, DataFusionError, SchemaExt, not_impl_err, plan_err,
};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;

use std::collections::HashMap;

use super::config::DiagonConfig;
use super::definition;
use super::dml::{ExprMatcher, Mutation, MutationSink};
use super::pruning;
use super::scan::DiagonSource;
use super::sink::DiagonSink;
use super::text::{MatchFunction, literal_text};
use crate::index::text::bound::Bound;
use crate::plan::text::{ScanScores, ScoreRequest, TextPruner};
use crate::plan::{Pruner, split_tasks};
use crate::storage::Cache;
use crate::table::Table;
use crate::table::search::TextTarget;

/// Sizes the process's cache as the session says (`diagon.cache_bytes`).
fn set_cache_capacity(state: &dyn Session) {
    let configured = state
        .config_options()
        .extensions
        .get::<DiagonConfig>()
        .and_then(|c| c.cache_bytes);
    if let Some(bytes) = configured {
        let cache = Cache::global();
        if cache.capacity() != bytes {
            cache.set_capacity(bytes);
        }
    }
}

/// A BM25 score the scan computes as a column of its own (see
/// [`super::text`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreColumn {
    /// The column's name in the scan's output.
    pub name: String,
    /// The text-indexed column scored.
    pub column: String,
    pub query: String,
}

#[derive(Debug)]
pub struct DiagonTableProvider {
    table: Arc<Table>,
    /// The table's columns.
    table_schema: SchemaRef,
    /// The table's columns, then one Float32 column per score.
    schema: SchemaRef,
    scores: Vec<ScoreColumn>,
    /// Column defaults, parsed from the table's definition; an error (a
    /// stored default that no longer parses) refuses inserts rather than
    /// writing NULL in its place.
    defaults: std::result::Result<HashMap<String, Expr>, String>,
    constraints: Option<Constraints>,
    /// The stored columns (names, types, defaults, ids) this provider was
    /// made from: a table altered since is refused (see `check_current`).
    fields: Vec<crate::table::schema::FieldDef>,
}

impl DiagonTableProvider {
    pub fn new(table: Arc<Table>) -> Self {
        let snapshot = table.cached_snapshot();
        let schema = snapshot.schema.clone();
        let defaults = definition::defaults(&snapshot.defaults(), &schema)
            .map_err(|e| format!("table '{}': {e}", table.name()));
        // Constraints were checked against the columns when stored.
        let constraints = definition::constraints(snapshot.constraints(), &schema)
            .ok()
            .flatten();
        DiagonTableProvider {
            table,
            table_schema: schema.clone(),
            schema,
            scores: Vec::new(),
            defaults,
            constraints,
            fields: snapshot.definition.schema.clone(),
        }
    }

    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// The table's columns as this provider knows them.
    pub fn table_schema(&self) -> &SchemaRef {
        &self.table_schema
    }

    /// Refuses a snapshot whose columns are not this provider's: the table
    /// was altered (by another session or process) since the provider was
    /// made, and plans over the old columns would read the wrong ones.
    fn check_current(&self, snapshot: &crate::table::Snapshot) -> Result<()> {
        if snapshot.schema.fields() == self.table_schema.fields() {
            return Ok(());
        }
        self.altered()
    }

    /// Whether the table's stored columns (defaults included) are still
    /// the ones this provider was made from.
    pub fn is_current(&self, snapshot: &crate::table::Snapshot) -> bool {
        snapshot.definition.schema == self.fields
    }

    /// Refuses a write planned with columns or defaults the table no
    /// longer has.
    async fn check_writable(&self) -> Result<()> {
        let snapshot = self.table.snapshot().await?;
        match self.is_current(&snapshot) {
            true => Ok(()),
            false => self.altered(),
        }
    }

    fn altered(&self) -> Result<()> {
        plan_err!(
            "table '{}' was altered (ALTER TABLE) since this session opened it; \
             run the query again (a data-dir catalog reopens it), or recreate the \
             external table",
            self.table.name()
        )
    }

    /// The scores this provider's scans compute, after the table's columns.
    pub fn score_columns(&self) -> &[ScoreColumn] {
        &self.scores
    }

    /// This table with `scores` as columns after its own. Each must score
    /// a column with a text index, with a query that parses.
    pub fn with_scores(&self, scores: Vec<ScoreColumn>) -> Result<Self> {
        let options = self.table.cached_snapshot().options.clone();
        let mut fields: Vec<arrow::datatypes::FieldRef> =
            self.table_schema.fields().iter().cloned().collect();
        for score in &scores {
            let target = TextTarget::of(&options, &score.column);
            if !options.text.indexes.contains_key(&score.column) {
                return plan_err!(
                    "bm25({}, ...): table '{}' has no text index on '{}' (declare it with \
                     the option 'text_index')",
                    score.column,
                    self.table.name(),
                    score.column
                );
            }
            if self.table_schema.field_with_name(&score.name).is_ok() {
                return plan_err!(
                    "table '{}' has a column named '{}', which diagon reserves for scores",
                    self.table.name(),
                    score.name
                );
            }
            target.bind(&score.query).map_err(|e| {
                DataFusionError::Plan(format!("bm25({}, '{}'): {e}", score.column, score.query))
            })?;
            fields.push(Arc::new(arrow::datatypes::Field::new(
                &score.name,
                arrow::datatypes::DataType::Float32,
                false,
            )));
        }
        Ok(DiagonTableProvider {
            table: self.table.clone(),
            table_schema: self.table_schema.clone(),
            schema: Arc::new(Schema::new_with_metadata(
                fields,
                self.table_schema.metadata().clone(),
            )),
            scores,
            defaults: self.defaults.clone(),
            constraints: self.constraints.clone(),
            fields: self.fields.clone(),
        })
    }

    /// Whether `name` is one of the scores this provider computes.
    fn is_score(&self, name: &str) -> bool {
        self.scores.iter().any(|s| s.name == name)
    }

    /// A filter that is a `match` on one of this table's columns, bound
    /// with the analysis the call was given (the table's, when planned);
    /// `None` for any other filter. The scan answers it whatever its
    /// parts' indexes: a part indexed otherwise is searched by analysing
    /// values.
    fn text_filter(&self, filter: &Expr) -> Option<(TextTarget, String, Bound)> {
        let Expr::ScalarFunction(call) = filter else {
            return None;
        };
        let function = call.func.inner().downcast_ref::<MatchFunction>()?;
        let target = function.target.as_ref()?;
        let [Expr::Column(column), query] = call.args.as_slice() else {
            return None;
        };
        let query = literal_text(query)?;
        if column.name != target.column || self.is_score(&column.name) {
            return None;
        }
        self.table_schema.field_with_name(&column.name).ok()?;
        let bound = target.bind(query).ok()?;
        Some((target.clone(), query.to_string(), bound))
    }

    /// The text pruners for the `match` filters among `filters`.
    fn text_pruners(&self, state: &dyn Session, filters: &[Expr]) -> Vec<Arc<dyn Pruner>> {
        let use_index = state
            .config_options()
            .extensions
            .get::<DiagonConfig>()
            .is_none_or(|c| c.enable_text_index);
        filters
            .iter()
            .filter_map(|f| self.text_filter(f))
            .map(|(target, query, bound)| {
                Arc::new(TextPruner::new(
                    &target.column,
                    target.analyzer,
                    &query,
                    bound,
                    use_index,
                )) as Arc<dyn Pruner>
            })
            .collect()
    }

    /// The pruners for `filters`, or none when the session turned pruning off.
    fn pruners(
        &self,
        state: &dyn Session,
        options: &crate::table::TableOptions,
        filters: &[Expr],
    ) -> Result<Vec<Arc<dyn Pruner>>> {
        let enabled = state
            .config_options()
            .extensions
            .get::<DiagonConfig>()
            .is_none_or(|c| c.enable_pruning);
        // Filters on scores are checked above the scan.
        let filters: Vec<Expr> = filters
            .iter()
            .filter(|f| !f.column_refs().iter().any(|c| self.is_score(&c.name)))
            .cloned()
            .collect();
        let mut pruners = match enabled {
            true => pruning::pruners(state, &self.table_schema, options, &filters)?,
            false => Vec::new(),
        };
        // Text pruners run even without pruning: they apply the `match`
        // filters pushed down as exact.
        pruners.extend(self.text_pruners(state, &filters));
        Ok(pruners)
    }

    /// Physical forms of a DELETE's or UPDATE's WHERE clause and SET list.
    fn matcher(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
        assignments: Option<Vec<(String, Expr)>>,
    ) -> Result<ExprMatcher> {
        let df_schema = DFSchema::try_from(self.table_schema.as_ref().clone())?;
        let options = self.table.cached_snapshot().options.clone();
        let pruners = self.pruners(state, &options, &filters)?;
        let filter = conjunction(filters)
            .map(|f| state.create_physical_expr(f, &df_schema))
            .transpose()?;
        let assignments = assignments
            .map(|list| {
                list.into_iter()
                    .map(|(name, expr)| {
                        let Ok(i) = self.table_schema.index_of(&name) else {
                            return plan_err!(
                                "table '{}' has no column '{name}'",
                                self.table.name()
                            );
                        };
                        Ok((i, state.create_physical_expr(expr, &df_schema)?))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        Ok(ExprMatcher {
            schema: self.table_schema.clone(),
            filter,
            pruners,
            assignments,
        })
    }

    fn mutation_plan(&self, mutation: Mutation) -> Result<Arc<dyn ExecutionPlan>> {
        let empty = Arc::new(EmptyExec::new(self.table_schema.clone()));
        let sink = MutationSink::new(self.table.clone(), self.table_schema.clone(), mutation);
        Ok(Arc::new(DataSinkExec::new(empty, Arc::new(sink), None)))
    }

    /// The ascending key ordering over the projected columns: the longest
    /// prefix of the key that is projected.
    fn key_ordering(key: &[String], projected: &Schema) -> Option<LexOrdering> {
        let exprs = key
            .iter()
            .map_while(|name| projected.index_of(name).ok().map(|i| (name, i)))
            .map(|(name, i)| {
                PhysicalSortExpr::new(
                    Arc::new(Column::new(name, i)),
                    SortOptions {
                        descending: false,
                        nulls_first: false,
                    },
                )
            });
        LexOrdering::new(exprs)
    }
}

#[async_trait]
impl TableProvider for DiagonTableProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.constraints.as_ref()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.defaults.as_ref().ok()?.get(column)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters prune granules; rows of kept granules are filtered above,
        // except for a `match` the scan answers exactly: the text index
        // selects exactly the matching rows (a query of only excluded
        // clauses also matches NULLs there, so it is checked above).
        Ok(filters
            .iter()
            .map(|f| match self.text_filter(f) {
                Some((_, _, bound)) if bound.needs_terms() => TableProviderFilterPushDown::Exact,
                _ => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (pin, snapshot) = self.table.pinned_snapshot().await?;
        self.check_current(&snapshot)?;
        set_cache_capacity(state);
        let pruners = self.pruners(state, &snapshot.options, filters)?;
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let projected_schema = Arc::new(self.schema.project(&projection)?);
        let width = self.table_schema.fields().len();
        // Each score column projected: its place in the output, and the
        // request computing it.
        let mut requests = Vec::new();
        let mut score_positions = Vec::new();
        let mut scored = Vec::new();
        for (position, &p) in projection.iter().enumerate() {
            let Some(score) = p.checked_sub(width).and_then(|k| self.scores.get(k)) else {
                continue;
            };
            let target = TextTarget::of(&snapshot.options, &score.column);
            let bound = target.bind(&score.query).map_err(|e| {
                DataFusionError::Plan(format!(
                    "table '{}': bm25({}, '{}'): {e}",
                    self.table.name(),
                    score.column,
                    score.query
                ))
            })?;
            let scoring = self
                .table
                .text_scoring(&snapshot, &score.column, &bound)
                .await?;
            score_positions.push((position, requests.len()));
            scored.push(format!(
                "{} = bm25({}, '{}')",
                score.name, score.column, score.query
            ));
            requests.push(ScoreRequest {
                column: score.column.clone(),
                analyzer: target.analyzer,
                bound,
                scoring,
            });
        }
        let mut plan = self
            .table
            .plan(&snapshot, &snapshot.parts, &pruners)
            .await?;
        plan.keep_alive = Some(Arc::new(pin));
        let plan = Arc::new(plan);
        let parts = plan.parts.len();
        let target = state.config_options().execution.target_partitions;
        let keyed = !snapshot.options.order_by.is_empty();
        let (tasks, sorted) = split_tasks(&plan, target, keyed);
        let mut text: Vec<String> = pruners.iter().filter_map(|p| p.describe()).collect();
        text.extend(scored);
        let source = DiagonSource {
            table_name: self.table.name().to_string(),
            plan,
            tasks: Arc::new(tasks),
            declare_ordering: false,
            key_ordering: match sorted {
                true => Self::key_ordering(&snapshot.options.order_by, &projected_schema),
                false => None,
            },
            read_schema: Arc::new(Schema::new(
                projected_schema
                    .fields()
                    .iter()
                    .filter(|f| !self.is_score(f.name()))
                    .cloned()
                    .collect::<Vec<_>>(),
            )),
            score_positions,
            filters: Vec::new(),
            score_order: None,
            scores: Arc::new(ScanScores::new(requests, parts)),
            text,
            projected_schema,
            reverse: false,
            fetch: limit,
            runtime_filters: Vec::new(),
            metrics: ExecutionPlanMetricsSet::new(),
            statistics: Default::default(),
        };
        source.record_plan_metrics();
        Ok(DataSourceExec::from_data_source(source))
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.check_writable().await?;
        let matcher = self.matcher(state, filters, None)?;
        self.mutation_plan(Mutation::Rows(matcher))
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.check_writable().await?;
        let matcher = self.matcher(state, filters, Some(assignments))?;
        self.mutation_plan(Mutation::Rows(matcher))
    }

    async fn truncate(&self, _state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        self.mutation_plan(Mutation::Truncate)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return not_impl_err!(
                "{insert_op} is not supported for diagon table '{}'; use INSERT INTO",
                self.table.name()
            );
        }
        self.check_writable().await?;
        if let Err(e) = &self.defaults {
            return plan_err!("{e}");
        }
        self.table_schema
            .logically_equivalent_names_and_types(&input.schema())?;
        let sink = DiagonSink::new(self.table.clone(), self.table_schema.clone());
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}
