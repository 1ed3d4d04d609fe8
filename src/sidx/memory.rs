//! Memory parts: each write becomes one immutable, sorted batch that
//! queries read until a flush persists it; and the bound on the bytes they
//! hold.

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::Int64Type;

use crate::error::{Error, Result};
use crate::table::Backpressure;

/// The rows of one write, sorted by (series_id, key, _seq): each series'
/// rows are contiguous and sorted by (key, _seq).
#[derive(Debug)]
pub struct MemPart {
    /// Unique in the process, increasing in write order.
    pub id: u64,
    /// Columns `series_id`, `key`, `data`, `_seq`, then the tags of the
    /// write (a memory part may lack tags added after it was written).
    pub batch: RecordBatch,
    /// Memory the batch holds (what the bound counts).
    pub bytes: usize,
    pub min_key: i64,
    pub max_key: i64,
}

impl MemPart {
    /// Sorts `batch` (with its `_seq` column) into a memory part.
    pub fn new(id: u64, batch: RecordBatch) -> Result<MemPart> {
        let column = |name: &str| batch.column_by_name(name).expect("a sidx batch").clone();
        let sort: Vec<SortColumn> = ["series_id", "key", "_seq"]
            .iter()
            .map(|name| SortColumn {
                values: column(name),
                options: None,
            })
            .collect();
        let order = lexsort_to_indices(&sort, None)?;
        let batch = take_record_batch(&batch, &order)?;
        let keys = batch
            .column_by_name("key")
            .expect("a sidx batch")
            .as_primitive::<Int64Type>()
            .clone();
        Ok(MemPart {
            id,
            bytes: batch.get_array_memory_size(),
            min_key: arrow::compute::min(&keys).unwrap_or(0),
            max_key: arrow::compute::max(&keys).unwrap_or(0),
            batch,
        })
    }

    pub fn rows(&self) -> usize {
        self.batch.num_rows()
    }
}

/// The bytes memory parts may hold. A write reserves its part's bytes
/// before it becomes visible; a flush releases them.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    mode: Backpressure,
    used: std::sync::Mutex<usize>,
    freed: tokio::sync::Notify,
    /// Writes that waited for a flush (for stats).
    pub waits: std::sync::atomic::AtomicU64,
    /// Set when the index closes (every waiting write gets in, to be
    /// flushed by the close) or fails (every waiting write gets an error).
    gate: std::sync::Mutex<Gate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Bounded,
    Open,
    Failed,
}

impl MemoryBudget {
    pub fn new(limit: usize, mode: Backpressure) -> Self {
        MemoryBudget {
            limit,
            mode,
            used: std::sync::Mutex::new(0),
            freed: tokio::sync::Notify::new(),
            waits: Default::default(),
            gate: std::sync::Mutex::new(Gate::Bounded),
        }
    }

    pub fn used(&self) -> usize {
        *crate::sync::lock(&self.used)
    }

    /// Reserves `bytes`, waiting for a flush or failing (as configured)
    /// while the bound would be passed. A write larger than the bound on
    /// its own is let in when nothing else is held, or it could never be.
    pub async fn reserve(&self, bytes: usize) -> Result<Reservation<'_>> {
        let mut waited = false;
        loop {
            let notified = self.freed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let gate = *crate::sync::lock(&self.gate);
                if gate == Gate::Failed {
                    return Err(Error::Table("the index failed; reopen it".into()));
                }
                let mut used = crate::sync::lock(&self.used);
                if *used == 0 || *used + bytes <= self.limit || gate == Gate::Open {
                    *used += bytes;
                    return Ok(Reservation {
                        budget: self,
                        bytes,
                    });
                }
                if self.mode == Backpressure::Error {
                    return Err(Error::Overloaded(format!(
                        "memory parts hold {} bytes and this write needs {bytes} more, over the \
                         limit of {} ('sidx.memory_limit'); flush, or wait with \
                         'sidx.backpressure' 'wait'",
                        *used, self.limit
                    )));
                }
            }
            if !waited {
                waited = true;
                self.waits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            notified.await;
        }
    }

    /// Reserves `bytes` only if that stays within the bound now.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation<'_>> {
        let gate = *crate::sync::lock(&self.gate);
        if gate == Gate::Failed {
            return None;
        }
        let mut used = crate::sync::lock(&self.used);
        if *used == 0 || *used + bytes <= self.limit || gate == Gate::Open {
            *used += bytes;
            return Some(Reservation {
                budget: self,
                bytes,
            });
        }
        None
    }

    /// Lets every write in past the bound (the index is closing and will
    /// flush them).
    pub fn open_gate(&self) {
        *crate::sync::lock(&self.gate) = Gate::Open;
        self.freed.notify_waiters();
    }

    /// Back to bounded (a close that failed), unless the index failed.
    pub fn close_gate(&self) {
        let mut gate = crate::sync::lock(&self.gate);
        if *gate == Gate::Open {
            *gate = Gate::Bounded;
        }
    }

    /// Fails every waiting and later write.
    pub fn fail(&self) {
        *crate::sync::lock(&self.gate) = Gate::Failed;
        self.freed.notify_waiters();
    }

    /// Gives back bytes a flush persisted.
    pub fn release(&self, bytes: usize) {
        let mut used = crate::sync::lock(&self.used);
        *used = used.saturating_sub(bytes);
        drop(used);
        self.freed.notify_waiters();
    }
}

/// Bytes reserved for a write not yet visible: given back if the write
/// fails before its memory part is introduced.
pub struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: usize,
}

impl Reservation<'_> {
    /// The memory part now holds the bytes; a flush releases them.
    pub fn commit(self) {
        std::mem::forget(self);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}
