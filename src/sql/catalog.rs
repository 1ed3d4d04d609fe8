//! A persistent catalog: a directory in which plain `CREATE TABLE`,
//! `CREATE TABLE ... AS SELECT`, `CREATE SCHEMA` and `DROP TABLE` act on
//! diagon tables, so a restarted session finds the same tables and rows.
//!
//! ```text
//! <data dir>/<schema>/_schema                an empty marker: the schema exists
//! <data dir>/<schema>/_dropped               the schema awaits deletion
//! <data dir>/<schema>/<table>/<id>/          a diagon table (_log, parts)
//! <data dir>/<schema>/<table>/<id>.dropped   its files await deletion
//! <data dir>/<schema>/<table>/<id>.creating  CREATE TABLE AS has not finished
//! ```
//!
//! Every file goes through the catalog's [`Storage`], like every file of a
//! table: the data directory could as well be a prefix of an object store.
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

use super::block_on;
use super::definition;
use super::provider::DiagonTableProvider;
use crate::storage::Storage;
use crate::table::{Table, TableOptions};

/// The schema a data directory always has.
pub const DEFAULT_SCHEMA: &str = "public";

/// Marks a directory as a schema, so an empty schema is seen where
/// directories are implicit (object stores).
const SCHEMA_MARKER: &str = "_schema";

/// Marks a schema dropped: its tables' files go when their last handles
/// do, the rest when the catalog is next opened.
const SCHEMA_DROPPED: &str = "_dropped";

const DROPPED_SUFFIX: &str = ".dropped";
const CREATING_SUFFIX: &str = ".creating";

/// An incarnation still marked as being created this long after its marker
/// was written belongs to a process that died: the sweep removes it.
const ABANDONED_AFTER_MS: i64 = 600_000;

/// A catalog whose schemas are the subdirectories of a data directory.
#[derive(Debug)]
pub struct DiagonCatalog {
    root: PathBuf,
    storage: Storage,
    schemas: RwLock<HashMap<String, Arc<DiagonSchema>>>,
}

impl DiagonCatalog {
    /// Opens (creating if needed) the catalog at the local directory
    /// `root`, with its schemas.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| {
            DataFusionError::Execution(format!("data directory '{}': {e}", root.display()))
        })?;
        let storage = Storage::local(&root)?;
        let catalog = DiagonCatalog {
            root,
            storage: storage.clone(),
            schemas: RwLock::new(HashMap::new()),
        };
        let schemas = block_on(async {
            let mut names = storage.list_dir("").await?.dirs;
            if !names.iter().any(|n| n == DEFAULT_SCHEMA) {
                storage
                    .put(&format!("{DEFAULT_SCHEMA}/{SCHEMA_MARKER}"), Vec::new())
                    .await?;
                names.push(DEFAULT_SCHEMA.to_string());
            }
            let mut schemas = HashMap::new();
            for name in names {
                if storage.exists(&format!("{name}/{SCHEMA_DROPPED}")).await? {
                    storage.delete_dir(&name).await?;
                    continue;
                }
                let schema = DiagonSchema::new(storage.at(&name));
                schema.sweep_dropped().await?;
                schemas.insert(name, Arc::new(schema));
            }
            Ok::<_, DataFusionError>(schemas)
        })?;
        *crate::sync::write(&catalog.schemas) = schemas;
        Ok(catalog)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
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
        let marker = format!("{name}/{SCHEMA_MARKER}");
        block_on(async {
            self.storage.put(&marker, Vec::new()).await?;
            self.storage.sync(vec![marker.clone()]).await?;
            self.storage
                .delete(&format!("{name}/{SCHEMA_DROPPED}"))
                .await
        })?;
        let schema = Arc::new(DiagonSchema::new(self.storage.at(name)));
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
        // Each table's files go when its last handle does (a query may
        // still read it); the schema is gone for this catalog now and from
        // the directory at the next open.
        for table in tables {
            schema.deregister_table(&table)?;
        }
        block_on(async {
            let dropped = format!("{name}/{SCHEMA_DROPPED}");
            self.storage.put(&dropped, Vec::new()).await?;
            self.storage.sync(vec![dropped]).await?;
            self.storage
                .delete(&format!("{name}/{SCHEMA_MARKER}"))
                .await
        })?;
        crate::sync::write(&self.schemas).remove(name);
        Ok(Some(schema))
    }
}

/// A schema whose diagon tables are the subdirectories of its directory.
#[derive(Debug)]
pub struct DiagonSchema {
    storage: Storage,
    /// Tables opened or registered in this session.
    tables: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
}

impl DiagonSchema {
    fn new(storage: Storage) -> Self {
        DiagonSchema {
            storage,
            tables: RwLock::new(HashMap::new()),
        }
    }

    /// `provider`, or when its table was altered since it was made (by
    /// another session or process: the newest version has other columns)
    /// a provider with the table's columns now.
    async fn current(
        &self,
        name: &str,
        provider: Arc<dyn TableProvider>,
    ) -> Result<Arc<dyn TableProvider>> {
        let Some(diagon) =
            (provider.as_ref() as &dyn std::any::Any).downcast_ref::<DiagonTableProvider>()
        else {
            return Ok(provider);
        };
        let table = diagon.table().clone();
        let snapshot = table.snapshot().await?;
        if diagon.is_current(&snapshot) {
            return Ok(provider);
        }
        let fresh: Arc<dyn TableProvider> = Arc::new(DiagonTableProvider::new(table));
        self.replace(name, fresh.clone());
        Ok(fresh)
    }

    /// Puts `provider` in place of the session's provider of table `name`
    /// (after ALTER TABLE changed its schema).
    pub fn replace(&self, name: &str, provider: Arc<dyn TableProvider>) {
        crate::sync::write(&self.tables).insert(name.to_string(), provider);
    }

    /// The incarnation id of the live table `name` (never for a name that
    /// is not a plain directory name): the newest not marked dropped.
    async fn live_id(&self, name: &str) -> Result<Option<String>> {
        if check_name("table", name).is_err() {
            return Ok(None);
        }
        let home = self.storage.list_dir(name).await?;
        let mut live = Vec::new();
        for id in home.dirs {
            let marked = |suffix: &str| home.files.contains(&format!("{id}{suffix}"));
            if marked(DROPPED_SUFFIX) || marked(CREATING_SUFFIX) {
                continue;
            }
            let storage = self.storage.at(&format!("{name}/{id}"));
            if crate::table::log::exists(&storage).await? {
                live.push(id);
            }
        }
        live.sort();
        Ok(live.pop())
    }

    /// Deletes incarnations left marked dropped, by a crash or by a process
    /// that ended while a plan still held them, and those a crash left
    /// half created (their marker holds when creation began).
    async fn sweep_dropped(&self) -> Result<()> {
        let now = crate::table::log::now_ms();
        for name in self.storage.list_dir("").await?.dirs {
            for file in self.storage.list_dir(&name).await?.files {
                let marker = format!("{name}/{file}");
                let id = match (
                    file.strip_suffix(DROPPED_SUFFIX),
                    file.strip_suffix(CREATING_SUFFIX),
                ) {
                    (Some(id), _) => id,
                    (_, Some(id)) => {
                        let began =
                            self.storage.get(&marker).await.ok().and_then(|b| {
                                Some(i64::from_le_bytes(b.as_ref().try_into().ok()?))
                            });
                        if began.is_some_and(|t| now - t < ABANDONED_AFTER_MS) {
                            continue;
                        }
                        id
                    }
                    _ => continue,
                };
                delete_dropped(&self.storage, &format!("{name}/{id}"), &marker).await;
            }
        }
        Ok(())
    }

    /// Creates the diagon table `name` with the rows of an in-memory table,
    /// in a new incarnation directory. The incarnation is marked as being
    /// created until its rows are committed, so a crash in between leaves
    /// no table holding some of the rows.
    async fn persist(&self, name: &str, memory: &MemTable) -> Result<Arc<dyn TableProvider>> {
        let id = new_incarnation_id();
        let dir = format!("{name}/{id}");
        let creating = format!("{name}/{id}{CREATING_SUFFIX}");
        let began = crate::table::log::now_ms().to_le_bytes().to_vec();
        self.storage.put(&creating, began).await?;
        self.storage.sync(vec![creating.clone()]).await?;
        let created = self.create_with_rows(name, &dir, memory).await;
        match &created {
            Ok(_) => self.storage.delete(&creating).await?,
            // A failed CREATE TABLE AS leaves no table behind.
            Err(_) => delete_dropped(&self.storage, &dir, &creating).await,
        }
        created
    }

    async fn create_with_rows(
        &self,
        name: &str,
        dir: &str,
        memory: &MemTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let schema = memory.schema();
        let defaults = schema.fields().iter().filter_map(|f| {
            let expr = memory.get_column_default(f.name())?;
            Some((f.name().clone(), expr.clone()))
        });
        let extras = definition::extras(&schema, defaults, memory.constraints())?;
        let storage = self.storage.at(dir);
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
        super::sidx::provider_for(table).await
    }
}

#[async_trait]
impl SchemaProvider for DiagonSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = crate::sync::read(&self.tables).keys().cloned().collect();
        let stored = block_on(async {
            let mut stored = Vec::new();
            for name in self.storage.list_dir("").await?.dirs {
                if self.live_id(&name).await?.is_some() {
                    stored.push(name);
                }
            }
            Ok::<_, DataFusionError>(stored)
        });
        match stored {
            Ok(stored) => names.extend(stored),
            Err(e) => log::warn!("listing tables of '{}': {e}", self.storage.display()),
        }
        names.sort();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let cached = crate::sync::read(&self.tables).get(name).cloned();
        if let Some(provider) = cached {
            return Ok(Some(self.current(name, provider).await?));
        }
        let Some(id) = self.live_id(name).await? else {
            return Ok(None);
        };
        let storage = self.storage.at(&format!("{name}/{id}"));
        let Some(table) = Table::open(name, storage).await? else {
            return Ok(None);
        };
        let provider = super::sidx::provider_for(table).await?;
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
        let Some(id) = block_on(self.live_id(name))? else {
            return Ok(registered);
        };
        // DROP TABLE of a table this schema stores deletes its data, once
        // nothing reads it any more.
        let marker = format!("{name}/{id}{DROPPED_SUFFIX}");
        block_on(async {
            self.storage.put(&marker, Vec::new()).await?;
            // Durable before any file of the table goes.
            self.storage.sync(vec![marker.clone()]).await
        })?;
        let dropped = DroppedTable {
            storage: self.storage.clone(),
            dir: format!("{name}/{id}"),
            marker,
        };
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
        crate::sync::read(&self.tables).contains_key(name)
            || block_on(self.live_id(name)).ok().flatten().is_some()
    }
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
    storage: Storage,
    /// The incarnation's directory and its marker, in the schema.
    dir: String,
    marker: String,
}

/// Deletes a dropped incarnation's files, the marker last: a crash before
/// it leaves the sweep to finish.
async fn delete_dropped(storage: &Storage, dir: &str, marker: &str) {
    if storage.delete_dir(dir).await.is_ok() {
        let _ = storage.delete(marker).await;
        if let Some((home, _)) = marker.rsplit_once('/') {
            let _ = storage.remove_empty_dir(home).await;
        }
    }
}

impl Drop for DroppedTable {
    fn drop(&mut self) {
        block_on(delete_dropped(&self.storage, &self.dir, &self.marker));
    }
}
