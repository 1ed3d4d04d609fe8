//! Fault injection: a decorator that fails writes as a process that dies
//! mid-commit would, fails reads as an unreachable store would, and counts
//! what passes through it (for tests of what a statement reads).

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, DirListing, FileInfo, FileWriter};
use crate::error::{Error, Result};

/// Where an injected write failure strikes relative to the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// The write never reaches the store.
    Before = 0,
    /// The write lands but the writer is told it failed.
    After = 1,
    /// Every create-if-absent write lands but reports that the file
    /// already existed, as a retried conditional PUT whose first reply was
    /// lost does. Nothing else fails.
    LostReply = 2,
}

/// What to break, shared by the test and the decorator.
#[derive(Debug)]
pub struct Faults {
    /// Write operations begun (a whole-file write, a create-if-absent, the
    /// finish of a streamed file).
    writes: AtomicUsize,
    /// The write that fails, and every write after it.
    fail_at: AtomicUsize,
    strike: AtomicU8,
    dead: AtomicBool,
    fail_reads: AtomicBool,
    reads: AtomicU64,
    bytes_read: AtomicU64,
    lists: AtomicU64,
}

impl Faults {
    /// Faults that break nothing (until told to), counting everything.
    pub fn none() -> Arc<Faults> {
        Self::failing_at(usize::MAX, Strike::Before)
    }

    /// Fails write number `n` (from 0) and every write after it.
    pub fn failing_at(n: usize, strike: Strike) -> Arc<Faults> {
        Arc::new(Faults {
            writes: AtomicUsize::new(0),
            fail_at: AtomicUsize::new(n),
            strike: AtomicU8::new(strike as u8),
            dead: AtomicBool::new(false),
            fail_reads: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            lists: AtomicU64::new(0),
        })
    }

    /// Write operations begun so far.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// Read requests served so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// Bytes returned by reads so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::SeqCst)
    }

    /// Directory listings made so far.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }

    /// Zeroes the read and listing counters.
    pub fn reset_reads(&self) {
        self.reads.store(0, Ordering::SeqCst);
        self.bytes_read.store(0, Ordering::SeqCst);
        self.lists.store(0, Ordering::SeqCst);
    }

    /// Makes every read fail (or succeed again).
    pub fn set_fail_reads(&self, fail: bool) {
        self.fail_reads.store(fail, Ordering::SeqCst);
    }

    /// Fails write number `n` (counted from the first write ever) and every
    /// write after it, from now on.
    pub fn fail_from(&self, n: usize, strike: Strike) {
        self.strike.store(strike as u8, Ordering::SeqCst);
        self.fail_at.store(n, Ordering::SeqCst);
    }

    /// Lets writes pass again, as a store does once a transient failure
    /// (a full disk freed, a network back) is over.
    pub fn revive(&self) {
        self.fail_at.store(usize::MAX, Ordering::SeqCst);
        self.dead.store(false, Ordering::SeqCst);
    }

    /// Whether the simulated process has died (a write failed).
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    fn strike(&self) -> Strike {
        match self.strike.load(Ordering::SeqCst) {
            1 => Strike::After,
            2 => Strike::LostReply,
            _ => Strike::Before,
        }
    }
}

fn injected(path: &str) -> Error {
    Error::store(path.to_string(), "injected I/O failure")
}

/// A backend that fails as its [`Faults`] say.
#[derive(Debug)]
pub struct FaultInjection {
    inner: Arc<dyn Backend>,
    faults: Arc<Faults>,
}

/// What a write should do.
enum Verdict {
    Pass,
    /// Fail; with `true`, after letting the write land.
    Fail(bool),
}

impl FaultInjection {
    pub fn new(inner: Arc<dyn Backend>, faults: Arc<Faults>) -> Self {
        FaultInjection { inner, faults }
    }

    fn verdict(&self) -> Verdict {
        let f = &self.faults;
        if f.strike() == Strike::LostReply {
            f.writes.fetch_add(1, Ordering::SeqCst);
            return Verdict::Pass;
        }
        if f.is_dead() {
            return Verdict::Fail(false);
        }
        let n = f.writes.fetch_add(1, Ordering::SeqCst);
        if n != f.fail_at.load(Ordering::SeqCst) {
            return Verdict::Pass;
        }
        f.dead.store(true, Ordering::SeqCst);
        Verdict::Fail(f.strike() == Strike::After)
    }

    /// Runs `write` as the faults say: as it is, not at all (failing), or
    /// failing after it lands.
    async fn write<T>(&self, path: &str, write: impl Future<Output = Result<T>>) -> Result<T> {
        match self.verdict() {
            Verdict::Pass => write.await,
            Verdict::Fail(true) => {
                write.await?;
                Err(injected(path))
            }
            Verdict::Fail(false) => Err(injected(path)),
        }
    }

    fn count_read(&self, bytes: Result<Bytes>) -> Result<Bytes> {
        let bytes = bytes?;
        self.faults.reads.fetch_add(1, Ordering::SeqCst);
        self.faults
            .bytes_read
            .fetch_add(bytes.len() as u64, Ordering::SeqCst);
        Ok(bytes)
    }

    fn check_reads(&self, path: &str) -> Result<()> {
        match self.faults.fail_reads.load(Ordering::SeqCst) {
            true => Err(injected(path)),
            false => Ok(()),
        }
    }

    fn check_alive(&self, path: &str) -> Result<()> {
        match self.faults.is_dead() {
            true => Err(injected(path)),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl Backend for FaultInjection {
    fn describe(&self) -> &str {
        self.inner.describe()
    }

    async fn get(&self, path: &str) -> Result<Bytes> {
        self.check_reads(path)?;
        self.count_read(self.inner.get(path).await)
    }

    async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        self.check_reads(path)?;
        self.count_read(self.inner.get_range(path, range).await)
    }

    async fn get_ranges(
        &self,
        path: &str,
        ranges: &[Range<u64>],
        file_len: u64,
    ) -> Result<Vec<Bytes>> {
        self.check_reads(path)?;
        let parts = self.inner.get_ranges(path, ranges, file_len).await?;
        for bytes in &parts {
            self.count_read(Ok(bytes.clone()))?;
        }
        Ok(parts)
    }

    fn prefetch(&self, path: &str, ranges: &[Range<u64>], file_len: u64) {
        self.inner.prefetch(path, ranges, file_len);
    }

    async fn size(&self, path: &str) -> Result<Option<u64>> {
        self.check_reads(path)?;
        self.inner.size(path).await
    }

    async fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        self.write(path, self.inner.put(path, bytes)).await
    }

    async fn create(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        self.check_alive(path)?;
        let inner = self.inner.create(path).await?;
        Ok(Box::new(FaultyWriter {
            inner,
            backend: FaultInjection::new(self.inner.clone(), self.faults.clone()),
            path: path.to_string(),
        }))
    }

    async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<bool> {
        if self.faults.strike() == Strike::LostReply {
            self.faults.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.put_if_absent(path, bytes).await?;
            return Ok(false);
        }
        self.write(path, self.inner.put_if_absent(path, bytes))
            .await
    }

    async fn sync(&self, paths: &[String]) -> Result<()> {
        self.check_alive(paths.first().map_or("", String::as_str))?;
        self.inner.sync(paths).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.check_alive(path)?;
        self.inner.delete(path).await
    }

    async fn list(&self, dir: &str) -> Result<Vec<FileInfo>> {
        self.check_reads(dir)?;
        self.faults.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(dir).await
    }

    async fn list_dir(&self, dir: &str) -> Result<DirListing> {
        self.check_reads(dir)?;
        self.faults.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_dir(dir).await
    }

    async fn remove_dir(&self, dir: &str) -> Result<()> {
        self.check_alive(dir)?;
        self.inner.remove_dir(dir).await
    }

    fn local_root(&self) -> Option<&std::path::Path> {
        self.inner.local_root()
    }
}

/// A streamed file whose completion is one write to the faults.
struct FaultyWriter {
    inner: Box<dyn FileWriter>,
    backend: FaultInjection,
    path: String,
}

#[async_trait]
impl FileWriter for FaultyWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.backend.check_alive(&self.path)?;
        self.inner.write(bytes).await
    }

    async fn finish(self: Box<Self>) -> Result<u64> {
        let FaultyWriter {
            inner,
            backend,
            path,
        } = *self;
        backend.write(&path, inner.finish()).await
    }
}
