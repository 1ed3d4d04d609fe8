//! The inverted text index: analysis, which turns values and query text
//! into terms the same way; the query language; the postings codec; BM25;
//! queries bound to a column's analysis; the per-part component that holds
//! a column's index; the rows a query matches in a part (`search`), their
//! scores (`score`), the best of them without scoring all (`topk`),
//! what a query matched in a value, marked (`highlight`), and the index of
//! a merged part from its inputs' (`merge`).

pub mod analysis;
pub mod bm25;
pub mod bound;
pub mod component;
pub mod counts;
pub mod highlight;
pub mod merge;
pub mod postings;
pub mod query;
pub mod score;
pub mod search;
pub mod terminfo;
pub mod topk;

pub use analysis::{Analyzer, Token};
pub use query::{DefaultOperator, Occur, Query};
