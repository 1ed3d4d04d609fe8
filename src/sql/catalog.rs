//! A persistent catalog: a directory in which plain `CREATE TABLE`,
//! `CREATE TABLE ... AS SELECT`, `CREATE SCHEMA` and `DROP TABLE` act on
//! diagon tables, so a restarted session finds the same tables and rows.
//!
//! ```text
//! <data dir>/<schema>/<table>/   a diagon table (_log, parts)
//! ```
//!
//! DataFusion creates a plain table as an in-memory table and registers it
//! with the schema; [`DiagonSchema::register_table`] turns that into a
//! diagon table at `<schema>/<table>` holding the same rows. Views and
//! external tables registered in a data-dir schema live for the session only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};

use super::provider::DiagonTableProvider;
use crate::storage::Storage;
use crate::table::log::LOG_DIR;
use crate::table::{Table, TableOptions};

/// The schema a data directory always has.
pub const DEFAULT_SCHEMA: &str = "public";

/// A catalog whose schemas are the subdirectories of a data directory.
#[derive(Debug)]
pub struct DiagonCatalog {
    root: PathBuf,
    schemas: RwLock<HashMap<String, Arc<DiagonSchema>>>,
}

impl DiagonCatalog {
    /// Opens (creating if needed) the catalog at `root`, with its schemas.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join(DEFAULT_SCHEMA)).map_err(|e| io(&root, e))?;
        let mut schemas = HashMap::new();
        for entry in std::fs::read_dir(&root).map_err(|e| io(&root, e))? {
            let entry = entry.map_err(|e| io(&root, e))?;
            if entry.path().is_dir() {
                let name = entry.file_name().to_string_lossy().to_string();
                schemas.insert(name, Arc::new(DiagonSchema::new(entry.path())));
            }
        }
        Ok(DiagonCatalog {
            root,
            schemas: RwLock::new(schemas),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn io(path: &Path, e: std::io::Error) -> DataFusionError {
    DataFusionError::Execution(format!("data directory '{}': {e}", path.display()))
}

/// Names become directories: plain names only.
fn check_name(kind: &str, name: &str) -> Result<()> {
    if crate::storage::is_plain_name(name) && !name.starts_with('.') && !name.starts_with('_') {
        Ok(())
    } else {
        Err(DataFusionError::Plan(format!(
            "{kind} name '{name}' cannot be a directory name in the data directory"
        )))
    }
}

impl CatalogProvider for DiagonCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.schemas.read().expect("lock").keys().cloned().collect();
        names.sort();
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let schemas = self.schemas.read().expect("lock");
        schemas
            .get(name)
            .map(|s| s.clone() as Arc<dyn SchemaProvider>)
    }

    fn register_schema(
        &self,
        name: &str,
        _schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        check_name("schema", name)?;
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let schema = Arc::new(DiagonSchema::new(dir));
        let previous = self
            .schemas
            .write()
            .expect("lock")
            .insert(name.to_string(), schema);
        Ok(previous.map(|s| s as Arc<dyn SchemaProvider>))
    }

    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        let Some(schema) = self.schemas.read().expect("lock").get(name).cloned() else {
            return Ok(None);
        };
        let tables = schema.table_names();
        if !tables.is_empty() && !cascade {
            return Err(DataFusionError::Plan(format!(
                "schema '{name}' has tables ({}); use DROP SCHEMA ... CASCADE",
                tables.join(", ")
            )));
        }
        for table in tables {
            schema.deregister_table(&table)?;
        }
        std::fs::remove_dir_all(&schema.dir).map_err(|e| io(&schema.dir, e))?;
        self.schemas.write().expect("lock").remove(name);
        Ok(Some(schema))
    }
}

/// A schema whose diagon tables are the subdirectories of its directory.
#[derive(Debug)]
pub struct DiagonSchema {
    dir: PathBuf,
    /// Tables opened or registered in this session.
    tables: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
}

impl DiagonSchema {
    fn new(dir: PathBuf) -> Self {
        DiagonSchema {
            dir,
            tables: RwLock::new(HashMap::new()),
        }
    }

    fn table_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether `name` is a diagon table stored in this schema's directory
    /// (never for a name that is not a plain directory name).
    fn stored(&self, name: &str) -> bool {
        check_name("table", name).is_ok() && self.table_dir(name).join(LOG_DIR).is_dir()
    }

    fn storage(&self, name: &str) -> Result<Storage> {
        Ok(Storage::local(&self.table_dir(name))?)
    }

    /// Creates the diagon table `name` with the rows of an in-memory table.
    async fn persist(&self, name: &str, memory: &MemTable) -> Result<Arc<dyn TableProvider>> {
        let dir = self.table_dir(name);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let created = self.create_with_rows(name, memory).await;
        if created.is_err() {
            // A failed CREATE TABLE AS leaves no table behind.
            let _ = std::fs::remove_dir_all(&dir);
        }
        created
    }

    async fn create_with_rows(
        &self,
        name: &str,
        memory: &MemTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let schema = memory.schema();
        let table =
            Table::create(name, self.storage(name)?, schema, TableOptions::default()).await?;
        let mut batches: Vec<RecordBatch> = Vec::new();
        for partition in &memory.batches {
            batches.extend(partition.read().await.iter().cloned());
        }
        if !batches.is_empty() {
            let mut writer = table.insert();
            for batch in batches {
                writer.write(batch).await?;
            }
            writer.commit().await?;
        }
        Ok(Arc::new(DiagonTableProvider::new(table)))
    }
}

/// Runs a future to completion from synchronous catalog methods, which
/// DataFusion calls from inside its async runtime.
fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(future))
        }
        // A current-thread runtime (or none) cannot be blocked on from within:
        // run the future on a runtime of its own, on another thread.
        _ => std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime")
                        .block_on(future)
                })
                .join()
                .expect("catalog thread")
        }),
    }
}

#[async_trait]
impl SchemaProvider for DiagonSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tables.read().expect("lock").keys().cloned().collect();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if self.stored(&name) && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.tables.read().expect("lock").get(name) {
            return Ok(Some(table.clone()));
        }
        if !self.stored(name) {
            return Ok(None);
        }
        let Some(table) = Table::open(name, self.storage(name)?).await? else {
            return Ok(None);
        };
        let provider: Arc<dyn TableProvider> = Arc::new(DiagonTableProvider::new(table));
        let mut tables = self.tables.write().expect("lock");
        Ok(Some(
            tables.entry(name.to_string()).or_insert(provider).clone(),
        ))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.table_exist(&name) {
            return Err(DataFusionError::Plan(format!(
                "table '{name}' already exists"
            )));
        }
        let provider = match (table.as_ref() as &dyn std::any::Any).downcast_ref::<MemTable>() {
            Some(memory) => {
                check_name("table", &name)?;
                block_on(self.persist(&name, memory))?
            }
            None => table,
        };
        self.tables.write().expect("lock").insert(name, provider);
        Ok(None)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let registered = self.tables.write().expect("lock").remove(name);
        if !self.stored(name) {
            return Ok(registered);
        }
        if let Some(diagon) = registered
            .as_ref()
            .and_then(|p| (p.as_ref() as &dyn std::any::Any).downcast_ref::<DiagonTableProvider>())
        {
            diagon.table().mark_dropped();
        }
        // DROP TABLE of a table this schema stores deletes its data.
        let dir = self.table_dir(name);
        std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(registered)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.read().expect("lock").contains_key(name) || self.stored(name)
    }
}
