//! The commit log: `_log/<version>.commit`, one sealed JSON file per version.
//!
//! Each entry holds the whole state of the table at that version (schema,
//! options, live parts), so opening a table reads one file. A version is
//! committed by creating its file with create-if-absent semantics: exactly
//! one writer wins, a loser sees a conflict and never overwrites. Part files
//! are written before the entry that names them, so a crash at any point
//! leaves either the old or the new version readable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::schema::FieldDef;
use crate::encoding::envelope::{self, FileKind};
use crate::error::{Error, Result};
use crate::storage::Storage;

pub const LOG_DIR: &str = "_log";
const SUFFIX: &str = ".commit";

/// A part as the log knows it: enough to list and plan without its index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartEntry {
    pub name: String,
    pub rows: u64,
    /// Bytes of all the part's files.
    pub bytes: u64,
    pub level: u32,
    pub created_ms: i64,
    /// The part's deletion mask as of this version, if rows were deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes: Option<Deletes>,
    /// Where the part's files live, when not in the table's own directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// A deletion mask file of a part and how many rows it deletes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deletes {
    /// File name inside the part's directory.
    pub file: String,
    pub rows: u64,
}

impl PartEntry {
    /// The entry of a part just written, at merge level `level`.
    pub fn new(part: &crate::part::PartIndex, level: u32) -> Self {
        // Every column of a compact part names the same file: count it once.
        let files: std::collections::BTreeMap<&str, u64> = part
            .meta
            .columns
            .iter()
            .map(|c| (c.file.as_str(), c.file_len))
            .chain(
                part.meta
                    .components
                    .iter()
                    .map(|c| (c.file.as_str(), c.length)),
            )
            .collect();
        let bytes = files.values().sum();
        PartEntry {
            name: part.meta.name.clone(),
            rows: part.meta.rows,
            bytes,
            level,
            created_ms: now_ms(),
            deletes: None,
            location: None,
        }
    }

    /// Rows a scan of this part returns.
    pub fn live_rows(&self) -> u64 {
        self.rows - self.deletes.as_ref().map_or(0, |d| d.rows.min(self.rows))
    }
}

/// One version of the table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Commit {
    pub version: u64,
    pub timestamp_ms: i64,
    /// What produced this version: `CREATE`, `INSERT`, `DELETE`, `UPDATE`,
    /// `MERGE`, `TRUNCATE`.
    pub operation: String,
    pub schema: Vec<FieldDef>,
    pub options: BTreeMap<String, String>,
    pub parts: Vec<PartEntry>,
    /// A random id of the writer's attempt, so a writer told its commit
    /// failed can tell whether the version it wrote is its own.
    #[serde(default)]
    pub txn: String,
}

pub fn commit_file(version: u64) -> String {
    format!("{LOG_DIR}/{version:020}{SUFFIX}")
}

fn parse_version(name: &str) -> Option<u64> {
    name.strip_prefix(LOG_DIR)?
        .strip_prefix('/')?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// The newest committed version, or `None` if the directory holds no table.
///
/// Versions are contiguous, so when `known` is a committed version, one
/// existence check of the next version usually answers without a listing.
pub async fn latest_version(storage: &Storage, known: Option<u64>) -> Result<Option<u64>> {
    if let Some(known) = known
        && !storage.exists(&commit_file(known + 1)).await?
    {
        return Ok(Some(known));
    }
    let files = storage.list(LOG_DIR).await?;
    Ok(files.iter().filter_map(|f| parse_version(&f.name)).max())
}

pub async fn read_commit(storage: &Storage, version: u64) -> Result<Commit> {
    let name = commit_file(version);
    let location = storage.location(&name);
    let bytes = storage.get(&name).await?;
    let body = envelope::open(&location, FileKind::Commit, &bytes)?;
    let commit: Commit = serde_json::from_slice(body)
        .map_err(|e| Error::corrupt(&location, format!("bad commit entry: {e}")))?;
    let names = commit
        .parts
        .iter()
        .flat_map(|p| std::iter::once(&p.name).chain(p.deletes.as_ref().map(|d| &d.file)));
    for name in names {
        if !crate::storage::is_plain_name(name) {
            return Err(Error::corrupt(
                &location,
                format!("invalid part or file name '{name}'"),
            ));
        }
    }
    if commit.version != version {
        return Err(Error::corrupt(
            &location,
            format!("holds version {}, expected {version}", commit.version),
        ));
    }
    Ok(commit)
}

/// Publishes `commit`; returns `false` if its version already exists.
pub async fn write_commit(storage: &Storage, commit: &Commit) -> Result<bool> {
    let json = serde_json::to_vec_pretty(commit)
        .map_err(|e| Error::Schema(format!("cannot serialise commit: {e}")))?;
    let file = envelope::seal(FileKind::Commit, &json);
    storage
        .put_if_absent(&commit_file(commit.version), file)
        .await
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
