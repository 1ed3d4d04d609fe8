//! The commit log: `_log/<version>.commit`, one sealed JSON file per
//! version, and checkpoints of the whole state.
//!
//! A commit records what its version changed: the parts it removed and
//! added (a part whose deletion mask changed is removed and added again),
//! and the table's definition when that changed. A version is committed by
//! creating its file with create-if-absent semantics: exactly one writer
//! wins, a loser sees a conflict and never overwrites. Part files are
//! written before the commit that names them, so a crash at any point
//! leaves either the old or the new version readable.
//!
//! Every `checkpoint_interval` versions a checkpoint,
//! `_log/<version>.checkpoint`, holds the whole state at that version, and
//! `_log/_last_checkpoint` names the newest one. Opening a table reads the
//! pointer, that checkpoint and the commits after it, each found by name:
//! the log is listed only when the pointer is missing or names a damaged
//! checkpoint. Both files are written whole and atomically, the pointer
//! after its checkpoint, so a crash while checkpointing leaves an older
//! pointer, which still works. Cleanup keeps the two newest checkpoints and
//! every commit after the older of them (one damaged checkpoint can be
//! rebuilt), and deletes older files once they are older than the log
//! retention.
//!
//! Commits written before checkpoints existed hold the whole state
//! themselves (`parts`, `schema`, `options`), and read as such.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::schema::{ConstraintDef, Definition, FieldDef};
use crate::encoding::envelope::{self, FileKind};
use crate::error::{Error, Result};
use crate::storage::Storage;

pub const LOG_DIR: &str = "_log";
const COMMIT_SUFFIX: &str = ".commit";
const CHECKPOINT_SUFFIX: &str = ".checkpoint";
/// Names the newest checkpoint.
pub const LAST_CHECKPOINT: &str = "_log/_last_checkpoint";

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
    /// Where the part's files live, when not in the table's own directory:
    /// the cold location it was moved to (see `table::tier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// When the newest of its rows was committed, for a part that merged
    /// parts (`created_ms` otherwise): the part's age by commit time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_row_ms: Option<i64>,
    /// The directory inside its tier that holds the part's
    /// `parts/<name>/`, for a part a move copied (`moved/<id>`, fresh for
    /// every copy, so a copy never meets an older one of the same part);
    /// the tier's root otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// The directory of moved copies inside a tier.
pub const MOVED_DIR: &str = "moved";

/// Whether `dir` can be a part entry's `dir`: `moved/<one plain name>`.
pub fn is_moved_dir(dir: &str) -> bool {
    dir.split_once('/')
        .is_some_and(|(top, id)| top == MOVED_DIR && crate::storage::is_plain_name(id))
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
        let files: BTreeMap<&str, u64> = part
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
        PartEntry {
            name: part.meta.name.clone(),
            rows: part.meta.rows,
            bytes: files.values().sum(),
            level,
            created_ms: now_ms(),
            deletes: None,
            location: None,
            newest_row_ms: None,
            dir: None,
        }
    }

    /// The part's directory relative to its tier's root.
    pub fn dir_path(&self) -> String {
        let parts = crate::part::part_dir(&self.name);
        match &self.dir {
            None => parts,
            Some(dir) => format!("{dir}/{parts}"),
        }
    }

    /// When the newest of the part's rows was committed.
    pub fn newest_commit_ms(&self) -> i64 {
        self.newest_row_ms.unwrap_or(self.created_ms)
    }

    /// Rows a scan of this part returns.
    pub fn live_rows(&self) -> u64 {
        self.rows - self.deletes.as_ref().map_or(0, |d| d.rows.min(self.rows))
    }
}

/// The whole state of a table at one version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableState {
    pub version: u64,
    pub timestamp_ms: i64,
    #[serde(flatten)]
    pub definition: Definition,
    pub parts: Vec<PartEntry>,
}

/// A part added by a commit, and where it goes in the part list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Placed {
    /// Its position in the new list.
    pub at: usize,
    #[serde(flatten)]
    pub part: PartEntry,
}

/// One version of the table: what changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Commit {
    pub version: u64,
    pub timestamp_ms: i64,
    /// What produced this version: `CREATE`, `INSERT`, `DELETE`, `UPDATE`,
    /// `MERGE`, `TRUNCATE`, `ALTER`.
    pub operation: String,
    /// A random id of the writer's attempt, so a writer told its commit
    /// failed can tell whether the version it wrote is its own.
    #[serde(default)]
    pub txn: String,
    /// The table's columns, when this commit sets the definition (then
    /// with `schema_metadata`, `constraints` and `options`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<FieldDef>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schema_metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<ConstraintDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
    /// The next column id, once the schema was altered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_column_id: Option<u32>,
    /// Every live part, when this commit states them all (CREATE, and every
    /// commit written before checkpoints existed)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<PartEntry>>,
    /// ...or else the parts it removed...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// ...and those it added, in ascending positions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<Placed>,
}

impl Commit {
    /// The commit that turns `base` into `next` (version `base.version + 1`).
    pub fn between(base: &TableState, next: &TableState, operation: &str, txn: &str) -> Commit {
        let mut commit = Commit {
            version: next.version,
            timestamp_ms: next.timestamp_ms,
            operation: operation.to_string(),
            txn: txn.to_string(),
            schema: None,
            schema_metadata: BTreeMap::new(),
            constraints: Vec::new(),
            options: None,
            next_column_id: None,
            parts: None,
            removed: Vec::new(),
            added: Vec::new(),
        };
        if next.definition != base.definition {
            commit.set_definition(&next.definition);
        }
        commit.removed = base
            .parts
            .iter()
            .filter(|p| !next.parts.contains(p))
            .map(|p| p.name.clone())
            .collect();
        commit.added = next
            .parts
            .iter()
            .enumerate()
            .filter(|(_, p)| !base.parts.contains(p))
            .map(|(at, p)| Placed {
                at,
                part: p.clone(),
            })
            .collect();
        // Kept parts always keep their order; should a change ever reorder
        // them, the commit states the whole list instead.
        if commit.apply(Some(base)).map(|s| s.parts).ok().as_ref() != Some(&next.parts) {
            commit.removed.clear();
            commit.added.clear();
            commit.parts = Some(next.parts.clone());
        }
        commit
    }

    /// The commit that creates a table as `state`.
    pub fn create(state: &TableState, txn: &str) -> Commit {
        let mut commit = Commit {
            version: state.version,
            timestamp_ms: state.timestamp_ms,
            operation: "CREATE".into(),
            txn: txn.to_string(),
            schema: None,
            schema_metadata: BTreeMap::new(),
            constraints: Vec::new(),
            options: None,
            next_column_id: None,
            parts: Some(state.parts.clone()),
            removed: Vec::new(),
            added: Vec::new(),
        };
        commit.set_definition(&state.definition);
        commit
    }

    fn set_definition(&mut self, definition: &Definition) {
        self.schema = Some(definition.schema.clone());
        self.schema_metadata = definition.schema_metadata.clone();
        self.constraints = definition.constraints.clone();
        self.options = Some(definition.options.clone());
        self.next_column_id = definition.next_column_id;
    }

    /// The state after this commit, from the state before it (`None` only
    /// for a commit that states everything).
    pub fn apply(&self, base: Option<&TableState>) -> std::result::Result<TableState, String> {
        let definition = match (&self.schema, &self.options, base) {
            (Some(schema), Some(options), _) => Definition {
                schema: schema.clone(),
                schema_metadata: self.schema_metadata.clone(),
                constraints: self.constraints.clone(),
                options: options.clone(),
                next_column_id: self.next_column_id,
            },
            (None, None, Some(base)) => base.definition.clone(),
            _ => return Err("the commit states neither a whole definition nor a change".into()),
        };
        let parts = match (&self.parts, base) {
            (Some(parts), _) => parts.clone(),
            (None, Some(base)) => {
                let mut parts: Vec<PartEntry> = Vec::with_capacity(base.parts.len());
                for name in &self.removed {
                    if !base.parts.iter().any(|p| &p.name == name) {
                        return Err(format!("removes part '{name}', which is not live"));
                    }
                }
                parts.extend(
                    base.parts
                        .iter()
                        .filter(|p| !self.removed.contains(&p.name))
                        .cloned(),
                );
                for placed in &self.added {
                    if placed.at > parts.len() {
                        return Err(format!(
                            "adds part '{}' at {} of {}",
                            placed.part.name,
                            placed.at,
                            parts.len()
                        ));
                    }
                    parts.insert(placed.at, placed.part.clone());
                }
                parts
            }
            (None, None) => return Err("the commit does not state its parts".into()),
        };
        Ok(TableState {
            version: self.version,
            timestamp_ms: self.timestamp_ms,
            definition,
            parts,
        })
    }

    /// Names of the parts and mask files this commit mentions.
    fn names(&self) -> impl Iterator<Item = &String> {
        let listed = self.parts.iter().flatten();
        let added = self.added.iter().map(|p| &p.part);
        listed
            .chain(added)
            .flat_map(|p| {
                std::iter::once(&p.name)
                    .chain(p.deletes.as_ref().map(|d| &d.file))
                    .chain(p.dir.iter())
            })
            .chain(&self.removed)
    }
}

pub fn commit_file(version: u64) -> String {
    format!("{LOG_DIR}/{version:020}{COMMIT_SUFFIX}")
}

pub fn checkpoint_file(version: u64) -> String {
    format!("{LOG_DIR}/{version:020}{CHECKPOINT_SUFFIX}")
}

/// The version a log file is of, and whether it is a checkpoint.
fn parse_name(name: &str) -> Option<(u64, bool)> {
    let file = name.strip_prefix(LOG_DIR)?.strip_prefix('/')?;
    if let Some(v) = file.strip_suffix(COMMIT_SUFFIX) {
        return Some((v.parse().ok()?, false));
    }
    let v = file.strip_suffix(CHECKPOINT_SUFFIX)?;
    Some((v.parse().ok()?, true))
}

/// Reads the sealed JSON file `name` of `kind`; a missing one is
/// [`Error::NotFound`]. Returns it with its location.
async fn read_json<T: serde::de::DeserializeOwned>(
    storage: &Storage,
    name: &str,
    kind: FileKind,
) -> Result<(T, String)> {
    let location = storage.location(name);
    let bytes = storage.get(name).await?;
    let body = envelope::open(&location, kind, &bytes)?;
    let value = serde_json::from_slice(body)
        .map_err(|e| Error::corrupt(&location, format!("bad {kind:?} entry: {e}")))?;
    Ok((value, location))
}

/// Checks what a log file read holds: plain part and file names and
/// `moved/<name>` directories only (a crafted log cannot point reads
/// outside the table), and the version its name promises.
fn check_entry<'a>(
    location: &str,
    mut names: impl Iterator<Item = &'a String>,
    version: u64,
    expected: u64,
) -> Result<()> {
    if let Some(name) = names.find(|n| !crate::storage::is_plain_name(n) && !is_moved_dir(n)) {
        return Err(Error::corrupt(
            location,
            format!("invalid part or file name '{name}'"),
        ));
    }
    if version != expected {
        return Err(Error::corrupt(
            location,
            format!("holds version {version}, expected {expected}"),
        ));
    }
    Ok(())
}

/// Reads commit `version`; a missing one is [`Error::NotFound`].
pub async fn read_commit(storage: &Storage, version: u64) -> Result<Commit> {
    let (commit, location): (Commit, _) =
        read_json(storage, &commit_file(version), FileKind::Commit).await?;
    check_entry(&location, commit.names(), commit.version, version)?;
    Ok(commit)
}

/// Publishes `commit`; returns `false` if its version already exists.
pub async fn write_commit(storage: &Storage, commit: &Commit) -> Result<bool> {
    let json = serde_json::to_vec(commit)
        .map_err(|e| Error::Schema(format!("cannot serialise commit: {e}")))?;
    // Version 1 unless the commit states an altered schema: tables never
    // altered stay readable by builds before ALTER TABLE.
    let version = match commit.next_column_id {
        Some(_) => envelope::ALTERED_LOG_VERSION,
        None => 1,
    };
    let file = envelope::seal_version(FileKind::Commit, version, &json);
    storage
        .put_if_absent(&commit_file(commit.version), file)
        .await
}

async fn read_checkpoint(storage: &Storage, version: u64) -> Result<TableState> {
    let (state, location): (TableState, _) =
        read_json(storage, &checkpoint_file(version), FileKind::Checkpoint).await?;
    let names = state.parts.iter().flat_map(|p| {
        std::iter::once(&p.name)
            .chain(p.deletes.as_ref().map(|d| &d.file))
            .chain(p.dir.iter())
    });
    check_entry(&location, names, state.version, version)?;
    Ok(state)
}

/// The version the pointer names, if it is there and readable.
pub async fn read_pointer(storage: &Storage) -> Result<Option<u64>> {
    let bytes = match storage.get(LAST_CHECKPOINT).await {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let location = storage.location(LAST_CHECKPOINT);
    // A damaged pointer is only a lost hint: the log is listed instead.
    let Ok(body) = envelope::open(&location, FileKind::CheckpointPointer, &bytes) else {
        log::warn!("ignoring damaged checkpoint pointer '{location}'");
        return Ok(None);
    };
    Ok(body.try_into().ok().map(u64::from_le_bytes))
}

/// Writes the checkpoint of `state`, then points to it unless the pointer
/// already names a newer one.
pub async fn write_checkpoint(storage: &Storage, state: &TableState) -> Result<()> {
    let json = serde_json::to_vec(state)
        .map_err(|e| Error::Schema(format!("cannot serialise checkpoint: {e}")))?;
    let name = checkpoint_file(state.version);
    let version = match state.definition.altered() {
        true => envelope::ALTERED_LOG_VERSION,
        false => 1,
    };
    storage
        .put(
            &name,
            envelope::seal_version(FileKind::Checkpoint, version, &json),
        )
        .await?;
    storage.sync(vec![name]).await?;
    // The pointer only moves forward: a writer that checkpointed an older
    // version and wrote late is overwritten again.
    for _ in 0..3 {
        if read_pointer(storage)
            .await?
            .is_some_and(|v| v >= state.version)
        {
            return Ok(());
        }
        let pointer = envelope::seal(FileKind::CheckpointPointer, &state.version.to_le_bytes());
        storage.put(LAST_CHECKPOINT, pointer).await?;
        storage.sync(vec![LAST_CHECKPOINT.to_string()]).await?;
    }
    Ok(())
}

/// The state after every commit following `state`, read by name until the
/// next version is missing.
async fn catch_up(storage: &Storage, mut state: TableState) -> Result<TableState> {
    loop {
        let commit = match read_commit(storage, state.version + 1).await {
            Ok(commit) => commit,
            Err(e) if e.is_not_found() => return Ok(state),
            Err(e) => return Err(e),
        };
        let location = storage.location(&commit_file(commit.version));
        state = commit
            .apply(Some(&state))
            .map_err(|reason| Error::corrupt(location, reason))?;
    }
}

/// The newest state, from `state` (a state this reader had, whose newest
/// checkpoint was `checkpoint`), and the newest checkpoint.
///
/// A missing next commit means there is none, unless cleanup took it: the
/// commits after a state can only be deleted once a newer checkpoint
/// exists and the pointer names it, so the pointer decides.
pub async fn refresh(
    storage: &Storage,
    state: TableState,
    checkpoint: u64,
) -> Result<(TableState, u64)> {
    let state = catch_up(storage, state).await?;
    match read_pointer(storage).await? {
        Some(pointer) if pointer > state.version => load(storage)
            .await?
            .ok_or_else(|| Error::Table("the table's log disappeared".into())),
        Some(pointer) => Ok((state, checkpoint.max(pointer))),
        None => Ok((state, checkpoint)),
    }
}

/// The newest state of the table at `storage`, and the newest checkpoint
/// it was read from (0 when none); `None` if there is no table.
pub async fn load(storage: &Storage) -> Result<Option<(TableState, u64)>> {
    if let Some(version) = read_pointer(storage).await? {
        match read_checkpoint(storage, version).await {
            Ok(state) => return Ok(Some((catch_up(storage, state).await?, version))),
            Err(e) if e.is_corruption() || e.is_not_found() => {
                log::warn!("checkpoint {version} unusable, listing the log: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    load_by_listing(storage).await
}

/// Opens from the newest readable checkpoint, or from the first commit.
async fn load_by_listing(storage: &Storage) -> Result<Option<(TableState, u64)>> {
    let mut commits = Vec::new();
    let mut checkpoints = Vec::new();
    for file in storage.list(LOG_DIR).await? {
        match parse_name(&file.name) {
            Some((v, true)) => checkpoints.push(v),
            Some((v, false)) => commits.push(v),
            None => {}
        }
    }
    checkpoints.sort_unstable();
    for &version in checkpoints.iter().rev() {
        match read_checkpoint(storage, version).await {
            Ok(state) => return Ok(Some((catch_up(storage, state).await?, version))),
            Err(e) if e.is_corruption() => log::warn!("skipping checkpoint {version}: {e}"),
            Err(e) => return Err(e),
        }
    }
    let Some(&first) = commits.iter().min() else {
        return Ok(None);
    };
    let commit = read_commit(storage, first).await?;
    let location = storage.location(&commit_file(first));
    let state = commit.apply(None).map_err(|_| {
        Error::corrupt(
            location,
            "the oldest commit left states only a change, and no checkpoint is readable",
        )
    })?;
    Ok(Some((catch_up(storage, state).await?, 0)))
}

/// Whether a table exists at `storage` (files of the log, not leftovers
/// such as a temporary file of a create that crashed).
pub async fn exists(storage: &Storage) -> Result<bool> {
    if storage.exists(LAST_CHECKPOINT).await? {
        return Ok(true);
    }
    let files = storage.list(LOG_DIR).await?;
    Ok(files.iter().any(|f| parse_name(&f.name).is_some()))
}

/// What a log cleanup did, and when another could delete more.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cleaned {
    pub deleted: usize,
    /// When the first file kept only for its age reaches `log_retention`
    /// (ms since the epoch). Files kept for a pinned reader or the
    /// checkpoints wait for the next checkpoint instead.
    pub next_due_ms: Option<i64>,
}

/// Deletes log files no reader needs: checkpoints and commits older than
/// the second newest checkpoint (and older than `pinned`, the oldest
/// version a reader of this process holds), once their files are older
/// than `retention_ms`.
pub async fn clean(storage: &Storage, retention_ms: i64, pinned: Option<u64>) -> Result<Cleaned> {
    let files = storage.list(LOG_DIR).await?;
    let mut checkpoints: Vec<u64> = files
        .iter()
        .filter_map(|f| parse_name(&f.name))
        .filter(|(_, checkpoint)| *checkpoint)
        .map(|(v, _)| v)
        .collect();
    checkpoints.sort_unstable();
    // The two newest checkpoints that read back: a damaged one protects
    // nothing.
    let mut readable = Vec::new();
    for &version in checkpoints.iter().rev() {
        match read_checkpoint(storage, version).await {
            Ok(state) => readable.push(state),
            Err(e) if e.is_corruption() || e.is_not_found() => {
                log::warn!("cleanup skips checkpoint {version}: {e}");
            }
            Err(e) => return Err(e),
        }
        if readable.len() == 2 {
            break;
        }
    }
    let [newest, older] = &readable[..] else {
        return Ok(Cleaned::default());
    };
    // Readers arriving later start from the newest checkpoint, whose
    // commits are all kept.
    if read_pointer(storage)
        .await?
        .is_none_or(|v| v < newest.version)
    {
        write_checkpoint(storage, newest).await?;
    }
    let keep_from = older.version.min(pinned.unwrap_or(u64::MAX));
    let now = now_ms();
    let mut cleaned = Cleaned::default();
    for file in &files {
        let Some((version, _)) = parse_name(&file.name) else {
            continue;
        };
        if version >= keep_from {
            continue;
        }
        if now.saturating_sub(file.modified_ms) >= retention_ms {
            storage.delete(&file.name).await?;
            cleaned.deleted += 1;
        } else {
            let due = file.modified_ms.saturating_add(retention_ms);
            cleaned.next_due_ms = Some(cleaned.next_due_ms.map_or(due, |t| t.min(due)));
        }
    }
    Ok(cleaned)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
