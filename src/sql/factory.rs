//! `CREATE EXTERNAL TABLE ... STORED AS DIAGON`: creates a table, or reopens
//! the one at LOCATION when no columns are given.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::CreateExternalTable;

use super::definition;
use crate::error::Error;
use crate::index::skip::SkipSpec;
use crate::storage::Storage;
use crate::table::options::TextSearch;
use crate::table::tier::ReadCache;
use crate::table::{Table, TableOptions, TierOptions};

/// Option namespaces that configure object stores, not the table; the CLI
/// consumes them when it registers the store for LOCATION.
const STORE_OPTION_PREFIXES: &[&str] = &["aws.", "gcp.", "azure.", "http."];

#[derive(Debug, Default)]
pub struct DiagonTableFactory;

/// Resolves LOCATION (a path or a URL) to storage through the session's
/// object-store registry.
pub fn resolve_storage(state: &dyn Session, location: &str) -> Result<Storage> {
    let url = ListingTableUrl::parse(location)?;
    // Local directories get the local backend (pread, fsync); anything else
    // goes through the object store the session registered for the URL.
    if url.scheme() == "file"
        && let Ok(dir) = AsRef::<url::Url>::as_ref(&url).to_file_path()
    {
        return Ok(Storage::local(&dir)?);
    }
    let store = state.runtime_env().object_store(url.object_store())?;
    Ok(Storage::new(store, url.prefix().clone(), url.as_str()))
}

/// Options of this session's handle on the table, not stored with it: the
/// local read cache of its cold parts (a setting of the machine).
const READ_CACHE_OPTIONS: &[&str] = &["cache_location", "cache_max_bytes"];

/// The read cache the statement's `cache_location` and `cache_max_bytes`
/// ask for.
fn read_cache(name: &str, cmd: &CreateExternalTable) -> Result<ReadCache> {
    let mut cache = ReadCache::default();
    for (key, value) in &cmd.options {
        match key
            .strip_prefix("format.")
            .unwrap_or(key)
            .to_ascii_lowercase()
            .as_str()
        {
            "cache_location" => cache.dir = Some(value.trim().into()),
            "cache_max_bytes" => {
                cache.max_bytes = crate::table::options::parse_bytes(key, value)
                    .map_err(|e| plan_error(name, e))?;
            }
            _ => {}
        }
    }
    Ok(cache)
}

/// The table's own options, with DataFusion's `format.` prefix removed.
fn table_options(cmd: &CreateExternalTable) -> HashMap<String, String> {
    cmd.options
        .iter()
        .filter(|(k, _)| !STORE_OPTION_PREFIXES.iter().any(|p| k.starts_with(p)))
        .filter(|(k, _)| {
            let key = k.strip_prefix("format.").unwrap_or(k).to_ascii_lowercase();
            !READ_CACHE_OPTIONS.contains(&key.as_str())
        })
        .map(|(k, v)| {
            (
                k.strip_prefix("format.").unwrap_or(k).to_string(),
                v.clone(),
            )
        })
        .collect()
}

fn plan_error(table: &str, e: Error) -> DataFusionError {
    DataFusionError::Plan(format!("table '{table}': {e}"))
}

#[async_trait]
impl TableProviderFactory for DiagonTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let name = cmd.name.table().to_string();
        let location = match cmd.locations.as_slice() {
            [one] => one,
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "table '{name}': a diagon table has exactly one LOCATION"
                )));
            }
        };
        if !cmd.table_partition_cols.is_empty() {
            return Err(DataFusionError::Plan(format!(
                "table '{name}': PARTITIONED BY is not supported by diagon tables"
            )));
        }
        if !cmd.order_exprs.is_empty() {
            return Err(DataFusionError::Plan(format!(
                "table '{name}': WITH ORDER is not supported; declare the sort key with OPTIONS ('order_by' 'col1,col2')"
            )));
        }
        super::stores::ensure(state, location, &cmd.options).await?;
        let storage = resolve_storage(state, location)?;
        let mut options = table_options(cmd);
        let mut schema: SchemaRef = Arc::new(cmd.schema.as_arrow().clone());
        let existing = Table::open(&name, storage.clone()).await?;
        // A secondary index: its hidden column and implied options, whether
        // this statement or the existing table says it is one.
        let existing_sidx = existing
            .as_ref()
            .map(|t| t.cached_snapshot().options.sidx.is_some());
        let stated_sidx = super::sidx::stated_sidx(&options);
        if let (Some(stated), Some(found)) = (stated_sidx, existing_sidx)
            && stated != found
        {
            return Err(DataFusionError::Plan(format!(
                "table '{name}': option 'sidx' is '{stated}' but the existing table at '{}' {} a \
                 secondary index",
                storage.display(),
                if found { "is" } else { "is not" }
            )));
        }
        if existing_sidx == Some(true) && stated_sidx.is_none() {
            options.insert("sidx".into(), "true".into());
        }
        let sidx = super::sidx::declare(&mut options, &schema);
        if let Some(declared) = &sidx
            && !schema.fields().is_empty()
        {
            schema = declared.clone();
        }
        let table = match existing {
            Some(table) => {
                let (added, text, tiers) = check_reopen(&name, &table, &schema, &options)?;
                if !schema.fields().is_empty() {
                    check_extras(&name, &table, &schema, cmd)?;
                }
                if !added.is_empty() {
                    table.add_skip_indexes(&added).await?;
                }
                if let Some(text) = text {
                    table.set_text_search(text).await?;
                }
                if let Some(tiers) = tiers {
                    table.set_tiers(tiers).await?;
                }
                table
            }
            None if schema.fields().is_empty() => {
                return Err(DataFusionError::Plan(format!(
                    "table '{name}': no diagon table at '{}'; list the columns to create one",
                    storage.display()
                )));
            }
            None => {
                if sidx.is_some() {
                    super::sidx::creation_defaults(&mut options, &schema);
                }
                let parsed =
                    TableOptions::parse(&options, &schema).map_err(|e| plan_error(&name, e))?;
                let extras = definition::extras(
                    &schema,
                    cmd.column_defaults.clone(),
                    Some(&cmd.constraints),
                )?;
                Table::create_with(&name, storage, schema, parsed, &extras).await?
            }
        };
        attach_locations(state, &table, &cmd.options, &read_cache(&name, cmd)?).await?;
        table.start_mover();
        super::sidx::provider_for(table).await
    }
}

/// A reopen may restate the columns and options, but must not contradict
/// what the table stores: diagon never silently ignores a declaration. The
/// changes a reopen may make are to declare new skip indexes, returned to
/// be added, to declare text search options (text indexes added,
/// analyzers, BM25 parameters, the default operator changed), and to set
/// the cold location and move policy (`cold_location`, `move_*`), each
/// returned when it changes the table's.
fn check_reopen(
    name: &str,
    table: &Table,
    schema: &Schema,
    options: &HashMap<String, String>,
) -> Result<Reopened> {
    let mut added = Vec::new();
    let mut text = None;
    let snapshot = table.cached_snapshot();
    // Tier options are checked together with the stored ones (a policy
    // stated alone relies on the stored cold location).
    let (tier_options, options): (HashMap<String, String>, HashMap<String, String>) = options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| is_tier_option(k));
    let options = &options;
    let mut tiers = None;
    if !tier_options.is_empty() {
        let mut merged: HashMap<String, String> = snapshot.options.to_map().into_iter().collect();
        merged.extend(
            tier_options
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v)),
        );
        let declared =
            TableOptions::parse(&merged, &snapshot.schema).map_err(|e| plan_error(name, e))?;
        if declared.tiers != snapshot.options.tiers {
            tiers = Some(declared.tiers);
        }
    }
    if !schema.fields().is_empty() {
        let stored = snapshot.schema.fields();
        let same = stored.len() == schema.fields().len()
            && stored.iter().zip(schema.fields()).all(|(a, b)| {
                a.name() == b.name()
                    && a.data_type() == b.data_type()
                    && a.is_nullable() == b.is_nullable()
            });
        if !same {
            return Err(DataFusionError::Plan(format!(
                "table '{name}': the columns given differ from the existing table at '{}' ({}); omit the column list to reopen it",
                table.storage().display(),
                describe(&snapshot.schema)
            )));
        }
    }
    if !options.is_empty() {
        let given =
            TableOptions::parse(options, &snapshot.schema).map_err(|e| plan_error(name, e))?;
        let stored = snapshot.options.to_map();
        for (column, spec) in &given.skip_indexes {
            if !snapshot.options.skip_indexes.contains_key(column) {
                added.push((column.clone(), *spec));
            }
        }
        let declared = declared_text_search(&snapshot.options.text, &given.text, options);
        if declared != snapshot.options.text {
            text = Some(declared);
        }
        for (key, value) in given.to_map() {
            let is_new_index = key
                .strip_prefix("skip_index.")
                .is_some_and(|c| added.iter().any(|(a, _)| a == c))
                || is_text_search_option(&key);
            if options.keys().any(|k| k.eq_ignore_ascii_case(&key))
                && stored.get(&key) != Some(&value)
                && !is_new_index
            {
                return Err(DataFusionError::Plan(format!(
                    "table '{name}': option '{key}' is '{value}' but the existing table has '{}'",
                    stored.get(&key).map(String::as_str).unwrap_or("(unset)")
                )));
            }
        }
    }
    Ok((added, text, tiers))
}

/// What a reopen declares anew: skip indexes to add, and the text search
/// and tier options when they differ from the table's.
type Reopened = (
    Vec<(String, SkipSpec)>,
    Option<TextSearch>,
    Option<TierOptions>,
);

/// Whether `key` is one of the tier options a reopen may change.
fn is_tier_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "cold_location" || key.starts_with("move_")
}

/// Gives `table` the storage of its cold location and of every location
/// its parts live at, through the session's object stores (built from the
/// statement's `options` where the session has none).
async fn attach_locations(
    state: &dyn Session,
    table: &Table,
    options: &HashMap<String, String>,
    cache: &ReadCache,
) -> Result<()> {
    let snapshot = table.cached_snapshot();
    let mut locations: std::collections::BTreeSet<String> = snapshot
        .parts
        .iter()
        .filter_map(|p| p.location.clone())
        .collect();
    locations.extend(snapshot.options.tiers.cold_location.clone());
    for location in locations {
        super::stores::ensure(state, &location, options).await?;
        let storage = resolve_storage(state, &location).map_err(|e| {
            DataFusionError::Plan(format!(
                "table '{}': cold location '{location}': {e}",
                table.name()
            ))
        })?;
        // A location that cannot be checked (a store down) or is not the
        // table's is not attached: the table still opens, and reads of its
        // parts there fail saying why.
        match table.check_location(&location, &storage).await {
            Ok(()) => table.attach_location_with(&location, storage, cache),
            Err(e) => {
                log::warn!(
                    "table '{}': cold location '{location}' not attached: {e}",
                    table.name()
                );
                table.refuse_location(&location, e.to_string());
            }
        }
    }
    Ok(())
}

/// The table's text search options with what a reopen states: columns
/// named in `text_index` are added (those not named are kept), a stated
/// analyzer, BM25 parameter or default operator replaces the stored one.
fn declared_text_search(
    stored: &TextSearch,
    given: &TextSearch,
    options: &HashMap<String, String>,
) -> TextSearch {
    let stated = |key: &str| options.keys().any(|k| k.eq_ignore_ascii_case(key));
    let mut text = stored.clone();
    for (column, analyzer) in &given.indexes {
        if !text.indexes.contains_key(column) || stated(&format!("analyzer.{column}")) {
            text.indexes.insert(column.clone(), *analyzer);
        }
    }
    if stated("bm25.k1") {
        text.bm25.k1 = given.bm25.k1;
    }
    if stated("bm25.b") {
        text.bm25.b = given.bm25.b;
    }
    if stated("default_operator") {
        text.default_operator = given.default_operator;
    }
    text
}

/// Whether `key` is one of the text search options a reopen may change.
fn is_text_search_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    matches!(
        key.as_str(),
        "text_index" | "bm25.k1" | "bm25.b" | "default_operator"
    ) || key.starts_with("analyzer.")
}

/// Defaults and constraints restated at a reopen must be those stored.
fn check_extras(
    name: &str,
    table: &Table,
    schema: &Schema,
    cmd: &CreateExternalTable,
) -> Result<()> {
    let given = definition::extras(schema, cmd.column_defaults.clone(), Some(&cmd.constraints))?;
    let snapshot = table.cached_snapshot();
    let stated = !given.defaults.is_empty() || !given.constraints.is_empty();
    if stated
        && (given.defaults != snapshot.defaults() || given.constraints != snapshot.constraints())
    {
        return Err(DataFusionError::Plan(format!(
            "table '{name}': the defaults or constraints given differ from the existing table's; \
             omit the column list to reopen it"
        )));
    }
    Ok(())
}

fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "{} {}{}",
                f.name(),
                f.data_type(),
                if f.is_nullable() { "" } else { " NOT NULL" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
