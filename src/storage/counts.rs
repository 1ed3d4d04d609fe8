//! What reads from object storage cost one piece of work (a scan's
//! partition, a move): requests sent, bytes fetched, and the local read
//! cache's hits and misses, counted through a task-local scope as
//! [`super::cache::counted`] does for decoded objects. Work a scope
//! spawns (read-ahead) carries the scope along ([`current`], [`scoped`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of object-store reads, for metrics.
#[derive(Debug, Default)]
pub struct StoreCounts {
    /// GET requests sent to the store (after coalescing).
    pub requests: AtomicU64,
    /// Bytes those requests returned.
    pub bytes_fetched: AtomicU64,
    /// Blocks the local read cache served.
    pub cache_hits: AtomicU64,
    /// Blocks it did not hold or held damaged (fetched, then kept).
    pub cache_misses: AtomicU64,
}

impl StoreCounts {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn bytes_fetched(&self) -> u64 {
        self.bytes_fetched.load(Ordering::Relaxed)
    }

    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    pub fn cache_misses(&self) -> u64 {
        self.cache_misses.load(Ordering::Relaxed)
    }
}

tokio::task_local! {
    static COUNTS: Arc<StoreCounts>;
}

/// Runs `work`, counting its object-store reads into `counts`.
pub async fn counted<F: Future>(counts: Arc<StoreCounts>, work: F) -> F::Output {
    COUNTS.scope(counts, work).await
}

/// The counters of the running scope, if any.
pub fn current() -> Option<Arc<StoreCounts>> {
    COUNTS.try_with(|c| c.clone()).ok()
}

/// `work` under `counts` when there are any (for work spawned by a scope).
pub async fn scoped<F: Future>(counts: Option<Arc<StoreCounts>>, work: F) -> F::Output {
    match counts {
        Some(counts) => COUNTS.scope(counts, work).await,
        None => work.await,
    }
}

/// Adds one request that returned `bytes` to the running scope's counters.
pub(crate) fn request(bytes: u64) {
    let _ = COUNTS.try_with(|c| {
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.bytes_fetched.fetch_add(bytes, Ordering::Relaxed);
    });
}
