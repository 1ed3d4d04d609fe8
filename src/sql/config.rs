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
    }
}

impl ConfigExtension for DiagonConfig {
    const PREFIX: &'static str = "diagon";
}
