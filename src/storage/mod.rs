//! Every byte diagon reads or writes goes through [`Storage`].
//!
//! A [`Backend`] is a flat namespace of immutable files: the local file
//! system ([`local`]: `pread`, fsync), any `object_store` store ([`object`]:
//! S3, GCS, Azure, ...) or memory ([`memory`], for tests). Decorators wrap
//! any backend and are backends themselves: a read-through cache bounded in
//! bytes ([`cache::CachedBackend`]) and fault injection ([`fault`]). A
//! [`Storage`] is a handle on one directory of a backend (a table, or a
//! catalog of tables); paths inside it are relative names such as
//! `parts/p_…/index.dgi`, and every error names the full location.
//!
//! Files are written once under fresh names and never modified; the only
//! names written twice are the commit log's (create-if-absent, exactly one
//! writer wins) and pointers that are hints (`_log/_last_checkpoint`).

pub mod cache;
pub mod counts;
pub mod disk_cache;
pub mod fault;
pub mod local;
pub mod memory;
pub mod object;
pub mod read_ahead;

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};

pub use cache::{Cache, CacheCounts, CachedBackend};
pub use fault::{FaultInjection, Faults, Strike};

/// Whether `name` can name a file or directory inside a table: one path
/// segment, never `.` or `..`. Names read from table files are checked with
/// this, so a crafted table cannot point reads outside its directory.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// A file found by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Path relative to the directory listed from (the storage's root).
    pub name: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub modified_ms: i64,
}

/// The immediate children of a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirListing {
    /// Names of subdirectories (one segment each).
    pub dirs: Vec<String>,
    /// Names of files (one segment each).
    pub files: Vec<String>,
}

/// A file being written in pieces (a part's column file, which may be far
/// larger than memory should hold). Nothing is visible under its name
/// until [`FileWriter::finish`]; dropping the writer abandons the file.
#[async_trait]
pub trait FileWriter: Send {
    /// Appends `bytes`.
    async fn write(&mut self, bytes: Bytes) -> Result<()>;
    /// Completes the file; returns its length.
    async fn finish(self: Box<Self>) -> Result<u64>;
}

/// A flat namespace of immutable files. Paths are `/`-separated and
/// relative to the backend's root; errors name the full location.
#[async_trait]
pub trait Backend: fmt::Debug + Send + Sync {
    /// The root as shown in messages, e.g. `/data/docs` or `s3://bucket/docs`.
    fn describe(&self) -> &str;

    /// Reads a whole file. A missing file is [`Error::NotFound`].
    async fn get(&self, path: &str) -> Result<Bytes>;

    /// Reads exactly `range` of a file. A missing file is
    /// [`Error::NotFound`]; a file shorter than the range is corrupt.
    async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes>;

    /// Reads several ranges of a file `file_len` bytes long, in order.
    /// Stores where a request costs a round trip merge nearby ranges and
    /// send several at once; a read cache fetches whole blocks.
    async fn get_ranges(
        &self,
        path: &str,
        ranges: &[Range<u64>],
        _file_len: u64,
    ) -> Result<Vec<Bytes>> {
        futures::future::try_join_all(ranges.iter().map(|r| self.get_range(path, r.clone()))).await
    }

    /// A hint that `ranges` of a file `file_len` bytes long will be read
    /// soon: a backend that reads ahead starts fetching them (see
    /// [`read_ahead`]); others ignore it.
    fn prefetch(&self, _path: &str, _ranges: &[Range<u64>], _file_len: u64) {}

    /// The length of a file, or `None` if it does not exist.
    async fn size(&self, path: &str) -> Result<Option<u64>>;

    /// Writes a whole file, replacing any file of that name atomically.
    async fn put(&self, path: &str, bytes: Bytes) -> Result<()>;

    /// Starts writing a file in pieces.
    async fn create(&self, path: &str) -> Result<Box<dyn FileWriter>>;

    /// Writes a file only if no file of that name exists; `false` when
    /// another writer got there first. The commit point of the log.
    async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<bool>;

    /// Makes written files and the directories naming them durable
    /// (object stores are durable once a write returns).
    async fn sync(&self, paths: &[String]) -> Result<()>;

    /// Deletes a file; a file already gone is not an error.
    async fn delete(&self, path: &str) -> Result<()>;

    /// Every file under directory `dir`, recursively, named relative to
    /// the backend's root.
    async fn list(&self, dir: &str) -> Result<Vec<FileInfo>>;

    /// The immediate children of directory `dir`.
    async fn list_dir(&self, dir: &str) -> Result<DirListing>;

    /// Removes directory `dir` if it is empty (a no-op where directories
    /// are implicit).
    async fn remove_dir(&self, dir: &str) -> Result<()>;

    /// The local directory of the root, for a backend on the local file
    /// system (decorators pass it through).
    fn local_root(&self) -> Option<&std::path::Path> {
        None
    }
}

/// A number no other backend of this process has, for cache keys (an
/// address could be reused by a later backend).
pub(crate) fn unique_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A directory of a backend: a table's, or a catalog's.
#[derive(Debug, Clone)]
pub struct Storage {
    backend: Arc<dyn Backend>,
    /// Names this backend instance in cache keys.
    id: u64,
    /// Where what is read through this storage is cached once decoded
    /// (part indexes, masks, index blocks): the process's cache unless a
    /// caller gives the storage one of its own.
    cache: Arc<Cache>,
    /// This directory inside the backend: empty, or ending in `/`.
    prefix: String,
    /// How the directory is shown in messages.
    display: String,
}

impl Storage {
    /// Storage over `backend`'s root.
    pub fn from_backend(backend: Arc<dyn Backend>) -> Self {
        let display = backend.describe().to_string();
        Storage {
            backend,
            id: unique_id(),
            cache: Cache::global().clone(),
            prefix: String::new(),
            display,
        }
    }

    /// Storage at `root` of an object store, shown as `display`.
    pub fn new(
        store: Arc<dyn object_store::ObjectStore>,
        root: object_store::path::Path,
        display: impl Into<String>,
    ) -> Self {
        Self::from_backend(Arc::new(object::ObjectBackend::new(store, root, display)))
    }

    /// Storage at the local directory `dir` (`pread` reads, fsynced writes).
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        Ok(Self::from_backend(Arc::new(local::LocalBackend::new(dir)?)))
    }

    /// Storage in memory, empty, shown as `display`.
    pub fn memory(display: impl Into<String>) -> Self {
        Self::from_backend(Arc::new(memory::MemoryBackend::new(display)))
    }

    /// The same directory with every read served through `cache` first.
    pub fn with_read_cache(&self, cache: Arc<Cache>) -> Self {
        let backend = Arc::new(CachedBackend::new(self.backend.clone(), cache));
        Storage {
            backend,
            id: unique_id(),
            ..self.clone()
        }
    }

    /// The same directory with range reads kept in the local read cache
    /// `cache` (see [`disk_cache`]), under `namespace` (the location).
    pub fn with_disk_cache(&self, cache: Arc<disk_cache::DiskCache>, namespace: &str) -> Self {
        let backend = Arc::new(disk_cache::DiskCachedBackend::new(
            self.backend.clone(),
            cache,
            namespace,
        ));
        Storage {
            backend,
            id: unique_id(),
            ..self.clone()
        }
    }

    /// The same directory reading ahead what readers announce (see
    /// [`read_ahead`]), holding at most `budget` bytes not yet read.
    pub fn with_read_ahead(&self, budget: u64) -> Self {
        let backend = Arc::new(read_ahead::ReadAhead::new(self.backend.clone(), budget));
        Storage {
            backend,
            id: unique_id(),
            ..self.clone()
        }
    }

    /// The same directory through a backend that fails as `faults` says.
    pub fn with_faults(&self, faults: Arc<Faults>) -> Self {
        let backend = Arc::new(FaultInjection::new(self.backend.clone(), faults));
        Storage {
            backend,
            id: unique_id(),
            ..self.clone()
        }
    }

    /// The subdirectory `dir` (one or more plain segments).
    pub fn at(&self, dir: &str) -> Storage {
        let dir = dir.trim_matches('/');
        Storage {
            backend: self.backend.clone(),
            id: self.id,
            cache: self.cache.clone(),
            prefix: format!("{}{dir}/", self.prefix),
            display: self.location(dir),
        }
    }

    /// The same directory with decoded objects cached in `cache`.
    pub fn with_cache(&self, cache: Arc<Cache>) -> Self {
        Storage {
            cache,
            ..self.clone()
        }
    }

    /// The cache for what is decoded from this storage's files.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    /// The location of `name` as shown to users.
    pub fn location(&self, name: &str) -> String {
        format!("{}/{}", self.display.trim_end_matches('/'), name)
    }

    /// A key naming `name` uniquely in this process (for caches). Storage
    /// opened anew gets keys of its own, so nothing read through an earlier
    /// handle is taken for what the files hold now.
    pub fn cache_key(&self, name: &str) -> String {
        format!("{}/{}{name}", self.id, self.prefix)
    }

    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Names under this directory from backend paths.
    fn relative(&self, path: String) -> String {
        path.strip_prefix(&self.prefix)
            .map(str::to_string)
            .unwrap_or(path)
    }

    /// Reads a whole file.
    pub async fn get(&self, name: &str) -> Result<Bytes> {
        self.backend.get(&self.path(name)).await
    }

    /// Reads `range` of a file whose recorded length is `file_len`: a range
    /// beyond it, a missing file and a short file are all reported as damage
    /// to the table, before anything is allocated for the read.
    pub async fn get_range(&self, name: &str, range: Range<u64>, file_len: u64) -> Result<Bytes> {
        let mut read = self
            .get_ranges(name, std::slice::from_ref(&range), file_len)
            .await?;
        read.pop()
            .ok_or_else(|| Error::store(self.location(name), "a read returned no bytes"))
    }

    /// Reads `ranges` of a file whose recorded length is `file_len`,
    /// nearby ones merged where a request costs a round trip; checked as
    /// [`Storage::get_range`] checks one.
    pub async fn get_ranges(
        &self,
        name: &str,
        ranges: &[Range<u64>],
        file_len: u64,
    ) -> Result<Vec<Bytes>> {
        if let Some(range) = ranges.iter().find(|r| r.start > r.end || r.end > file_len) {
            return Err(Error::corrupt(
                self.location(name),
                format!("read of {range:?} beyond recorded length {file_len}"),
            ));
        }
        match self
            .backend
            .get_ranges(&self.path(name), ranges, file_len)
            .await
        {
            Err(Error::NotFound { path }) => Err(Error::corrupt(path, "file is missing")),
            other => other,
        }
    }

    /// A hint that `ranges` of a file `file_len` bytes long will be read
    /// soon.
    pub fn prefetch(&self, name: &str, ranges: &[Range<u64>], file_len: u64) {
        self.backend.prefetch(&self.path(name), ranges, file_len);
    }

    /// The length of a file, or `None` if there is none.
    pub async fn size(&self, name: &str) -> Result<Option<u64>> {
        self.backend.size(&self.path(name)).await
    }

    /// Whether a file exists.
    pub async fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.size(name).await?.is_some())
    }

    /// Writes a whole file. Used for files with fresh unique names (part
    /// files) and for hints, never to modify data.
    pub async fn put(&self, name: &str, bytes: impl Into<Bytes>) -> Result<()> {
        self.backend.put(&self.path(name), bytes.into()).await
    }

    /// Starts writing a file in pieces.
    pub async fn create(&self, name: &str) -> Result<Box<dyn FileWriter>> {
        self.backend.create(&self.path(name)).await
    }

    /// Writes a file only if none of that name exists; `false` when another
    /// writer got there first.
    pub async fn put_if_absent(&self, name: &str, bytes: impl Into<Bytes>) -> Result<bool> {
        self.backend
            .put_if_absent(&self.path(name), bytes.into())
            .await
    }

    /// Makes written files and the directories naming them durable.
    pub async fn sync(&self, names: Vec<String>) -> Result<()> {
        let paths: Vec<String> = names.iter().map(|n| self.path(n)).collect();
        self.backend.sync(&paths).await
    }

    /// Deletes a file; a file already gone is not an error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.backend.delete(&self.path(name)).await
    }

    /// Removes directory `dir` if it is empty.
    pub async fn remove_empty_dir(&self, dir: &str) -> Result<()> {
        self.backend.remove_dir(&self.path(dir)).await
    }

    /// Lists the files under directory `dir` (recursively), relative to
    /// this storage's directory.
    pub async fn list(&self, dir: &str) -> Result<Vec<FileInfo>> {
        let files = self.backend.list(&self.path(dir)).await?;
        Ok(files
            .into_iter()
            .map(|f| FileInfo {
                name: self.relative(f.name),
                ..f
            })
            .collect())
    }

    /// The immediate children of directory `dir` ("" for this directory).
    pub async fn list_dir(&self, dir: &str) -> Result<DirListing> {
        let path = match dir {
            "" => self.prefix.trim_end_matches('/').to_string(),
            dir => self.path(dir),
        };
        self.backend.list_dir(&path).await
    }

    /// Deletes every file under directory `dir` and the directory itself.
    pub async fn delete_dir(&self, dir: &str) -> Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for file in self.list(dir).await? {
            self.delete(&file.name).await?;
            let mut parent = file.name.as_str();
            while let Some((up, _)) = parent.rsplit_once('/') {
                dirs.insert(up.to_string());
                parent = up;
            }
        }
        dirs.insert(dir.trim_matches('/').to_string());
        // Deepest first.
        for d in dirs.iter().rev() {
            if d.starts_with(dir.trim_matches('/')) {
                self.remove_empty_dir(d).await?;
            }
        }
        Ok(())
    }

    /// The local directory behind this storage, if it is on the local file
    /// system (for callers that must hand a path to another program).
    pub fn local_dir(&self) -> Option<PathBuf> {
        let root = self.backend.local_root()?;
        Some(root.join(self.prefix.trim_end_matches('/')))
    }
}

/// A blocking file-system call made from async code, on tokio's blocking
/// pool when a runtime is running.
pub(crate) async fn blocking<T: Send + 'static>(
    what: String,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(f)
            .await
            .map_err(|e| Error::store(what, format!("I/O task failed: {e}")))?,
        Err(_) => f(),
    }
}
