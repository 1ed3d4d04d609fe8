//! Helpers shared by the integration tests.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{SessionConfig, SessionContext};
use diagon::storage::Storage;
use diagon::{Table, TableOptions};

/// A session with diagon registered.
pub fn context(target_partitions: usize) -> SessionContext {
    diagon::sql::new_context(SessionConfig::new().with_target_partitions(target_partitions))
}

/// Storage over a local directory.
pub fn local_storage(dir: &std::path::Path) -> Storage {
    Storage::local(dir).expect("local storage")
}

/// Creates a table and inserts `batches`, one commit per batch.
pub async fn table_with(
    storage: Storage,
    schema: SchemaRef,
    options: TableOptions,
    batches: &[RecordBatch],
) -> Arc<Table> {
    let table = Table::create("t", storage, schema, options)
        .await
        .expect("create");
    for batch in batches {
        let mut writer = table.insert();
        writer.write(batch.clone()).await.expect("write");
        writer.commit().await.expect("commit");
    }
    table
}

/// Runs `sql` and formats the result as a table (for comparing answers).
pub async fn query(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&batches).expect("format").to_string()
}

/// Total rows in `batches`.
pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// The crate root at run time. `cargo test` sets `CARGO_MANIFEST_DIR` for
/// the test process; the compile-time value can name another checkout when
/// a target directory is shared between clones (as CI does).
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
