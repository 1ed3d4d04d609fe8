//! The inverted text index. So far: analysis, which turns values and
//! query text into terms the same way; the query language; the
//! postings codec.

pub mod analysis;
pub mod postings;
pub mod query;

pub use analysis::{Analyzer, Token};
pub use query::{DefaultOperator, Occur, Query};
