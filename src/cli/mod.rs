//! The `diagon` binary: datafusion-cli with diagon registered.

pub mod args;
pub mod exec;
