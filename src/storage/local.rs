//! The local file system: reads with `pread` straight into the buffer that
//! is returned (never zero-filled first), writes through a temporary file
//! renamed into place, and fsync on request so a commit survives power loss.

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, DirListing, FileInfo, FileWriter, blocking};
use crate::error::{Error, Result};

/// Bytes a [`LocalWriter`] gathers before handing them to the kernel.
/// (Pieces this large go to the kernel as they come: a part writer with a
/// file per column already hands over pieces of about a megabyte.)
const WRITE_BUFFER: usize = 1 << 20;

#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    display: String,
}

impl LocalBackend {
    pub fn new(root: &Path) -> Result<Self> {
        if root.as_os_str().is_empty() {
            return Err(Error::Table("an empty path is not a directory".into()));
        }
        let root = std::path::absolute(root).map_err(|e| {
            Error::Table(format!(
                "'{}' is not a usable directory: {e}",
                root.display()
            ))
        })?;
        Ok(LocalBackend {
            display: root.display().to_string(),
            root,
        })
    }

    fn file(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    fn location(&self, path: &str) -> String {
        self.file(path).display().to_string()
    }
}

pub(crate) fn io_error(path: String, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound { path },
        _ => Error::store(path, e),
    }
}

/// fsyncs a directory so the names it holds survive a power loss.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A fresh temporary name beside `path`, hidden from table listings.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()))
}

fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir),
        None => Ok(()),
    }
}

/// Creates `path` with `bytes` durably and atomically, failing (returning
/// `false`) if it exists: the bytes go to a temporary file that is fsynced,
/// then hard-linked to the final name, which fails if the name is taken.
fn durable_create(path: &Path, bytes: &[u8], root: &Path) -> std::io::Result<bool> {
    create_parent(path)?;
    let tmp = temporary(path);
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
        sync_ancestors(path, root)?;
    }
    result
}

/// fsyncs every directory from `path`'s parent up to `root`'s parent: any
/// of them may have gained an entry (a new part directory, a new table).
fn sync_ancestors(path: &Path, root: &Path) -> std::io::Result<()> {
    for ancestor in path.ancestors().skip(1).take_while(|a| a.starts_with(root)) {
        sync_dir(ancestor)?;
    }
    if let Some(parent) = root.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file renamed over it, so a
/// reader sees the old file or the new one, never a part of one.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    create_parent(path)?;
    let tmp = temporary(path);
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads `range` of `file`. The file's real length is checked before the
/// buffer is allocated, and the buffer is filled by the read itself.
fn read_range(file: &Path, location: &str, range: Range<u64>) -> Result<Bytes> {
    let mut f = std::fs::File::open(file).map_err(|e| io_error(location.to_string(), e))?;
    let actual = f
        .metadata()
        .map_err(|e| io_error(location.to_string(), e))?
        .len();
    if actual < range.end {
        return Err(Error::corrupt(
            location,
            format!(
                "truncated: {actual} bytes, a read needs {} (up to offset {})",
                range.end - range.start,
                range.end
            ),
        ));
    }
    let len = (range.end - range.start) as usize;
    let mut buffer = Vec::with_capacity(len);
    f.seek(SeekFrom::Start(range.start))
        .and_then(|_| f.take(len as u64).read_to_end(&mut buffer))
        .map_err(|e| io_error(location.to_string(), e))?;
    if buffer.len() != len {
        return Err(Error::corrupt(
            location,
            format!(
                "truncated while reading: got {} of {len} bytes",
                buffer.len()
            ),
        ));
    }
    Ok(Bytes::from(buffer))
}

fn list_recursive(root: &Path, dir: &Path, out: &mut Vec<FileInfo>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Deleted while listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            list_recursive(root, &path, out)?;
            continue;
        }
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        out.push(FileInfo {
            name,
            size: meta.len(),
            modified_ms,
        });
    }
    Ok(())
}

#[async_trait]
impl Backend for LocalBackend {
    fn describe(&self) -> &str {
        &self.display
    }

    async fn get(&self, path: &str) -> Result<Bytes> {
        let (file, location) = (self.file(path), self.location(path));
        let len = std::fs::metadata(&file)
            .map_err(|e| io_error(location.clone(), e))?
            .len();
        read_range(&file, &location, 0..len)
    }

    // Column files are immutable and usually in the page cache, so a pread
    // on the calling thread beats a hop through a blocking-task pool
    // (measured on the lineitem benchmark).
    async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        read_range(&self.file(path), &self.location(path), range)
    }

    async fn size(&self, path: &str) -> Result<Option<u64>> {
        match std::fs::metadata(self.file(path)) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(self.location(path), e)),
        }
    }

    async fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        let (file, location) = (self.file(path), self.location(path));
        blocking(location.clone(), move || {
            replace(&file, &bytes).map_err(|e| io_error(location, e))
        })
        .await
    }

    async fn create(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        let (file, location) = (self.file(path), self.location(path));
        let tmp = temporary(&file);
        let handle = {
            let (tmp, location) = (tmp.clone(), location.clone());
            blocking(location.clone(), move || {
                create_parent(&tmp)
                    .and_then(|()| std::fs::File::create(&tmp))
                    .map_err(|e| io_error(location, e))
            })
            .await?
        };
        Ok(Box::new(LocalWriter {
            file: Some(handle),
            tmp,
            target: file,
            location,
            buffer: Vec::new(),
            written: 0,
        }))
    }

    async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<bool> {
        let (file, location, root) = (self.file(path), self.location(path), self.root.clone());
        blocking(location.clone(), move || {
            durable_create(&file, &bytes, &root).map_err(|e| io_error(location, e))
        })
        .await
    }

    async fn sync(&self, paths: &[String]) -> Result<()> {
        let files: Vec<PathBuf> = paths.iter().map(|p| self.file(p)).collect();
        let root = self.root.clone();
        blocking(self.display.clone(), move || {
            let mut dirs = std::collections::BTreeSet::new();
            for path in &files {
                std::fs::File::open(path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io_error(path.display().to_string(), e))?;
                dirs.extend(
                    path.ancestors()
                        .skip(1)
                        .take_while(|a| a.starts_with(&root))
                        .map(Path::to_path_buf),
                );
                if let Some(parent) = root.parent() {
                    dirs.insert(parent.to_path_buf());
                }
            }
            for dir in dirs {
                sync_dir(&dir).map_err(|e| io_error(dir.display().to_string(), e))?;
            }
            Ok(())
        })
        .await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match std::fs::remove_file(self.file(path)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(self.location(path), e)),
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<FileInfo>> {
        let (root, start, location) = (self.root.clone(), self.file(dir), self.location(dir));
        blocking(location.clone(), move || {
            let mut files = Vec::new();
            list_recursive(&root, &start, &mut files).map_err(|e| io_error(location, e))?;
            Ok(files)
        })
        .await
    }

    async fn list_dir(&self, dir: &str) -> Result<DirListing> {
        let mut listing = DirListing::default();
        let entries = match std::fs::read_dir(self.file(dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
            Err(e) => return Err(io_error(self.location(dir), e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match entry.file_type() {
                Ok(t) if t.is_dir() => listing.dirs.push(name),
                Ok(_) => listing.files.push(name),
                Err(_) => {}
            }
        }
        listing.dirs.sort();
        listing.files.sort();
        Ok(listing)
    }

    async fn remove_dir(&self, dir: &str) -> Result<()> {
        // Not empty, or already gone: either way nothing to do.
        let _ = std::fs::remove_dir(self.file(dir));
        Ok(())
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// Writes a file through a temporary name, renamed into place by `finish`.
struct LocalWriter {
    file: Option<std::fs::File>,
    tmp: PathBuf,
    target: PathBuf,
    location: String,
    buffer: Vec<u8>,
    written: u64,
}

impl LocalWriter {
    /// Hands what is buffered to the kernel, keeping the buffer's memory.
    async fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let mut buffer = self.write_out(buffer).await?;
        buffer.clear();
        self.buffer = buffer;
        Ok(())
    }

    /// Writes `bytes` on the blocking pool, and gives them back.
    async fn write_out<B: AsRef<[u8]> + Send + 'static>(&mut self, bytes: B) -> Result<B> {
        let Some(mut file) = self.file.take() else {
            return Err(Error::store(
                self.location.clone(),
                "file writer already failed",
            ));
        };
        let location = self.location.clone();
        let (file, bytes) = blocking(location.clone(), move || {
            file.write_all(bytes.as_ref())
                .map_err(|e| io_error(location, e))
                .map(|()| (file, bytes))
        })
        .await?;
        self.file = Some(file);
        Ok(bytes)
    }
}

#[async_trait]
impl FileWriter for LocalWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.written += bytes.len() as u64;
        // A large piece goes to the kernel as it is, after what is buffered.
        if bytes.len() >= WRITE_BUFFER {
            self.flush().await?;
            return self.write_out(bytes).await.map(drop);
        }
        self.buffer.extend_from_slice(&bytes);
        if self.buffer.len() >= WRITE_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        if self.file.is_none() {
            return Err(Error::store(
                self.location.clone(),
                "file writer already failed",
            ));
        }
        self.flush().await?;
        drop(self.file.take());
        let (tmp, target, location) =
            (self.tmp.clone(), self.target.clone(), self.location.clone());
        blocking(location.clone(), move || {
            std::fs::rename(&tmp, &target).map_err(|e| io_error(location, e))
        })
        .await?;
        // Renamed: nothing left for `drop` to remove.
        self.tmp = PathBuf::new();
        Ok(self.written)
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
