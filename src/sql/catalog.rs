//! A persistent catalog: a directory in which plain `CREATE TABLE`,
//! `CREATE TABLE ... AS SELECT`, `CREATE SCHEMA` and `DROP TABLE` act on
//! diagon tables, so a restarted session finds the same tables and rows.
//!
//! ```text
//! <data dir>/<schema>/<table>/<id>/         a diagon table (_log, parts)
//! <data dir>/<schema>/<table>/<id>.dropped  its files await deletion
//! ```
//!
//! DataFusion creates a plain table as an in-memory table and registers it
//! with the schema; [`DiagonSchema::register_table`] turns that into a
//! diagon table in a new `<schema>/<table>/<id>` directory holding the same
//! rows. Views and external tables registered in a data-dir schema live for
//! the session only.
//!
//! Each incarnation of a name has its own id because DataFusion runs
//! `CREATE OR REPLACE TABLE t AS SELECT ... FROM t` as "deregister `t`, run
//! the query, register the result": the old table must stay readable until
//! the query is done. DROP TABLE therefore marks the directory dropped and
//! deletes it when the last handle of the table goes; a marker left by a
//! crash is swept when the catalog is next opened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};

use super::definition;
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
                let schema = DiagonSchema::new(entry.path());
                schema.sweep_dropped();
                schemas.insert(name, Arc::new(schema));
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
        let mut names: Vec<String> = crate::sync::read(&self.schemas).keys().cloned().collect();
        names.sort();
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let schemas = crate::sync::read(&self.schemas);
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
        let previous = crate::sync::write(&self.schemas).insert(name.to_string(), schema);
        Ok(previous.map(|s| s as Arc<dyn SchemaProvider>))
    }

    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        let Some(schema) = crate::sync::read(&self.schemas).get(name).cloned() else {
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
        crate::sync::write(&self.schemas).remove(name);
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

    fn home(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory of the live table `name` (never for a name that is not
    /// a plain directory name): the newest incarnation not marked dropped.
    fn live_dir(&self, name: &str) -> Option<PathBuf> {
        check_name("table", name).ok()?;
        let home = self.home(name);
        let mut live: Vec<String> = std::fs::read_dir(&home)
            .ok()?
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().to_string())
            .filter(|id| {
                home.join(id).join(LOG_DIR).is_dir() && !dropped_marker(&home, id).exists()
            })
            .collect();
        live.sort();
        live.pop().map(|id| home.join(id))
    }

    /// Deletes incarnations left marked dropped, by a crash or by a process
    /// that ended while a plan still held them.
    fn sweep_dropped(&self) {
        let Ok(homes) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for home in homes.flatten() {
            let Ok(entries) = std::fs::read_dir(home.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let marker = entry.path();
                let name = marker.file_name().and_then(|n| n.to_str());
                if let Some(id) = name.and_then(|n| n.strip_suffix(DROPPED_SUFFIX)) {
                    drop(DroppedTable {
                        dir: home.path().join(id),
                        marker: marker.clone(),
                    });
                }
            }
        }
    }

    /// Creates the diagon table `name` with the rows of an in-memory table,
    /// in a new incarnation directory.
    async fn persist(&self, name: &str, memory: &MemTable) -> Result<Arc<dyn TableProvider>> {
        let dir = self.home(name).join(new_incarnation_id());
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let created = self.create_with_rows(name, &dir, memory).await;
        if created.is_err() {
            // A failed CREATE TABLE AS leaves no table behind.
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_dir(self.home(name));
        }
        created
    }

    async fn create_with_rows(
        &self,
        name: &str,
        dir: &Path,
        memory: &MemTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let schema = memory.schema();
        let defaults = schema.fields().iter().filter_map(|f| {
            let expr = memory.get_column_default(f.name())?;
            Some((f.name().clone(), expr.clone()))
        });
        let extras = definition::extras(&schema, defaults, memory.constraints())?;
        let storage = Storage::local(dir)?;
        let table =
            Table::create_with(name, storage, schema, TableOptions::default(), &extras).await?;
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
        let mut names: Vec<String> = crate::sync::read(&self.tables).keys().cloned().collect();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if !names.contains(&name) && self.live_dir(&name).is_some() {
                    names.push(name);
                }
            }
        }
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = crate::sync::read(&self.tables).get(name) {
            return Ok(Some(table.clone()));
        }
        let Some(dir) = self.live_dir(name) else {
            return Ok(None);
        };
        let Some(table) = Table::open(name, Storage::local(&dir)?).await? else {
            return Ok(None);
        };
        let provider: Arc<dyn TableProvider> = Arc::new(DiagonTableProvider::new(table));
        let mut tables = crate::sync::write(&self.tables);
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
        crate::sync::write(&self.tables).insert(name, provider);
        Ok(None)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let registered = crate::sync::write(&self.tables).remove(name);
        let Some(dir) = self.live_dir(name) else {
            return Ok(registered);
        };
        // DROP TABLE of a table this schema stores deletes its data, once
        // nothing reads it any more.
        let home = self.home(name);
        let id = dir
            .file_name()
            .expect("an incarnation id")
            .to_string_lossy();
        let marker = dropped_marker(&home, &id);
        std::fs::write(&marker, b"").map_err(|e| io(&marker, e))?;
        let dropped = DroppedTable { dir, marker };
        match registered
            .as_ref()
            .and_then(|p| (p.as_ref() as &dyn std::any::Any).downcast_ref::<DiagonTableProvider>())
        {
            Some(diagon) => {
                diagon.table().mark_dropped();
                diagon.table().on_release(dropped);
            }
            None => drop(dropped),
        }
        Ok(registered)
    }

    fn table_exist(&self, name: &str) -> bool {
        crate::sync::read(&self.tables).contains_key(name) || self.live_dir(name).is_some()
    }
}

const DROPPED_SUFFIX: &str = ".dropped";

fn dropped_marker(home: &Path, id: &str) -> PathBuf {
    home.join(format!("{id}{DROPPED_SUFFIX}"))
}

/// A fresh incarnation id; ids sort by creation time.
fn new_incarnation_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{micros:016x}{}", &random[..8])
}

/// The files of a dropped table, deleted when this is dropped.
#[derive(Debug)]
struct DroppedTable {
    dir: PathBuf,
    marker: PathBuf,
}

impl Drop for DroppedTable {
    fn drop(&mut self) {
        // The marker goes last: a crash before it leaves the sweep to finish.
        if std::fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
            let _ = std::fs::remove_file(&self.marker);
            if let Some(home) = self.marker.parent() {
                let _ = std::fs::remove_dir(home);
            }
        }
    }
}
