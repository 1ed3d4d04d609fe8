//! The `TableProvider` of a diagon table: plans scans (pruning parts and
//! granules with the primary index and min/max) and inserts.

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, SchemaExt, not_impl_err, plan_err};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;

use super::config::DiagonConfig;
use super::dml::{ExprMatcher, Mutation, MutationSink};
use super::plan::{PartSkipIndexes, Pruners, ScanPlan, split_tasks, with_types};
use super::scan::DiagonSource;
use super::sink::DiagonSink;
use crate::table::Table;
use std::collections::HashMap;

#[derive(Debug)]
pub struct DiagonTableProvider {
    table: Arc<Table>,
    schema: SchemaRef,
}

impl DiagonTableProvider {
    pub fn new(table: Arc<Table>) -> Self {
        let schema = table.cached_snapshot().schema.clone();
        DiagonTableProvider { table, schema }
    }

    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// Pruning predicates for `filters`; `None` where nothing can be pruned.
    fn pruners(&self, state: &dyn Session, filters: &[Expr], key: &[String]) -> Result<Pruners> {
        let build = |exprs: Vec<Expr>| -> Result<Option<Arc<PruningPredicate>>> {
            let Some(expr) = conjunction(exprs) else {
                return Ok(None);
            };
            let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
            let physical = state.create_physical_expr(expr, &df_schema)?;
            Ok(PruningPredicateBuilder::new()
                .with_file_schema(self.schema.clone())
                .build(physical))
        };
        let on_key: Vec<Expr> = filters
            .iter()
            .filter(|f| {
                let columns = f.column_refs();
                !columns.is_empty() && columns.iter().all(|c| key.contains(&c.name))
            })
            .cloned()
            .collect();
        Ok(Pruners {
            primary: build(on_key)?,
            minmax: build(filters.to_vec())?,
            filters: filters.to_vec(),
        })
    }

    /// The skip indexes of `parts` on columns the filters mention.
    async fn skip_indexes(
        &self,
        parts: &[Arc<crate::part::PartIndex>],
        pruners: &Pruners,
    ) -> Result<HashMap<String, PartSkipIndexes>> {
        let mut loaded = HashMap::new();
        let columns = pruners.filter_columns();
        if columns.is_empty() {
            return Ok(loaded);
        }
        for part in parts {
            let found = self.table.skip_indexes_on(part, &columns).await?;
            let indexes = with_types(&self.schema, found);
            if !indexes.is_empty() {
                loaded.insert(part.meta.name.clone(), indexes);
            }
        }
        Ok(loaded)
    }

    /// Physical forms of a DELETE's or UPDATE's WHERE clause and SET list.
    fn matcher(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
        assignments: Option<Vec<(String, Expr)>>,
    ) -> Result<ExprMatcher> {
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let key = self.table.cached_snapshot().options.order_by.clone();
        let pruners = self.pruners(state, &filters, &key)?;
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
        let parts = self.table.part_indexes(&snapshot).await?;
        let pruning_enabled = state
            .config_options()
            .extensions
            .get::<DiagonConfig>()
            .is_none_or(|c| c.enable_pruning);
        let pruners = if pruning_enabled {
            self.pruners(state, filters, &snapshot.options.order_by)?
        } else {
            Pruners {
                primary: None,
                minmax: None,
                filters: Vec::new(),
            }
        };
        let skip = self.skip_indexes(&parts, &pruners).await?;
        let mut plan = ScanPlan::build(parts, &skip, &pruners)?;
        plan.pin = Some(Arc::new(pin));
        for entry in &snapshot.parts {
            if let Some(mask) = self.table.deletion_mask(entry).await? {
                plan.masks.insert(entry.name.clone(), mask);
            }
        }
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
            storage: self.table.storage().clone(),
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
        self.schema
            .logically_equivalent_names_and_types(&input.schema())?;
        let sink = DiagonSink::new(self.table.clone(), self.schema.clone());
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}
