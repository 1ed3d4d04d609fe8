//! Integration tests: one binary, one module per concern.

mod cli;
mod common;
mod corruption;
mod crash;
mod definition;
mod differential;
mod encoding;
mod scan;
mod skip;
