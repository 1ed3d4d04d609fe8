//! One object-store-shaped interface for everything diagon reads and writes.
//!
//! A table lives under a root path of an [`ObjectStore`]: the local file
//! system, memory (tests), or any store registered with the session (S3, GCS,
//! Azure). Paths inside the table are relative names such as
//! `parts/p_…/index.dgi`; every error names the full location.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// A table's directory in an object store.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// How the root is shown in messages, e.g. `file:///data/docs`.
    display: String,
    /// The root as a local directory, when the store is the local file
    /// system: writes are then made durable with fsync before a commit.
    local_dir: Option<PathBuf>,
}

/// Whether `name` can name a file or directory inside a table: one path
/// segment, never `.` or `..`. Names read from table files are checked with
/// this, so a crafted table cannot point reads outside its directory.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// A file found by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Path relative to the table root.
    pub name: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub modified_ms: i64,
}

impl Storage {
    pub fn new(store: Arc<dyn ObjectStore>, root: Path, display: impl Into<String>) -> Self {
        Storage {
            store,
            root,
            display: display.into(),
            local_dir: None,
        }
    }

    /// Storage rooted at the local directory `dir` (fsynced writes, `pread`
    /// reads).
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        let path = Path::from_filesystem_path(dir).map_err(|e| {
            Error::Table(format!(
                "'{}' is not a usable directory: {e}",
                dir.display()
            ))
        })?;
        let store = Arc::new(object_store::local::LocalFileSystem::new());
        Ok(Storage::new(store, path, dir.display().to_string()).with_local_dir(dir.to_path_buf()))
    }

    /// Declares that the root is the local directory `dir`, so that files and
    /// commits are fsynced (object_store's local backend does not).
    pub fn with_local_dir(mut self, dir: PathBuf) -> Self {
        self.local_dir = Some(dir);
        self
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn path(&self, name: &str) -> Path {
        let mut path = self.root.clone();
        for segment in name.split('/') {
            path = path.clone().join(segment);
        }
        path
    }

    /// The location of `name` as shown to users.
    pub fn location(&self, name: &str) -> String {
        format!("{}/{}", self.display.trim_end_matches('/'), name)
    }

    fn store_error(&self, name: &str, source: object_store::Error) -> Error {
        Error::Store {
            path: self.location(name),
            source,
        }
    }

    /// Reads a whole file.
    pub async fn get(&self, name: &str) -> Result<Bytes> {
        let result = self
            .store
            .get(&self.path(name))
            .await
            .map_err(|e| self.store_error(name, e))?;
        result.bytes().await.map_err(|e| self.store_error(name, e))
    }

    /// Reads `range` of a file whose expected length is `file_len`; a file that
    /// is shorter than recorded is reported as truncated, not as an I/O error.
    pub async fn get_range(&self, name: &str, range: Range<u64>, file_len: u64) -> Result<Bytes> {
        if range.start > range.end || range.end > file_len {
            return Err(Error::corrupt(
                self.location(name),
                format!("read of {range:?} beyond recorded length {file_len}"),
            ));
        }
        #[cfg(unix)]
        if let Some(dir) = &self.local_dir {
            return read_local_range(&dir.join(name), range, file_len).map_err(|e| match e {
                LocalReadError::Damaged(reason) => Error::corrupt(self.location(name), reason),
                LocalReadError::Io(e) => io_error(self.location(name), e),
            });
        }
        match self.store.get_range(&self.path(name), range.clone()).await {
            Ok(bytes) if bytes.len() as u64 == range.end - range.start => Ok(bytes),
            Ok(bytes) => Err(Error::corrupt(
                self.location(name),
                format!(
                    "truncated: read {} of {} bytes at offset {}",
                    bytes.len(),
                    range.end - range.start,
                    range.start
                ),
            )),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::corrupt(self.location(name), "file is missing"))
            }
            Err(e) => {
                // Ranges past the end of a shorter file come back as errors whose
                // kind differs between stores; the recorded length decides.
                match self.store.head(&self.path(name)).await {
                    Ok(meta) if meta.size < file_len => Err(Error::corrupt(
                        self.location(name),
                        format!("truncated: {} bytes, expected {file_len}", meta.size),
                    )),
                    _ => Err(self.store_error(name, e)),
                }
            }
        }
    }

    /// Whether a file exists.
    pub async fn exists(&self, name: &str) -> Result<bool> {
        if let Some(dir) = &self.local_dir {
            return std::fs::exists(dir.join(name)).map_err(|e| io_error(self.location(name), e));
        }
        match self.store.head(&self.path(name)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    /// Writes a whole file, replacing any file of that name. Used only for
    /// files with fresh unique names (part files), never to modify data.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&self.path(name), PutPayload::from(bytes))
            .await
            .map_err(|e| self.store_error(name, e))?;
        Ok(())
    }

    /// Writes a file only if no file of that name exists. Returns `false` when
    /// another writer got there first. This is the commit point of the log.
    pub async fn put_if_absent(&self, name: &str, bytes: Vec<u8>) -> Result<bool> {
        if let Some(dir) = &self.local_dir {
            let (path, location, root) = (dir.join(name), self.location(name), dir.clone());
            return tokio::task::spawn_blocking(move || durable_create(&path, &bytes, &root))
                .await
                .map_err(|e| Error::Table(format!("commit task failed: {e}")))?
                .map_err(|e| io_error(location, e));
        }
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(name), PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    /// Makes written files and the directories naming them durable (local
    /// file system only; object stores are durable once a write returns).
    pub async fn sync(&self, names: Vec<String>) -> Result<()> {
        let Some(dir) = self.local_dir.clone() else {
            return Ok(());
        };
        let display = self.display.clone();
        tokio::task::spawn_blocking(move || {
            let mut dirs = std::collections::BTreeSet::new();
            for name in &names {
                let path = dir.join(name);
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io_error(path.display().to_string(), e))?;
                // Every directory from the file up to the table root's parent
                // may have gained an entry (a new part directory, a new table).
                dirs.extend(
                    path.ancestors()
                        .skip(1)
                        .take_while(|a| a.starts_with(&dir))
                        .map(|a| a.to_path_buf()),
                );
                if let Some(parent) = dir.parent() {
                    dirs.insert(parent.to_path_buf());
                }
            }
            for parent in dirs {
                sync_dir(&parent).map_err(|e| io_error(parent.display().to_string(), e))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Table(format!("sync of '{display}' failed: {e}")))?
    }

    /// Deletes a file; a file already gone is not an error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    /// Removes directory `dir` if it is empty and the store is a local
    /// directory (object stores have no directories to remove).
    pub fn remove_empty_dir(&self, dir: &str) {
        if let Some(local) = &self.local_dir {
            let _ = std::fs::remove_dir(local.join(dir));
        }
    }

    /// Lists the files under directory `dir` (recursively), relative to the root.
    pub async fn list(&self, dir: &str) -> Result<Vec<FileInfo>> {
        let prefix = self.path(dir);
        let root_parts = self.root.parts().count();
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.store_error(dir, e))?;
        Ok(metas
            .into_iter()
            .map(|meta| FileInfo {
                name: meta
                    .location
                    .parts()
                    .skip(root_parts)
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/"),
                size: meta.size,
                modified_ms: meta.last_modified.timestamp_millis(),
            })
            .collect())
    }
}

fn io_error(path: String, e: std::io::Error) -> Error {
    Error::Store {
        path,
        source: object_store::Error::Generic {
            store: "local",
            source: Box::new(e),
        },
    }
}

/// fsyncs a directory so the names it holds survive a power loss.
fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `path` with `bytes` durably and atomically, failing (returning
/// `false`) if it exists: the bytes go to a temporary file that is fsynced,
/// then hard-linked to the final name, which fails if the name is taken.
fn durable_create(
    path: &std::path::Path,
    bytes: &[u8],
    root: &std::path::Path,
) -> std::io::Result<bool> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    if let Ok(true) = result {
        // The new name, and any directories created for it, up to the table
        // root's parent.
        for ancestor in path.ancestors().skip(1).take_while(|a| a.starts_with(root)) {
            sync_dir(ancestor)?;
        }
        if let Some(parent) = root.parent() {
            sync_dir(parent)?;
        }
    }
    result
}

/// Why a local read failed: the file is damaged (missing, short), or the
/// file system failed.
#[cfg(unix)]
enum LocalReadError {
    Damaged(String),
    Io(std::io::Error),
}

/// Reads a byte range of a local file directly. Column files are immutable
/// and usually in the page cache, so a `pread` on the calling thread beats a
/// hop through a blocking-task pool (measured on the lineitem benchmark).
#[cfg(unix)]
fn read_local_range(
    path: &std::path::Path,
    range: Range<u64>,
    file_len: u64,
) -> std::result::Result<Bytes, LocalReadError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LocalReadError::Damaged("file is missing".to_string()),
        _ => LocalReadError::Io(e),
    })?;
    let mut buffer = vec![0u8; (range.end - range.start) as usize];
    match file.read_exact_at(&mut buffer, range.start) {
        Ok(()) => Ok(Bytes::from(buffer)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            let actual = file.metadata().map(|m| m.len()).unwrap_or(0);
            Err(LocalReadError::Damaged(format!(
                "truncated: {actual} bytes, expected {file_len}"
            )))
        }
        Err(e) => Err(LocalReadError::Io(e)),
    }
}
