//! One byte-bounded cache, and the read-through storage decorator built on it.
//!
//! [`Cache`] holds immutable things read from files (decoded part indexes,
//! deletion masks, component directories and blocks; raw byte ranges for
//! [`CachedBackend`]), each weighed in bytes, and evicts the least
//! valuable when the total passes its capacity (quick_cache's scan-resistant
//! policy, so one large scan does not flush what every query needs). Keys
//! name the file a value came from ([`super::Storage::cache_key`]); files
//! never change under a name, so an entry never goes stale.
//!
//! A process has one [`Cache::global`], sized by the session setting
//! `diagon.cache_bytes`; every [`super::Storage`] uses it unless given a
//! cache of its own ([`super::Storage::with_cache`]).

use std::any::Any;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, DirListing, FileInfo, FileWriter};
use crate::error::Result;

/// The global cache's capacity until a session sets `diagon.cache_bytes`.
pub const DEFAULT_CACHE_BYTES: u64 = 512 << 20;

/// Bytes charged for an entry beyond its value (key, bookkeeping).
const ENTRY_OVERHEAD: u64 = 128;

#[derive(Clone)]
struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    weight: u64,
}

#[derive(Clone)]
struct ByWeight;

impl quick_cache::Weighter<String, Entry> for ByWeight {
    fn weight(&self, key: &String, entry: &Entry) -> u64 {
        entry.weight + key.len() as u64 + ENTRY_OVERHEAD
    }
}

type Store = quick_cache::sync::Cache<String, Entry, ByWeight>;

/// Hits and misses of the lookups one piece of work made, for its metrics.
#[derive(Debug, Default)]
pub struct CacheCounts {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl CacheCounts {
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

tokio::task_local! {
    static COUNTS: Arc<CacheCounts>;
}

/// Runs `work`, counting the cache lookups it makes (in this task, however
/// deep) into `counts`.
pub async fn counted<F: std::future::Future>(counts: Arc<CacheCounts>, work: F) -> F::Output {
    COUNTS.scope(counts, work).await
}

/// A concurrent cache of immutable values, bounded by their total weight
/// in bytes.
pub struct Cache {
    store: Store,
    capacity: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("capacity", &self.capacity())
            .field("weight", &self.weight())
            .finish()
    }
}

fn new_store(capacity: u64) -> Store {
    // The item estimate sizes the hash tables up front, and the number of
    // shards (each holds at most its share of the capacity).
    let items = (capacity / 16_384).clamp(16, 1 << 20) as usize;
    Store::with_weighter(items, capacity.max(1), ByWeight)
}

impl Cache {
    pub fn new(capacity_bytes: u64) -> Self {
        Cache {
            store: new_store(capacity_bytes),
            capacity: AtomicU64::new(capacity_bytes),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The process-wide cache every table shares.
    pub fn global() -> &'static Arc<Cache> {
        static GLOBAL: OnceLock<Arc<Cache>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(Cache::new(DEFAULT_CACHE_BYTES)))
    }

    pub fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Changes the bound, evicting what no longer fits.
    pub fn set_capacity(&self, capacity_bytes: u64) {
        if self.capacity.swap(capacity_bytes, Ordering::Relaxed) != capacity_bytes {
            self.store.set_capacity(capacity_bytes.max(1));
        }
    }

    fn store(&self) -> &Store {
        &self.store
    }

    /// The value cached under `key`, if it is there and a `T`.
    pub fn get<T: Any + Send + Sync>(&self, key: &str) -> Option<Arc<T>> {
        let found = self
            .store()
            .get(key)
            .and_then(|e| e.value.downcast::<T>().ok());
        let hit = found.is_some();
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        let _ = COUNTS.try_with(|c| {
            let counter = if hit { &c.hits } else { &c.misses };
            counter.fetch_add(1, Ordering::Relaxed);
        });
        found
    }

    /// Caches `value` under `key`, charged `weight` bytes. A value larger
    /// than the cache's share for it is not kept.
    pub fn insert<T: Any + Send + Sync>(&self, key: String, value: Arc<T>, weight: u64) {
        self.store().insert(key, Entry { value, weight });
    }

    /// Forgets every entry whose key starts with `prefix`.
    pub fn remove_prefix(&self, prefix: &str) {
        self.remove_prefixes(&[prefix.to_string()]);
    }

    /// Forgets every entry whose key starts with any of `prefixes`, in one
    /// pass over the cache.
    pub fn remove_prefixes(&self, prefixes: &[String]) {
        if !prefixes.is_empty() {
            self.store()
                .retain(|key, _| !prefixes.iter().any(|p| key.starts_with(p.as_str())));
        }
    }

    /// Bytes held now.
    pub fn weight(&self) -> u64 {
        self.store().weight()
    }

    /// Lookups answered and not answered since the cache was made.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// A backend whose range reads go through a [`Cache`] first: for stores
/// where a read costs a round trip (object storage). Ranges are read from
/// immutable files only (columns, components); whole-file reads, which
/// include names that are rewritten (`_log/_last_checkpoint`, possibly by
/// another process), always go to the store.
#[derive(Debug)]
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    cache: Arc<Cache>,
    /// Keys are made unique per wrapped backend.
    id: String,
}

impl CachedBackend {
    pub fn new(inner: Arc<dyn Backend>, cache: Arc<Cache>) -> Self {
        let id = super::unique_id().to_string();
        CachedBackend { inner, cache, id }
    }

    fn key(&self, path: &str, range: &Range<u64>) -> String {
        format!("bytes:{}/{path}#{}-{}", self.id, range.start, range.end)
    }

    fn forget(&self, path: &str) {
        self.cache
            .remove_prefix(&format!("bytes:{}/{path}#", self.id));
    }
}

#[async_trait]
impl Backend for CachedBackend {
    fn describe(&self) -> &str {
        self.inner.describe()
    }

    async fn get(&self, path: &str) -> Result<Bytes> {
        self.inner.get(path).await
    }

    async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        let key = self.key(path, &range);
        if let Some(bytes) = self.cache.get::<Bytes>(&key) {
            return Ok((*bytes).clone());
        }
        let bytes = self.inner.get_range(path, range).await?;
        self.cache
            .insert(key, Arc::new(bytes.clone()), bytes.len() as u64);
        Ok(bytes)
    }

    fn prefetch(&self, path: &str, ranges: &[Range<u64>], file_len: u64) {
        self.inner.prefetch(path, ranges, file_len);
    }

    async fn size(&self, path: &str) -> Result<Option<u64>> {
        self.inner.size(path).await
    }

    async fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        // Before and after: a read racing the write may have cached old bytes.
        self.forget(path);
        let written = self.inner.put(path, bytes).await;
        self.forget(path);
        written
    }

    async fn create(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        self.inner.create(path).await
    }

    async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<bool> {
        self.inner.put_if_absent(path, bytes).await
    }

    async fn sync(&self, paths: &[String]) -> Result<()> {
        self.inner.sync(paths).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let deleted = self.inner.delete(path).await;
        self.forget(path);
        deleted
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

    fn local_root(&self) -> Option<&std::path::Path> {
        self.inner.local_root()
    }
}
