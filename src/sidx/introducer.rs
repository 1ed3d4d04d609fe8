//! The one place a secondary index's snapshot changes.
//!
//! A snapshot is what a query reads: a committed version of the table (its
//! disk parts, pinned so their files outlive the query) and the memory
//! parts written since. Writes introduce memory parts; flushes introduce a
//! table version holding the rows of memory parts they persisted together
//! with those parts' removal; merges introduce a version with parts
//! replaced. Each introduction makes a new immutable snapshot with the
//! next epoch; readers hold the one they started with (reference-counted)
//! until they finish.
//!
//! Invariant: every row is in exactly one of the snapshot's disk version
//! and its memory parts. A flush keeps it by committing and introducing
//! under [`Introducer::disk`], the lock every introduction of a disk
//! version takes, so no other introduction can show the flushed rows'
//! version while their memory parts are still in the snapshot.

use std::sync::{Arc, RwLock};

use super::memory::MemPart;
use crate::table::{Snapshot, SnapshotPin};

/// What a query reads.
#[derive(Debug)]
pub struct SidxSnapshot {
    /// Increases with every introduction.
    pub epoch: u64,
    pub disk: Arc<Snapshot>,
    /// Keeps the disk parts' files while the snapshot lives.
    _pin: Arc<SnapshotPin>,
    /// Memory parts, oldest first.
    pub memory: Arc<Vec<Arc<MemPart>>>,
}

#[derive(Debug)]
pub struct Introducer {
    current: RwLock<Arc<SidxSnapshot>>,
    /// Held by whoever introduces a disk version (see the module's
    /// invariant). Lock order: `Sidx`'s flush or merge lock, then its
    /// schema lock, then this, then `current` (never held across an await).
    pub disk: tokio::sync::Mutex<()>,
}

impl Introducer {
    pub fn new(disk: Arc<Snapshot>, pin: SnapshotPin) -> Self {
        Introducer {
            current: RwLock::new(Arc::new(SidxSnapshot {
                epoch: 0,
                disk,
                _pin: Arc::new(pin),
                memory: Arc::new(Vec::new()),
            })),
            disk: tokio::sync::Mutex::new(()),
        }
    }

    /// The snapshot to read.
    pub fn current(&self) -> Arc<SidxSnapshot> {
        crate::sync::read(&self.current).clone()
    }

    /// Adds a memory part: visible to every query started after this.
    pub fn introduce_memory(&self, part: Arc<MemPart>) {
        let mut current = crate::sync::write(&self.current);
        let mut memory = current.memory.as_ref().clone();
        memory.push(part);
        *current = Arc::new(SidxSnapshot {
            epoch: current.epoch + 1,
            disk: current.disk.clone(),
            _pin: current._pin.clone(),
            memory: Arc::new(memory),
        });
    }

    /// Installs disk version `disk` (unless a newer one is in place) and
    /// removes the memory parts `flushed` whose rows it holds. The caller
    /// holds [`Self::disk`].
    pub fn introduce_disk(&self, disk: Arc<Snapshot>, pin: SnapshotPin, flushed: &[u64]) {
        let mut current = crate::sync::write(&self.current);
        let (disk, pin) = match disk.version > current.disk.version {
            true => (disk, Arc::new(pin)),
            false => (current.disk.clone(), current._pin.clone()),
        };
        let memory: Vec<Arc<MemPart>> = current
            .memory
            .iter()
            .filter(|m| !flushed.contains(&m.id))
            .cloned()
            .collect();
        *current = Arc::new(SidxSnapshot {
            epoch: current.epoch + 1,
            disk,
            _pin: pin,
            memory: Arc::new(memory),
        });
    }
}
