//! `diagon_search('t', 'col', 'query' [, k])`: a text search as a table,
//! every column of `t` plus `_score`, best first.
//!
//! It searches like
//!
//! ```sql
//! SELECT *, bm25(col, 'query') AS _score FROM t
//! WHERE match(col, 'query') AND <the outer filters>
//! ORDER BY _score DESC LIMIT k
//! ```
//!
//! and is planned as that query: a top-k inside the scan. The filters an
//! outer query puts on the function's rows act inside the search, as in a
//! search engine's filtered query: `k` is the number of best rows among
//! those the filters keep, so `WHERE price < 5` returns `k` rows whenever
//! `k` such rows match, not the few of the best `k` that pass.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue, TableReference, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, TableType, lit,
};
use datafusion::physical_plan::ExecutionPlan;

use super::block_on;
use super::functions::diagon_provider;
use super::text::{Bm25Function, MatchFunction, literal_text};
use crate::table::search::TextTarget;
use crate::table::{Snapshot, Table};

/// The name of the score column.
pub const SCORE: &str = "_score";

const USAGE: &str = "diagon_search() takes a table name, a text-indexed column and a \
                     query as strings, and optionally how many rows to return, e.g. \
                     diagon_search('docs', 'body', 'wireless headphones', 10)";

/// The `diagon_search` table function.
#[derive(Debug, Default)]
pub struct DiagonSearchFunction;

impl TableFunctionImpl for DiagonSearchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (table, column, query, k) = match args.exprs() {
            [t, c, q, rest @ ..] if rest.len() <= 1 => {
                let (Some(t), Some(c), Some(q)) =
                    (literal_text(t), literal_text(c), literal_text(q))
                else {
                    return plan_err!("{USAGE}");
                };
                let k = rest.first().map(limit).transpose()?;
                (t.to_string(), c.to_string(), q.to_string(), k)
            }
            _ => return plan_err!("{USAGE}"),
        };
        let reference = TableReference::from(table.as_str());
        let state = args.session();
        // The table's newest snapshot decides (another process may have
        // declared the index since this handle last looked).
        let (provider, diagon, snapshot) = block_on(async {
            let (provider, diagon) = diagon_provider(state, &reference).await?;
            let snapshot = diagon.snapshot().await?;
            Ok::<_, DataFusionError>((provider, diagon, snapshot))
        })?;
        check_column(&diagon, &snapshot, &column, &query)?;
        let mut fields: Vec<FieldRef> = provider.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(SCORE, DataType::Float32, false)));
        Ok(Arc::new(SearchTable {
            table: reference,
            provider,
            column,
            query,
            k,
            schema: Arc::new(Schema::new(fields)),
        }))
    }
}

/// The rows of one search (see the module's documentation).
#[derive(Debug)]
struct SearchTable {
    table: TableReference,
    provider: Arc<dyn TableProvider>,
    column: String,
    query: String,
    k: Option<usize>,
    /// The table's columns and `_score`.
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for SearchTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Exact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let k = match (self.k, limit) {
            (Some(k), Some(l)) => Some(k.min(l)),
            (k, l) => k.or(l),
        };
        let plan = self.plan(filters, projection, k)?;
        state.create_physical_plan(&plan).await
    }
}

impl SearchTable {
    /// The search as a query over the table (see the module's
    /// documentation), with `filters` on the function's columns.
    fn plan(
        &self,
        filters: &[Expr],
        projection: Option<&Vec<usize>>,
        k: Option<usize>,
    ) -> Result<LogicalPlan> {
        let table = &self.table;
        let text = Expr::Column(Column::new(Some(table.clone()), &self.column));
        let call = |udf| {
            Expr::ScalarFunction(ScalarFunction::new_udf(
                udf,
                vec![text.clone(), lit(self.query.as_str())],
            ))
        };
        let mut columns: Vec<Expr> = self
            .provider
            .schema()
            .fields()
            .iter()
            .map(|f| Expr::Column(Column::new(Some(table.clone()), f.name())))
            .collect();
        columns.push(call(Bm25Function::udf()).alias(SCORE));
        let source = provider_as_source(self.provider.clone());
        let mut plan = LogicalPlanBuilder::scan(table.clone(), source, None)?
            .filter(call(MatchFunction::udf()))?
            .project(columns)?;
        // The filters name the function's columns, which the projection
        // outputs under the table's qualifier (and `_score` under none).
        let unqualified = |e: Expr| {
            e.transform(|e| match e {
                Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::from_name(c.name)))),
                other => Ok(Transformed::no(other)),
            })
            .map(|t| t.data)
        };
        if let Some(filter) = conjunction(filters.iter().cloned()) {
            plan = plan.filter(unqualified(filter)?)?;
        }
        plan = plan.sort(vec![
            Expr::Column(Column::from_name(SCORE)).sort(false, true),
        ])?;
        if let Some(k) = k {
            plan = plan.limit(0, Some(k))?;
        }
        if let Some(projection) = projection {
            let fields = self.schema.fields();
            let columns = projection
                .iter()
                .map(|&i| Expr::Column(Column::from_name(fields[i].name())));
            plan = plan.project(columns)?;
        }
        plan.build()
    }
}

/// The optional row count: a non-negative integer literal.
fn limit(expr: &Expr) -> Result<usize> {
    let n = match expr {
        Expr::Literal(value, _) => match value {
            ScalarValue::Int64(Some(n)) => Some(*n),
            ScalarValue::Int32(Some(n)) => Some(i64::from(*n)),
            ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok(),
            _ => None,
        },
        _ => None,
    };
    match n.and_then(|n| usize::try_from(n).ok()) {
        Some(n) => Ok(n),
        None => plan_err!("diagon_search(): k must be a non-negative integer, not {expr}"),
    }
}

/// Errors at planning for what the search would fail on later: a column
/// without a text index, a name taken by the score, a query that does not
/// parse.
fn check_column(table: &Table, snapshot: &Snapshot, column: &str, query: &str) -> Result<()> {
    let failed = |e: crate::error::Error| DataFusionError::Plan(format!("diagon_search(): {e}"));
    table.check_text_column(snapshot, column).map_err(failed)?;
    if snapshot.schema.field_with_name(SCORE).is_ok() {
        return plan_err!(
            "diagon_search(): table '{}' has a column named '{SCORE}', the name of \
             the score; use bm25() in a query instead",
            table.name()
        );
    }
    TextTarget::of(&snapshot.options, column)
        .bind(query)
        .map_err(|e| DataFusionError::Plan(format!("diagon_search(): query '{query}': {e}")))?;
    Ok(())
}
