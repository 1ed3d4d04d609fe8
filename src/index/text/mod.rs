//! The inverted text index. So far: analysis, which turns values and
//! query text into terms the same way; the query language; the
//! postings codec; BM25 scoring; queries bound to a column's analysis;
//! the rows a query matches in a part, from its index; the per-part component that holds a
//! column's index.

pub mod analysis;
pub mod bm25;
pub mod bound;
pub mod component;
pub mod postings;
pub mod query;
pub mod score;
pub mod search;

pub use analysis::{Analyzer, Token};
pub use query::{DefaultOperator, Occur, Query};
