//! A local read cache for object storage: what reads of cold parts
//! fetched, kept on local disk so the next query (or the next process)
//! reads it there. Bounded in bytes (the least recently used blocks go
//! first), and every hit checked.
//!
//! Range reads are cached in aligned blocks of [`BLOCK_BYTES`] (the last
//! block of a file is shorter); a read fetches the missing blocks it
//! touches, nearby ones in one request. Whole-file reads (part indexes)
//! are cached as one entry. Each entry is a file under the cache directory,
//! `<namespace>/<path>.<block>` or `<namespace>/<path>.all`:
//!
//! ```text
//! "DGCB" | version u8 | length u64 | xxh64(data) u64 | data
//! ```
//!
//! written to a temporary name and renamed, so a crash leaves whole entries
//! or temporary files (removed when the cache opens). An entry whose
//! length or checksum is wrong is deleted and fetched again. Cached files
//! are immutable part files: an entry never goes stale.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, DirListing, FileInfo, FileWriter, blocking, counts};
use crate::error::{Error, Result};

/// Bytes per cached block: a read fetches at most two blocks' worth
/// beyond what it needs.
pub const BLOCK_BYTES: u64 = 128 << 10;

const MAGIC: &[u8; 4] = b"DGCB";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 8 + 8;

/// One cache directory with its byte bound, shared by every table of the
/// process that uses that directory.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    capacity: std::sync::atomic::AtomicU64,
    index: Mutex<Index>,
}

/// The entries on disk, by key, with their use order.
#[derive(Debug, Default)]
struct Index {
    /// Key → (bytes on disk, last use tick).
    entries: HashMap<String, (u64, u64)>,
    /// Last use tick → key, oldest first.
    order: BTreeMap<u64, String>,
    bytes: u64,
    tick: u64,
}

impl Index {
    fn touch(&mut self, key: &str) -> bool {
        let Some((_, last)) = self.entries.get(key).copied() else {
            return false;
        };
        self.order.remove(&last);
        self.tick += 1;
        self.order.insert(self.tick, key.to_string());
        if let Some(entry) = self.entries.get_mut(key) {
            entry.1 = self.tick;
        }
        true
    }

    fn insert(&mut self, key: String, bytes: u64) {
        self.remove(&key);
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (bytes, self.tick));
        self.bytes += bytes;
    }

    fn remove(&mut self, key: &str) {
        if let Some((bytes, tick)) = self.entries.remove(key) {
            self.order.remove(&tick);
            self.bytes -= bytes;
        }
    }

    /// Keys to delete so that the rest fits `capacity`, oldest first.
    fn evict(&mut self, capacity: u64) -> Vec<String> {
        let mut gone = Vec::new();
        while self.bytes > capacity {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some((bytes, _)) = self.entries.remove(&key) {
                self.bytes -= bytes;
            }
            gone.push(key);
        }
        gone
    }
}

impl DiskCache {
    /// The cache at `dir` (created if needed) holding at most `capacity`
    /// bytes: one instance per directory in this process, which finds what
    /// earlier processes left there.
    pub fn open(dir: &Path, capacity: u64) -> Result<Arc<DiskCache>> {
        static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<DiskCache>>>> = OnceLock::new();
        let what = dir.display().to_string();
        std::fs::create_dir_all(dir).map_err(|e| Error::store(what.clone(), e))?;
        let dir = dir.canonicalize().map_err(|e| Error::store(what, e))?;
        let mut open = crate::sync::lock(OPEN.get_or_init(Default::default));
        if let Some(cache) = open.get(&dir).and_then(Weak::upgrade) {
            cache.set_capacity(capacity);
            return Ok(cache);
        }
        let mut found = Vec::new();
        scan(&dir, &dir, &mut found).map_err(|e| Error::store(dir.display().to_string(), e))?;
        // Oldest first, so the newest count as most recently used.
        found.sort_by_key(|(_, _, modified)| *modified);
        let mut index = Index::default();
        for (key, bytes, _) in found {
            index.insert(key, bytes);
        }
        let cache = Arc::new(DiskCache {
            dir: dir.clone(),
            capacity: capacity.into(),
            index: Mutex::new(index),
        });
        let gone = crate::sync::lock(&cache.index).evict(capacity);
        cache.delete(&gone);
        open.insert(dir, Arc::downgrade(&cache));
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Changes the bound (the last opener's wins), evicting what no longer
    /// fits.
    pub fn set_capacity(&self, capacity: u64) {
        self.capacity.store(capacity, Ordering::Relaxed);
        let gone = crate::sync::lock(&self.index).evict(capacity);
        self.delete(&gone);
    }

    /// Bytes the cache holds now.
    pub fn bytes(&self) -> u64 {
        crate::sync::lock(&self.index).bytes
    }

    fn file(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    fn delete(&self, keys: &[String]) {
        for key in keys {
            let _ = std::fs::remove_file(self.file(key));
        }
    }

    /// The data of `key`, if held and intact (a damaged entry is deleted).
    fn read(&self, key: &str) -> Option<Bytes> {
        if !crate::sync::lock(&self.index).touch(key) {
            return None;
        }
        let file = self.file(key);
        let Ok(bytes) = std::fs::read(&file) else {
            // Evicted meanwhile, or removed by hand.
            crate::sync::lock(&self.index).remove(key);
            return None;
        };
        match unseal(&bytes) {
            Some(data) => Some(data),
            None => {
                log::warn!(
                    "read cache entry '{}' is damaged; fetching it again",
                    file.display()
                );
                crate::sync::lock(&self.index).remove(key);
                let _ = std::fs::remove_file(&file);
                None
            }
        }
    }

    /// Keeps `data` under `key`, evicting what no longer fits. A failure
    /// to write only loses the entry.
    fn write(&self, key: &str, data: &[u8]) {
        let file = self.file(key);
        let sealed = seal(data);
        let tmp = file.with_extension(format!("tmp{}", super::unique_id()));
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, &sealed))
            .and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            log::warn!("read cache: keeping '{}' failed: {e}", file.display());
            return;
        }
        let gone = {
            let mut index = crate::sync::lock(&self.index);
            index.insert(key.to_string(), sealed.len() as u64);
            index.evict(self.capacity())
        };
        self.delete(&gone);
    }

    /// Forgets every entry whose key starts with `prefix`.
    fn forget(&self, prefix: &str) {
        let keys: Vec<String> = {
            let mut index = crate::sync::lock(&self.index);
            let keys: Vec<String> = index
                .entries
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect();
            for key in &keys {
                index.remove(key);
            }
            keys
        };
        self.delete(&keys);
    }
}

/// Entries under `dir` as (key, bytes, modified); temporary files left by
/// a crash are deleted.
fn scan(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, u64, std::time::SystemTime)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            scan(root, &path, out)?;
            continue;
        }
        let is_tmp = path
            .extension()
            .is_some_and(|e| e.to_string_lossy().starts_with("tmp"));
        if is_tmp {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if let Ok(key) = path.strip_prefix(root) {
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            out.push((key.to_string_lossy().to_string(), meta.len(), modified));
        }
    }
    Ok(())
}

fn seal(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh64::xxh64(data, 0).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// The data of a sealed entry, if its header, length and checksum hold.
fn unseal(bytes: &[u8]) -> Option<Bytes> {
    let header = bytes.get(..HEADER_LEN)?;
    if &header[..4] != MAGIC || header[4] != VERSION {
        return None;
    }
    let len = u64::from_le_bytes(header[5..13].try_into().ok()?);
    let sum = u64::from_le_bytes(header[13..21].try_into().ok()?);
    let data = &bytes[HEADER_LEN..];
    if data.len() as u64 != len || xxhash_rust::xxh64::xxh64(data, 0) != sum {
        return None;
    }
    Some(Bytes::copy_from_slice(data))
}

/// A backend whose reads go through a [`DiskCache`] first.
#[derive(Debug)]
pub struct DiskCachedBackend {
    inner: Arc<dyn Backend>,
    cache: Arc<DiskCache>,
    /// Names the location in keys: a hash of its description.
    namespace: String,
}

impl DiskCachedBackend {
    pub fn new(inner: Arc<dyn Backend>, cache: Arc<DiskCache>, namespace: &str) -> Self {
        let namespace = format!(
            "{:016x}",
            xxhash_rust::xxh64::xxh64(namespace.as_bytes(), 0)
        );
        DiskCachedBackend {
            inner,
            cache,
            namespace,
        }
    }

    fn block_key(&self, path: &str, block: u64) -> String {
        format!("{}/{path}.{block}", self.namespace)
    }

    fn whole_key(&self, path: &str) -> String {
        format!("{}/{path}.all", self.namespace)
    }

    /// Reads `keys` from the cache (on the blocking pool).
    async fn read_blocks(&self, keys: Vec<String>) -> Result<Vec<Option<Bytes>>> {
        let cache = self.cache.clone();
        let counts = counts::current();
        blocking("read cache".into(), move || {
            let found: Vec<Option<Bytes>> = keys.iter().map(|k| cache.read(k)).collect();
            // The blocking pool runs outside the task's scope.
            if let Some(counts) = counts {
                let hits = found.iter().filter(|b| b.is_some()).count() as u64;
                counts.cache_hits.fetch_add(hits, Ordering::Relaxed);
                counts
                    .cache_misses
                    .fetch_add(found.len() as u64 - hits, Ordering::Relaxed);
            }
            Ok(found)
        })
        .await
    }

    /// Keeps fetched blocks before the read returns, so the next read of
    /// one (often the next granules) finds it. A failed write only loses
    /// the entry.
    async fn write_blocks(&self, blocks: Vec<(String, Bytes)>) {
        let cache = self.cache.clone();
        let _ = blocking("read cache".into(), move || {
            for (key, data) in blocks {
                cache.write(&key, &data);
            }
            Ok(())
        })
        .await;
    }
}

/// The blocks `range` touches.
fn blocks_of(range: &Range<u64>) -> Range<u64> {
    if range.start >= range.end {
        return 0..0;
    }
    range.start / BLOCK_BYTES..(range.end - 1) / BLOCK_BYTES + 1
}

#[async_trait]
impl Backend for DiskCachedBackend {
    fn describe(&self) -> &str {
        self.inner.describe()
    }

    async fn get(&self, path: &str) -> Result<Bytes> {
        let key = self.whole_key(path);
        if let Some(Some(data)) = self.read_blocks(vec![key.clone()]).await?.pop() {
            return Ok(data);
        }
        let data = self.inner.get(path).await?;
        self.write_blocks(vec![(key, data.clone())]).await;
        Ok(data)
    }

    async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        // Without the file's length the last block cannot be told apart.
        self.inner.get_range(path, range).await
    }

    async fn get_ranges(
        &self,
        path: &str,
        ranges: &[Range<u64>],
        file_len: u64,
    ) -> Result<Vec<Bytes>> {
        let mut wanted: Vec<u64> = ranges.iter().flat_map(blocks_of).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let keys: Vec<String> = wanted.iter().map(|&b| self.block_key(path, b)).collect();
        let found = self.read_blocks(keys.clone()).await?;
        let mut blocks: HashMap<u64, Bytes> = HashMap::new();
        let mut missing: Vec<Range<u64>> = Vec::new();
        for (&block, data) in wanted.iter().zip(found) {
            let want = block * BLOCK_BYTES..((block + 1) * BLOCK_BYTES).min(file_len);
            match data {
                Some(data) if data.len() as u64 == want.end - want.start => {
                    blocks.insert(block, data);
                }
                _ => match missing.last_mut() {
                    Some(last) if last.end == want.start => last.end = want.end,
                    _ => missing.push(want),
                },
            }
        }
        if !missing.is_empty() {
            let fetched = self.inner.get_ranges(path, &missing, file_len).await?;
            let mut written = Vec::new();
            for (range, data) in missing.iter().zip(fetched) {
                for block in blocks_of(range) {
                    let start = block * BLOCK_BYTES;
                    let end = ((block + 1) * BLOCK_BYTES).min(file_len);
                    let piece =
                        data.slice((start - range.start) as usize..(end - range.start) as usize);
                    written.push((self.block_key(path, block), piece.clone()));
                    blocks.insert(block, piece);
                }
            }
            self.write_blocks(written).await;
        }
        ranges
            .iter()
            .map(|range| assemble(&blocks, range))
            .collect::<Option<Vec<Bytes>>>()
            .ok_or_else(|| Error::store(path.to_string(), "read cache lost a block"))
    }

    fn prefetch(&self, path: &str, ranges: &[Range<u64>], file_len: u64) {
        self.inner.prefetch(path, ranges, file_len);
    }

    async fn size(&self, path: &str) -> Result<Option<u64>> {
        self.inner.size(path).await
    }

    async fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        self.cache.forget(&format!("{}/{path}.", self.namespace));
        self.inner.put(path, bytes).await
    }

    async fn create(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        self.cache.forget(&format!("{}/{path}.", self.namespace));
        self.inner.create(path).await
    }

    async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<bool> {
        self.inner.put_if_absent(path, bytes).await
    }

    async fn sync(&self, paths: &[String]) -> Result<()> {
        self.inner.sync(paths).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.cache.forget(&format!("{}/{path}.", self.namespace));
        self.inner.delete(path).await
    }

    async fn list(&self, dir: &str) -> Result<Vec<FileInfo>> {
        self.inner.list(dir).await
    }

    async fn list_dir(&self, dir: &str) -> Result<DirListing> {
        self.inner.list_dir(dir).await
    }

    async fn remove_dir(&self, dir: &str) -> Result<()> {
        self.inner.remove_dir(dir).await
    }

    fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }
}

/// `range` from the blocks it touches (all present).
fn assemble(blocks: &HashMap<u64, Bytes>, range: &Range<u64>) -> Option<Bytes> {
    let touched = blocks_of(range);
    if touched.end - touched.start == 1 {
        let block = blocks.get(&touched.start)?;
        let start = (range.start - touched.start * BLOCK_BYTES) as usize;
        let end = (range.end - touched.start * BLOCK_BYTES) as usize;
        return block.get(start..end).map(|_| block.slice(start..end));
    }
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    for block in touched {
        let data = blocks.get(&block)?;
        let block_start = block * BLOCK_BYTES;
        let start = range.start.max(block_start) - block_start;
        let end = (range.end.min(block_start + data.len() as u64)) - block_start;
        out.extend_from_slice(data.get(start as usize..end as usize)?);
    }
    (out.len() as u64 == range.end - range.start).then(|| Bytes::from(out))
}
