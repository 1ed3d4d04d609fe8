//! Integration tests: one binary, one module per concern.

mod analysis;
mod bm25;
mod bound;
mod catalog;
mod cli;
mod common;
mod components;
mod corruption;
mod crash;
mod definition;
mod differential;
mod encoding;
mod explain;
mod format;
mod highlight;
mod insert;
mod limits;
mod log;
mod merge;
mod postings;
mod query;
mod s3;
mod scan;
mod sidx;
mod skip;
mod stats;
mod storage;
mod terminfo;
mod text_index;
mod text_search;
mod tier;

/// Notes the largest allocation of watched threads (see `limits`).
#[global_allocator]
static ALLOCATOR: limits::Tracking = limits::Tracking;
