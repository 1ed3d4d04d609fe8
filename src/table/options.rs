//! Table options: what `OPTIONS (...)` may say at CREATE, validated against
//! the schema, and stored in every commit so a reopen needs none of them.

use std::collections::{BTreeMap, HashMap};

use arrow::datatypes::{DataType, Field, Schema};

use crate::encoding::{CodecChain, Layout, layout_of, rows_bound, storage_type};
use crate::error::{Error, Result};
use crate::index::skip::SkipSpec;
use crate::index::text::bm25::Bm25;
use crate::index::text::{Analyzer, DefaultOperator};

pub const DEFAULT_GRANULARITY: usize = 8192;
/// As ClickHouse's `index_granularity_bytes`.
pub const DEFAULT_GRANULARITY_BYTES: usize = 10 << 20;
/// As ClickHouse's `min_bytes_for_wide_part`.
pub const DEFAULT_MIN_BYTES_FOR_WIDE_PART: usize = 10 << 20;
pub const DEFAULT_INSERT_BLOCK_ROWS: usize = 1 << 20;
pub const DEFAULT_INSERT_BLOCK_BYTES: usize = 256 << 20;
pub const DEFAULT_INSERT_INDEX_BYTES: usize = 512 << 20;
const MAX_GRANULARITY: usize = crate::part::column::MAX_GRANULE_ROWS;

/// The option names a table accepts (`codec.<column>` is a family).
pub const KNOWN_OPTIONS: &[&str] = &[
    "order_by",
    "granularity",
    "granularity_bytes",
    "min_bytes_for_wide_part",
    "codec.<column>",
    "skip_index.<column>",
    "text_index",
    "analyzer.<column>",
    "bm25.k1",
    "bm25.b",
    "default_operator",
    "insert_block_rows",
    "insert_block_bytes",
    "insert_index_bytes",
    "merge.background",
    "merge.size_ratio",
    "merge.parts_per_merge",
    "merge.max_part_bytes",
    "merge.min_part_bytes",
    "old_parts_lifetime",
    "checkpoint_interval",
    "log_retention",
    "sidx",
    "sidx.memory_limit",
    "sidx.backpressure",
    "cold_location",
    "move_after",
    "move_time_column",
    "move_when_local_bytes_above",
];

/// The text search options of a table: its text-indexed columns with
/// their analyzers (`text_index`, `analyzer.<column>`), BM25's parameters
/// (`bm25.k1`, `bm25.b`) and how words side by side in a query combine
/// (`default_operator`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TextSearch {
    pub indexes: BTreeMap<String, Analyzer>,
    pub bm25: Bm25,
    pub default_operator: DefaultOperator,
}

/// The merge policy's parameters (`merge.*` options); see `table::merge`.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOptions {
    /// Merge in the background after inserts (default true).
    pub background: bool,
    /// Each size tier holds parts up to this many times larger than the
    /// tier below (default 10).
    pub size_ratio: u64,
    /// Parts of one tier merged together (default 10); also how many parts
    /// a tier may hold before it is merged.
    pub parts_per_merge: usize,
    /// Parts this large are not merged further, and merges stop short of
    /// producing larger ones (default 1 GiB; merges hold their rows in memory).
    pub max_part_bytes: u64,
    /// Parts smaller than this count as this large (default 1 MiB), so tiny
    /// parts share the lowest tier.
    pub min_part_bytes: u64,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            background: true,
            size_ratio: 10,
            parts_per_merge: 10,
            max_part_bytes: 1 << 30,
            min_part_bytes: 1 << 20,
        }
    }
}

/// Seconds an unreferenced part (one replaced by a merge, or left by a
/// writer that died) is kept for readers in other processes (default 480,
/// as ClickHouse's `old_parts_lifetime`).
pub const DEFAULT_OLD_PARTS_LIFETIME: u64 = 480;

/// Validated table options.
#[derive(Debug, Clone, PartialEq)]
pub struct TableOptions {
    /// Sort-key columns; empty means rows keep insertion order.
    pub order_by: Vec<String>,
    /// Rows per granule, at most.
    pub granularity: usize,
    /// Uncompressed bytes per granule, at most (adaptive granularity).
    pub granularity_bytes: usize,
    /// Parts smaller than this (uncompressed) are compact: one data file.
    pub min_bytes_for_wide_part: usize,
    /// Codecs chosen per column; other columns use their type's default,
    /// [`CodecChain::default_for`].
    pub codecs: BTreeMap<String, CodecChain>,
    /// Skip indexes by column.
    pub skip_indexes: BTreeMap<String, SkipSpec>,
    pub text: TextSearch,
    /// An insert cuts a new part after this many buffered rows...
    pub insert_block_rows: usize,
    /// ...or after this many buffered bytes (in memory), whichever comes first.
    pub insert_block_bytes: usize,
    /// An insert also cuts a part once its index builders (text indexes)
    /// hold this many bytes.
    pub insert_index_bytes: usize,
    pub merge: MergeOptions,
    /// Seconds before unreferenced part files are deleted.
    pub old_parts_lifetime: u64,
    /// A checkpoint of the whole state every this many commits.
    pub checkpoint_interval: u64,
    /// Seconds commit files are kept once a newer checkpoint covers them.
    pub log_retention: u64,
    /// Set for a secondary index table (`'sidx' 'true'`, see `crate::sidx`).
    pub sidx: Option<SidxOptions>,
    /// Where old parts go, and when (see `table::tier`).
    pub tiers: TierOptions,
}

/// The cold tier and the policy that moves parts to it (`cold_location`,
/// `move_*` options; see `table::tier`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TierOptions {
    /// The table's own prefix of object storage (`s3://bucket/logs`), as
    /// a URL the session's object stores resolve; no trailing `/`.
    pub cold_location: Option<String>,
    /// Parts whose newest row is older than this many seconds move cold.
    pub move_after: Option<u64>,
    /// The timestamp or date column a part's newest row is dated by (the
    /// largest value the part holds); by the commit that wrote the row
    /// when not set.
    pub move_time_column: Option<String>,
    /// While the table's parts on local disk hold more bytes than this,
    /// the oldest move cold.
    pub move_when_local_bytes_above: Option<u64>,
}

/// The longest `move_after`: 100 years, in seconds.
const MAX_MOVE_AFTER: u64 = 100 * 366 * 86_400;

impl TierOptions {
    /// Whether a policy moves parts (and so a background mover runs).
    pub fn has_policy(&self) -> bool {
        self.move_after.is_some() || self.move_when_local_bytes_above.is_some()
    }
}

/// The columns every secondary index table has, in this order, before its
/// tags: the series, the user's ordering key, the payload, and the write
/// sequence that orders equal keys (hidden from SQL).
pub const SIDX_COLUMNS: [(&str, DataType); 4] = [
    ("series_id", DataType::UInt64),
    ("key", DataType::Int64),
    ("data", DataType::Binary),
    ("_seq", DataType::UInt64),
];

/// The sort key of a secondary index table.
pub const SIDX_ORDER_BY: [&str; 3] = ["series_id", "key", "_seq"];

/// What a write does when memory parts hold `memory_limit` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Waits until a flush frees memory.
    Wait,
    /// Fails at once with an error saying to flush.
    Error,
}

/// The settings of a secondary index table (`sidx.*` options).
#[derive(Debug, Clone, PartialEq)]
pub struct SidxOptions {
    /// Bytes memory parts may hold before writes apply backpressure
    /// (default 256 MiB).
    pub memory_limit: usize,
    pub backpressure: Backpressure,
}

pub const DEFAULT_SIDX_MEMORY_LIMIT: usize = 256 << 20;

impl Default for SidxOptions {
    fn default() -> Self {
        SidxOptions {
            memory_limit: DEFAULT_SIDX_MEMORY_LIMIT,
            backpressure: Backpressure::Wait,
        }
    }
}

/// Commits between checkpoints (Delta Lake checkpoints every 10 commits,
/// but its commits are replayed on every open; here a checkpoint is only
/// the starting point of an open, so it can be rarer).
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 100;
/// Seconds commit files outlive the checkpoint that covers them.
pub const DEFAULT_LOG_RETENTION: u64 = 3600;

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            order_by: Vec::new(),
            granularity: DEFAULT_GRANULARITY,
            granularity_bytes: DEFAULT_GRANULARITY_BYTES,
            min_bytes_for_wide_part: DEFAULT_MIN_BYTES_FOR_WIDE_PART,
            codecs: BTreeMap::new(),
            skip_indexes: BTreeMap::new(),
            text: TextSearch::default(),
            insert_block_rows: DEFAULT_INSERT_BLOCK_ROWS,
            insert_block_bytes: DEFAULT_INSERT_BLOCK_BYTES,
            insert_index_bytes: DEFAULT_INSERT_INDEX_BYTES,
            merge: MergeOptions::default(),
            old_parts_lifetime: DEFAULT_OLD_PARTS_LIFETIME,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            log_retention: DEFAULT_LOG_RETENTION,
            sidx: None,
            tiers: TierOptions::default(),
        }
    }
}

impl TableOptions {
    /// Parses user options (keys are case-insensitive) against `schema`.
    pub fn parse(options: &HashMap<String, String>, schema: &Schema) -> Result<Self> {
        let mut parsed = TableOptions::default();
        let mut analyzers: Vec<(String, String, Analyzer)> = Vec::new();
        let (mut k1, mut b) = (parsed.text.bm25.k1, parsed.text.bm25.b);
        let mut sidx: Option<bool> = None;
        let mut sidx_options = SidxOptions::default();
        let mut keys: Vec<_> = options.iter().collect();
        keys.sort();
        for (key, value) in keys {
            let key_lower = key.to_ascii_lowercase();
            match key_lower.as_str() {
                "order_by" => parsed.order_by = parse_order_by(value, schema)?,
                "granularity" => {
                    parsed.granularity = parse_count(key, value, 1, MAX_GRANULARITY)?;
                }
                "granularity_bytes" => {
                    parsed.granularity_bytes = parse_count(key, value, 1024, usize::MAX)?;
                }
                "min_bytes_for_wide_part" => {
                    parsed.min_bytes_for_wide_part = parse_count(key, value, 0, usize::MAX)?;
                }
                "insert_block_rows" => {
                    parsed.insert_block_rows = parse_count(key, value, 1, usize::MAX)?;
                }
                "insert_block_bytes" => {
                    parsed.insert_block_bytes = parse_count(key, value, 1024, usize::MAX)?;
                }
                "insert_index_bytes" => {
                    parsed.insert_index_bytes = parse_count(key, value, 1024, usize::MAX)?;
                }
                "merge.background" => parsed.merge.background = parse_bool(key, value)?,
                "merge.size_ratio" => {
                    parsed.merge.size_ratio = parse_count(key, value, 2, 1000)? as u64;
                }
                "merge.parts_per_merge" => {
                    parsed.merge.parts_per_merge = parse_count(key, value, 2, 1000)?;
                }
                "merge.max_part_bytes" => {
                    parsed.merge.max_part_bytes = parse_count(key, value, 1, usize::MAX)? as u64;
                }
                "merge.min_part_bytes" => {
                    parsed.merge.min_part_bytes = parse_count(key, value, 1, usize::MAX)? as u64;
                }
                "old_parts_lifetime" => {
                    // Up to ten years.
                    parsed.old_parts_lifetime = parse_count(key, value, 0, 315_360_000)? as u64;
                }
                "checkpoint_interval" => {
                    parsed.checkpoint_interval = parse_count(key, value, 1, 1_000_000)? as u64;
                }
                "log_retention" => {
                    parsed.log_retention = parse_count(key, value, 0, 315_360_000)? as u64;
                }
                "sidx" => sidx = Some(parse_bool(key, value)?),
                "sidx.memory_limit" => {
                    sidx_options.memory_limit = parse_count(key, value, 1, usize::MAX)?;
                }
                "sidx.backpressure" => {
                    sidx_options.backpressure = match value.trim().to_ascii_lowercase().as_str() {
                        "wait" => Backpressure::Wait,
                        "error" => Backpressure::Error,
                        _ => {
                            return Err(Error::option(
                                key,
                                format!("'{value}' is not 'wait' or 'error'"),
                            ));
                        }
                    };
                }
                "cold_location" => {
                    let location = value.trim().trim_end_matches('/');
                    if location.is_empty() {
                        return Err(Error::option(key, "an empty location"));
                    }
                    parsed.tiers.cold_location = Some(location.to_string());
                }
                "move_after" => {
                    let seconds = parse_duration(key, value)?;
                    if seconds > MAX_MOVE_AFTER {
                        return Err(Error::option(key, format!("'{value}' is over 100 years")));
                    }
                    parsed.tiers.move_after = Some(seconds);
                }
                "move_time_column" => {
                    parsed.tiers.move_time_column = Some(time_column(key, value.trim(), schema)?);
                }
                "move_when_local_bytes_above" => {
                    parsed.tiers.move_when_local_bytes_above = Some(parse_bytes(key, value)?);
                }
                "text_index" => {
                    for name in value.split(',').map(str::trim) {
                        let column = text_column(key, name, schema)?;
                        parsed.text.indexes.insert(column, Analyzer::default());
                    }
                }
                "bm25.k1" => k1 = parse_float(key, value)?,
                "bm25.b" => b = parse_float(key, value)?,
                "default_operator" => {
                    parsed.text.default_operator = DefaultOperator::parse(key, value)?;
                }
                _ if key_lower.starts_with("analyzer.") => {
                    let column = find_column(key, &key["analyzer.".len()..], schema)?;
                    analyzers.push((key.clone(), column, Analyzer::parse(key, value)?));
                }
                _ if key_lower.starts_with("skip_index.") => {
                    let column = find_column(key, &key["skip_index.".len()..], schema)?;
                    let spec = value
                        .parse::<SkipSpec>()
                        .map_err(|e| Error::option(key, e))?;
                    let field = schema.field_with_name(&column).expect("found above");
                    spec.check(&stored(field))
                        .map_err(|e| Error::option(key, format!("column '{column}': {e}")))?;
                    parsed.skip_indexes.insert(column, spec);
                }
                _ => {
                    let Some(column) = key_lower
                        .starts_with("codec.")
                        .then(|| &key["codec.".len()..])
                    else {
                        return Err(Error::option(
                            key,
                            format!("unknown option (known: {})", KNOWN_OPTIONS.join(", ")),
                        ));
                    };
                    let column = find_column(key, column, schema)?;
                    let codec = value
                        .parse::<CodecChain>()
                        .map_err(|e| Error::option(key, e))?;
                    let field = schema.field_with_name(&column).expect("found above");
                    codec
                        .check(&stored(field))
                        .map_err(|e| Error::option(key, format!("column '{column}': {e}")))?;
                    parsed.codecs.insert(column, codec);
                }
            }
        }
        for (key, column, analyzer) in analyzers {
            match parsed.text.indexes.get_mut(&column) {
                Some(slot) => *slot = analyzer,
                None => {
                    return Err(Error::option(
                        key,
                        format!("column '{column}' is not in 'text_index'"),
                    ));
                }
            }
        }
        parsed.text.bm25 = Bm25::new(k1, b)?;
        let sidx_set = options
            .keys()
            .any(|k| k.to_ascii_lowercase().starts_with("sidx."));
        match sidx {
            Some(true) => parsed.sidx = Some(check_sidx(&parsed, sidx_options, schema)?),
            _ if sidx_set => {
                return Err(Error::option("sidx", "'sidx.*' options need 'sidx' 'true'"));
            }
            _ => {}
        }
        let tiers = &parsed.tiers;
        if tiers.cold_location.is_none() {
            let policy = [
                ("move_after", tiers.move_after.is_some()),
                ("move_time_column", tiers.move_time_column.is_some()),
                (
                    "move_when_local_bytes_above",
                    tiers.move_when_local_bytes_above.is_some(),
                ),
            ];
            if let Some((option, _)) = policy.iter().find(|(_, set)| *set) {
                return Err(Error::option(
                    *option,
                    "moving parts needs a 'cold_location' to move them to",
                ));
            }
        }
        if tiers.move_time_column.is_some() && tiers.move_after.is_none() {
            return Err(Error::option(
                "move_time_column",
                "dates parts for 'move_after', which is not set",
            ));
        }
        // A dictionary's keys (a run-end type's ends) must index every row
        // of a granule, which a read casts back to them.
        for field in schema.fields() {
            if let Some(bound) = rows_bound(field.data_type())
                && bound < parsed.granularity
            {
                return Err(Error::option(
                    "granularity",
                    format!(
                        "{} rows a granule, but column '{}' of type {} indexes at most {bound} \
                         rows or values in one; use wider keys or a 'granularity' of at most \
                         {bound}",
                        parsed.granularity,
                        field.name(),
                        field.data_type()
                    ),
                ));
            }
        }
        Ok(parsed)
    }

    /// The canonical string form stored in the commit log.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        if !self.order_by.is_empty() {
            map.insert("order_by".into(), self.order_by.join(","));
        }
        map.insert("granularity".into(), self.granularity.to_string());
        map.insert(
            "granularity_bytes".into(),
            self.granularity_bytes.to_string(),
        );
        map.insert(
            "min_bytes_for_wide_part".into(),
            self.min_bytes_for_wide_part.to_string(),
        );
        map.insert(
            "insert_block_rows".into(),
            self.insert_block_rows.to_string(),
        );
        map.insert(
            "insert_block_bytes".into(),
            self.insert_block_bytes.to_string(),
        );
        map.insert(
            "insert_index_bytes".into(),
            self.insert_index_bytes.to_string(),
        );
        let m = &self.merge;
        map.insert("merge.background".into(), m.background.to_string());
        map.insert("merge.size_ratio".into(), m.size_ratio.to_string());
        map.insert(
            "merge.parts_per_merge".into(),
            m.parts_per_merge.to_string(),
        );
        map.insert("merge.max_part_bytes".into(), m.max_part_bytes.to_string());
        map.insert("merge.min_part_bytes".into(), m.min_part_bytes.to_string());
        map.insert(
            "old_parts_lifetime".into(),
            self.old_parts_lifetime.to_string(),
        );
        map.insert(
            "checkpoint_interval".into(),
            self.checkpoint_interval.to_string(),
        );
        map.insert("log_retention".into(), self.log_retention.to_string());
        for (column, spec) in &self.skip_indexes {
            map.insert(format!("skip_index.{column}"), spec.to_string());
        }
        let text = &self.text;
        if !text.indexes.is_empty() {
            let columns: Vec<&str> = text.indexes.keys().map(String::as_str).collect();
            map.insert("text_index".into(), columns.join(","));
            for (column, analyzer) in &text.indexes {
                map.insert(format!("analyzer.{column}"), analyzer.to_string());
            }
        }
        // Stored with a text index, or when set: a table without either
        // keeps the options it always had.
        let defaults = TextSearch::default();
        if !text.indexes.is_empty()
            || text.bm25 != defaults.bm25
            || text.default_operator != defaults.default_operator
        {
            map.insert("bm25.k1".into(), text.bm25.k1.to_string());
            map.insert("bm25.b".into(), text.bm25.b.to_string());
            map.insert("default_operator".into(), text.default_operator.to_string());
        }
        for (column, codec) in &self.codecs {
            map.insert(format!("codec.{column}"), codec.to_string());
        }
        if let Some(sidx) = &self.sidx {
            map.insert("sidx".into(), "true".into());
            map.insert("sidx.memory_limit".into(), sidx.memory_limit.to_string());
            let backpressure = match sidx.backpressure {
                Backpressure::Wait => "wait",
                Backpressure::Error => "error",
            };
            map.insert("sidx.backpressure".into(), backpressure.into());
        }
        let tiers = &self.tiers;
        if let Some(location) = &tiers.cold_location {
            map.insert("cold_location".into(), location.clone());
        }
        if let Some(seconds) = tiers.move_after {
            map.insert("move_after".into(), format!("{seconds}s"));
        }
        if let Some(column) = &tiers.move_time_column {
            map.insert("move_time_column".into(), column.clone());
        }
        if let Some(bytes) = tiers.move_when_local_bytes_above {
            map.insert("move_when_local_bytes_above".into(), bytes.to_string());
        }
        map
    }

    /// Parses options read back from the log.
    pub fn from_map(map: &BTreeMap<String, String>, schema: &Schema) -> Result<Self> {
        let options: HashMap<String, String> =
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Self::parse(&options, schema)
    }

    /// The codec of a column: the declared one or its type's default.
    pub fn codec(&self, field: &Field) -> CodecChain {
        self.codecs.get(field.name()).cloned().unwrap_or_else(|| {
            let leading_key = self.order_by.first() == Some(field.name());
            CodecChain::default_for(&stored(field), leading_key)
        })
    }

    /// Positions of the sort-key columns in `schema`.
    pub fn key_positions(&self, schema: &Schema) -> Result<Vec<usize>> {
        self.order_by
            .iter()
            .map(|name| {
                schema
                    .index_of(name)
                    .map_err(|_| Error::option("order_by", format!("no column '{name}'")))
            })
            .collect()
    }
}

/// Checks a secondary index table: its fixed columns first, then tags of
/// the types a tag takes, sorted by (series, key, write sequence), with no
/// text index and no background merges (merges are the user's call).
fn check_sidx(parsed: &TableOptions, sidx: SidxOptions, schema: &Schema) -> Result<SidxOptions> {
    let fields = schema.fields();
    for (i, (name, data_type)) in SIDX_COLUMNS.iter().enumerate() {
        let found = fields.get(i);
        let fits = found
            .is_some_and(|f| f.name() == name && f.data_type() == data_type && !f.is_nullable());
        if !fits {
            return Err(Error::option(
                "sidx",
                format!(
                    "a secondary index table starts with the columns series_id BIGINT \
                     UNSIGNED NOT NULL, key BIGINT NOT NULL, data BYTEA NOT NULL and _seq \
                     BIGINT UNSIGNED NOT NULL; column {} is {}",
                    i + 1,
                    found.map_or("missing".to_string(), |f| format!(
                        "'{}' {}{}",
                        f.name(),
                        f.data_type(),
                        if f.is_nullable() { "" } else { " NOT NULL" }
                    ))
                ),
            ));
        }
    }
    for field in &fields[SIDX_COLUMNS.len()..] {
        if !is_tag_type(field.data_type()) || !field.is_nullable() {
            return Err(Error::option(
                "sidx",
                format!(
                    "tag '{}' has type {}{}; a tag is a nullable VARCHAR, BIGINT, BYTEA or a \
                     list of one of them",
                    field.name(),
                    field.data_type(),
                    if field.is_nullable() { "" } else { " NOT NULL" }
                ),
            ));
        }
    }
    if parsed.order_by != SIDX_ORDER_BY {
        return Err(Error::option(
            "order_by",
            format!(
                "a secondary index table is ordered by {}, not '{}'",
                SIDX_ORDER_BY.join(","),
                parsed.order_by.join(",")
            ),
        ));
    }
    if !parsed.text.indexes.is_empty() {
        return Err(Error::option(
            "text_index",
            "a secondary index table has no text index",
        ));
    }
    if parsed.merge.background {
        return Err(Error::option(
            "merge.background",
            "a secondary index table merges when its user says (merge.background false)",
        ));
    }
    Ok(sidx)
}

/// The types a secondary index tag may have.
pub fn is_tag_type(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::Int64 | DataType::Binary => true,
        DataType::List(item) => {
            matches!(
                item.data_type(),
                DataType::Utf8 | DataType::Int64 | DataType::Binary
            )
        }
        _ => false,
    }
}

/// The type `field`'s values are stored as (their own for any type the
/// table accepts but dictionaries and run-end encoded types).
fn stored(field: &Field) -> DataType {
    storage_type(field.data_type()).unwrap_or_else(|| field.data_type().clone())
}

/// Whether a column is stored as another type (dictionary, run-end).
fn stored_as_other(data_type: &DataType) -> bool {
    storage_type(data_type).is_some_and(|t| t != *data_type)
}

fn parse_count(key: &str, value: &str, min: usize, max: usize) -> Result<usize> {
    let n: usize = value
        .trim()
        .parse()
        .map_err(|_| Error::option(key, format!("'{value}' is not a positive integer")))?;
    if n < min || n > max {
        return Err(Error::option(
            key,
            format!("{n} is outside the allowed range {min}..={max}"),
        ));
    }
    Ok(n)
}

/// A boolean option: true/1/on or false/0/off.
pub fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "on" => Ok(true),
        "false" | "0" | "off" => Ok(false),
        _ => Err(Error::option(
            key,
            format!("'{value}' is not true or false"),
        )),
    }
}

/// A duration: a whole number with a unit, `s`, `m`, `h`, `d` or `w`
/// (`7d`, `12h`); a bare number is seconds.
pub fn parse_duration(key: &str, value: &str) -> Result<u64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let unit_seconds: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(Error::option(
                key,
                format!("'{value}' is not a duration such as '45s', '30m', '12h', '7d' or '2w'"),
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_seconds))
        .ok_or_else(|| Error::option(key, format!("'{value}' is not a duration such as '7d'")))
}

/// A size in bytes: a whole number with an optional unit, decimal (`KB`,
/// `MB`, `GB`, `TB`: powers of 1000) or binary (`KiB`, `MiB`, `GiB`,
/// `TiB`: powers of 1024), case-insensitive.
pub fn parse_bytes(key: &str, value: &str) -> Result<u64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(Error::option(
                key,
                format!("'{value}' is not a size such as '500MB', '100GB' or '64GiB'"),
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| Error::option(key, format!("'{value}' is not a size such as '100GB'")))
}

/// A column parts can be dated by: a timestamp or a date.
fn time_column(key: &str, name: &str, schema: &Schema) -> Result<String> {
    let column = find_column(key, name, schema)?;
    let field = schema.field_with_name(&column).expect("found above");
    match field.data_type() {
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => Ok(column),
        other => Err(Error::option(
            key,
            format!("column '{column}' has type {other}; parts are dated by a timestamp or date"),
        )),
    }
}

/// A column a text index can cover: a string column of the table.
fn text_column(key: &str, name: &str, schema: &Schema) -> Result<String> {
    if name.is_empty() {
        return Err(Error::option(key, "an empty column name"));
    }
    let column = find_column(key, name, schema)?;
    let field = schema.field_with_name(&column).expect("found above");
    match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(column),
        other => Err(Error::option(
            key,
            format!("column '{column}' has type {other}; a text index takes strings"),
        )),
    }
}

fn parse_float(key: &str, value: &str) -> Result<f32> {
    value
        .trim()
        .parse()
        .map_err(|_| Error::option(key, format!("'{value}' is not a number")))
}

/// The column `name` names: exactly, or else ignoring ASCII case (option
/// keys are case-insensitive, columns `Foo` and `foo` may both exist).
fn find_column(key: &str, name: &str, schema: &Schema) -> Result<String> {
    let fields = schema.fields();
    fields
        .iter()
        .find(|f| f.name() == name)
        .or_else(|| fields.iter().find(|f| f.name().eq_ignore_ascii_case(name)))
        .map(|f| f.name().clone())
        .ok_or_else(|| Error::option(key, format!("the table has no column '{name}'")))
}

fn parse_order_by(value: &str, schema: &Schema) -> Result<Vec<String>> {
    let mut columns = Vec::new();
    for name in value.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(Error::option(
                "order_by",
                format!("'{value}' has an empty column name"),
            ));
        }
        let column = find_column("order_by", name, schema)?;
        let data_type = schema
            .field_with_name(&column)
            .expect("found above")
            .data_type();
        if matches!(layout_of(data_type), Some(Layout::Nested)) || stored_as_other(data_type) {
            return Err(Error::option(
                "order_by",
                format!(
                    "column '{column}' has type {data_type}; a sort key orders by scalar \
                     values of their own type (a field of a struct can be a column of its \
                     own; a dictionary or run-end encoded column can be cast to its values)"
                ),
            ));
        }
        if columns.contains(&column) {
            return Err(Error::option(
                "order_by",
                format!("column '{column}' appears twice"),
            ));
        }
        columns.push(column);
    }
    Ok(columns)
}
