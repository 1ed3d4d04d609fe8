//! Read-ahead for stores where a request costs a round trip: readers
//! announce the ranges they will read next ([`Backend::prefetch`]), this
//! decorator starts fetching them at once (nearby ranges merged, several
//! requests in flight, by the backend below), and a later read of a range
//! inside an announced one takes its bytes from there. A scan announces a
//! window of its coming reads, so the store's latency overlaps decoding.
//!
//! What is held, fetched or in flight, is bounded by a byte budget: an
//! announcement that does not fit is dropped (its reads fetch for
//! themselves), and announced bytes nobody read (a query stopped by its
//! LIMIT, or cancelled) are dropped after [`UNREAD_TTL`]. A failed fetch
//! is never reported by itself: the read then fetches on its own and
//! reports its own error.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::{Backend, DirListing, FileInfo, FileWriter, counts};
use crate::error::Result;

/// Announced bytes nobody has read are dropped after this long.
pub const UNREAD_TTL: Duration = Duration::from_secs(30);

type Fetched = Shared<BoxFuture<'static, Option<Bytes>>>;

/// An announced range being fetched or fetched.
struct Announced {
    path: String,
    range: Range<u64>,
    bytes: Fetched,
    /// Bytes of it read so far: reads of one announced range are disjoint,
    /// so it is done once they add up to its length.
    read: u64,
    /// Bytes of the budget it holds.
    charge: u64,
    at: Instant,
}

impl Announced {
    fn len(&self) -> u64 {
        self.range.end - self.range.start
    }
}

/// Bytes fetching `ranges` costs once ranges up to 1 MiB apart are merged.
fn merged_bytes(ranges: &[Range<u64>]) -> u64 {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable_by_key(|r| r.start);
    let mut total = 0;
    let mut current: Option<Range<u64>> = None;
    for r in sorted {
        current = match current {
            Some(c) if r.start <= c.end + object_store::OBJECT_STORE_COALESCE_DEFAULT => {
                Some(c.start..c.end.max(r.end))
            }
            Some(c) => {
                total += c.end - c.start;
                Some(r)
            }
            None => Some(r),
        };
    }
    total + current.map_or(0, |c| c.end - c.start)
}

#[derive(Default)]
struct Pending {
    announced: Vec<Announced>,
    bytes: u64,
}

impl Pending {
    fn drop_stale(&mut self, now: Instant) {
        let mut freed = 0;
        self.announced.retain(|a| {
            let keep = now.duration_since(a.at) < UNREAD_TTL;
            if !keep {
                freed += a.charge;
            }
            keep
        });
        self.bytes -= freed;
    }

    /// The fetch covering `range` of `path`, counting the read.
    fn take(&mut self, path: &str, range: &Range<u64>) -> Option<(Fetched, u64)> {
        let i = self.announced.iter().position(|a| {
            a.path == path && a.range.start <= range.start && range.end <= a.range.end
        })?;
        let a = &mut self.announced[i];
        a.read += range.end - range.start;
        let found = (a.bytes.clone(), a.range.start);
        if a.read >= a.len() {
            self.bytes -= a.charge;
            self.announced.swap_remove(i);
        }
        Some(found)
    }
}

/// A backend that fetches announced ranges ahead of their reads.
pub struct ReadAhead {
    inner: Arc<dyn Backend>,
    budget: u64,
    pending: Mutex<Pending>,
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("inner", &self.inner)
            .field("budget", &self.budget)
            .finish()
    }
}

impl ReadAhead {
    pub fn new(inner: Arc<dyn Backend>, budget: u64) -> Self {
        ReadAhead {
            inner,
            budget,
            pending: Mutex::new(Pending::default()),
        }
    }

    /// Bytes announced and not read yet.
    pub fn pending_bytes(&self) -> u64 {
        crate::sync::lock(&self.pending).bytes
    }
}

#[async_trait]
impl Backend for ReadAhead {
    fn describe(&self) -> &str {
        self.inner.describe()
    }

    async fn get(&self, path: &str) -> Result<Bytes> {
        self.inner.get(path).await
    }

    async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        // Storage reads ranges through `get_ranges`, which knows the length.
        self.inner.get_range(path, range).await
    }

    async fn get_ranges(
        &self,
        path: &str,
        ranges: &[Range<u64>],
        file_len: u64,
    ) -> Result<Vec<Bytes>> {
        let taken: Vec<Option<(Fetched, u64)>> = {
            let mut pending = crate::sync::lock(&self.pending);
            pending.drop_stale(Instant::now());
            ranges.iter().map(|r| pending.take(path, r)).collect()
        };
        // What no announcement covers is fetched while the announced
        // bytes arrive: one round trip, not two.
        let unannounced: Vec<Range<u64>> = ranges
            .iter()
            .zip(&taken)
            .filter(|(_, t)| t.is_none())
            .map(|(r, _)| r.clone())
            .collect();
        let was_announced: Vec<bool> = taken.iter().map(Option::is_some).collect();
        let announced =
            futures::future::join_all(ranges.iter().zip(taken).map(|(range, taken)| async move {
                let (fetched, start) = taken?;
                let bytes = fetched.await?;
                Some(bytes.slice((range.start - start) as usize..(range.end - start) as usize))
            }));
        let direct = async {
            match unannounced.is_empty() {
                true => Ok(Vec::new()),
                false => self.inner.get_ranges(path, &unannounced, file_len).await,
            }
        };
        let (announced, direct) = futures::join!(announced, direct);
        let mut direct = direct?.into_iter();
        // Announced ranges whose fetch failed are read again here, and
        // report their own errors.
        let mut out = Vec::with_capacity(ranges.len());
        for ((range, bytes), announced) in ranges.iter().zip(announced).zip(was_announced) {
            let bytes = match (announced, bytes) {
                (true, Some(bytes)) => bytes,
                (true, None) => self.inner.get_range(path, range.clone()).await?,
                (false, _) => direct.next().ok_or_else(|| {
                    crate::error::Error::store(path.to_string(), "a read returned too few ranges")
                })?,
            };
            out.push(bytes);
        }
        Ok(out)
    }

    fn prefetch(&self, path: &str, ranges: &[Range<u64>], file_len: u64) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let now = Instant::now();
        let mut pending = crate::sync::lock(&self.pending);
        pending.drop_stale(now);
        // Ranges already announced are not fetched twice.
        let new: Vec<Range<u64>> = ranges
            .iter()
            .filter(|r| r.start < r.end)
            .filter(|r| {
                !pending
                    .announced
                    .iter()
                    .any(|a| a.path == path && a.range.start <= r.start && r.end <= a.range.end)
            })
            .cloned()
            .collect();
        // Charged as fetched: the store merges ranges up to 1 MiB apart,
        // and the gaps come along.
        let total = merged_bytes(&new);
        if new.is_empty() || pending.bytes + total > self.budget {
            return;
        }
        let (inner, owned_path, wanted) = (self.inner.clone(), path.to_string(), new.clone());
        let counts = counts::current();
        let task = handle.spawn(counts::scoped(counts, async move {
            inner.get_ranges(&owned_path, &wanted, file_len).await
        }));
        let all: Shared<BoxFuture<'static, Option<Arc<Vec<Bytes>>>>> = async move {
            match task.await {
                Ok(Ok(parts)) => Some(Arc::new(parts)),
                _ => None,
            }
        }
        .boxed()
        .shared();
        // Each range is charged its length, the first also the gaps.
        let gaps = total - new.iter().map(|r| r.end - r.start).sum::<u64>();
        for (i, range) in new.into_iter().enumerate() {
            let all = all.clone();
            let bytes: Fetched = async move { all.await.and_then(|parts| parts.get(i).cloned()) }
                .boxed()
                .shared();
            pending.announced.push(Announced {
                path: path.to_string(),
                charge: range.end - range.start + if i == 0 { gaps } else { 0 },
                range,
                bytes,
                read: 0,
                at: now,
            });
        }
        pending.bytes += total;
    }

    async fn size(&self, path: &str) -> Result<Option<u64>> {
        self.inner.size(path).await
    }

    async fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        self.inner.put(path, bytes).await
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

    fn local_root(&self) -> Option<&std::path::Path> {
        self.inner.local_root()
    }
}
