//! The inverted text index. So far: analysis, which turns values and
//! query text into terms the same way, and the query language.

pub mod analysis;
pub mod query;

pub use analysis::{Analyzer, Token};
pub use query::{DefaultOperator, Occur, Query};
