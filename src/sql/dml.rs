//! DELETE and UPDATE through DataFusion: the provider turns the statement's
//! filters and assignments into physical expressions at planning time, and a
//! sink applies them when executed (so EXPLAIN changes nothing), reporting
//! the rows matched as DataFusion's `count`.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::datasource::sink::DataSink;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};

use crate::error::Error;
use crate::plan::Pruner;
use crate::table::{RowMatcher, Table};

/// A WHERE clause (and for UPDATE its SET list) over the table's schema.
pub struct ExprMatcher {
    pub schema: SchemaRef,
    /// `None` matches every row.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Skip granules no row of which can match.
    pub pruners: Vec<Arc<dyn Pruner>>,
    /// UPDATE's assignments by column position; `None` for DELETE.
    pub assignments: Option<Vec<(usize, Arc<dyn PhysicalExpr>)>>,
}

impl fmt::Debug for ExprMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExprMatcher")
            .field("filter", &self.filter)
            .finish()
    }
}

fn df(e: datafusion::error::DataFusionError) -> Error {
    Error::Table(e.to_string())
}

impl RowMatcher for ExprMatcher {
    fn pruners(&self) -> Vec<Arc<dyn Pruner>> {
        self.pruners.clone()
    }

    fn matches(&self, batch: &RecordBatch) -> crate::Result<BooleanArray> {
        let Some(filter) = &self.filter else {
            return Ok(BooleanArray::from(vec![true; batch.num_rows()]));
        };
        let value = filter.evaluate(batch).map_err(df)?;
        let array = value.into_array(batch.num_rows()).map_err(df)?;
        match array.as_boolean_opt() {
            Some(b) => Ok(b.clone()),
            None => Err(Error::Schema(format!(
                "WHERE clause is {}, not boolean",
                array.data_type()
            ))),
        }
    }

    fn is_update(&self) -> bool {
        self.assignments.is_some()
    }

    fn schema(&self) -> Option<&SchemaRef> {
        Some(&self.schema)
    }

    fn update(&self, matched: &RecordBatch) -> crate::Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = matched.columns().to_vec();
        for (i, expr) in self.assignments.iter().flatten() {
            let field = self.schema.field(*i);
            let value = expr.evaluate(matched).map_err(df)?;
            let array = value.into_array(matched.num_rows()).map_err(df)?;
            let array = match array.data_type() == field.data_type() {
                true => array,
                false => arrow::compute::cast(&array, field.data_type())
                    .map_err(|e| Error::Schema(format!("column '{}': {e}", field.name())))?,
            };
            columns[*i] = array;
        }
        let rows = RecordBatchOptions::new().with_row_count(Some(matched.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &rows,
        )?)
    }
}

/// A statement that changes a table from no input rows.
#[derive(Debug)]
pub enum Mutation {
    /// DELETE (no assignments) or UPDATE.
    Rows(ExprMatcher),
    /// Every row: a version with no parts.
    Truncate,
}

/// DELETE, UPDATE or TRUNCATE as a sink over an empty input: it acts when
/// executed (not planned, so EXPLAIN changes nothing) and reports the rows
/// matched or removed as DataFusion's `count`.
#[derive(Debug)]
pub struct MutationSink {
    table: Arc<Table>,
    schema: SchemaRef,
    mutation: Mutation,
}

impl MutationSink {
    pub fn new(table: Arc<Table>, schema: SchemaRef, mutation: Mutation) -> Self {
        MutationSink {
            table,
            schema,
            mutation,
        }
    }

    fn operation(&self) -> &'static str {
        match &self.mutation {
            Mutation::Rows(m) if m.assignments.is_some() => "UPDATE",
            Mutation::Rows(_) => "DELETE",
            Mutation::Truncate => "TRUNCATE",
        }
    }
}

impl DisplayAs for MutationSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Diagon{}: table={}", self.operation(), self.table.name())?;
        if let Mutation::Rows(ExprMatcher {
            filter: Some(filter),
            ..
        }) = &self.mutation
        {
            write!(f, ", filter={filter}")?;
        }
        Ok(())
    }
}

#[async_trait]
impl DataSink for MutationSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        _data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let rows = match &self.mutation {
            Mutation::Rows(matcher) => self.table.mutate(self.operation(), matcher).await?,
            Mutation::Truncate => self.table.truncate().await?,
        };
        Ok(rows)
    }
}
