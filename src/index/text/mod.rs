//! The inverted text index. So far: analysis, which turns values and
//! query text into terms the same way.

pub mod analysis;

pub use analysis::{Analyzer, Token};
