//! Parts: immutable sets of rows sorted by the table key, cut into granules.
//!
//! A part is a directory `parts/<name>/` holding one file per column
//! (`c<i>.bin`, a compressed block per granule) and `index.dgi` (marks,
//! sparse primary index, per-granule statistics). See [`index`] for the
//! index layout and [`column`] for the block payload.

pub mod column;
pub mod index;
pub mod reader;
pub mod skip;
pub mod writer;

pub use index::{PartIndex, PartMeta};
pub use reader::{ReadStats, read_granules, read_index};
pub use writer::{PartLayout, part_dir, write_part};
