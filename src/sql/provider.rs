//! The `TableProvider` of a diagon table: plans scans (pruning parts and
//! granules with the primary index and min/max) and inserts.

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Constraints, DFSchema, SchemaExt, not_impl_err, plan_err};
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
use crate::plan::{Pruner, split_tasks};
use crate::storage::Cache;
use crate::table::Table;

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

#[derive(Debug)]
pub struct DiagonTableProvider {
    table: Arc<Table>,
    schema: SchemaRef,
    /// Column defaults, parsed from the table's definition; an error (a
    /// stored default that no longer parses) refuses inserts rather than
    /// writing NULL in its place.
    defaults: std::result::Result<HashMap<String, Expr>, String>,
    constraints: Option<Constraints>,
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
            schema,
            defaults,
            constraints,
        }
    }

    pub fn table(&self) -> &Arc<Table> {
        &self.table
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
        match enabled {
            true => pruning::pruners(state, &self.schema, options, filters),
            false => Ok(Vec::new()),
        }
    }

    /// Physical forms of a DELETE's or UPDATE's WHERE clause and SET list.
    fn matcher(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
        assignments: Option<Vec<(String, Expr)>>,
    ) -> Result<ExprMatcher> {
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let options = self.table.cached_snapshot().options.clone();
        let pruners = self.pruners(state, &options, &filters)?;
        let filter = conjunction(filters)
            .map(|f| state.create_physical_expr(f, &df_schema))
            .transpose()?;
        let assignments = assignments
            .map(|list| {
                list.into_iter()
                    .map(|(name, expr)| {
                        let Ok(i) = self.schema.index_of(&name) else {
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
            schema: self.schema.clone(),
            filter,
            pruners,
            assignments,
        })
    }

    fn mutation_plan(&self, mutation: Mutation) -> Result<Arc<dyn ExecutionPlan>> {
        let empty = Arc::new(EmptyExec::new(self.schema.clone()));
        let sink = MutationSink::new(self.table.clone(), self.schema.clone(), mutation);
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
        // Filters prune granules; rows of kept granules are filtered above.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (pin, snapshot) = self.table.pinned_snapshot().await?;
        set_cache_capacity(state);
        let pruners = self.pruners(state, &snapshot.options, filters)?;
        let mut plan = self.table.plan(&snapshot.parts, &pruners).await?;
        plan.keep_alive = Some(Arc::new(pin));
        let plan = Arc::new(plan);
        let target = state.config_options().execution.target_partitions;
        let keyed = !snapshot.options.order_by.is_empty();
        let (tasks, sorted) = split_tasks(&plan, target, keyed);
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let projected_schema = Arc::new(self.schema.project(&projection)?);
        let source = DiagonSource {
            table_name: self.table.name().to_string(),
            plan,
            tasks: Arc::new(tasks),
            declare_ordering: false,
            key_ordering: match sorted {
                true => Self::key_ordering(&snapshot.options.order_by, &projected_schema),
                false => None,
            },
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
        let matcher = self.matcher(state, filters, None)?;
        self.mutation_plan(Mutation::Rows(matcher))
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
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
        if let Err(e) = &self.defaults {
            return plan_err!("{e}");
        }
        self.schema
            .logically_equivalent_names_and_types(&input.schema())?;
        let sink = DiagonSink::new(self.table.clone(), self.schema.clone());
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}
