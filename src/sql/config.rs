//! Session settings of diagon, set with `SET diagon.<name> = <value>`.

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;

extensions_options! {
    /// Settings that change how diagon scans, never what a query returns.
    pub struct DiagonConfig {
        /// Prune parts and granules with the primary index and min/max
        /// statistics. Turning it off reads every granule (for checking that
        /// indexes do not change results, and for measuring them).
        pub enable_pruning: bool, default = true
        /// Answer `match` from text indexes. Turning it off analyses every
        /// value instead (the same rows, slowly: for checking the index).
        pub enable_text_index: bool, default = true
        /// Bytes of the process's cache of part indexes, deletion masks and
        /// index blocks (512 MiB until set). One cache serves every table
        /// and session of the process; the last value set wins.
        pub cache_bytes: Option<u64>, default = None
    }
}

impl ConfigExtension for DiagonConfig {
    const PREFIX: &'static str = "diagon";
}
