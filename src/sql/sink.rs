//! INSERT INTO a diagon table: a `DataSink` that streams the input into an
//! [`InsertWriter`](crate::table::InsertWriter) and commits once at the end.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::datasource::sink::DataSink;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use futures::StreamExt;

use crate::table::Table;

#[derive(Debug)]
pub struct DiagonSink {
    table: Arc<Table>,
    schema: SchemaRef,
    metrics: ExecutionPlanMetricsSet,
}

impl DiagonSink {
    pub fn new(table: Arc<Table>, schema: SchemaRef) -> Self {
        DiagonSink {
            table,
            schema,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for DiagonSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DiagonSink: table={}", self.table.name())
    }
}

#[async_trait]
impl DataSink for DiagonSink {
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
        let mut writer = self.table.insert();
        while let Some(batch) = data.next().await {
            writer.write(batch?).await?;
        }
        // Written before counting: the buffer may become several parts.
        writer.flush_all().await?;
        let parts = writer.pending_parts();
        let rows = writer.commit().await?;
        MetricBuilder::new(&self.metrics)
            .global_counter("parts_written")
            .add(parts);
        MetricBuilder::new(&self.metrics)
            .global_counter("rows_written")
            .add(rows as usize);
        Ok(rows)
    }
}
