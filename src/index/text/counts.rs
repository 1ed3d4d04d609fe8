//! What text searches did, for EXPLAIN ANALYZE: terms looked up in part
//! dictionaries, postings blocks decoded, postings blocks passed over
//! without decoding (by skip entries or block bounds), rows scored.
//!
//! The counts go to the [`SearchCounters`] of the task running the search,
//! set with [`counted`], so the search code counts where the work
//! happens without carrying a counter through every call; work outside
//! such a scope is not counted. A
//! counted event costs a task-local lookup: they are per term or per
//! block of 128 rows, never per row.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts of one scan's (or one pruner's) text searches.
#[derive(Debug, Default)]
pub struct SearchCounters {
    counts: [AtomicUsize; 4],
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    TermsLookedUp = 0,
    BlocksDecoded = 1,
    BlocksSkipped = 2,
    RowsScored = 3,
}

impl Counter {
    pub const ALL: [Counter; 4] = [
        Counter::TermsLookedUp,
        Counter::BlocksDecoded,
        Counter::BlocksSkipped,
        Counter::RowsScored,
    ];

    /// The name EXPLAIN ANALYZE shows.
    pub fn name(self) -> &'static str {
        match self {
            Counter::TermsLookedUp => "terms_looked_up",
            Counter::BlocksDecoded => "postings_blocks_decoded",
            Counter::BlocksSkipped => "postings_blocks_skipped",
            Counter::RowsScored => "rows_scored",
        }
    }
}

impl SearchCounters {
    pub fn get(&self, counter: Counter) -> usize {
        self.counts[counter as usize].load(Ordering::Relaxed)
    }

    /// Each count, zeroed as it is taken (what a scan moves into its
    /// metrics after each step).
    pub fn take(&self) -> [(Counter, usize); 4] {
        Counter::ALL.map(|c| (c, self.counts[c as usize].swap(0, Ordering::Relaxed)))
    }
}

tokio::task_local! {
    static COUNTS: Arc<SearchCounters>;
}

/// Runs `f`, counting its text searches into `counts`.
pub async fn counted<F: Future>(counts: &Arc<SearchCounters>, f: F) -> F::Output {
    COUNTS.scope(counts.clone(), f).await
}

/// Adds `n` to `counter` of the running search, if it is counted.
#[inline]
pub fn add(counter: Counter, n: usize) {
    let _ = COUNTS.try_with(|counts| {
        counts.counts[counter as usize].fetch_add(n, Ordering::Relaxed);
    });
}
