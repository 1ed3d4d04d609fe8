//! diagon: a persistent, indexed table format for Apache DataFusion.
//!
//! Layers, lowest first (a layer never imports a higher one):
//! - [`storage`]: one object-store-shaped interface (local, memory, S3, ...)
//! - [`encoding`]: file envelopes, checksummed compressed blocks, codecs
//! - [`part`]: immutable parts cut into granules, with marks, statistics
//!   and components
//! - [`index`]: components that index a part's rows (skip indexes)
//! - [`plan`]: the scan plan as data, and the pruners that build it
//! - [`table`]: the commit log, snapshots, inserts, mutations, merges
//! - [`sql`]: the DataFusion glue (table factory, provider, scan, sink)
//! - [`sidx`]: a secondary index with user keys per series, on tables
//!   (it builds its filters with the SQL layer's pruning)

pub mod encoding;
pub mod error;
pub mod index;
pub mod part;
pub mod plan;
pub mod sidx;
pub mod sql;
pub mod storage;
pub(crate) mod sync;
pub mod table;

pub use datafusion;
pub use error::{Error, Result};
pub use sql::register;
pub use table::{MergeOptions, Table, TableOptions};
