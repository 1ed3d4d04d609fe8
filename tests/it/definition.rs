//! A table keeps its definition: field and schema metadata, column
//! defaults and constraints survive a reopen, for tables made through the
//! Rust API and through a data directory.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use diagon::sql::DiagonTableProvider;
use diagon::{Table, TableOptions};

fn schema_with_metadata() -> SchemaRef {
    let field = Field::new("a", DataType::Int64, false)
        .with_metadata(HashMap::from([("unit".to_string(), "ms".to_string())]));
    Arc::new(
        Schema::new(vec![field, Field::new("b", DataType::Int64, true)]).with_metadata(
            HashMap::from([("origin".to_string(), "sensor".to_string())]),
        ),
    )
}

fn batch(schema: &SchemaRef) -> RecordBatch {
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(Int64Array::from(vec![Some(10), None])),
        ],
    )
    .unwrap()
}

async fn unit_of_a(ctx: &SessionContext, table: &str) -> String {
    crate::common::query(
        ctx,
        &format!("SELECT DISTINCT arrow_metadata(a, 'unit') AS unit FROM {table}"),
    )
    .await
}

#[tokio::test]
async fn field_and_schema_metadata_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let schema = schema_with_metadata();
    let storage = crate::common::local_storage(dir.path());
    crate::common::table_with(
        storage,
        schema.clone(),
        TableOptions::default(),
        &[batch(&schema)],
    )
    .await;
    let table = Table::open("t", crate::common::local_storage(dir.path()))
        .await
        .unwrap()
        .unwrap();
    let provider = DiagonTableProvider::new(table);
    assert_eq!(
        datafusion::catalog::TableProvider::schema(&provider).as_ref(),
        schema.as_ref()
    );
    let ctx = crate::common::context(2);
    ctx.register_table("t", Arc::new(provider)).unwrap();
    assert!(unit_of_a(&ctx, "t").await.contains("| ms "));
}

#[tokio::test]
async fn a_data_directory_keeps_metadata_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let schema = schema_with_metadata();
    {
        let ctx = SessionContext::new();
        diagon::sql::use_data_dir(&ctx, dir.path()).unwrap();
        let memory = MemTable::try_new(schema.clone(), vec![vec![batch(&schema)]]).unwrap();
        ctx.register_table("src", Arc::new(memory)).unwrap();
        crate::common::query(&ctx, "CREATE TABLE d (a INT, c INT DEFAULT 7)").await;
        crate::common::query(&ctx, "INSERT INTO d (a) VALUES (1)").await;
    }
    // A new session over the same directory, as a restarted CLI.
    let ctx = SessionContext::new();
    diagon::sql::use_data_dir(&ctx, dir.path()).unwrap();
    assert!(unit_of_a(&ctx, "src").await.contains("| ms "));
    let provider = ctx.table_provider("src").await.unwrap();
    assert_eq!(provider.schema().metadata(), schema.metadata());
    crate::common::query(&ctx, "INSERT INTO d (a) VALUES (2)").await;
    let rows = crate::common::query(&ctx, "SELECT a, c FROM d ORDER BY a").await;
    assert_eq!(
        rows.lines().filter(|l| l.contains("| 7 ")).count(),
        2,
        "both rows take the default:\n{rows}"
    );
}
