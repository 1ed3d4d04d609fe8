//! Parts: immutable sets of rows sorted by the table key, cut into granules.
//!
//! A part is a directory `parts/<name>/` holding its column data (`c<i>.bin`
//! per column in a wide part, one `data.bin` in a compact one; a compressed
//! block per granule), its components (`k<n>.cmp`: indexes built from the
//! same rows) and `index.dgi` (marks, sparse primary index, per-granule
//! statistics, the list of components). See [`index`] for the index
//! layout, [`column`] for the block payload and [`component`] for
//! components.

pub mod column;
pub mod component;
pub mod conform;
pub mod index;
mod nested;
pub mod reader;
pub mod stats;
pub mod writer;

pub use index::{PartIndex, PartMeta};
pub use reader::{ReadStats, granule_reads, read_granules, read_index};
pub use writer::{PartLayout, PartWriter, part_dir, write_part};
